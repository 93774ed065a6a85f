//! Telemetry is complete and exact: after a scripted mix through the real binary, every
//! counter equals the mix per operation, status and error type; every request — refused
//! before the engine or not — has one JSON log event carrying every field of seed 000
//! (and never a token or a body) and one audit row; the `new` row's duration is the
//! histogram's figure; `promtool check metrics` parses `/metrics`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;

use crate::harness::OPERATOR;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(db_url: &str, log: std::fs::File) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(env!("CARGO_BIN_EXE_accubooks"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--database-url", db_url, "--admin-token", OPERATOR])
            .args(["--log-format", "json"])
            .env_remove("IDEM_TEST_HOLD")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start accubooks");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        while !client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(started.elapsed() < Duration::from_secs(30), "not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// SIGTERM, then waits for the drain (the audit queue is flushed before exit).
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sample values of `/metrics` (text format 0.0.4) by series, labels sorted.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((normalize(series), value.parse().ok()?))
        })
        .collect()
}

/// `name{b="2",a="1"}` → `name{a="1",b="2"}`.
fn normalize(series: &str) -> String {
    match series.split_once('{') {
        Some((name, labels)) => {
            let mut parts: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
            parts.sort_unstable();
            format!("{name}{{{}}}", parts.join(","))
        }
        None => series.to_owned(),
    }
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(&normalize(series))
        .unwrap_or_else(|| panic!("no series {series}"))
}

