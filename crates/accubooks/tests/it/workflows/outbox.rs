//! The outbox: instances are written with the write, counted in its audit row and
//! metric, never on replay; workflows are validated, deactivated and triggered.

use std::time::Duration;

use serde_json::{json, Value};

use super::{metric, settled, trigger, workflow};
use crate::backend_tests;
use crate::financial::{assert_invalid, assert_rule, lines_350, open_invoice, pay, refund};
use crate::harness::{Backend, Company, TestApp};
use crate::inventory::{adjust, item};

fn notify() -> Value {
    json!({"type": "notify", "target": "ops@example.com"})
}

async fn instances_of(app: &TestApp, co: &Company, entity: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/workflow-instances?trigger_entity_id={entity}"),
            &co.token,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["data"].as_array().cloned().unwrap_or_default()
}

async fn audit_workflows(app: &TestApp, id: &str) -> i32 {
    idem::on_db!(&app.state.db, |c| sqlx::query_scalar::<_, i32>(
        "select workflows_triggered from idempotent_write_audit_log \
         where deterministic_id = $1 and status = 'new'"
    )
    .bind(id)
    .fetch_one(c)
    .await)
    .expect("audit row")
}

async fn a_payment_writes_one_instance_per_matching_active_workflow_and_replays_write_none(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let other = app.create_company("Other").await;
    let w1 = workflow(&app, &co, "w1", "payment.created", notify(), true).await;
    let w2 = workflow(&app, &co, "w2", "payment.created", notify(), true).await;
    workflow(&app, &co, "w3", "payment.created", notify(), false).await;
    workflow(&app, &co, "w4", "refund.created", notify(), true).await;
    workflow(&app, &other, "w5", "payment.created", notify(), true).await;
    let inv = open_invoice(&app, &co, "1", lines_350()).await;

    let first = pay(&app, &co, "pay-1", &inv, "10.00").await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    let payment = first.json()["id"].as_str().unwrap_or_default().to_owned();
    let again = pay(&app, &co, "pay-1", &inv, "10.00").await;
    assert_eq!(again.status, 200);

    let found = instances_of(&app, &co, &payment).await;
    let mut workflows: Vec<String> = found
        .iter()
        .map(|i| i["workflow_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    workflows.sort();
    let mut expected = vec![w1, w2];
    expected.sort();
    assert_eq!(
        workflows, expected,
        "exactly the two active matching workflows"
    );
    assert!(found.iter().all(|i| i["trigger_entity_type"] == "payment"));
    assert_eq!(
        app.count_for("workflow_instances", &co).await,
        2,
        "the replay wrote none"
    );
    assert_eq!(app.count_for("workflow_instances", &other).await, 0);
    assert_eq!(
        audit_workflows(&app, &payment).await,
        2,
        "the audit row says 2"
    );
    let labels = [("operation", "createPayment")];
    assert_eq!(
        metric(&app, "idempotent_writes_workflows_triggered_total", &labels).await,
        2.0
    );
    for i in &found {
        let v = settled(
            &app,
            &co,
            i["id"].as_str().unwrap_or_default(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(v["status"], "delivered", "{v}");
        assert_eq!(v["attempts"], 1);
        assert_eq!(v["notification"]["target"], "ops@example.com");
        assert_eq!(v["next_attempt_at"], Value::Null);
    }
    assert_eq!(app.count_for("notifications", &co).await, 2);
    let delivered = [("action", "notify"), ("outcome", "delivered")];
    assert_eq!(
        metric(&app, "workflow_deliveries_total", &delivered).await,
        2.0
    );
}

async fn bad_workflow_input_is_refused_with_field_paths_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let ok = |action: Value| json!({"name": "n", "trigger": "manual", "action": action});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "n", "trigger": "invoice.voided", "action": notify()}),
            "trigger",
        ),
        (ok(json!({"type": "email", "target": "x"})), "action.type"),
        (
            ok(json!({"type": "notify", "target": "x", "url": "http://a.example"})),
            "action.url",
        ),
        (ok(json!({"type": "notify"})), "action.target"),
        (
            ok(json!({"type": "webhook", "url": "ftp://example.com/x"})),
            "action.url",
        ),
        (
            ok(json!({"type": "webhook", "url": "not a url"})),
            "action.url",
        ),
        (ok(json!("notify")), "action"),
        (json!({"name": "n", "trigger": "manual"}), "action"),
        (
            json!({"name": "n", "trigger": "manual", "action": notify(), "extra": 1}),
            "extra",
        ),
        (
            json!({"name": "n", "trigger": "manual", "action": notify(), "active": "yes"}),
            "active",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = app
            .post("/api/workflows", &co.token, &format!("bad-{i}"), body)
            .await;
        assert_invalid(&r, field);
    }
    assert_eq!(app.count_for("workflows", &co).await, 0);
    let w = workflow(&app, &co, "good", "manual", notify(), true).await;
    let path = format!("/api/workflows/{w}");
    for (i, (body, field)) in [
        (json!({"active": "no"}), "active"),
        (json!({}), "active"),
        (json!({"active": true, "name": "x"}), "name"),
    ]
    .iter()
    .enumerate()
    {
        assert_invalid(
            &app.patch(&path, &co.token, &format!("bp-{i}"), body).await,
            field,
        );
    }
    let tpath = format!("/api/workflows/{w}/trigger");
    for (i, (body, field)) in [
        (json!({"input": [1]}), "input"),
        (json!({"other": 1}), "other"),
    ]
    .iter()
    .enumerate()
    {
        assert_invalid(
            &app.post(&tpath, &co.token, &format!("bt-{i}"), body).await,
            field,
        );
    }
    assert_eq!(app.count_for("workflow_updates", &co).await, 0);
    assert_eq!(app.count_for("workflow_instances", &co).await, 0);
}

