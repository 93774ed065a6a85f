//! Schema migrations: idem's own tables ([`IDEM`]), and an application's
//! ([`MigrationSet`]).
//!
//! idem keeps the bookkeeping of its migrations in a table of its own,
//! `idem_migrations (version, description, checksum, installed_on, execution_ms)`; an
//! application's sqlx migrations keep theirs in sqlx's `_sqlx_migrations`, where
//! sqlx-cli (`sqlx migrate info`, `sqlx migrate run`) finds only the application's.
//! sqlx 0.8 cannot name its table, so [`IDEM`] runs idem's embedded migrations itself.
//!
//! Invariants of [`IDEM`]'s run:
//! - Each migration runs in a transaction of its own, which also writes its bookkeeping
//!   row: it is applied and recorded together, or neither.
//! - Each migration is applied once per database, however many nodes start together: on
//!   PostgreSQL the run holds a session advisory lock (the two-`integer` key space; the
//!   single-`bigint` one belongs to the claims) on a connection of its own, so the other
//!   nodes wait for it and then find nothing pending; on SQLite every migration's
//!   transaction begins with `BEGIN IMMEDIATE` (the one writer) and checks again that
//!   its version is still pending.
//! - An applied migration whose text changed (checksum) stops the run with
//!   [`MigrateError::VersionMismatch`]: migrations are never edited once released.
//!   Versions applied by a newer idem are left alone, so older nodes of a rolling
//!   deployment still start.
//! - Adoption: a database migrated before idem had its own table holds idem's versions in
//!   `_sqlx_migrations`. The first run moves them (recognised by version and description,
//!   their checksums checked) into `idem_migrations`, keeping when they were applied, in
//!   one transaction: nothing runs twice, and the application's migrator no longer meets
//!   versions it does not know.
//! - Migrations hold a session lock and change the schema: through a transaction pooler
//!   (`Pg::pooled`) they are refused, never attempted. Listing them works everywhere.

use std::time::Instant;

use sqlx::migrate::{MigrateError, Migration, Migrator};

use crate::db::{detached, Backend, Db, Ts, Tx};

/// idem's migrations for this handle's store.
fn idem_migrator(db: &Db) -> Migrator {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(_) => sqlx::migrate!("./migrations/postgres"),
        #[cfg(feature = "sqlite")]
        Db::Sqlite { .. } => sqlx::migrate!("./migrations/sqlite"),
    }
}

/// The run's session lock on PostgreSQL, in the two-`integer` key space.
#[cfg(feature = "postgres")]
const MIGRATION_LOCK: (i32, i32) = (0x1de3, 0x9a10);

/// idem's own migrations (records and audit log), applied with their bookkeeping in
/// `idem_migrations`; see the [module](self) documentation.
#[derive(Debug, Clone, Copy)]
pub struct IdemMigrations {
    _private: (),
}

/// idem's own migrations: run `idem::migrate::IDEM.run(&db)` at startup.
pub const IDEM: IdemMigrations = IdemMigrations { _private: () };

impl IdemMigrations {
    /// Applies every pending migration of idem (after adopting the bookkeeping of a
    /// database migrated through `_sqlx_migrations`). Refused through a transaction
    /// pooler. Runs detached: a caller dropped mid-run leaves no lock or transaction.
    pub async fn run(&self, db: &Db) -> Result<(), MigrateError> {
        refuse_pooler(db)?;
        let db = db.clone();
        detached(async move { Ok(run_locked(&db).await) }).await?
    }

    /// Versions of idem's migrations not yet applied to `db`.
    pub async fn pending(&self, db: &Db) -> Result<Vec<i64>, sqlx::Error> {
        Ok(unapplied(self.listed(db).await?))
    }

    /// Every migration of idem: version, description, and whether `db` has it (in
    /// `idem_migrations`, or still in `_sqlx_migrations` before the first run adopts it).
    pub async fn listed(&self, db: &Db) -> Result<Vec<(i64, String, bool)>, sqlx::Error> {
        let migrator = idem_migrator(db);
        let mut applied: Vec<i64> = Vec::new();
        if table_exists(db, "idem_migrations").await? {
            applied = on_db!(db, |c| {
                sqlx::query_scalar::<_, i64>("select version from idem_migrations")
                    .fetch_all(c)
                    .await
            })?;
        }
        if table_exists(db, "_sqlx_migrations").await? {
            let legacy: Vec<SqlxRow> = on_db!(db, |c| {
                sqlx::query_as::<_, SqlxRow>(SQLX_ROWS).fetch_all(c).await
            })?;
            applied.extend(
                legacy
                    .iter()
                    .filter(|row| row.success && idem_migration(&migrator, row).is_some())
                    .map(|row| row.version),
            );
        }
        Ok(list(&migrator, &applied))
    }
}

