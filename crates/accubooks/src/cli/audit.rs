//! `accubooks audit …`: the audit log read as an operator or an auditor would.
//!
//! Invariants: read-only, except `audit archive` (see [`crate::archive`]); `audit verify` exits 1 on any finding and prints each one; the
//! checks hold on both stores (ids are `uuid` on PostgreSQL and text on SQLite, so each
//! comparison casts the record's id to text).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use idem::{on_db, Backend, Db, Ts};
use serde_json::json;
use sqlx::FromRow;

use super::output::{fail, Report};

/// Audit-log commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Compliance checks: no deterministic id executed twice, every `new` row has its
    /// record, every execution's workflow count matches its instances.
    Verify,
    /// Failed writes in a window, newest first.
    Failures(Window),
    /// Replays per operation in a window, with the replay rate.
    Replays(Window),
    /// Writes slower than a threshold in a window, slowest first.
    Slow(SlowArgs),
    /// One request end to end: its audit rows, the record it wrote, and the workflow
    /// instances that record triggered.
    Trace(TraceArgs),
    /// Move whole months that ended before `--older-than` out of the log: write each as
    /// gzip JSON lines with a manifest in `--out`, verify, then drop it (PostgreSQL
    /// partitions; SQLite time ranges). Safe to interrupt and re-run.
    Archive(ArchiveArgs),
}

/// Which request to trace: by key (with its company), by deterministic id, or by
/// request id.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(false)))]
pub struct TraceArgs {
    /// The `Idempotency-Key` (with `--company`).
    #[arg(long, requires = "company", group = "which")]
    pub key: Option<String>,
    /// The company, for `--key`.
    #[arg(long)]
    pub company: Option<uuid::Uuid>,
    /// The deterministic id (the record's id).
    #[arg(long, group = "which")]
    pub id: Option<uuid::Uuid>,
    /// The `X-Request-Id` of one request.
    #[arg(long, group = "which")]
    pub request_id: Option<String>,
}

/// `audit slow` options.
#[derive(Debug, Args)]
pub struct SlowArgs {
    /// Show writes that took longer than this (`2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub over: Duration,
    /// The window.
    #[command(flatten)]
    pub window: Window,
}

