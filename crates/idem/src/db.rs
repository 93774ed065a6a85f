//! One database handle over PostgreSQL and SQLite, and the types both stores share.
//!
//! Invariants:
//! - SQL is written once, with `$1..$n` placeholders whose first appearances are in
//!   ascending order (SQLite binds `$N` by number too), and run on either store through
//!   [`on_db!`](crate::on_db) / [`on_tx!`](crate::on_tx), which expand the query once per
//!   backend with the concrete executor.
//! - Timestamps ([`Ts`]) are microseconds since the epoch: `timestamptz` on PostgreSQL,
//!   `INTEGER` on SQLite. Ids ([`Id`]) are `uuid` on PostgreSQL and lowercase hyphenated
//!   `TEXT` on SQLite.
//! - On SQLite every write transaction holds the process's write gate (one writer at a
//!   time, FIFO, without busy-waiting inside SQLite) and begins with `BEGIN IMMEDIATE`.
//!   Waiting for the gate is bounded by the acquire timeout, like waiting for a connection.
//! - No connection goes back to the pool inside a transaction: a caller dropped in the
//!   middle of a command (a cancelled request) can leave one there, so every release is
//!   checked and such a connection is closed (which rolls it back) instead of reused.
//! - Work that must not be cut short by its caller's cancellation runs through
//!   [`detached`]: a task of its own that finishes whatever happens to the caller.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgTypeInfo, PgValueRef};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous, SqliteTypeInfo,
    SqliteValueRef,
};
use sqlx::{Connection, Database, Decode, Encode, Type};
#[cfg(feature = "postgres")]
use sqlx::{PgPool, Postgres};
#[cfg(feature = "sqlite")]
use sqlx::{Sqlite, SqlitePool};
#[cfg(feature = "sqlite")]
use tokio::sync::Mutex;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// Which store a [`Db`] talks to.
///
/// Both variants exist whatever the crate's features (a handle only ever reports a store
/// whose feature is on), so a `match` on it compiles under any feature set: code that
/// picks SQL by store needs no `#[cfg]` of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: the production store, shared by any number of nodes.
    Postgres,
    /// SQLite: the embedded single-process store.
    Sqlite,
}

/// A connection pool on one of the two stores.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL pool (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(Pg),
    /// SQLite pool (feature `sqlite`) and the process-wide write gate for its file.
    #[cfg(feature = "sqlite")]
    Sqlite {
        /// The pool (readers run concurrently under WAL).
        pool: SqlitePool,
        /// Held by every write: SQLite has one writer at a time.
        write_gate: Arc<Mutex<()>>,
        /// How long a write may wait for the gate before it is refused.
        gate_timeout: Duration,
    },
}

