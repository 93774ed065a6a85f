//! Metrics, the structured log event, and the audit-log writer of every idempotent write.
//!
//! Invariants:
//! - Metrics live in a [`prometheus_client::registry::Registry`] owned by the caller (one
//!   per app, so parallel test apps never share counters).
//! - The audit row of a new execution is inserted in the write's own transaction
//!   ([`insert_audit`]); replay and failure rows go through a bounded queue
//!   ([`AuditQueue`]) written in batches, flushed on shutdown, and every row the queue
//!   cannot take is counted in `idem_audit_rows_dropped_total`.
//! - Every audit row is stored sanitised ([`AuditRow::sanitized`]): control characters
//!   (NUL above all, which PostgreSQL text cannot hold) are escaped as `\uXXXX` and texts
//!   are bounded, so a client's bytes can never make a row unwritable.
//! - The queue is bounded by rows and by bytes. A batch the database refuses is retried
//!   row by row, so one bad row never takes its neighbours with it; only rows that truly
//!   cannot be written are dropped (and counted).

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{Db, Ts, Tx};

type OpLabels = [(&'static str, &'static str); 2];
type StatusLabels = [(&'static str, &'static str); 3];

/// The write-path metrics of API.md.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `idempotent_writes_total{operation,type,status}`.
    pub writes: Family<StatusLabels, Counter>,
    /// `idempotent_writes_replayed_total{operation,type}`.
    pub replayed: Family<OpLabels, Counter>,
    /// `idempotent_writes_failed_total{operation,type,error_type}`.
    pub failed: Family<StatusLabels, Counter>,
    /// `idempotent_writes_workflows_triggered_total{operation,type}`.
    pub workflows_triggered: Family<OpLabels, Counter>,
    /// `idempotent_write_duration_ms{operation,type}`.
    pub duration_ms: Family<OpLabels, Histogram>,
    /// `idempotency_keys_total`.
    pub keys_total: Gauge,
    /// `idempotency_expired_pending_total`.
    pub expired_pending: Gauge,
    /// `idempotency_pending_requests_total` (claims with a live lease, all nodes).
    pub pending_requests: Gauge,
    /// `idempotency_oldest_pending_age_minutes`.
    pub oldest_pending_age_minutes: Gauge<f64, AtomicU64>,
    /// `idempotency_oldest_expired_age_hours`.
    pub oldest_expired_age_hours: Gauge<f64, AtomicU64>,
    /// `idem_local_in_flight` executions on this node right now.
    pub local_in_flight: Gauge<i64, AtomicI64>,
    /// `idem_waiters` requests parked by `Prefer: wait` on this node right now.
    pub waiters: Gauge<i64, AtomicI64>,
    /// `idem_audit_queue_depth`.
    pub audit_queue_depth: Gauge<i64, AtomicI64>,
    /// `idem_audit_queue_bytes`: approximate memory of the queued rows.
    pub audit_queue_bytes: Gauge<i64, AtomicI64>,
    /// `idem_audit_rows_written_total`.
    pub audit_written: Counter,
    /// `idem_audit_rows_dropped_total` (queue full or write failed).
    pub audit_dropped: Counter,
    /// `idem_prune_deleted_total`.
    pub prune_deleted: Counter,
    /// `idem_prune_runs_total{outcome}`.
    pub prune_runs: Family<[(&'static str, &'static str); 1], Counter>,
    /// `idem_prune_last_success_timestamp_seconds`.
    pub prune_last_success: Gauge<f64, AtomicU64>,
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut PromRegistry) -> Self {
        let m = Metrics {
            writes: Family::default(),
            replayed: Family::default(),
            failed: Family::default(),
            workflows_triggered: Family::default(),
            duration_ms: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            keys_total: Gauge::default(),
            expired_pending: Gauge::default(),
            pending_requests: Gauge::default(),
            oldest_pending_age_minutes: Gauge::default(),
            oldest_expired_age_hours: Gauge::default(),
            local_in_flight: Gauge::default(),
            waiters: Gauge::default(),
            audit_queue_depth: Gauge::default(),
            audit_queue_bytes: Gauge::default(),
            audit_written: Counter::default(),
            audit_dropped: Counter::default(),
            prune_deleted: Counter::default(),
            prune_runs: Family::default(),
            prune_last_success: Gauge::default(),
        };
        let r = registry;
        r.register(
            "idempotent_writes",
            "Idempotent writes by outcome",
            m.writes.clone(),
        );
        r.register(
            "idempotent_writes_replayed",
            "Writes answered by replay",
            m.replayed.clone(),
        );
        r.register(
            "idempotent_writes_failed",
            "Writes that failed, by error type",
            m.failed.clone(),
        );
        r.register(
            "idempotent_writes_workflows_triggered",
            "Workflow instances scheduled by new writes",
            m.workflows_triggered.clone(),
        );
        r.register(
            "idempotent_write_duration_ms",
            "Write duration in milliseconds",
            m.duration_ms.clone(),
        );
        r.register(
            "idempotency_keys_total",
            "Idempotency records stored",
            m.keys_total.clone(),
        );
        r.register(
            "idempotency_expired_pending_total",
            "Expired records not yet pruned",
            m.expired_pending.clone(),
        );
        r.register(
            "idempotency_pending_requests_total",
            "Claims with a live lease across all nodes",
            m.pending_requests.clone(),
        );
        r.register(
            "idempotency_oldest_pending_age_minutes",
            "Age of the oldest live claim",
            m.oldest_pending_age_minutes.clone(),
        );
        r.register(
            "idempotency_oldest_expired_age_hours",
            "Hours since the oldest unpruned record expired",
            m.oldest_expired_age_hours.clone(),
        );
        r.register(
            "idem_local_in_flight",
            "Executions running on this node",
            m.local_in_flight.clone(),
        );
        r.register(
            "idem_waiters",
            "Requests parked by Prefer: wait on this node",
            m.waiters.clone(),
        );
        r.register(
            "idem_audit_queue_depth",
            "Audit rows waiting to be written",
            m.audit_queue_depth.clone(),
        );
        r.register(
            "idem_audit_queue_bytes",
            "Approximate bytes of audit rows waiting to be written",
            m.audit_queue_bytes.clone(),
        );
        r.register(
            "idem_audit_rows_written",
            "Audit rows written by the batch writer",
            m.audit_written.clone(),
        );
        r.register(
            "idem_audit_rows_dropped",
            "Audit rows lost (queue full or write failed)",
            m.audit_dropped.clone(),
        );
        r.register(
            "idem_prune_deleted",
            "Idempotency records deleted by pruning",
            m.prune_deleted.clone(),
        );
        r.register(
            "idem_prune_runs",
            "Prune runs by outcome",
            m.prune_runs.clone(),
        );
        r.register(
            "idem_prune_last_success_timestamp_seconds",
            "Unix time of the last successful prune",
            m.prune_last_success.clone(),
        );
        m
    }
}

