//! The telemetry cost of one write, in isolation (part of `scripts/bench.sh`): what
//! `idem`'s engine does per write after the answer is known, by calling the engine's own
//! `Engine::observe`:
//! - metrics: the duration histogram, the writes counter (and the replay counter);
//! - the audit row (deterministic id, UUIDv7, timestamp, the request's texts);
//! - the structured log event ([`idem::telemetry::log_write`]) through the server's own
//!   subscriber ([`accubooks::cli::init_logging`]: JSON lines, written to stdout by a
//!   writer thread — run it with stdout sent to `/dev/null`);
//! - for a replay, the audit enqueue ([`idem::telemetry::AuditQueue::enqueue`]); a new
//!   execution's row is inserted in its own transaction instead, which is database time,
//!   not telemetry.
//!
//! The loop runs on a current-thread runtime without yielding, so the audit writer (on a
//! SQLite file in a temporary directory) drains the queue only between batches, outside
//! the timed part. Prints one line per kind to stderr:
//! `telemetry <kind> us_per_write=<wall µs> cpu_us_per_write=<CPU µs of all threads>`
//! (the CPU time counts the log writer thread too, and is the steadier figure on a busy
//! machine).
//!
//! `bench_telemetry [--iterations N] [--batches B] > /dev/null` (the results go to stderr).

use std::hint::black_box;
use std::time::{Duration, Instant};

use accubooks::config::LogFormat;
use bytes::Bytes;
use clap::Parser;
use idem::fingerprint::Fingerprint;
use idem::telemetry::Metrics;
use idem::{Db, Idem, IdempotencyKey, RequestMeta, Scope, WriteError, WriteReply, WriteRequest};
use uuid::Uuid;

/// Times the per-write telemetry of idem (benchmark only).
#[derive(Debug, Parser)]
struct Cli {
    /// Writes per timed batch (the audit queue holds 65,536 rows, as the server's).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    iterations: u32,
    /// Timed batches per kind; the median batch is reported.
    #[arg(long, default_value_t = 5)]
    batches: u32,
}

/// One write's telemetry: the engine's own [`Idem::observe`], the call it makes for
/// every answer.
fn observe(engine: &Idem, scope: &Scope, request_id: &str, replayed: bool) {
    let req = WriteRequest {
        op: &accubooks::ops::CREATE_CUSTOMER,
        scope: scope.clone(),
        fingerprint: Fingerprint::from_stored(String::from("fingerprint-bench")),
        wait: None,
        meta: RequestMeta {
            request_id: request_id.to_owned(),
            user_id: Some("5f0c6a52-7d1e-4d8f-9a0b-2c3d4e5f6a7b".to_owned()),
            method: "POST".to_owned(),
            path: "/api/customers".to_owned(),
        },
    };
    let result: Result<WriteReply, WriteError<accubooks::error::AppError>> = Ok(WriteReply {
        replayed,
        body: Bytes::from_static(b"{}"),
        location: None,
    });
    engine.observe(&req, &result, Duration::from_micros(1_234), 0);
}

/// CPU time of all this process's threads so far (the log writer thread's included), in
/// nanoseconds, from `/proc/self/task/*/schedstat`; 0 where there is no `/proc`.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Per write, in µs: wall time, and CPU time of all threads.
struct Cost {
    wall: f64,
    cpu: f64,
}

/// Times `iterations` writes.
fn batch(engine: &Idem, tenant: &str, iterations: u32, replayed: bool) -> anyhow::Result<Cost> {
    // Keys and request ids are made before the clock starts: the server has them already.
    let inputs = (0..iterations)
        .map(|i| {
            let key = IdempotencyKey::parse(format!("n-bench-{i}").as_bytes())?;
            Ok((
                Scope::new(accubooks::ops::TENANCY, tenant, "createCustomer", key),
                Uuid::now_v7().to_string(),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (started, cpu) = (Instant::now(), cpu_ns());
    for (scope, request_id) in &inputs {
        observe(engine, black_box(scope), request_id, replayed);
    }
    let n = f64::from(iterations);
    Ok(Cost {
        wall: started.elapsed().as_secs_f64() * 1e6 / n,
        cpu: cpu_ns().saturating_sub(cpu) as f64 / 1e3 / n,
    })
}

/// Waits until the audit writer has drained the queue.
async fn drained(metrics: &Metrics) {
    while metrics.audit_queue_depth.get() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _log = accubooks::cli::init_logging(LogFormat::Json);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("telemetry.db").display());
        let db = Db::connect(&url, &idem::db::ConnectOptions::default()).await?;
        idem::migrate::IDEM.run(&db).await?;
        let engine = Idem::builder(db.clone())
            .tenancy(accubooks::ops::TENANCY)
            .operations(&accubooks::ops::registry())
            .build();
        let metrics = engine.metrics();
        let tenant = Uuid::new_v4().to_string();
        for (kind, replayed) in [("new", false), ("replay", true)] {
            // One untimed batch warms caches, label sets and the log writer.
            batch(&engine, &tenant, cli.iterations, replayed)?;
            drained(metrics).await;
            let (mut wall, mut cpu) = (Vec::new(), Vec::new());
            for _ in 0..cli.batches.max(1) {
                let cost = batch(&engine, &tenant, cli.iterations, replayed)?;
                wall.push(cost.wall);
                cpu.push(cost.cpu);
                drained(metrics).await;
            }
            let what = if replayed {
                "metrics + log event + audit enqueue"
            } else {
                "metrics + log event"
            };
            eprintln!(
                "telemetry {kind} us_per_write={:.2} cpu_us_per_write={:.2} ({what})",
                median(wall),
                median(cpu)
            );
        }
        engine.shutdown().await;
        db.close().await;
        anyhow::Ok(())
    })
}
