//! The write-path benchmark: the real server in-process on 127.0.0.1:0, load from the
//! same process over loopback HTTP, on SQLite (a temporary file) and on PostgreSQL when
//! `DATABASE_URL_TEST` is set (a database of its own, dropped at the end).
//!
//! Variants, each measured in interleaved rounds (one run of every variant per round):
//! - `gated`: `POST /api/customers` through the idempotency gate, a new key every request;
//! - `plain`: the same validation and insert SQL without the gate, on a router of its own
//!   (own port) over the same state and database;
//! - `replay`: retries of keys completed in the round's `gated` run (served from the
//!   engine's replay cache, the audit row batched);
//! - `bare`: a bare axum handler returning a stored body (the replay ceiling).
//!
//! Every ratio is computed per round and reported as the median over the rounds.
//!
//! Settings (environment): `BENCH_SECS` (per run, default 5), `BENCH_CLIENTS` (default 32),
//! `BENCH_ROUNDS` (default 3), `BENCH_BACKENDS` (default `sqlite,postgres`).
//! Run: `cargo bench -p accubooks --bench write_path`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accubooks::app::Application;
use accubooks::auth::{Need, Tenant};
use accubooks::config::{DbArgs, LogFormat, ServeArgs};
use accubooks::error::AppError;
use accubooks::state::AppState;
use accubooks::validate::{Validator, NAME_MAX};
use axum::extract::{Request, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, LOCATION};
use http::StatusCode;
use idem::{on_tx, Id, Ts};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

const OPERATOR: &str = "acbop_bench-operator-token-0123456789";
/// Keys replayed per round: well inside the engine's default replay cache (10,000).
const REPLAY_KEYS: usize = 5_000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Settings {
    secs: u64,
    clients: usize,
    rounds: usize,
    backends: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Self, BoxError> {
        fn num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| format!("{name}={v:?} is not a number").into()),
                Err(_) => Ok(default),
            }
        }
        let s = Settings {
            secs: num("BENCH_SECS", 5)?,
            clients: num("BENCH_CLIENTS", 32)?,
            rounds: num("BENCH_ROUNDS", 3)?,
            backends: std::env::var("BENCH_BACKENDS")
                .unwrap_or_else(|_| "sqlite,postgres".to_owned())
                .split(',')
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty())
                .collect(),
        };
        if s.secs == 0 || s.secs > 60 || s.clients == 0 || s.clients > 256 || s.rounds == 0 {
            return Err("BENCH_SECS must be 1-60, BENCH_CLIENTS 1-256, BENCH_ROUNDS >= 1".into());
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------
// The ungated handler: the same validation and insert SQL as createCustomer.

#[derive(Serialize)]
struct CustomerOut {
    id: Id,
    name: String,
    email: Option<String>,
    created_at: Ts,
}

/// Handles `POST /plain/customers`: createCustomer's checks, validation and insert,
/// without the idempotency gate (no key, no record, no audit row).
async fn create_customer_plain(
    State(state): State<AppState>,
    tenant: Tenant,
    req: Request,
) -> Result<Response, AppError> {
    tenant.require(Need::Writer)?;
    let (parts, body) = req.into_parts();
    let bytes = idem::http::read_body(&parts.headers, body, idem::http::DEFAULT_BODY_LIMIT)
        .await
        .map_err(AppError::Problem)?;
    if !idem::http::is_json(&parts.headers) {
        return Err(AppError::Problem(idem::http::unsupported_media_type()));
    }
    let value = idem::fingerprint::parse_strict(&bytes).map_err(|e| {
        AppError::Problem(idem::Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            e.0,
        ))
    })?;
    let mut v = Validator::new();
    let (name, email) = match v.object(&value, "", &["name", "email"]) {
        Some(o) => (
            v.text(o, "", "name", NAME_MAX, true),
            v.email(o, "", "email", false),
        ),
        None => (None, None),
    };
    v.finish()?;
    let customer = CustomerOut {
        id: Id(Uuid::now_v7()),
        name: name.unwrap_or_default(),
        email,
        created_at: Ts::now(),
    };
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, |c| sqlx::query(
        "insert into customers (company_id, id, name, email, request_fingerprint, created_at) \
         values ($1, $2, $3, $4, $5, $6)"
    )
    .bind(Id(tenant.company_id))
    .bind(customer.id)
    .bind(&customer.name)
    .bind(customer.email.as_deref())
    .bind("")
    .bind(customer.created_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    let body = serde_json::to_vec(&customer).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (LOCATION, format!("/api/customers/{}", customer.id.0)),
        ],
        body,
    )
        .into_response())
}

