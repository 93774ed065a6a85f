//! Hostile and malformed input: each gets its problem code and nothing is written.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

async fn bodies_are_checked_in_order_size_type_key_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(1024 * 1024 + 1));
    // 413 before 415 and before the key check.
    let post = |body: Vec<u8>,
                key: Option<&'static str>,
                headers: &'static [(&'static str, &'static str)]| {
        app.write_with(
            Method::POST,
            "/api/customers",
            &co.token,
            key,
            body,
            headers,
        )
    };
    let text = &[("content-type", "text/plain")];
    let r = post(big.into_bytes(), None, text).await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    let r = post(b"{}".to_vec(), None, text).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (415, "unsupported_media_type")
    );
    let r = post(b"{}".to_vec(), None, &[]).await;
    assert_eq!(r.status, 415, "a missing content type is refused");
    let r = post(
        br#"{"name":"x"}"#.to_vec(),
        Some("ct"),
        &[("content-type", "Application/JSON; charset=utf-8")],
    )
    .await;
    assert_eq!(
        r.status, 201,
        "content type is case-insensitive with parameters"
    );
    // The key is checked before the JSON.
    let r = app
        .write(Method::POST, "/api/customers", &co.token, None, "{not json")
        .await;
    assert_eq!(r.code(), "idempotency_key_missing");
    for bad in [
        "{not json",
        "",
        r#"{"name":"a","name":"b"}"#,
        "{\"name\":\"\u{0}\"",
        "[1,",
    ] {
        let r = app
            .write(Method::POST, "/api/customers", &co.token, Some("j"), bad)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "malformed_json"),
            "{bad:?}"
        );
    }
    let invalid_utf8 = post(
        b"{\"name\":\"\xff\"}".to_vec(),
        Some("u"),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(invalid_utf8.code(), "malformed_json");
    assert_eq!(app.count_for("customers", &co).await, 1);
}