/// `audit archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Archive the months that ended at least this long ago.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    /// Directory for the files and their manifests.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// A time window ending now.
#[derive(Debug, Args)]
pub struct Window {
    /// How far back (`7d`, `24h`, `90m`).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

#[derive(FromRow)]
struct Twice {
    operation_name: String,
    deterministic_id: String,
    n: i64,
}

#[derive(FromRow)]
struct Mismatch {
    operation_name: String,
    deterministic_id: String,
    workflows_triggered: i32,
    instances: i64,
}

#[derive(FromRow)]
struct Failure {
    timestamp: Ts,
    operation_name: String,
    company_id: String,
    request_id: Option<String>,
    error_message: Option<String>,
}

#[derive(FromRow)]
struct SlowWrite {
    timestamp: Ts,
    operation_name: String,
    company_id: String,
    status: String,
    request_id: Option<String>,
    duration_ms: f64,
}

#[derive(FromRow)]
struct Traced {
    timestamp: Ts,
    operation_name: String,
    deterministic_id: Option<String>,
    status: String,
    request_id: Option<String>,
    error_message: Option<String>,
}

#[derive(FromRow)]
struct Instance {
    id: String,
    status: String,
}

#[derive(FromRow)]
struct Replays {
    operation_name: String,
    total: i64,
    replayed: Option<i64>,
}

/// Runs an `audit` subcommand against `db`.
pub async fn run(db: &Db, cmd: AuditCommand, json: bool) -> ExitCode {
    let report = match cmd {
        AuditCommand::Verify => verify(db).await,
        AuditCommand::Failures(w) => failures(db, &w).await,
        AuditCommand::Replays(w) => replays(db, &w).await,
        AuditCommand::Slow(a) => slow(db, &a).await,
        AuditCommand::Trace(a) => trace(db, &a).await,
        AuditCommand::Archive(a) => return archive(db, &a, json).await,
    };
    match report {
        Ok(r) => r.print(json),
        Err(e) => fail(format!("the store refused the query: {e}")),
    }
}

async fn archive(db: &Db, a: &ArchiveArgs, json: bool) -> ExitCode {
    let Ok(older_than) = chrono::Duration::from_std(a.older_than) else {
        return fail("--older-than is too large");
    };
    let cutoff = chrono::Utc::now() - older_than;
    match crate::archive::archive(db, cutoff, &a.out, None).await {
        Ok(months) => {
            let mut r = Report::new(
                "Audit months archived",
                &["partition", "rows", "file", "sha256"],
            );
            for m in months {
                r.row(vec![
                    json!(m.partition),
                    json!(m.rows),
                    json!(m.file),
                    json!(m.sha256),
                ]);
            }
            r.print(json)
        }
        Err(e) => fail(format!("audit archive: {e}")),
    }
}

async fn verify(db: &Db) -> Result<Report, sqlx::Error> {
    let mut r = Report::new(
        "Audit log compliance checks",
        &["check", "operation", "deterministic_id", "detail"],
    );
    let twice = on_db!(db, |c| {
        sqlx::query_as::<_, Twice>(
        "select operation_name, deterministic_id, count(*) as n from idempotent_write_audit_log \
         where status = 'new' and deterministic_id is not null \
         group by operation_name, deterministic_id having count(*) > 1"
    )
    .fetch_all(c)
    .await
    })?;
    for row in twice {
        r.finding(vec![
            json!("executed twice"),
            json!(row.operation_name),
            json!(row.deterministic_id),
            json!(format!("{} `new` rows", row.n)),
        ]);
    }
    for def in crate::ops::registry().operations() {
        let Some(table) = crate::ops::record_table(def.name()) else {
            r.finding(vec![
                json!("record table"),
                json!(def.name()),
                json!(null),
                json!("no record table is known for this operation"),
            ]);
            continue;
        };
        let sql = format!(
            "select a.deterministic_id from idempotent_write_audit_log a \
             where a.status = 'new' and a.operation_name = $1 \
               and not exists (select 1 from {table} t where cast(t.id as text) = a.deterministic_id)"
        );
        let orphans: Vec<String> = on_db!(db, |c| sqlx::query_scalar(&sql)
            .bind(def.name())
            .fetch_all(c)
            .await)?;
        for id in orphans {
            r.finding(vec![
                json!("record missing"),
                json!(def.name()),
                json!(id),
                json!(format!("a `new` audit row without its row in {table}")),
            ]);
        }
    }
    if table_exists(db, "workflow_instances").await? {
        let mismatched = on_db!(db, |c| sqlx::query_as::<_, Mismatch>(
            "select a.operation_name, a.deterministic_id, a.workflows_triggered, \
                    (select count(*) from workflow_instances w \
                      where cast(w.trigger_entity_id as text) = a.deterministic_id) as instances \
             from idempotent_write_audit_log a \
             where a.status = 'new' and a.deterministic_id is not null \
               and a.workflows_triggered <> (select count(*) from workflow_instances w \
                      where cast(w.trigger_entity_id as text) = a.deterministic_id)"
        )
        .fetch_all(c)
        .await)?;
        for row in mismatched {
            r.finding(vec![
                json!("workflow accuracy"),
                json!(row.operation_name),
                json!(row.deterministic_id),
                json!(format!(
                    "audit row says {} workflows, {} instances exist",
                    row.workflows_triggered, row.instances
                )),
            ]);
        }
    }
    let summary = json!({"findings": r.findings(), "rows": r.rows_json()});
    Ok(r.with_json(summary))
}

async fn table_exists(db: &Db, table: &str) -> Result<bool, sqlx::Error> {
    let sql = match db.backend() {
        Backend::Postgres => {
            "select count(*) from pg_class where relname = $1 and relkind in ('r', 'p')"
        }
        Backend::Sqlite => "select count(*) from sqlite_master where type = 'table' and name = $1",
    };
    let n: i64 = on_db!(db, |c| sqlx::query_scalar(sql)
        .bind(table)
        .fetch_one(c)
        .await)?;
    Ok(n > 0)
}

async fn failures(db: &Db, w: &Window) -> Result<Report, sqlx::Error> {
    let since = Ts::now().minus(w.since);
    let rows = on_db!(db, |c| sqlx::query_as::<_, Failure>(
        "select timestamp, operation_name, company_id, request_id, error_message \
         from idempotent_write_audit_log where status = 'failed' and timestamp >= $1 \
         order by timestamp desc limit $2"
    )
    .bind(since)
    .bind(w.limit)
    .fetch_all(c)
    .await)?;
    let mut r = Report::new(
        format!(
            "Failed writes, last {}",
            humantime::format_duration(w.since)
        ),
        &[
            "timestamp",
            "operation",
            "company_id",
            "request_id",
            "error",
        ],
    );
    for row in rows {
        r.row(vec![
            json!(row.timestamp.render()),
            json!(row.operation_name),
            json!(row.company_id),
            json!(row.request_id),
            json!(row.error_message),
        ]);
    }
    Ok(r)
}

async fn replays(db: &Db, w: &Window) -> Result<Report, sqlx::Error> {
    let since = Ts::now().minus(w.since);
    let rows = on_db!(db, |c| sqlx::query_as::<_, Replays>(
        "select operation_name, count(*) as total, \
                sum(case when status = 'replayed' then 1 else 0 end) as replayed \
         from idempotent_write_audit_log where timestamp >= $1 \
         group by operation_name order by replayed desc limit $2"
    )
    .bind(since)
    .bind(w.limit)
    .fetch_all(c)
    .await)?;
    let mut r = Report::new(
        format!(
            "Replays per operation, last {}",
            humantime::format_duration(w.since)
        ),
        &["operation", "requests", "replayed", "replay_rate_pct"],
    );
    for row in rows {
        let (total, replayed) = (row.total, row.replayed.unwrap_or(0));
        let rate = if total > 0 {
            (replayed as f64 * 10_000.0 / total as f64).round() / 100.0
        } else {
            0.0
        };
        r.row(vec![
            json!(row.operation_name),
            json!(total),
            json!(replayed),
            json!(rate),
        ]);
    }
    Ok(r)
}

async fn slow(db: &Db, a: &SlowArgs) -> Result<Report, sqlx::Error> {
    let since = Ts::now().minus(a.window.since);
    let over_ms = a.over.as_secs_f64() * 1000.0;
    let rows = on_db!(db, |c| sqlx::query_as::<_, SlowWrite>(
        "select timestamp, operation_name, company_id, status, request_id, \
                cast(execution_duration_ms as double precision) as duration_ms \
         from idempotent_write_audit_log where timestamp >= $1 and execution_duration_ms > $2 \
         order by execution_duration_ms desc limit $3"
    )
    .bind(since)
    .bind(over_ms)
    .bind(a.window.limit)
    .fetch_all(c)
    .await)?;
    let mut r = Report::new(
        format!(
            "Writes over {}, last {}",
            humantime::format_duration(a.over),
            humantime::format_duration(a.window.since)
        ),
        &[
            "timestamp",
            "operation",
            "company_id",
            "status",
            "request_id",
            "duration_ms",
        ],
    );
    for row in rows {
        r.row(vec![
            json!(row.timestamp.render()),
            json!(row.operation_name),
            json!(row.company_id),
            json!(row.status),
            json!(row.request_id),
            json!(row.duration_ms),
        ]);
    }
    Ok(r)
}

async fn trace(db: &Db, a: &TraceArgs) -> Result<Report, sqlx::Error> {
    const COLUMNS: &str = "select timestamp, operation_name, deterministic_id, status, \
         request_id, error_message from idempotent_write_audit_log";
    let (filter, value, second) = match (&a.key, &a.id, &a.request_id) {
        (Some(key), _, _) => (
            "idempotency_key = $1 and company_id = $2",
            key.clone(),
            a.company.map(|c| c.hyphenated().to_string()),
        ),
        (_, Some(id), _) => ("deterministic_id = $1", id.hyphenated().to_string(), None),
        (_, _, Some(r)) => ("request_id = $1", r.clone(), None),
        _ => ("1 = 0", String::new(), None),
    };
    let sql = format!("{COLUMNS} where {filter} order by timestamp");
    let rows = on_db!(db, |c| {
        let q = sqlx::query_as::<_, Traced>(&sql).bind(&value);
        match &second {
            Some(v) => q.bind(v).fetch_all(c).await,
            None => q.fetch_all(c).await,
        }
    })?;
    let mut r = Report::new(
        "Trace: audit rows, the record, its workflow instances",
        &["kind", "when", "operation", "id", "status", "detail"],
    );
    let mut records: Vec<(String, String)> = Vec::new();
    for row in rows {
        if let (Some(id), "new") = (&row.deterministic_id, row.status.as_str()) {
            records.push((row.operation_name.clone(), id.clone()));
        }
        r.row(vec![
            json!("audit row"),
            json!(row.timestamp.render()),
            json!(row.operation_name),
            json!(row.deterministic_id),
            json!(row.status),
            json!(row
                .error_message
                .or(row.request_id.map(|id| format!("request {id}")))),
        ]);
    }
    let instances = table_exists(db, "workflow_instances").await?;
    for (operation, id) in records {
        let Some(table) = crate::ops::record_table(&operation) else {
            continue;
        };
        let sql = format!("select count(*) from {table} where cast(id as text) = $1");
        let found: i64 = on_db!(db, |c| sqlx::query_scalar(&sql)
            .bind(&id)
            .fetch_one(c)
            .await)?;
        let record = vec![
            json!("record"),
            json!(null),
            json!(operation),
            json!(id),
            json!(if found > 0 { "present" } else { "missing" }),
            json!(format!("in {table}")),
        ];
        if found > 0 {
            r.row(record);
        } else {
            r.finding(record);
        }
        if instances {
            let list = on_db!(db, |c| sqlx::query_as::<_, Instance>(
                "select cast(id as text) as id, status from workflow_instances \
                 where cast(trigger_entity_id as text) = $1"
            )
            .bind(&id)
            .fetch_all(c)
            .await)?;
            for i in list {
                r.row(vec![
                    json!("workflow instance"),
                    json!(null),
                    json!(operation),
                    json!(i.id),
                    json!(i.status),
                    json!(format!("triggered by {id}")),
                ]);
            }
        }
    }
    Ok(r)
}