/// The error types of API.md whose series exist from start-up (see
/// [`Metrics::init_operation`]).
pub const ERROR_TYPES: [&str; 7] = [
    "mismatch",
    "in_flight",
    "missing_key",
    "invalid_key",
    "validation",
    "business_rule",
    "internal",
];

impl Metrics {
    /// Creates the zero series of one operation's counters, so that the first failure
    /// of a kind after start-up is an increase Prometheus can see (`increase()` of a
    /// series that appears at 1 is 0) and the rate ratios are defined from the start.
    pub fn init_operation(&self, operation: &'static str, kind: &'static str) {
        for status in ["new", "replayed", "failed"] {
            let _ = self.writes.get_or_create(&[
                ("operation", operation),
                ("type", kind),
                ("status", status),
            ]);
        }
        for error_type in ERROR_TYPES {
            let _ = self.failed.get_or_create(&[
                ("operation", operation),
                ("type", kind),
                ("error_type", error_type),
            ]);
        }
        let _ = self
            .replayed
            .get_or_create(&[("operation", operation), ("type", kind)]);
        let _ = self
            .workflows_triggered
            .get_or_create(&[("operation", operation), ("type", kind)]);
    }
}

/// One row of `idempotent_write_audit_log`.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// Row id (UUIDv7).
    pub id: Uuid,
    /// Operation name.
    pub operation_name: &'static str,
    /// `financial` / `high-risk`.
    pub operation_type: &'static str,
    /// The operation record's UUIDv5, as text (none for a request refused before its
    /// key was known).
    pub deterministic_id: Option<String>,
    /// Tenant.
    pub company_id: String,
    /// Acting user.
    pub user_id: Option<String>,
    /// `new` / `replayed` / `failed`.
    pub status: &'static str,
    /// Wall time of the request in the engine, ms.
    pub execution_duration_ms: f64,
    /// When.
    pub timestamp: Ts,
    /// Request id.
    pub request_id: String,
    /// Decoded key (none when the request had no valid key).
    pub idempotency_key: Option<String>,
    /// Request path.
    pub route_path: String,
    /// HTTP method.
    pub http_method: String,
    /// Workflow instances scheduled.
    pub workflows_triggered: i32,
    /// Whether side effects were scheduled.
    pub side_effects_executed: bool,
    /// Failure description (never SQL text).
    pub error_message: Option<String>,
    /// Extra context.
    pub metadata: Option<serde_json::Value>,
}

