//! Background jobs: key-table health numbers and the scheduled prune.
//!
//! Invariants: every sleep is cancellable by the shutdown token; one step function per
//! job serves both its loop and the tests; a failed run backs off and is reported in
//! the health endpoint and metrics, never silently.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use idem::hygiene::{self, KeyStats, PruneOutcome};
use idem::retention::{self, PartitionOutcome};
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Parses a 5-field cron expression (UTC).
pub fn parse_schedule(s: &str) -> Result<Cron, String> {
    if s.split_whitespace().count() != 5 {
        return Err("expected 5 fields: minute hour day-of-month month day-of-week".into());
    }
    s.parse::<Cron>().map_err(|e| e.to_string())
}

/// The prune job's last known state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneStatus {
    /// The schedule.
    pub schedule: String,
    /// When it last ran.
    pub last_run_at: Option<String>,
    /// When it last succeeded.
    pub last_success_at: Option<String>,
    /// Records deleted by the last successful run.
    pub last_deleted: Option<u64>,
    /// The last failure, if the last run failed.
    pub last_error: Option<String>,
    /// When it runs next.
    pub next_run_at: Option<String>,
}

/// Shared job state for the health endpoint.
#[derive(Debug, Default)]
pub struct JobHealth {
    /// Prune status.
    pub prune: Mutex<PruneStatus>,
    /// Last key-table numbers and when they were read.
    pub stats: Mutex<Option<(KeyStats, DateTime<Utc>)>>,
}

fn render(t: DateTime<Utc>) -> String {
    idem::Ts::from_chrono(t).render()
}

/// Reads the key-table numbers once, publishing them as gauges.
pub async fn refresh_stats(state: &AppState) -> Result<KeyStats, sqlx::Error> {
    let stats = hygiene::stats(&state.db).await?;
    stats.publish(state.idem.metrics());
    *state.jobs.stats.lock() = Some((stats, Utc::now()));
    Ok(stats)
}

/// Runs the prune once and records the outcome.
pub async fn prune_once(state: &AppState) -> Result<PruneOutcome, sqlx::Error> {
    let now = Utc::now();
    let result = hygiene::prune(&state.db).await;
    let m = state.idem.metrics();
    let mut status = state.jobs.prune.lock();
    status.last_run_at = Some(render(now));
    match &result {
        Ok(PruneOutcome::Pruned(n)) => {
            status.last_success_at = Some(render(Utc::now()));
            status.last_deleted = Some(*n);
            status.last_error = None;
            m.prune_deleted.inc_by(*n);
            m.prune_runs.get_or_create(&[("outcome", "success")]).inc();
            m.prune_last_success.set(Utc::now().timestamp() as f64);
            tracing::info!(deleted = n, "idempotency records pruned");
        }
        Ok(PruneOutcome::Skipped) => {
            m.prune_runs.get_or_create(&[("outcome", "skipped")]).inc();
        }
        Err(e) => {
            status.last_error = Some(e.to_string());
            m.prune_runs.get_or_create(&[("outcome", "error")]).inc();
            tracing::error!(error = %e, "idempotency prune failed");
        }
    }
    result
}

/// Refreshes the key-table numbers every 15 s until shutdown.
pub async fn stats_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        if let Err(e) = refresh_stats(&state).await {
            tracing::warn!(error = %e, "could not read idempotency key stats");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}

/// Months of audit partitions kept ahead of the current one.
pub const AUDIT_MONTHS_AHEAD: u32 = 3;

/// Creates the audit log's monthly partitions ahead (PostgreSQL; one node at a time),
/// logging what it did; a row in the default partition is reported as an error.
pub async fn ensure_partitions_once(state: &AppState) -> Result<PartitionOutcome, sqlx::Error> {
    let result =
        retention::ensure_audit_partitions(&state.db, AUDIT_MONTHS_AHEAD, idem::Ts::now()).await;
    match &result {
        Ok(PartitionOutcome::Ensured {
            created,
            default_rows,
        }) => {
            if !created.is_empty() {
                tracing::info!(partitions = ?created, "audit partitions created");
            }
            if *default_rows > 0 {
                tracing::error!(
                    rows = default_rows,
                    "audit rows sit in the default partition: a month had no partition in time"
                );
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "audit partitions could not be created"),
    }
    result
}

/// Ensures the audit partitions at start-up and then daily (an hour later after a
/// failure) until shutdown.
pub async fn partitions_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        let wait = match ensure_partitions_once(&state).await {
            Ok(_) => Duration::from_secs(24 * 3600),
            Err(_) => Duration::from_secs(3600),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs the prune on its schedule until shutdown; retries a failed run after a minute.
pub async fn prune_loop(state: AppState, schedule: Cron, shutdown: CancellationToken) {
    state.jobs.prune.lock().schedule = schedule.as_str().to_owned();
    let mut retry_at: Option<DateTime<Utc>> = None;
    loop {
        let now = Utc::now();
        let next = match (retry_at, schedule.find_next_occurrence(&now, false)) {
            (Some(r), Ok(n)) => r.min(n),
            (Some(r), Err(_)) => r,
            (None, Ok(n)) => n,
            (None, Err(e)) => {
                tracing::error!(error = %e, "prune schedule has no next run; prune job stopped");
                return;
            }
        };
        state.jobs.prune.lock().next_run_at = Some(render(next));
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        retry_at = match prune_once(&state).await {
            Ok(_) => None,
            Err(_) => Some(Utc::now() + chrono::Duration::minutes(1)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_must_have_five_fields() {
        assert!(parse_schedule("30 3 * * *").is_ok());
        assert!(parse_schedule("0 30 3 * * *").is_err());
        assert!(parse_schedule("not a cron").is_err());
    }
}
