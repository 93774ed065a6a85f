//! Liveness, readiness, metrics and the operator health page.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use idem::hygiene::HealthStatus;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Operator;
use crate::error::AppResult;
use crate::state::AppState;
use crate::web::ok_json;

/// The body of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(schema_with = status_schema)]
    status: &'static str,
    /// `unwritable` on a 503 of `/readyz`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'static str>,
}

fn status_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(&["ok", "error"])
}

const OK: Status = Status {
    status: "ok",
    database: None,
};

/// Handles `GET /healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "Health",
    summary = "The process is alive",
    security(()),
    responses((status = 200, description = "Alive.", body = Status))
)]
pub async fn healthz() -> Response {
    ok_json(&OK)
}

/// How long a health probe waits for the store to accept a write.
const WRITE_PROBE: Duration = Duration::from_secs(2);

/// Handles `GET /readyz`: the database answers and a write can start (on SQLite: the
/// writer slot and the file's write lock can be had).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "Health",
    summary = "A write can start (the database answers; on SQLite the writer slot and write lock are free)",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = Status),
        (status = 503, description = "A write cannot start within 2 s.", body = Status)
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.check_writable(WRITE_PROBE).await {
        Ok(()) => ok_json(&OK),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: a write cannot start");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::CONTENT_TYPE, "application/json")],
                Json(Status {
                    status: "error",
                    database: Some("unwritable"),
                }),
            )
                .into_response()
        }
    }
}

/// Handles `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus does),
/// else the Prometheus text format 0.0.4.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "Health",
    summary = "Prometheus metrics",
    security(()),
    responses((
        status = 200,
        description = "OpenMetrics when the Accept header asks for it, else Prometheus text format 0.0.4 (idempotent_writes_total, idempotency_keys_total, pool, HTTP and audit-queue series…).",
        content((String = "application/openmetrics-text"), (String = "text/plain"))
    ))
)]
pub async fn metrics(State(state): State<AppState>, headers: http::HeaderMap) -> Response {
    state.http_metrics.publish_pool(&state.db);
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &state.metrics) {
        tracing::error!(error = %e, "metrics encoding failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = if crate::exposition::wants_openmetrics(accept) {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            crate::exposition::to_prometheus_text(&body),
        )
    };
    ([(http::header::CONTENT_TYPE, content_type)], body).into_response()
}

fn worst(a: HealthStatus, b: HealthStatus) -> HealthStatus {
    use HealthStatus::*;
    match (a, b) {
        (Error, _) | (_, Error) => Error,
        (Degraded, _) | (_, Degraded) => Degraded,
        _ => Ok,
    }
}

fn label(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Ok => "ok",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Error => "error",
    }
}

/// `ok`, `degraded` or `error`.
fn health_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(&["ok", "degraded", "error"])
}

/// The operator health page: the overall status is the worst of the components'.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemHealth {
    #[schema(schema_with = health_schema)]
    status: &'static str,
    components: HealthComponents,
}

/// Per component.
#[derive(Debug, Serialize, ToSchema)]
struct HealthComponents {
    database: DatabaseHealth,
    idempotency: IdempotencyHealth,
    prune_job: PruneHealth,
    audit_log: AuditHealth,
}

/// Whether a write can start (`writable`), the probe's latency and the pool.
#[derive(Debug, Serialize, ToSchema)]
struct DatabaseHealth {
    #[schema(schema_with = health_schema)]
    status: &'static str,
    writable: bool,
    #[schema(schema_with = backend_schema)]
    backend: &'static str,
    latency_ms: f64,
    pool: PoolHealth,
}

fn backend_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(&["postgres", "sqlite"])
}

/// Connections of the pool.
#[derive(Debug, Serialize, ToSchema)]
struct PoolHealth {
    in_use: u32,
    open: u32,
    max: u32,
}

/// The idempotency store's numbers (null when they could not be read).
#[derive(Debug, Serialize, ToSchema)]
struct IdempotencyHealth {
    #[schema(schema_with = health_schema)]
    status: &'static str,
    #[schema(required = true)]
    total_keys: Option<i64>,
    #[schema(required = true)]
    expired_pending: Option<i64>,
    #[schema(required = true)]
    pending_requests: Option<i64>,
    #[schema(required = true)]
    oldest_pending_age_minutes: Option<f64>,
    #[schema(required = true)]
    oldest_expired_age_hours: Option<f64>,
}

