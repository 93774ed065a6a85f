//! The operator's kit against a real Prometheus: Debian's `prometheus` binary scrapes a
//! real server every second with `ops/prometheus/idempotent-writes.rules.yml` loaded,
//! a scripted mix goes through the server, and then Prometheus' HTTP API must show that
//! every query of `ops/grafana/accubooks.json` parses, the core panels have data, every
//! recording rule produces series, every rule is healthy, the key-collision alert fires
//! and the counters equal the mix.
//!
//! Without `prometheus` on PATH the test is ignored with a reason (build-script cfg) and,
//! if run anyway, prints why it skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Backend, TestApp};

/// Finds an executable on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// A `prometheus` process in a temporary directory; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Prometheus {
    /// Starts `bin` scraping `target` every second with the rules loaded.
    async fn start(bin: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = dir.path().join("idempotent-writes.rules.yml");
        std::fs::copy(
            repo_file("ops/prometheus/idempotent-writes.rules.yml"),
            &rules,
        )
        .expect("copy the rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: accubooks\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            dir,
        };
        p.wait_for("ready", || async {
            p.client
                .get(format!("{}/-/ready", p.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `check` every 250 ms for up to 60 s.
    async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "prometheus: timed out waiting for {what}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .expect("prometheus answers");
        res.json().await.expect("prometheus answers JSON")
    }

    /// An instant query; the whole API answer.
    async fn query(&self, expr: &str) -> Value {
        self.api("/api/v1/query", &[("query", expr)]).await
    }

    /// The result vector of a successful instant query.
    async fn vector(&self, expr: &str) -> Vec<Value> {
        let v = self.query(expr).await;
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// `expr`'s samples keyed by the value of `label`.
    async fn by_label(&self, expr: &str, label: &str) -> BTreeMap<String, f64> {
        self.vector(expr)
            .await
            .iter()
            .map(|s| {
                let key = s["metric"][label].as_str().unwrap_or_default().to_owned();
                let value = s["value"][1]
                    .as_str()
                    .unwrap_or("NaN")
                    .parse()
                    .unwrap_or(f64::NAN);
                (key, value)
            })
            .collect()
    }
}

/// Every query of the dashboard, with its panel title, Grafana variables substituted.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$operation", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            out.push((panel["title"].as_str().unwrap_or("").to_owned(), expr));
        }
    }
    out
}

/// Panels the scripted mix must fill. The others need a prune run, workflows or the
/// workflow outbox, which this test does not exercise.
const CORE_PANELS: &[&str] = &[
    "Operations per minute",
    "Operations by status",
    "Replay rate",
    "Failure rate",
    "P95 execution duration",
    "Failures per minute by error type",
    "Key table",
    "Oldest pending / expired",
    "Database pool",
    "In flight and waiters",
    "Audit queue",
    "HTTP responses per minute",
];

/// The mix, half of it at a time (so rates see counters grow between scrapes).
async fn drive_mix(app: &TestApp, token: &str, round: u32) {
    let body = |n: u32| json!({"name": format!("Customer {round}-{n}")});
    for n in 0..3 {
        let key = format!("r{round}-new-{n}");
        let r = app.post("/api/customers", token, &key, &body(n)).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
    }
    for _ in 0..2 {
        let r = app
            .post(
                "/api/customers",
                token,
                &format!("r{round}-new-0"),
                &body(0),
            )
            .await;
        assert_eq!(r.status, 200, "replay: {:?}", r.json());
    }
    let r = app
        .post(
            "/api/customers",
            token,
            &format!("r{round}-new-1"),
            &body(9),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "idempotency_key_reused")
    );
    let r = app
        .post(
            "/api/customers",
            token,
            &format!("r{round}-bad"),
            &json!({"name": "  "}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "validation_failed"));
    let r = app
        .write(
            Method::POST,
            "/api/customers",
            token,
            None,
            &body(0).to_string(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "idempotency_key_missing")
    );
    let r = app
        .post(
            "/api/employees",
            token,
            &format!("r{round}-emp"),
            &json!({"name": "Grace", "pay_type": "salary", "annual_salary": "96000.00"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(prometheus_tests),
    ignore = "prometheus: no `prometheus` binary on PATH at build time (Debian package `prometheus`)"
)]
async fn a_real_prometheus_scrapes_the_server_and_every_rule_and_panel_works() {
    let Some(bin) = on_path("prometheus") else {
        eprintln!(
            "skipped: no `prometheus` binary on PATH (install the Debian package `prometheus`)"
        );
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let co = app.create_company("Acme").await;
    let prom = Prometheus::start(&bin, &app.addr.to_string()).await;

    // The server is scraped before the mix: counters start from what they are now.
    prom.wait_for("the first scrape", || async {
        prom.vector(r#"up{job="accubooks"} == 1"#).await.len() == 1
    })
    .await;
    drive_mix(&app, &co.token, 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drive_mix(&app, &co.token, 2).await;

    // Prometheus sees exactly the mix: per status and per error type.
    let statuses = r#"sum by (status) (idempotent_writes_total{operation="createCustomer"})"#;
    let expected: BTreeMap<String, f64> = [("new", 6.0), ("replayed", 4.0), ("failed", 6.0)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    prom.wait_for("the mix's counters", || async {
        prom.by_label(statuses, "status").await == expected
    })
    .await;
    let errors = prom
        .by_label(
            r#"sum by (error_type) (idempotent_writes_failed_total{operation="createCustomer"}) > 0"#,
            "error_type",
        )
        .await;
    let expected: BTreeMap<String, f64> =
        [("mismatch", 2.0), ("validation", 2.0), ("missing_key", 2.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(errors, expected);

    // Every recording rule produces series, and every rule is healthy.
    let rules = prom.api("/api/v1/rules", &[]).await;
    assert_eq!(rules["status"], "success", "{rules}");
    let mut recorded = Vec::new();
    let mut alerts = Vec::new();
    for group in rules["data"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().expect("name").to_owned();
            match rule["type"].as_str() {
                Some("recording") => recorded.push(name),
                _ => alerts.push(name),
            }
        }
    }
    assert!(recorded.len() >= 2 && alerts.len() >= 13, "{rules}");
    for name in &recorded {
        prom.wait_for(&format!("series of {name}"), || async {
            !prom.vector(name).await.is_empty()
        })
        .await;
    }
    prom.wait_for("every rule evaluated and healthy", || async {
        let rules = prom.api("/api/v1/rules", &[]).await;
        rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .all(|r| r["health"] == "ok")
    })
    .await;
    let replay = prom
        .by_label(
            r#"idempotent_write_replay_rate{operation="createCustomer"}"#,
            "type",
        )
        .await;
    assert!(
        replay
            .get("high-risk")
            .is_some_and(|r| *r > 0.0 && *r < 1.0),
        "replay rate {replay:?}"
    );

    // The mismatches page: IdempotencyKeyCollision fires for createCustomer.
    prom.wait_for("IdempotencyKeyCollision firing", || async {
        let a = prom.api("/api/v1/alerts", &[]).await;
        a["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| {
                a["labels"]["alertname"] == "IdempotencyKeyCollision"
                    && a["labels"]["operation"] == "createCustomer"
                    && a["state"] == "firing"
            })
    })
    .await;

    // The dashboard: importable shape, every query parses, the core panels have data.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("ops/grafana/accubooks.json")).expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"operation"),
        "{vars:?}"
    );
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 20, "{}", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let v = prom.query(expr).await;
        assert_eq!(v["status"], "success", "panel {title:?}: {expr}: {v}");
        let has_data = v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        if CORE_PANELS.contains(&title.as_str()) && !has_data {
            empty.push(format!("{title}: {expr}"));
        }
    }
    for title in CORE_PANELS {
        assert!(
            queries.iter().any(|(t, _)| t == title),
            "no panel {title:?}"
        );
    }
    assert!(
        empty.is_empty(),
        "core panel queries without data: {empty:#?}"
    );
    drop(prom);
    app.stop().await;
}
