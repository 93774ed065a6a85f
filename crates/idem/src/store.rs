//! The idempotency record store: one row per completed scope in `idempotency_keys`, and
//! the claim, which is not a row at all but the write's own transaction.
//!
//! Invariants:
//! - A claim is taken inside the transaction that performs the write and lasts exactly
//!   as long as it: on PostgreSQL a transaction-scoped advisory lock on the scope's
//!   64-bit hash, taken without waiting; on SQLite the write transaction itself (the
//!   process's write gate and the file's write lock). Nothing of a claim outlives its
//!   transaction, so a crashed executor frees its scope the moment its session ends, and
//!   an executor cannot commit after losing its claim: losing the claim *is* losing the
//!   transaction.
//! - The lease is enforced by PostgreSQL, not by the executor: the claim sets
//!   `idle_in_transaction_session_timeout` and `statement_timeout` to the lease for its
//!   own transaction (`set_config(…, true)`), so a frozen or partitioned executor's
//!   session is ended by the server and its lock freed. There is no renewal to starve and
//!   no fencing token to repeat.
//! - The record is read in a statement of its own after the lock is granted (a statement
//!   that took the lock and read the row would read with a snapshot older than the lock,
//!   and could miss a completion committed just before the lock was granted).
//! - A row exists only for a completed scope. It is written with the write's audit row
//!   in one statement, inside the write's transaction, so the business write, the stored
//!   response and the audit row commit together or not at all. It overwrites an expired
//!   row and never a live one.
//! - Every expiry comparison uses the database's clock on PostgreSQL (`now()`), so a
//!   node with a skewed clock neither treats a live record as expired nor keeps an
//!   expired one alive. SQLite is embedded: its clock is the node's.
//! - idem owns the single-`bigint` advisory-lock key space of its database; its other
//!   locks (the prune, the audit retention) use the two-`integer` space, which
//!   PostgreSQL keeps apart.

use std::time::Duration;

use sqlx::FromRow;

use crate::db::{Id, Ts, Tx};
use crate::key::Scope;
use crate::telemetry::AuditRow;

/// A completed record whose expiry has not passed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Record {
    /// Fingerprint of the request that executed.
    pub fingerprint: String,
    /// Stored status.
    pub response_status: u16,
    /// Stored body, byte for byte.
    pub response_body: Vec<u8>,
    /// Stored `Location`.
    pub location: Option<String>,
    /// When the record stops counting.
    pub expires_at: Ts,
    /// How long it still counts, measured on the store's clock.
    pub remaining: Duration,
}

#[derive(FromRow)]
struct RecordRow {
    fingerprint: String,
    response_status: i32,
    response_body: Vec<u8>,
    location: Option<String>,
    expires_at: Ts,
    remaining_us: i64,
}

impl From<RecordRow> for Record {
    fn from(r: RecordRow) -> Self {
        Record {
            fingerprint: r.fingerprint,
            response_status: u16::try_from(r.response_status).unwrap_or(500),
            response_body: r.response_body,
            location: r.location,
            expires_at: r.expires_at,
            remaining: Duration::from_micros(u64::try_from(r.remaining_us).unwrap_or(0)),
        }
    }
}

/// What a claim found, inside the caller's transaction.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The transaction holds the scope and no live record stands: execute, then
    /// [`complete`] before committing.
    Claimed,
    /// The scope completed and its record still counts: roll back and replay it.
    Completed(Record),
    /// Another transaction holds the scope (an execution in flight on some node; SQLite's
    /// one writer never sees another's claim).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    InFlight,
}

/// The response kept by a completed record.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// HTTP status of the first response.
    pub status: u16,
    /// Its exact body.
    pub body: Vec<u8>,
    /// Its `Location`, if any.
    pub location: Option<String>,
    /// The operation's record id.
    pub resource_id: uuid::Uuid,
}

/// Per-transaction limits of a claim (PostgreSQL's; SQLite's writer has none).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub struct Lease {
    /// How long the executor's session may sit idle in its transaction, or run one
    /// statement, before PostgreSQL ends it.
    pub lease: Duration,
    /// The longest a statement may wait for a row lock.
    pub lock_timeout: Duration,
}

