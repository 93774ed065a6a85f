//! The end-to-end scenario of issue 3, every step retried 3× and once mutated.

use serde_json::{json, Value};

use super::{customer, lines_350};
use crate::backend_tests;
use crate::harness::{Backend, Company, Resp, TestApp};

/// Posts `body` under `key` (201), retries it 3× (byte-identical 200) and once with
/// `mutated` (422); returns the 201's JSON.
async fn step(
    app: &TestApp,
    co: &Company,
    path: &str,
    key: &str,
    body: &Value,
    mutated: &Value,
) -> Value {
    let first: Resp = app.post(path, &co.token, key, body).await;
    assert_eq!(first.status, 201, "{path}: {:?}", first.json());
    for _ in 0..3 {
        let again = app.post(path, &co.token, key, body).await;
        assert_eq!((again.status, &again.body), (200, &first.body), "{path}");
    }
    let m = app.post(path, &co.token, key, mutated).await;
    assert_eq!(
        (m.status, m.code().as_str()),
        (422, "idempotency_key_reused"),
        "{path}"
    );
    first.json()
}

async fn invoice_to_reconciliation_end_to_end_with_retries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let body = json!({"customer_id": c, "line_items": lines_350()});
    let mut mutated = body.clone();
    mutated["line_items"][0]["quantity"] = json!(4);
    let inv = step(&app, &co, "/api/invoices", "s-inv", &body, &mutated).await;
    assert_eq!(inv["total"], "350.00");
    let id = inv["id"].as_str().unwrap_or("").to_owned();
    let fin = step(
        &app,
        &co,
        &format!("/api/invoices/{id}/finalize"),
        "s-fin",
        &json!({}),
        &json!({"extra": true}),
    )
    .await;
    assert_eq!(
        (fin["number"].as_str(), fin["status"].as_str()),
        (Some("INV-000001"), Some("open"))
    );
    let pay = json!({"invoice_id": id, "amount": "350.00", "method": "bank_transfer"});
    let mut pay_m = pay.clone();
    pay_m["method"] = json!("card");
    let p = step(&app, &co, "/api/payments", "s-pay", &pay, &pay_m).await;
    assert_eq!(p["invoice"]["status"], "paid");
    let pid = p["id"].as_str().unwrap_or("").to_owned();
    let rf = json!({"payment_id": pid, "amount": "50.00", "reason": "discount"});
    let mut rf_m = rf.clone();
    rf_m["amount"] = json!("50.01");
    let r = step(&app, &co, "/api/refunds", "s-ref", &rf, &rf_m).await;
    assert_eq!(
        r["invoice"],
        json!({"id": id, "status": "open", "amount_paid": "300.00", "balance_due": "50.00"})
    );
    let bt = json!({"amount": "350.00", "posted_on": "2026-01-10", "description": "wire"});
    let mut bt_m = bt.clone();
    bt_m["description"] = json!("wire 2");
    let t = step(&app, &co, "/api/bank-transactions", "s-bt", &bt, &bt_m).await;
    let tid = t["id"].as_str().unwrap_or("").to_owned();
    let rec = step(
        &app,
        &co,
        &format!("/api/bank-transactions/{tid}/reconcile"),
        "s-rec",
        &json!({"payment_id": pid}),
        &json!({"payment_id": tid}),
    )
    .await;
    assert_eq!(
        (rec["reconciled"].as_bool(), rec["payment_id"].as_str()),
        (Some(true), Some(pid.as_str()))
    );
    let final_inv = app
        .get(&format!("/api/invoices/{id}"), &co.token)
        .await
        .json();
    assert_eq!(final_inv["amount_paid"], "300.00");
    assert_eq!(final_inv["balance_due"], "50.00");
    assert_eq!(final_inv["status"], "open");
    let det = |op: &str, key: &str| idem::deterministic_id("company", &co.id, op, key).to_string();
    assert_eq!(id, det("createInvoice", "s-inv"));
    assert_eq!(pid, det("createPayment", "s-pay"));
    assert_eq!(
        r["id"].as_str(),
        Some(det("createRefund", "s-ref").as_str())
    );
    assert_eq!(tid, det("createBankTransaction", "s-bt"));
    for (table, op, key) in [
        ("invoice_finalizations", "finalizeInvoice", "s-fin"),
        ("reconciliations", "reconcileLedger", "s-rec"),
    ] {
        assert_eq!(
            record_count(&app, table, &det(op, key)).await,
            1,
            "{table} row has the deterministic id"
        );
    }
    for table in [
        "invoices",
        "payments",
        "refunds",
        "reconciliations",
        "bank_transactions",
        "invoice_finalizations",
    ] {
        assert_eq!(
            app.count_for(table, &co).await,
            1,
            "exactly one row in {table}"
        );
    }
}

async fn record_count(app: &TestApp, table: &str, id: &str) -> i64 {
    let sql = format!("select count(*) from {table} where id = $1");
    let id = idem::Id(uuid::Uuid::parse_str(id).expect("uuid"));
    idem::on_db!(&app.state.db, |c| sqlx::query_scalar::<_, i64>(&sql)
        .bind(id)
        .fetch_one(c)
        .await)
    .expect("count")
}

backend_tests!(invoice_to_reconciliation_end_to_end_with_retries);