/// The scheduled prune of expired records.
#[derive(Debug, Serialize, ToSchema)]
struct PruneHealth {
    #[schema(schema_with = health_schema)]
    status: &'static str,
    schedule: String,
    #[schema(required = true, value_type = Option<idem::Ts>)]
    last_run_at: Option<String>,
    #[schema(required = true, value_type = Option<idem::Ts>)]
    last_success_at: Option<String>,
    #[schema(required = true)]
    last_deleted: Option<u64>,
    #[schema(required = true)]
    last_error: Option<String>,
    #[schema(required = true, value_type = Option<idem::Ts>)]
    next_run_at: Option<String>,
}

/// The audit queue (`degraded` once rows were dropped).
#[derive(Debug, Serialize, ToSchema)]
struct AuditHealth {
    #[schema(schema_with = health_schema)]
    status: &'static str,
    queue_depth: i64,
    rows_written: u64,
    rows_dropped: u64,
}

/// Handles `GET /admin/system/health`.
#[utoipa::path(
    get,
    path = "/admin/system/health",
    operation_id = "getSystemHealth",
    tag = "Operator",
    summary = "System health: database, idempotency store, prune job, audit log",
    security(("operator" = [])),
    responses((status = 200, description = "Component health; idempotency is `error` when expired_pending > 1000 or the oldest expired record is older than 48 h, `degraded` when expired_pending > 100 or the oldest pending claim is older than 30 min.", body = SystemHealth))
)]
pub async fn system_health(_: Operator, State(state): State<AppState>) -> AppResult<Response> {
    let started = std::time::Instant::now();
    let db_ok = state.db.check_writable(WRITE_PROBE).await.is_ok();
    let database = DatabaseHealth {
        status: if db_ok { "ok" } else { "error" },
        writable: db_ok,
        backend: match state.db.backend() {
            idem::Backend::Postgres => "postgres",
            idem::Backend::Sqlite => "sqlite",
        },
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        pool: PoolHealth {
            in_use: state.db.connections_in_use(),
            open: state.db.connections_open(),
            max: state.db.max_connections(),
        },
    };
    let mut overall = if db_ok {
        HealthStatus::Ok
    } else {
        HealthStatus::Error
    };
    let stats = if db_ok {
        crate::jobs::refresh_stats(&state).await.ok()
    } else {
        state.jobs.stats.lock().map(|(s, _)| s)
    };
    let status = stats.as_ref().map_or(HealthStatus::Error, |s| s.status());
    overall = worst(overall, status);
    let idempotency = IdempotencyHealth {
        status: label(status),
        total_keys: stats.as_ref().map(|s| s.total_keys),
        expired_pending: stats.as_ref().map(|s| s.expired_pending),
        pending_requests: stats.as_ref().map(|s| s.pending_requests),
        oldest_pending_age_minutes: stats.as_ref().map(|s| s.oldest_pending_age_minutes),
        oldest_expired_age_hours: stats.as_ref().map(|s| s.oldest_expired_age_hours),
    };
    let prune = state.jobs.prune.lock().clone();
    let prune_status = if prune.last_error.is_some() {
        HealthStatus::Degraded
    } else {
        HealthStatus::Ok
    };
    overall = worst(overall, prune_status);
    let m = state.idem.metrics();
    let dropped = m.audit_dropped.get();
    let audit_status = if dropped > 0 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Ok
    };
    overall = worst(overall, audit_status);
    Ok(ok_json(&SystemHealth {
        status: label(overall),
        components: HealthComponents {
            database,
            idempotency,
            prune_job: PruneHealth {
                status: label(prune_status),
                schedule: prune.schedule,
                last_run_at: prune.last_run_at,
                last_success_at: prune.last_success_at,
                last_deleted: prune.last_deleted,
                last_error: prune.last_error,
                next_run_at: prune.next_run_at,
            },
            audit_log: AuditHealth {
                status: label(audit_status),
                queue_depth: m.audit_queue_depth.get(),
                rows_written: m.audit_written.get(),
                rows_dropped: dropped,
            },
        },
    }))
}