/// The advisory-lock key of a scope: the first 8 bytes of its deterministic id (a
/// SHA-1-based UUIDv5 of tenant, operation and key). Two scopes sharing a key would
/// only see each other as in flight while both execute.
#[cfg(feature = "postgres")]
pub fn lock_key(scope: &Scope) -> i64 {
    let id = scope.deterministic_id();
    let b = id.as_bytes();
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// PostgreSQL: `idem_claim` (migration 0005) takes the lock and then reads the record
/// in a statement of its own inside one call: a volatile function's statements each take
/// a fresh snapshot, so the read sees a completion committed just before the lock was
/// granted. One round trip.
#[cfg(feature = "postgres")]
const CLAIM_SQL_PG: &str = "select locked, fingerprint, response_status, response_body, \
     location, expires_at, remaining_us from idem_claim($1, $2, $3, $4, $5, $6)";

#[cfg(feature = "postgres")]
#[derive(FromRow)]
struct ClaimRow {
    locked: bool,
    fingerprint: Option<String>,
    response_status: Option<i32>,
    response_body: Option<Vec<u8>>,
    location: Option<String>,
    expires_at: Option<Ts>,
    remaining_us: Option<i64>,
}

#[cfg(feature = "sqlite")]
const LOOKUP_SQL_SQLITE: &str = "select fingerprint, response_status, response_body, location, \
     expires_at, expires_at - $4 as remaining_us from idempotency_keys \
     where tenant = $1 and operation = $2 and idem_key = $3 and expires_at > $4";

/// Claims `scope` for the transaction `tx`, without waiting: on PostgreSQL the scope's
/// advisory lock and the lease's limits for this transaction, then the record, read in a
/// statement of its own.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
pub async fn claim(tx: &mut Tx, scope: &Scope, lease: Lease) -> Result<Claim, sqlx::Error> {
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(tx) => claim_postgres(tx, scope, lease).await,
        // The write gate and BEGIN IMMEDIATE already made this the only writer.
        #[cfg(feature = "sqlite")]
        Tx::Sqlite { tx, .. } => Ok(match lookup_sqlite(tx, scope).await? {
            Some(record) => Claim::Completed(record),
            None => Claim::Claimed,
        }),
    }
}

#[cfg(feature = "postgres")]
async fn claim_postgres(
    tx: &mut crate::db::PgTx,
    scope: &Scope,
    lease: Lease,
) -> Result<Claim, sqlx::Error> {
    let row = sqlx::query_as::<_, ClaimRow>(CLAIM_SQL_PG)
        .bind(lock_key(scope))
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .bind(millis(lease.lease))
        .bind(millis(lease.lock_timeout))
        .fetch_one(tx.exec())
        .await?;
    let locked = row.locked;
    let record = match row {
        ClaimRow {
            fingerprint: Some(fingerprint),
            response_status: Some(response_status),
            response_body: Some(response_body),
            location,
            expires_at: Some(expires_at),
            remaining_us: Some(remaining_us),
            ..
        } => Some(Record::from(RecordRow {
            fingerprint,
            response_status,
            response_body,
            location,
            expires_at,
            remaining_us,
        })),
        _ => None,
    };
    Ok(match (record, locked) {
        (Some(record), _) => Claim::Completed(record),
        (None, true) => Claim::Claimed,
        (None, false) => Claim::InFlight,
    })
}

#[cfg(feature = "postgres")]
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// SQLite's claim: the live completed record, read inside the writer's transaction
/// (PostgreSQL reads it inside `idem_claim()`).
#[cfg(feature = "sqlite")]
async fn lookup_sqlite(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    scope: &Scope,
) -> Result<Option<Record>, sqlx::Error> {
    let row = sqlx::query_as::<_, RecordRow>(LOOKUP_SQL_SQLITE)
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .bind(Ts::now())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(Record::from))
}

/// Inserts the completed record (over an expired one, never over a live one) and the
/// write's `new` audit row — one statement on PostgreSQL — inside the write's claimed
/// transaction. `false` when a live record stands, which a claim holder cannot meet:
/// the caller rolls back.
pub async fn complete(
    tx: &mut Tx,
    scope: &Scope,
    fingerprint: &str,
    response: &StoredResponse,
    ttl: Duration,
    audit: &AuditRow,
) -> Result<bool, sqlx::Error> {
    let audit = audit.sanitized();
    let audit = audit.as_ref();
    // $1..$9: the record, the same on both stores.
    macro_rules! bind_record {
        ($q:expr) => {
            $q.bind(&scope.tenant)
                .bind(scope.operation)
                .bind(scope.key.as_str())
                .bind(fingerprint)
                .bind(i32::from(response.status))
                .bind(&response.body)
                .bind(response.location.as_deref())
                .bind(Id(response.resource_id))
                .bind(audit.request_id.as_str())
        };
    }
    match tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(tx) => {
            let q = bind_record!(sqlx::query(COMPLETE_SQL_PG)).bind(ttl.as_secs_f64());
            let n = crate::telemetry::bind_audit!(q, audit)
                .execute(tx.exec())
                .await?
                .rows_affected();
            Ok(n == 1)
        }
        #[cfg(feature = "sqlite")]
        Tx::Sqlite { tx, .. } => {
            let now = Ts::now();
            let n = bind_record!(sqlx::query(COMPLETE_SQL_SQLITE))
                .bind(now)
                .bind(now.plus(ttl))
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            crate::telemetry::bind_audit!(sqlx::query(crate::telemetry::AUDIT_INSERT), audit)
                .execute(&mut **tx)
                .await?;
            Ok(true)
        }
    }
}

