//! `accubooks audit archive --older-than 90d --out DIR`: moves whole months of the audit
//! log out of PostgreSQL into compressed JSON lines.
//!
//! Per month whose partition ends before the cutoff, in order:
//! 1. detach the partition from `idempotent_write_audit_log` (its rows stay in the table);
//! 2. write its rows, ordered by `timestamp, id`, as gzip JSON lines
//!    `<partition>.jsonl.gz`, then a manifest `<partition>.manifest.json` (row count, the
//!    file's SHA-256) — each written under a `.tmp` name, synced and renamed, the manifest
//!    last, so a manifest exists only beside a complete file;
//! 3. verify: the file has the manifest's checksum and decompresses to as many JSON lines
//!    as the manifest and the table say;
//! 4. drop the table and insert the archive's own audit row, in one transaction.
//!
//! On SQLite (one unpartitioned table) the same command works over time ranges: each
//! whole month before the cutoff is written and verified the same way, then its rows are
//! deleted (through the log's archive unlock) together with the archive's audit row.
//!
//! Invariants: every step is safe to interrupt and to repeat; a re-run finds detached
//! months by name and resumes at the first step not done, so nothing is lost and nothing
//! is written twice. One archive runs at a time (an advisory lock). The append-only
//! triggers are untouched: detaching and dropping a whole month is the one sanctioned
//! way rows leave the log.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// Two-`integer` advisory key (idem's claims own the single-`bigint` space).
const ARCHIVE_LOCK: (i32, i32) = (0x1de3, 0x9a10);

/// A step of archiving one month (a test may stop after any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The partition is detached (SQLite: nothing to detach; stops before writing).
    Detached,
    /// The file and its manifest are written.
    Written,
    /// The file is verified.
    Verified,
}

/// The manifest written beside each month's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The partition (table) name.
    pub partition: String,
    /// First instant of the month (inclusive), RFC 3339.
    pub from: String,
    /// First instant of the next month (exclusive), RFC 3339.
    pub to: String,
    /// Rows in the file.
    pub rows: i64,
    /// The file's name, beside the manifest.
    pub file: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

/// Why an archive run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// File failure.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// The written file does not match its manifest or the table.
    #[error("verification failed for {partition}: {reason}")]
    Verify {
        /// The month.
        partition: String,
        /// What differs.
        reason: String,
    },
    /// Another archive holds the lock.
    #[error("another audit archive is running")]
    Busy,
    /// The archive holds a session lock: it runs against PostgreSQL itself.
    #[error("the audit archive cannot run through a transaction pooler: point --database-url at PostgreSQL itself")]
    Pooler,
}

/// `idempotent_write_audit_log_YYYY_MM` → the month's first instant.
fn month_of(partition: &str) -> Option<DateTime<Utc>> {
    let rest = partition.strip_prefix("idempotent_write_audit_log_")?;
    let (y, m) = rest.split_once('_')?;
    Utc.with_ymd_and_hms(y.parse().ok()?, m.parse().ok()?, 1, 0, 0, 0)
        .single()
}

fn next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to `path` durably: a `.tmp` sibling, synced, renamed.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Archives every month that ends at or before `cutoff` into `dir`.
pub async fn archive(
    db: &idem::Db,
    cutoff: DateTime<Utc>,
    dir: &Path,
    stop_after: Option<Step>,
) -> Result<Vec<Manifest>, ArchiveError> {
    std::fs::create_dir_all(dir)?;
    let pool = match db {
        idem::Db::Postgres(pg) if pg.pooled() => return Err(ArchiveError::Pooler),
        idem::Db::Postgres(pg) => pg.pool(),
        idem::Db::Sqlite { .. } => return archive_sqlite(db, cutoff, dir, stop_after).await,
    };
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, $2)")
        .bind(ARCHIVE_LOCK.0)
        .bind(ARCHIVE_LOCK.1)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Err(ArchiveError::Busy);
    }
    let result = archive_locked(pool, cutoff, dir, stop_after).await;
    let _ = sqlx::query("select pg_advisory_unlock($1, $2)")
        .bind(ARCHIVE_LOCK.0)
        .bind(ARCHIVE_LOCK.1)
        .execute(&mut *lock)
        .await;
    result
}

