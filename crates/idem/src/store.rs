//! The idempotency record store: one row per scope in `idempotency_keys`.
//!
//! Invariants:
//! - A row is `in_flight` (claimed; `lease_until` bounds the claim, `fence` names the
//!   claim) or `completed` (holds the status and exact body of the first response).
//! - A claim succeeds on an absent row, an expired row, or an in-flight row whose lease
//!   ended; every successful claim increments `fence`. Completion and release match on
//!   `fence`, so an executor whose claim was taken over can change nothing (fencing).
//! - Completion runs inside the operation's own transaction, so the business write and
//!   the completed record commit together or not at all.
//! - Claim, release and renewal run [`detached`]: a caller that is cancelled mid-way
//!   (a client gone, a deadline) cannot leave a connection relaxed or a gate taken.

use std::time::Duration;

use sqlx::FromRow;

use crate::db::{detached, Db, Id, Ts, Tx};
use crate::key::Scope;

/// The state of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Claimed by an executor that has not finished.
    InFlight,
    /// Finished; the first response is stored.
    Completed,
}

/// A stored idempotency record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Fingerprint of the request that claimed the key.
    pub fingerprint: String,
    /// In flight or completed.
    pub state: RecordState,
    /// The claim's fencing token.
    pub fence: i64,
    /// End of the claim's lease (in flight only).
    pub lease_until: Option<Ts>,
    /// Stored status (completed only).
    pub response_status: Option<u16>,
    /// Stored body, byte for byte (completed only).
    pub response_body: Option<Vec<u8>>,
    /// Stored `Location` (completed only).
    pub location: Option<String>,
    /// When the record stops counting.
    pub expires_at: Ts,
}

#[derive(FromRow)]
struct RecordRow {
    fingerprint: String,
    state: String,
    fence: i64,
    lease_until: Option<Ts>,
    response_status: Option<i32>,
    response_body: Option<Vec<u8>>,
    location: Option<String>,
    expires_at: Ts,
}

impl From<RecordRow> for Record {
    fn from(r: RecordRow) -> Self {
        Record {
            fingerprint: r.fingerprint,
            state: if r.state == "completed" {
                RecordState::Completed
            } else {
                RecordState::InFlight
            },
            fence: r.fence,
            lease_until: r.lease_until,
            response_status: r.response_status.and_then(|s| u16::try_from(s).ok()),
            response_body: r.response_body,
            location: r.location,
            expires_at: r.expires_at,
        }
    }
}

/// What a claim attempt found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This caller now holds the key under `fence`.
    Claimed {
        /// The fencing token of this claim.
        fence: i64,
    },
    /// A live record stands: completed, or in flight under a live lease.
    Existing(Record),
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

macro_rules! claim_sql {
    ($values:literal) => {
        concat!(
            "insert into idempotency_keys \
             (tenant, operation, idem_key, fingerprint, state, fence, lease_until, request_id, created_at, expires_at) ",
            $values,
            " on conflict (tenant, operation, idem_key) do update set \
               fingerprint = excluded.fingerprint, state = 'in_flight', fence = idempotency_keys.fence + 1, \
               lease_until = excluded.lease_until, request_id = excluded.request_id, \
               created_at = excluded.created_at, expires_at = excluded.expires_at, \
               response_status = null, response_body = null, location = null, resource_id = null, \
               completed_at = null \
             where idempotency_keys.expires_at <= $7 \
                or (idempotency_keys.state = 'in_flight' and idempotency_keys.lease_until <= $7) \
             returning fence"
        )
    };
}

/// The claim on SQLite (run with `synchronous = normal` on its connection).
const CLAIM_SQL: &str = claim_sql!("values ($1, $2, $3, $4, 'in_flight', 1, $5, $6, $7, $8)");

/// The claim on PostgreSQL: one autocommit statement whose own commit does not wait for
/// the log flush (`set_config(…, true)` lasts until the end of its implicit transaction).
const CLAIM_SQL_PG: &str = claim_sql!(
    "select $1, $2, $3, $4, 'in_flight', 1, $5, $6, $7, $8 \
     from (select set_config('synchronous_commit', 'off', true)) as relaxed"
);

const LOAD_SQL: &str = "select fingerprint, state, fence, lease_until, response_status, \
     response_body, location, expires_at from idempotency_keys \
     where tenant = $1 and operation = $2 and idem_key = $3";

/// Tries to claim `scope` for `lease`; the record lives `ttl` once completed.
pub async fn claim(
    db: &Db,
    scope: &Scope,
    fingerprint: &str,
    request_id: &str,
    lease: Duration,
    ttl: Duration,
) -> Result<Claim, sqlx::Error> {
    let (db, scope) = (db.clone(), scope.clone());
    let (fingerprint, request_id) = (fingerprint.to_owned(), request_id.to_owned());
    detached(async move {
        loop {
            let claimed = claim_once(&db, &scope, &fingerprint, &request_id, lease, ttl).await?;
            if let Some(fence) = claimed {
                return Ok(Claim::Claimed { fence });
            }
            if let Some(record) = load(&db, &scope).await? {
                return Ok(Claim::Existing(record));
            }
            // Released between our insert and our read: try again.
        }
    })
    .await
}