/// The plain router: the same middleware as the server's (request id, HTTP metrics, a
/// deadline) around the ungated handler.
fn plain_router(state: AppState) -> Router {
    let deadline = state.config.lease + state.config.max_wait;
    Router::new()
        .route("/plain/customers", post(create_customer_plain))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            accubooks::web::track_http,
        ))
        .layer(middleware::from_fn(
            move |req: Request, next: middleware::Next| async move {
                match tokio::time::timeout(deadline, next.run(req)).await {
                    Ok(res) => res,
                    Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            },
        ))
        .layer(middleware::from_fn(idem::http::request_id_layer))
        .with_state(state)
}

/// A bare axum handler returning a stored body: the ceiling for replays.
fn bare_router(body: Bytes) -> Router {
    Router::new().route(
        "/bare",
        post(move || {
            let body = body.clone();
            async move { (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body) }
        }),
    )
}

async fn serve(router: Router) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("bench router stopped: {e}");
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------
// Databases.

fn postgres_url() -> Option<String> {
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

/// A scratch database: a SQLite file in a temporary directory, or a PostgreSQL database
/// created for the run and dropped by [`BenchDb::drop_now`].
struct BenchDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl BenchDb {
    async fn new(backend: &str) -> Result<Self, BoxError> {
        if backend == "sqlite" {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            return Ok(BenchDb {
                url,
                _dir: Some(dir),
                pg: None,
            });
        }
        let admin = postgres_url().ok_or("DATABASE_URL_TEST is not set")?;
        let name = format!("accubooks_bench_{}", Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await?;
        sqlx::query(&format!("create database {name}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(BenchDb {
            url: with_database(&admin, &name),
            _dir: None,
            pg: Some((admin, name)),
        })
    }

    async fn drop_now(self) -> Result<(), BoxError> {
        if let Some((admin, name)) = &self.pg {
            let pool = sqlx::PgPool::connect(admin).await?;
            sqlx::query(&format!("drop database if exists {name} with (force)"))
                .execute(&pool)
                .await?;
            pool.close().await;
        }
        Ok(())
    }
}

fn serve_args(url: &str) -> ServeArgs {
    ServeArgs {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        db: DbArgs {
            database_url: url.to_owned(),
            transaction_pooler: false,
        },
        migrate: true,
        no_migrate: false,
        admin_token: Some(OPERATOR.to_owned()),
        key_ttl: Duration::from_secs(24 * 3600),
        lease: Duration::from_secs(30),
        max_wait: Duration::from_secs(30),
        pool_size: None,
        log_format: LogFormat::Json,
        prune_schedule: "30 3 * * *".to_owned(),
        webhook_allow_private: false,
        webhook_max_attempts: 12,
        webhook_backoff: Duration::from_secs(10),
        webhook_timeout: Duration::from_secs(10),
        webhook_lease: Duration::from_secs(60),
        limits: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------
// Load.

/// One request to send: URL, optional key, body.
#[derive(Clone)]
struct Target {
    url: String,
    token: String,
    expect: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Gated,
    Plain,
    Replay,
    Bare,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Gated => "gated new write",
            Variant::Plain => "ungated write",
            Variant::Replay => "replay",
            Variant::Bare => "bare axum",
        }
    }
}

struct RunResult {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    /// (key, body) of every completed new write (gated runs).
    completed: Vec<(String, String)>,
}

impl RunResult {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn p50_us(&self) -> u64 {
        self.hist.value_at_quantile(0.5)
    }
    fn p99_us(&self) -> u64 {
        self.hist.value_at_quantile(0.99)
    }
}

fn customer_body(tag: &str) -> String {
    json!({ "name": format!("Customer {tag}"), "email": format!("{tag}@example.com") }).to_string()
}

/// Drives `clients` concurrent loops for `secs` seconds.
async fn run(
    client: &reqwest::Client,
    target: &Target,
    variant: Variant,
    clients: usize,
    secs: u64,
    run_id: &str,
    replay: Arc<Vec<(String, String)>>,
) -> Result<RunResult, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (client, target, run_id, replay) = (
            client.clone(),
            target.clone(),
            run_id.to_owned(),
            replay.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut completed = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let (key, body) = match variant {
                    Variant::Replay => {
                        let (k, b) = &replay[(c + i * clients) % replay.len()];
                        (Some(k.clone()), b.clone())
                    }
                    Variant::Gated => {
                        let tag = format!("{run_id}-{c}-{i}");
                        (Some(format!("k-{tag}")), customer_body(&tag))
                    }
                    Variant::Plain | Variant::Bare => {
                        (None, customer_body(&format!("{run_id}-{c}-{i}")))
                    }
                };
                i += 1;
                let mut req = client
                    .post(&target.url)
                    .bearer_auth(&target.token)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(k) = &key {
                    req = req.header("idempotency-key", k);
                }
                let t = Instant::now();
                let res = req.send().await;
                let status = match res {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        r.bytes().await.map(|_| s).unwrap_or(0)
                    }
                    Err(_) => 0,
                };
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                if status == target.expect {
                    ok += 1;
                    hist.saturating_record(us);
                    if variant == Variant::Gated {
                        if let Some(k) = key {
                            completed.push((k, body));
                        }
                    }
                } else {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("  {}: unexpected status {status}", variant.name());
                    }
                }
            }
            Ok::<_, BoxError>((ok, errors, hist, completed))
        }));
    }
    let mut out = RunResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
        completed: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, hist, completed) = t.await??;
        out.ok += ok;
        out.errors += errors;
        out.hist.add(&hist)?;
        out.completed.extend(completed);
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// The statements the server issues for one new createCustomer on PostgreSQL, in order:
/// the claim (autocommit), then one transaction with find_existing, the customer insert,
/// the record completion and the `new` audit row (idem `store::claim`,
/// `customers::CreateCustomer`, `store::complete`, `telemetry::insert_audit`).
fn pgbench_script(company: &str) -> String {
    let key = "('pgb-' || :client_id::text || '-' || :r::text)";
    let id = format!("md5('{company}' || {key})::uuid");
    format!(
        r#"\set r random(1, 1000000000000000)
insert into idempotency_keys (tenant, operation, idem_key, fingerprint, state, fence, lease_until, request_id, created_at, expires_at) select '{company}', 'createCustomer', {key}, 'fp', 'in_flight', 1, now() + interval '30 seconds', 'pgbench', now(), now() + interval '1 day' from (select set_config('synchronous_commit', 'off', true)) as relaxed on conflict (tenant, operation, idem_key) do update set fingerprint = excluded.fingerprint, state = 'in_flight', fence = idempotency_keys.fence + 1, lease_until = excluded.lease_until, request_id = excluded.request_id, created_at = excluded.created_at, expires_at = excluded.expires_at, response_status = null, response_body = null, location = null, resource_id = null, completed_at = null where idempotency_keys.expires_at <= now() or (idempotency_keys.state = 'in_flight' and idempotency_keys.lease_until <= now()) returning fence;
begin;
select request_fingerprint, id, name, email, created_at from customers where company_id = '{company}' and id = {id};
insert into customers (company_id, id, name, email, request_fingerprint, created_at) values ('{company}', {id}, 'Customer pgbench', 'pgbench@example.com', 'fp', now());
update idempotency_keys set state = 'completed', response_status = 201, response_body = convert_to('{{"id":"00000000-0000-0000-0000-000000000000","name":"Customer pgbench","email":"pgbench@example.com","created_at":"2026-01-01T00:00:00.000000Z"}}', 'UTF8'), location = '/api/customers/x', resource_id = {id}, completed_at = now(), expires_at = now() + interval '1 day', lease_until = null where tenant = '{company}' and operation = 'createCustomer' and idem_key = {key} and fence = 1 and state = 'in_flight';
insert into idempotent_write_audit_log (id, operation_name, operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, side_effects_executed, error_message, metadata) values (gen_random_uuid(), 'createCustomer', 'high-risk', {id}::text, '{company}', 'pgbench', 'new', 1.0, now(), 'pgbench', {key}, '/api/customers', 'POST', 0, false, null, null);
commit;
"#
    )
}

