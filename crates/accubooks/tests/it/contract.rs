//! Every row of API.md's idempotency contract, for each of the issue's four operations.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::backend_tests;
use crate::harness::{Backend, Company, Options, TestApp};

/// One operation under test: how to call it and what a valid / different body is.
struct Spec {
    name: &'static str,
    method: Method,
    path: &'static str,
    body: fn(&Company) -> Value,
    other: fn(&Company) -> Value,
    location: Option<&'static str>,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "createCustomer",
            method: Method::POST,
            path: "/api/customers",
            body: |_| json!({"name": "Ada", "email": "ada@example.com"}),
            other: |_| json!({"name": "Ada Lovelace"}),
            location: Some("/api/customers/"),
        },
        Spec {
            name: "createEmployee",
            method: Method::POST,
            path: "/api/employees",
            body: |_| json!({"name": "Grace", "pay_type": "salary", "annual_salary": "96000.00"}),
            other: |_| json!({"name": "Grace", "pay_type": "hourly", "hourly_rate": "50.00"}),
            location: Some("/api/employees/"),
        },
        Spec {
            name: "updateCompanySettings",
            method: Method::PATCH,
            path: "/api/company/settings",
            body: |_| json!({"invoice_prefix": "AC-", "payment_terms_days": 14}),
            other: |_| json!({"invoice_prefix": "ZZ-"}),
            location: None,
        },
        Spec {
            name: "grantUserAccess",
            method: Method::POST,
            path: "/api/company/members",
            body: |_| json!({"email": "acct@example.com", "role": "accountant"}),
            other: |_| json!({"email": "acct@example.com", "role": "viewer"}),
            location: Some("/api/company/members/"),
        },
    ]
}

async fn call(
    app: &TestApp,
    s: &Spec,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> crate::harness::Resp {
    app.write(s.method.clone(), s.path, token, key, &body.to_string())
        .await
}

async fn first_execution_is_201_and_a_retry_replays_the_same_bytes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    for s in specs() {
        let body = (s.body)(&co);
        let first = call(&app, &s, &co.token, Some("k-1"), &body).await;
        assert_eq!(first.status, 201, "{}: {:?}", s.name, first.json());
        assert_eq!(
            first.header("idempotent-replayed").as_deref(),
            Some("false"),
            "{}",
            s.name
        );
        let again = call(&app, &s, &co.token, Some("k-1"), &body).await;
        assert_eq!(again.status, 200, "{}", s.name);
        assert_eq!(
            again.body, first.body,
            "{}: replay must be byte-identical",
            s.name
        );
        assert_eq!(
            again.header("idempotent-replayed").as_deref(),
            Some("true"),
            "{}",
            s.name
        );
        assert_eq!(
            again.header("location"),
            first.header("location"),
            "{}",
            s.name
        );
        match s.location {
            Some(prefix) => {
                let loc = first.header("location").unwrap_or_default();
                assert!(loc.starts_with(prefix), "{}: location {loc}", s.name);
                let read = app.get(&loc, &co.token).await;
                assert_eq!(read.status, 200, "{}", s.name);
                assert_eq!(
                    read.json(),
                    first.json(),
                    "{}: GET returns the create's shape",
                    s.name
                );
            }
            None => assert!(first.header("location").is_none(), "{}", s.name),
        }
    }
}

async fn the_same_key_with_another_body_is_refused_and_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    for s in specs() {
        assert_eq!(
            call(&app, &s, &co.token, Some("k-m"), &(s.body)(&co))
                .await
                .status,
            201
        );
        let r = call(&app, &s, &co.token, Some("k-m"), &(s.other)(&co)).await;
        assert_eq!(r.status, 422, "{}", s.name);
        assert_eq!(r.code(), "idempotency_key_reused", "{}", s.name);
        assert!(r.header("idempotent-replayed").is_none());
    }
    let metrics = app.send(app.client.get(app.url("/metrics"))).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(r#"idempotent_writes_failed_total{operation="createCustomer",type="high-risk",error_type="mismatch"} 1"#),
        "{text}"
    );
}

async fn whitespace_key_order_and_escapes_do_not_make_another_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let a = app
        .write(
            Method::POST,
            "/api/customers",
            &co.token,
            Some("k-c"),
            r#"{"name":"Ada","email":"a@b.c"}"#,
        )
        .await;
    assert_eq!(a.status, 201);
    let b = app
        .write(
            Method::POST,
            "/api/customers",
            &co.token,
            Some("\"k-c\""),
            "{ \"email\" : \"a@b.c\",\n \"name\": \"\\u0041da\" }",
        )
        .await;
    assert_eq!(b.status, 200, "{:?}", b.json());
    assert_eq!(b.body, a.body);
}

