//! Metrics, the structured log event, and the audit-log writer of every idempotent write.
//!
//! Invariants:
//! - Metrics live in a [`prometheus_client::registry::Registry`] owned by the caller (one
//!   per app, so parallel test apps never share counters).
//! - The audit row of a new execution is inserted in the write's own transaction
//!   ([`insert_audit`]); replay and failure rows go through a bounded queue
//!   ([`AuditQueue`]) written in batches, flushed on shutdown, and every row the queue
//!   cannot take is counted in `idem_audit_rows_dropped_total`.

use std::sync::atomic::{AtomicI64, AtomicU64};
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

const AUDIT_INSERT: &str = "insert into idempotent_write_audit_log (id, operation_name, \
     operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, \
     timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, \
     side_effects_executed, error_message, metadata) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

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

/// Inserts an audit row inside a transaction (new executions).
pub async fn insert_audit(tx: &mut Tx, row: &AuditRow) -> Result<(), sqlx::Error> {
    crate::on_tx!(tx, |c| bind_audit!(sqlx::query(AUDIT_INSERT), row)
        .execute(c)
        .await
        .map(|_| ()))
}

async fn insert_batch(db: &Db, rows: &[AuditRow]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for row in rows {
        insert_audit(&mut tx, row).await?;
    }
    tx.commit().await
}

/// The asynchronous audit writer for replay and failure rows.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    tx: mpsc::Sender<AuditRow>,
    metrics: Arc<Metrics>,
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

impl AuditQueue {
    /// Starts the writer task; it drains and stops once `shutdown` is cancelled.
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (Self, AuditWriter) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = tokio::spawn(write_loop(db, rx, metrics.clone(), shutdown));
        (Self { tx, metrics }, AuditWriter { handle })
    }

    /// Queues a row; a full or closed queue drops it and counts the drop.
    pub fn enqueue(&self, row: AuditRow) {
        match self.tx.try_send(row) {
            Ok(()) => {
                self.metrics.audit_queue_depth.inc();
            }
            Err(_) => {
                self.metrics.audit_dropped.inc();
            }
        }
    }
}

async fn write_loop(
    db: Db,
    mut rx: mpsc::Receiver<AuditRow>,
    metrics: Arc<Metrics>,
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
        write_batch(&db, &mut batch, &metrics).await;
    }
}

async fn write_batch(db: &Db, batch: &mut Vec<AuditRow>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut attempt = 0;
    loop {
        match insert_batch(db, batch).await {
            Ok(()) => {
                metrics.audit_written.inc_by(n);
                break;
            }
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "audit batch write failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = n, "audit batch write failed; rows dropped");
                metrics.audit_dropped.inc_by(n);
                break;
            }
        }
    }
    metrics.audit_queue_depth.dec_by(n as i64);
    batch.clear();
}