macro_rules! audit_columns {
    () => {
        "insert into idempotent_write_audit_log (id, operation_name, \
         operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, \
         timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, \
         side_effects_executed, error_message, metadata) "
    };
}

#[cfg(feature = "postgres")]
pub(crate) use audit_columns;

#[cfg(feature = "sqlite")]
const AUDIT_COLUMNS: &str = audit_columns!();

pub(crate) const AUDIT_INSERT: &str = concat!(
    audit_columns!(),
    "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
);

macro_rules! bind_audit {
    ($q:expr, $r:expr) => {
        $q.bind(crate::db::Id($r.id))
            .bind($r.operation_name)
            .bind($r.operation_type)
            .bind($r.deterministic_id.as_deref())
            .bind(&$r.company_id)
            .bind($r.user_id.as_deref())
            .bind($r.status)
            .bind($r.execution_duration_ms)
            .bind($r.timestamp)
            .bind(&$r.request_id)
            .bind($r.idempotency_key.as_deref())
            .bind(&$r.route_path)
            .bind(&$r.http_method)
            .bind($r.workflows_triggered)
            .bind($r.side_effects_executed)
            .bind($r.error_message.as_deref())
            .bind($r.metadata.clone().map(sqlx::types::Json))
    };
}
pub(crate) use bind_audit;

/// Logs the structured event of one write (target `idem::write`) from its audit row:
/// every field of the row, never a token, a secret or a body.
pub fn log_write(row: &AuditRow, error_type: Option<&str>) {
    let metadata = row
        .metadata
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    tracing::info!(
        target: "idem::write",
        operation = row.operation_name,
        operation_type = row.operation_type,
        status = row.status,
        error_type = error_type.unwrap_or(""),
        deterministic_id = row.deterministic_id.as_deref().unwrap_or(""),
        company_id = %row.company_id,
        user_id = row.user_id.as_deref().unwrap_or(""),
        idempotency_key = row.idempotency_key.as_deref().unwrap_or(""),
        request_id = %row.request_id,
        route_path = %row.route_path,
        http_method = %row.http_method,
        duration_ms = row.execution_duration_ms,
        workflows_triggered = row.workflows_triggered,
        side_effects_executed = row.side_effects_executed,
        error_message = row.error_message.as_deref().unwrap_or(""),
        metadata = %metadata,
        "idempotent write"
    );
}