async fn keys_are_scoped_by_company_and_operation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_company("A").await;
    let b = app.create_company("B").await;
    let ra = app
        .post("/api/customers", &a.token, "shared", &json!({"name": "x"}))
        .await;
    let rb = app
        .post("/api/customers", &b.token, "shared", &json!({"name": "x"}))
        .await;
    assert_eq!((ra.status, rb.status), (201, 201));
    assert_ne!(ra.json()["id"], rb.json()["id"]);
    let re = app
        .post(
            "/api/employees",
            &a.token,
            "shared",
            &json!({"name": "x", "pay_type": "hourly", "hourly_rate": "1.00"}),
        )
        .await;
    assert_eq!(re.status, 201);
    // The id is UUIDv5 of company:{company}:op:{operation}:key:{key}.
    let expected = idem::deterministic_id("company", &a.id, "createCustomer", "shared");
    assert_eq!(ra.json()["id"], json!(expected.to_string()));
}

async fn missing_invalid_and_repeated_keys_are_400_and_write_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let body = r#"{"name":"x"}"#;
    let r = app
        .write(Method::POST, "/api/customers", &co.token, None, body)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "idempotency_key_missing")
    );
    for bad in ["", "\"\"", "has space", "\"unterminated", &"k".repeat(256)] {
        let r = app
            .write(Method::POST, "/api/customers", &co.token, Some(bad), body)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "idempotency_key_invalid"),
            "key {bad:?}"
        );
    }
    let repeated = [
        ("content-type", "application/json"),
        ("idempotency-key", "a"),
        ("idempotency-key", "b"),
    ];
    let r = app
        .write_with(
            Method::POST,
            "/api/customers",
            &co.token,
            None,
            body,
            &repeated,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "idempotency_key_invalid")
    );
    assert_eq!(app.count("customers").await, 0);
    assert_eq!(app.count("idempotency_keys").await, 0);
}

async fn a_failed_execution_frees_the_key_for_a_fresh_attempt(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let bad = app
        .post("/api/customers", &co.token, "k-f", &json!({"name": "  "}))
        .await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (422, "validation_failed")
    );
    assert_eq!(bad.json()["errors"][0]["field"], "name");
    assert_eq!(
        app.count("idempotency_keys").await,
        0,
        "the key is released"
    );
    let good = app
        .post("/api/customers", &co.token, "k-f", &json!({"name": "Ada"}))
        .await;
    assert_eq!(good.status, 201, "{:?}", good.json());
}

async fn a_request_while_the_first_executes_is_409_or_waits_with_prefer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    for s in specs() {
        let hold = app.state.idem.hooks().arm("claimed");
        let first = {
            let (app, s_path, s_method, token, body) = (
                &app,
                s.path,
                s.method.clone(),
                co.token.clone(),
                (s.body)(&co),
            );
            async move {
                app.write(s_method, s_path, &token, Some("k-w"), &body.to_string())
                    .await
            }
        };
        let probe = async {
            hold.reached().await;
            let busy = call(&app, &s, &co.token, Some("k-w"), &(s.other)(&co)).await;
            assert_eq!(
                (busy.status, busy.code().as_str()),
                (409, "idempotency_key_in_flight"),
                "{}",
                s.name
            );
            assert_eq!(busy.header("retry-after").as_deref(), Some("1"));
            assert!(busy.header("preference-applied").is_none());
            let waiter = app.write_with(
                s.method.clone(),
                s.path,
                &co.token,
                Some("k-w"),
                (s.body)(&co).to_string(),
                &[("content-type", "application/json"), ("prefer", "wait=5")],
            );
            let release = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                hold.release();
            };
            let (waited, ()) = tokio::join!(waiter, release);
            waited
        };
        let (first, waited) = tokio::join!(first, probe);
        assert_eq!(first.status, 201, "{}", s.name);
        assert_eq!(waited.status, 200, "{}: {:?}", s.name, waited.json());
        assert_eq!(waited.body, first.body);
        assert_eq!(
            waited.header("preference-applied").as_deref(),
            Some("wait=5")
        );
    }
}

