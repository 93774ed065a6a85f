//! Building and running the server: `Application::build` binds, connects, migrates and
//! assembles the router; `run_until_stopped` serves until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use http::StatusCode;
use idem::migrate::{MigrationSet, IDEM};
use idem::{Db, Idem, Problem, Registry};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa_axum::routes;

use crate::auth::{operator_token_hash, AuthCache};
use crate::config::ServeArgs;
use crate::domain::workflows::{self, instances};
use crate::domain::{
    admin, bank, customers, employees, inventory, invoices, members, payments, payroll, refunds,
    settings, webhook_secret,
};
use crate::jobs::{self, JobHealth};
use crate::openapi::{self, ApiRouter, OpenApiJson};
use crate::state::{AppState, Shared};
use crate::web::{self, HttpMetrics};
use crate::workflows::worker::{Worker, WorkerConfig};
use crate::workflows::OutboxHandle;
use crate::{health, ops, serve};

fn app_postgres() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations/postgres")
}

fn app_sqlite() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations/sqlite")
}

/// AccuBooks' own migrations.
pub const APP_MIGRATIONS: MigrationSet = MigrationSet {
    postgres: app_postgres,
    sqlite: app_sqlite,
};

/// Applies idem's and AccuBooks' pending migrations.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    IDEM.run(db)
        .await
        .context("failed to apply idem migrations")?;
    APP_MIGRATIONS
        .run(db)
        .await
        .context("failed to apply AccuBooks migrations")?;
    Ok(())
}

/// One migration of either set, and whether the store has it.
#[derive(Debug, Clone)]
pub struct MigrationState {
    /// Version.
    pub version: i64,
    /// What it does.
    pub description: String,
    /// Applied to this store.
    pub applied: bool,
}

/// Every migration of idem and AccuBooks for this store, applied or pending.
pub async fn migration_status(db: &Db) -> anyhow::Result<Vec<MigrationState>> {
    let mut all = IDEM.listed(db).await?;
    all.extend(APP_MIGRATIONS.listed(db).await?);
    Ok(all
        .into_iter()
        .map(|(version, description, applied)| MigrationState {
            version,
            description,
            applied,
        })
        .collect())
}

/// Versions not yet applied.
pub async fn pending_migrations(db: &Db) -> anyhow::Result<Vec<i64>> {
    let mut v = IDEM.pending(db).await?;
    v.extend(APP_MIGRATIONS.pending(db).await?);
    Ok(v)
}

/// Mounts every route through the registry's checks and documents it from its
/// handler's `#[utoipa::path]`; fails when the registry and the routes disagree.
pub fn routes(registry: Registry) -> anyhow::Result<(Router<AppState>, Registry, openapi::Api)> {
    ApiRouter::<AppState>::new(registry)
        .operation(routes!(customers::create_customer))
        .read(routes!(customers::list_customers))
        .read(routes!(customers::get_customer))
        .operation(routes!(employees::create_employee))
        .read(routes!(employees::list_employees))
        .read(routes!(employees::get_employee))
        .operation(routes!(settings::update_settings))
        .read(routes!(settings::get_settings))
        .operation(routes!(members::grant_access))
        .read(routes!(members::list_members))
        .read(routes!(members::get_member))
        .operation(routes!(invoices::create_invoice))
        .operation(routes!(invoices::finalize_invoice))
        .read(routes!(invoices::list_invoices))
        .read(routes!(invoices::get_invoice))
        .operation(routes!(payments::create_payment))
        .read(routes!(payments::list_payments))
        .read(routes!(payments::get_payment))
        .operation(routes!(refunds::create_refund))
        .read(routes!(refunds::list_refunds))
        .read(routes!(refunds::get_refund))
        .operation(routes!(payroll::execute_payroll))
        .read(routes!(payroll::list_payroll_runs))
        .read(routes!(payroll::get_payroll_run))
        .operation(routes!(bank::create_bank_transaction))
        .operation(routes!(bank::reconcile_ledger))
        .read(routes!(bank::list_bank_transactions))
        .read(routes!(bank::get_bank_transaction))
        .operation(routes!(inventory::create_item))
        .operation(routes!(inventory::adjust_item))
        .read(routes!(inventory::list_items))
        .read(routes!(inventory::get_item))
        .operation(routes!(workflows::create_workflow))
        .operation(routes!(workflows::update_workflow))
        .operation(routes!(instances::trigger_workflow))
        .read(routes!(workflows::list_workflows))
        .read(routes!(workflows::get_workflow))
        .read(routes!(instances::list_instances))
        .read(routes!(instances::get_instance))
        .operation(routes!(webhook_secret::rotate_secret))
        .read(routes!(webhook_secret::get_secret))
        .exempt(routes!(admin::create_company))
        .exempt(routes!(admin::issue_token))
        .read(routes!(health::system_health))
        .read(routes!(health::healthz))
        .read(routes!(health::readyz))
        .read(routes!(health::metrics))
        .read(routes!(openapi::openapi_json))
        .finish()
        .context("the mutation registry does not match the router")
}

