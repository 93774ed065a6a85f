//! Inventory on both backends: items with unique skus, adjustments that never take a
//! quantity below zero under any concurrency, bad input, and replays after expiry.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::backend_tests;
use crate::financial::{assert_exactly_once, assert_invalid, assert_missing, assert_rule};
use crate::harness::{Backend, Company, Options, TestApp};

/// Creates an item with `quantity` and returns its id.
pub async fn item(app: &TestApp, co: &Company, sku: &str, quantity: i64) -> String {
    let r = app
        .post(
            "/api/inventory-items",
            &co.token,
            &format!("item-{sku}"),
            &json!({"sku": sku, "name": "Widget", "quantity": quantity}),
        )
        .await;
    assert_eq!(r.status, 201, "item: {:?}", r.json());
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Adjusts an item.
pub async fn adjust(
    app: &TestApp,
    co: &Company,
    item: &str,
    key: &str,
    delta: i64,
) -> crate::harness::Resp {
    app.post(
        &format!("/api/inventory-items/{item}/adjustments"),
        &co.token,
        key,
        &json!({"delta": delta, "reason": "count"}),
    )
    .await
}

async fn items_are_created_once_read_listed_and_skus_are_unique(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let body = json!({"sku": "W-1", "name": "Widget", "quantity": 10});
    let other = json!({"sku": "W-1", "name": "Widget", "quantity": 11});
    let first = assert_exactly_once(&app, &co, "/api/inventory-items", "i-1", &body, &other).await;
    let v = first.json();
    let id = v["id"].as_str().unwrap_or_default();
    assert_eq!(
        first.header("location"),
        Some(format!("/api/inventory-items/{id}"))
    );
    assert_eq!(
        (v["sku"].clone(), v["quantity"].clone()),
        (json!("W-1"), json!(10))
    );
    let read = app
        .get(&format!("/api/inventory-items/{id}"), &co.token)
        .await;
    assert_eq!(read.body, first.body, "GET returns the create's shape");
    let taken = app
        .post("/api/inventory-items", &co.token, "i-2", &body)
        .await;
    assert_rule(&taken, "sku_taken");
    let list = app.get("/api/inventory-items", &co.token).await.json();
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let stranger = app.create_company("Other").await;
    let hidden = app
        .get(&format!("/api/inventory-items/{id}"), &stranger.token)
        .await;
    assert_eq!(hidden.status, 404);
    let same_sku_elsewhere = app
        .post("/api/inventory-items", &stranger.token, "i-1", &body)
        .await;
    assert_eq!(
        same_sku_elsewhere.status, 201,
        "skus are unique per company"
    );
}

async fn adjustments_are_recorded_with_their_reason_and_refused_below_zero(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let id = item(&app, &co, "W-1", 5).await;
    let path = format!("/api/inventory-items/{id}/adjustments");
    let body = json!({"delta": -3, "reason": "shipped"});
    let other = json!({"delta": -2, "reason": "shipped"});
    let first = assert_exactly_once(&app, &co, &path, "a-1", &body, &other).await;
    let v = first.json();
    assert_eq!(first.header("location"), None);
    assert_eq!(
        (v["item_id"].as_str(), v["quantity"].clone()),
        (Some(id.as_str()), json!(2))
    );
    assert_eq!(
        (
            v["adjustment"]["delta"].clone(),
            v["adjustment"]["reason"].clone()
        ),
        (json!(-3), json!("shipped"))
    );
    assert_rule(
        &adjust(&app, &co, &id, "a-2", -3).await,
        "insufficient_stock",
    );
    assert_eq!(adjust(&app, &co, &id, "a-3", 7).await.json()["quantity"], 9);
    let unknown = app
        .post(
            &format!("/api/inventory-items/{}/adjustments", uuid::Uuid::new_v4()),
            &co.token,
            "a-4",
            &json!({"delta": 1, "reason": "x"}),
        )
        .await;
    assert_missing(&unknown, "inventory item");
    assert_eq!(app.count_for("inventory_adjustments", &co).await, 2);
    let read = app
        .get(&format!("/api/inventory-items/{id}"), &co.token)
        .await
        .json();
    assert_eq!(read["quantity"], 9);
}

async fn two_hundred_concurrent_mixed_adjustments_never_take_the_quantity_below_zero(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            pool_size: Some(20),
            ..Options::default()
        },
    )
    .await;
    let co = app.create_company("Acme").await;
    let id = item(&app, &co, "HOT", 20).await;
    let deltas: Vec<i64> = (0..200)
        .map(|i: i64| if i % 3 == 0 { i % 5 + 1 } else { -(i % 4 + 1) })
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(deltas.len()));
    let rs = join_all(deltas.iter().enumerate().map(|(i, d)| {
        let (app, co, id, barrier) = (&app, &co, &id, barrier.clone());
        async move {
            barrier.wait().await;
            (*d, adjust(app, co, id, &format!("c-{i}"), *d).await)
        }
    }))
    .await;
    let mut accepted = 0i64;
    let mut n_accepted = 0;
    for (d, r) in &rs {
        match r.status {
            201 => {
                accepted += d;
                n_accepted += 1;
                assert!(r.json()["quantity"].as_i64().unwrap_or(-1) >= 0);
            }
            _ => assert_rule(r, "insufficient_stock"),
        }
    }
    let q = app
        .get(&format!("/api/inventory-items/{id}"), &co.token)
        .await
        .json()["quantity"]
        .as_i64();
    assert_eq!(
        q,
        Some(20 + accepted),
        "final quantity = start + accepted deltas"
    );
    assert!(q.unwrap_or(-1) >= 0);
    assert!(
        n_accepted > 0 && n_accepted < 200,
        "both outcomes happened ({n_accepted})"
    );
    assert_eq!(
        app.count_for("inventory_adjustments", &co).await,
        n_accepted
    );
    let min_after: i64 = idem::on_db!(&app.state.db, |c| sqlx::query_scalar::<_, i64>(
        "select min(quantity_after) from inventory_adjustments"
    )
    .fetch_one(c)
    .await)
    .expect("min");
    assert!(
        min_after >= 0,
        "no recorded adjustment left a negative quantity"
    );
}