async fn archive_locked(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    dir: &Path,
    stop_after: Option<Step>,
) -> Result<Vec<Manifest>, ArchiveError> {
    // Monthly tables, attached or left detached by an interrupted run.
    let months: Vec<(String, bool)> = sqlx::query_as(
        "select c.relname::text, exists (select 1 from pg_inherits i \
                where i.inhrelid = c.oid \
                  and i.inhparent = 'idempotent_write_audit_log'::regclass) \
         from pg_class c \
         where c.relkind = 'r' and pg_table_is_visible(c.oid) \
           and c.relname ~ '^idempotent_write_audit_log_[0-9]{4}_[0-9]{2}$' \
         order by c.relname",
    )
    .fetch_all(pool)
    .await?;
    let mut done = Vec::new();
    for (partition, attached) in months {
        let Some(from) = month_of(&partition) else {
            continue;
        };
        let to = next_month(from);
        if to > cutoff {
            continue;
        }
        if let Some(m) =
            archive_month(pool, &partition, attached, from, to, dir, stop_after).await?
        {
            done.push(m);
        }
    }
    Ok(done)
}

async fn archive_month(
    pool: &PgPool,
    partition: &str,
    attached: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    dir: &Path,
    stop_after: Option<Step>,
) -> Result<Option<Manifest>, ArchiveError> {
    // 1. Detach.
    if attached {
        sqlx::query(&format!(
            "alter table idempotent_write_audit_log detach partition \"{partition}\""
        ))
        .execute(pool)
        .await?;
        tracing::info!(partition, "audit month detached");
    }
    if stop_after == Some(Step::Detached) {
        return Ok(None);
    }
    // 2. Write (unless a complete file and manifest exist).
    let file_name = format!("{partition}.jsonl.gz");
    let file = dir.join(&file_name);
    let manifest_path = dir.join(format!("{partition}.manifest.json"));
    let manifest = match std::fs::read(&manifest_path) {
        Ok(bytes) => {
            serde_json::from_slice::<Manifest>(&bytes).map_err(|e| ArchiveError::Verify {
                partition: partition.to_owned(),
                reason: format!("unreadable manifest: {e}"),
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rows = export(pool, partition, &file).await?;
            let manifest = Manifest {
                partition: partition.to_owned(),
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
                rows,
                file: file_name.clone(),
                sha256: sha256_file(&file)?,
            };
            let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
            write_durably(&manifest_path, &json)?;
            tracing::info!(partition, rows, "audit month written");
            manifest
        }
        Err(e) => return Err(e.into()),
    };
    if stop_after == Some(Step::Written) {
        return Ok(None);
    }
    // 3. Verify the file against the manifest and the table.
    let fail = |reason: String| ArchiveError::Verify {
        partition: partition.to_owned(),
        reason,
    };
    if sha256_file(&file)? != manifest.sha256 {
        return Err(fail("the file's checksum differs from the manifest".into()));
    }
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&file)?));
    let mut lines = 0i64;
    for line in reader.lines() {
        let line = line?;
        serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|e| fail(format!("line {}: {e}", lines + 1)))?;
        lines += 1;
    }
    let in_table: i64 = sqlx::query_scalar(&format!("select count(*) from \"{partition}\""))
        .fetch_one(pool)
        .await?;
    if lines != manifest.rows || in_table != manifest.rows {
        return Err(fail(format!(
            "manifest {} rows, file {lines}, table {in_table}",
            manifest.rows
        )));
    }
    if stop_after == Some(Step::Verified) {
        return Ok(None);
    }
    // 4. Drop the month and record the archive in the audit log, atomically.
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("drop table \"{partition}\""))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into idempotent_write_audit_log (id, operation_name, operation_type, \
         company_id, status, execution_duration_ms, timestamp, metadata) \
         values ($1, 'archiveAuditLog', 'operator', 'operator', 'new', 0, now(), $2)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(sqlx::types::Json(serde_json::json!({
        "partition": manifest.partition,
        "from": manifest.from,
        "to": manifest.to,
        "rows": manifest.rows,
        "file": manifest.file,
        "sha256": manifest.sha256,
    })))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        partition,
        rows = manifest.rows,
        "audit month archived and dropped"
    );
    Ok(Some(manifest))
}

