//! `accubooks report weekly`: the seeds' weekly KPI report from the audit log, per
//! operation, with PASS/FAIL against the seeds' thresholds.
//!
//! Thresholds: failure rate < 1 %, replay rate < 20 %, p95 duration < 500 ms. The p95 is
//! the nearest-rank percentile of `execution_duration_ms`, read by one ordered query per
//! operation, so it is the same figure on both stores.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use idem::{on_db, Db, Ts};
use serde_json::json;
use sqlx::FromRow;

use super::output::{fail, Report};

/// Failure rate at or above this fails the week (percent).
const MAX_FAILURE_PCT: f64 = 1.0;
/// Replay rate at or above this fails the week (percent).
const MAX_REPLAY_PCT: f64 = 20.0;
/// A p95 at or above this fails the week (milliseconds).
const MAX_P95_MS: f64 = 500.0;

/// Reports.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The weekly KPI report: per operation and overall, PASS or FAIL.
    Weekly(WeeklyArgs),
}

/// The window of the report.
#[derive(Debug, Args)]
pub struct WeeklyArgs {
    /// How far back (`7d` is a week).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
}

#[derive(FromRow)]
struct Counts {
    operation_name: String,
    total: i64,
    replayed: Option<i64>,
    failed: Option<i64>,
}

/// Runs a `report` subcommand against `db`.
pub async fn run(db: &Db, cmd: ReportCommand, json: bool) -> ExitCode {
    let ReportCommand::Weekly(args) = cmd;
    match weekly(db, args.since).await {
        Ok(r) => r.print(json),
        Err(e) => fail(format!("the store refused the query: {e}")),
    }
}

fn pct(part: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / total as f64).round() / 100.0
    }
}

async fn p95(db: &Db, operation: Option<&str>, since: Ts, total: i64) -> Result<f64, sqlx::Error> {
    if total == 0 {
        return Ok(0.0);
    }
    // Nearest rank: the ceil(0.95 n)-th smallest value.
    let offset = ((total as f64 * 0.95).ceil() as i64 - 1).max(0);
    let v: Option<f64> = on_db!(db, |c| {
        sqlx::query_scalar(
        "select cast(execution_duration_ms as double precision) from idempotent_write_audit_log \
         where timestamp >= $1 and ($2 is null or operation_name = $2) \
         order by execution_duration_ms limit 1 offset $3"
    )
    .bind(since)
    .bind(operation)
    .bind(offset)
    .fetch_optional(c)
    .await
    })?;
    Ok(v.unwrap_or(0.0))
}

async fn weekly(db: &Db, window: Duration) -> Result<Report, sqlx::Error> {
    let since = Ts::now().minus(window);
    let rows = on_db!(db, |c| sqlx::query_as::<_, Counts>(
        "select operation_name, count(*) as total, \
                sum(case when status = 'replayed' then 1 else 0 end) as replayed, \
                sum(case when status = 'failed' then 1 else 0 end) as failed \
         from idempotent_write_audit_log where timestamp >= $1 \
         group by operation_name order by operation_name"
    )
    .bind(since)
    .fetch_all(c)
    .await)?;
    let mut r = Report::new(
        format!(
            "Weekly KPI report, last {} (failure < {MAX_FAILURE_PCT}%, replay < {MAX_REPLAY_PCT}%, p95 < {MAX_P95_MS} ms)",
            humantime::format_duration(window)
        ),
        &["operation", "requests", "replay_pct", "failure_pct", "p95_ms", "verdict"],
    );
    let (mut all, mut all_replayed, mut all_failed) = (0, 0, 0);
    let mut lines = Vec::new();
    for row in rows {
        let (replayed, failed) = (row.replayed.unwrap_or(0), row.failed.unwrap_or(0));
        all += row.total;
        all_replayed += replayed;
        all_failed += failed;
        let p = p95(db, Some(&row.operation_name), since, row.total).await?;
        lines.push((row.operation_name, row.total, replayed, failed, p));
    }
    let overall = p95(db, None, since, all).await?;
    lines.push((
        "all operations".to_owned(),
        all,
        all_replayed,
        all_failed,
        overall,
    ));
    for (name, total, replayed, failed, p) in lines {
        let (rp, fp) = (pct(replayed, total), pct(failed, total));
        let pass = fp < MAX_FAILURE_PCT && rp < MAX_REPLAY_PCT && p < MAX_P95_MS;
        let row = vec![
            json!(name),
            json!(total),
            json!(rp),
            json!(fp),
            json!((p * 100.0).round() / 100.0),
            json!(if pass { "PASS" } else { "FAIL" }),
        ];
        if pass {
            r.row(row);
        } else {
            r.finding(row);
        }
    }
    Ok(r)
}
