//! Side effects after commit (guarantee 8): the outbox emitter that writes workflow
//! instances inside a write's transaction, and the worker that runs them.
//!
//! Invariants:
//! - [`Outbox::emit`] inserts, in the caller's transaction, one `workflow_instances` row
//!   (UUIDv7 id, `pending`, due now) per active workflow of the company whose trigger is
//!   the event, and returns how many: the engine's `workflows_triggered`. A replay never
//!   reaches `execute`, so it inserts nothing.
//! - Nothing leaves the process before the write commits: the worker only sees committed
//!   rows, and [`OutboxHandle::after_commit`] is called after the 201 was produced. It
//!   wakes the worker only when some write emitted instances since the last wake, so
//!   writes without workflows cost the worker nothing; in the rare race where another
//!   request's 201 consumed the wake before this write committed, the worker's next
//!   poll (50 ms after a wake) picks the instance up.

use std::sync::Arc;

use futures::future::BoxFuture;
use idem::{on_tx, Emitter, Event, Id, Ts, Tx};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;
use uuid::Uuid;

pub mod signature;
pub mod ssrf;
pub mod worker;

/// The outbox [`Emitter`] the engine calls inside each write's transaction.
#[derive(Debug, Clone)]
pub struct Outbox {
    emitted: Arc<AtomicU64>,
}

async fn emit_events(tx: &mut Tx, tenant: &str, events: &[Event]) -> Result<u32, sqlx::Error> {
    let company = Uuid::parse_str(tenant).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let mut n = 0u32;
    for e in events {
        let workflows: Vec<Id> = on_tx!(tx, |c| sqlx::query_scalar(
            "select id from workflows where company_id = $1 and trigger_event = $2 and active"
        )
        .bind(Id(company))
        .bind(e.name)
        .fetch_all(c)
        .await)?;
        let now = Ts::now();
        let entity = e.entity_id.hyphenated().to_string();
        for w in workflows {
            on_tx!(tx, |c| sqlx::query(
                "insert into workflow_instances (company_id, id, workflow_id, \
                 trigger_entity_type, trigger_entity_id, status, attempts, next_attempt_at, \
                 created_at, updated_at) values ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)"
            )
            .bind(Id(company))
            .bind(Id(Uuid::now_v7()))
            .bind(w)
            .bind(e.entity_type)
            .bind(&entity)
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            n += 1;
        }
    }
    Ok(n)
}

impl Emitter for Outbox {
    fn emit<'a>(
        &'a self,
        tx: &'a mut Tx,
        tenant: &'a str,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<u32, sqlx::Error>> {
        Box::pin(async move {
            let n = emit_events(tx, tenant, events).await?;
            if n > 0 {
                self.emitted.fetch_add(u64::from(n), Ordering::AcqRel);
            }
            Ok(n)
        })
    }
}

/// The outbox series of `/metrics`.
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    /// `workflow_outbox_pending`: instances pending or running.
    pub pending: Gauge,
    /// `workflow_outbox_oldest_pending_age_seconds`.
    pub oldest_pending_age: Gauge<f64, AtomicU64>,
    /// `workflow_deliveries_total{action,outcome}` (outcome `delivered|retry|failed`).
    pub deliveries: Family<[(&'static str, &'static str); 2], Counter>,
    /// `workflow_delivery_duration_ms{action}`.
    pub duration_ms: Family<[(&'static str, &'static str); 1], Histogram>,
}

impl OutboxMetrics {
    /// Registers the series in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            pending: Gauge::default(),
            oldest_pending_age: Gauge::default(),
            deliveries: Family::default(),
            duration_ms: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 16))
            }),
        };
        r.register(
            "workflow_outbox_pending",
            "Workflow instances pending or running",
            m.pending.clone(),
        );
        r.register(
            "workflow_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending or running workflow instance",
            m.oldest_pending_age.clone(),
        );
        r.register(
            "workflow_deliveries",
            "Workflow action attempts by action and outcome",
            m.deliveries.clone(),
        );
        r.register(
            "workflow_delivery_duration_ms",
            "Duration of one workflow action attempt, in milliseconds",
            m.duration_ms.clone(),
        );
        m
    }
}

/// What handlers share with the worker: its wake-up call and its metrics.
#[derive(Debug, Clone)]
pub struct OutboxHandle {
    wake: Arc<Notify>,
    emitted: Arc<AtomicU64>,
    woken: Arc<AtomicU64>,
    /// The outbox series.
    pub metrics: OutboxMetrics,
}

impl OutboxHandle {
    /// A handle with fresh metrics registered in `r`.
    pub fn new(r: &mut Registry) -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            emitted: Arc::default(),
            woken: Arc::default(),
            metrics: OutboxMetrics::register(r),
        }
    }

    /// The emitter for the engine; it counts what it writes for [`Self::after_commit`].
    pub fn emitter(&self) -> Outbox {
        Outbox {
            emitted: self.emitted.clone(),
        }
    }

    /// Wakes this node's worker (call only after a commit that wrote instances outside
    /// the emitter, as `triggerWorkflow` does).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Call after a write committed: wakes this node's worker if instances were written
    /// since the last wake.
    pub fn after_commit(&self) {
        let emitted = self.emitted.load(Ordering::Acquire);
        if self.woken.fetch_max(emitted, Ordering::AcqRel) < emitted {
            self.wake.notify_one();
        }
    }

    /// Resolves at the next [`OutboxHandle::wake`] (or at once if one is pending).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}
