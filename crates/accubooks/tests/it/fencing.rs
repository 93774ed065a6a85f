//! Claims at the record store, on both backends: a claim is its transaction's, other
//! transactions see the scope in flight without waiting, an executor whose session was
//! ended after its lease can complete nothing, and a claim changes nothing in the
//! pooled connection that outlives its transaction.

use std::time::Duration;

use idem::store::{self, Claim, Lease, StoredResponse};
use idem::telemetry::AuditRow;
use idem::{IdempotencyKey, Scope, Ts, Tx};
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

fn scope(key: &str) -> Scope {
    Scope::new(
        "company",
        "tenant-f",
        "createCustomer",
        IdempotencyKey::parse(key.as_bytes()).expect("key"),
    )
}

fn lease(ms: u64) -> Lease {
    Lease {
        lease: Duration::from_millis(ms),
        lock_timeout: Duration::from_secs(1),
    }
}

fn response(scope: &Scope, body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: body.as_bytes().to_vec(),
        location: None,
        resource_id: scope.deterministic_id(),
    }
}

fn audit(scope: &Scope, request_id: &str) -> AuditRow {
    AuditRow {
        id: uuid::Uuid::now_v7(),
        operation_name: "createCustomer",
        operation_type: "high-risk",
        deterministic_id: Some(scope.deterministic_id().to_string()),
        company_id: scope.tenant.clone(),
        user_id: None,
        status: "new",
        execution_duration_ms: 1.0,
        timestamp: Ts::now(),
        request_id: request_id.to_owned(),
        idempotency_key: Some(scope.key.as_str().to_owned()),
        route_path: "/api/customers".to_owned(),
        http_method: "POST".to_owned(),
        workflows_triggered: 0,
        side_effects_executed: false,
        error_message: None,
        metadata: None,
    }
}

async fn claim(db: &idem::Db, s: &Scope, lease_ms: u64) -> (Tx, Claim) {
    store::begin_claim(db, s, lease(lease_ms))
        .await
        .expect("claim")
}

async fn complete(
    tx: &mut Tx,
    scope: &Scope,
    fingerprint: &str,
    body: &str,
) -> Result<bool, sqlx::Error> {
    let ttl = Duration::from_secs(60);
    store::complete(
        tx,
        scope,
        fingerprint,
        &response(scope, body),
        ttl,
        &audit(scope, body),
    )
    .await
}