/// Options for [`Db::connect`]: start from `ConnectOptions::default()` and set what
/// differs (the struct may grow).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Largest pool size; `None` sizes it to the store (PostgreSQL 32, SQLite 8).
    pub pool_size: Option<u32>,
    /// How long a request may wait for a connection before it is refused.
    pub acquire_timeout: Duration,
    /// PostgreSQL: a session idle inside a transaction this long is ended by the server,
    /// so a frozen executor cannot hold row locks past its lease.
    pub idle_in_transaction_timeout: Option<Duration>,
    /// PostgreSQL: the longest a statement may run (`statement_timeout`); work that
    /// needs longer (the prune) raises it for its own transaction.
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL: the longest a statement may wait for a row or table lock
    /// (`lock_timeout`), so a write queued behind another gives up instead of holding
    /// its connection until the lock frees.
    pub lock_timeout: Option<Duration>,
    /// SQLite: create the file when it does not exist (the server does; an operator
    /// command pointed at a wrong path should say so instead).
    pub create_if_missing: bool,
    /// PostgreSQL: the URL points at a transaction-pooling proxy (PgBouncer
    /// `pool_mode = transaction`). Nothing may then outlive a transaction: every
    /// statement runs inside one, unprepared by name, and the timeouts are set per
    /// transaction instead of per session.
    pub transaction_pooler: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            pool_size: None,
            acquire_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: None,
            statement_timeout: None,
            lock_timeout: None,
            create_if_missing: true,
            transaction_pooler: false,
        }
    }
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://…`; a SQLite file is created if
    /// missing and opened in WAL mode with `synchronous=FULL`). A store whose cargo
    /// feature is off is refused with [`sqlx::Error::Configuration`].
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, sqlx::Error> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(sqlx::Error::Configuration(
                format!("unsupported database url {url:?}: use postgres://… or sqlite://…").into(),
            ));
        };
        match store {
            #[cfg(feature = "postgres")]
            Backend::Postgres => Pg::connect(url, opts).await.map(Db::Postgres),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => connect_sqlite(url, opts).await,
            #[allow(unreachable_patterns)]
            _ => Err(sqlx::Error::Configuration(
                format!(
                    "idem was built without the store of {url:?}: enable its cargo feature \
                     (`postgres` or `sqlite`)"
                )
                .into(),
            )),
        }
    }

    /// The store behind this handle.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Db::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// Begins a write transaction (on SQLite: takes the write gate, `BEGIN IMMEDIATE`).
    /// Fails with [`sqlx::Error::PoolTimedOut`] when no writer slot frees up within the
    /// acquire timeout.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Db::Postgres(pg) => Ok(Tx::Postgres(pg.begin().await?)),
            #[cfg(feature = "sqlite")]
            Db::Sqlite {
                pool,
                write_gate,
                gate_timeout,
            } => {
                let gate = lock_gate(write_gate, *gate_timeout).await?;
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Tx::Sqlite { tx, _gate: gate })
            }
        }
    }

    /// Takes the SQLite write gate for a single autocommit write (`None` on PostgreSQL),
    /// waiting at most the acquire timeout ([`sqlx::Error::PoolTimedOut`] after it).
    pub async fn write_gate(&self) -> Result<Option<OwnedMutexGuard<()>>, sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => Ok(None),
            #[cfg(feature = "sqlite")]
            Db::Sqlite {
                write_gate,
                gate_timeout,
                ..
            } => lock_gate(write_gate, *gate_timeout).await.map(Some),
        }
    }

    /// Can a write start now? On SQLite: the gate and the file's write lock are both
    /// obtainable within `within` (a connection left holding the lock fails this); on
    /// PostgreSQL: the store answers. The probe runs detached, so giving up on it never
    /// leaves a connection mid-command.
    pub async fn check_writable(&self, within: Duration) -> Result<(), sqlx::Error> {
        let db = self.clone();
        let probe = detached(async move {
            match db.backend() {
                Backend::Postgres => db.ping().await,
                Backend::Sqlite => db.begin().await?.rollback().await,
            }
        });
        tokio::time::timeout(within, probe)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Connections currently checked out of the pool.
    pub fn connections_in_use(&self) -> u32 {
        let (size, idle) = on_pool!(self, |pool| (pool.size(), pool.num_idle()));
        size.saturating_sub(idle as u32)
    }

    /// Connections open (idle or in use).
    pub fn connections_open(&self) -> u32 {
        on_pool!(self, |pool| pool.size())
    }

    /// The configured maximum pool size.
    pub fn max_connections(&self) -> u32 {
        on_pool!(self, |pool| pool.options().get_max_connections())
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// `select 1`: is the store reachable?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::on_db!(self, |c| sqlx::query("select 1")
            .execute(c)
            .await
            .map(|_| ()))
    }
}

/// Runs `$body` with `$pool` bound to the raw pool of either store (inside idem: pool
/// bookkeeping that never runs a statement, so the transaction pooler is no concern).
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            #[cfg(feature = "postgres")]
            Db::Postgres(pg) => {
                let $pool = &pg.pool;
                $body
            }
            #[cfg(feature = "sqlite")]
            Db::Sqlite { pool, .. } => {
                let $pool = pool;
                $body
            }
        }
    };
}
use on_pool;

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str, opts: &ConnectOptions) -> Result<Db, sqlx::Error> {
    let connect = SqliteConnectOptions::from_str(url)?
        .create_if_missing(opts.create_if_missing)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(opts.acquire_timeout)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(opts.pool_size.unwrap_or(8))
        .acquire_timeout(opts.acquire_timeout)
        // Checked as it goes back (below); an open file does not die idle.
        .test_before_acquire(false)
        .after_release(|conn, _| {
            Box::pin(async move {
                // The ping runs after any rollback a dropped transaction queued, so the
                // depth it leaves is the connection's real state. A BEGIN whose caller
                // vanished before its answer leaves depth 1 and the file's write lock
                // held: close that connection.
                conn.ping().await?;
                Ok(!conn.is_in_transaction())
            })
        })
        .connect_with(connect)
        .await?;
    Ok(Db::Sqlite {
        pool,
        write_gate: Arc::new(Mutex::new(())),
        gate_timeout: opts.acquire_timeout,
    })
}

