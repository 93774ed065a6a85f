//! Exactly-once across processes: several nodes on one PostgreSQL, an executor killed
//! mid-write (SIGKILL), and a frozen executor (SIGSTOP) that resumes after its lease.
//!
//! The nodes are the real `accubooks` binary; the test-only hold point
//! (`IDEM_TEST_HOLD=<point>:<ms>:<key prefix>`, compiled only into test builds) parks an
//! executor at a named point so the crash lands where the test wants it.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::harness::{faketime_available, postgres_url, Backend, Node, TestDb, OPERATOR};

/// A node whose claims last `lease`, optionally with a hold point (`IDEM_TEST_HOLD`).
async fn node(url: &str, lease: &str, hold: Option<&str>) -> Node {
    node_via(&Via::direct(url), lease, hold).await
}

/// Where nodes connect: the store itself, or a transaction pooler in front of it.
pub(crate) struct Via {
    pub(crate) url: String,
    pub(crate) pooled: bool,
}

impl Via {
    fn direct(url: &str) -> Via {
        Via {
            url: url.to_owned(),
            pooled: false,
        }
    }
}

async fn node_via(via: &Via, lease: &str, hold: Option<&str>) -> Node {
    let env: Vec<(&str, &str)> = hold.map(|h| ("IDEM_TEST_HOLD", h)).into_iter().collect();
    let mut args = vec!["--lease", lease, "--key-ttl", "1h"];
    if via.pooled {
        args.push("--transaction-pooler");
    }
    Node::start(&via.url, &args, &env).await
}