/// Runs pgbench with the script above at `clients` connections for `secs` seconds and
/// returns its TPS (without initial connection time).
async fn pgbench(url: &str, company: &str, clients: usize, secs: u64) -> Result<f64, BoxError> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("create_customer.sql");
    std::fs::write(&script, pgbench_script(company))?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &clients.to_string(), "-T", &secs.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or("");
    if !failed.is_empty() && !failed.contains(": 0 ") {
        eprintln!("  pgbench: {failed}");
    }
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {text}").into())
}

fn pgbench_available() -> bool {
    std::env::var("BENCH_PGBENCH").map_or(true, |v| v != "0")
        && std::process::Command::new("pgbench")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_ratios(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Row {
    backend: String,
    measure: String,
    a: String,
    b: String,
    ratio: f64,
    rounds: Vec<f64>,
}

/// Runs every round on one backend and returns its table rows.
async fn bench_backend(backend: &str, s: &Settings) -> Result<Vec<Row>, BoxError> {
    let db = BenchDb::new(backend).await?;
    let rows = bench_on(backend, &db, s).await;
    db.drop_now().await?;
    rows
}

async fn bench_on(backend: &str, db: &BenchDb, s: &Settings) -> Result<Vec<Row>, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::build_on(serve_args(&db.url), listener).await?;
    let addr = app.local_addr();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let plain_addr = serve(plain_router(state.clone())).await?;
    let sample = Bytes::from(customer_body("stored"));
    let bare_addr = serve(bare_router(sample)).await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(s.clients.max(1))
        .timeout(Duration::from_secs(30))
        .build()?;
    let company: Value = client
        .post(format!("http://{addr}/admin/companies"))
        .bearer_auth(OPERATOR)
        .json(&json!({ "name": "Bench Co" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let company_id = company["company_id"]
        .as_str()
        .ok_or("no company_id in the company answer")?
        .to_owned();
    let token = company["api_token"]
        .as_str()
        .ok_or("no api_token in the company answer")?
        .to_owned();
    let gated = Target {
        url: format!("http://{addr}/api/customers"),
        token: token.clone(),
        expect: 201,
    };
    let replayed = Target {
        expect: 200,
        ..gated.clone()
    };
    let plain = Target {
        url: format!("http://{plain_addr}/plain/customers"),
        token: token.clone(),
        expect: 201,
    };
    let bare = Target {
        url: format!("http://{bare_addr}/bare"),
        token,
        expect: 200,
    };

    // Warm up connections, caches and the database.
    let none = Arc::new(Vec::new());
    run(
        &client,
        &gated,
        Variant::Gated,
        s.clients,
        1,
        "warm-g",
        none.clone(),
    )
    .await?;
    run(
        &client,
        &plain,
        Variant::Plain,
        s.clients,
        1,
        "warm-p",
        none.clone(),
    )
    .await?;

    // One client: gated vs plain p50, interleaved.
    let (mut p50_ratio, mut p50_g, mut p50_p) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..s.rounds {
        let g = run(
            &client,
            &gated,
            Variant::Gated,
            1,
            s.secs,
            &format!("1g{r}"),
            none.clone(),
        )
        .await?;
        let p = run(
            &client,
            &plain,
            Variant::Plain,
            1,
            s.secs,
            &format!("1p{r}"),
            none.clone(),
        )
        .await?;
        eprintln!(
            "[{backend}] round {r} @1: gated p50 {} µs ({} err), plain p50 {} µs ({} err)",
            g.p50_us(),
            g.errors,
            p.p50_us(),
            p.errors
        );
        p50_ratio.push(g.p50_us() as f64 / p.p50_us().max(1) as f64);
        p50_g.push(g.p50_us() as f64);
        p50_p.push(p.p50_us() as f64);
    }

    // N clients: gated, plain, replay, bare — one run of each per round.
    let n = s.clients;
    let mut rounds: Vec<[RunResult; 4]> = Vec::new();
    let with_pgbench = backend == "postgres" && pgbench_available();
    let mut pgbench_tps = Vec::new();
    for r in 0..s.rounds {
        let g = run(
            &client,
            &gated,
            Variant::Gated,
            n,
            s.secs,
            &format!("ng{r}"),
            none.clone(),
        )
        .await?;
        let p = run(
            &client,
            &plain,
            Variant::Plain,
            n,
            s.secs,
            &format!("np{r}"),
            none.clone(),
        )
        .await?;
        let keys: Vec<_> = g
            .completed
            .iter()
            .rev()
            .take(REPLAY_KEYS)
            .cloned()
            .collect();
        if keys.is_empty() {
            return Err("no gated write completed: nothing to replay".into());
        }
        let rp = run(
            &client,
            &replayed,
            Variant::Replay,
            n,
            s.secs,
            "",
            Arc::new(keys),
        )
        .await?;
        let b = run(&client, &bare, Variant::Bare, n, s.secs, "", none.clone()).await?;
        eprintln!(
            "[{backend}] round {r} @{n}: gated {:.0}/s ({} err), plain {:.0}/s ({} err), replay {:.0}/s ({} err), bare {:.0}/s ({} err)",
            g.rps(), g.errors, p.rps(), p.errors, rp.rps(), rp.errors, b.rps(), b.errors
        );
        if with_pgbench {
            let tps = pgbench(&db.url, &company_id, n, s.secs).await?;
            eprintln!("[{backend}] round {r} @{n}: pgbench {tps:.0} TPS");
            pgbench_tps.push(tps);
        }
        rounds.push([g, p, rp, b]);
    }

    let _ = stop.send(());
    server.await??;

    let pair = |a: usize, b: usize, f: &dyn Fn(&RunResult) -> f64| -> (f64, f64, Vec<f64>) {
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|r| f(&r[a]) / f(&r[b]).max(1e-9))
            .collect();
        (
            median(rounds.iter().map(|r| f(&r[a])).collect()),
            median(rounds.iter().map(|r| f(&r[b])).collect()),
            ratios,
        )
    };
    let rps = |r: &RunResult| r.rps();
    let p50 = |r: &RunResult| r.p50_us() as f64;
    let mut rows = vec![Row {
        backend: backend.to_owned(),
        measure: "(a) p50, 1 client: gated / ungated".to_owned(),
        a: format!("{:.0} µs", median(p50_g)),
        b: format!("{:.0} µs", median(p50_p)),
        ratio: median(p50_ratio.clone()),
        rounds: p50_ratio,
    }];
    let mut add = |measure: String, (a, b, ratios): (f64, f64, Vec<f64>), unit: &str| {
        rows.push(Row {
            backend: backend.to_owned(),
            measure,
            a: format!("{a:.0}{unit}"),
            b: format!("{b:.0}{unit}"),
            ratio: median(ratios.clone()),
            rounds: ratios,
        });
    };
    add(
        format!("(a) throughput, {n} clients: gated / ungated"),
        pair(0, 1, &rps),
        " /s",
    );
    add(
        format!("(a) p50, {n} clients: gated / ungated"),
        pair(0, 1, &p50),
        " µs",
    );
    add(
        format!("(b) throughput, {n} clients: replay / new write"),
        pair(2, 0, &rps),
        " /s",
    );
    add(
        format!("(b) p50, {n} clients: replay / new write"),
        pair(2, 0, &p50),
        " µs",
    );
    add(
        format!("replay ceiling, {n} clients: replay / bare axum"),
        pair(2, 3, &rps),
        " /s",
    );
    if with_pgbench {
        let ratios: Vec<f64> = rounds
            .iter()
            .zip(&pgbench_tps)
            .map(|(r, tps)| r[0].rps() / tps.max(1e-9))
            .collect();
        add(
            format!("new writes, {n} clients: gated / pgbench (same statements)"),
            (
                median(rounds.iter().map(|r| r[0].rps()).collect()),
                median(pgbench_tps),
                ratios,
            ),
            " /s",
        );
    }
    let p99 = |r: &RunResult| r.p99_us() as f64;
    add(
        format!("p99, {n} clients: gated / ungated"),
        pair(0, 1, &p99),
        " µs",
    );
    Ok(rows)
}

fn init_logging() {
    // The server's JSON log events, written nowhere: their cost is part of the write path.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
        .with_writer(std::io::sink)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .try_init();
}

fn main() -> Result<(), BoxError> {
    let s = Settings::from_env()?;
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut rows = Vec::new();
        for backend in &s.backends {
            match backend.as_str() {
                "postgres" if postgres_url().is_none() => {
                    eprintln!("skipped PostgreSQL: DATABASE_URL_TEST is not set");
                }
                "sqlite" | "postgres" => rows.extend(bench_backend(backend, &s).await?),
                other => return Err(format!("unknown backend {other:?}").into()),
            }
        }
        println!(
            "\n{} s per run, {} rounds (interleaved), {} clients, {} cores\n",
            s.secs,
            s.rounds,
            s.clients,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!("| store | measure | A (median) | B (median) | A/B (median) | A/B per round |");
        println!("|---|---|---:|---:|---:|---|");
        for r in rows {
            println!(
                "| {} | {} | {} | {} | {:.2} | {} |",
                r.backend,
                r.measure,
                r.a,
                r.b,
                r.ratio,
                fmt_ratios(&r.rounds)
            );
        }
        Ok(())
    })
}
