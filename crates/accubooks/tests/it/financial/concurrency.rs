//! Concurrent writes with distinct keys: the accounting invariants hold.

use futures::future::join_all;
use serde_json::json;

use super::{bank_txn, customer, draft, finalize, lines_350, open_invoice, pay, reconcile, refund};
use crate::backend_tests;
use crate::financial::payroll::{employee, run};
use crate::harness::{Backend, Resp, TestApp};

fn cents(s: &str) -> i64 {
    let (i, f) = s.split_once('.').unwrap_or((s, "0"));
    i.parse::<i64>().unwrap_or(0) * 100 + f.parse::<i64>().unwrap_or(0)
}

fn ids(rs: &[Resp]) -> Vec<String> {
    rs.iter()
        .filter(|r| r.status == 201)
        .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn a_hundred_concurrent_payments_never_exceed_the_total(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let inv = open_invoice(&app, &co, "1", lines_350()).await;
    let rs = join_all((0..100).map(|i| {
        let (app, co, inv) = (&app, &co, &inv);
        async move { pay(app, co, &format!("pay-{i}"), inv, "5.00").await }
    }))
    .await;
    for r in &rs {
        let code = r.code();
        assert!(
            r.status == 201 || code == "payment_exceeds_balance" || code == "invoice_not_open",
            "unexpected {} {:?}",
            r.status,
            r.json()
        );
    }
    let accepted = ids(&rs).len();
    assert_eq!(accepted, 70, "350.00 / 5.00 payments fit");
    let invoice = app
        .get(&format!("/api/invoices/{inv}"), &co.token)
        .await
        .json();
    assert_eq!(invoice["amount_paid"], "350.00");
    assert_eq!(invoice["status"], "paid");
    let listed = app
        .get(
            &format!("/api/payments?invoice_id={inv}&limit=500"),
            &co.token,
        )
        .await
        .json();
    let sum: i64 = listed["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| cents(p["amount"].as_str().unwrap_or("0")))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(sum, 35_000, "sum of payments = amount_paid");
    assert_eq!(app.count_for("payments", &co).await, 70);
}

async fn fifty_concurrent_finalizations_get_unique_gap_free_numbers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let mut drafts = Vec::new();
    for i in 0..50 {
        let r = draft(&app, &co, &c, &format!("d-{i}"), lines_350()).await;
        drafts.push(r.json()["id"].as_str().unwrap_or("").to_owned());
    }
    let rs = join_all(drafts.iter().enumerate().map(|(i, id)| {
        let (app, co) = (&app, &co);
        async move { finalize(app, co, id, &format!("f-{i}")).await }
    }))
    .await;
    let mut numbers: Vec<String> = rs
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{:?}", r.json());
            r.json()["number"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    numbers.sort();
    let expected: Vec<String> = (1..=50).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);
}

async fn concurrent_payroll_runs_for_one_period_execute_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    employee(
        &app,
        &co,
        "e",
        json!({"name": "S", "pay_type": "salary", "annual_salary": "24000.00"}),
    )
    .await;
    let rs = join_all((0..10).map(|i| {
        let (app, co) = (&app, &co);
        async move {
            run(
                app,
                co,
                &format!("run-{i}"),
                "2026-02-01",
                "2026-02-28",
                json!({}),
            )
            .await
        }
    }))
    .await;
    assert_eq!(ids(&rs).len(), 1, "exactly one run executes");
    for r in rs.iter().filter(|r| r.status != 201) {
        assert_eq!(
            r.code(),
            "payroll_period_already_executed",
            "{:?}",
            r.json()
        );
    }
    assert_eq!(app.count_for("payroll_runs", &co).await, 1);
}

async fn concurrent_refunds_cannot_over_refund(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let inv = open_invoice(&app, &co, "1", lines_350()).await;
    let p = pay(&app, &co, "p", &inv, "100.00").await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let rs = join_all((0..20).map(|i| {
        let (app, co, p) = (&app, &co, &p);
        async move { refund(app, co, &format!("r-{i}"), p, "10.00").await }
    }))
    .await;
    assert_eq!(ids(&rs).len(), 10);
    for r in rs.iter().filter(|r| r.status != 201) {
        assert_eq!(r.code(), "refund_exceeds_payment", "{:?}", r.json());
    }
    let invoice = app
        .get(&format!("/api/invoices/{inv}"), &co.token)
        .await
        .json();
    assert_eq!(invoice["amount_paid"], "0.00");
    let payment = app
        .get(&format!("/api/payments/{p}"), &co.token)
        .await
        .json();
    assert_eq!(payment["amount_refunded"], "100.00");
}

async fn concurrent_reconciliations_match_each_side_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let ten = json!([{"description": "x", "quantity": 10, "unit_price": "100.00"}]);
    let inv = open_invoice(&app, &co, "1", ten).await;
    let mut pays = Vec::new();
    let mut txns = Vec::new();
    for i in 0..10 {
        pays.push(
            pay(&app, &co, &format!("p-{i}"), &inv, "100.00")
                .await
                .json()["id"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        txns.push(
            bank_txn(&app, &co, &format!("t-{i}"), "100.00")
                .await
                .json()["id"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    // Every transaction races for payment 0; transaction 0 races for every payment.
    let one_payment = join_all(txns.iter().skip(1).enumerate().map(|(i, t)| {
        let (app, co, p) = (&app, &co, &pays[0]);
        async move { reconcile(app, co, &format!("a-{i}"), t, p).await }
    }));
    let one_txn = join_all(pays.iter().skip(1).enumerate().map(|(i, p)| {
        let (app, co, t) = (&app, &co, &txns[0]);
        async move { reconcile(app, co, &format!("b-{i}"), t, p).await }
    }));
    let (a, b) = tokio::join!(one_payment, one_txn);
    let all: Vec<Resp> = a.into_iter().chain(b).collect();
    for r in all.iter().filter(|r| r.status != 201) {
        assert_eq!(r.code(), "already_reconciled", "{:?}", r.json());
    }
    let n = ids(&all).len();
    assert_eq!(
        n, 2,
        "payment 0 and transaction 0 are each matched exactly once"
    );
    let recs = app.count_for("reconciliations", &co).await;
    assert_eq!(recs, i64::try_from(n).unwrap_or(-1));
    let done = app
        .get("/api/bank-transactions?reconciled=true", &co.token)
        .await
        .json();
    let matched: Vec<&str> = done["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["payment_id"].as_str()).collect())
        .unwrap_or_default();
    let mut unique = matched.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), matched.len(), "no payment matched twice");
}

backend_tests!(
    a_hundred_concurrent_payments_never_exceed_the_total,
    fifty_concurrent_finalizations_get_unique_gap_free_numbers,
    concurrent_payroll_runs_for_one_period_execute_once,
    concurrent_refunds_cannot_over_refund,
    concurrent_reconciliations_match_each_side_once,
);