async fn bad_inventory_input_is_refused_with_field_paths_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"sku": "x".repeat(65), "name": "W", "quantity": 1}),
            "sku",
        ),
        (json!({"sku": " ", "name": "W", "quantity": 1}), "sku"),
        (json!({"sku": "A", "name": "W", "quantity": -1}), "quantity"),
        (
            json!({"sku": "A", "name": "W", "quantity": 1.0}),
            "quantity",
        ),
        (
            json!({"sku": "A", "name": "W", "quantity": 1, "color": "red"}),
            "color",
        ),
        (json!({"sku": "A", "quantity": 1}), "name"),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = app
            .post("/api/inventory-items", &co.token, &format!("bad-{i}"), body)
            .await;
        assert_invalid(&r, field);
    }
    assert_eq!(app.count_for("inventory_items", &co).await, 0);
    let id = item(&app, &co, "W", 1).await;
    let path = format!("/api/inventory-items/{id}/adjustments");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"delta": 0, "reason": "r"}), "delta"),
        (json!({"delta": 1.5, "reason": "r"}), "delta"),
        (json!({"delta": "1", "reason": "r"}), "delta"),
        (json!({"delta": 1}), "reason"),
        (json!({"delta": 1, "reason": "r".repeat(501)}), "reason"),
        (json!({"delta": 1, "reason": "r", "extra": true}), "extra"),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = app
            .post(&path, &co.token, &format!("badadj-{i}"), body)
            .await;
        assert_invalid(&r, field);
    }
    assert_eq!(app.count_for("inventory_adjustments", &co).await, 0);
    assert_eq!(app.count_for("workflow_instances", &co).await, 0);
}

async fn after_expiry_an_adjustment_replays_the_item_as_it_is_now(backend: Backend) {
    let o = Options {
        lease: Duration::from_millis(500),
        key_ttl: Duration::from_secs(1),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let id = item(&app, &co, "W", 10).await;
    let first = adjust(&app, &co, &id, "exp-1", -4).await;
    assert_eq!(first.status, 201);
    assert_eq!(adjust(&app, &co, &id, "exp-2", 1).await.status, 201);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    accubooks::jobs::prune_once(&app.state)
        .await
        .expect("prune");
    let again = adjust(&app, &co, &id, "exp-1", -4).await;
    assert_eq!(again.status, 200, "{:?}", again.json());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    let v = again.json();
    assert_eq!(v["quantity"], 7, "the item as it is now");
    assert_eq!(v["adjustment"], first.json()["adjustment"]);
    assert_rule(
        &adjust(&app, &co, &id, "exp-1", -5).await,
        "idempotency_key_reused",
    );
    assert_eq!(app.count_for("inventory_adjustments", &co).await, 2);
}

backend_tests!(
    items_are_created_once_read_listed_and_skus_are_unique,
    adjustments_are_recorded_with_their_reason_and_refused_below_zero,
    two_hundred_concurrent_mixed_adjustments_never_take_the_quantity_below_zero,
    bad_inventory_input_is_refused_with_field_paths_and_writes_nothing,
    after_expiry_an_adjustment_replays_the_item_as_it_is_now,
);