macro_rules! claim_query {
    ($sql:expr, $scope:expr, $fingerprint:expr, $request_id:expr, $now:expr, $lease:expr, $ttl:expr) => {
        sqlx::query_scalar::<_, i64>($sql)
            .bind(&$scope.tenant)
            .bind($scope.operation)
            .bind($scope.key.as_str())
            .bind($fingerprint)
            .bind($now.plus($lease))
            .bind($request_id)
            .bind($now)
            .bind($now.plus($ttl))
    };
}

/// One claim attempt, committed without waiting for the log flush.
///
/// A claim needs no durability of its own: the write it guards commits later with a
/// full flush, and both stores write their log sequentially, so that flush makes the
/// claim durable too. A claim lost to a database crash can only belong to an execution
/// whose transaction the same crash rolled back, so the key is rightly free again.
/// This saves one synchronous flush per new write.
async fn claim_once(
    db: &Db,
    scope: &Scope,
    fingerprint: &str,
    request_id: &str,
    lease: Duration,
    ttl: Duration,
) -> Result<Option<i64>, sqlx::Error> {
    let now = Ts::now();
    match db {
        Db::Postgres(pool) => {
            claim_query!(
                CLAIM_SQL_PG,
                scope,
                fingerprint,
                request_id,
                now,
                lease,
                ttl
            )
            .fetch_optional(pool)
            .await
        }
        Db::Sqlite { pool, .. } => {
            let _gate = db.write_gate().await?;
            let mut conn = pool.acquire().await?;
            sqlx::query("pragma synchronous = normal")
                .execute(&mut *conn)
                .await?;
            let fence = claim_query!(CLAIM_SQL, scope, fingerprint, request_id, now, lease, ttl)
                .fetch_optional(&mut *conn)
                .await;
            if let Err(e) = sqlx::query("pragma synchronous = full")
                .execute(&mut *conn)
                .await
            {
                // Never hand a connection back to the pool with relaxed durability.
                let _ = conn.close().await;
                return Err(e);
            }
            fence
        }
    }
}

/// Reads the record of `scope`, whatever its state.
pub async fn load(db: &Db, scope: &Scope) -> Result<Option<Record>, sqlx::Error> {
    let row = on_db!(db, |c| {
        sqlx::query_as::<_, RecordRow>(LOAD_SQL)
            .bind(&scope.tenant)
            .bind(scope.operation)
            .bind(scope.key.as_str())
            .fetch_optional(c)
            .await
    })?;
    Ok(row.map(Record::from))
}

/// Marks the claim `fence` completed with `response`, inside the operation's transaction.
/// Returns `false` when the claim was lost (taken over): the caller must roll back.
pub async fn complete(
    tx: &mut Tx,
    scope: &Scope,
    fence: i64,
    response: &StoredResponse,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let now = Ts::now();
    let n = on_tx!(tx, |c| {
        sqlx::query(
            "update idempotency_keys set state = 'completed', response_status = $1, \
             response_body = $2, location = $3, resource_id = $4, completed_at = $5, \
             expires_at = $6, lease_until = null \
             where tenant = $7 and operation = $8 and idem_key = $9 and fence = $10 \
               and state = 'in_flight'",
        )
        .bind(i32::from(response.status))
        .bind(&response.body)
        .bind(response.location.as_deref())
        .bind(Id(response.resource_id))
        .bind(now)
        .bind(now.plus(ttl))
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .bind(fence)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Frees the key held under `fence` (after a failed execution).
pub async fn release(db: &Db, scope: &Scope, fence: i64) -> Result<(), sqlx::Error> {
    let (db, scope) = (db.clone(), scope.clone());
    detached(async move { release_now(&db, &scope, fence).await }).await
}

async fn release_now(db: &Db, scope: &Scope, fence: i64) -> Result<(), sqlx::Error> {
    let _gate = db.write_gate().await?;
    on_db!(db, |c| {
        sqlx::query(
            "delete from idempotency_keys where tenant = $1 and operation = $2 \
             and idem_key = $3 and fence = $4 and state = 'in_flight'",
        )
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .bind(fence)
        .execute(c)
        .await
        .map(|_| ())
    })
}

/// Extends the lease of claim `fence`; `false` when the claim is no longer ours.
pub async fn renew(
    db: &Db,
    scope: &Scope,
    fence: i64,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let (db, scope) = (db.clone(), scope.clone());
    detached(async move { renew_now(&db, &scope, fence, lease).await }).await
}

async fn renew_now(
    db: &Db,
    scope: &Scope,
    fence: i64,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let _gate = db.write_gate().await?;
    let n = on_db!(db, |c| {
        sqlx::query(
            "update idempotency_keys set lease_until = $1 where tenant = $2 and operation = $3 \
             and idem_key = $4 and fence = $5 and state = 'in_flight'",
        )
        .bind(Ts::now().plus(lease))
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .bind(fence)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Frees an in-flight claim by hand (an operator's release), only if it is still exactly
/// the claim that was read: the same fence and the same lease end. A live executor renews
/// its lease, so a claim it renewed since is never released. Returns whether it was.
pub async fn release_unchanged(
    tx: &mut Tx,
    scope: &Scope,
    fence: i64,
    lease_until: Ts,
) -> Result<bool, sqlx::Error> {
    let n = on_tx!(tx, |c| {
        sqlx::query(
            "delete from idempotency_keys where tenant = $1 and operation = $2 \
             and idem_key = $3 and fence = $4 and state = 'in_flight' and lease_until = $5",
        )
        .bind(&scope.tenant)
        .bind(scope.operation)
        .bind(scope.key.as_str())
        .bind(fence)
        .bind(lease_until)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}
