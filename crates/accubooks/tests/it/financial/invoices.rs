//! createInvoice and finalizeInvoice.

use serde_json::json;

use super::{
    assert_exactly_once, assert_invalid, assert_missing, assert_rule, customer, draft, finalize,
    lines_350,
};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

async fn an_invoice_is_created_once_with_computed_amounts_and_defaults(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let body = json!({"customer_id": c, "line_items": lines_350()});
    let other = json!({"customer_id": c, "currency": "EUR", "line_items": lines_350()});
    let first = assert_exactly_once(&app, &co, "/api/invoices", "inv-1", &body, &other).await;
    let inv = first.json();
    assert_eq!(inv["status"], "draft");
    assert_eq!(inv["number"], json!(null));
    assert_eq!(inv["currency"], "USD");
    assert_eq!(inv["line_items"][0]["amount"], "300.00");
    assert_eq!(inv["line_items"][1]["amount"], "50.00");
    assert_eq!(inv["total"], "350.00");
    assert_eq!(inv["amount_paid"], "0.00");
    assert_eq!(inv["balance_due"], "350.00");
    let due = (chrono::Utc::now().date_naive() + chrono::Days::new(30)).to_string();
    assert_eq!(inv["due_date"], due.as_str());
    let loc = first.header("location").unwrap_or_default();
    assert_eq!(
        loc,
        format!("/api/invoices/{}", inv["id"].as_str().unwrap_or(""))
    );
    let read = app.get(&loc, &co.token).await;
    assert_eq!(
        read.body, first.body,
        "GET returns the create's shape and values"
    );
    assert_eq!(app.count_for("invoices", &co).await, 1);
    assert_eq!(app.count_for("invoice_line_items", &co).await, 2);
}

async fn invoice_inputs_are_validated_and_computed_overflow_names_the_output(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let big = json!([{"description": "x", "quantity": 1000, "unit_price": "999999999999.00"}]);
    assert_invalid(
        &draft(&app, &co, &c, "v-1", big).await,
        "line_items[0].amount",
    );
    let two = json!([
        {"description": "x", "quantity": 1, "unit_price": "999999999999.00"},
        {"description": "y", "quantity": 1, "unit_price": "1.00"}
    ]);
    assert_invalid(&draft(&app, &co, &c, "v-2", two).await, "total");
    let float = json!([{"description": "x", "quantity": 1, "unit_price": 1.5}]);
    assert_invalid(
        &draft(&app, &co, &c, "v-3", float).await,
        "line_items[0].unit_price",
    );
    let frac = json!([{"description": "x", "quantity": 1.0, "unit_price": "1.00"}]);
    assert_invalid(
        &draft(&app, &co, &c, "v-4", frac).await,
        "line_items[0].quantity",
    );
    assert_invalid(&draft(&app, &co, &c, "v-5", json!([])).await, "line_items");
    let unknown = json!([{"description": "x", "quantity": 1, "unit_price": "1.00", "tax": "1"}]);
    assert_invalid(
        &draft(&app, &co, &c, "v-6", unknown).await,
        "line_items[0].tax",
    );
    let ghost = uuid::Uuid::new_v4().to_string();
    assert_missing(
        &draft(&app, &co, &ghost, "v-7", lines_350()).await,
        "customer_id",
    );
    assert_eq!(
        app.count_for("invoices", &co).await,
        0,
        "nothing was written"
    );
    let other = app.create_company("Other").await;
    let foreign = customer(&app, &other).await;
    assert_missing(
        &draft(&app, &co, &foreign, "v-8", lines_350()).await,
        "customer_id",
    );
}

async fn finalize_numbers_with_the_current_prefix_once_and_refuses_a_non_draft(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let a = draft(&app, &co, &c, "a", lines_350()).await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let path = format!("/api/invoices/{a}/finalize");
    let first = assert_exactly_once(&app, &co, &path, "f-a", &json!({}), &json!({"x": 1})).await;
    assert!(
        first.header("location").is_none(),
        "finalize has no Location"
    );
    let inv = first.json();
    assert_eq!(
        (inv["status"].as_str(), inv["number"].as_str()),
        (Some("open"), Some("INV-000001"))
    );
    let get = app.get(&format!("/api/invoices/{a}"), &co.token).await;
    assert_eq!(get.body, first.body);
    assert_rule(
        &finalize(&app, &co, &a, "f-a-again").await,
        "invoice_not_draft",
    );
    let patch = json!({"invoice_prefix": "AC-"});
    assert_eq!(
        app.patch("/api/company/settings", &co.token, "p", &patch)
            .await
            .status,
        201
    );
    let zero = json!([{"description": "free", "quantity": 1, "unit_price": "0.00"}]);
    let b = draft(&app, &co, &c, "b", zero).await.json()["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let fb = finalize(&app, &co, &b, "f-b").await.json();
    assert_eq!(
        (fb["status"].as_str(), fb["number"].as_str()),
        (Some("paid"), Some("AC-000002"))
    );
    let ghost = uuid::Uuid::new_v4();
    let r = finalize(&app, &co, &ghost.to_string(), "f-ghost").await;
    assert_eq!(r.status, 404);
    let empty = app
        .send(
            app.client
                .post(app.url(&format!("/api/invoices/{ghost}/finalize")))
                .bearer_auth(&co.token)
                .header("idempotency-key", "f-empty"),
        )
        .await;
    assert_eq!(
        empty.status, 404,
        "an empty body without content type means {{}}"
    );
    let open = app.get("/api/invoices?status=open", &co.token).await.json();
    assert_eq!(open["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(open["data"][0]["id"].as_str(), Some(a.as_str()));
    let bad = app.get("/api/invoices?status=void", &co.token).await;
    assert_invalid(&bad, "status");
}

async fn invoice_lists_page_newest_first_with_their_own_line_items(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let c = customer(&app, &co).await;
    let mut created = Vec::new();
    for n in 1..=3 {
        let lines: Vec<_> = (0..n)
            .map(|i| json!({"description": format!("l{i}"), "quantity": n, "unit_price": "1.00"}))
            .collect();
        created.push(
            draft(&app, &co, &c, &format!("i-{n}"), json!(lines))
                .await
                .json(),
        );
    }
    let first = app.get("/api/invoices?limit=2", &co.token).await.json();
    assert_eq!(first["data"][0], created[2]);
    assert_eq!(first["data"][1], created[1]);
    let cursor = first["next_cursor"].as_str().unwrap_or("").to_owned();
    let second = app
        .get(&format!("/api/invoices?limit=2&cursor={cursor}"), &co.token)
        .await
        .json();
    assert_eq!(second["data"], json!([created[0].clone()]));
    assert_eq!(second["next_cursor"], json!(null));
    let drafts = app
        .get("/api/invoices?status=draft", &co.token)
        .await
        .json();
    assert_eq!(drafts["data"].as_array().map(Vec::len), Some(3));
}

backend_tests!(
    invoice_lists_page_newest_first_with_their_own_line_items,
    an_invoice_is_created_once_with_computed_amounts_and_defaults,
    invoice_inputs_are_validated_and_computed_overflow_names_the_output,
    finalize_numbers_with_the_current_prefix_once_and_refuses_a_non_draft,
);