/// Every migration of `migrator`: version, description, and whether it is `applied`.
fn list(migrator: &Migrator, applied: &[i64]) -> Vec<(i64, String, bool)> {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| {
            (
                m.version,
                m.description.to_string(),
                applied.contains(&m.version),
            )
        })
        .collect()
}

fn unapplied(listed: Vec<(i64, String, bool)>) -> Vec<i64> {
    listed
        .into_iter()
        .filter(|(_, _, applied)| !applied)
        .map(|(v, _, _)| v)
        .collect()
}

/// A row of sqlx's bookkeeping.
#[derive(sqlx::FromRow)]
struct SqlxRow {
    version: i64,
    description: String,
    checksum: Vec<u8>,
    success: bool,
}

const SQLX_ROWS: &str =
    "select version, description, checksum, success from _sqlx_migrations order by version";

/// The migration of idem a `_sqlx_migrations` row records, if it records one of idem's:
/// same version and same description (the file name), whatever its checksum.
fn idem_migration<'m>(migrator: &'m Migrator, row: &SqlxRow) -> Option<&'m Migration> {
    migrator
        .iter()
        .find(|m| m.version == row.version && m.description == row.description)
}

fn refuse_pooler(db: &Db) -> Result<(), MigrateError> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pg) if pg.pooled() => Err(MigrateError::Execute(sqlx::Error::Configuration(
            "migrations hold a session lock: run them against PostgreSQL itself, not through \
             a transaction pooler"
                .into(),
        ))),
        _ => Ok(()),
    }
}

/// Takes the run's lock (PostgreSQL), then applies.
async fn run_locked(db: &Db) -> Result<(), MigrateError> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pg) => {
            // A session lock on a connection taken out of the pool (so a pool of one
            // still has one for the work) and closed afterwards, which releases it.
            let mut lock = pg.pool().acquire().await?.detach();
            sqlx::query("select pg_advisory_lock($1, $2)")
                .bind(MIGRATION_LOCK.0)
                .bind(MIGRATION_LOCK.1)
                .execute(&mut lock)
                .await?;
            let applied = apply(db).await;
            let _ = sqlx::Connection::close(lock).await;
            applied
        }
        #[cfg(feature = "sqlite")]
        Db::Sqlite { .. } => apply(db).await,
    }
}

async fn apply(db: &Db) -> Result<(), MigrateError> {
    let migrator = idem_migrator(db);
    let mut tx = db.begin().await?;
    create_table(&mut tx).await?;
    adopt_sqlx_rows(&mut tx, &migrator).await?;
    tx.commit().await?;
    for m in migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        let mut tx = db.begin().await?;
        if is_applied(&mut tx, m).await? {
            tx.rollback().await?;
            continue;
        }
        let started = Instant::now();
        // Several statements, no parameters: the simple query protocol, as sqlx's own.
        on_tx!(&mut tx, |c| sqlx::Executor::execute(c, m.sql.as_ref())
            .await
            .map(|_| ()))
        .map_err(|e| MigrateError::ExecuteMigration(e, m.version))?;
        let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        on_tx!(&mut tx, |c| sqlx::query(
            "insert into idem_migrations \
             (version, description, checksum, installed_on, execution_ms) \
             values ($1, $2, $3, $4, $5)"
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .bind(Ts::now())
        .bind(ms)
        .execute(c)
        .await
        .map(|_| ()))?;
        tx.commit().await?;
        tracing::info!(version = m.version, description = %m.description, ms, "idem migration applied");
    }
    Ok(())
}

