//! `TestApp`: a real AccuBooks server on port 0 over a database of its own.
//!
//! SQLite: a fresh file in a temporary directory. PostgreSQL: a database created for the
//! test from `DATABASE_URL_TEST` and dropped afterwards; without the variable PostgreSQL
//! tests are skipped with a visible notice.
//!
//! Strict: a running `TestApp` that is dropped checks that every workflow instance
//! settled (within 10 s) and that none failed, unless the test expected it; and every
//! 2xx response that goes through [`TestApp::send`] (so every request helper) must match
//! its operation's response schema in the server's own `/openapi.json`, and the request
//! body it answered must match the operation's request-body schema
//! ([`crate::conformance`]), or the test fails there.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accubooks::app::Application;
use accubooks::config::{DbArgs, LimitArgs, LogFormat, ServeArgs};
use accubooks::state::AppState;
use serde_json::{json, Value};
use tokio::sync::{oneshot, OnceCell};

use crate::conformance::Spec;

/// The operator token every test server uses.
pub const OPERATOR: &str = "acbop_test-operator-token-0123456789";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a behavioural test on both backends: `backend_tests!(fn_a, fn_b);` where each
/// `async fn fn_a(backend: Backend)` is defined in the calling module.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
                async fn $name() {
                    if $crate::harness::postgres_url().is_none() {
                        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
                        return;
                    }
                    super::$name($crate::harness::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// `DATABASE_URL_TEST`, when set.
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL_TEST")
        .ok()
        .filter(|s| !s.is_empty())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|p| p + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A database owned by one test; dropped with it.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_url().expect("DATABASE_URL_TEST");
                let name = format!("accubooks_t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&admin)
                    .await
                    .expect("connect to DATABASE_URL_TEST");
                sqlx::query(&format!("create database {name}"))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                TestDb {
                    url: with_database(&admin, &name),
                    backend,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The same database for a second node in this process; dropping it drops nothing.
    pub fn another_node(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            backend: self.backend,
            _dir: None,
            pg_name: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let Some(admin) = postgres_url() else { return };
        // Drop runs inside the test's runtime: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                sqlx::query(&format!("drop database if exists {name} with (force)"))
                    .execute(&pool)
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// Settings a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    pub lease: Duration,
    pub key_ttl: Duration,
    pub max_wait: Duration,
    pub pool_size: Option<u32>,
    /// Webhooks: private targets allowed (tests' receivers listen on 127.0.0.1).
    pub webhook_allow_private: bool,
    pub webhook_max_attempts: u32,
    pub webhook_backoff: Duration,
    pub webhook_timeout: Duration,
    pub webhook_lease: Duration,
    pub limits: LimitArgs,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lease: Duration::from_secs(30),
            key_ttl: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(30),
            pool_size: Some(10),
            webhook_allow_private: true,
            webhook_max_attempts: 5,
            webhook_backoff: Duration::from_millis(50),
            webhook_timeout: Duration::from_secs(2),
            webhook_lease: Duration::from_secs(5),
            limits: LimitArgs::default(),
        }
    }
}

pub fn serve_args(url: &str, o: &Options) -> ServeArgs {
    ServeArgs {
        bind: "127.0.0.1:0".parse().expect("addr"),
        db: DbArgs {
            database_url: url.to_owned(),
            transaction_pooler: false,
        },
        migrate: true,
        no_migrate: false,
        admin_token: Some(OPERATOR.to_owned()),
        key_ttl: o.key_ttl,
        lease: o.lease,
        max_wait: o.max_wait,
        pool_size: o.pool_size,
        log_format: LogFormat::Json,
        prune_schedule: "30 3 * * *".to_owned(),
        webhook_allow_private: o.webhook_allow_private,
        webhook_max_attempts: o.webhook_max_attempts,
        webhook_backoff: o.webhook_backoff,
        webhook_timeout: o.webhook_timeout,
        webhook_lease: o.webhook_lease,
        limits: o.limits.clone(),
    }
}

/// A company with an admin token.
#[derive(Debug, Clone)]
pub struct Company {
    pub id: String,
    pub user_id: String,
    pub email: String,
    pub token: String,
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_owned()
    }
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Set by tests whose point is an instance that ends `failed`.
    failed_instances_expected: std::sync::atomic::AtomicBool,
    /// The served OpenAPI document, fetched on the first 2xx response.
    spec: OnceCell<Arc<Spec>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, o: Options) -> TestApp {
        let db = TestDb::new(backend).await;
        Self::on_db(db, o).await
    }

    /// A server on an existing test database (restarts, several nodes).
    pub async fn on_db(db: TestDb, o: Options) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app = Application::build_on(serve_args(&db.url, &o), listener)
            .await
            .expect("application builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            state,
            db,
            stop: Some(tx),
            task: Some(task),
            failed_instances_expected: std::sync::atomic::AtomicBool::new(false),
            spec: OnceCell::new(),
        }
    }

    /// Stops the server gracefully and returns its database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        std::mem::replace(
            &mut self.db,
            TestDb {
                url: String::new(),
                backend: Backend::Sqlite,
                _dir: None,
                pg_name: None,
            },
        )
    }

    /// Sends a request and reads the whole response; a 2xx response and the request body
    /// it accepted must match the served document (see the module doc), or this panics
    /// with the operation, the path into the body and the schema's message.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let (client, req) = req.build_split();
        let req = req.expect("request builds");
        let (method, path) = (req.method().to_string(), req.url().path().to_owned());
        // A streamed body cannot be read back; it is not checked.
        let sent = match req.body() {
            None => Some(Vec::new()),
            Some(b) => b.as_bytes().map(<[u8]>::to_vec),
        };
        let res = client.execute(req).await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("body read");
        if (200..300).contains(&status) {
            let spec = self.spec().await;
            if let Err(violation) = spec.check(&method, &path, status, &body) {
                panic!("the response disagrees with the served OpenAPI document: {violation}");
            }
            if let Some(Err(violation)) = sent.map(|b| spec.check_request(&method, &path, &b)) {
                panic!("the request disagrees with the served OpenAPI document: {violation}");
            }
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    /// The checks built from this server's `/openapi.json` (fetched once).
    pub async fn spec(&self) -> Arc<Spec> {
        self.spec
            .get_or_init(|| async {
                let res = self
                    .client
                    .get(self.url("/openapi.json"))
                    .send()
                    .await
                    .expect("the OpenAPI document is served");
                assert_eq!(res.status().as_u16(), 200, "GET /openapi.json");
                let doc: Value = res.json().await.expect("the OpenAPI document is JSON");
                Arc::new(Spec::new(doc))
            })
            .await
            .clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST (or PATCH) with a JSON body and an optional key.
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: &str,
    ) -> Resp {
        let json = [("content-type", "application/json")];
        self.write_with(method, path, token, key, body.to_owned(), &json)
            .await
    }

    /// A write with exactly the given extra headers (content type, `Prefer`, …).
    pub async fn write_with(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token)
            .body(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req).await
    }

    pub async fn post(&self, path: &str, token: &str, key: &str, body: &Value) -> Resp {
        self.write(
            reqwest::Method::POST,
            path,
            token,
            Some(key),
            &body.to_string(),
        )
        .await
    }

    pub async fn patch(&self, path: &str, token: &str, key: &str, body: &Value) -> Resp {
        self.write(
            reqwest::Method::PATCH,
            path,
            token,
            Some(key),
            &body.to_string(),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(self.client.get(self.url(path)).bearer_auth(token))
            .await
    }

    pub async fn create_company(&self, name: &str) -> Company {
        let r = self
            .send(
                self.client
                    .post(self.url("/admin/companies"))
                    .bearer_auth(OPERATOR)
                    .json(&json!({ "name": name })),
            )
            .await;
        assert_eq!(r.status, 201, "create company: {:?}", r.json());
        let v = r.json();
        Company {
            id: v["company_id"].as_str().unwrap_or_default().to_owned(),
            user_id: v["user_id"].as_str().unwrap_or_default().to_owned(),
            email: v["email"].as_str().unwrap_or_default().to_owned(),
            token: v["api_token"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Grants `role` to `email` and returns a token for that user.
    pub async fn member_token(&self, company: &Company, email: &str, role: &str) -> String {
        let key = format!("grant-{email}-{role}");
        let r = self
            .post(
                "/api/company/members",
                &company.token,
                &key,
                &json!({"email": email, "role": role}),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "grant: {:?}", r.json());
        let r = self
            .send(
                self.client
                    .post(self.url(&format!("/admin/companies/{}/tokens", company.id)))
                    .bearer_auth(OPERATOR)
                    .json(&json!({ "email": email })),
            )
            .await;
        assert_eq!(r.status, 201, "token: {:?}", r.json());
        r.json()["api_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Counts rows of a table (tests only).
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("select count(*) from {table}");
        idem::on_db!(&self.state.db, |c| sqlx::query_scalar::<_, i64>(&sql)
            .fetch_one(c)
            .await)
        .expect("count")
    }

    /// Counts rows of a table for one company (tests only).
    pub async fn count_for(&self, table: &str, company: &Company) -> i64 {
        let sql = format!("select count(*) from {table} where company_id = $1");
        let id = idem::Id(uuid::Uuid::parse_str(&company.id).expect("company id"));
        idem::on_db!(&self.state.db, |c| sqlx::query_scalar::<_, i64>(&sql)
            .bind(id)
            .fetch_one(c)
            .await)
        .expect("count")
    }
}

impl TestApp {
    /// This test ends with `failed` workflow instances on purpose.
    pub fn expect_failed_instances(&self) {
        self.failed_instances_expected
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The strict end of a test: within 10 s every workflow instance is settled, and none
    /// failed unless the test said so. Runs on a thread of its own (inside `Drop`, while
    /// the server keeps running on the test's runtime).
    fn check_outbox(&self) {
        if std::thread::panicking() || self.db.url.is_empty() {
            return;
        }
        let url = self.db.url.clone();
        let failed_ok = self
            .failed_instances_expected
            .load(std::sync::atomic::Ordering::SeqCst);
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let opts = idem::db::ConnectOptions::default();
                let db = idem::Db::connect(&url, &opts).await.map_err(|e| e.to_string())?;
                let count = |sql: &'static str| {
                    let db = db.clone();
                    async move {
                        idem::on_db!(&db, |c| sqlx::query_scalar::<_, i64>(sql)
                            .fetch_one(c)
                            .await)
                        .unwrap_or(-1)
                    }
                };
                let started = std::time::Instant::now();
                let live = "select count(*) from workflow_instances where status in ('pending', 'running')";
                let mut open = count(live).await;
                while open != 0 && started.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    open = count(live).await;
                }
                let failed = count("select count(*) from workflow_instances where status = 'failed'").await;
                db.close().await;
                if open != 0 {
                    return Err(format!("{open} workflow instances were never settled"));
                }
                if failed != 0 && !failed_ok {
                    return Err(format!("{failed} workflow instances failed"));
                }
                Ok(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("outbox check panicked".into()));
        if let Err(e) = outcome {
            panic!("strict harness: {e}");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.check_outbox();
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A real `accubooks serve` process on a free port (multi-process tests): started with
/// the operator token, a small pool and `extra` arguments and environment; killed (after
/// a SIGCONT, in case a test froze it) when dropped.
/// Whether Debian's `faketime` is installed (`.ci/run` installs it).
pub fn faketime_available() -> bool {
    std::process::Command::new("faketime")
        .args(["-f", "+0", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Node {
    child: std::process::Child,
    pub base: String,
}

impl Node {
    pub async fn start(url: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_with_clock(None, url, extra, env).await
    }

    /// Starts a node whose wall clock is off by `offset` (`+2h`), under Debian's
    /// `faketime` (see [`faketime_available`]).
    pub async fn start_skewed(offset: &str, url: &str, extra: &[&str]) -> Node {
        Self::start_with_clock(Some(offset), url, extra, &[]).await
    }

    async fn start_with_clock(
        offset: Option<&str>,
        url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut command = match offset {
            Some(offset) => {
                let mut c = Command::new("faketime");
                c.args(["-f", offset, env!("CARGO_BIN_EXE_accubooks")])
                    // Only the wall clock: timers and timeouts keep real time.
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_accubooks")),
        };
        let child = command
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                url,
                "--admin-token",
                OPERATOR,
                "--pool-size",
                "5",
            ])
            .args(extra)
            .env_remove("IDEM_TEST_HOLD")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a wrapper (`faketime`) forks the server, and a
            // signal to the wrapper alone would leave the server running.
            .process_group(0)
            .spawn()
            .expect("start accubooks");
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", node.base)).send().await {
                if r.status() == 200 {
                    return node;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`, …) to the node's processes (its group).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig}");
    }

    /// SIGKILL to the node's processes, and reap.
    pub fn kill(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, once the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", "--", &format!("-{}", self.child.id())])
            .status();
        self.kill();
    }
}