#[cfg(feature = "sqlite")]
async fn lock_gate(
    gate: &Arc<Mutex<()>>,
    timeout: Duration,
) -> Result<OwnedMutexGuard<()>, sqlx::Error> {
    tokio::time::timeout(timeout, gate.clone().lock_owned())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)
}

/// Runs `work` in a task of its own and waits for it: if the caller is dropped (a
/// client disconnected, a deadline passed), the work still runs to its end, so no
/// transaction, lock or connection setting is abandoned half-way. A panic in `work`
/// surfaces as [`sqlx::Error::WorkerCrashed`].
pub async fn detached<T, F>(work: F) -> Result<T, sqlx::Error>
where
    F: std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "detached database work failed");
            Err(sqlx::Error::WorkerCrashed)
        }
    }
}

/// Whether `e` says the store is unavailable for a moment (a retry may succeed), rather
/// than that it refused the statement or its data. One classification serves the
/// answer to a client (`503` with `Retry-After`) and the audit writer's retries.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (08), serialization failure or deadlock (40),
        // insufficient resources (53, e.g. too many connections), operator intervention
        // (57P), a statement or lock timeout (57014, 55P03: the transaction rolled back);
        // SQLite: busy (5) / locked (6).
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("40")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "57014"
                || c == "55P03"
                || c == "5"
                || c == "6"
        }),
        _ => false,
    }
}

/// Whether `e` says the session under a transaction is gone (the server ended it: the
/// lease passed idle in the transaction, an operator terminated it, the server shut down;
/// or the connection broke). Such a transaction is rolled back unless its `COMMIT` had
/// already landed, so whoever retries must read what is stored before acting again.
pub fn session_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 25P03: idle_in_transaction_session_timeout;
        // 57P01/57P02/57P03: terminated by an administrator, crash shutdown, cannot
        // connect now.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || c == "25P03" || c == "57P01" || c == "57P02" || c == "57P03"
        }),
        _ => false,
    }
}

/// A PostgreSQL pool, and whether it goes through a transaction pooler.
#[cfg(feature = "postgres")]
#[derive(Clone, Debug)]
pub struct Pg {
    pool: PgPool,
    pooled: bool,
    /// Through a pooler: the session's settings, set again in every transaction.
    per_transaction: Option<Arc<str>>,
}