/// Longest `error_message` stored, in bytes.
pub const AUDIT_MESSAGE_MAX: usize = 1024;
/// Longest other text of an audit row, in bytes.
pub const AUDIT_TEXT_MAX: usize = 2048;

fn needs_escaping(s: &str, max: usize) -> bool {
    s.len() > max || s.chars().any(char::is_control)
}

/// `s` with control characters escaped as `\uXXXX` and cut (at a character boundary,
/// marked with `…`) to at most about `max` bytes; borrowed when already clean.
pub fn audit_text(s: &str, max: usize) -> Cow<'_, str> {
    if !needs_escaping(s, max) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for c in s.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn json_needs_escaping(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => needs_escaping(s, AUDIT_TEXT_MAX),
        serde_json::Value::Array(a) => a.iter().any(json_needs_escaping),
        serde_json::Value::Object(m) => m
            .iter()
            .any(|(k, v)| needs_escaping(k, AUDIT_TEXT_MAX) || json_needs_escaping(v)),
        _ => false,
    }
}

fn json_sanitized(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(audit_text(s, AUDIT_TEXT_MAX).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(json_sanitized).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    (
                        audit_text(k, AUDIT_TEXT_MAX).into_owned(),
                        json_sanitized(v),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn json_bytes(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len() + 2,
        serde_json::Value::Array(a) => a.iter().map(json_bytes).sum::<usize>() + 2,
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| k.len() + 3 + json_bytes(v))
            .sum::<usize>()
            .saturating_add(2),
        _ => 8,
    }
}

impl AuditRow {
    fn texts(&self) -> [(&str, usize); 7] {
        [
            (
                self.deterministic_id.as_deref().unwrap_or(""),
                AUDIT_TEXT_MAX,
            ),
            (&self.company_id, AUDIT_TEXT_MAX),
            (self.user_id.as_deref().unwrap_or(""), AUDIT_TEXT_MAX),
            (&self.request_id, AUDIT_TEXT_MAX),
            (
                self.idempotency_key.as_deref().unwrap_or(""),
                AUDIT_TEXT_MAX,
            ),
            (&self.route_path, AUDIT_TEXT_MAX),
            (&self.http_method, AUDIT_TEXT_MAX),
        ]
    }

    /// The row as it is stored: every text with control characters escaped and bounded
    /// (`error_message` to [`AUDIT_MESSAGE_MAX`] bytes), metadata strings and keys alike.
    /// Borrowed when nothing needs changing (the usual case).
    pub fn sanitized(&self) -> Cow<'_, AuditRow> {
        let dirty = self.texts().iter().any(|(s, max)| needs_escaping(s, *max))
            || self
                .error_message
                .as_deref()
                .is_some_and(|m| needs_escaping(m, AUDIT_MESSAGE_MAX))
            || self.metadata.as_ref().is_some_and(json_needs_escaping);
        if !dirty {
            return Cow::Borrowed(self);
        }
        let t = |s: &str| audit_text(s, AUDIT_TEXT_MAX).into_owned();
        Cow::Owned(AuditRow {
            deterministic_id: self.deterministic_id.as_deref().map(t),
            company_id: t(&self.company_id),
            user_id: self.user_id.as_deref().map(t),
            request_id: t(&self.request_id),
            idempotency_key: self.idempotency_key.as_deref().map(t),
            route_path: t(&self.route_path),
            http_method: t(&self.http_method),
            error_message: self
                .error_message
                .as_deref()
                .map(|m| audit_text(m, AUDIT_MESSAGE_MAX).into_owned()),
            metadata: self.metadata.as_ref().map(json_sanitized),
            ..self.clone()
        })
    }

    /// About how much memory the row holds, for the queue's byte bound.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<AuditRow>()
            + self.texts().iter().map(|(s, _)| s.len()).sum::<usize>()
            + self.error_message.as_ref().map_or(0, String::len)
            + self.metadata.as_ref().map_or(0, json_bytes)
    }
}

