//! `GET /openapi.json`: the document declares every registered operation with its
//! idempotency contract, and the reads, operator and health routes.

use serde_json::{json, Value};

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

async fn fetch(app: &TestApp) -> (crate::harness::Resp, Value) {
    let r = app.send(app.client.get(app.url("/openapi.json"))).await;
    let doc = r.json();
    (r, doc)
}

fn operation<'a>(doc: &'a Value, method: &str, route: &str) -> &'a Value {
    &doc["paths"][route][method.to_ascii_lowercase()]
}

/// `schema`, or the component schema it refers to.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

/// The non-null alternative of a nullable schema (`oneOf: [null, X]`), else `schema`.
fn non_null(schema: &Value) -> &Value {
    schema["oneOf"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["type"] != "null"))
        .unwrap_or(schema)
}

async fn the_document_is_served_without_a_token_as_openapi_3_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let (r, doc) = fetch(&app).await;

    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{:?}",
        doc["openapi"]
    );
    assert!(r.header("x-request-id").is_some());
    let again = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(again.body, r.body, "built once, served identically");
}

async fn every_registered_operation_declares_its_idempotency_contract(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let (_, doc) = fetch(&app).await;

    let registry = accubooks::ops::registry();
    assert!(!registry.operations().is_empty());
    for def in registry.operations() {
        let op = operation(&doc, def.method().as_str(), def.route());
        assert!(
            op.is_object(),
            "{} {} is missing",
            def.method(),
            def.route()
        );
        assert_eq!(op["operationId"], def.name());
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let key = params
            .iter()
            .find(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
        assert!(
            key.is_some_and(|p| p["required"] == true),
            "{}: Idempotency-Key",
            def.name()
        );
        for status in ["201", "200"] {
            let replayed = &op["responses"][status]["headers"]["Idempotent-Replayed"];
            assert!(
                replayed.is_object(),
                "{}: {status} Idempotent-Replayed",
                def.name()
            );
            assert!(op["responses"][status]["content"]["application/json"].is_object());
        }
        for status in ["400", "401", "403", "409", "413", "415", "422", "503"] {
            let problem = &op["responses"][status]["content"]["application/problem+json"];
            assert!(problem.is_object(), "{}: {status} problem", def.name());
            assert!(
                problem.to_string().contains("#/components/schemas/Problem"),
                "{}: {status} uses the Problem schema",
                def.name()
            );
        }
        assert!(op["responses"]["409"]["headers"]["Retry-After"].is_object());
        let reused = op["responses"]["422"].to_string();
        assert!(reused.contains("idempotency_key_reused") && reused.contains("validation_failed"));
    }
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["errors"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

async fn creates_declare_their_location_and_money_is_a_decimal_string(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let (_, doc) = fetch(&app).await;

    let customers = operation(&doc, "POST", "/api/customers");
    assert!(customers["responses"]["201"]["headers"]["Location"].is_object());
    let settings = operation(&doc, "PATCH", "/api/company/settings");
    assert!(settings["responses"]["201"]["headers"]["Location"].is_null());
    let employee = &doc["components"]["schemas"]["Employee"];
    let salary = resolve(&doc, non_null(&employee["properties"]["annual_salary"]));
    assert_eq!(salary["type"], "string");
    assert_eq!(
        salary["pattern"],
        r"^-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$"
    );
    let refunded = &doc["components"]["schemas"]["Payment"]["properties"]["amount_refunded"];
    assert_eq!(resolve(&doc, refunded)["pattern"], salary["pattern"]);
    let customer = &doc["components"]["schemas"]["Customer"]["properties"];
    assert_eq!(resolve(&doc, &customer["id"])["format"], "uuid");
    assert_eq!(
        resolve(&doc, &customer["created_at"])["format"],
        "date-time"
    );
}

async fn reads_admin_and_health_routes_are_documented(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let (_, doc) = fetch(&app).await;

    for (method, route) in [
        ("GET", "/api/customers"),
        ("GET", "/api/customers/{id}"),
        ("GET", "/api/employees"),
        ("GET", "/api/employees/{id}"),
        ("GET", "/api/company/settings"),
        ("GET", "/api/company/members"),
        ("GET", "/api/company/members/{user_id}"),
        ("POST", "/admin/companies"),
        ("POST", "/admin/companies/{company_id}/tokens"),
        ("GET", "/admin/system/health"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
    ] {
        let op = operation(&doc, method, route);
        assert!(op.is_object(), "{method} {route} is missing");
        assert!(op["responses"].is_object(), "{method} {route}: responses");
    }
    let list = operation(&doc, "GET", "/api/customers");
    let params = list["parameters"].to_string();
    assert!(params.contains("\"limit\"") && params.contains("\"cursor\""));
    let admin = operation(&doc, "POST", "/admin/companies");
    assert_eq!(admin["security"][0]["operator"], serde_json::json!([]));
    let health = operation(&doc, "GET", "/healthz");
    assert_eq!(health["security"], serde_json::json!([{}]));
}

async fn a_body_that_drifts_from_the_served_schema_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let company = app.create_company("Drift").await;
    let created = app
        .post(
            "/api/customers",
            &company.token,
            "k1",
            &json!({"name": "Ada"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let spec = app.spec().await;
    let check =
        |body: &Value| spec.check("POST", "/api/customers", 201, body.to_string().as_bytes());
    assert_eq!(check(&created.json()), Ok(()));

    let mut extra = created.json();
    extra["amount_refunded"] = json!("0.00");
    let mut missing = created.json();
    missing.as_object_mut().map(|o| o.remove("created_at"));
    let mut mistyped = created.json();
    mistyped["email"] = json!(5);
    let mut bad_id = created.json();
    bad_id["id"] = json!("not-a-uuid");

    for (body, needle) in [
        (extra, "amount_refunded"),
        (missing, "created_at"),
        (mistyped, "/email"),
        (bad_id, "/id"),
    ] {
        let refused = check(&body).expect_err(needle);
        assert!(refused.contains("createCustomer"), "{refused}");
        assert!(refused.contains(needle), "{refused}");
    }
    let undocumented = spec.check("GET", "/api/nowhere", 200, b"{}");
    assert!(undocumented.is_err_and(|e| e.contains("no such operation")));
    let wrong_status = spec.check("POST", "/api/customers", 204, b"");
    assert!(wrong_status.is_err_and(|e| e.contains("not a documented response")));
    let accepted = spec.check_request("POST", "/api/customers", br#"{"name":"Ada"}"#);
    assert_eq!(accepted, Ok(()));
    let drifted = spec.check_request("POST", "/api/customers", br#"{"name":"Ada","x":1}"#);
    assert!(drifted.is_err_and(|e| e.contains("createCustomer") && e.contains("x")));
    let empty = spec.check_request("POST", "/api/invoices/{id}/finalize", b"");
    assert_eq!(empty, Ok(()), "finalize's body is optional");
}

/// Bodies the parsers refuse with `422 validation_failed`, with the field the problem
/// names. Each is a refusal JSON Schema can express; what it cannot (an integer written
/// `1.0`, `delta: 0`, `annual_salary` with `pay_type: hourly`, an unknown currency) is
/// stated in the schemas' descriptions instead.
fn refused_bodies(id: &str) -> Vec<(&'static str, String, Value, &'static str)> {
    let hours = json!({ id: 80 });
    let lines: Vec<Value> = (0..101)
        .map(|_| json!({"description": "d", "quantity": 1, "unit_price": "1.00"}))
        .collect();
    [
        ("POST", "/api/customers", json!({"name": "Ada", "nickname": "A"}), "nickname"),
        ("POST", "/api/customers", json!({"name": "x".repeat(201)}), "name"),
        ("POST", "/api/customers", json!({"name": " "}), "name"),
        ("POST", "/api/customers", json!({"email": "a@b"}), "name"),
        ("POST", "/api/employees", json!({"name": "E", "pay_type": "salary", "annual_salary": 50000}), "annual_salary"),
        ("POST", "/api/employees", json!({"name": "E", "email": "nobody", "pay_type": "hourly", "hourly_rate": "10.00"}), "email"),
        ("POST", "/api/inventory-items", json!({"sku": "S", "name": "N", "quantity": "5"}), "quantity"),
        ("POST", "/api/invoices", json!({"customer_id": "c-1", "line_items": [{"description": "d", "quantity": 1, "unit_price": "1.00"}]}), "customer_id"),
        ("POST", "/api/invoices", json!({"customer_id": id, "line_items": [{"description": "d", "quantity": 0, "unit_price": "1.00"}]}), "line_items[0].quantity"),
        ("POST", "/api/invoices", json!({"customer_id": id, "line_items": lines}), "line_items"),
        ("POST", "/api/payments", json!({"invoice_id": id, "method": "card"}), "amount"),
        ("POST", "/api/refunds", json!({"payment_id": id, "amount": "5.00"}), "reason"),
        ("POST", "/api/payroll-runs", json!({"period_start": "2024-01-01", "period_end": "2024-01-15", "pay_date": "2024-01-20", "hours": hours}), "hours."),
        ("POST", "/api/bank-transactions", json!({"amount": "1.00", "posted_on": "2024-1-1", "description": "d"}), "posted_on"),
        ("PATCH", "/api/company/settings", json!({}), "body"),
        ("PATCH", "/api/company/settings", json!({"currency": null}), "currency"),
        ("PATCH", "/api/company/settings", json!({"invoice_prefix": "inv-"}), "invoice_prefix"),
        ("POST", "/api/company/members", json!({"email": "x@y", "role": "owner"}), "role"),
        ("POST", "/api/workflows", json!({"name": "W", "trigger": "invoice.deleted", "action": {"type": "notify", "target": "t"}}), "trigger"),
        ("PATCH", "/api/workflows/{id}", json!({"active": "yes"}), "active"),
        ("POST", "/api/workflows/{id}/trigger", json!({"input": 5}), "input"),
        ("POST", "/api/invoices/{id}/finalize", json!({"force": true}), "force"),
        ("POST", "/api/bank-transactions/{id}/reconcile", json!({}), "payment_id"),
        ("POST", "/api/inventory-items/{id}/adjustments", json!({"delta": 1, "reason": "r".repeat(501)}), "reason"),
        ("POST", "/admin/companies", json!({"name": "A", "plan": "pro"}), "plan"),
        ("POST", "/admin/companies/{id}/tokens", json!({"email": 7}), "email"),
    ]
    .into_iter()
    .map(|(method, route, body, field)| (method, route.replace("{id}", id), body, field))
    .collect()
}

async fn bodies_the_parser_refuses_are_refused_by_the_served_schema(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let company = app.create_company("Refusals").await;
    let spec = app.spec().await;
    let id = "0b9d6c5e-7f1a-4c3b-9e2d-1a2b3c4d5e6f";

    for (i, (method, path, body, field)) in refused_bodies(id).into_iter().enumerate() {
        let token = if path.starts_with("/admin/") {
            crate::harness::OPERATOR
        } else {
            company.token.as_str()
        };
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_default();
        let key = format!("refused-{i}");
        let r = app
            .write(method_, &path, token, Some(&key), &body.to_string())
            .await;

        let named: Vec<String> = r.json()["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            (r.status, r.code().as_str()),
            (422, "validation_failed"),
            "{method} {path} {body}"
        );
        assert!(
            named.iter().any(|f| f.starts_with(field)),
            "{method} {path} {body}: {named:?}"
        );
        let refusals = spec.request_errors(method, &path, &body);
        assert!(
            refusals.as_ref().is_ok_and(|e| !e.is_empty()),
            "{method} {path}: the parser refuses {body} but the served schema admits it ({refusals:?})"
        );
    }
}

backend_tests!(
    bodies_the_parser_refuses_are_refused_by_the_served_schema,
    a_body_that_drifts_from_the_served_schema_is_refused,
    the_document_is_served_without_a_token_as_openapi_3_json,
    every_registered_operation_declares_its_idempotency_contract,
    creates_declare_their_location_and_money_is_a_decimal_string,
    reads_admin_and_health_routes_are_documented,
);