const MARKER: &str = "Body-Marker-6d1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_logs_and_audit_rows_equal_a_scripted_mix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_url = format!("sqlite://{}", dir.path().join("t.db").display());
    let log_path = dir.path().join("server.log");
    let server = Server::start(&db_url, std::fs::File::create(&log_path).expect("log file")).await;
    let client = reqwest::Client::new();
    let co: Value = client
        .post(format!("{}/admin/companies", server.base))
        .bearer_auth(OPERATOR)
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .expect("company")
        .json()
        .await
        .expect("json");
    let (company, token) = (
        co["company_id"].as_str().expect("company_id").to_owned(),
        co["api_token"].as_str().expect("token").to_owned(),
    );
    let send = |path: &str, key: Option<&str>, ctype: &str, body: String| {
        let mut req = client
            .post(format!("{}{path}", server.base))
            .bearer_auth(&token)
            .header("content-type", ctype)
            .body(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        async move { req.send().await.expect("sent").status().as_u16() }
    };
    let json_ct = "application/json";
    let ada = json!({"name": MARKER}).to_string();
    let c = "/api/customers";
    // createCustomer: 2 new, 2 replayed, then one failure of each kind.
    assert_eq!(send(c, Some("k-a"), json_ct, ada.clone()).await, 201);
    assert_eq!(send(c, Some("k-b"), json_ct, ada.clone()).await, 201);
    assert_eq!(send(c, Some("k-a"), json_ct, ada.clone()).await, 200);
    assert_eq!(send(c, Some("k-a"), json_ct, ada.clone()).await, 200);
    let other = json!({"name": "Other"}).to_string();
    assert_eq!(send(c, Some("k-a"), json_ct, other).await, 422);
    let blank = json!({"name": "  "}).to_string();
    assert_eq!(send(c, Some("k-v"), json_ct, blank).await, 422);
    assert_eq!(send(c, None, json_ct, ada.clone()).await, 400);
    assert_eq!(send(c, Some("has space"), json_ct, ada.clone()).await, 400);
    assert_eq!(
        send(c, Some("k-m"), json_ct, "{\"name\":".into()).await,
        400
    );
    assert_eq!(send(c, Some("k-t"), "text/plain", ada.clone()).await, 415);
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024));
    assert_eq!(send(c, Some("k-l"), json_ct, huge).await, 413);
    // createEmployee: one new.
    let grace = json!({"name": "Grace", "pay_type": "salary", "annual_salary": "96000.00"});
    assert_eq!(
        send("/api/employees", Some("k-e"), json_ct, grace.to_string()).await,
        201
    );

    // Counters: exactly the mix.
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let m = samples(&text);
    let w = |op: &str, kind: &str, status: &str| {
        get(
            &m,
            &format!(
                r#"idempotent_writes_total{{operation="{op}",type="{kind}",status="{status}"}}"#
            ),
        )
    };
    let failed = |op: &str, kind: &str, et: &str| {
        get(
            &m,
            &format!(
                r#"idempotent_writes_failed_total{{operation="{op}",type="{kind}",error_type="{et}"}}"#
            ),
        )
    };
    assert_eq!(w("createCustomer", "high-risk", "new"), 2.0);
    assert_eq!(w("createCustomer", "high-risk", "replayed"), 2.0);
    assert_eq!(w("createCustomer", "high-risk", "failed"), 7.0);
    assert_eq!(w("createEmployee", "high-risk", "new"), 1.0);
    assert_eq!(w("createEmployee", "high-risk", "failed"), 0.0);
    assert_eq!(
        w("createPayment", "financial", "new"),
        0.0,
        "pre-created at zero"
    );
    for et in [
        "mismatch",
        "validation",
        "missing_key",
        "invalid_key",
        "malformed_json",
        "unsupported_media_type",
        "payload_too_large",
    ] {
        assert_eq!(failed("createCustomer", "high-risk", et), 1.0, "{et}");
    }
    for et in ["in_flight", "business_rule", "internal"] {
        assert_eq!(failed("createCustomer", "high-risk", et), 0.0, "{et}");
    }
    let total_failed: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("idempotent_writes_failed_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total_failed, 7.0);
    assert_eq!(
        get(
            &m,
            r#"idempotent_writes_replayed_total{operation="createCustomer",type="high-risk"}"#
        ),
        2.0
    );
    // The histogram sees the six requests that reached the engine.
    assert_eq!(
        get(
            &m,
            r#"idempotent_write_duration_ms_count{operation="createCustomer",type="high-risk"}"#
        ),
        6.0
    );
    let employee_ms = get(
        &m,
        r#"idempotent_write_duration_ms_sum{operation="createEmployee",type="high-risk"}"#,
    );

    // promtool parses the exposition; its only findings are the contract's own names.
    if let Some(promtool) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    }) {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(text.as_bytes()).expect("write");
        }
        let out = child.wait_with_output().expect("promtool output");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut findings: Vec<&str> = report.lines().filter(|l| !l.is_empty()).collect();
        findings.sort_unstable();
        assert_eq!(
            findings,
            [
                r#"idempotency_expired_pending_total non-counter metrics should not have "_total" suffix"#,
                r#"idempotency_keys_total non-counter metrics should not have "_total" suffix"#,
                r#"idempotency_oldest_expired_age_hours use base unit "seconds" instead of "hours""#,
                r#"idempotency_oldest_pending_age_minutes use base unit "seconds" instead of "minutes""#,
                r#"idempotency_pending_requests_total non-counter metrics should not have "_total" suffix"#,
                "idempotent_write_duration_ms metric names should not contain abbreviated units",
            ],
            "promtool check metrics:\n{report}"
        );
    } else {
        eprintln!(
            "promtool check metrics skipped: no `promtool` on PATH (Debian package `prometheus`)"
        );
    }

    server.stop();

    // One log event per request, every field of seed 000, no token, no body.
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        !log.contains(&token) && !log.contains(OPERATOR),
        "a token was logged"
    );
    assert!(!log.contains(MARKER), "a request body was logged");
    let events: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "idem::write")
        .collect();
    assert_eq!(events.len(), 12, "{events:#?}");
    for e in &events {
        for field in [
            "operation",
            "operation_type",
            "status",
            "error_type",
            "deterministic_id",
            "company_id",
            "user_id",
            "idempotency_key",
            "request_id",
            "route_path",
            "http_method",
            "duration_ms",
            "workflows_triggered",
            "side_effects_executed",
            "error_message",
            "metadata",
        ] {
            assert!(!e[field].is_null(), "{field} missing in {e}");
        }
        assert_eq!(e["company_id"], json!(company));
        assert!(!e["user_id"].as_str().unwrap_or_default().is_empty(), "{e}");
        assert_eq!(e["http_method"], "POST");
        if e["status"] == "failed" {
            let meta: Value =
                serde_json::from_str(e["metadata"].as_str().unwrap_or("null")).unwrap_or_default();
            assert_eq!(meta["error_type"], e["error_type"], "{e}");
            assert!(
                !e["error_message"].as_str().unwrap_or_default().is_empty(),
                "{e}"
            );
        }
    }
    let mut by_error: Vec<&str> = events
        .iter()
        .filter_map(|e| e["error_type"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    by_error.sort_unstable();
    assert_eq!(
        by_error,
        [
            "invalid_key",
            "malformed_json",
            "mismatch",
            "missing_key",
            "payload_too_large",
            "unsupported_media_type",
            "validation"
        ]
    );

    // One audit row per request; refusals have no key or id where none was valid.
    let pool = sqlx::SqlitePool::connect(&db_url).await.expect("sqlite");
    let rows = sqlx::query(
        "select status, operation_name, idempotency_key, deterministic_id, user_id, \
         route_path, http_method, error_message, metadata, execution_duration_ms \
         from idempotent_write_audit_log",
    )
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    assert_eq!(rows.len(), 12);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.get::<String, _>("status")).or_default() += 1;
        assert!(r.get::<Option<String>, _>("user_id").is_some());
        assert_eq!(r.get::<String, _>("http_method"), "POST");
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            ("failed".to_owned(), 7),
            ("new".to_owned(), 3),
            ("replayed".to_owned(), 2)
        ])
    );
    let failed_row = |et: &str| {
        rows.iter()
            .find(|r| {
                r.get::<Option<String>, _>("metadata")
                    .is_some_and(|m| m.contains(&format!("\"{et}\"")))
            })
            .unwrap_or_else(|| panic!("no audit row for {et}"))
    };
    for et in ["missing_key", "invalid_key"] {
        let r = failed_row(et);
        assert_eq!(r.get::<Option<String>, _>("idempotency_key"), None);
        assert_eq!(r.get::<Option<String>, _>("deterministic_id"), None);
        assert_eq!(r.get::<String, _>("route_path"), "/api/customers");
    }
    let malformed = failed_row("malformed_json");
    assert_eq!(
        malformed
            .get::<Option<String>, _>("idempotency_key")
            .as_deref(),
        Some("k-m")
    );
    assert_eq!(
        malformed.get::<Option<String>, _>("deterministic_id"),
        Some(idem::deterministic_id("company", &company, "createCustomer", "k-m").to_string())
    );
    assert!(failed_row("mismatch")
        .get::<Option<String>, _>("error_message")
        .is_some_and(|m| m.contains("mismatch")));
    // The new row's duration is the histogram's figure.
    let employee_row = rows
        .iter()
        .find(|r| {
            r.get::<String, _>("operation_name") == "createEmployee"
                && r.get::<String, _>("status") == "new"
        })
        .expect("the employee's new row");
    assert_eq!(
        employee_row.get::<f64, _>("execution_duration_ms"),
        employee_ms
    );
    pool.close().await;
}
