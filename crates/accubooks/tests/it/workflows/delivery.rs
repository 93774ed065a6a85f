//! Webhook deliveries to a local receiver: retries with one `Idempotency-Key` and valid
//! signatures, the attempt limit, redirects never followed, SSRF refusals at creation and
//! at delivery, and the signing secret's rotation.

use std::time::Duration;

use serde_json::json;

use super::receiver::{Mode, Receiver};
use super::{metric, secret, settled, signature_is_valid, trigger, workflow};
use crate::backend_tests;
use crate::financial::assert_rule;
use crate::harness::{Backend, Options, TestApp};

fn hook(url: &str) -> serde_json::Value {
    json!({"type": "webhook", "url": url})
}

async fn a_receiver_failing_twice_gets_the_same_key_and_valid_signatures_and_the_third_attempt_delivers(
    backend: Backend,
) {
    let rx = Receiver::start(Mode::FailFirst(2)).await;
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let w = workflow(&app, &co, "hook", "manual", hook(&rx.url("/hooks")), true).await;
    let id = trigger(&app, &co, &w, "go").await;
    let v = settled(&app, &co, &id, Duration::from_secs(20)).await;
    assert_eq!(
        (v["status"].as_str(), v["attempts"].as_i64()),
        (Some("delivered"), Some(3)),
        "{v}"
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    let secret = secret(&app, &co).await;
    for h in &hits {
        assert_eq!(
            h.key, id,
            "the instance id is the downstream Idempotency-Key"
        );
        assert_eq!(h.path, "/hooks");
        assert!(
            signature_is_valid(&secret, &h.signature, &h.body),
            "signature {}",
            h.signature
        );
        let body: serde_json::Value = serde_json::from_slice(&h.body).unwrap_or_default();
        assert_eq!(
            (body["id"].as_str(), body["event"].as_str()),
            (Some(id.as_str()), Some("manual"))
        );
        assert_eq!(body["input"], json!({"n": "go"}));
    }
    assert!(!signature_is_valid(
        "whsec_wrong",
        &hits[0].signature,
        &hits[0].body
    ));
    let retry = [("action", "webhook"), ("outcome", "retry")];
    let delivered = [("action", "webhook"), ("outcome", "delivered")];
    assert_eq!(metric(&app, "workflow_deliveries_total", &retry).await, 2.0);
    assert_eq!(
        metric(&app, "workflow_deliveries_total", &delivered).await,
        1.0
    );
    assert_eq!(rx.overlaps(), 0);
}

async fn a_receiver_that_never_succeeds_ends_failed_at_the_attempt_limit_with_its_last_error(
    backend: Backend,
) {
    let rx = Receiver::start(Mode::AlwaysFail).await;
    let o = Options {
        webhook_max_attempts: 4,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let w = workflow(&app, &co, "hook", "manual", hook(&rx.url("/")), true).await;
    let id = trigger(&app, &co, &w, "go").await;
    app.expect_failed_instances();
    let v = settled(&app, &co, &id, Duration::from_secs(20)).await;
    assert_eq!(
        (v["status"].as_str(), v["attempts"].as_i64()),
        (Some("failed"), Some(4)),
        "{v}"
    );
    assert_eq!(v["last_error"], "HTTP 500");
    assert_eq!(rx.hits().len(), 4);
    let failed = [("action", "webhook"), ("outcome", "failed")];
    assert_eq!(
        metric(&app, "workflow_deliveries_total", &failed).await,
        1.0
    );
}

async fn a_redirect_is_never_followed(backend: Backend) {
    let rx = Receiver::start(Mode::Redirect).await;
    let o = Options {
        webhook_max_attempts: 2,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let w = workflow(&app, &co, "hook", "manual", hook(&rx.url("/start")), true).await;
    let id = trigger(&app, &co, &w, "go").await;
    app.expect_failed_instances();
    let v = settled(&app, &co, &id, Duration::from_secs(20)).await;
    assert_eq!(v["status"], "failed");
    assert!(
        v["last_error"].as_str().unwrap_or("").contains("302"),
        "{v}"
    );
    assert!(
        rx.hits().iter().all(|h| h.path == "/start"),
        "the redirect target was never requested"
    );
}

async fn ssrf_targets_are_refused_at_creation_and_at_delivery_unless_allowed(backend: Backend) {
    let rx = Receiver::start(Mode::Ok).await;
    let port = rx.addr.port();
    let strict = Options {
        webhook_allow_private: false,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, strict.clone()).await;
    let co = app.create_company("Acme").await;
    for (i, url) in [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let body = json!({"name": "n", "trigger": "manual", "action": hook(url)});
        let r = app
            .post("/api/workflows", &co.token, &format!("s-{i}"), &body)
            .await;
        assert_rule(&r, "webhook_url_not_allowed");
    }
    assert_eq!(app.count_for("workflows", &co).await, 0);
    let db = app.stop().await;

    // Allowed with the flag: a name resolving to 127.0.0.1 is created and delivered.
    let open = TestApp::on_db(db, Options::default()).await;
    let w = workflow(
        &open,
        &co,
        "local",
        "manual",
        hook(&format!("http://localhost:{port}/in")),
        true,
    )
    .await;
    let first = trigger(&open, &co, &w, "allowed").await;
    assert_eq!(
        settled(&open, &co, &first, Duration::from_secs(10)).await["status"],
        "delivered"
    );
    assert_eq!(rx.hits().len(), 1);
    let db = open.stop().await;

    // Without it, the same workflow's next delivery is refused after resolution.
    let app = TestApp::on_db(db, strict).await;
    let second = trigger(&app, &co, &w, "refused").await;
    app.expect_failed_instances();
    let v = settled(&app, &co, &second, Duration::from_secs(10)).await;
    assert_eq!(
        (v["status"].as_str(), v["attempts"].as_i64()),
        (Some("failed"), Some(1)),
        "{v}"
    );
    assert!(
        v["last_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("webhook_url_not_allowed"),
        "{v}"
    );
    assert_eq!(rx.hits().len(), 1, "nothing reached the receiver");
}

async fn a_rotated_secret_signs_the_next_deliveries(backend: Backend) {
    let rx = Receiver::start(Mode::Ok).await;
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let old = secret(&app, &co).await;
    assert!(old.starts_with("whsec_"));
    assert_eq!(secret(&app, &co).await, old, "reading does not change it");
    let rotate = |key: &'static str| {
        let app = &app;
        let token = co.token.clone();
        async move {
            app.write_with(
                reqwest::Method::POST,
                "/api/company/webhook-secret/rotate",
                &token,
                Some(key),
                "",
                &[],
            )
            .await
        }
    };
    let r = rotate("rot-1").await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let new = r.json()["secret"].as_str().unwrap_or_default().to_owned();
    assert_ne!(new, old);
    assert_eq!(r.json()["version"], 2);
    assert_eq!(
        rotate("rot-1").await.body,
        r.body,
        "a replay rotates nothing"
    );
    assert_eq!(secret(&app, &co).await, new);
    let viewer = app.member_token(&co, "v@example.com", "viewer").await;
    assert_eq!(
        app.get("/api/company/webhook-secret", &viewer).await.status,
        403
    );
    let w = workflow(&app, &co, "hook", "manual", hook(&rx.url("/")), true).await;
    let id = trigger(&app, &co, &w, "go").await;
    assert_eq!(
        settled(&app, &co, &id, Duration::from_secs(10)).await["status"],
        "delivered"
    );
    let h = &rx.hits()[0];
    assert!(signature_is_valid(&new, &h.signature, &h.body));
    assert!(!signature_is_valid(&old, &h.signature, &h.body));
}

async fn shutdown_ends_the_running_attempt_and_leaves_nothing_claimed(backend: Backend) {
    let rx = Receiver::start(Mode::HangFirst).await;
    let o = Options {
        webhook_timeout: Duration::from_secs(1),
        webhook_lease: Duration::from_secs(60),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o.clone()).await;
    let co = app.create_company("Acme").await;
    let w = workflow(&app, &co, "hook", "manual", hook(&rx.url("/")), true).await;
    let id = trigger(&app, &co, &w, "go").await;
    let started = std::time::Instant::now();
    while rx.hits().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no attempt arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = std::time::Instant::now();
    let db = app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the drain is bounded by the webhook timeout"
    );
    // Not left `running` until its 60 s lease: the next node delivers it at once.
    let app = TestApp::on_db(db, o).await;
    let v = settled(&app, &co, &id, Duration::from_secs(10)).await;
    assert_eq!(
        (v["status"].as_str(), v["attempts"].as_i64()),
        (Some("delivered"), Some(2)),
        "{v}"
    );
}

async fn a_hanging_receiver_never_blocks_other_deliveries(backend: Backend) {
    let hanging = Receiver::start(Mode::HangFirst).await;
    let fine = Receiver::start(Mode::Ok).await;
    let o = Options {
        webhook_timeout: Duration::from_secs(4),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let slow = workflow(&app, &co, "slow", "manual", hook(&hanging.url("/")), true).await;
    let quick = workflow(&app, &co, "quick", "manual", hook(&fine.url("/")), true).await;
    let stuck = trigger(&app, &co, &slow, "a").await;
    let started = std::time::Instant::now();
    while hanging.hits().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no attempt arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = trigger(&app, &co, &quick, "b").await;
    let v = settled(&app, &co, &other, Duration::from_secs(3)).await;
    assert_eq!(v["status"], "delivered");
    let s = app
        .get(&format!("/api/workflow-instances/{stuck}"), &co.token)
        .await
        .json();
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_i64()),
        (Some("running"), Some(1)),
        "{s}"
    );
    // The hung attempt times out and is retried; the receiver then answers.
    let s = settled(&app, &co, &stuck, Duration::from_secs(15)).await;
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_i64()),
        (Some("delivered"), Some(2)),
        "{s}"
    );
}