macro_rules! upsert_record {
    ($values:literal, $now:literal) => {
        concat!(
            "insert into idempotency_keys (tenant, operation, idem_key, fingerprint, \
               response_status, response_body, location, resource_id, request_id, \
               created_at, completed_at, expires_at) ",
            $values,
            " on conflict (tenant, operation, idem_key) do update set \
               fingerprint = excluded.fingerprint, response_status = excluded.response_status, \
               response_body = excluded.response_body, location = excluded.location, \
               resource_id = excluded.resource_id, request_id = excluded.request_id, \
               created_at = excluded.created_at, completed_at = excluded.completed_at, \
               expires_at = excluded.expires_at \
             where idempotency_keys.expires_at <= ",
            $now
        )
    };
}

#[cfg(feature = "postgres")]
const COMPLETE_SQL_PG: &str = concat!(
    "with record as (",
    upsert_record!(
        "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now(), \
         now() + make_interval(secs => $10))",
        "now() returning 1"
    ),
    ") ",
    crate::telemetry::audit_columns!(),
    "select $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27 \
     from record"
);

#[cfg(feature = "sqlite")]
const COMPLETE_SQL_SQLITE: &str = upsert_record!(
    "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
    "$10"
);

/// A scope's execution in flight, as PostgreSQL sees its claim.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Holder {
    /// The executor's backend.
    pub pid: i32,
    /// `active` (running a statement) or `idle in transaction`.
    pub state: String,
    /// When its transaction began.
    pub since: Ts,
    /// When its state last changed.
    pub state_change: Ts,
}

#[cfg(feature = "postgres")]
#[derive(FromRow)]
struct HolderRow {
    pid: i32,
    state: Option<String>,
    xact_start: Option<Ts>,
    state_change: Option<Ts>,
}

/// The session holding `scope`'s claim on PostgreSQL, if one does. (SQLite's claims are
/// the server process's own write transaction, invisible from outside it: `None`.)
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
pub async fn holder(db: &crate::db::Db, scope: &Scope) -> Result<Option<Holder>, sqlx::Error> {
    match db {
        #[cfg(feature = "postgres")]
        crate::db::Db::Postgres(pg) => holder_postgres(pg, scope).await,
        #[cfg(feature = "sqlite")]
        crate::db::Db::Sqlite { .. } => Ok(None),
    }
}

#[cfg(feature = "postgres")]
async fn holder_postgres(pg: &crate::db::Pg, scope: &Scope) -> Result<Option<Holder>, sqlx::Error> {
    let key = lock_key(scope);
    let mut tx = pg.begin().await?;
    // A bigint advisory key k is stored as classid = k >> 32, objid = k & 0xffffffff.
    let row = sqlx::query_as::<_, HolderRow>(
        "select a.pid, a.state, a.xact_start, a.state_change \
         from pg_locks l join pg_stat_activity a on a.pid = l.pid \
         where l.locktype = 'advisory' and l.granted and l.objsubid = 1 \
           and l.database = (select oid from pg_database where datname = current_database()) \
           and l.classid::bigint = ($1 >> 32) & 4294967295 \
           and l.objid::bigint = $1 & 4294967295",
    )
    .bind(key)
    .fetch_optional(tx.exec())
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| Holder {
        pid: r.pid,
        state: r.state.unwrap_or_default(),
        since: r.xact_start.unwrap_or_else(Ts::now),
        state_change: r.state_change.unwrap_or_else(Ts::now),
    }))
}

/// Reads the record of `scope` as it is stored, expired or not (operator tools).
pub async fn load(db: &crate::db::Db, scope: &Scope) -> Result<Option<Record>, sqlx::Error> {
    let now = Ts::now();
    let row = crate::on_db!(db, |c| {
        sqlx::query_as::<_, RecordRow>(
            "select fingerprint, response_status, response_body, location, expires_at, \
             cast(0 as bigint) as remaining_us from idempotency_keys \
             where tenant = $1 and operation = $2 and idem_key = $3",
        )
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .fetch_optional(c)
        .await
    })?;
    Ok(row.map(|r| {
        let mut rec = Record::from(r);
        let left = rec.expires_at.micros().saturating_sub(now.micros());
        rec.remaining = Duration::from_micros(u64::try_from(left).unwrap_or(0));
        rec
    }))
}
