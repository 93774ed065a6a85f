//! createBankTransaction and reconcileLedger.

use serde_json::json;

use super::{
    assert_exactly_once, assert_invalid, assert_missing, assert_rule, bank_txn, lines_350,
    open_invoice, pay, reconcile,
};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

async fn a_bank_transaction_is_created_once_and_may_be_negative(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let body = json!({"amount": "-12.50", "posted_on": "2026-01-05", "description": "fee"});
    let other = json!({"amount": "-12.51", "posted_on": "2026-01-05", "description": "fee"});
    let first =
        assert_exactly_once(&app, &co, "/api/bank-transactions", "b-1", &body, &other).await;
    let t = first.json();
    assert_eq!(
        (t["amount"].as_str(), t["reconciled"].as_bool()),
        (Some("-12.50"), Some(false))
    );
    assert_eq!(
        (t["payment_id"].clone(), t["reconciled_at"].clone()),
        (json!(null), json!(null))
    );
    let loc = first.header("location").unwrap_or_default();
    assert_eq!(app.get(&loc, &co.token).await.body, first.body);
    assert_invalid(&bank_txn(&app, &co, "b-2", "0.00").await, "amount");
    assert_invalid(&bank_txn(&app, &co, "b-3", "1.001").await, "amount");
}

async fn reconcile_matches_once_and_only_equal_amounts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let inv = open_invoice(&app, &co, "1", lines_350()).await;
    let p1 = pay(&app, &co, "p1", &inv, "100.00").await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let p2 = pay(&app, &co, "p2", &inv, "200.00").await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let t1 = bank_txn(&app, &co, "t1", "100.00").await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let t2 = bank_txn(&app, &co, "t2", "100.00").await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_rule(
        &reconcile(&app, &co, "r-0", &t1, &p2).await,
        "amount_mismatch",
    );
    let path = format!("/api/bank-transactions/{t1}/reconcile");
    let first = assert_exactly_once(
        &app,
        &co,
        &path,
        "r-1",
        &json!({"payment_id": p1}),
        &json!({"payment_id": p2}),
    )
    .await;
    assert!(
        first.header("location").is_none(),
        "reconcile has no Location"
    );
    let t = first.json();
    assert_eq!(
        (t["reconciled"].as_bool(), t["payment_id"].as_str()),
        (Some(true), Some(p1.as_str()))
    );
    assert!(t["reconciled_at"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    assert_eq!(
        app.get(&format!("/api/bank-transactions/{t1}"), &co.token)
            .await
            .body,
        first.body
    );
    assert_rule(
        &reconcile(&app, &co, "r-2", &t1, &p2).await,
        "already_reconciled",
    );
    assert_rule(
        &reconcile(&app, &co, "r-3", &t2, &p1).await,
        "already_reconciled",
    );
    let ghost = uuid::Uuid::new_v4().to_string();
    assert_missing(
        &reconcile(&app, &co, "r-4", &t2, &ghost).await,
        "payment_id",
    );
    assert_eq!(reconcile(&app, &co, "r-5", &ghost, &p1).await.status, 404);
    let done = app
        .get("/api/bank-transactions?reconciled=true", &co.token)
        .await
        .json();
    assert_eq!(done["data"].as_array().map(Vec::len), Some(1));
    let open = app
        .get("/api/bank-transactions?reconciled=false", &co.token)
        .await
        .json();
    assert_eq!(open["data"][0]["id"].as_str(), Some(t2.as_str()));
    assert_invalid(
        &app.get("/api/bank-transactions?reconciled=yes", &co.token)
            .await,
        "reconciled",
    );
    assert_eq!(app.count_for("reconciliations", &co).await, 1);
}

backend_tests!(
    a_bank_transaction_is_created_once_and_may_be_negative,
    reconcile_matches_once_and_only_equal_amounts,
);
