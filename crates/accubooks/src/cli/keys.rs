//! `accubooks keys …`: the idempotency key table seen by an operator: health numbers,
//! one record, and the prune.
//!
//! Invariants: these commands read or delete only what the server's own jobs would
//! (`keys prune` is the scheduled prune run now); the one exception, `keys release`,
//! ends the session of an executor that has sat idle in its transaction through the
//! whole observation, which rolls its write back (it commits nothing half-way), and
//! audits that it did.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use idem::{hygiene, on_db, on_tx, Db, IdempotencyKey, Scope, Ts};
use serde_json::{json, Value};

use super::output::{fail, Report};

/// Key-table commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Health numbers of the key table (the figures of `/admin/system/health`).
    Stats,
    /// One key: completed, expired or executing (and by which session), its fingerprint
    /// and stored response.
    Show(ShowArgs),
    /// Deletes expired records now (the scheduled prune, run by hand).
    Prune(PruneArgs),
    /// Frees a key whose executor is stuck, before its lease ends (PostgreSQL): the
    /// executor's session is watched first, and ended only if it sat idle in its
    /// transaction the whole time (a live executor runs statements); ending it rolls
    /// the write back and the key executes on its next retry. Audited.
    Release(ReleaseArgs),
}

/// Which claim to release, and how long to watch it first.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The record.
    #[command(flatten)]
    pub record: ShowArgs,
    /// How long to watch the executor's session before ending it: a session that ran
    /// any statement meanwhile is alive and is left alone.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub observe: std::time::Duration,
    /// Confirms the release (without it nothing is changed).
    #[arg(long)]
    pub yes: bool,
}

/// Which record.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The company (tenant) id.
    #[arg(long)]
    pub company: uuid::Uuid,
    /// The operation name, as registered (`createPayment`).
    #[arg(long)]
    pub operation: String,
    /// The `Idempotency-Key` as the client sent it.
    #[arg(long)]
    pub key: String,
}

/// Prune options.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Count what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a `keys` subcommand against `db`.
pub async fn run(db: &Db, cmd: KeysCommand, json: bool) -> ExitCode {
    let report = match cmd {
        KeysCommand::Stats => stats(db).await,
        KeysCommand::Show(args) => {
            let Some(operation) = super::registered_operation(&args.operation) else {
                return fail(super::unknown_operation(&args.operation));
            };
            match show(db, &args, operation).await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => return fail("no record for that company, operation and key"),
                Err(e) => Err(e),
            }
        }
        KeysCommand::Prune(args) => prune(db, args.dry_run).await,
        KeysCommand::Release(args) => return release(db, &args, json).await,
    };
    match report {
        Ok(r) => r.print(json),
        Err(e) => fail(format!("the store refused the query: {e}")),
    }
}

async fn stats(db: &Db) -> Result<Report, sqlx::Error> {
    let s = hygiene::stats(db).await?;
    let status = match s.status() {
        hygiene::HealthStatus::Ok => "ok",
        hygiene::HealthStatus::Degraded => "degraded",
        hygiene::HealthStatus::Error => "error",
    };
    let mut r = Report::new("Idempotency keys", &["figure", "value"]);
    let figures = [
        ("status", json!(status)),
        ("total_keys", json!(s.total_keys)),
        ("expired_pending", json!(s.expired_pending)),
        ("pending_requests", json!(s.pending_requests)),
        (
            "oldest_pending_age_minutes",
            json!(s.oldest_pending_age_minutes),
        ),
        (
            "oldest_expired_age_hours",
            json!(s.oldest_expired_age_hours),
        ),
    ];
    let object: serde_json::Map<String, Value> = figures
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    for (k, v) in figures {
        if k == "status" && status != "ok" {
            r.finding(vec![json!(k), v]);
        } else {
            r.row(vec![json!(k), v]);
        }
    }
    Ok(r.with_json(Value::Object(object)))
}

async fn show(
    db: &Db,
    args: &ShowArgs,
    operation: &'static str,
) -> Result<Option<Report>, sqlx::Error> {
    let Ok(key) = IdempotencyKey::parse(args.key.as_bytes()) else {
        return Ok(None);
    };
    let scope = Scope::new(
        crate::ops::TENANCY,
        args.company.hyphenated().to_string(),
        operation,
        key,
    );
    let record = hygiene::load(db, &scope).await?;
    let holder = hygiene::holder(db, &scope).await?;
    if record.is_none() && holder.is_none() {
        return Ok(None);
    }
    let state = match (&holder, &record) {
        (Some(_), _) => "in_flight",
        (None, Some(r)) if r.remaining.is_zero() => "expired",
        (None, _) => "completed",
    };
    let figures = [
        ("deterministic_id", json!(scope.deterministic_id())),
        ("state", json!(state)),
        (
            "fingerprint",
            json!(record.as_ref().map(|r| r.fingerprint.clone())),
        ),
        (
            "expires_at",
            json!(record.as_ref().map(|r| r.expires_at.render())),
        ),
        (
            "response_status",
            json!(record.as_ref().map(|r| r.response_status)),
        ),
        (
            "location",
            json!(record.as_ref().and_then(|r| r.location.clone())),
        ),
        (
            "response_bytes",
            json!(record.as_ref().map(|r| r.response_body.len())),
        ),
        ("executor_pid", json!(holder.as_ref().map(|h| h.pid))),
        (
            "executor_state",
            json!(holder.as_ref().map(|h| h.state.clone())),
        ),
        (
            "executing_since",
            json!(holder.as_ref().map(|h| h.since.render())),
        ),
    ];
    let object: serde_json::Map<String, Value> = figures
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut r = Report::new(
        format!("{} {} {}", args.company, args.operation, args.key),
        &["field", "value"],
    );
    for (k, v) in figures {
        r.row(vec![json!(k), v]);
    }
    Ok(Some(r.with_json(Value::Object(object))))
}