async fn prefer_wait_is_clamped_and_times_out_as_409(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            max_wait: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .await;
    let co = app.create_company("Acme").await;
    let hold = app.state.idem.hooks().arm("claimed");
    let body = json!({"name": "x"});
    let first = app.post("/api/customers", &co.token, "k-t", &body);
    let probe = async {
        hold.reached().await;
        let r = app
            .write_with(
                Method::POST,
                "/api/customers",
                &co.token,
                Some("k-t"),
                r#"{"name":"x"}"#,
                &[("content-type", "application/json"), ("prefer", "wait=60")],
            )
            .await;
        hold.release();
        r
    };
    let (first, waited) = tokio::join!(first, probe);
    assert_eq!(first.status, 201);
    assert_eq!(waited.status, 409);
    assert_eq!(
        waited.header("preference-applied").as_deref(),
        Some("wait=1")
    );
}

async fn after_the_record_expires_a_retry_replays_from_the_record_row(backend: Backend) {
    let o = Options {
        lease: Duration::from_millis(500),
        key_ttl: Duration::from_secs(1),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let mut firsts = Vec::new();
    for s in specs() {
        let r = call(&app, &s, &co.token, Some("k-x"), &(s.body)(&co)).await;
        assert_eq!(r.status, 201, "{}", s.name);
        firsts.push(r);
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    accubooks::jobs::prune_once(&app.state)
        .await
        .expect("prune");
    assert_eq!(
        app.count("idempotency_keys").await,
        0,
        "expired records are pruned"
    );
    for (s, first) in specs().iter().zip(&firsts) {
        let r = call(&app, s, &co.token, Some("k-x"), &(s.body)(&co)).await;
        assert_eq!(r.status, 200, "{}: {:?}", s.name, r.json());
        assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(r.header("location"), first.header("location"), "{}", s.name);
        let other = call(&app, s, &co.token, Some("k-x"), &(s.other)(&co)).await;
        assert_eq!(
            (other.status, other.code().as_str()),
            (422, "idempotency_key_reused"),
            "{}",
            s.name
        );
    }
    assert_eq!(app.count_for("customers", &co).await, 1);
    assert_eq!(app.count_for("employees", &co).await, 1);
    assert_eq!(
        app.count_for("settings_versions", &co).await,
        2,
        "version 1 + one change"
    );
    assert_eq!(app.count_for("access_grants", &co).await, 1);
}

async fn a_new_execution_commits_its_audit_row_with_the_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let r = app
        .post("/api/customers", &co.token, "k-a", &json!({"name": "x"}))
        .await;
    assert_eq!(r.status, 201);
    let det = idem::deterministic_id("company", &co.id, "createCustomer", "k-a").to_string();
    let (status, company, key): (String, String, String) = idem::on_db!(&app.state.db, |c| sqlx::query_as(
        "select status, company_id, idempotency_key from idempotent_write_audit_log where deterministic_id = $1"
    )
    .bind(&det)
    .fetch_one(c)
    .await)
    .expect("audit row");
    assert_eq!(
        (status.as_str(), company.as_str(), key.as_str()),
        ("new", co.id.as_str(), "k-a")
    );
}

async fn the_audit_log_refuses_updates_and_deletes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let r = app
        .post("/api/customers", &co.token, "k-ao", &json!({"name": "x"}))
        .await;
    assert_eq!(r.status, 201);
    let db = &app.state.db;
    let update = idem::on_db!(db, |c| sqlx::query(
        "update idempotent_write_audit_log set status = 'failed'"
    )
    .execute(c)
    .await
    .map(|_| ()));
    assert!(update.is_err(), "UPDATE on the audit log is refused");
    let delete = idem::on_db!(db, |c| sqlx::query(
        "delete from idempotent_write_audit_log"
    )
    .execute(c)
    .await
    .map(|_| ()));
    assert!(delete.is_err(), "DELETE on the audit log is refused");
    assert_eq!(app.count("idempotent_write_audit_log").await, 1);
}

backend_tests!(
    first_execution_is_201_and_a_retry_replays_the_same_bytes,
    the_same_key_with_another_body_is_refused_and_counted,
    whitespace_key_order_and_escapes_do_not_make_another_request,
    keys_are_scoped_by_company_and_operation,
    missing_invalid_and_repeated_keys_are_400_and_write_nothing,
    a_failed_execution_frees_the_key_for_a_fresh_attempt,
    a_request_while_the_first_executes_is_409_or_waits_with_prefer,
    prefer_wait_is_clamped_and_times_out_as_409,
    after_the_record_expires_a_retry_replays_from_the_record_row,
    a_new_execution_commits_its_audit_row_with_the_write,
    the_audit_log_refuses_updates_and_deletes,
);