async fn a_deactivated_workflow_refuses_manual_triggers_until_reactivated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let w = workflow(&app, &co, "manual", "manual", notify(), true).await;
    let path = format!("/api/workflows/{w}");
    let off = app
        .patch(&path, &co.token, "off-1", &json!({"active": false}))
        .await;
    assert_eq!(off.status, 201, "{:?}", off.json());
    assert_eq!(off.header("location"), None);
    assert_eq!(off.json()["active"], false);
    let replay = app
        .patch(&path, &co.token, "off-1", &json!({"active": false}))
        .await;
    assert_eq!(
        (replay.status, replay.body.clone()),
        (200, off.body.clone())
    );
    assert_rule(
        &app.patch(&path, &co.token, "off-1", &json!({"active": true}))
            .await,
        "idempotency_key_reused",
    );
    let refused = app
        .post(&format!("{path}/trigger"), &co.token, "t-1", &json!({}))
        .await;
    assert_rule(&refused, "workflow_inactive");
    assert_eq!(app.count_for("workflow_instances", &co).await, 0);

    assert_eq!(
        app.patch(&path, &co.token, "on-1", &json!({"active": true}))
            .await
            .status,
        201
    );
    assert_eq!(app.get(&path, &co.token).await.json()["active"], true);
    let t = app
        .post(
            &format!("{path}/trigger"),
            &co.token,
            "t-2",
            &json!({"input": {"a": 1}}),
        )
        .await;
    assert_eq!(t.status, 201, "{:?}", t.json());
    let v = t.json();
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        t.header("location"),
        Some(format!("/api/workflow-instances/{id}"))
    );
    assert_eq!(
        (
            v["trigger_entity_type"].clone(),
            v["trigger_entity_id"].clone()
        ),
        (json!("manual"), Value::Null)
    );
    assert_eq!(
        (v["input"].clone(), v["status"].clone()),
        (json!({"a": 1}), json!("pending"))
    );
    let done = settled(&app, &co, &id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "delivered");
    let missing = uuid::Uuid::new_v4();
    let r = app
        .post(
            &format!("/api/workflows/{missing}/trigger"),
            &co.token,
            "t-3",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .patch(
            &format!("/api/workflows/{missing}"),
            &co.token,
            "p-3",
            &json!({"active": true}),
        )
        .await;
    assert_eq!(r.status, 404);
    let stranger = app.create_company("Other").await;
    assert_eq!(
        app.get(&format!("/api/workflow-instances/{id}"), &stranger.token)
            .await
            .status,
        404
    );
}

const ACCURACY_PG: &str = "SELECT \n  a.deterministic_id,\n  a.workflows_triggered,\n  COUNT(w.id) as actual_workflows\nFROM idempotent_write_audit_log a\nLEFT JOIN workflow_instances w ON w.trigger_entity_id = a.deterministic_id\nWHERE a.status = 'new'\n  AND a.timestamp >= NOW() - INTERVAL '7 days'\nGROUP BY a.deterministic_id, a.workflows_triggered\nHAVING a.workflows_triggered != COUNT(w.id);";

const ACCURACY_SQLITE: &str = "SELECT a.deterministic_id, a.workflows_triggered, COUNT(w.id) as actual_workflows \
     FROM idempotent_write_audit_log a LEFT JOIN workflow_instances w ON w.trigger_entity_id = a.deterministic_id \
     WHERE a.status = 'new' GROUP BY a.deterministic_id, a.workflows_triggered \
     HAVING a.workflows_triggered != COUNT(w.id)";

