//! Audit partitions ahead of time (PostgreSQL): a clock walked across fourteen month
//! boundaries (a year end included), with the daily job run just before each, never
//! routes a row to the default partition; two nodes running the job at once is safe; a
//! month nobody prepared is reported.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use idem::retention::{ensure_audit_partitions, PartitionOutcome};
use idem::Ts;

use crate::harness::{Backend, TestApp};

fn month_start(year: i32, month0: i32) -> DateTime<Utc> {
    let (y, m) = (year + month0.div_euclid(12), month0.rem_euclid(12) + 1);
    Utc.with_ymd_and_hms(y, m as u32, 1, 0, 0, 0)
        .single()
        .expect("a month start")
}

async fn insert_audit_row(app: &TestApp, at: DateTime<Utc>) {
    let idem::Db::Postgres(pg) = &app.state.db else {
        unreachable!("PostgreSQL only")
    };
    let pool = pg.pool();
    sqlx::query(
        "insert into idempotent_write_audit_log (id, operation_name, operation_type, \
         company_id, status, execution_duration_ms, timestamp) \
         values (gen_random_uuid(), 'createCustomer', 'high-risk', 'c', 'new', 1.0, $1)",
    )
    .bind(at)
    .execute(pool)
    .await
    .expect("insert an audit row");
}

/// Runs the partition job until it is not skipped (the server's own start-up run may
/// hold the lock for a moment).
async fn ensure(db: &idem::Db, months_ahead: u32, at: Ts) -> PartitionOutcome {
    for _ in 0..200 {
        match ensure_audit_partitions(db, months_ahead, at).await {
            Ok(PartitionOutcome::Skipped) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(outcome) => return outcome,
            Err(e) => panic!("partition job: {e}"),
        }
    }
    panic!("the partition lock stayed busy")
}