#[cfg(feature = "postgres")]
impl Pg {
    /// Connects a PostgreSQL pool (see [`Db::connect`]).
    async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, sqlx::Error> {
        let mut connect = PgConnectOptions::from_str(url)?;
        let settings: Vec<(&'static str, String)> = [
            (
                "idle_in_transaction_session_timeout",
                opts.idle_in_transaction_timeout,
            ),
            ("statement_timeout", opts.statement_timeout),
            ("lock_timeout", opts.lock_timeout),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|t| (name, format!("{}ms", t.as_millis()))))
        .collect();
        if opts.transaction_pooler {
            // A pooler hands each transaction any server connection: no session
            // settings, no statement prepared by name.
            connect = connect.statement_cache_capacity(0);
        } else {
            for (name, value) in &settings {
                connect = connect.options([(*name, value.as_str())]);
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.pool_size.unwrap_or(32))
            .acquire_timeout(opts.acquire_timeout)
            // sqlx pings every connection as it goes back to the pool; pinging it again
            // as it comes out would cost every transaction one more round trip. A
            // connection that died while idle fails its first statement instead, and
            // `Pg::begin` then takes another one.
            .test_before_acquire(false)
            // A rollback queued by a dropped transaction has already lowered the depth,
            // so a non-zero depth means a transaction nobody will finish.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(connect)
            .await?;
        let per_transaction = if opts.transaction_pooler {
            Some(Arc::from(
                settings
                    .iter()
                    .map(|(name, value)| format!("set_config('{name}', '{value}', true)"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
        } else {
            None
        };
        Ok(Pg {
            pool,
            pooled: opts.transaction_pooler,
            per_transaction: per_transaction.filter(|s: &Arc<str>| !s.is_empty()),
        })
    }

    /// The pool. Through a transaction pooler, statements must run inside a transaction
    /// on [`PgTx::exec`] instead ([`on_db!`](crate::on_db) does that).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the URL is a transaction-pooling proxy.
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    /// Begins a transaction (through a pooler: with the session's settings for it).
    pub async fn begin(&self) -> Result<PgTx, sqlx::Error> {
        let mut tx = match self.pool.begin().await {
            // The connection died while idle in the pool (connections are not pinged as
            // they leave it): nothing was sent but `BEGIN`; the broken connection is
            // closed as it goes back, so take another one.
            Err(e) if session_lost(&e) => self.pool.begin().await?,
            other => other?,
        };
        if let Some(settings) = &self.per_transaction {
            sqlx::query(&format!("select {settings}"))
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        Ok(PgTx {
            tx,
            unnamed: self.pooled,
        })
    }
}

/// A PostgreSQL transaction; its statements run through [`PgTx::exec`].
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
    unnamed: bool,
}

#[cfg(feature = "postgres")]
impl PgTx {
    /// The executor for this transaction's statements (prepared without a name through
    /// a transaction pooler, where a named statement would outlive the transaction).
    pub fn exec(&mut self) -> PgExec<'_> {
        PgExec {
            conn: &mut self.tx,
            unnamed: self.unnamed,
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// The executor of a [`PgTx`].
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PgExec<'c> {
    conn: &'c mut sqlx::PgConnection,
    unnamed: bool,
}

/// A query run without a named prepared statement.
#[cfg(feature = "postgres")]
struct Unnamed<Q>(Q);

#[cfg(feature = "postgres")]
impl<'q, Q: sqlx::Execute<'q, Postgres>> sqlx::Execute<'q, Postgres> for Unnamed<Q> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }
    fn statement(&self) -> Option<&<Postgres as Database>::Statement<'q>> {
        None
    }
    fn take_arguments(
        &mut self,
    ) -> Result<Option<<Postgres as Database>::Arguments<'q>>, BoxDynError> {
        self.0.take_arguments()
    }
    fn persistent(&self) -> bool {
        false
    }
}

#[cfg(feature = "postgres")]
type PgStep = sqlx::Either<sqlx::postgres::PgQueryResult, sqlx::postgres::PgRow>;

#[cfg(feature = "postgres")]
impl<'c> sqlx::Executor<'c> for PgExec<'c> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures::stream::BoxStream<'e, Result<PgStep, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        if self.unnamed {
            self.conn.fetch_many(Unnamed(query))
        } else {
            self.conn.fetch_many(query)
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures::future::BoxFuture<'e, Result<Option<sqlx::postgres::PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        if self.unnamed {
            self.conn.fetch_optional(Unnamed(query))
        } else {
            self.conn.fetch_optional(query)
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> futures::future::BoxFuture<'e, Result<sqlx::postgres::PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> futures::future::BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.describe(sql)
    }
}

/// A write transaction on either store.
#[derive(Debug)]
pub enum Tx {
    /// PostgreSQL transaction (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(PgTx),
    /// SQLite transaction (feature `sqlite`), holding the write gate until it ends.
    #[cfg(feature = "sqlite")]
    Sqlite {
        /// The transaction.
        tx: sqlx::Transaction<'static, Sqlite>,
        /// The write gate, released when the transaction is dropped.
        _gate: OwnedMutexGuard<()>,
    },
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(tx) => tx.commit().await,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite { tx, .. } => tx.commit().await,
        }
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(tx) => tx.rollback().await,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite { tx, .. } => tx.rollback().await,
        }
    }

    /// The store behind this transaction.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// `" for update"` on PostgreSQL, `""` on SQLite (whose writer already holds the only
    /// write lock): append to a `select` that must lock the rows it reads.
    pub fn for_update(&self) -> &'static str {
        match self {
            #[cfg(feature = "postgres")]
            Tx::Postgres(_) => " for update",
            #[cfg(feature = "sqlite")]
            Tx::Sqlite { .. } => "",
        }
    }
}

// `on_db!` and `on_tx!` expand in the caller's crate, where `#[cfg(feature = …)]` would
// read the caller's features: each is defined once per combination of idem's own, and
// expands to a `match` with one arm per store compiled in.

