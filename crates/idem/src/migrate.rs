//! Schema migrations for idem's own tables, and helpers for an application's.
//!
//! idem and the application keep their migrations in one `_sqlx_migrations` table, in
//! disjoint version ranges (idem uses 1–999); each migrator ignores the other's versions.

use sqlx::migrate::Migrator;

use crate::db::Db;

#[cfg(feature = "postgres")]
fn idem_postgres() -> Migrator {
    sqlx::migrate!("./migrations/postgres")
}

#[cfg(feature = "sqlite")]
fn idem_sqlite() -> Migrator {
    sqlx::migrate!("./migrations/sqlite")
}

/// A pair of migration sets, one per store.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    /// PostgreSQL migrations (`|| sqlx::migrate!("./migrations/postgres")`).
    #[cfg(feature = "postgres")]
    pub postgres: fn() -> Migrator,
    /// SQLite migrations.
    #[cfg(feature = "sqlite")]
    pub sqlite: fn() -> Migrator,
}

/// idem's own migrations (records and audit log).
pub const IDEM: MigrationSet = MigrationSet {
    #[cfg(feature = "postgres")]
    postgres: idem_postgres,
    #[cfg(feature = "sqlite")]
    sqlite: idem_sqlite,
};

impl MigrationSet {
    fn for_db(&self, db: &Db) -> Migrator {
        let mut migrator = match db {
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => (self.postgres)(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite { .. } => (self.sqlite)(),
        };
        migrator.set_ignore_missing(true);
        migrator
    }

    /// Applies every pending migration of this set.
    pub async fn run(&self, db: &Db) -> Result<(), sqlx::migrate::MigrateError> {
        let migrator = self.for_db(db);
        // Migrations hold a session lock: run them against PostgreSQL itself, never
        // through a transaction pooler.
        match db {
            #[cfg(feature = "postgres")]
            Db::Postgres(pg) => migrator.run(pg.pool()).await,
            #[cfg(feature = "sqlite")]
            Db::Sqlite { pool, .. } => migrator.run(pool).await,
        }
    }

    /// Versions of this set not yet applied to `db`.
    pub async fn pending(&self, db: &Db) -> Result<Vec<i64>, sqlx::Error> {
        Ok(self
            .listed(db)
            .await?
            .into_iter()
            .filter(|(_, _, applied)| !applied)
            .map(|(v, _, _)| v)
            .collect())
    }

    /// Every migration of this set: version, description, and whether `db` has it.
    pub async fn listed(&self, db: &Db) -> Result<Vec<(i64, String, bool)>, sqlx::Error> {
        let migrator = self.for_db(db);
        let applied: Vec<i64> = match on_db!(db, |c| {
            sqlx::query_scalar::<_, i64>("select version from _sqlx_migrations where success")
                .fetch_all(c)
                .await
        }) {
            Ok(v) => v,
            // No bookkeeping table yet: nothing was ever applied.
            Err(sqlx::Error::Database(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| {
                let done = applied.contains(&m.version);
                (m.version, m.description.to_string(), done)
            })
            .collect())
    }
}
