//! Fencing at the record store, on both backends: a claim whose lease ended can be taken
//! over, and the old claim can then neither complete nor release the key.

use std::time::Duration;

use idem::store::{self, Claim, StoredResponse};
use idem::{IdempotencyKey, Scope};
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

async fn a_stale_claim_can_neither_complete_nor_release(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let db = &app.state.db;
    let scope = Scope::new(
        "tenant-f",
        "createCustomer",
        IdempotencyKey::parse(b"fence").expect("key"),
    );
    let lease = Duration::from_millis(200);
    let ttl = Duration::from_secs(60);
    let Claim::Claimed { fence: old } = store::claim(db, &scope, "fp", "r1", lease, ttl)
        .await
        .expect("claim")
    else {
        panic!("first claim must succeed");
    };
    let Claim::Existing(_) = store::claim(db, &scope, "fp", "r2", lease, ttl)
        .await
        .expect("claim")
    else {
        panic!("a live claim is not taken over");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Claim::Claimed { fence: new } = store::claim(db, &scope, "fp", "r3", lease, ttl)
        .await
        .expect("claim")
    else {
        panic!("an expired lease is taken over");
    };
    assert!(new > old, "a takeover gets a new fence");
    let response = StoredResponse {
        status: 201,
        body: b"{}".to_vec(),
        location: None,
        resource_id: scope.deterministic_id(),
    };
    let mut tx = db.begin().await.expect("begin");
    assert!(
        !store::complete(&mut tx, &scope, old, &response, ttl)
            .await
            .expect("complete"),
        "the stale fence cannot complete"
    );
    tx.rollback().await.expect("rollback");
    store::release(db, &scope, old).await.expect("release");
    assert!(
        store::load(db, &scope).await.expect("load").is_some(),
        "the stale fence cannot release the new claim"
    );
    assert!(
        !store::renew(db, &scope, old, lease).await.expect("renew"),
        "nor renew it"
    );
    let mut tx = db.begin().await.expect("begin");
    assert!(store::complete(&mut tx, &scope, new, &response, ttl)
        .await
        .expect("complete"));
    tx.commit().await.expect("commit");
}

async fn shutdown_lets_parked_waiters_go_with_503_and_flushes_the_audit_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("A").await;
    let hold = app.state.engine().hooks().arm("claimed", false);
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

async fn a_claim_hands_its_connection_back_with_full_durability(backend: Backend) {
    let o = crate::harness::Options {
        pool_size: Some(1),
        ..Default::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let db = &app.state.db;
    let scope = Scope::new(
        "tenant-s",
        "createCustomer",
        IdempotencyKey::parse(b"sync").expect("key"),
    );
    let claim = store::claim(
        db,
        &scope,
        "fp",
        "r",
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await;
    assert!(matches!(claim, Ok(Claim::Claimed { .. })));
    // The pool has one connection: the claim's. Its relaxed flush must not outlive the claim.
    match db {
        idem::Db::Postgres(pool) => {
            let level: String = sqlx::query_scalar("show synchronous_commit")
                .fetch_one(pool)
                .await
                .expect("show");
            assert_eq!(level, "on");
        }
        idem::Db::Sqlite { pool, .. } => {
            let level: i64 = sqlx::query_scalar("pragma synchronous")
                .fetch_one(pool)
                .await
                .expect("pragma");
            assert_eq!(level, 2, "synchronous=FULL");
        }
    }
}

backend_tests!(
    a_stale_claim_can_neither_complete_nor_release,
    shutdown_lets_parked_waiters_go_with_503_and_flushes_the_audit_log,
    a_claim_hands_its_connection_back_with_full_durability,
);