async fn company(client: &reqwest::Client, node: &Node) -> (String, String) {
    let v: Value = client
        .post(format!("{}/admin/companies", node.base))
        .bearer_auth(OPERATOR)
        .json(&json!({"name": "Multi"}))
        .send()
        .await
        .expect("create company")
        .json()
        .await
        .expect("json");
    (
        v["company_id"].as_str().unwrap_or_default().to_owned(),
        v["api_token"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn create(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    wait: Option<u32>,
) -> (u16, String) {
    let mut req = client
        .post(format!("{base}/api/customers"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"name": "Exactly once"}));
    if let Some(w) = wait {
        req = req.header("prefer", format!("wait={w}"));
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

async fn customers(url: &str) -> i64 {
    let db = idem::Db::connect(url, &idem::db::ConnectOptions::default())
        .await
        .expect("connect");
    let n = idem::on_db!(&db, |c| sqlx::query_scalar::<_, i64>(
        "select count(*) from customers"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    db.close().await;
    n
}

/// Whether `node` is executing a write now (its `idem_local_in_flight` gauge): a claim
/// is the executor's own transaction, visible from outside only through the node.
async fn executing(node: &Node) -> bool {
    let Ok(r) = reqwest::Client::new()
        .get(format!("{}/metrics", node.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
    else {
        return false;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("idem_local_in_flight "))
        .any(|v| v.trim().parse::<f64>().is_ok_and(|n| n > 0.0))
}

async fn wait_until_executing(node: &Node) {
    let started = Instant::now();
    while !executing(node).await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the write never started executing"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn three_nodes_on_one_postgres_execute_300_same_key_requests_once() {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    three_nodes_case(&db, &Via::direct(&db.url)).await;
}

/// 300 requests with one key, spread over three nodes, race: one executes.
pub(crate) async fn three_nodes_case(db: &TestDb, via: &Via) {
    let first = node_via(via, "30s", None).await;
    let (second, third) = tokio::join!(node_via(via, "30s", None), node_via(via, "30s", None));
    let nodes = [first, second, third];
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .expect("client");
    let (_, token) = company(&client, &nodes[0]).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(300));
    let results = join_all((0..300).map(|i| {
        let (client, node, token, barrier) = (&client, &nodes[i % 3], &token, barrier.clone());
        async move {
            barrier.wait().await;
            create(client, &node.base, token, "multi-node", None).await
        }
    }))
    .await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "exactly one 201 across three nodes");
    assert!(
        results.iter().all(|(s, _)| matches!(s, 200 | 201 | 409)),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(customers(&db.url).await, 1);
}

async fn killed_executor_case(backend: Backend) {
    let db = TestDb::new(backend).await;
    killed_case(&db, &Via::direct(&db.url)).await;
}

/// An executor killed inside its transaction: the key executes once, elsewhere.
pub(crate) async fn killed_case(db: &TestDb, via: &Via) {
    let mut a = node_via(via, "2s", Some("claimed:60000:hold-")).await;
    let client = reqwest::Client::new();
    let (_, token) = company(&client, &a).await;
    let doomed = tokio::spawn({
        let (client, base, token) = (client.clone(), a.base.clone(), token.clone());
        async move { create(&client, &base, &token, "hold-kill", None).await }
    });
    wait_until_executing(&a).await;
    a.kill();
    assert_eq!(
        doomed.await.expect("task").0,
        0,
        "the killed node never answered"
    );
    // SQLite: restart on the same file. PostgreSQL: any other node. The dead executor's
    // claim was its transaction: the store ended it with the process, so the key is free
    // at the latest when the lease ends (a 409 is allowed until then, never a second
    // execution).
    let b = node_via(via, "2s", None).await;
    let (status, body) = create(&client, &b.base, &token, "hold-kill", Some(10)).await;
    assert_eq!(
        status, 201,
        "the key executes, at the latest after the lease: {body}"
    );
    let (status, _) = create(&client, &b.base, &token, "hold-kill", None).await;
    assert_eq!(status, 200);
    assert_eq!(customers(&db.url).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_executor_on_sqlite_executes_once_after_restart() {
    killed_executor_case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_killed_executor_on_postgres_executes_once_on_another_node() {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    killed_executor_case(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_frozen_executor_cannot_commit_after_its_claim_was_taken_over() {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    frozen_case(&db, &Via::direct(&db.url)).await;
}

/// A frozen executor (SIGSTOP) past its lease: another node takes over, and the frozen
/// one, resumed, cannot commit and answers as a retry would.
pub(crate) async fn frozen_case(db: &TestDb, via: &Via) {
    // A parks inside its transaction, after its writes, before the completion.
    let a = node_via(via, "1s", Some("before_complete:3000:hold-")).await;
    let b = node_via(via, "1s", None).await;
    let client = reqwest::Client::new();
    let (_, token) = company(&client, &a).await;
    let frozen = tokio::spawn({
        let (client, base, token) = (client.clone(), a.base.clone(), token.clone());
        async move { create(&client, &base, &token, "hold-freeze", None).await }
    });
    wait_until_executing(&a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body_b) = create(&client, &b.base, &token, "hold-freeze", Some(15)).await;
    assert_eq!(
        status, 201,
        "B takes the claim over after A's lease: {body_b}"
    );
    a.signal("-CONT");
    let (status, body_a) = frozen.await.expect("task");
    assert_eq!(
        status, 200,
        "A lost its claim and answers as a retry would: {body_a}"
    );
    assert_eq!(body_a, body_b);
    assert_eq!(customers(&db.url).await, 1);
}

/// Whether the tests of nodes under `faketime` can run here (PostgreSQL and Debian's
/// `faketime`); says why not when they cannot.
fn postgres_and_faketime() -> bool {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return false;
    }
    if !faketime_available() {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        return false;
    }
    true
}

/// Defect: a node started under `faketime` (a parent that forks the server and waits
/// for it) left its server running after the test: killing the parent orphaned the
/// child, which kept its port (and, on PostgreSQL, its pool) until the machine stopped.
/// A node is now its own process group, and stopping it stops the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_stopped_node_leaves_no_server_behind_even_under_faketime() {
    if !postgres_and_faketime() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    for mut node in [
        Node::start(&db.url, &["--lease", "30s"], &[]).await,
        Node::start_skewed("+2h", &db.url, &["--lease", "30s"]).await,
    ] {
        let ready = format!("{}/readyz", node.base);
        assert!(client.get(&ready).send().await.is_ok(), "serving first");
        node.kill();
        let gone = client.get(&ready).send().await;
        assert!(
            gone.is_err(),
            "nothing answers on {ready} once the node is stopped: {gone:?}"
        );
    }
}

/// Issue: leases and expiry used each node's own clock, so a node running ahead by more
/// than the lease stole live claims and treated completed records as expired early.
/// Every lease and expiry comparison is now the database's: a node two hours ahead (with
/// a one-hour key TTL) neither takes over a write in flight nor re-claims, counts or
/// prunes the completed record as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn a_node_with_a_skewed_clock_neither_steals_a_claim_nor_expires_a_record_early() {
    if !postgres_and_faketime() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let a = node(&db.url, "30s", Some("before_complete:3000:hold-")).await;
    let ahead = Node::start_skewed("+2h", &db.url, &["--lease", "30s", "--key-ttl", "1h"]).await;
    let client = reqwest::Client::new();
    let (_, token) = company(&client, &a).await;
    let first = tokio::spawn({
        let (client, base, token) = (client.clone(), a.base.clone(), token.clone());
        async move { create(&client, &base, &token, "hold-skew", None).await }
    });
    wait_until_executing(&a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = create(&client, &ahead.base, &token, "hold-skew", None).await;
    assert_eq!(
        status, 409,
        "the node ahead does not take over a live write: {body}"
    );
    let (status, body_a) = first.await.expect("task");
    assert_eq!(status, 201, "{body_a}");

    let (status, body) = create(&client, &ahead.base, &token, "hold-skew", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, body_a, "replayed from the stored record");
    let skew_db = idem::Db::connect(&db.url, &idem::db::ConnectOptions::default())
        .await
        .expect("connect");
    let request_id: String = idem::on_db!(&skew_db, |c| sqlx::query_scalar(
        "select request_id from idempotency_keys where idem_key = 'hold-skew'"
    )
    .fetch_one(c)
    .await)
    .expect("the record stands");
    assert!(!request_id.is_empty());
    skew_db.close().await;
    assert_eq!(customers(&db.url).await, 1);

    // The operator's figures and the prune, run two hours ahead, see nothing expired.
    let ahead_cli = |args: &[&str]| {
        std::process::Command::new("faketime")
            .args(["-f", "+2h", env!("CARGO_BIN_EXE_accubooks")])
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .args(args)
            .output()
            .expect("accubooks runs")
    };
    let stats = ahead_cli(&["--json", "keys", "--database-url", &db.url, "stats"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert_eq!(stats["expired_pending"], json!(0), "{stats}");
    let pruned = ahead_cli(&["--json", "keys", "--database-url", &db.url, "prune"]);
    let pruned: Value = serde_json::from_slice(&pruned.stdout).expect("json");
    assert_eq!(pruned["records"], json!(0), "{pruned}");
    let (status, _) = create(&client, &a.base, &token, "hold-skew", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_exits_zero() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut node = node(&db.url, "30s", None).await;
    let client = reqwest::Client::new();
    let (_, token) = company(&client, &node).await;
    assert_eq!(
        create(&client, &node.base, &token, "before-term", None)
            .await
            .0,
        201
    );
    node.signal("-TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(35),
            "the node did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(customers(&db.url).await, 1);
}
