//! Authentication, roles, tenant isolation and the order of checks.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, OPERATOR};

async fn another_companys_entities_are_not_found_and_not_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_company("A").await;
    let b = app.create_company("B").await;
    let created = app
        .post("/api/customers", &a.token, "k", &json!({"name": "A's"}))
        .await;
    let id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = app.get(&format!("/api/customers/{id}"), &b.token).await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let list = app.get("/api/customers", &b.token).await;
    assert_eq!(list.json()["data"], json!([]));
    let mine = app
        .get(&format!("/api/customers/{}", id.to_uppercase()), &a.token)
        .await;
    assert_eq!(mine.status, 200, "ids are accepted in any hex case");
}

async fn tokens_are_checked_before_anything_else_and_by_kind(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let none = app.send(app.client.get(app.url("/api/customers"))).await;
    assert_eq!(
        (none.status, none.code().as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(none.header("www-authenticate").as_deref(), Some("Bearer"));
    let operator_on_api = app.get("/api/customers", OPERATOR).await;
    assert_eq!(
        operator_on_api.status, 401,
        "the operator token is not a company token"
    );
    let company_on_admin = app
        .send(
            app.client
                .get(app.url("/admin/system/health"))
                .bearer_auth(&co.token),
        )
        .await;
    assert_eq!(
        company_on_admin.status, 401,
        "a company token is not the operator token"
    );
    let unknown = app.get("/api/customers", "acb_not-a-real-token").await;
    assert_eq!(unknown.status, 401);
    // 404 for a non-UUID path segment comes before authentication.
    let r = app
        .send(app.client.get(app.url("/api/customers/not-a-uuid")))
        .await;
    assert_eq!(r.status, 404);
    // Authentication (401) comes before body size, content type and key checks.
    let r = app
        .write(Method::POST, "/api/customers", "acb_bad", None, "not json")
        .await;
    assert_eq!(r.status, 401);
}

async fn roles_limit_what_a_member_may_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let viewer = app.member_token(&co, "v@example.com", "viewer").await;
    let accountant = app
        .member_token(&co, "acct@example.com", "accountant")
        .await;
    let r = app
        .post("/api/customers", &viewer, "k1", &json!({"name": "x"}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    // 403 comes before the key and body checks.
    let r = app
        .write(Method::POST, "/api/customers", &viewer, None, "{")
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        app.get("/api/customers", &viewer).await.status,
        200,
        "viewers read"
    );
    assert_eq!(
        app.post("/api/customers", &accountant, "k2", &json!({"name": "x"}))
            .await
            .status,
        201
    );
    let r = app
        .patch(
            "/api/company/settings",
            &accountant,
            "k3",
            &json!({"currency": "EUR"}),
        )
        .await;
    assert_eq!(r.status, 403, "accountants do not change settings");
    let r = app
        .post(
            "/api/company/members",
            &accountant,
            "k4",
            &json!({"email": "x@y.z", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 403, "accountants do not grant access");
    assert_eq!(app.count_for("customers", &co).await, 1);
}

async fn a_role_change_takes_effect_within_a_second(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let token = app.member_token(&co, "m@example.com", "accountant").await;
    assert_eq!(
        app.post("/api/customers", &token, "a", &json!({"name": "x"}))
            .await
            .status,
        201
    );
    let r = app
        .post(
            "/api/company/members",
            &co.token,
            "demote",
            &json!({"email": "m@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        app.post("/api/customers", &token, "b", &json!({"name": "y"}))
            .await
            .status,
        403
    );
}

async fn admin_endpoints_create_companies_and_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .send(
            app.client
                .post(app.url("/admin/companies"))
                .bearer_auth(OPERATOR)
                .json(&json!({"name": "N", "email": "boss@n.io"})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let v = r.json();
    assert_eq!(
        (v["email"].as_str(), v["role"].as_str()),
        (Some("boss@n.io"), Some("admin"))
    );
    let company = v["company_id"].as_str().unwrap_or_default();
    let settings = app
        .get(
            "/api/company/settings",
            v["api_token"].as_str().unwrap_or_default(),
        )
        .await;
    assert_eq!(
        settings.json(),
        json!({"settings": {"display_name": "N", "currency": "USD", "invoice_prefix": "INV-",
               "payment_terms_days": 30, "fiscal_year_start_month": 1}, "version": 1})
    );
    let tok = app
        .send(
            app.client
                .post(app.url(&format!("/admin/companies/{company}/tokens")))
                .bearer_auth(OPERATOR)
                .json(&json!({"email": "BOSS@n.io"})),
        )
        .await;
    assert_eq!(tok.status, 201, "emails match case-insensitively");
    let missing = app
        .send(
            app.client
                .post(app.url(&format!("/admin/companies/{company}/tokens")))
                .bearer_auth(OPERATOR)
                .json(&json!({"email": "nobody@n.io"})),
        )
        .await;
    assert_eq!(missing.status, 404);
    let health = app
        .send(
            app.client
                .get(app.url("/admin/system/health"))
                .bearer_auth(OPERATOR),
        )
        .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["components"]["idempotency"]["status"], "ok");
}

async fn request_ids_are_echoed_when_valid_and_generated_otherwise(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .send(
            app.client
                .get(app.url("/api/nothing-here"))
                .header("x-request-id", "abc.123:x_y-z"),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc.123:x_y-z"));
    assert_eq!(r.json()["request_id"], "abc.123:x_y-z");
    let r = app
        .send(
            app.client
                .get(app.url("/healthz"))
                .header("x-request-id", "bad id!"),
        )
        .await;
    let generated = r.header("x-request-id").unwrap_or_default();
    assert!(!generated.is_empty() && generated != "bad id!");
}

backend_tests!(
    another_companys_entities_are_not_found_and_not_listed,
    tokens_are_checked_before_anything_else_and_by_kind,
    roles_limit_what_a_member_may_write,
    a_role_change_takes_effect_within_a_second,
    admin_endpoints_create_companies_and_tokens,
    request_ids_are_echoed_when_valid_and_generated_otherwise,
);
