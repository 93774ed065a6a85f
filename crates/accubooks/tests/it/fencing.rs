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
    let mut first = db.begin().await.expect("begin");
    assert!(matches!(
        store::claim(&mut first, &s, lease(5000))
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    if backend == Backend::Postgres {
        // Another transaction learns "in flight" at once, without waiting on a lock.
        let mut other = db.begin().await.expect("begin");
        let started = std::time::Instant::now();
        assert!(matches!(
            store::claim(&mut other, &s, lease(5000))
                .await
                .expect("claim"),
            Claim::InFlight
        ));
        assert!(started.elapsed() < Duration::from_millis(500));
        other.rollback().await.expect("rollback");
    }
    // Rolling back frees the scope.
    first.rollback().await.expect("rollback");
    let mut second = db.begin().await.expect("begin");
    assert!(matches!(
        store::claim(&mut second, &s, lease(5000))
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    assert!(complete(&mut second, &s, "fp", "{\"n\":2}")
        .await
        .expect("complete"));
    second.commit().await.expect("commit");
    // Completed: every later claim finds the record and its exact body.
    let mut third = db.begin().await.expect("begin");
    match store::claim(&mut third, &s, lease(5000))
        .await
        .expect("claim")
    {
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
    let mut a = db.begin().await.expect("begin");
    assert!(matches!(
        store::claim(&mut a, &s, lease(300)).await.expect("claim"),
        Claim::Claimed
    ));
    // A stalls idle in its transaction past the lease: the server ends its session.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut b = db.begin().await.expect("begin");
    assert!(matches!(
        store::claim(&mut b, &s, lease(5000)).await.expect("claim"),
        Claim::Claimed
    ));
    b.rollback().await.expect("B fails and releases");
    let mut c = db.begin().await.expect("begin");
    assert!(matches!(
        store::claim(&mut c, &s, lease(5000)).await.expect("claim"),
        Claim::Claimed
    ));
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
    let mut tx = db.begin().await.expect("begin");
    assert!(matches!(
        store::claim(&mut tx, &scope("sync"), lease(1234))
            .await
            .expect("claim"),
        Claim::Claimed
    ));
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

/// A claim finds the scope's record by the primary key, never by reading the live
/// records (a claim whose values carried another collation than the key's columns once
/// did, in an experiment with the claim written into its statement): the claim's own
/// transaction's index statistics say which index it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_claim_reads_its_key_not_the_live_records_on_postgres() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = &app.state.db;
    let idem::Db::Postgres(pg) = db else {
        unreachable!("a PostgreSQL test database")
    };
    sqlx::query(
        "insert into idempotency_keys (tenant, operation, idem_key, fingerprint, \
         response_status, response_body, created_at, completed_at, expires_at) \
         select 'tenant-f', 'createCustomer', 'live-' || i, 'fp', 201, '\\x7b7d', now(), \
         now(), now() + interval '1 day' from generate_series(1, 3000) i",
    )
    .execute(pg.pool())
    .await
    .expect("fill");
    sqlx::query("analyze idempotency_keys")
        .execute(pg.pool())
        .await
        .expect("analyze");
    let mut tx = db.begin().await.expect("begin");
    let claim = store::claim(&mut tx, &scope("fresh"), lease(5000))
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Claimed), "{claim:?}");
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
    a_claim_is_exclusive_until_its_transaction_ends_and_a_completion_is_replayed,
    an_executor_past_its_lease_cannot_complete_after_others_claimed,
    shutdown_lets_parked_waiters_go_with_503_and_flushes_the_audit_log,
    a_claim_leaves_nothing_on_its_connection,
);