/// Runs `$body` with `$c` bound to the pool of either store: `on_db!(db, |c| query.fetch_one(c).await)`.
/// The body is expanded once per backend, so it must evaluate to the same type on both,
/// a `Result` whose error converts from [`sqlx::Error`]. Through a transaction pooler
/// the body runs inside a transaction of its own.
#[cfg(all(feature = "postgres", feature = "sqlite"))]
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Postgres(pg) => $crate::__on_pg!(pg, |$c| $body),
            $crate::db::Db::Sqlite { pool, .. } => {
                let $c = pool;
                $body
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the PostgreSQL pool: `on_db!(db, |c| query.fetch_one(c).await)`.
/// Through a transaction pooler the body runs inside a transaction of its own.
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Postgres(pg) => $crate::__on_pg!(pg, |$c| $body),
        }
    };
}

/// Runs `$body` with `$c` bound to the SQLite pool: `on_db!(db, |c| query.fetch_one(c).await)`.
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite { pool, .. } => {
                let $c = pool;
                $body
            }
        }
    };
}

/// The PostgreSQL arm of [`on_db!`](crate::on_db).
#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __on_pg {
    ($pg:ident, |$c:ident| $body:expr) => {
        if $pg.pooled() {
            match $pg.begin().await {
                Ok(mut tx) => {
                    let result = {
                        let $c = tx.exec();
                        $body
                    };
                    match result {
                        Ok(v) => match tx.commit().await {
                            Ok(()) => Ok(v),
                            Err(e) => Err(e.into()),
                        },
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e.into()),
            }
        } else {
            let $c = $pg.pool();
            $body
        }
    };
}

/// Runs `$body` with `$c` bound to the connection of a [`Tx`]: `on_tx!(tx, |c| query.execute(c).await)`.
#[cfg(all(feature = "postgres", feature = "sqlite"))]
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Postgres(tx) => {
                let $c = tx.exec();
                $body
            }
            $crate::db::Tx::Sqlite { tx, .. } => {
                let $c = &mut **tx;
                $body
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the connection of a [`Tx`]: `on_tx!(tx, |c| query.execute(c).await)`.
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Postgres(tx) => {
                let $c = tx.exec();
                $body
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the connection of a [`Tx`]: `on_tx!(tx, |c| query.execute(c).await)`.
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite { tx, .. } => {
                let $c = &mut **tx;
                $body
            }
        }
    };
}

/// A UTC instant with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(i64);

impl Ts {
    /// Now, truncated to microseconds.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// From microseconds since the epoch.
    pub fn from_micros(us: i64) -> Self {
        Self(us)
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// This instant plus a duration (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// This instant minus a duration (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// As a chrono instant.
    pub fn to_chrono(self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0).single().unwrap_or_default()
    }

    /// From a chrono instant (truncated to microseconds).
    pub fn from_chrono(t: DateTime<Utc>) -> Self {
        Self(t.timestamp_micros())
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn render(self) -> String {
        self.to_chrono()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    /// The UTC calendar date.
    pub fn date(self) -> chrono::NaiveDate {
        self.to_chrono().date_naive()
    }
}

impl serde::Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.render())
    }
}

#[cfg(feature = "postgres")]
impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

#[cfg(feature = "postgres")]
impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer<'_>,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.to_chrono(), buf)
    }
}

#[cfg(feature = "postgres")]
impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_chrono(
            <DateTime<Utc> as Decode<Postgres>>::decode(value)?,
        ))
    }
}

#[cfg(feature = "sqlite")]
impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
}

#[cfg(feature = "sqlite")]
impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode_by_ref(&self.0, buf)
    }
}

#[cfg(feature = "sqlite")]
impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}

/// A UUID column: `uuid` on PostgreSQL, lowercase hyphenated `TEXT` on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub Uuid);

impl From<Uuid> for Id {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

#[cfg(feature = "postgres")]
impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

#[cfg(feature = "postgres")]
impl Encode<'_, Postgres> for Id {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer<'_>,
    ) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

#[cfg(feature = "postgres")]
impl<'r> Decode<'r, Postgres> for Id {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(feature = "sqlite")]
impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

#[cfg(feature = "sqlite")]
impl<'q> Encode<'q, Sqlite> for Id {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.hyphenated().to_string(), buf)
    }
}

#[cfg(feature = "sqlite")]
impl<'r> Decode<'r, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let s = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(Uuid::parse_str(s)?))
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}