async fn prune(db: &Db, dry_run: bool) -> Result<Report, sqlx::Error> {
    let (deleted, verb) = if dry_run {
        let now = Ts::now();
        let n: i64 = on_db!(db, |c| sqlx::query_scalar(
            "select count(*) from idempotency_keys where expires_at <= $1"
        )
        .bind(now)
        .fetch_one(c)
        .await)?;
        (n, "would delete")
    } else {
        match hygiene::prune(db).await? {
            hygiene::PruneOutcome::Pruned(n) => (i64::try_from(n).unwrap_or(i64::MAX), "deleted"),
            hygiene::PruneOutcome::Skipped => (0, "skipped: another node is pruning"),
        }
    };
    let mut r = Report::new(
        "Prune of expired idempotency records",
        &["outcome", "records"],
    );
    r.row(vec![json!(verb), json!(deleted)]);
    Ok(r.with_json(json!({"dry_run": dry_run, "outcome": verb, "records": deleted})))
}

async fn release(db: &Db, args: &ReleaseArgs, json: bool) -> ExitCode {
    if !args.yes {
        return fail("releasing a key ends its executor's session and lets it execute again: add --yes to confirm");
    }
    if db.backend() == idem::Backend::Sqlite {
        return fail(
            "on SQLite a key in flight is the server's own write transaction: it cannot be \
             ended from outside; a stuck one shows as /readyz failing, and restarting the \
             server rolls it back",
        );
    }
    let Some(operation) = super::registered_operation(&args.record.operation) else {
        return fail(super::unknown_operation(&args.record.operation));
    };
    let Ok(key) = IdempotencyKey::parse(args.record.key.as_bytes()) else {
        return fail("that is not a valid Idempotency-Key");
    };
    let scope = Scope::new(
        crate::ops::TENANCY,
        args.record.company.hyphenated().to_string(),
        operation,
        key,
    );
    match release_watched(db, &scope, args.observe).await {
        Ok(Released::Done { pid }) => {
            let mut r = Report::new("Release", &["outcome", "executor_pid"]);
            r.row(vec![json!("released"), json!(pid)]);
            r.with_json(json!({"outcome": "released", "executor_pid": pid}))
                .print(json)
        }
        Ok(Released::Alive) => {
            eprintln!(
                "refused: the executor is alive (its session ran statements while watched); nothing released"
            );
            ExitCode::from(1)
        }
        Ok(Released::NotInFlight) => fail("the key is not in flight"),
        Err(e) => fail(format!("the store refused the release: {e}")),
    }
}

enum Released {
    Done { pid: i32 },
    Alive,
    NotInFlight,
}

async fn release_watched(
    db: &Db,
    scope: &Scope,
    observe: std::time::Duration,
) -> Result<Released, sqlx::Error> {
    let Some(seen) = hygiene::holder(db, scope).await? else {
        return Ok(Released::NotInFlight);
    };
    const IDLE: &str = "idle in transaction";
    if seen.state != IDLE {
        return Ok(Released::Alive);
    }
    tokio::time::sleep(observe).await;
    let Some(now) = hygiene::holder(db, scope).await? else {
        return Ok(Released::NotInFlight);
    };
    if now.pid != seen.pid || now.state != IDLE || now.state_change != seen.state_change {
        return Ok(Released::Alive);
    }
    // The audit row and the ending share a transaction: the row commits only if the
    // session was still exactly as watched (same state since the same instant) and ended.
    let row = idem::telemetry::AuditRow {
        id: uuid::Uuid::now_v7(),
        operation_name: scope.operation,
        operation_type: operation_type(scope.operation),
        deterministic_id: Some(scope.deterministic_id().to_string()),
        company_id: scope.tenant.clone(),
        user_id: None,
        status: "failed",
        execution_duration_ms: 0.0,
        timestamp: Ts::now(),
        request_id: String::new(),
        idempotency_key: Some(scope.key.as_str().to_owned()),
        route_path: "accubooks keys release".to_owned(),
        http_method: "CLI".to_owned(),
        workflows_triggered: 0,
        side_effects_executed: false,
        error_message: Some(format!(
            "in-flight key released by an operator with `accubooks keys release`: executor session {} (idle in its transaction since {}) ended, its write rolled back",
            seen.pid,
            seen.state_change.render()
        )),
        metadata: Some(json!({"action": "keys release"})),
    };
    let mut tx = db.begin().await?;
    idem::telemetry::insert_audit(&mut tx, &row).await?;
    let ended: bool = on_tx!(&mut tx, |c| sqlx::query_scalar(
        "select coalesce((select pg_terminate_backend(pid) from pg_stat_activity \
          where pid = $1 and state = 'idle in transaction' and state_change = $2), false)"
    )
    .bind(seen.pid)
    .bind(seen.state_change)
    .fetch_one(c)
    .await)?;
    if !ended {
        tx.rollback().await?;
        return Ok(Released::Alive);
    }
    tx.commit().await?;
    Ok(Released::Done { pid: seen.pid })
}

fn operation_type(name: &str) -> &'static str {
    crate::ops::registry()
        .operations()
        .iter()
        .find(|d| d.name() == name)
        .map_or("high-risk", |d| d.kind_label())
}
