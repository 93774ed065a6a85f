//! The worker across processes (the real binary): a node killed (SIGKILL) mid-delivery
//! loses nothing — its claim ends with its lease and a restarted node delivers — and two
//! nodes on one PostgreSQL never deliver one instance at the same time.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use super::receiver::{Mode, Receiver};
use crate::harness::{postgres_url, Backend, Node, TestDb, OPERATOR};

/// A node delivering webhooks to loopback with a `lease` on each claimed delivery and a
/// `timeout` per attempt.
async fn node(url: &str, lease: &str, timeout: &str) -> Node {
    Node::start(
        url,
        &[
            "--webhook-lease",
            lease,
            "--webhook-timeout",
            timeout,
            "--webhook-backoff",
            "50ms",
        ],
        &[("ACCUBOOKS_WEBHOOK_ALLOW_PRIVATE", "1")],
    )
    .await
}

async fn call(client: &reqwest::Client, req: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = client;
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn setup(client: &reqwest::Client, node: &Node, url: &str) -> (String, String) {
    let (_, co) = call(
        client,
        client
            .post(format!("{}/admin/companies", node.base))
            .bearer_auth(OPERATOR)
            .json(&json!({"name": "Nodes"})),
    )
    .await;
    let token = co["api_token"].as_str().unwrap_or_default().to_owned();
    let body =
        json!({"name": "hook", "trigger": "manual", "action": {"type": "webhook", "url": url}});
    let (status, w) = call(
        client,
        client
            .post(format!("{}/api/workflows", node.base))
            .bearer_auth(&token)
            .header("idempotency-key", "wf")
            .json(&body),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    (token, w["id"].as_str().unwrap_or_default().to_owned())
}

async fn trigger(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    workflow: &str,
    key: &str,
) -> String {
    let (status, v) = call(
        client,
        client
            .post(format!("{base}/api/workflows/{workflow}/trigger"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap_or_default().to_owned()
}

async fn killed_mid_delivery_case(backend: Backend) {
    let rx = Receiver::start(Mode::HangFirst).await;
    let db = TestDb::new(backend).await;
    let mut a = node(&db.url, "3s", "2s").await;
    let client = reqwest::Client::new();
    let (token, w) = setup(&client, &a, &rx.url("/hook")).await;
    let id = trigger(&client, &a.base, &token, &w, "k").await;
    let started = Instant::now();
    while rx.hits().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first attempt never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    let b = node(&db.url, "3s", "2s").await;
    let started = Instant::now();
    let v = loop {
        let (_, v) = call(
            &client,
            client
                .get(format!("{}/api/workflow-instances/{id}", b.base))
                .bearer_auth(&token),
        )
        .await;
        if v["status"] == "delivered" {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not delivered after restart: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        v["attempts"], 2,
        "the killed attempt and the one after its lease: {v}"
    );
    assert_eq!(
        rx.per_key().get(&id),
        Some(&2),
        "same Idempotency-Key both times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_delivery_on_sqlite_delivers_after_restart() {
    killed_mid_delivery_case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_node_killed_mid_delivery_on_postgres_delivers_on_another_node() {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    killed_mid_delivery_case(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn two_nodes_deliver_300_instances_each_once_and_never_at_the_same_time() {
    let Some(_) = postgres_url() else {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    };
    let rx = Receiver::start_with(Mode::Ok, Duration::from_millis(5)).await;
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = tokio::join!(node(&db.url, "30s", "5s"), node(&db.url, "30s", "5s"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(100)
        .build()
        .expect("client");
    let (token, w) = setup(&client, &a, &rx.url("/hook")).await;
    let nodes = [&a, &b];
    let ids = join_all((0..300).map(|i| {
        let (client, base, token, w) = (&client, &nodes[i % 2].base, &token, &w);
        async move { trigger(client, base, token, w, &format!("k-{i}")).await }
    }))
    .await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from workflow_instances where status = 'delivered'",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        if n == 300 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {n} of 300 delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    assert_eq!(
        rx.overlaps(),
        0,
        "no instance was delivered by both nodes at the same time"
    );
    let per_key = rx.per_key();
    assert_eq!(per_key.len(), 300);
    assert!(
        ids.iter().all(|id| per_key.get(id) == Some(&1)),
        "each delivered once"
    );
}