/// Whether `m` is applied already; an applied migration whose text changed is an error.
async fn is_applied(tx: &mut Tx, m: &Migration) -> Result<bool, MigrateError> {
    let checksum: Option<Vec<u8>> = on_tx!(tx, |c| sqlx::query_scalar(
        "select checksum from idem_migrations where version = $1"
    )
    .bind(m.version)
    .fetch_optional(c)
    .await)?;
    match checksum {
        Some(applied) if applied != *m.checksum => Err(MigrateError::VersionMismatch(m.version)),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

async fn create_table(tx: &mut Tx) -> Result<(), sqlx::Error> {
    let ddl = match tx.backend() {
        Backend::Postgres => {
            "create table if not exists idem_migrations (\
               version bigint primary key, description text not null, \
               checksum bytea not null, installed_on timestamptz not null, \
               execution_ms bigint not null)"
        }
        Backend::Sqlite => {
            "create table if not exists idem_migrations (\
               version integer primary key, description text not null, \
               checksum blob not null, installed_on integer not null, \
               execution_ms integer not null)"
        }
    };
    on_tx!(tx, |c| sqlx::query(ddl).execute(c).await.map(|_| ()))
}

/// Moves the rows of idem's migrations from `_sqlx_migrations` into `idem_migrations`
/// (inside the caller's transaction), keeping when they were applied and how long they
/// took. A row left failed, or whose checksum differs from idem's file, stops the run.
async fn adopt_sqlx_rows(tx: &mut Tx, migrator: &Migrator) -> Result<(), MigrateError> {
    let exists = match tx.backend() {
        Backend::Postgres => "select to_regclass('_sqlx_migrations') is not null",
        Backend::Sqlite => {
            "select exists (select 1 from sqlite_master \
             where type = 'table' and name = '_sqlx_migrations')"
        }
    };
    if !on_tx!(tx, |c| sqlx::query_scalar::<_, bool>(exists)
        .fetch_one(c)
        .await)?
    {
        return Ok(());
    }
    // sqlx keeps nanoseconds; SQLite's `installed_on` is `CURRENT_TIMESTAMP` text.
    let copy = match tx.backend() {
        Backend::Postgres => {
            "insert into idem_migrations \
             (version, description, checksum, installed_on, execution_ms) \
             select version, description, checksum, installed_on, execution_time / 1000000 \
             from _sqlx_migrations where version = $1"
        }
        Backend::Sqlite => {
            "insert into idem_migrations \
             (version, description, checksum, installed_on, execution_ms) \
             select version, description, checksum, \
               cast(strftime('%s', installed_on) as integer) * 1000000, \
               execution_time / 1000000 \
             from _sqlx_migrations where version = $1"
        }
    };
    let rows: Vec<SqlxRow> = on_tx!(tx, |c| sqlx::query_as::<_, SqlxRow>(SQLX_ROWS)
        .fetch_all(c)
        .await)?;
    for row in &rows {
        let Some(m) = idem_migration(migrator, row) else {
            continue; // the application's
        };
        if !row.success {
            return Err(MigrateError::Dirty(row.version));
        }
        if row.checksum != *m.checksum {
            return Err(MigrateError::VersionMismatch(row.version));
        }
        on_tx!(tx, |c| sqlx::query(copy)
            .bind(row.version)
            .execute(c)
            .await
            .map(|_| ()))?;
        on_tx!(tx, |c| sqlx::query(
            "delete from _sqlx_migrations where version = $1"
        )
        .bind(row.version)
        .execute(c)
        .await
        .map(|_| ()))?;
        tracing::info!(
            version = row.version,
            "idem migration adopted from _sqlx_migrations"
        );
    }
    Ok(())
}

/// Whether `table` exists (in the search path on PostgreSQL).
async fn table_exists(db: &Db, table: &str) -> Result<bool, sqlx::Error> {
    let sql = match db.backend() {
        Backend::Postgres => "select to_regclass($1) is not null",
        Backend::Sqlite => {
            "select exists (select 1 from sqlite_master where type = 'table' and name = $1)"
        }
    };
    on_db!(db, |c| sqlx::query_scalar::<_, bool>(sql)
        .bind(table)
        .fetch_one(c)
        .await)
}

/// An application's migrations, one set per store, kept by sqlx in `_sqlx_migrations`
/// (where sqlx-cli sees them) — idem's own are elsewhere, so the two never meet.
///
/// On a database migrated before idem kept its own table, run [`IDEM`] first: it moves
/// idem's rows out of `_sqlx_migrations`, which this set's migrator would otherwise
/// report as applied but missing.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// PostgreSQL migrations (`|| sqlx::migrate!("./migrations/postgres")`).
    #[cfg(feature = "postgres")]
    pub postgres: fn() -> Migrator,
    /// SQLite migrations.
    #[cfg(feature = "sqlite")]
    pub sqlite: fn() -> Migrator,
}

impl MigrationSet {
    fn for_db(&self, db: &Db) -> Migrator {
        match db {
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => (self.postgres)(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite { .. } => (self.sqlite)(),
        }
    }

    /// Applies every pending migration of this set (sqlx's migrator, its lock and its
    /// checks). Refused through a transaction pooler.
    pub async fn run(&self, db: &Db) -> Result<(), MigrateError> {
        refuse_pooler(db)?;
        let migrator = self.for_db(db);
        match db {
            #[cfg(feature = "postgres")]
            Db::Postgres(pg) => migrator.run(pg.pool()).await,
            #[cfg(feature = "sqlite")]
            Db::Sqlite { pool, .. } => migrator.run(pool).await,
        }
    }

    /// Versions of this set not yet applied to `db`.
    pub async fn pending(&self, db: &Db) -> Result<Vec<i64>, sqlx::Error> {
        Ok(unapplied(self.listed(db).await?))
    }

    /// Every migration of this set: version, description, and whether `db` has it.
    pub async fn listed(&self, db: &Db) -> Result<Vec<(i64, String, bool)>, sqlx::Error> {
        let migrator = self.for_db(db);
        let applied: Vec<i64> = if table_exists(db, "_sqlx_migrations").await? {
            on_db!(db, |c| {
                sqlx::query_scalar::<_, i64>("select version from _sqlx_migrations where success")
                    .fetch_all(c)
                    .await
            })?
        } else {
            Vec::new()
        };
        Ok(list(&migrator, &applied))
    }
}
