//! [`Builder`]: an [`Idem`] from a store and the settings that differ from the defaults.
//!
//! Invariants:
//! - Building starts the audit writer (a task on the current tokio runtime); it runs until
//!   [`Idem::finish_audit`] or [`Idem::shutdown`].
//! - Metrics are registered once, at build, under the chosen prefix; without a registry
//!   of the service's they go to one of idem's own (still counted, not exposed).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry as Prometheus;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::execute::Idem;
use crate::operation::{Config, Emitter, NoEmitter};
use crate::registry::Registry;
use crate::telemetry::{AuditQueue, Metrics, DEFAULT_AUDIT_QUEUE_BYTES};

/// Rows the audit queue holds by default before it drops (and counts) new ones.
const DEFAULT_AUDIT_QUEUE_ROWS: usize = 65_536;

/// Configures an [`Idem`]; start with [`Idem::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<'r> {
    db: Db,
    cfg: Config,
    prometheus: Option<&'r mut Prometheus>,
    metric_prefix: Option<String>,
    operations: Option<Registry>,
    audit_rows: usize,
    audit_bytes: usize,
    emitter: Arc<dyn Emitter>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("cfg", &self.cfg)
            .field("metric_prefix", &self.metric_prefix)
            .finish_non_exhaustive()
    }
}

impl Idem {
    /// Starts configuring an engine over `db` (its tables must be migrated:
    /// [`crate::migrate::IDEM`]).
    pub fn builder<'r>(db: Db) -> Builder<'r> {
        Builder {
            db,
            cfg: Config::default(),
            prometheus: None,
            metric_prefix: None,
            operations: None,
            audit_rows: DEFAULT_AUDIT_QUEUE_ROWS,
            audit_bytes: DEFAULT_AUDIT_QUEUE_BYTES,
            emitter: Arc::new(NoEmitter),
            shutdown: CancellationToken::new(),
        }
    }
}

impl<'r> Builder<'r> {
    /// How long an executor may sit idle in its transaction, or run one statement,
    /// before the store ends its session and the key can be taken over (PostgreSQL).
    /// Default 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.cfg.lease = lease;
        self
    }

    /// The longest one statement of a write may wait for a row lock (PostgreSQL).
    /// Default 5 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.lock_timeout = timeout;
        self
    }

    /// How long a completed key answers with its replay (operations may override).
    /// Default 24 h.
    pub fn key_ttl(mut self, ttl: Duration) -> Self {
        self.cfg.key_ttl = ttl;
        self
    }

    /// The longest `Prefer: wait` honoured. Default 30 s.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.cfg.max_wait = wait;
        self
    }

    /// Bytes of completed responses kept in memory for replay. Default 16 MiB.
    pub fn replay_cache_bytes(mut self, bytes: usize) -> Self {
        self.cfg.replay_cache_bytes = bytes;
        self
    }

    /// Writes executing at once (abandoned ones included) before new ones are refused
    /// with 503. Default 2,048.
    pub fn max_executions(mut self, n: usize) -> Self {
        self.cfg.max_executions = n;
        self
    }

    /// Largest accepted request body, in bytes. Default 1 MiB.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.cfg.body_limit = bytes;
        self
    }

    /// What the service calls a tenant (`company`, `team`, `account`): part of every
    /// deterministic record id, so it must never change once records exist. Default
    /// `tenant`.
    pub fn tenancy(mut self, name: &'static str) -> Self {
        self.cfg.tenancy = name;
        self
    }

    /// Registers idem's metrics in the service's Prometheus registry.
    pub fn metrics(mut self, registry: &'r mut Prometheus) -> Self {
        self.prometheus = Some(registry);
        self
    }

    /// Prefixes every metric name with `prefix_` (`notes` gives
    /// `notes_idempotent_writes_total`). Default: no prefix.
    pub fn metric_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metric_prefix = Some(prefix.into());
        self
    }

    /// Starts every per-operation series of `registry`'s operations at zero, so that
    /// dashboards and alerts see them before the first write.
    pub fn operations(mut self, registry: &Registry) -> Self {
        self.operations = Some(registry.clone());
        self
    }

    /// Bounds the audit queue: rows and bytes waiting to be written, past which new rows
    /// are dropped and counted. Default 65,536 rows, 64 MiB.
    pub fn audit_queue(mut self, rows: usize, bytes: usize) -> Self {
        self.audit_rows = rows;
        self.audit_bytes = bytes;
        self
    }

    /// Schedules side effects of events in the write's transaction (an outbox).
    pub fn emitter(mut self, emitter: impl Emitter) -> Self {
        self.emitter = Arc::new(emitter);
        self
    }

    /// Shares the service's shutdown token: when it is cancelled, requests parked by
    /// `Prefer: wait` are let go (503).
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Builds the engine and starts its audit writer. Must run inside a tokio runtime.
    pub fn build(self) -> Idem {
        let mut own = Prometheus::default();
        let root = match self.prometheus {
            Some(r) => r,
            None => &mut own,
        };
        let target = match &self.metric_prefix {
            Some(prefix) => root.sub_registry_with_prefix(prefix),
            None => root,
        };
        let metrics = Arc::new(Metrics::register(target));
        if let Some(registry) = &self.operations {
            for def in registry.operations() {
                metrics.init_operation(def.name(), def.kind_label());
            }
        }
        let audit_stop = CancellationToken::new();
        let (audit, writer) = AuditQueue::start_bounded(
            self.db.clone(),
            metrics.clone(),
            self.audit_rows,
            self.audit_bytes,
            audit_stop.clone(),
        );
        Idem::assemble(
            self.db,
            self.cfg,
            metrics,
            (audit, writer, audit_stop),
            self.emitter,
            self.shutdown,
        )
    }
}