/// The OpenAPI document the server built with `registry` serves.
pub fn document(registry: Registry) -> anyhow::Result<OpenApiJson> {
    let (_, registry, api) = routes(registry)?;
    OpenApiJson::build(&registry, &api).context("failed to serialize the OpenAPI document")
}

/// Builds the router over `state`; fails when the registry and the routes disagree.
pub fn router(state: AppState, registry: Registry) -> anyhow::Result<Router> {
    let (api, registry, described) = routes(registry)?;
    let document = OpenApiJson::build(&registry, &described)
        .context("failed to serialize the OpenAPI document")?;
    Ok(with_middleware(
        api.layer(Extension(document))
            .fallback(web::not_found)
            .method_not_allowed_fallback(web::method_not_allowed),
        state,
    ))
}

/// The server's middleware around `routes`, outermost last: request id, deadline, body
/// time limit, HTTP metrics, the in-flight cap and the panic catcher.
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let deadline = state.config.lease + state.config.max_wait;
    let body_timeout = state.config.limits.body_timeout;
    let slots = Arc::new(Semaphore::new(
        usize::try_from(state.config.limits.max_in_flight).unwrap_or(usize::MAX),
    ));
    // The metrics alone, behind one `Arc`: a layer holding the whole state would clone
    // it (some twenty reference counts and the shutdown token's lock) for every request.
    let http_metrics = Arc::new(state.http_metrics.clone());
    routes
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            serve::limit_in_flight(slots.clone(), req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            web::track_http(http_metrics.clone(), req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            serve::limit_body_time(body_timeout, req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            request_deadline(deadline, req, next)
        }))
        .layer(middleware::from_fn(idem::http::request_id_layer))
        .with_state(state)
}

/// A handler that panicked: logged with its message, answered with the opaque
/// `500 internal` problem document instead of a dropped connection. (A write that
/// panics inside the engine is already its own task and answers the same way.)
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred",
    )
    .into_response()
}

