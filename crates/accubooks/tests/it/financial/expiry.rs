//! After an operation's idempotency record expired and was pruned, a retry replays from
//! the record row (200, the resource as it is now) and a different body is 422.

use std::time::Duration;

use serde_json::{json, Value};

use super::{customer, lines_350};
use crate::backend_tests;
use crate::financial::payroll::employee;
use crate::harness::{Backend, Company, Options, Resp, TestApp};

const TABLES: &[&str] = &[
    "invoices",
    "invoice_line_items",
    "invoice_finalizations",
    "payments",
    "refunds",
    "payroll_runs",
    "payroll_stubs",
    "bank_transactions",
    "reconciliations",
];

/// One executed operation: where it went, its bodies, its 201 and where to read it now.
struct Done {
    path: String,
    key: &'static str,
    body: Value,
    other: Value,
    first: Resp,
    read: String,
}

async fn exec(
    app: &TestApp,
    co: &Company,
    path: String,
    key: &'static str,
    body: Value,
    other: Value,
) -> Done {
    let first = app.post(&path, &co.token, key, &body).await;
    assert_eq!(first.status, 201, "{path}: {:?}", first.json());
    let id = first.json()["id"].as_str().unwrap_or("").to_owned();
    let read = first.header("location").unwrap_or_else(|| {
        if path.contains("/invoices/") {
            format!("/api/invoices/{id}")
        } else {
            format!("/api/bank-transactions/{id}")
        }
    });
    Done {
        path,
        key,
        body,
        other,
        first,
        read,
    }
}

fn id(d: &Done) -> String {
    d.first.json()["id"].as_str().unwrap_or("").to_owned()
}

async fn run_every_operation(app: &TestApp, co: &Company) -> Vec<Done> {
    let c = customer(app, co).await;
    employee(
        app,
        co,
        "emp",
        json!({"name": "S", "pay_type": "salary", "annual_salary": "24000.00"}),
    )
    .await;
    let mut v = Vec::new();
    let inv = json!({"customer_id": c, "line_items": lines_350()});
    let inv_other = json!({"customer_id": c, "currency": "EUR", "line_items": lines_350()});
    v.push(exec(app, co, "/api/invoices".into(), "x-inv", inv, inv_other).await);
    let i = id(&v[0]);
    v.push(
        exec(
            app,
            co,
            format!("/api/invoices/{i}/finalize"),
            "x-fin",
            json!({}),
            json!({"a": 1}),
        )
        .await,
    );
    let pay = json!({"invoice_id": i, "amount": "100.00", "method": "cash"});
    v.push(
        exec(
            app,
            co,
            "/api/payments".into(),
            "x-pay",
            pay,
            json!({"invoice_id": i, "amount": "1.00", "method": "cash"}),
        )
        .await,
    );
    let p = id(&v[2]);
    let rf = json!({"payment_id": p, "amount": "10.00", "reason": "r"});
    v.push(
        exec(
            app,
            co,
            "/api/refunds".into(),
            "x-ref",
            rf,
            json!({"payment_id": p, "amount": "10.00", "reason": "s"}),
        )
        .await,
    );
    let run =
        json!({"period_start": "2026-01-01", "period_end": "2026-01-31", "pay_date": "2026-02-01"});
    v.push(exec(app, co, "/api/payroll-runs".into(), "x-run", run, json!({"period_start": "2026-03-01", "period_end": "2026-03-31", "pay_date": "2026-04-01"})).await);
    let bt = json!({"amount": "100.00", "posted_on": "2026-01-02", "description": "d"});
    v.push(
        exec(
            app,
            co,
            "/api/bank-transactions".into(),
            "x-bt",
            bt,
            json!({"amount": "100.00", "posted_on": "2026-01-02", "description": "e"}),
        )
        .await,
    );
    let t = id(&v[5]);
    v.push(
        exec(
            app,
            co,
            format!("/api/bank-transactions/{t}/reconcile"),
            "x-rec",
            json!({"payment_id": p}),
            json!({"payment_id": i}),
        )
        .await,
    );
    v
}

async fn counts(app: &TestApp, co: &Company) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(app.count_for(t, co).await);
    }
    out
}

async fn after_expiry_every_operation_replays_from_its_record_row(backend: Backend) {
    let o = Options {
        lease: Duration::from_millis(500),
        key_ttl: Duration::from_secs(1),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let done = run_every_operation(&app, &co).await;
    let before = counts(&app, &co).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    accubooks::jobs::prune_once(&app.state)
        .await
        .expect("prune");
    assert_eq!(app.count("idempotency_keys").await, 0, "records pruned");
    for d in &done {
        let r = app.post(&d.path, &co.token, d.key, &d.body).await;
        assert_eq!(r.status, 200, "{}: {:?}", d.path, r.json());
        assert_eq!(
            r.header("idempotent-replayed").as_deref(),
            Some("true"),
            "{}",
            d.path
        );
        assert_eq!(
            r.header("location"),
            d.first.header("location"),
            "{}",
            d.path
        );
        let now = app.get(&d.read, &co.token).await;
        assert_eq!(
            r.json(),
            now.json(),
            "{}: the resource as it is now",
            d.path
        );
        let other = app.post(&d.path, &co.token, d.key, &d.other).await;
        assert_eq!(
            (other.status, other.code().as_str()),
            (422, "idempotency_key_reused"),
            "{}",
            d.path
        );
    }
    assert_eq!(counts(&app, &co).await, before, "retries created nothing");
}

backend_tests!(after_expiry_every_operation_replays_from_its_record_row);
