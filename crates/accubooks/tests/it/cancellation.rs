//! A client cannot wedge the server: writes abandoned at any point (mid-headers, mid-body,
//! right after the request, while waiting for the answer) leave the store usable, lose no
//! audit row, and let the server drain and stop.

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::harness::{Backend, Company, TestApp};

/// Where a storm client gives up on its request.
#[derive(Debug, Clone, Copy)]
enum Abandon {
    MidHeaders,
    MidBody,
    AfterRequest,
    WhileWaiting,
}

fn raw_request(token: &str, key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/customers HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\nidempotency-key: {key}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends part or all of a write, then resets the connection (RST, not FIN).
async fn abandon_one(addr: std::net::SocketAddr, token: &str, key: &str, how: Abandon) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let body = format!(r#"{{"name":"Gone {key}"}}"#);
    let req = raw_request(token, key, &body);
    let head_len = req.len() - body.len();
    let (upto, linger_ms) = {
        let mut rng = rand::rng();
        match how {
            Abandon::MidHeaders => (rng.random_range(1..head_len), 0),
            Abandon::MidBody => (rng.random_range(head_len..req.len()), 0),
            Abandon::AfterRequest => (req.len(), 0),
            Abandon::WhileWaiting => (req.len(), rng.random_range(0..20u64)),
        }
    };
    if s.write_all(&req[..upto]).await.is_err() {
        return;
    }
    if linger_ms > 0 {
        tokio::time::sleep(Duration::from_millis(linger_ms)).await;
    }
    let _ = s.set_zero_linger();
    drop(s);
}

async fn storm(app: &TestApp, co: &Company, clients: usize, for_how_long: Duration) -> usize {
    let until = Instant::now() + for_how_long;
    let tasks = (0..clients).map(|c| {
        let (addr, token) = (app.addr, co.token.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            while Instant::now() < until {
                let how = match sent % 4 {
                    0 => Abandon::MidHeaders,
                    1 => Abandon::MidBody,
                    2 => Abandon::AfterRequest,
                    _ => Abandon::WhileWaiting,
                };
                abandon_one(addr, &token, &format!("storm-{c}-{sent}"), how).await;
                sent += 1;
            }
            sent
        })
    });
    let mut total = 0;
    for t in futures::future::join_all(tasks).await {
        total += t.expect("storm client");
    }
    total
}

/// A fresh write must succeed promptly after the storm.
async fn fresh_write_succeeds_within_a_second(app: &TestApp, co: &Company, key: &str) {
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        app.post("/api/customers", &co.token, key, &json!({"name": "After"})),
    )
    .await
    .expect("a write after the storm answers");
    assert_eq!(r.status, 201, "a write after the storm: {:?}", r.json());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the write after the storm took {:?}",
        started.elapsed()
    );
}

async fn a_storm_of_abandoned_writes_leaves_the_store_usable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;

    for round in 0..3 {
        let sent = storm(&app, &co, 32, Duration::from_secs(2)).await;
        assert!(sent > 100, "the storm sent {sent} requests");
        // Writes whose request arrived whole run to their end without their clients;
        // once they have, the store is free for new work.
        let settling = Instant::now();
        while app.state.idem.executions_running() > 0 {
            assert!(
                settling.elapsed() < Duration::from_secs(30),
                "abandoned writes still running after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "round {round}: {sent} abandoned, settled in {:?}",
            settling.elapsed()
        );
        fresh_write_succeeds_within_a_second(&app, &co, &format!("after-{round}")).await;
        let company = app
            .send(
                app.client
                    .post(app.url("/admin/companies"))
                    .bearer_auth(crate::harness::OPERATOR)
                    .json(&json!({"name": format!("Later {round}")})),
            )
            .await;
        assert_eq!(company.status, 201, "operator writes still work");
    }

    let state = app.state.clone();
    let stopped = tokio::time::timeout(Duration::from_secs(35), app.stop()).await;
    assert!(
        stopped.is_ok(),
        "the server drained and stopped within 35 s"
    );
    assert_eq!(
        state.idem.metrics().audit_dropped.get(),
        0,
        "no audit row was dropped"
    );
}

fn create_customer(token: &str, key: &str, name: &str) -> http::Request<axum::body::Body> {
    http::Request::post("/api/customers")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(axum::body::Body::from(json!({ "name": name }).to_string()))
        .expect("request")
}

/// Every await point of the write path, in the order an execution reaches it.
const POINTS: [&str; 7] = [
    "claim",
    "claimed",
    "begin",
    "execute",
    "before_complete",
    "audit",
    "commit",
];