/// Inserts an audit row inside a transaction (new executions); the row is stored
/// [sanitised](AuditRow::sanitized).
pub async fn insert_audit(tx: &mut Tx, row: &AuditRow) -> Result<(), sqlx::Error> {
    let row = row.sanitized();
    let row = row.as_ref();
    crate::on_tx!(tx, |c| bind_audit!(sqlx::query(AUDIT_INSERT), row)
        .execute(c)
        .await
        .map(|_| ()))
}

/// Inserts `rows` in one transaction (one commit). Every batch size shares the same few
/// statements: a `values` list per size would be parsed and planned again for each size
/// and fill the per-connection statement caches (the server's and, on SQLite, this
/// process's memory) with one large statement per size.
async fn insert_batch(db: &Db, rows: &[Queued]) -> Result<(), sqlx::Error> {
    let rows: Vec<Cow<'_, AuditRow>> = rows.iter().map(|q| q.row.sanitized()).collect();
    let rows: Vec<&AuditRow> = rows.iter().map(Cow::as_ref).collect();
    let mut tx = db.begin().await?;
    match &mut tx {
        #[cfg(feature = "postgres")]
        Tx::Postgres(pg) => insert_arrays_pg(pg, &rows).await?,
        #[cfg(feature = "sqlite")]
        Tx::Sqlite { tx, .. } => {
            let mut rest = &rows[..];
            while !rest.is_empty() {
                // 64, 8 or 1 rows per statement: three statements serve any batch.
                let n = [64, 8, 1]
                    .into_iter()
                    .find(|n| *n <= rest.len())
                    .unwrap_or(1);
                let (chunk, tail) = rest.split_at(n);
                insert_values(tx, chunk).await?;
                rest = tail;
            }
        }
    }
    tx.commit().await
}

/// PostgreSQL: any number of audit rows in one statement over arrays (one round trip,
/// one prepared statement).
#[cfg(feature = "postgres")]
const AUDIT_INSERT_ARRAYS_PG: &str = concat!(
    audit_columns!(),
    "select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::float8[], $9::timestamptz[], $10::text[], $11::text[], \
     $12::text[], $13::text[], $14::int4[], $15::bool[], $16::text[], $17::jsonb[])"
);

#[cfg(feature = "postgres")]
async fn insert_arrays_pg(tx: &mut crate::db::PgTx, rows: &[&AuditRow]) -> Result<(), sqlx::Error> {
    fn col<'r, T>(rows: &[&'r AuditRow], f: impl Fn(&'r AuditRow) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r)).collect()
    }
    sqlx::query(AUDIT_INSERT_ARRAYS_PG)
        .bind(col(rows, |r| r.id))
        .bind(col(rows, |r| r.operation_name))
        .bind(col(rows, |r| r.operation_type))
        .bind(col(rows, |r| r.deterministic_id.as_deref()))
        .bind(col(rows, |r| r.company_id.as_str()))
        .bind(col(rows, |r| r.user_id.as_deref()))
        .bind(col(rows, |r| r.status))
        .bind(col(rows, |r| r.execution_duration_ms))
        .bind(col(rows, |r| r.timestamp.to_chrono()))
        .bind(col(rows, |r| r.request_id.as_str()))
        .bind(col(rows, |r| r.idempotency_key.as_deref()))
        .bind(col(rows, |r| r.route_path.as_str()))
        .bind(col(rows, |r| r.http_method.as_str()))
        .bind(col(rows, |r| r.workflows_triggered))
        .bind(col(rows, |r| r.side_effects_executed))
        .bind(col(rows, |r| r.error_message.as_deref()))
        .bind(col(rows, |r| r.metadata.as_ref().map(sqlx::types::Json)))
        .execute(tx.exec())
        .await
        .map(|_| ())
}

