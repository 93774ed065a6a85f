//! executePayroll.

use serde_json::{json, Value};

use super::{assert_exactly_once, assert_invalid, assert_rule};
use crate::backend_tests;
use crate::harness::{Backend, Company, Resp, TestApp};

/// Creates an employee and returns its id.
pub async fn employee(app: &TestApp, co: &Company, key: &str, body: Value) -> String {
    let r = app.post("/api/employees", &co.token, key, &body).await;
    assert_eq!(r.status, 201, "employee: {:?}", r.json());
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Runs payroll for a period.
pub async fn run(
    app: &TestApp,
    co: &Company,
    key: &str,
    start: &str,
    end: &str,
    hours: Value,
) -> Resp {
    let body =
        json!({"period_start": start, "period_end": end, "pay_date": "2026-03-31", "hours": hours});
    app.post("/api/payroll-runs", &co.token, key, &body).await
}

async fn payroll_pays_every_active_employee_rounded_half_away_from_zero(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let sal = employee(
        &app,
        &co,
        "e1",
        json!({"name": "S", "pay_type": "salary", "annual_salary": "100000.00"}),
    )
    .await;
    let hr = employee(
        &app,
        &co,
        "e2",
        json!({"name": "H", "pay_type": "hourly", "hourly_rate": "33.33"}),
    )
    .await;
    let idle = employee(
        &app,
        &co,
        "e3",
        json!({"name": "I", "pay_type": "hourly", "hourly_rate": "20.00"}),
    )
    .await;
    let body = json!({"period_start": "2026-01-01", "period_end": "2026-01-15", "pay_date": "2026-01-20", "hours": {hr.to_uppercase(): "7.50"}});
    let other = json!({"period_start": "2026-01-01", "period_end": "2026-01-15", "pay_date": "2026-01-20", "hours": {hr.clone(): "7.51"}});
    let first = assert_exactly_once(&app, &co, "/api/payroll-runs", "run-1", &body, &other).await;
    let r = first.json();
    let stubs: Vec<(String, String)> = r["stubs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["employee_id"].as_str().unwrap_or("").to_owned(),
                        s["gross"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        stubs,
        vec![
            (sal, "4166.67".to_owned()),
            (hr.clone(), "249.98".to_owned()),
            (idle, "0.00".to_owned())
        ]
    );
    assert_eq!(r["total_gross"], "4416.65");
    let loc = first.header("location").unwrap_or_default();
    assert_eq!(app.get(&loc, &co.token).await.body, first.body);
    assert_rule(
        &run(&app, &co, "run-2", "2026-01-15", "2026-01-31", json!({})).await,
        "payroll_period_already_executed",
    );
    assert_rule(
        &run(&app, &co, "run-3", "2025-12-01", "2026-01-01", json!({})).await,
        "payroll_period_already_executed",
    );
    assert_eq!(
        run(&app, &co, "run-4", "2026-01-16", "2026-01-31", json!(null))
            .await
            .status,
        201
    );
    let listed = app.get("/api/payroll-runs", &co.token).await.json();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        listed["data"][1], r,
        "lists render runs with their own stubs"
    );
    assert_eq!(listed["data"][0]["stubs"].as_array().map(Vec::len), Some(3));
    assert_eq!(app.count_for("payroll_stubs", &co).await, 6);
}

async fn payroll_hours_keys_are_validated_and_rules_are_checked_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    assert_rule(
        &run(&app, &co, "none", "2026-01-01", "2026-01-31", json!({})).await,
        "no_active_employees",
    );
    let sal = employee(
        &app,
        &co,
        "e1",
        json!({"name": "S", "pay_type": "salary", "annual_salary": "1.00"}),
    )
    .await;
    let hr = employee(
        &app,
        &co,
        "e2",
        json!({"name": "H", "pay_type": "hourly", "hourly_rate": "10.00"}),
    )
    .await;
    let ghost = uuid::Uuid::new_v4().to_string();
    let other = app.create_company("Other").await;
    let foreign = employee(
        &app,
        &other,
        "e3",
        json!({"name": "F", "pay_type": "hourly", "hourly_rate": "10.00"}),
    )
    .await;
    for key in [sal.as_str(), ghost.as_str(), foreign.as_str(), "not-an-id"] {
        let r = run(
            &app,
            &co,
            &format!("h-{key}"),
            "2026-01-01",
            "2026-01-31",
            json!({key: "1.00"}),
        )
        .await;
        assert_invalid(&r, &format!("hours.{key}"));
    }
    assert_invalid(
        &run(
            &app,
            &co,
            "h-num",
            "2026-01-01",
            "2026-01-31",
            json!({hr.clone(): 8}),
        )
        .await,
        &format!("hours.{hr}"),
    );
    assert_invalid(
        &run(
            &app,
            &co,
            "h-max",
            "2026-01-01",
            "2026-01-31",
            json!({hr.clone(): "744.01"}),
        )
        .await,
        &format!("hours.{hr}"),
    );
    assert_invalid(
        &run(&app, &co, "order", "2026-02-01", "2026-01-31", json!({})).await,
        "period_end",
    );
    let late =
        json!({"period_start": "2026-01-01", "period_end": "2026-01-31", "pay_date": "2026-01-30"});
    assert_invalid(
        &app.post("/api/payroll-runs", &co.token, "late", &late)
            .await,
        "pay_date",
    );
    let twice = json!({hr.clone(): "1.00", hr.to_uppercase(): "2.00"});
    let r = run(&app, &co, "twice", "2026-01-01", "2026-01-31", twice).await;
    assert_eq!((r.status, r.code().as_str()), (422, "validation_failed"));
    let ok = run(
        &app,
        &co,
        "ok",
        "2026-01-01",
        "2026-01-31",
        json!({hr.clone(): "744.00"}),
    )
    .await;
    assert_eq!(ok.status, 201, "{:?}", ok.json());
    assert_eq!(ok.json()["total_gross"], "7440.04");
    assert_eq!(app.count_for("payroll_runs", &co).await, 1);
}

backend_tests!(
    payroll_pays_every_active_employee_rounded_half_away_from_zero,
    payroll_hours_keys_are_validated_and_rules_are_checked_in_order,
);