async fn a_claim_is_exclusive_until_its_transaction_ends_and_a_completion_is_replayed(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let db = &app.state.db;
    let s = scope("exclusive");
    let (first, c) = claim(db, &s, 5000).await;
    assert!(matches!(c, Claim::Claimed), "{c:?}");
    if backend == Backend::Postgres {
        // Another transaction learns "in flight" at once, without waiting on a lock.
        let started = std::time::Instant::now();
        let (other, c) = claim(db, &s, 5000).await;
        assert!(matches!(c, Claim::InFlight), "{c:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        other.rollback().await.expect("rollback");
    }
    // Rolling back frees the scope.
    first.rollback().await.expect("rollback");
    let (mut second, c) = claim(db, &s, 5000).await;
    assert!(matches!(c, Claim::Claimed), "{c:?}");
    assert!(complete(&mut second, &s, "fp", "{\"n\":2}")
        .await
        .expect("complete"));
    second.commit().await.expect("commit");
    // Completed: every later claim finds the record and its exact body.
    let (third, c) = claim(db, &s, 5000).await;
    match c {
        Claim::Completed(r) => {
            assert_eq!(r.fingerprint, "fp");
            assert_eq!(r.response_body, b"{\"n\":2}");
            assert!(r.remaining > Duration::from_secs(50));
        }
        other => panic!("expected the completed record, got {other:?}"),
    }
    third.rollback().await.expect("rollback");
}

/// Issue: the fence could repeat (ABA). A claims and stalls past its lease; B takes over,
/// fails and releases; C claims and completes. A's late completion must change nothing:
/// its session was ended by the server at the lease, so it cannot commit at all.
async fn an_executor_past_its_lease_cannot_complete_after_others_claimed(backend: Backend) {
    if backend == Backend::Sqlite {
        // One writer at a time: B and C cannot even begin while A's transaction lives.
        return;
    }
    let app = TestApp::spawn(backend).await;
    let db = &app.state.db;
    let s = scope("aba");
    let (mut a, c) = claim(db, &s, 300).await;
    assert!(matches!(c, Claim::Claimed), "{c:?}");
    // A stalls idle in its transaction past the lease: the server ends its session.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (b, c) = claim(db, &s, 5000).await;
    assert!(matches!(c, Claim::Claimed), "{c:?}");
    b.rollback().await.expect("B fails and releases");
    let (mut c, got) = claim(db, &s, 5000).await;
    assert!(matches!(got, Claim::Claimed), "{got:?}");
    assert!(complete(&mut c, &s, "fp-c", "C").await.expect("complete"));
    c.commit().await.expect("commit");
    let late = match complete(&mut a, &s, "fp-a", "A").await {
        Ok(_) => a.commit().await,
        Err(e) => Err(e),
    };
    let e = late.expect_err("A's session was ended at its lease");
    assert!(idem::db::session_lost(&e), "{e}");
    let stored = store::load(db, &s).await.expect("load").expect("record");
    assert_eq!(stored.fingerprint, "fp-c", "C's record stands");
    assert_eq!(stored.response_body, b"C");
    let rows: i64 = idem::on_db!(db, |c| sqlx::query_scalar(
        "select count(*) from idempotent_write_audit_log where idempotency_key = 'aba'"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    assert_eq!(rows, 1, "only C's audit row");
}

async fn shutdown_lets_parked_waiters_go_with_503_and_flushes_the_audit_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    // Parked before its transaction: on SQLite a parked transaction would hold the one
    // writer slot that the other writes below need.
    let hold = app.state.idem.hooks().arm("claim");
    let body = json!({"name": "x"});
    let first = app.post("/api/customers", &co.token, "sd", &body);
    let rest = async {
        hold.reached().await;
        // A replayed write whose audit row is queued (not transactional).
        assert_eq!(
            app.post("/api/customers", &co.token, "other", &body)
                .await
                .status,
            201
        );
        assert_eq!(
            app.post("/api/customers", &co.token, "other", &body)
                .await
                .status,
            200
        );
        let waiter = app.write_with(
            reqwest::Method::POST,
            "/api/customers",
            &co.token,
            Some("sd"),
            body.to_string(),
            &[("content-type", "application/json"), ("prefer", "wait=30")],
        );
        let stop = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            app.state.shutdown.cancel();
            tokio::time::sleep(Duration::from_millis(200)).await;
            hold.release();
        };
        let (waited, ()) = tokio::join!(waiter, stop);
        waited
    };
    let (first, waited) = tokio::join!(first, rest);
    assert_eq!(waited.status, 503, "{:?}", waited.json());
    assert_eq!(waited.code(), "service_unavailable");
    assert_eq!(
        waited.header("preference-applied").as_deref(),
        Some("wait=30")
    );
    assert_eq!(
        first.status, 201,
        "the in-flight write is drained, not dropped"
    );
    let db = app.state.db.clone();
    let test_db = app.stop().await;
    let db = idem::Db::connect(&test_db.url, &idem::db::ConnectOptions::default())
        .await
        .unwrap_or(db);
    let replayed: i64 = idem::on_db!(&db, |c| sqlx::query_scalar(
        "select count(*) from idempotent_write_audit_log where status = 'replayed'"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    assert_eq!(replayed, 1, "the queued audit row was flushed at shutdown");
}

/// The claim's limits are set for its transaction only: the pooled connection that
/// outlives it keeps the session's settings (and so does a connection a transaction
/// pooler hands to someone else).
async fn a_claim_leaves_nothing_on_its_connection(backend: Backend) {
    let o = crate::harness::Options {
        pool_size: Some(1),
        ..Default::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let db = &app.state.db;
    let idem::Db::Postgres(pg) = db else {
        // SQLite: the claim sets nothing on the connection.
        return;
    };
    let pool = pg.pool();
    let show = |name: &'static str| async move {
        sqlx::query_scalar::<_, String>(&format!("show {name}"))
            .fetch_one(pool)
            .await
            .expect("show")
    };
    let before = (
        show("idle_in_transaction_session_timeout").await,
        show("statement_timeout").await,
    );
    let (mut tx, c) = claim(db, &scope("sync"), 1234).await;
    assert!(matches!(c, Claim::Claimed), "{c:?}");
    let inside: String = idem::on_tx!(&mut tx, |c| sqlx::query_scalar("show statement_timeout")
        .fetch_one(c)
        .await)
    .expect("show");
    assert_eq!(inside, "1234ms");
    tx.commit().await.expect("commit");
    let after = (
        show("idle_in_transaction_session_timeout").await,
        show("statement_timeout").await,
    );
    assert_eq!(
        before, after,
        "the pool's one connection is back to its own settings"
    );
    let locks: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .expect("locks");
    assert_eq!(locks, 0, "no advisory lock outlives the transaction");
}

/// The write path's own primitives: the claim taken by the message that begins the
/// transaction and the completion sent with the commit. Values travel inside the SQL on
/// PostgreSQL (simple queries), so a key and a body holding quotes, backslashes and
/// dollar signs must come back exactly, and so must every audit field.
async fn a_claim_begun_and_a_completion_committed_together_round_trip_every_value(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let db = &app.state.db;
    let s = scope(r#"it's"q"\;--$$x$q$'"#);
    let (tx, claim) = store::begin_claim(db, &s, lease(5000))
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed), "{claim:?}");
    let mut tx = Some(tx);
    if backend == Backend::Postgres {
        // A second executor learns "in flight" at once, and its refused transaction
        // holds nothing.
        let started = std::time::Instant::now();
        let (other, claim) = store::begin_claim(db, &s, lease(5000))
            .await
            .expect("claim");
        assert!(matches!(claim, Claim::InFlight), "{claim:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        other.rollback().await.expect("rollback");
    }
    let body: Vec<u8> = b"{\"a\":\"'\\\"$$\"}\x00\xff".to_vec();
    let response = StoredResponse {
        status: 201,
        body: body.clone(),
        location: Some("/api/customers/'x'".to_owned()),
        resource_id: s.deterministic_id(),
    };
    let mut row = audit(&s, "req-'1'");
    row.user_id = Some("user-\\'".to_owned());
    row.execution_duration_ms = 12.345;
    row.metadata = Some(json!({"note": "it's", "n": 1}));
    let ttl = Duration::from_secs(90);
    let committed =
        store::complete_and_commit(tx.take().expect("tx"), &s, "fp-'\\", &response, ttl, &row)
            .await
            .expect("complete");
    assert!(committed);

    let (again, claim) = store::begin_claim(db, &s, lease(5000))
        .await
        .expect("claim");
    match claim {
        Claim::Completed(r) => {
            assert_eq!(r.fingerprint, "fp-'\\");
            assert_eq!(r.response_body, body);
            assert_eq!(r.location.as_deref(), Some("/api/customers/'x'"));
            assert!(r.remaining > Duration::from_secs(80) && r.remaining <= ttl);
        }
        other => panic!("expected the completed record, got {other:?}"),
    }
    again.rollback().await.expect("rollback");

    let stored: (String, String, Option<String>, f64, i64, Option<String>) =
        idem::on_db!(db, |c| sqlx::query_as(
            "select request_id, idempotency_key, user_id, execution_duration_ms, \
             cast(workflows_triggered as bigint), cast(metadata as text) \
             from idempotent_write_audit_log where deterministic_id = $1"
        )
        .bind(s.deterministic_id().to_string())
        .fetch_one(c)
        .await)
        .expect("the audit row");
    assert_eq!(stored.0, "req-'1'");
    assert_eq!(stored.1, s.key.as_str());
    assert_eq!(stored.2.as_deref(), Some("user-\\'"));
    assert!((stored.3 - 12.345).abs() < 1e-9);
    assert_eq!(stored.4, 0);
    let metadata: serde_json::Value =
        serde_json::from_str(stored.5.as_deref().expect("metadata")).expect("json");
    assert_eq!(metadata, json!({"note": "it's", "n": 1}));
    let at: idem::Ts = idem::on_db!(db, |c| sqlx::query_scalar(
        "select timestamp from idempotent_write_audit_log where deterministic_id = $1"
    )
    .bind(s.deterministic_id().to_string())
    .fetch_one(c)
    .await)
    .expect("timestamp");
    assert_eq!(at.micros(), row.timestamp.micros(), "to the microsecond");
}

/// A completion that meets a live record (which a claim holder cannot) commits nothing
/// of its transaction, even though it was sent together with the `COMMIT`.
async fn a_completion_meeting_a_live_record_commits_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let db = &app.state.db;
    let live = scope("live");
    let (tx, _) = store::begin_claim(db, &live, lease(5000))
        .await
        .expect("claim");
    assert!(store::complete_and_commit(
        tx,
        &live,
        "fp-1",
        &response(&live, "first"),
        Duration::from_secs(60),
        &audit(&live, "first")
    )
    .await
    .expect("complete"));

    // A transaction that skipped the claim writes another key's record, then completes
    // the live key.
    let mut tx = db.begin().await.expect("begin");
    let other = scope("written-before");
    assert!(complete(&mut tx, &other, "fp-o", "other")
        .await
        .expect("complete"));
    let committed = store::complete_and_commit(
        tx,
        &live,
        "fp-2",
        &response(&live, "second"),
        Duration::from_secs(60),
        &audit(&live, "second"),
    )
    .await
    .expect("complete");
    assert!(!committed, "a live record stands");
    assert!(
        store::load(db, &other).await.expect("load").is_none(),
        "nothing of the transaction was committed"
    );
    let stored = store::load(db, &live).await.expect("load").expect("record");
    assert_eq!(stored.response_body, b"first");
    // The connection went back usable: the next write commits.
    let next = scope("next");
    let (tx, claim) = store::begin_claim(db, &next, lease(5000))
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed));
    assert!(store::complete_and_commit(
        tx,
        &next,
        "fp",
        &response(&next, "n"),
        Duration::from_secs(60),
        &audit(&next, "n")
    )
    .await
    .expect("complete"));
}

