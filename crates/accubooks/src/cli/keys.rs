//! `accubooks keys …`: the idempotency key table seen by an operator: health numbers,
//! one record, and the prune.
//!
//! Invariants: these commands read or delete only what the server's own jobs would
//! (`keys prune` is the scheduled prune run now); nothing here creates or changes a
//! live claim.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use idem::{hygiene, on_db, store, Db, IdempotencyKey, Scope, Ts};
use serde_json::{json, Value};

use super::output::{fail, Report};

/// Key-table commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Health numbers of the key table (the figures of `/admin/system/health`).
    Stats,
    /// One record: its state, fingerprint, lease and stored response.
    Show(ShowArgs),
    /// Deletes expired records now (the scheduled prune, run by hand).
    Prune(PruneArgs),
    /// Frees a stuck in-flight key before its lease ends. Fenced: the claim is watched
    /// for longer than a renewal interval first, and released only if no executor renewed
    /// it; the release is audited.
    Release(ReleaseArgs),
}

/// Which claim to release, and how long to watch it first.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The record.
    #[command(flatten)]
    pub record: ShowArgs,
    /// How long to watch the claim for a renewal before releasing it: longer than the
    /// server's renewal interval (a third of `--lease`; 10 s by default).
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
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
    let scope = Scope::new(args.company.hyphenated().to_string(), operation, key);
    let Some(rec) = store::load(db, &scope).await? else {
        return Ok(None);
    };
    let now = Ts::now();
    let state = match rec.state {
        store::RecordState::Completed if rec.expires_at <= now => "expired",
        store::RecordState::Completed => "completed",
        store::RecordState::InFlight if rec.lease_until.is_some_and(|l| l <= now) => {
            "in_flight (lease ended)"
        }
        store::RecordState::InFlight => "in_flight",
    };
    let figures = [
        ("deterministic_id", json!(scope.deterministic_id())),
        ("state", json!(state)),
        ("fingerprint", json!(rec.fingerprint)),
        ("fence", json!(rec.fence)),
        ("lease_until", json!(rec.lease_until.map(Ts::render))),
        ("expires_at", json!(rec.expires_at.render())),
        ("response_status", json!(rec.response_status)),
        ("location", json!(rec.location)),
        (
            "response_bytes",
            json!(rec.response_body.as_ref().map(Vec::len)),
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
            "select count(*) from idempotency_keys where expires_at <= $1 \
             and (state = 'completed' or lease_until <= $1)"
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
        return fail("releasing a claim lets the key execute again: add --yes to confirm");
    }
    let Some(operation) = super::registered_operation(&args.record.operation) else {
        return fail(super::unknown_operation(&args.record.operation));
    };
    let Ok(key) = IdempotencyKey::parse(args.record.key.as_bytes()) else {
        return fail("that is not a valid Idempotency-Key");
    };
    let scope = Scope::new(args.record.company.hyphenated().to_string(), operation, key);
    match release_watched(db, &scope, args.observe).await {
        Ok(Released::Done { fence }) => {
            let mut r = Report::new("Release", &["outcome", "fence"]);
            r.row(vec![json!("released"), json!(fence)]);
            r.with_json(json!({"outcome": "released", "fence": fence}))
                .print(json)
        }
        Ok(Released::Alive) => {
            eprintln!("refused: the executor is alive (it renewed its lease); nothing released");
            ExitCode::from(1)
        }
        Ok(Released::NotInFlight(state)) => fail(format!("the key is not in flight ({state})")),
        Err(e) => fail(format!("the store refused the release: {e}")),
    }
}

enum Released {
    Done { fence: i64 },
    Alive,
    NotInFlight(&'static str),
}

async fn release_watched(
    db: &Db,
    scope: &Scope,
    observe: std::time::Duration,
) -> Result<Released, sqlx::Error> {
    let Some(seen) = store::load(db, scope).await? else {
        return Ok(Released::NotInFlight("no record"));
    };
    let (store::RecordState::InFlight, Some(lease)) = (seen.state, seen.lease_until) else {
        return Ok(Released::NotInFlight("completed"));
    };
    tokio::time::sleep(observe).await;
    let mut tx = db.begin().await?;
    if !store::release_unchanged(&mut tx, scope, seen.fence, lease).await? {
        tx.rollback().await?;
        return Ok(Released::Alive);
    }
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
            "in-flight claim (fence {}) released by an operator with `accubooks keys release`",
            seen.fence
        )),
        metadata: Some(json!({"action": "keys release"})),
    };
    idem::telemetry::insert_audit(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(Released::Done { fence: seen.fence })
}

fn operation_type(name: &str) -> &'static str {
    crate::ops::registry()
        .operations()
        .iter()
        .find(|d| d.name == name)
        .map_or("high-risk", |d| d.kind.label())
}
