//! createPayment and createRefund.

use serde_json::json;

use super::{
    assert_exactly_once, assert_invalid, assert_missing, assert_rule, customer, draft, lines_350,
    open_invoice, pay, refund,
};
use crate::backend_tests;
use crate::harness::{Backend, Company, TestApp};

async fn a_payment_is_recorded_once_and_pays_the_invoice_at_zero_balance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let inv = open_invoice(&app, &co, "1", lines_350()).await;
    let body = json!({"invoice_id": inv, "amount": "100.00", "method": "cash", "received_on": "2026-01-02"});
    let other = json!({"invoice_id": inv, "amount": "100.01", "method": "cash", "received_on": "2026-01-02"});
    let first = assert_exactly_once(&app, &co, "/api/payments", "p-1", &body, &other).await;
    let p = first.json();
    assert_eq!(p["amount"], "100.00");
    assert_eq!(p["received_on"], "2026-01-02");
    assert_eq!(
        p["invoice"],
        json!({"id": inv, "status": "open", "amount_paid": "100.00", "balance_due": "250.00"})
    );
    let loc = first.header("location").unwrap_or_default();
    assert_eq!(app.get(&loc, &co.token).await.body, first.body);
    assert_rule(
        &pay(&app, &co, "p-2", &inv, "250.01").await,
        "payment_exceeds_balance",
    );
    let rest = pay(&app, &co, "p-3", &inv, "250.00").await.json();
    assert_eq!(rest["invoice"]["status"], "paid");
    assert_eq!(rest["invoice"]["balance_due"], "0.00");
    assert_eq!(
        rest["received_on"],
        chrono::Utc::now().date_naive().to_string().as_str()
    );
    assert_rule(
        &pay(&app, &co, "p-4", &inv, "1.00").await,
        "invoice_not_open",
    );
    let listed = app
        .get(&format!("/api/payments?invoice_id={inv}"), &co.token)
        .await
        .json();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.count_for("payments", &co).await, 2);
    let viewer = app.member_token(&co, "viewer@example.com", "viewer").await;
    let refused = pay(&app, &co_as(&co, &viewer), "p-5", &inv, "1.00").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (403, "forbidden")
    );
    assert_eq!(
        app.get(&loc, &viewer).await.body,
        app.get(&loc, &co.token).await.body
    );
    let accountant = app
        .member_token(&co, "acct@example.com", "accountant")
        .await;
    let bt = json!({"amount": "1.00", "posted_on": "2026-01-01", "description": "x"});
    let by_accountant = app
        .post("/api/bank-transactions", &accountant, "bt", &bt)
        .await;
    assert_eq!(by_accountant.status, 201, "accountants write");
    let stranger = app.create_company("Other").await;
    assert_eq!(
        app.get(&loc, &stranger.token).await.status,
        404,
        "other tenants see nothing"
    );
    let theirs = pay(&app, &stranger, "p-6", &inv, "1.00").await;
    assert_eq!(
        theirs.status, 404,
        "another company's invoice does not exist"
    );
}

fn co_as(co: &Company, token: &str) -> Company {
    Company {
        token: token.to_owned(),
        ..co.clone()
    }
}

async fn payments_check_references_then_rules_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let d = draft(&app, &co, &c, "d", lines_350()).await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_rule(
        &pay(&app, &co, "p-1", &d, "999.00").await,
        "invoice_not_open",
    );
    let ghost = uuid::Uuid::new_v4().to_string();
    assert_missing(&pay(&app, &co, "p-2", &ghost, "1.00").await, "invoice_id");
    assert_invalid(&pay(&app, &co, "p-3", &d, "0.00").await, "amount");
    assert_invalid(&pay(&app, &co, "p-4", "nope", "1.00").await, "invoice_id");
    let bad_method = json!({"invoice_id": d, "amount": "1.00", "method": "crypto"});
    assert_invalid(
        &app.post("/api/payments", &co.token, "p-5", &bad_method)
            .await,
        "method",
    );
    assert_eq!(app.count_for("payments", &co).await, 0);
}

async fn a_refund_lowers_amount_paid_reopens_the_invoice_and_never_exceeds_the_payment(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let inv = open_invoice(&app, &co, "1", lines_350()).await;
    let p = pay(&app, &co, "p", &inv, "350.00").await.json();
    let pid = p["id"].as_str().unwrap_or("").to_owned();
    assert_eq!(p["invoice"]["status"], "paid");
    let body = json!({"payment_id": pid, "amount": "50.00", "reason": "damaged"});
    let other = json!({"payment_id": pid, "amount": "50.00", "reason": "late"});
    let first = assert_exactly_once(&app, &co, "/api/refunds", "r-1", &body, &other).await;
    let r = first.json();
    assert_eq!(
        r["invoice"],
        json!({"id": inv, "status": "open", "amount_paid": "300.00", "balance_due": "50.00"})
    );
    let loc = first.header("location").unwrap_or_default();
    assert_eq!(app.get(&loc, &co.token).await.body, first.body);
    assert_rule(
        &refund(&app, &co, "r-2", &pid, "300.01").await,
        "refund_exceeds_payment",
    );
    assert_eq!(refund(&app, &co, "r-3", &pid, "300.00").await.status, 201);
    assert_rule(
        &refund(&app, &co, "r-4", &pid, "0.01").await,
        "refund_exceeds_payment",
    );
    let ghost = uuid::Uuid::new_v4().to_string();
    assert_missing(
        &refund(&app, &co, "r-5", &ghost, "1.00").await,
        "payment_id",
    );
    let listed = app
        .get(&format!("/api/refunds?payment_id={pid}"), &co.token)
        .await
        .json();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
    let invoice = app
        .get(&format!("/api/invoices/{inv}"), &co.token)
        .await
        .json();
    assert_eq!(
        (invoice["amount_paid"].as_str(), invoice["status"].as_str()),
        (Some("0.00"), Some("open"))
    );
    let payment = app
        .get(&format!("/api/payments/{pid}"), &co.token)
        .await
        .json();
    assert_eq!(payment["amount_refunded"], "350.00");
}

backend_tests!(
    a_payment_is_recorded_once_and_pays_the_invoice_at_zero_balance,
    payments_check_references_then_rules_in_order,
    a_refund_lowers_amount_paid_reopens_the_invoice_and_never_exceeds_the_payment,
);
