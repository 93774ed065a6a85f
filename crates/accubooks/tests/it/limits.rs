//! Slow clients and limits: header, body and idle timeouts, connection and in-flight
//! caps.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::harness::{Backend, Options, TestApp};

fn limits_options(f: impl FnOnce(&mut accubooks::config::LimitArgs)) -> Options {
    let mut o = Options::default();
    f(&mut o.limits);
    o
}

/// Item 5: a client trickling header lines is cut off within the header timeout.
async fn a_slow_header_client_is_cut_off(backend: Backend) {
    let o = limits_options(|l| l.header_timeout = Duration::from_secs(1));
    let app = TestApp::spawn_with(backend, o).await;
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut closed_at = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let closed_at = closed_at.expect("the connection was cut off");
    assert!(closed_at < Duration::from_secs(3), "{closed_at:?}");
    // A connection that sends nothing, and one idle after a request, close as well.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    let mut kept = TcpStream::connect(app.addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    for s in [&mut silent, &mut kept] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "an idle connection is closed");
    }
    // The server itself is fine.
    assert_eq!(
        app.send(app.client.get(app.url("/healthz"))).await.status,
        200
    );
}

/// Item 5: many idle connections neither exhaust the server nor delay `/healthz`.
async fn idle_connections_do_not_delay_healthz(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut idle = Vec::with_capacity(1500);
    for _ in 0..1500 {
        idle.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let r = client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}

/// Item 5: past the in-flight cap a request is refused at once with 503 + Retry-After,
/// and a body that never completes is cut off after the body timeout.
async fn overload_is_answered_with_503_and_slow_bodies_time_out(backend: Backend) {
    let o = limits_options(|l| {
        l.max_in_flight = 2;
        l.body_timeout = Duration::from_secs(2);
    });
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("A").await;
    let mut slow = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /api/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nIdempotency-Key: slow{i}\r\nContent-Length: 100\r\n\r\n{{",
            co.token
        );
        s.write_all(head.as_bytes()).await.expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = app.get("/api/customers", &co.token).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "service_unavailable"),
        "{:?}",
        r.json()
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        app.send(app.client.get(app.url("/healthz"))).await.status,
        200,
        "health checks are not shed"
    );
    // The slow bodies are cut off; their slots free up.
    for mut s in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the slow body was cut off");
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.starts_with("HTTP/1.1 201"), "{text}");
    }
    assert_eq!(app.get("/api/customers", &co.token).await.status, 200);
    assert_eq!(app.count_for("customers", &co).await, 0);
}

/// Item 5: past the connection cap a client waits in the backlog until a connection
/// frees (here: idle ones cut by the header timeout), then is served.
async fn connections_past_the_cap_wait_for_a_free_one(backend: Backend) {
    let o = limits_options(|l| {
        l.max_connections = 2;
        l.header_timeout = Duration::from_secs(1);
    });
    let app = TestApp::spawn_with(backend, o).await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    drop(idle);
}

backend_tests!(
    a_slow_header_client_is_cut_off,
    idle_connections_do_not_delay_healthz,
    overload_is_answered_with_503_and_slow_bodies_time_out,
    connections_past_the_cap_wait_for_a_free_one,
);