async fn a_receiver_that_resets_connections_is_retried_until_the_limit(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(sock);
        }
    });
    let o = Options {
        webhook_max_attempts: 3,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    app.expect_failed_instances();
    let co = app.create_company("Acme").await;
    let w = workflow(
        &app,
        &co,
        "reset",
        "manual",
        hook(&format!("http://{addr}/")),
        true,
    )
    .await;
    let id = trigger(&app, &co, &w, "go").await;
    let v = settled(&app, &co, &id, Duration::from_secs(20)).await;
    assert_eq!(
        (v["status"].as_str(), v["attempts"].as_i64()),
        (Some("failed"), Some(3)),
        "{v}"
    );
    assert!(!v["last_error"].as_str().unwrap_or("").is_empty(), "{v}");
    assert!(
        !v["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(&addr.to_string()),
        "no URL in errors: {v}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    task.abort();
}

async fn local_commits_wake_the_worker_without_waiting_for_its_poll(backend: Backend) {
    let rx = Receiver::start(Mode::Ok).await;
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let w = workflow(&app, &co, "hook", "manual", hook(&rx.url("/")), true).await;
    workflow(
        &app,
        &co,
        "adj",
        "inventory.adjusted",
        hook(&rx.url("/")),
        true,
    )
    .await;
    let item = crate::inventory::item(&app, &co, "W", 0).await;
    for round in 0..4 {
        // Idle long enough for the poll interval to back off to 1 s.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let started = std::time::Instant::now();
        // A manual trigger (the operation's own record) and an emitted instance, in turn.
        if round % 2 == 0 {
            trigger(&app, &co, &w, &format!("r-{round}")).await;
        } else {
            let r = crate::inventory::adjust(&app, &co, &item, &format!("r-{round}"), 1).await;
            assert_eq!(r.status, 201);
        }
        while rx.hits().len() <= round {
            assert!(
                started.elapsed() < Duration::from_millis(400),
                "round {round}: the instance waited for a poll"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

backend_tests!(
    local_commits_wake_the_worker_without_waiting_for_its_poll,
    a_hanging_receiver_never_blocks_other_deliveries,
    a_receiver_that_resets_connections_is_retried_until_the_limit,
    shutdown_ends_the_running_attempt_and_leaves_nothing_claimed,
    a_receiver_failing_twice_gets_the_same_key_and_valid_signatures_and_the_third_attempt_delivers,
    a_receiver_that_never_succeeds_ends_failed_at_the_attempt_limit_with_its_last_error,
    a_redirect_is_never_followed,
    ssrf_targets_are_refused_at_creation_and_at_delivery_unless_allowed,
    a_rotated_secret_signs_the_next_deliveries,
);