/// SQLite: `rows` as one multi-row `values` statement.
#[cfg(feature = "sqlite")]
async fn insert_values(
    conn: &mut sqlx::SqliteConnection,
    rows: &[&AuditRow],
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::QueryBuilder::new(AUDIT_COLUMNS);
    q.push_values(rows.iter().copied(), |mut b, r| {
        b.push_bind(crate::db::Id(r.id))
            .push_bind(r.operation_name)
            .push_bind(r.operation_type)
            .push_bind(r.deterministic_id.as_deref())
            .push_bind(&r.company_id)
            .push_bind(r.user_id.as_deref())
            .push_bind(r.status)
            .push_bind(r.execution_duration_ms)
            .push_bind(r.timestamp)
            .push_bind(&r.request_id)
            .push_bind(r.idempotency_key.as_deref())
            .push_bind(&r.route_path)
            .push_bind(&r.http_method)
            .push_bind(r.workflows_triggered)
            .push_bind(r.side_effects_executed)
            .push_bind(r.error_message.as_deref())
            .push_bind(r.metadata.clone().map(sqlx::types::Json));
    });
    q.build().execute(conn).await.map(|_| ())
}

/// Whether an error is the database refusing the data (retrying the same rows will not
/// help) rather than the database being unavailable for a moment.
fn refused_data(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Database(_) | sqlx::Error::Encode(_) | sqlx::Error::TypeNotFound { .. }
    ) && !crate::db::is_transient(e)
}

/// The asynchronous audit writer for replay and failure rows.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// A queued row and the bytes it was counted as.
#[derive(Debug)]
struct Queued {
    row: AuditRow,
    bytes: usize,
}

/// Handle on the writer task; [`AuditWriter::finish`] waits until the queue is drained.
#[derive(Debug)]
pub struct AuditWriter {
    handle: tokio::task::JoinHandle<()>,
}

impl AuditWriter {
    /// Waits for the writer to drain the queue and stop (after its token is cancelled).
    pub async fn finish(self) {
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "audit writer task failed");
        }
    }
}

const AUDIT_BATCH: usize = 256;

/// Default memory bound of the audit queue (64 MiB).
pub const DEFAULT_AUDIT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

impl AuditQueue {
    /// Starts the writer task with a queue of `capacity` rows and at most
    /// [`DEFAULT_AUDIT_QUEUE_BYTES`]; it drains and stops once `shutdown` is cancelled.
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (Self, AuditWriter) {
        Self::start_bounded(db, metrics, capacity, DEFAULT_AUDIT_QUEUE_BYTES, shutdown)
    }

    /// As [`AuditQueue::start`], with the queue bounded by `max_bytes` as well as rows.
    pub fn start_bounded(
        db: Db,
        metrics: Arc<Metrics>,
        capacity: usize,
        max_bytes: usize,
        shutdown: CancellationToken,
    ) -> (Self, AuditWriter) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let bytes = Arc::new(AtomicUsize::new(0));
        let handle = tokio::spawn(write_loop(db, rx, metrics.clone(), bytes.clone(), shutdown));
        (
            Self {
                tx,
                metrics,
                bytes,
                max_bytes,
            },
            AuditWriter { handle },
        )
    }

    /// Queues a row (sanitised); a full or closed queue, or one holding `max_bytes`
    /// already, drops it and counts the drop.
    pub fn enqueue(&self, row: AuditRow) {
        let row = match row.sanitized() {
            Cow::Borrowed(_) => row,
            Cow::Owned(clean) => clean,
        };
        let bytes = row.approx_bytes();
        let before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.max_bytes {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.metrics.audit_dropped.inc();
            return;
        }
        match self.tx.try_send(Queued { row, bytes }) {
            Ok(()) => {
                self.metrics.audit_queue_depth.inc();
                self.metrics.audit_queue_bytes.inc_by(bytes as i64);
            }
            Err(_) => {
                self.bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.metrics.audit_dropped.inc();
            }
        }
    }
}