async fn mixed_load(app: &TestApp, co: &Company) -> String {
    for t in [
        "invoice.created",
        "invoice.finalized",
        "payment.created",
        "refund.created",
        "payroll.executed",
        "inventory.adjusted",
    ] {
        workflow(app, co, &format!("a-{t}"), t, notify(), true).await;
    }
    workflow(app, co, "b-payment", "payment.created", notify(), true).await;
    workflow(app, co, "off", "payment.created", notify(), false).await;
    let manual = workflow(app, co, "manual", "manual", notify(), true).await;
    let e = json!({"name": "S", "pay_type": "salary", "annual_salary": "24000.00"});
    assert_eq!(
        app.post("/api/employees", &co.token, "e", &e).await.status,
        201
    );
    let inv = open_invoice(app, co, "m", lines_350()).await;
    let p = pay(app, co, "m-pay", &inv, "100.00").await;
    assert_eq!(pay(app, co, "m-pay", &inv, "100.00").await.status, 200);
    let payment = p.json()["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(refund(app, co, "m-ref", &payment, "5.00").await.status, 201);
    assert_rule(
        &refund(app, co, "m-ref2", &payment, "500.00").await,
        "refund_exceeds_payment",
    );
    let run =
        json!({"period_start": "2026-01-01", "period_end": "2026-01-31", "pay_date": "2026-02-01"});
    assert_eq!(
        app.post("/api/payroll-runs", &co.token, "m-run", &run)
            .await
            .status,
        201
    );
    let it = item(app, co, "M", 3).await;
    assert_eq!(adjust(app, co, &it, "m-a1", -2).await.status, 201);
    assert_rule(
        &adjust(app, co, &it, "m-a2", -2).await,
        "insufficient_stock",
    );
    assert_eq!(adjust(app, co, &it, "m-a1", -2).await.status, 200);
    trigger(app, co, &manual, "m-t").await;
    payment
}

async fn after_a_mixed_load_the_seeds_workflow_accuracy_query_returns_no_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let payment = mixed_load(&app, &co).await;
    // 6 single-trigger events (invoice.created, finalized, refund, payroll, adjustment)
    // + 2 for the payment + 1 manual.
    assert_eq!(app.count_for("workflow_instances", &co).await, 8);
    let sql = match backend {
        Backend::Postgres => ACCURACY_PG,
        Backend::Sqlite => ACCURACY_SQLITE,
    };
    let rows = idem::on_db!(&app.state.db, |c| sqlx::query(sql)
        .fetch_all(c)
        .await
        .map(|r| r.len()))
    .expect("accuracy query");
    assert_eq!(
        rows, 0,
        "every audit row's workflows_triggered matches its instances"
    );
    let lookup = format!(
        "SELECT *\nFROM workflow_instances\nWHERE trigger_entity_type = 'payment'\n  AND trigger_entity_id = '{payment}';"
    );
    let found = idem::on_db!(&app.state.db, |c| sqlx::query(&lookup)
        .fetch_all(c)
        .await
        .map(|r| r.len()))
    .expect("trigger lookup");
    assert_eq!(
        found, 2,
        "the seeds' trigger lookup finds the payment's instances"
    );
}

async fn create_workflow_keeps_the_contracts_order_of_checks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let viewer = app.member_token(&co, "v@example.com", "viewer").await;
    let body = json!({"name": "n", "trigger": "manual", "action": notify()}).to_string();
    let post = |token: String, key: Option<&'static str>, body: String, ct: &'static str| {
        let app = &app;
        async move {
            app.write_with(
                reqwest::Method::POST,
                "/api/workflows",
                &token,
                key,
                body,
                &[("content-type", ct)],
            )
            .await
        }
    };
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let json_ct = "application/json";
    assert_eq!(
        post(viewer, Some("k"), body.clone(), json_ct).await.status,
        403
    );
    assert_eq!(
        post(co.token.clone(), Some("k"), big, json_ct).await.status,
        413
    );
    assert_eq!(
        post(co.token.clone(), Some("k"), body.clone(), "text/plain")
            .await
            .status,
        415
    );
    assert_eq!(
        post(co.token.clone(), None, body.clone(), json_ct)
            .await
            .code(),
        "idempotency_key_missing"
    );
    assert_eq!(
        post(co.token.clone(), Some("k"), "{".into(), json_ct)
            .await
            .code(),
        "malformed_json"
    );
    assert_eq!(
        post(co.token.clone(), Some("k"), body, json_ct)
            .await
            .status,
        201
    );
}

backend_tests!(
    create_workflow_keeps_the_contracts_order_of_checks,
    a_payment_writes_one_instance_per_matching_active_workflow_and_replays_write_none,
    bad_workflow_input_is_refused_with_field_paths_and_writes_nothing,
    a_deactivated_workflow_refuses_manual_triggers_until_reactivated,
    after_a_mixed_load_the_seeds_workflow_accuracy_query_returns_no_rows,
);
