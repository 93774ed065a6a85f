//! idem's migrations keep their bookkeeping in `idem_migrations`, apart from AccuBooks'
//! in `_sqlx_migrations`: a fresh database, a database migrated the old way (idem's
//! versions in `_sqlx_migrations`), nodes migrating at once, an edited migration.

use std::sync::Arc;

use idem::db::ConnectOptions;
use idem::migrate::IDEM;
use idem::Db;
use sqlx::migrate::{MigrateError, Migrator};
use tokio::sync::Barrier;

use crate::backend_tests;
use crate::harness::{Backend, TestDb};

async fn connect(db: &TestDb) -> Db {
    Db::connect(&db.url, &ConnectOptions::default())
        .await
        .expect("connect")
}

/// `(version, description, checksum)` of the rows of a bookkeeping table.
async fn rows(db: &Db, table: &str) -> Vec<(i64, String, Vec<u8>)> {
    let sql = format!("select version, description, checksum from {table} order by version");
    idem::on_db!(db, |c| sqlx::query_as(&sql).fetch_all(c).await).expect("bookkeeping rows")
}

/// idem's migrations for this store, as embedded.
fn idem_files(backend: Backend) -> Migrator {
    match backend {
        Backend::Postgres => sqlx::migrate!("../idem/migrations/postgres"),
        Backend::Sqlite => sqlx::migrate!("../idem/migrations/sqlite"),
    }
}

fn expected_rows(backend: Backend) -> Vec<(i64, String, Vec<u8>)> {
    idem_files(backend)
        .iter()
        .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
        .collect()
}

async fn a_fresh_database_keeps_idem_bookkeeping_apart_from_the_applications(backend: Backend) {
    // Arrange
    let test_db = TestDb::new(backend).await;
    let db = connect(&test_db).await;

    // Act: twice, as a restarted node would.
    accubooks::app::migrate(&db).await.expect("first migrate");
    accubooks::app::migrate(&db).await.expect("second migrate");

    // Assert
    assert_eq!(rows(&db, "idem_migrations").await, expected_rows(backend));
    let app_versions: Vec<i64> = rows(&db, "_sqlx_migrations")
        .await
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    assert!(
        !app_versions.is_empty() && app_versions.iter().all(|v| *v >= 1000),
        "_sqlx_migrations holds AccuBooks' versions only: {app_versions:?}"
    );
    assert!(accubooks::app::pending_migrations(&db)
        .await
        .expect("pending")
        .is_empty());
    db.close().await;
}

/// Migrates `db` as AccuBooks did before idem kept its own table: idem's and AccuBooks'
/// versions in `_sqlx_migrations`, each migrator ignoring the other's.
async fn migrate_the_old_way(db: &Db, backend: Backend) {
    let mut idem = idem_files(backend);
    idem.set_ignore_missing(true);
    let mut app = match backend {
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
    };
    app.set_ignore_missing(true);
    match db {
        Db::Postgres(pg) => {
            idem.run(pg.pool()).await.expect("old idem migrator");
            app.run(pg.pool()).await.expect("old app migrator");
        }
        Db::Sqlite { pool, .. } => {
            idem.run(pool).await.expect("old idem migrator");
            app.run(pool).await.expect("old app migrator");
        }
    }
}

