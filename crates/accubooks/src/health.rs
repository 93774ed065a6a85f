//! Liveness, readiness, metrics and the operator health page.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use idem::hygiene::HealthStatus;
use serde_json::json;

use crate::auth::Operator;
use crate::error::AppResult;
use crate::state::AppState;
use crate::web::ok_json;

/// Handles `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    ok_json(&json!({"status": "ok"}))
}

/// How long a health probe waits for the store to accept a write.
const WRITE_PROBE: Duration = Duration::from_secs(2);

/// Handles `GET /readyz`: the database answers and a write can start (on SQLite: the
/// writer slot and the file's write lock can be had).
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.check_writable(WRITE_PROBE).await {
        Ok(()) => ok_json(&json!({"status": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: a write cannot start");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::CONTENT_TYPE, "application/json")],
                json!({"status": "error", "database": "unwritable"}).to_string(),
            )
                .into_response()
        }
    }
}

/// Handles `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus does),
/// else the Prometheus text format 0.0.4.
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

/// Handles `GET /admin/system/health`.
pub async fn system_health(_: Operator, State(state): State<AppState>) -> AppResult<Response> {
    let started = std::time::Instant::now();
    let db_ok = state.db.check_writable(WRITE_PROBE).await.is_ok();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let database = json!({
        "status": if db_ok { "ok" } else { "error" },
        "writable": db_ok,
        "backend": match state.db.backend() { idem::Backend::Postgres => "postgres", idem::Backend::Sqlite => "sqlite" },
        "latency_ms": latency_ms,
        "pool": {
            "in_use": state.db.connections_in_use(),
            "open": state.db.connections_open(),
            "max": state.db.max_connections(),
        },
    });
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
    let idempotency = match stats {
        Some(s) => {
            overall = worst(overall, s.status());
            json!({
                "status": label(s.status()),
                "total_keys": s.total_keys,
                "expired_pending": s.expired_pending,
                "pending_requests": s.pending_requests,
                "oldest_pending_age_minutes": s.oldest_pending_age_minutes,
                "oldest_expired_age_hours": s.oldest_expired_age_hours,
            })
        }
        None => {
            overall = HealthStatus::Error;
            json!({"status": "error", "total_keys": null, "expired_pending": null, "pending_requests": null,
                   "oldest_pending_age_minutes": null, "oldest_expired_age_hours": null})
        }
    };
    let prune = state.jobs.prune.lock().clone();
    let prune_status = if prune.last_error.is_some() {
        HealthStatus::Degraded
    } else {
        HealthStatus::Ok
    };
    overall = worst(overall, prune_status);
    let m = state.engine().metrics();
    let dropped = m.audit_dropped.get();
    let audit_status = if dropped > 0 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Ok
    };
    overall = worst(overall, audit_status);
    Ok(ok_json(&json!({
        "status": label(overall),
        "components": {
            "database": database,
            "idempotency": idempotency,
            "prune_job": {
                "status": label(prune_status),
                "schedule": prune.schedule,
                "last_run_at": prune.last_run_at,
                "last_success_at": prune.last_success_at,
                "last_deleted": prune.last_deleted,
                "last_error": prune.last_error,
                "next_run_at": prune.next_run_at,
            },
            "audit_log": {
                "status": label(audit_status),
                "queue_depth": m.audit_queue_depth.get(),
                "rows_written": m.audit_written.get(),
                "rows_dropped": dropped,
            },
        },
    })))
}
