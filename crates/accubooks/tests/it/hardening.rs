//! Hostile clients against shared state: bounded metric labels, audit rows that cannot
//! poison their batch, bounded audit memory, token shapes checked before the database,
//! operator token strength, the company row lock and the audit log's archive switch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accubooks::app::Application;
use idem::telemetry::{AuditQueue, AuditRow, Metrics};
use idem::Ts;
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::backend_tests;
use crate::harness::{serve_args, Backend, Options, TestApp, TestDb};

/// Item 1: request-chosen methods never become label values.
async fn random_methods_leave_the_metrics_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..120 {
        let method = Method::from_bytes(format!("M{i}X").as_bytes()).expect("token");
        let r = app
            .send(app.client.request(method, app.url(&format!("/nope/{i}"))))
            .await;
        assert_eq!(r.status, 404);
    }
    for i in 0..20 {
        let method = Method::from_bytes(format!("Q{i}").as_bytes()).expect("token");
        let r = app
            .send(app.client.request(method, app.url("/api/customers")))
            .await;
        assert!(r.status == 405 || r.status == 401, "{}", r.status);
    }
    let text = String::from_utf8_lossy(&app.send(app.client.get(app.url("/metrics"))).await.body)
        .to_string();
    let fixed = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
    ];
    let mut methods = HashSet::new();
    let mut routes = HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("http_request")) {
        for (name, set) in [("method=\"", &mut methods), ("route=\"", &mut routes)] {
            if let Some(rest) = line.split(name).nth(1) {
                set.insert(rest.split('"').next().unwrap_or("").to_owned());
            }
        }
    }
    assert!(
        methods.iter().all(|m| fixed.contains(&m.as_str())),
        "{methods:?}"
    );
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        routes.iter().all(|r| !r.starts_with("/nope")),
        "no raw path becomes a label: {routes:?}"
    );
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
}

async fn wait_for_audit(metrics: &Metrics, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while metrics.audit_written.get() + metrics.audit_dropped.get() < rows
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn failed_messages(app: &TestApp) -> Vec<String> {
    idem::on_db!(&app.state.db, |c| sqlx::query_scalar::<_, Option<String>>(
        "select error_message from idempotent_write_audit_log where status = 'failed'"
    )
    .fetch_all(c)
    .await)
    .expect("audit rows")
    .into_iter()
    .flatten()
    .collect()
}

/// Item 3: a NUL in a field name reaches the failure row's message; the batch it shares
/// with another tenant's row must still be written, both rows of it.
async fn a_bad_audit_row_never_takes_its_neighbours_with_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_company("A").await;
    let b = app.create_company("B").await;
    let nul = app.write(
        Method::POST,
        "/api/customers",
        &a.token,
        Some("nul"),
        r#"{"name":"x","a\u0000\u0007b":1}"#,
    );
    let plain_body = json!({"name": "x", "zzz": 1});
    let plain = app.post("/api/customers", &b.token, "plain", &plain_body);
    let (r1, r2) = tokio::join!(nul, plain);
    assert_eq!((r1.status, r2.status), (422, 422));
    let metrics = app.state.idem.metrics();
    wait_for_audit(metrics, 2).await;
    assert_eq!(metrics.audit_dropped.get(), 0, "no row is dropped");
    let messages = failed_messages(&app).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages.iter().all(|m| !m.chars().any(|c| c.is_control())),
        "control characters are escaped: {messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("a\\u0000\\u0007b")),
        "{messages:?}"
    );
}

fn audit_row(company: &str, ts: Ts) -> AuditRow {
    AuditRow {
        id: uuid::Uuid::now_v7(),
        operation_name: "createCustomer",
        operation_type: "high-risk",
        deterministic_id: Some(uuid::Uuid::new_v4().to_string()),
        company_id: company.to_owned(),
        user_id: None,
        status: "failed",
        execution_duration_ms: 1.0,
        timestamp: ts,
        request_id: "r".to_owned(),
        idempotency_key: Some("k".to_owned()),
        route_path: "/api/customers".to_owned(),
        http_method: "POST".to_owned(),
        workflows_triggered: 0,
        side_effects_executed: false,
        error_message: Some("x".to_owned()),
        metadata: None,
    }
}

/// Item 3: a row that truly cannot be written (a repeated primary key) costs only itself.
async fn an_unwritable_audit_row_is_counted_and_its_batch_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let stop = CancellationToken::new();
    let (queue, writer) =
        AuditQueue::start(app.state.db.clone(), metrics.clone(), 100, stop.clone());
    let ts = Ts::now();
    let first = audit_row("c1", ts);
    let repeated = first.clone();
    queue.enqueue(first);
    queue.enqueue(repeated);
    queue.enqueue(audit_row("c2", ts));
    stop.cancel();
    writer.finish().await;
    assert_eq!(
        (metrics.audit_written.get(), metrics.audit_dropped.get()),
        (2, 1)
    );
    assert_eq!(failed_messages(&app).await.len(), 2);
}

/// Item 4: 20,000 unknown fields make a short message: the first errors and a count.
async fn audit_error_messages_are_capped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let mut body = serde_json::Map::new();
    body.insert("name".into(), json!("x"));
    for i in 0..20_000 {
        body.insert(format!("unknown_field_{i:05}"), json!(1));
    }
    let r = app
        .post(
            "/api/customers",
            &co.token,
            "big",
            &serde_json::Value::Object(body),
        )
        .await;
    assert_eq!(r.status, 422);
    wait_for_audit(app.state.idem.metrics(), 1).await;
    let messages = failed_messages(&app).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].len() <= 1024, "{} bytes", messages[0].len());
    assert!(messages[0].contains("and 19995 more"), "{}", messages[0]);
}

