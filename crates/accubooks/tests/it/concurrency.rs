//! Guarantees under concurrency: one execution per key, cheap duplicates, no lost admin.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures::future::join_all;
use http::Request;
use serde_json::json;
use tower::ServiceExt;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

/// The app's router, driven in-process (no sockets) for large request counts.
fn router(app: &TestApp) -> axum::Router {
    accubooks::app::router(app.state.clone(), accubooks::ops::registry()).expect("router")
}

fn create_customer(token: &str, key: &str, body: &str, wait: Option<u32>) -> Request<Body> {
    let mut b = Request::post("/api/customers")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key);
    if let Some(w) = wait {
        b = b.header("prefer", format!("wait={w}"));
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

async fn five_hundred_concurrent_same_key_requests_create_one_customer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let r = router(&app);
    let barrier = Arc::new(tokio::sync::Barrier::new(500));
    let tasks = (0..500).map(|_| {
        let (r, token, barrier) = (r.clone(), co.token.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let res = r
                .oneshot(create_customer(&token, "same", r#"{"name":"Once"}"#, None))
                .await
                .expect("infallible");
            let status = res.status().as_u16();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, body)
        })
    });
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let created: Vec<_> = results.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(created.len(), 1, "exactly one 201");
    assert!(
        results.iter().all(|(s, _)| matches!(s, 200 | 201 | 409)),
        "only 200/201/409"
    );
    for (_, body) in results.iter().filter(|(s, _)| *s == 200) {
        assert_eq!(body, &created[0].1, "every replay is the first body");
    }
    assert_eq!(app.count_for("customers", &co).await, 1);
}

async fn a_duplicate_storm_parks_without_holding_connections(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let r = router(&app);
    // The first execution parks before its transaction, holding no connection (and, on
    // SQLite, not the one writer slot the unrelated write needs).
    let hold = app.state.idem.hooks().arm("claim");
    let first = tokio::spawn({
        let (r, token) = (r.clone(), co.token.clone());
        async move {
            r.oneshot(create_customer(&token, "storm", r#"{"name":"S"}"#, None))
                .await
                .expect("infallible")
        }
    });
    hold.reached().await;
    // Arrive after the token cache entry expired: the storm must not herd on auth either.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dupes: Vec<_> = (0..999)
        .map(|_| {
            let (r, token) = (r.clone(), co.token.clone());
            tokio::spawn(async move {
                let res = r
                    .oneshot(create_customer(
                        &token,
                        "storm",
                        r#"{"name":"S"}"#,
                        Some(30),
                    ))
                    .await
                    .expect("infallible");
                (
                    res.status().as_u16(),
                    res.headers().get("preference-applied").cloned(),
                )
            })
        })
        .collect();
    // Let the duplicates park, watching the pool while they do.
    let peak = Arc::new(AtomicU32::new(0));
    let watcher = tokio::spawn({
        let (db, peak) = (app.state.db.clone(), peak.clone());
        async move {
            loop {
                peak.fetch_max(db.connections_in_use(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let metrics = app.state.idem.metrics();
    for _ in 0..1000 {
        if metrics.waiters.get() == 999 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unrelated = r
        .clone()
        .oneshot(create_customer(
            &co.token,
            "unrelated",
            r#"{"name":"U"}"#,
            None,
        ))
        .await
        .expect("infallible");
    assert_eq!(
        unrelated.status(),
        201,
        "an unrelated write is not stalled by the storm"
    );
    let parked = app.state.idem.metrics().waiters.get();
    assert_eq!(parked, 999, "all duplicates are parked in process");
    watcher.abort();
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "pool in use peaked at {}",
        peak.load(Ordering::SeqCst)
    );
    hold.release();
    assert_eq!(first.await.expect("first").status(), 201);
    let results: Vec<_> = join_all(dupes)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    assert!(
        results.iter().all(|(s, _)| *s == 200),
        "all 999 duplicates replay"
    );
    assert!(results
        .iter()
        .all(|(_, p)| p.as_ref().is_some_and(|v| v == "wait=30")));
    assert_eq!(app.count_for("customers", &co).await, 2);
}

async fn two_admins_demoting_each_other_never_leave_the_company_without_an_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..10 {
        let co = app.create_company(&format!("Acme {round}")).await;
        let second = app.member_token(&co, "second@example.com", "admin").await;
        let (b1, b2) = (
            json!({"email": "second@example.com", "role": "viewer"}),
            json!({"email": co.email, "role": "viewer"}),
        );
        let demote_second = app.post("/api/company/members", &co.token, "d1", &b1);
        let demote_owner = app.post("/api/company/members", &second, "d2", &b2);
        let (a, b) = tokio::join!(demote_second, demote_owner);
        let statuses = [a.status, b.status];
        assert!(
            statuses.contains(&201),
            "one demotion succeeds: {statuses:?}"
        );
        let refused: Vec<_> = [&a, &b].into_iter().filter(|r| r.status != 201).collect();
        for r in &refused {
            // The loser is refused by the rule, or lost its token's admin role first.
            assert!(
                (r.status == 422 && r.code() == "cannot_demote_last_admin") || r.status == 403,
                "{} {:?}",
                r.status,
                r.json()
            );
        }
        let list = app.get("/api/company/members", &co.token).await;
        let admins = if list.status == 200 {
            list.json()["data"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["role"] == "admin").count())
                .unwrap_or(0)
        } else {
            let l = app.get("/api/company/members", &second).await;
            l.json()["data"]
                .as_array()
                .map(|m| m.iter().filter(|m| m["role"] == "admin").count())
                .unwrap_or(0)
        };
        assert_eq!(admins, 1, "round {round}: exactly one admin remains");
    }
}

backend_tests!(
    five_hundred_concurrent_same_key_requests_create_one_customer,
    a_duplicate_storm_parks_without_holding_connections,
    two_admins_demoting_each_other_never_leave_the_company_without_an_admin,
);