/// Streams the month's rows into `file` as gzip JSON lines; returns the row count.
async fn export(pool: &PgPool, partition: &str, file: &Path) -> Result<i64, ArchiveError> {
    let tmp: PathBuf = file.with_extension("gz.tmp");
    let out = std::fs::File::create(&tmp)?;
    let mut gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::default());
    let sql =
        format!("select row_to_json(t)::text from \"{partition}\" t order by t.timestamp, t.id");
    let mut rows = sqlx::query_scalar::<_, String>(&sql).fetch(pool);
    let mut n = 0i64;
    while let Some(line) = rows.try_next().await? {
        gz.write_all(line.as_bytes())?;
        gz.write_all(b"\n")?;
        n += 1;
    }
    let out = gz.finish()?;
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)?;
    sync_dir(file)?;
    Ok(n)
}

/// SQLite columns, as one JSON object per row (the PostgreSQL file's shape).
const SQLITE_ROW_JSON: &str = "json_object('id', id, 'operation_name', operation_name, \
     'operation_type', operation_type, 'deterministic_id', deterministic_id, \
     'company_id', company_id, 'user_id', user_id, 'status', status, \
     'execution_duration_ms', execution_duration_ms, \
     'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', timestamp / 1000000.0, 'unixepoch'), \
     'timestamp_micros', timestamp, 'request_id', request_id, \
     'idempotency_key', idempotency_key, 'route_path', route_path, \
     'http_method', http_method, 'workflows_triggered', workflows_triggered, \
     'side_effects_executed', side_effects_executed != 0, 'error_message', error_message, \
     'metadata', json(metadata))";