async fn write_loop(
    db: Db,
    mut rx: mpsc::Receiver<Queued>,
    metrics: Arc<Metrics>,
    bytes: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    let mut closed = false;
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, AUDIT_BATCH) => n,
            () = shutdown.cancelled(), if !closed => {
                // Take no new rows; keep draining what is queued.
                rx.close();
                closed = true;
                continue;
            }
        };
        if received == 0 {
            // Closed and drained.
            break;
        }
        write_batch(&db, &batch, &metrics).await;
        let n = batch.len();
        let held: usize = batch.iter().map(|q| q.bytes).sum();
        bytes.fetch_sub(held, Ordering::AcqRel);
        metrics.audit_queue_depth.dec_by(n as i64);
        metrics.audit_queue_bytes.dec_by(held as i64);
        batch.clear();
    }
}

/// Writes a batch in one transaction, retrying while the database is unavailable. When
/// the database refuses the batch's data, writes it row by row so that only the rows
/// that truly cannot be written are dropped.
async fn write_batch(db: &Db, batch: &[Queued], metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut attempt = 0;
    loop {
        match insert_batch(db, batch).await {
            Ok(()) => {
                metrics.audit_written.inc_by(n);
                return;
            }
            Err(e) if refused_data(&e) => {
                tracing::warn!(error = %e, rows = n, "audit batch refused; writing its rows one by one");
                write_rows_one_by_one(db, batch, metrics).await;
                return;
            }
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "audit batch write failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = n, "audit batch write failed; rows dropped");
                metrics.audit_dropped.inc_by(n);
                return;
            }
        }
    }
}

async fn write_rows_one_by_one(db: &Db, batch: &[Queued], metrics: &Metrics) {
    for q in batch {
        match insert_batch(db, std::slice::from_ref(q)).await {
            Ok(()) => {
                metrics.audit_written.inc();
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    audit_id = %q.row.id,
                    company_id = %q.row.company_id,
                    "audit row cannot be written; dropped"
                );
                metrics.audit_dropped.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            id: Uuid::nil(),
            operation_name: "op",
            operation_type: "financial",
            deterministic_id: Some("d".into()),
            company_id: "c".into(),
            user_id: None,
            status: "failed",
            execution_duration_ms: 0.0,
            timestamp: Ts::from_micros(0),
            request_id: "r".into(),
            idempotency_key: Some("k".into()),
            route_path: "/p".into(),
            http_method: "POST".into(),
            workflows_triggered: 0,
            side_effects_executed: false,
            error_message: None,
            metadata: None,
        }
    }

    #[test]
    fn clean_rows_are_borrowed_and_control_characters_are_escaped() {
        let clean = row();
        assert!(matches!(clean.sanitized(), Cow::Borrowed(_)));
        let mut dirty = row();
        dirty.error_message = Some("a\0\u{7}b: unknown field".into());
        dirty.metadata = Some(serde_json::json!({"k\u{0}": ["v\u{0}"]}));
        let s = dirty.sanitized();
        assert_eq!(
            s.error_message.as_deref(),
            Some("a\\u0000\\u0007b: unknown field")
        );
        assert_eq!(
            s.metadata,
            Some(serde_json::json!({"k\\u0000": ["v\\u0000"]}))
        );
    }

    #[test]
    fn messages_are_bounded_at_a_character_boundary() {
        let mut big = row();
        big.error_message = Some("é".repeat(100_000));
        let s = big.sanitized();
        let m = s.error_message.as_deref().unwrap_or("");
        assert!(m.len() <= AUDIT_MESSAGE_MAX + 4, "{}", m.len());
        assert!(m.ends_with('…'));
    }
}