async fn request_deadline(deadline: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(res) => res,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the request exceeded its deadline; its outcome is unknown: retry with the same Idempotency-Key",
        )
        .retry_after(5)
        .into_response(),
    }
}

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Connects, migrates (or checks the schema), binds `args.bind` and builds the router.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("failed to bind {}", args.bind))?;
        Self::build_on(args, listener).await
    }

    /// As [`Application::build`], on an already bound listener (tests bind port 0).
    pub async fn build_on(args: ServeArgs, listener: TcpListener) -> anyhow::Result<Self> {
        args.validate().map_err(anyhow::Error::msg)?;
        let mut connect = idem::db::ConnectOptions::default();
        connect.pool_size = args.pool_size;
        connect.acquire_timeout = STORE_WAIT;
        connect.idle_in_transaction_timeout = Some(args.lease);
        // A statement running past the lease would outlive its claim anyway.
        connect.statement_timeout = Some(args.lease);
        connect.lock_timeout = Some(STORE_WAIT);
        connect.create_if_missing = true;
        connect.transaction_pooler = args.db.transaction_pooler;
        let db = Db::connect(&args.db.database_url, &connect)
            .await
            .with_context(|| format!("failed to connect to {}", redact(&args.db.database_url)))?;
        if args.should_migrate() {
            migrate(&db).await?;
        } else {
            let pending = pending_migrations(&db).await?;
            anyhow::ensure!(
                pending.is_empty(),
                "the database schema is outdated (pending migrations {pending:?}); run `accubooks migrate` (against PostgreSQL itself, not a transaction pooler) or start without --no-migrate"
            );
        }
        let (operator_hash, generated) = operator_token_hash(&db, args.admin_token.as_deref())
            .await
            .context("failed to set up the operator token")?;
        let local = listener.local_addr()?;
        if let Some(token) = generated {
            eprintln!(
                "\nAccuBooks generated an operator token. It is shown once and only its hash is stored:\n\n    {token}\n\nCreate a company:\n\n    curl -s -X POST http://{local}/admin/companies -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"name\":\"Acme\"}}'\n"
            );
        }

        let shutdown = CancellationToken::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let http_metrics = HttpMetrics::register(&mut registry);
        let outbox = OutboxHandle::new(&mut registry);
        let idem = Idem::builder(db.clone())
            .tenancy(ops::TENANCY)
            .lease(args.lease)
            .key_ttl(args.key_ttl)
            .max_wait(args.max_wait)
            // The in-flight cap bounds requests; this bounds their executions, which
            // outlive requests whose clients left.
            .max_executions(usize::try_from(args.limits.max_in_flight).unwrap_or(usize::MAX))
            .audit_queue(
                65_536,
                usize::try_from(args.limits.audit_queue_bytes).unwrap_or(usize::MAX),
            )
            .emitter(outbox.emitter())
            .shutdown_token(shutdown.clone())
            .operations(&ops::registry())
            .metrics(&mut registry)
            .build();
        let schedule = jobs::parse_schedule(&args.prune_schedule).map_err(anyhow::Error::msg)?;
        let worker = Worker::new(
            db.clone(),
            WorkerConfig {
                max_attempts: args.webhook_max_attempts,
                backoff: args.webhook_backoff,
                timeout: args.webhook_timeout,
                lease: args.webhook_lease,
                allow_private: args.webhook_allow_private,
                concurrency: 16,
            },
            outbox.clone(),
        );
        let state = AppState::new(Shared {
            db,
            idem,
            config: args,
            metrics: registry,
            auth: AuthCache::default(),
            operator_hash,
            shutdown: shutdown.clone(),
            jobs: JobHealth::default(),
            http_metrics,
            outbox,
        });
        let router = router(state.clone(), ops::registry())?;
        let tasks = vec![
            tokio::spawn(jobs::stats_loop(state.clone(), shutdown.clone())),
            tokio::spawn(jobs::prune_loop(state.clone(), schedule, shutdown.clone())),
            tokio::spawn(jobs::partitions_loop(state.clone(), shutdown.clone())),
            // Stops claiming at the signal; finishes or hands back its instances within
            // its drain grace, inside the background work's share of the reserve.
            tokio::spawn(worker.run(shutdown.clone())),
        ];
        Ok(Self {
            listener,
            router,
            state,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The application state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` completes; then stops accepting, lets parked waiters go
    /// (503), and within [`DRAIN`] of the signal, whatever the store does: drains
    /// in-flight requests, waits for writes whose clients left, stops the jobs and the
    /// workflow worker (which finishes or hands back its claimed instances), flushes
    /// the audit queue and closes the pool. What it has to abandon, it logs.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            tasks,
        } = self;
        let shutdown = state.shutdown.clone();
        let trigger = shutdown.clone();
        let graceful = async move {
            signal.await;
            tracing::info!("shutdown requested: draining in-flight requests");
            trigger.cancel();
        };
        let signalled = tokio::spawn(graceful);
        let server = serve::serve(listener, router, &state.config.limits, shutdown.clone());
        let requests_drained = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN - DRAIN_RESERVE).await;
        };
        tokio::select! {
            () = server => {}
            () = requests_drained => {
                tracing::warn!("drain deadline passed; abandoning the requests still open");
            }
        }
        signalled.abort();
        // The reserve bounds everything after the requests, whatever the store does.
        let deadline = tokio::time::Instant::now() + DRAIN_RESERVE;
        shutdown.cancel();
        stop_background_work(&state, tasks, deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The contract's bound on waiting for the store: a connection, SQLite's writer slot,
/// a row lock. Past it a request gets `503` with `Retry-After: 5`.
const STORE_WAIT: Duration = Duration::from_secs(5);

/// How long a graceful shutdown may take from the signal to the exit.
pub const DRAIN: Duration = Duration::from_secs(30);
/// The part of [`DRAIN`] kept for the work after the requests: detached writes, jobs,
/// the audit flush and closing the pool.
const DRAIN_RESERVE: Duration = Duration::from_secs(5);

/// Lets detached writes and jobs finish, flushes the audit queue and closes the pool,
/// each step bounded so that the whole ends by `deadline`.
async fn stop_background_work(
    state: &AppState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    deadline: tokio::time::Instant,
) {
    let step = |share: u32| deadline - DRAIN_RESERVE * share / 5;
    let engine = &state.idem;
    if tokio::time::timeout_at(step(3), engine.drain())
        .await
        .is_err()
    {
        tracing::warn!(
            running = engine.executions_running(),
            "writes still running at the drain deadline were abandoned; their keys free at their lease"
        );
    }
    for task in tasks {
        // Jobs return at their next cancellable sleep; their database work is detached.
        let abort = task.abort_handle();
        if tokio::time::timeout_at(step(2), task).await.is_err() {
            abort.abort();
        }
    }
    if tokio::time::timeout_at(step(1), engine.finish_audit())
        .await
        .is_err()
    {
        let metrics = engine.metrics();
        let lost = u64::try_from(metrics.audit_queue_depth.get()).unwrap_or(0);
        metrics.audit_dropped.inc_by(lost);
        tracing::error!(
            rows = lost,
            "audit rows still queued at the drain deadline were dropped"
        );
    }
    if tokio::time::timeout_at(deadline, state.db.close())
        .await
        .is_err()
    {
        tracing::warn!("connections still in use at the drain deadline were abandoned");
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_answered_with_the_internal_problem() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app: Router = Router::new()
            .route("/boom", axum::routing::get(boom))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_response,
            ));
        let res = app
            .oneshot(
                http::Request::get("/boom")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            res.headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["code"], "internal");
        assert!(
            !String::from_utf8_lossy(&body).contains("boom"),
            "the panic stays in the log"
        );
    }
}
