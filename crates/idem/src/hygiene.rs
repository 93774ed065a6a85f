//! Key-table health numbers and the pruning job.
//!
//! Invariants:
//! - Only completed records are stored (a claim is its executor's transaction), so an
//!   expired record can always go; an executor re-executing an expired key overwrites
//!   it or, if the prune got there first, inserts afresh.
//! - On PostgreSQL every age and expiry is measured on the database's clock.
//! - Pruning deletes in bounded batches; on PostgreSQL one node at a time prunes (an
//!   advisory lock), and the work is done by `retention_prune_idempotency_keys()`, the
//!   same function pg_cron can call.
//! - Pruning never touches operation record rows, so exactly-once outlives it.

#[cfg(feature = "sqlite")]
use std::time::Duration;

use serde::Serialize;
use sqlx::FromRow;

#[cfg(feature = "sqlite")]
use crate::db::Ts;
use crate::db::{detached, Db};
use crate::telemetry::Metrics;

/// One key's record and the session executing it: what operator tools show.
pub use crate::store::{holder, load, Holder, Record};

/// Health numbers of the key table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct KeyStats {
    /// Records stored.
    pub total_keys: i64,
    /// Expired records not yet pruned.
    pub expired_pending: i64,
    /// Writes executing now, all nodes (PostgreSQL: the claims' advisory locks held;
    /// SQLite: 0, since a claim there is the server process's one write transaction and
    /// a stuck one shows as the store not being writable).
    pub pending_requests: i64,
    /// Age of the oldest executing write's transaction, minutes.
    pub oldest_pending_age_minutes: f64,
    /// Hours since the oldest unpruned record expired.
    pub oldest_expired_age_hours: f64,
}

/// `ok`, `degraded` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Within thresholds.
    Ok,
    /// Needs attention.
    Degraded,
    /// Needs action now.
    Error,
}

impl KeyStats {
    /// `error` when expired_pending > 1000 or the oldest expired > 48 h; `degraded` when
    /// expired_pending > 100 or the oldest pending > 30 min; else `ok`.
    pub fn status(&self) -> HealthStatus {
        if self.expired_pending > 1000 || self.oldest_expired_age_hours > 48.0 {
            HealthStatus::Error
        } else if self.expired_pending > 100 || self.oldest_pending_age_minutes > 30.0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        }
    }

    /// Publishes the numbers as gauges.
    pub fn publish(&self, m: &Metrics) {
        m.keys_total.set(self.total_keys);
        m.expired_pending.set(self.expired_pending);
        m.pending_requests.set(self.pending_requests);
        m.oldest_pending_age_minutes
            .set(self.oldest_pending_age_minutes);
        m.oldest_expired_age_hours
            .set(self.oldest_expired_age_hours);
    }
}

#[cfg(feature = "sqlite")]
#[derive(FromRow)]
struct StatsRow {
    total: i64,
    expired: Option<i64>,
    oldest_expired: Option<Ts>,
}

/// Below this estimated size PostgreSQL counts the key table exactly.
pub const EXACT_COUNT_BELOW: i64 = 100_000;

#[cfg(feature = "postgres")]
#[derive(FromRow)]
struct PgStatsRow {
    estimate: i64,
    expired: i64,
    oldest_expired_s: Option<f64>,
    pending: i64,
    oldest_pending_s: Option<f64>,
}