async fn fields_are_validated_with_their_paths(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let cases = [
        ("/api/customers", json!([]), "body"),
        ("/api/customers", json!(1), "body"),
        (
            "/api/customers",
            json!({"name": "x", "extra": true}),
            "extra",
        ),
        (
            "/api/customers",
            json!({"name": "x", "email": "no-at"}),
            "email",
        ),
        ("/api/customers", json!({"name": "é".repeat(201)}), "name"),
        (
            "/api/employees",
            json!({"name": "x", "pay_type": "salary", "annual_salary": 1000}),
            "annual_salary",
        ),
        (
            "/api/employees",
            json!({"name": "x", "pay_type": "salary", "annual_salary": "1.001"}),
            "annual_salary",
        ),
        (
            "/api/employees",
            json!({"name": "x", "pay_type": "hourly", "hourly_rate": "0"}),
            "hourly_rate",
        ),
        (
            "/api/employees",
            json!({"name": "x", "pay_type": "salary", "annual_salary": "1.00", "hourly_rate": "2.00"}),
            "hourly_rate",
        ),
        (
            "/api/company/members",
            json!({"email": "a@b", "role": "owner"}),
            "role",
        ),
    ];
    for (i, (path, body, field)) in cases.iter().enumerate() {
        let r = app.post(path, &co.token, &format!("v{i}"), body).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (422, "validation_failed"),
            "{path} {body}"
        );
        let fields: Vec<_> = r.json()["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            fields.iter().any(|e| e["field"] == *field),
            "{body}: {fields:?}"
        );
    }
    let settings_cases = [
        (r#"{}"#, "body"),
        (r#"{"currency": null}"#, "currency"),
        (r#"{"currency": "usd"}"#, "currency"),
        (r#"{"currency": "JPY"}"#, "currency"),
        (r#"{"payment_terms_days": 14.0}"#, "payment_terms_days"),
        (r#"{"payment_terms_days": 1e1}"#, "payment_terms_days"),
        (r#"{"payment_terms_days": 366}"#, "payment_terms_days"),
        (r#"{"invoice_prefix": "inv-"}"#, "invoice_prefix"),
        (r#"{"invoice_prefix": "ABCDEFGHIJK"}"#, "invoice_prefix"),
        (
            r#"{"fiscal_year_start_month": 13}"#,
            "fiscal_year_start_month",
        ),
    ];
    for (i, (body, field)) in settings_cases.iter().enumerate() {
        let r = app
            .write(
                Method::PATCH,
                "/api/company/settings",
                &co.token,
                Some(&format!("s{i}")),
                body,
            )
            .await;
        assert_eq!(r.status, 422, "{body}");
        assert!(
            r.json()["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == *field)),
            "{body}: {:?}",
            r.json()
        );
    }
    assert_eq!(app.count_for("customers", &co).await, 0);
    assert_eq!(app.count_for("employees", &co).await, 0);
    assert_eq!(
        app.count("idempotency_keys").await,
        0,
        "failed keys are released"
    );
    assert_eq!(
        app.get("/api/company/settings", &co.token).await.json()["version"],
        1
    );
}

async fn lists_paginate_newest_first_and_refuse_bad_parameters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    for i in 0..5 {
        assert_eq!(
            app.post(
                "/api/customers",
                &co.token,
                &format!("c{i}"),
                &json!({"name": format!("c{i}")})
            )
            .await
            .status,
            201
        );
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/customers?limit=2&cursor={c}"),
            None => "/api/customers?limit=2".to_owned(),
        };
        let page = app.get(&path, &co.token).await.json();
        for c in page["data"].as_array().cloned().unwrap_or_default() {
            names.push(c["name"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["c4", "c3", "c2", "c1", "c0"]);
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("cursor=%%%", "cursor"),
    ] {
        let r = app.get(&format!("/api/customers?{q}"), &co.token).await;
        assert_eq!(r.status, 422, "{q}");
        assert_eq!(r.json()["errors"][0]["field"], field);
    }
}

async fn nul_characters_are_refused_with_their_field_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let cases = [
        ("/api/customers", r#"{"name":"a\u0000b"}"#, "name"),
        (
            "/api/customers",
            r#"{"name":"x","email":"a\u0000@b"}"#,
            "email",
        ),
        ("/api/customers", r#"{"name":"x","a\u0000b":1}"#, "a\u{0}b"),
        (
            "/api/employees",
            r#"{"name":"\u0000","pay_type":"hourly","hourly_rate":"10.00"}"#,
            "name",
        ),
        (
            "/api/bank-transactions",
            r#"{"amount":"1.00","posted_on":"2024-01-01","description":"x\u0000"}"#,
            "description",
        ),
    ];
    for (i, (path, body, field)) in cases.iter().enumerate() {
        let r = app
            .write(Method::POST, path, &co.token, Some(&format!("n{i}")), body)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (422, "validation_failed"),
            "{path} {body}: {:?}",
            r.json()
        );
        assert!(
            r.json()["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == *field)),
            "{body}: {:?}",
            r.json()
        );
    }
    let r = app
        .write(
            Method::PATCH,
            "/api/company/settings",
            &co.token,
            Some("ns"),
            r#"{"display_name":"a\u0000"}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert_eq!(r.json()["errors"][0]["field"], "display_name");
    let r = app
        .send(
            app.client
                .post(app.url("/admin/companies"))
                .bearer_auth(crate::harness::OPERATOR)
                .header("content-type", "application/json")
                .body(r#"{"name":"a\u0000"}"#),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "validation_failed"));
    assert_eq!(r.json()["errors"][0]["field"], "name");
    assert_eq!(app.count_for("customers", &co).await, 0);
    assert_eq!(app.count_for("employees", &co).await, 0);
}

async fn dates_are_exactly_yyyy_mm_dd_with_years_0001_to_9999(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    for (i, bad) in [
        "+2024-1-01",
        "2024- 1- 1",
        "-999-01-01",
        "0000-01-01",
        "2024-1-1",
        "2024-01-1 ",
        " 2024-01-01",
        "2024/01/01",
        "2024-02-30",
        "10000-01-01",
        "2024-01-01T00:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let body =
            json!({"period_start": bad, "period_end": "2024-01-31", "pay_date": "2024-02-01"});
        let r = app
            .post("/api/payroll-runs", &co.token, &format!("d{i}"), &body)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (422, "validation_failed"),
            "{bad:?}: {:?}",
            r.json()
        );
        assert_eq!(r.json()["errors"][0]["field"], "period_start", "{bad:?}");
    }
    for (i, good) in ["2024-01-01", "0001-01-01"].iter().enumerate() {
        let body =
            json!({"period_start": good, "period_end": "2024-01-31", "pay_date": "2024-02-01"});
        let r = app
            .post("/api/payroll-runs", &co.token, &format!("g{i}"), &body)
            .await;
        assert_ne!(r.code(), "validation_failed", "{good}: {:?}", r.json());
    }
}

backend_tests!(
    bodies_are_checked_in_order_size_type_key_json,
    fields_are_validated_with_their_paths,
    lists_paginate_newest_first_and_refuse_bad_parameters,
    nul_characters_are_refused_with_their_field_path,
    dates_are_exactly_yyyy_mm_dd_with_years_0001_to_9999,
);
