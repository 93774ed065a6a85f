//! The financial operations of issue 3, on both backends: happy paths, replays,
//! mismatches, every business-rule code, concurrency and the end-to-end scenario.

use serde_json::{json, Value};

use crate::harness::{Company, Resp, TestApp};

mod bank;
mod concurrency;
mod expiry;
mod invoices;
mod payments;
mod payroll;
mod scenario;

/// 3 × 100.00 + 1 × 50.00 = 350.00.
pub fn lines_350() -> Value {
    json!([
        {"description": "Consulting", "quantity": 3, "unit_price": "100.00"},
        {"description": "Setup", "quantity": 1, "unit_price": "50.00"}
    ])
}

/// Creates a customer and returns its id.
pub async fn customer(app: &TestApp, co: &Company) -> String {
    let r = app
        .post(
            "/api/customers",
            &co.token,
            "cust-1",
            &json!({"name": "Ada"}),
        )
        .await;
    assert!(
        r.status == 201 || r.status == 200,
        "customer: {:?}",
        r.json()
    );
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Creates a draft invoice for `customer` and returns the response.
pub async fn draft(app: &TestApp, co: &Company, customer: &str, key: &str, lines: Value) -> Resp {
    app.post(
        "/api/invoices",
        &co.token,
        key,
        &json!({"customer_id": customer, "line_items": lines}),
    )
    .await
}

/// Finalizes an invoice.
pub async fn finalize(app: &TestApp, co: &Company, invoice: &str, key: &str) -> Resp {
    app.post(
        &format!("/api/invoices/{invoice}/finalize"),
        &co.token,
        key,
        &json!({}),
    )
    .await
}

/// A finalized (open) invoice with `lines`; returns its id.
pub async fn open_invoice(app: &TestApp, co: &Company, tag: &str, lines: Value) -> String {
    let c = customer(app, co).await;
    let r = draft(app, co, &c, &format!("inv-{tag}"), lines).await;
    assert_eq!(r.status, 201, "invoice: {:?}", r.json());
    let id = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let f = finalize(app, co, &id, &format!("fin-{tag}")).await;
    assert_eq!(f.status, 201, "finalize: {:?}", f.json());
    id
}

/// Pays an invoice.
pub async fn pay(app: &TestApp, co: &Company, key: &str, invoice: &str, amount: &str) -> Resp {
    app.post(
        "/api/payments",
        &co.token,
        key,
        &json!({"invoice_id": invoice, "amount": amount, "method": "card"}),
    )
    .await
}

/// Refunds part of a payment.
pub async fn refund(app: &TestApp, co: &Company, key: &str, payment: &str, amount: &str) -> Resp {
    app.post(
        "/api/refunds",
        &co.token,
        key,
        &json!({"payment_id": payment, "amount": amount, "reason": "goodwill"}),
    )
    .await
}

/// Creates a bank transaction.
pub async fn bank_txn(app: &TestApp, co: &Company, key: &str, amount: &str) -> Resp {
    app.post(
        "/api/bank-transactions",
        &co.token,
        key,
        &json!({"amount": amount, "posted_on": "2026-01-05", "description": "deposit"}),
    )
    .await
}

/// Reconciles a bank transaction with a payment.
pub async fn reconcile(app: &TestApp, co: &Company, key: &str, txn: &str, payment: &str) -> Resp {
    app.post(
        &format!("/api/bank-transactions/{txn}/reconcile"),
        &co.token,
        key,
        &json!({"payment_id": payment}),
    )
    .await
}

/// Asserts a 201, then a byte-identical 200 replay with the same Location, then a 422
/// `idempotency_key_reused` for `other` under the same key. Returns the 201.
pub async fn assert_exactly_once(
    app: &TestApp,
    co: &Company,
    path: &str,
    key: &str,
    body: &Value,
    other: &Value,
) -> Resp {
    let first = app.post(path, &co.token, key, body).await;
    assert_eq!(first.status, 201, "{path}: {:?}", first.json());
    assert_eq!(
        first.header("idempotent-replayed").as_deref(),
        Some("false")
    );
    let again = app.post(path, &co.token, key, body).await;
    assert_eq!(again.status, 200, "{path}: {:?}", again.json());
    assert_eq!(again.body, first.body, "{path}: replay is byte-identical");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    let mismatch = app.post(path, &co.token, key, other).await;
    assert_eq!(
        (mismatch.status, mismatch.code().as_str()),
        (422, "idempotency_key_reused"),
        "{path}"
    );
    first
}

/// Asserts a 422 with `code`.
pub fn assert_rule(r: &Resp, code: &str) {
    assert_eq!((r.status, r.code().as_str()), (422, code), "{:?}", r.json());
}

/// Asserts a 422 `validation_failed` naming `field`.
pub fn assert_invalid(r: &Resp, field: &str) {
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "validation_failed"),
        "{:?}",
        r.json()
    );
    let fields: Vec<String> = r.json()["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        fields.iter().any(|f| f == field),
        "expected {field} in {fields:?}"
    );
}

/// Asserts a 404 whose detail names `field`.
pub fn assert_missing(r: &Resp, field: &str) {
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "{:?}",
        r.json()
    );
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(field), "detail {detail:?} names {field}");
}