/// Reads the health numbers.
///
/// PostgreSQL: the expired figures are exact and cost what they count (the `expires_at`
/// index, never the whole table), the executing writes are read from `pg_locks`, every
/// age is on the database's clock; `total_keys` is the planner's estimate
/// (`pg_class.reltuples`, kept by autovacuum) once the table holds over
/// [`EXACT_COUNT_BELOW`] rows, exact below. SQLite: one scan.
pub async fn stats(db: &Db) -> Result<KeyStats, sqlx::Error> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pg) => {
            let mut tx = pg.begin().await?;
            let row = sqlx::query_as::<_, PgStatsRow>(
                "select \
                   (select reltuples::bigint from pg_class \
                     where oid = 'idempotency_keys'::regclass) as estimate, \
                   e.expired, e.oldest_expired_s, p.pending, p.oldest_pending_s \
                 from (select count(*) as expired, \
                              extract(epoch from now() - min(expires_at))::float8 as oldest_expired_s \
                         from idempotency_keys where expires_at <= now()) e, \
                      (select count(*) as pending, \
                              extract(epoch from now() - min(a.xact_start))::float8 as oldest_pending_s \
                         from pg_locks l join pg_stat_activity a on a.pid = l.pid \
                        where l.locktype = 'advisory' and l.objsubid = 1 and l.granted \
                          and l.database = (select oid from pg_database \
                                             where datname = current_database())) p",
            )
            .fetch_one(tx.exec())
            .await?;
            // reltuples is -1 before the first ANALYZE.
            let total = if row.estimate < EXACT_COUNT_BELOW {
                sqlx::query_scalar::<_, i64>("select count(*) from idempotency_keys")
                    .fetch_one(tx.exec())
                    .await?
            } else {
                row.estimate
            };
            tx.commit().await?;
            Ok(KeyStats {
                total_keys: total,
                expired_pending: row.expired,
                pending_requests: row.pending,
                oldest_pending_age_minutes: row.oldest_pending_s.unwrap_or(0.0).max(0.0) / 60.0,
                oldest_expired_age_hours: row.oldest_expired_s.unwrap_or(0.0).max(0.0) / 3600.0,
            })
        }
        #[cfg(feature = "sqlite")]
        Db::Sqlite { pool, .. } => {
            let now = Ts::now();
            let row = sqlx::query_as::<_, StatsRow>(
                "select count(*) as total, \
                   sum(case when expires_at <= $1 then 1 else 0 end) as expired, \
                   min(case when expires_at <= $1 then expires_at end) as oldest_expired \
                 from idempotency_keys",
            )
            .bind(now)
            .fetch_one(pool)
            .await?;
            let age_hours = row
                .oldest_expired
                .map(|t| ((now.micros() - t.micros()).max(0) as f64) / 1e6 / 3600.0)
                .unwrap_or(0.0);
            Ok(KeyStats {
                total_keys: row.total,
                expired_pending: row.expired.unwrap_or(0),
                pending_requests: 0,
                oldest_pending_age_minutes: 0.0,
                oldest_expired_age_hours: age_hours,
            })
        }
    }
}

/// What one prune run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PruneOutcome {
    /// Deleted this many records.
    Pruned(u64),
    /// Another node holds the prune lock.
    Skipped,
}

/// The prune's advisory lock, in the two-`integer` key space (the single-`bigint` space
/// belongs to the claims).
#[cfg(feature = "postgres")]
const PRUNE_LOCK: (i32, i32) = (0x1de3, 0x9a0e);
#[cfg(feature = "sqlite")]
const SQLITE_BATCH: i64 = 5000;

/// Deletes expired records in batches (one node at a time on PostgreSQL). Runs detached:
/// a caller stopped mid-run (shutdown) never leaves a transaction or lock behind.
pub async fn prune(db: &Db) -> Result<PruneOutcome, sqlx::Error> {
    let db = db.clone();
    detached(async move { prune_now(&db).await }).await
}

async fn prune_now(db: &Db) -> Result<PruneOutcome, sqlx::Error> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pg) => {
            // A transaction-scoped lock: nothing outlives the transaction, so the prune
            // also works through a transaction-pooling proxy.
            let mut tx = pg.begin().await?;
            // Background work may take longer than a request's statement budget.
            sqlx::query("set local statement_timeout = '15min'")
                .execute(tx.exec())
                .await?;
            let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1, $2)")
                .bind(PRUNE_LOCK.0)
                .bind(PRUNE_LOCK.1)
                .fetch_one(tx.exec())
                .await?;
            if !locked {
                tx.rollback().await?;
                return Ok(PruneOutcome::Skipped);
            }
            let deleted: i64 = sqlx::query_scalar("select retention_prune_idempotency_keys()")
                .fetch_one(tx.exec())
                .await?;
            tx.commit().await?;
            Ok(PruneOutcome::Pruned(u64::try_from(deleted).unwrap_or(0)))
        }
        #[cfg(feature = "sqlite")]
        Db::Sqlite { pool, .. } => {
            let mut total = 0u64;
            loop {
                let _gate = db.write_gate().await?;
                let now = Ts::now();
                let n = sqlx::query(
                    "delete from idempotency_keys where (tenant, operation, idem_key) in \
                     (select tenant, operation, idem_key from idempotency_keys \
                      where expires_at <= $1 limit $2)",
                )
                .bind(now)
                .bind(SQLITE_BATCH)
                .execute(pool)
                .await?
                .rows_affected();
                total += n;
                if n < SQLITE_BATCH as u64 {
                    return Ok(PruneOutcome::Pruned(total));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}