async fn a_request_cancelled_at_any_await_point_still_commits_once(backend: Backend) {
    use tower::ServiceExt;

    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let router =
        accubooks::app::router(app.state.clone(), accubooks::ops::registry()).expect("router");
    for point in POINTS {
        let key = format!("cancelled-at-{point}");
        let name = format!("Cancelled at {point}");
        // Arrange: the execution parks at `point`.
        let hold = app.state.idem.hooks().arm(point);
        let request = tokio::spawn(
            router
                .clone()
                .oneshot(create_customer(&co.token, &key, &name)),
        );
        tokio::time::timeout(Duration::from_secs(10), hold.reached())
            .await
            .unwrap_or_else(|_| panic!("the write reached {point}"));

        // Act: the client goes away while the write is parked there, then it goes on.
        request.abort();
        let _ = request.await;
        hold.release();

        // Assert: the write finished without its client, so the retry replays it.
        let settling = Instant::now();
        let retry = loop {
            let r = app
                .post("/api/customers", &co.token, &key, &json!({ "name": name }))
                .await;
            if r.status != 409 {
                break r;
            }
            assert!(
                settling.elapsed() < Duration::from_secs(10),
                "the key cancelled at {point} is stuck in flight"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            retry.status,
            200,
            "cancelled at {point}, the retry replays the finished write: {:?}",
            retry.json()
        );
        assert_eq!(retry.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(retry.json()["name"], json!(name));
        fresh_write_succeeds_within_a_second(&app, &co, &format!("after-{point}")).await;
    }
    assert_eq!(
        app.count_for("customers", &co).await,
        2 * POINTS.len() as i64,
        "one customer per cancelled key and per fresh write"
    );
}

/// Sends a create from its own task (so the test can hold it mid-way); its status.
fn spawn_write(
    app: &TestApp,
    co: &Company,
    key: &str,
    name: &str,
) -> tokio::task::JoinHandle<reqwest::Result<u16>> {
    let request = app
        .client
        .post(app.url("/api/customers"))
        .bearer_auth(&co.token)
        .header("idempotency-key", key)
        .json(&json!({ "name": name }));
    tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
}

/// SQLite has one writer: a write that cannot get it within the contract's 5 s is told
/// to come back (503 + `Retry-After`), never answered 500 or left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_cannot_start_within_five_seconds_gets_503_on_sqlite() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let co = app.create_company("Acme").await;
    let hold = app.state.idem.hooks().arm("commit");
    let first = spawn_write(&app, &co, "holds-the-writer", "First");
    hold.reached().await;

    let started = Instant::now();
    let blocked = app
        .post(
            "/api/customers",
            &co.token,
            "waits",
            &json!({"name": "Second"}),
        )
        .await;
    assert_eq!(blocked.status, 503, "{:?}", blocked.json());
    assert_eq!(blocked.code(), "service_unavailable");
    assert_eq!(blocked.header("retry-after").as_deref(), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(8));

    hold.release();
    assert_eq!(first.await.expect("task").expect("first answered"), 201);
    let retried = app
        .post(
            "/api/customers",
            &co.token,
            "waits",
            &json!({"name": "Second"}),
        )
        .await;
    assert_eq!(retried.status, 201, "the refused write left its key free");
}

backend_tests!(
    a_storm_of_abandoned_writes_leaves_the_store_usable,
    a_request_cancelled_at_any_await_point_still_commits_once,
    abandoned_writes_count_against_the_in_flight_limit,
);

/// A writer that never finishes: readiness and the health page say so, and the server
/// still stops within its drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wedged_writer_turns_readiness_red_and_shutdown_still_ends_within_the_drain() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let co = app.create_company("Acme").await;
    let ready = app.send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(ready.status, 200);

    // Arrange: a write parks before its commit, holding SQLite's only writer slot.
    let hold = app.state.idem.hooks().arm("commit");
    let stuck = spawn_write(&app, &co, "never-finishes", "Stuck");
    hold.reached().await;

    // Assert: readiness and the health page report that writes cannot start.
    let ready = app.send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(ready.status, 503, "{:?}", ready.json());
    let health = app
        .send(
            app.client
                .get(app.url("/admin/system/health"))
                .bearer_auth(crate::harness::OPERATOR),
        )
        .await;
    assert_eq!(
        health.json()["status"],
        json!("error"),
        "{:?}",
        health.json()
    );
    assert_eq!(
        health.json()["components"]["database"]["writable"],
        json!(false)
    );

    // Act + assert: the drain gives up on the stuck write and the server stops in time.
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(40), app.stop()).await;
    assert!(stopped.is_ok(), "the server stopped");
    assert!(
        started.elapsed() <= accubooks::app::DRAIN + Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    stuck.abort();
}