/// Item 4: the queue is bounded by bytes as well as rows; what it refuses is counted.
#[tokio::test]
async fn the_audit_queue_is_bounded_by_bytes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let pool = idem::Db::connect(&db.url, &idem::db::ConnectOptions::default())
        .await
        .expect("db");
    accubooks::app::migrate(&pool).await.expect("migrate");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let stop = CancellationToken::new();
    // A current-thread runtime: the writer cannot run between these enqueues.
    let (queue, writer) =
        AuditQueue::start_bounded(pool.clone(), metrics.clone(), 1000, 4096, stop.clone());
    for _ in 0..10 {
        let mut row = audit_row("c", Ts::now());
        // Capped at 1 KiB when queued: about 1.3 KB a row, three fit.
        row.error_message = Some("e".repeat(4000));
        queue.enqueue(row);
    }
    let dropped = metrics.audit_dropped.get();
    assert!((6..=8).contains(&dropped), "dropped {dropped}");
    stop.cancel();
    writer.finish().await;
    assert_eq!(metrics.audit_written.get() + dropped, 10);
    assert_eq!(metrics.audit_queue_bytes.get(), 0);
}

/// Item 9 (part): a token of the wrong shape is refused before any database lookup.
async fn malformed_tokens_are_refused_without_a_database_lookup(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let well_formed_unknown = format!("acb_{}", "A".repeat(43));
    assert_eq!(well_formed_unknown.len(), co.token.len());
    app.state.db.close().await;
    for bad in [
        "acb_short",
        &format!("{}x", co.token),
        &format!("acb_{}", "é".repeat(21)),
        &format!("acb_{}+", "A".repeat(42)),
    ] {
        let r = app.get("/api/customers", bad).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "unauthenticated"),
            "{bad}"
        );
    }
    let r = app.get("/api/customers", &well_formed_unknown).await;
    assert_eq!(r.status, 503, "a well-formed token does reach the database");
}

/// Item 11: weak operator tokens stop the start with a message saying what to change.
async fn a_weak_operator_token_is_refused_at_start(backend: Backend) {
    let db = TestDb::new(backend).await;
    for weak in [
        "secret".to_owned(),
        "a".repeat(40),
        "abababababababababababababababababab".to_owned(),
        format!("{} with spaces", "x".repeat(32)),
    ] {
        let mut args = serve_args(&db.url, &Options::default());
        args.admin_token = Some(weak.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let err = Application::build_on(args, listener)
            .await
            .err()
            .expect("start refused");
        let text = err.to_string();
        assert!(
            text.contains("--admin-token") && text.contains("ACCUBOOKS_ADMIN_TOKEN"),
            "{weak}: {text}"
        );
    }
}

/// Item 11: membership and payroll decisions lock the company row without blocking
/// inserts that reference it (`FOR NO KEY UPDATE`, not `FOR UPDATE`).
async fn a_company_lock_does_not_block_inserts_referencing_the_company(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let hold = app.state.idem.hooks().arm("before_complete");
    let grant = {
        let client = app.client.clone();
        let url = app.url("/api/company/members");
        let token = co.token.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", "grant")
                .json(&json!({"email": "b@example.com", "role": "viewer"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::timeout(Duration::from_secs(10), hold.reached())
        .await
        .expect("the grant holds the company lock");
    if backend == Backend::Postgres {
        // SQLite has one writer: there the insert waits for the grant by design.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            app.post("/api/customers", &co.token, "c", &json!({"name": "x"})),
        )
        .await
        .expect("the insert is not blocked by the company lock");
        assert_eq!(r.status, 201);
    }
    hold.release();
    assert_eq!(grant.await.expect("join").expect("sent"), 201);
}

/// Item 11: an ordinary session cannot switch the audit log's append-only trigger off;
/// the archive function can still remove rows.
async fn only_the_archive_function_may_delete_audit_rows(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let r = app
        .post("/api/customers", &co.token, "k", &json!({"name": "x"}))
        .await;
    assert_eq!(r.status, 201);
    let idem::Db::Postgres(pg) = &app.state.db else {
        panic!("postgres")
    };
    let pool = pg.pool();
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("set local idem.audit_archive = 'on'")
        .execute(&mut *tx)
        .await
        .expect("set");
    let refused = sqlx::query("delete from idempotent_write_audit_log")
        .execute(&mut *tx)
        .await;
    assert!(refused.is_err(), "the setting alone unlocks nothing");
    tx.rollback().await.expect("rollback");
    let archived: Vec<(uuid::Uuid,)> =
        sqlx::query_as("select id from idem_audit_archive_take(now() + interval '1 minute')")
            .fetch_all(pool)
            .await
            .expect("archive function");
    assert_eq!(archived.len(), 1);
    assert_eq!(app.count("idempotent_write_audit_log").await, 0);
}

backend_tests!(
    random_methods_leave_the_metrics_bounded,
    a_bad_audit_row_never_takes_its_neighbours_with_it,
    an_unwritable_audit_row_is_counted_and_its_batch_is_written,
    audit_error_messages_are_capped,
    malformed_tokens_are_refused_without_a_database_lookup,
    a_weak_operator_token_is_refused_at_start,
    a_company_lock_does_not_block_inserts_referencing_the_company,
    only_the_archive_function_may_delete_audit_rows,
);