/// An executor whose session the server ended at its lease cannot commit its completion,
/// though the completion and the `COMMIT` travel together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn an_executor_past_its_lease_cannot_commit_its_completion_on_postgres() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = &app.state.db;
    let s = scope("late");
    let (tx, claim) = store::begin_claim(db, &s, lease(300)).await.expect("claim");
    assert!(matches!(claim, Claim::Claimed));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = store::complete_and_commit(
        tx,
        &s,
        "fp",
        &response(&s, "late"),
        Duration::from_secs(60),
        &audit(&s, "late"),
    )
    .await
    .expect_err("the session was ended at the lease");
    assert!(idem::db::session_lost(&e), "{e}");
    assert!(store::load(db, &s).await.expect("load").is_none());
}

/// Issue: the claim's values, written into its statement, once carried the collation of
/// `convert_from`'s `name` argument into idem_claim(), whose lookup then no longer
/// matched the primary key and read every live record instead. A claim reads its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_claim_reads_its_key_not_the_live_records_on_postgres() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    const LIVE: i64 = 3000;
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = &app.state.db;
    let idem::Db::Postgres(admin) = db else {
        unreachable!("a PostgreSQL test database")
    };
    sqlx::query(
        "insert into idempotency_keys (tenant, operation, idem_key, fingerprint, \
         response_status, response_body, created_at, completed_at, expires_at) \
         select 'tenant-f', 'createCustomer', 'live-' || i, 'fp', 201, '\\x7b7d', now(), \
         now(), now() + interval '1 day' from generate_series(1, $1) i",
    )
    .bind(LIVE)
    .execute(admin.pool())
    .await
    .expect("fill");
    sqlx::query("analyze idempotency_keys")
        .execute(admin.pool())
        .await
        .expect("analyze");

    // The claim's lookup runs in the transaction it begins, whose own index statistics
    // say how the record was found.
    let (mut tx, claim) = store::begin_claim(db, &scope("fresh"), lease(5000))
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed));
    let (by_key, live_read): (i64, i64) = idem::on_tx!(&mut tx, |c| sqlx::query_as(
        "select pg_stat_get_xact_numscans('idempotency_keys_pkey'::regclass), \
         pg_stat_get_xact_tuples_returned('idempotency_keys_expires_at'::regclass)"
    )
    .fetch_one(c)
    .await)
    .expect("statistics");
    tx.rollback().await.expect("rollback");
    assert_eq!(by_key, 1, "the claim looked its key up by the primary key");
    assert_eq!(
        live_read, 0,
        "the claim read no live record through expires_at"
    );
}

backend_tests!(
    a_claim_begun_and_a_completion_committed_together_round_trip_every_value,
    a_completion_meeting_a_live_record_commits_nothing,
    a_claim_is_exclusive_until_its_transaction_ends_and_a_completion_is_replayed,
    an_executor_past_its_lease_cannot_complete_after_others_claimed,
    shutdown_lets_parked_waiters_go_with_503_and_flushes_the_audit_log,
    a_claim_leaves_nothing_on_its_connection,
);