/// Readiness comes back once the writer slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_recovers_when_the_writer_finishes() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let co = app.create_company("Acme").await;
    let hold = app.state.idem.hooks().arm("commit");
    let write = spawn_write(&app, &co, "slow", "Slow");
    hold.reached().await;
    assert_eq!(
        app.send(app.client.get(app.url("/readyz"))).await.status,
        503
    );
    hold.release();
    assert_eq!(write.await.expect("task").expect("answered"), 201);
    assert_eq!(
        app.send(app.client.get(app.url("/readyz"))).await.status,
        200
    );
}

/// PostgreSQL: a write waiting on a row lock gives up after the lock timeout (5 s) with
/// `503` and `Retry-After`, instead of holding its connection until the lock frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_write_blocked_on_a_row_lock_gets_503_after_the_lock_timeout() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let co = app.create_company("Acme").await;
    // Arrange: another session holds the company's settings row.
    let other = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
    let mut blocker = other.begin().await.expect("begin");
    sqlx::query("select 1 from company_settings where company_id = $1::uuid for update")
        .bind(&co.id)
        .execute(&mut *blocker)
        .await
        .expect("lock the settings row");

    // Act: a settings update needs that row.
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        app.patch(
            "/api/company/settings",
            &co.token,
            "blocked",
            &json!({"display_name": "Blocked"}),
        ),
    )
    .await
    .expect("the blocked write is answered before the lock frees");

    // Assert: refused after the lock timeout, nothing written, the key free.
    assert_eq!(r.status, 503, "{:?}", r.json());
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    blocker.rollback().await.expect("rollback");
    let retried = app
        .patch(
            "/api/company/settings",
            &co.token,
            "blocked",
            &json!({"display_name": "Blocked"}),
        )
        .await;
    assert_eq!(retried.status, 201, "{:?}", retried.json());
    assert_eq!(
        retried.json()["version"],
        json!(2),
        "the refused write wrote nothing"
    );
}

/// PostgreSQL, two nodes: while a key executes on node A, node B's duplicates that wait
/// (`Prefer: wait`) share one poller of the store, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn duplicates_of_a_key_executing_on_another_node_share_one_poller() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = TestApp::on_db(a.db.another_node(), Default::default()).await;
    let co = a.create_company("Acme").await;
    let hold = a.state.idem.hooks().arm("claimed");
    let first = spawn_write(&a, &co, "busy", "Busy");
    hold.reached().await;

    // Act: 20 duplicates wait on node B for about a second, then A finishes.
    let dupes: Vec<_> = (0..20)
        .map(|_| {
            let request = b
                .client
                .post(b.url("/api/customers"))
                .bearer_auth(&co.token)
                .header("idempotency-key", "busy")
                .header("prefer", "wait=10")
                .json(&json!({"name": "Busy"}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    hold.release();
    assert_eq!(first.await.expect("task").expect("answered"), 201);
    for d in dupes {
        assert_eq!(d.await.expect("task").expect("answered"), 200);
    }

    // Assert: one poller's worth of store reads on B (about 10 in 1.2 s with backoff).
    let reads = b.state.idem.hooks().times_reached("claim");
    assert!(
        reads <= 20,
        "node B read the store {reads} times for 20 waiting duplicates"
    );
}

/// Clients that abandon their writes cannot pile up detached work without bound: once as
/// many writes execute as `--max-in-flight` allows, a further one is refused with `503`
/// and `Retry-After` before it claims anything, even though the abandoned requests no
/// longer count as in flight.
async fn abandoned_writes_count_against_the_in_flight_limit(backend: Backend) {
    use tower::ServiceExt;

    let mut o = crate::harness::Options::default();
    o.limits.max_in_flight = 2;
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let router =
        accubooks::app::router(app.state.clone(), accubooks::ops::registry()).expect("router");
    // Arrange: two writes park before their transactions (holding no writer slot) and
    // their clients leave, freeing their in-flight slots.
    let mut holds = Vec::new();
    for (point, key) in [("claim", "first"), ("claimed", "second")] {
        let hold = app.state.idem.hooks().arm(point);
        let request = tokio::spawn(router.clone().oneshot(create_customer(&co.token, key, key)));
        hold.reached().await;
        request.abort();
        let _ = request.await;
        holds.push(hold);
    }
    // Act: a third write.
    let third = app
        .post(
            "/api/customers",
            &co.token,
            "third",
            &json!({"name": "third"}),
        )
        .await;
    // Assert: refused as overload, its key untouched; once the others finish it runs.
    assert_eq!(third.status, 503, "{:?}", third.json());
    assert_eq!(third.header("retry-after").as_deref(), Some("5"));
    for hold in holds {
        hold.release();
    }
    let settling = Instant::now();
    while app.state.idem.executions_running() > 0 {
        assert!(settling.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = app
        .post(
            "/api/customers",
            &co.token,
            "third",
            &json!({"name": "third"}),
        )
        .await;
    assert_eq!(again.status, 201, "{:?}", again.json());
}
