//! Retention of the audit log: monthly partitions created ahead of time.
//!
//! Invariants:
//! - On PostgreSQL `idempotent_write_audit_log` is partitioned by month with a default
//!   partition; [`ensure_audit_partitions`] creates the month of `at` and the
//!   `months_ahead` months after it, so that as long as it runs at least once every
//!   `months_ahead` months no row lands in the default partition.
//! - One node at a time runs it (a transaction-scoped advisory lock); the others skip.
//! - SQLite has one unpartitioned table: nothing to do.

#[cfg(feature = "postgres")]
use sqlx::Row;

use crate::db::{Db, Ts};

/// Two-`integer` advisory key (the single-`bigint` space belongs to the claims).
#[cfg(feature = "postgres")]
const PARTITION_LOCK: (i32, i32) = (0x1de3, 0x9a0f);

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionOutcome {
    /// The partitions created (empty when all existed), and the rows sitting in the
    /// default partition (should be 0).
    Ensured {
        /// Names of the partitions created by this run.
        created: Vec<String>,
        /// Rows in `idempotent_write_audit_log_default`.
        default_rows: i64,
    },
    /// Another node holds the lock.
    Skipped,
    /// SQLite: the audit table is not partitioned.
    NotPartitioned,
}

/// Creates the audit partitions of the month of `at` and `months_ahead` months after it.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
pub async fn ensure_audit_partitions(
    db: &Db,
    months_ahead: u32,
    at: Ts,
) -> Result<PartitionOutcome, sqlx::Error> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pg) => ensure_postgres(pg, months_ahead, at).await,
        #[cfg(feature = "sqlite")]
        Db::Sqlite { .. } => Ok(PartitionOutcome::NotPartitioned),
    }
}

#[cfg(feature = "postgres")]
async fn ensure_postgres(
    pg: &crate::db::Pg,
    months_ahead: u32,
    at: Ts,
) -> Result<PartitionOutcome, sqlx::Error> {
    let mut tx = pg.begin().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1, $2)")
        .bind(PARTITION_LOCK.0)
        .bind(PARTITION_LOCK.1)
        .fetch_one(tx.exec())
        .await?;
    if !locked {
        return Ok(PartitionOutcome::Skipped);
    }
    let created = sqlx::query("select idem_ensure_audit_partitions($1, $2)")
        .bind(i32::try_from(months_ahead).unwrap_or(i32::MAX))
        .bind(at.to_chrono())
        .fetch_all(tx.exec())
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // `limit 1`-style probe: the default partition should be empty; count it only when not.
    let default_rows: i64 = sqlx::query_scalar(
        "select case when exists (select 1 from idempotent_write_audit_log_default) \
         then (select count(*) from idempotent_write_audit_log_default) else 0 end",
    )
    .fetch_one(tx.exec())
    .await?;
    tx.commit().await?;
    Ok(PartitionOutcome::Ensured {
        created,
        default_rows,
    })
}