async fn archive_sqlite(
    db: &idem::Db,
    cutoff: DateTime<Utc>,
    dir: &Path,
    stop_after: Option<Step>,
) -> Result<Vec<Manifest>, ArchiveError> {
    let idem::Db::Sqlite { pool, .. } = db else {
        return Ok(Vec::new());
    };
    let micros = |t: DateTime<Utc>| idem::Ts::from_chrono(t).micros();
    let oldest: Option<i64> = sqlx::query_scalar(
        "select min(timestamp) from idempotent_write_audit_log \
         where operation_name != 'archiveAuditLog'",
    )
    .fetch_one(pool)
    .await?;
    let Some(oldest) = oldest else {
        return Ok(Vec::new());
    };
    let oldest = idem::Ts::from_micros(oldest).to_chrono();
    let mut from = Utc
        .with_ymd_and_hms(oldest.year(), oldest.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(oldest);
    let mut done = Vec::new();
    while next_month(from) <= cutoff {
        let to = next_month(from);
        let partition = format!("idempotent_write_audit_log_{}", from.format("%Y_%m"));
        let range = (micros(from), micros(to));
        let in_table: i64 = sqlx::query_scalar(
            "select count(*) from idempotent_write_audit_log \
             where timestamp >= $1 and timestamp < $2 and operation_name != 'archiveAuditLog'",
        )
        .bind(range.0)
        .bind(range.1)
        .fetch_one(pool)
        .await?;
        if in_table > 0 {
            if let Some(m) =
                archive_sqlite_month(db, &partition, from, to, range, in_table, dir, stop_after)
                    .await?
            {
                done.push(m);
            }
        }
        from = to;
    }
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
async fn archive_sqlite_month(
    db: &idem::Db,
    partition: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    range: (i64, i64),
    in_table: i64,
    dir: &Path,
    stop_after: Option<Step>,
) -> Result<Option<Manifest>, ArchiveError> {
    let idem::Db::Sqlite { pool, .. } = db else {
        return Ok(None);
    };
    // Nothing to detach on SQLite.
    if stop_after == Some(Step::Detached) {
        return Ok(None);
    }
    let file_name = format!("{partition}.jsonl.gz");
    let file = dir.join(&file_name);
    let manifest_path = dir.join(format!("{partition}.manifest.json"));
    let fail = |reason: String| ArchiveError::Verify {
        partition: partition.to_owned(),
        reason,
    };
    // Write (unless a complete file and manifest exist).
    let manifest = match std::fs::read(&manifest_path) {
        Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes)
            .map_err(|e| fail(format!("unreadable manifest: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp: PathBuf = file.with_extension("gz.tmp");
            let mut gz = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(std::fs::File::create(&tmp)?),
                flate2::Compression::default(),
            );
            let sql = format!(
                "select {SQLITE_ROW_JSON} from idempotent_write_audit_log \
                 where timestamp >= $1 and timestamp < $2 and operation_name != 'archiveAuditLog' \
                 order by timestamp, id"
            );
            let mut rows = sqlx::query_scalar::<_, String>(&sql)
                .bind(range.0)
                .bind(range.1)
                .fetch(pool);
            let mut n = 0i64;
            while let Some(line) = rows.try_next().await? {
                gz.write_all(line.as_bytes())?;
                gz.write_all(b"\n")?;
                n += 1;
            }
            drop(rows);
            let out = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
            out.sync_all()?;
            std::fs::rename(&tmp, &file)?;
            sync_dir(&file)?;
            let manifest = Manifest {
                partition: partition.to_owned(),
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
                rows: n,
                file: file_name.clone(),
                sha256: sha256_file(&file)?,
            };
            let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
            write_durably(&manifest_path, &json)?;
            manifest
        }
        Err(e) => return Err(e.into()),
    };
    if stop_after == Some(Step::Written) {
        return Ok(None);
    }
    // Verify.
    if sha256_file(&file)? != manifest.sha256 {
        return Err(fail("the file's checksum differs from the manifest".into()));
    }
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&file)?));
    let mut lines = 0i64;
    for line in reader.lines() {
        serde_json::from_str::<serde_json::Value>(&line?)
            .map_err(|e| fail(format!("line {}: {e}", lines + 1)))?;
        lines += 1;
    }
    if lines != manifest.rows || in_table != manifest.rows {
        return Err(fail(format!(
            "manifest {} rows, file {lines}, table {in_table}",
            manifest.rows
        )));
    }
    if stop_after == Some(Step::Verified) {
        return Ok(None);
    }
    // Delete the range and record the archive, in one transaction (the archive unlock
    // row exists only inside it).
    let _gate = db.write_gate().await;
    let mut tx = pool.begin().await?;
    sqlx::query("insert into idem_audit_archive_unlock (token) values (1)")
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query(
        "delete from idempotent_write_audit_log \
         where timestamp >= $1 and timestamp < $2 and operation_name != 'archiveAuditLog'",
    )
    .bind(range.0)
    .bind(range.1)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if i64::try_from(deleted).ok() != Some(manifest.rows) {
        tx.rollback().await?;
        return Err(fail(format!(
            "{deleted} rows to delete, manifest {}",
            manifest.rows
        )));
    }
    sqlx::query("delete from idem_audit_archive_unlock")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into idempotent_write_audit_log (id, operation_name, operation_type, \
         company_id, status, execution_duration_ms, timestamp, metadata) \
         values ($1, 'archiveAuditLog', 'operator', 'operator', 'new', 0, $2, $3)",
    )
    .bind(idem::Id(uuid::Uuid::now_v7()))
    .bind(idem::Ts::now())
    .bind(serde_json::to_string(&manifest).map_err(std::io::Error::other)?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        partition,
        rows = manifest.rows,
        "audit month archived and deleted"
    );
    Ok(Some(manifest))
}