async fn a_database_migrated_the_old_way_is_adopted_without_running_anything_twice(
    backend: Backend,
) {
    // Arrange: the old bookkeeping, and a record that a re-run of 0001 could not keep.
    let test_db = TestDb::new(backend).await;
    let db = connect(&test_db).await;
    migrate_the_old_way(&db, backend).await;
    let before = rows(&db, "_sqlx_migrations").await;
    idem::on_db!(&db, |c| sqlx::query(
        "insert into idempotency_keys (tenant, operation, idem_key, fingerprint, \
         response_status, response_body, resource_id, request_id, created_at, completed_at, \
         expires_at) values ('c', 'op', 'k', 'f', 201, $1, $2, 'r', $3, $3, $4)"
    )
    .bind(b"{}".to_vec())
    .bind(idem::Id(uuid::Uuid::nil()))
    .bind(idem::Ts::now())
    .bind(idem::Ts::now().plus(std::time::Duration::from_secs(3600)))
    .execute(c)
    .await
    .map(|_| ()))
    .expect("a stored record");
    assert_eq!(
        IDEM.pending(&db).await.expect("pending"),
        Vec::<i64>::new(),
        "before the upgrade, idem's versions in _sqlx_migrations count as applied"
    );

    // Act
    accubooks::app::migrate(&db)
        .await
        .expect("migrate after the upgrade");

    // Assert: idem's rows moved with their checksums, AccuBooks' stayed, nothing ran.
    let (idem_rows, app_rows): (Vec<_>, Vec<_>) =
        before.into_iter().partition(|(v, _, _)| *v < 1000);
    assert_eq!(idem_rows, expected_rows(backend));
    assert_eq!(rows(&db, "idem_migrations").await, idem_rows);
    assert_eq!(rows(&db, "_sqlx_migrations").await, app_rows);
    let kept: i64 = idem::on_db!(&db, |c| sqlx::query_scalar(
        "select count(*) from idempotency_keys"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    assert_eq!(
        kept, 1,
        "the record stored before the upgrade is still there"
    );
    db.close().await;
}

async fn an_edited_applied_migration_is_refused(backend: Backend) {
    // Arrange: the database's checksum of migration 1 is not the file's.
    let test_db = TestDb::new(backend).await;
    let db = connect(&test_db).await;
    IDEM.run(&db).await.expect("migrate");
    idem::on_db!(&db, |c| sqlx::query(
        "update idem_migrations set checksum = $1 where version = 1"
    )
    .bind(vec![0u8; 48])
    .execute(c)
    .await
    .map(|_| ()))
    .expect("edit the checksum");

    // Act
    let refused = IDEM.run(&db).await;

    // Assert
    assert!(
        matches!(refused, Err(MigrateError::VersionMismatch(1))),
        "{refused:?}"
    );
    db.close().await;
}

backend_tests!(
    a_fresh_database_keeps_idem_bookkeeping_apart_from_the_applications,
    a_database_migrated_the_old_way_is_adopted_without_running_anything_twice,
    an_edited_applied_migration_is_refused,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn nodes_migrating_at_once_apply_each_migration_once() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    // Arrange: four nodes with pools of their own on one fresh database.
    let test_db = TestDb::new(Backend::Postgres).await;
    let barrier = Arc::new(Barrier::new(4));
    let mut nodes = Vec::new();
    for _ in 0..4 {
        let db = connect(&test_db).await;
        let barrier = barrier.clone();
        nodes.push(tokio::spawn(async move {
            barrier.wait().await;
            let migrated = accubooks::app::migrate(&db).await;
            db.close().await;
            migrated
        }));
    }

    // Act
    let results = futures::future::join_all(nodes).await;

    // Assert: every node started, and each migration ran once (a second run of 0001
    // would fail: its tables exist).
    for r in results {
        r.expect("node task").expect("node migrated");
    }
    let db = connect(&test_db).await;
    assert_eq!(
        rows(&db, "idem_migrations").await,
        expected_rows(Backend::Postgres)
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn migrations_are_refused_through_a_transaction_pooler() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    // Arrange: a handle in pooler mode (the flag alone: no pooler is needed to refuse).
    let test_db = TestDb::new(Backend::Postgres).await;
    let mut opts = ConnectOptions::default();
    opts.transaction_pooler = true;
    let db = Db::connect(&test_db.url, &opts).await.expect("connect");

    // Act
    let refused = IDEM.run(&db).await;

    // Assert: refused before touching the database; listing still works.
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("transaction pooler"), "{message}");
    assert_eq!(
        IDEM.pending(&db).await.expect("pending").len(),
        expected_rows(Backend::Postgres).len()
    );
    db.close().await;
}