async fn default_rows(app: &TestApp) -> i64 {
    app.count("idempotent_write_audit_log_default").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn month_boundaries_never_route_audit_rows_to_the_default_partition() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = &app.state.db;
    let now = Utc::now();
    let (year, month0) = (now.year(), now.month0() as i32);

    for i in 1..=14 {
        let boundary = month_start(year, month0 + i);
        // The daily job's last run before the boundary, on two nodes at once.
        let before = Ts::from_chrono(boundary - Duration::seconds(1));
        let (a, b) = tokio::join!(
            ensure_audit_partitions(db, 3, before),
            ensure_audit_partitions(db, 3, before)
        );
        for outcome in [a, b] {
            match outcome.expect("the job runs") {
                PartitionOutcome::Ensured { default_rows, .. } => assert_eq!(default_rows, 0),
                PartitionOutcome::Skipped => {}
                PartitionOutcome::NotPartitioned => panic!("PostgreSQL is partitioned"),
            }
        }
        // Both may have been skipped while the server's own run held the lock: then
        // that run is the one "before the boundary".
        if let PartitionOutcome::Ensured { default_rows, .. } = ensure(db, 3, before).await {
            assert_eq!(default_rows, 0);
        }
        // Rows on both sides of the boundary, and late in the month after it.
        for at in [
            boundary - Duration::microseconds(1),
            boundary,
            boundary + Duration::days(27) + Duration::hours(23),
        ] {
            insert_audit_row(&app, at).await;
        }
        assert_eq!(
            default_rows(&app).await,
            0,
            "month {i}: a row in the default partition"
        );
    }
    assert_eq!(app.count("idempotent_write_audit_log").await, 14 * 3);

    // A month nobody prepared (far beyond the months kept ahead) lands in the default
    // partition, and the next run reports it instead of failing.
    let far = month_start(year + 5, month0);
    insert_audit_row(&app, far).await;
    assert_eq!(default_rows(&app).await, 1);
    match ensure(db, 3, Ts::from_chrono(far)).await {
        PartitionOutcome::Ensured { default_rows, .. } => assert_eq!(default_rows, 1),
        other => panic!("{other:?}"),
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn archive_interrupted_after_each_step_loses_nothing_and_completes_on_rerun() {
    use std::io::BufRead;

    use accubooks::archive::{archive, Manifest, Step};

    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let db = &app.state.db;
    let now = Utc::now();
    let (year, month0) = (now.year(), now.month0() as i32);
    // Three months older than 90 days, with 5, 6 and 7 rows.
    let months: Vec<(DateTime<Utc>, i64)> = (0..3)
        .map(|i| (month_start(year, month0 - 8 + i), 5 + i64::from(i)))
        .collect();
    for (start, rows) in &months {
        ensure(db, 0, Ts::from_chrono(*start)).await;
        for k in 0..*rows {
            insert_audit_row(&app, *start + Duration::hours(k)).await;
        }
    }
    // A recent row, which stays.
    insert_audit_row(&app, now).await;
    let name =
        |start: &DateTime<Utc>| format!("idempotent_write_audit_log_{}", start.format("%Y_%m"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cutoff = now - Duration::days(90);
    let idem::Db::Postgres(pg) = &app.state.db else {
        unreachable!("PostgreSQL only")
    };
    let pool = pg.pool();
    let pool = pool.clone();
    let exists = |table: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("select to_regclass($1) is not null")
                .bind(table)
                .fetch_one(&pool)
                .await
                .expect("to_regclass")
        }
    };

    // Interrupted after the detach: the months left the log, their rows did not.
    let done = archive(db, cutoff, dir.path(), Some(Step::Detached))
        .await
        .expect("archive");
    assert!(done.is_empty());
    assert_eq!(app.count("idempotent_write_audit_log").await, 1);
    for (start, rows) in &months {
        assert_eq!(app.count(&name(start)).await, *rows);
    }
    // A crash in the middle of writing left a partial temporary file.
    std::fs::write(
        dir.path()
            .join(format!("{}.jsonl.gz.tmp", name(&months[0].0))),
        b"partial",
    )
    .expect("write");
    // Interrupted after writing, then after verifying.
    for step in [Step::Written, Step::Verified] {
        let done = archive(db, cutoff, dir.path(), Some(step))
            .await
            .expect("archive");
        assert!(done.is_empty());
        for (start, rows) in &months {
            assert_eq!(app.count(&name(start)).await, *rows, "{step:?}");
        }
    }
    // The re-run completes.
    let done = archive(db, cutoff, dir.path(), None)
        .await
        .expect("archive");
    assert_eq!(done.len(), 3);
    for (start, rows) in &months {
        assert!(!exists(name(start)).await, "{} dropped", name(start));
        let manifest: Manifest = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{}.manifest.json", name(start))))
                .expect("manifest"),
        )
        .expect("manifest json");
        assert_eq!(manifest.rows, *rows);
        let file = std::fs::File::open(dir.path().join(&manifest.file)).expect("file");
        let lines: Vec<serde_json::Value> =
            std::io::BufReader::new(flate2::read::GzDecoder::new(file))
                .lines()
                .map(|l| serde_json::from_str(&l.expect("line")).expect("json"))
                .collect();
        assert_eq!(lines.len() as i64, *rows);
        assert!(lines
            .iter()
            .all(|l| l["operation_name"] == "createCustomer"));
    }
    // The archive is audited, once per month; the recent row stays; a re-run is a no-op.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from idempotent_write_audit_log where operation_name = 'archiveAuditLog'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(audited, 3);
    assert_eq!(app.count("idempotent_write_audit_log").await, 1 + 3);
    let again = archive(db, cutoff, dir.path(), None).await.expect("re-run");
    assert!(again.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_on_sqlite_moves_whole_months_and_resumes_after_each_step() {
    use std::io::BufRead;

    use accubooks::archive::{archive, Manifest, Step};

    let app = TestApp::spawn(Backend::Sqlite).await;
    let db = &app.state.db;
    let idem::Db::Sqlite { pool, .. } = db else {
        unreachable!("SQLite")
    };
    let now = Utc::now();
    let (year, month0) = (now.year(), now.month0() as i32);
    let months: Vec<(DateTime<Utc>, i64)> = (0..2)
        .map(|i| (month_start(year, month0 - 6 + i), 3 + i64::from(i)))
        .collect();
    let insert = |at: DateTime<Utc>| {
        sqlx::query(
            "insert into idempotent_write_audit_log (id, operation_name, operation_type, \
             company_id, status, execution_duration_ms, timestamp) \
             values ($1, 'createCustomer', 'high-risk', 'c', 'new', 1.0, $2)",
        )
        .bind(idem::Id(uuid::Uuid::now_v7()))
        .bind(Ts::from_chrono(at))
        .execute(pool)
    };
    for (start, rows) in &months {
        for k in 0..*rows {
            insert(*start + Duration::hours(k)).await.expect("insert");
        }
    }
    insert(now).await.expect("insert a recent row");
    let dir = tempfile::tempdir().expect("tempdir");
    let cutoff = now - Duration::days(90);
    for step in [Step::Detached, Step::Written, Step::Verified] {
        let done = archive(db, cutoff, dir.path(), Some(step))
            .await
            .expect("archive");
        assert!(done.is_empty());
        assert_eq!(
            app.count("idempotent_write_audit_log").await,
            3 + 4 + 1,
            "{step:?}"
        );
    }
    let done = archive(db, cutoff, dir.path(), None)
        .await
        .expect("archive");
    assert_eq!(done.len(), 2);
    for (start, rows) in &months {
        let partition = format!("idempotent_write_audit_log_{}", start.format("%Y_%m"));
        let manifest: Manifest = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{partition}.manifest.json")))
                .expect("manifest"),
        )
        .expect("manifest json");
        assert_eq!(manifest.rows, *rows);
        let file = std::fs::File::open(dir.path().join(&manifest.file)).expect("file");
        let lines = std::io::BufReader::new(flate2::read::GzDecoder::new(file))
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(&l.expect("line")).expect("json"))
            .filter(|l| l["operation_name"] == "createCustomer")
            .count();
        assert_eq!(lines as i64, *rows);
    }
    // The recent row and the two archive rows remain; the log is still append-only.
    assert_eq!(app.count("idempotent_write_audit_log").await, 1 + 2);
    assert!(sqlx::query("delete from idempotent_write_audit_log")
        .execute(pool)
        .await
        .is_err());
    assert!(archive(db, cutoff, dir.path(), None)
        .await
        .expect("re-run")
        .is_empty());
    app.stop().await;
}

mod hygiene {
    //! The key-table figures behind the gauges and the health page, on both stores.

    use std::time::Duration;

    use serde_json::json;

    use crate::backend_tests;
    use crate::harness::{Backend, Options, TestApp};

    async fn key_stats_count_expired_records_until_the_prune(backend: Backend) {
        let app = TestApp::spawn_with(
            backend,
            Options {
                lease: Duration::from_millis(500),
                key_ttl: Duration::from_secs(1),
                ..Options::default()
            },
        )
        .await;
        let co = app.create_company("Acme").await;
        for k in ["h-1", "h-2", "h-3"] {
            let r = app
                .post("/api/customers", &co.token, k, &json!({"name": "Ada"}))
                .await;
            assert_eq!(r.status, 201, "{:?}", r.json());
        }
        let stats = accubooks::jobs::refresh_stats(&app.state)
            .await
            .expect("stats");
        assert_eq!((stats.total_keys, stats.expired_pending), (3, 0));
        assert_eq!(stats.pending_requests, 0);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let stats = accubooks::jobs::refresh_stats(&app.state)
            .await
            .expect("stats");
        assert_eq!((stats.total_keys, stats.expired_pending), (3, 3));
        assert!(stats.oldest_expired_age_hours > 0.0 && stats.oldest_expired_age_hours < 0.01);
        accubooks::jobs::prune_once(&app.state)
            .await
            .expect("prune");
        let stats = accubooks::jobs::refresh_stats(&app.state)
            .await
            .expect("stats");
        assert_eq!((stats.total_keys, stats.expired_pending), (0, 0));
        assert_eq!(stats.oldest_expired_age_hours, 0.0);
        app.stop().await;
    }

    backend_tests!(key_stats_count_expired_records_until_the_prune);
}
