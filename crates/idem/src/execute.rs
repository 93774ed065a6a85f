//! `Engine::run`: the one place that implements the idempotent-write state machine.
//!
//! | state of the scope                      | same fingerprint             | other fingerprint |
//! |-----------------------------------------|------------------------------|-------------------|
//! | absent / released / expired, no record row | claim → execute           | claim → execute   |
//! | in flight, lease alive                  | 409 (or wait, `Prefer: wait`) | 409 (or wait)    |
//! | in flight, lease ended                  | take over (fence + 1) → execute | same            |
//! | completed, not expired                  | replay byte for byte (200)   | 422 mismatch      |
//! | expired, deterministic record row exists | 200, the resource as it is now | 422 mismatch    |
//!
//! Invariants:
//! - At most one execution of a scope commits: the business write, the completed record
//!   (matched on this executor's fence), the `new` audit row and the outbox rows share
//!   one transaction, and the record row's id is the scope's deterministic id.
//! - A failed execution commits nothing and frees the key.
//! - While executing, the executor renews its lease every lease/3; an executor whose
//!   claim was taken over cannot commit, and answers as a retry would.
//! - Duplicates of a key executing on this node wait on an in-process channel and hold no
//!   database connection; duplicates of a key executing elsewhere poll with backoff, one
//!   poller per scope per node (the others wait on it in-process).
//! - Completed records are immutable until they expire, so they are served from an
//!   in-memory cache without touching the database.
//! - A started write is finished whatever the client does: everything past the replay
//!   cache runs in a task of its own (tracked, so shutdown can wait for it), and the
//!   request only waits for its answer. A client that leaves drops the answer, never the
//!   claim, the transaction or the audit row; its retry replays the result. Only waiting
//!   (for a duplicate in flight) stops when the client leaves, since it holds nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::db::{Db, Ts, Tx};
use crate::fingerprint::Fingerprint;
use crate::key::Scope;
use crate::registry::OperationDef;
use crate::store::{self, Claim, RecordState, StoredResponse};
use crate::telemetry::{insert_audit, log_write, AuditQueue, AuditRow, Metrics};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// How long a completed record counts (operations may override).
    pub key_ttl: Duration,
    /// Cap for `Prefer: wait`.
    pub max_wait: Duration,
    /// Bytes of completed responses kept in memory for replay (least recently used go
    /// first; a response larger than 1/16 of this is never cached).
    pub replay_cache_bytes: usize,
    /// Writes executing at once, counting those whose clients left; past it a write is
    /// refused (503) before it claims its key, so abandoned requests cannot pile up work.
    pub max_executions: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            key_ttl: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(30),
            replay_cache_bytes: 16 * 1024 * 1024,
            max_executions: 2048,
        }
    }
}

/// A domain event emitted inside a write's transaction.
#[derive(Debug, Clone)]
pub struct Event {
    /// Event name (`payment.created`).
    pub name: &'static str,
    /// Entity type of the record (`payment`).
    pub entity_type: &'static str,
    /// The operation's record id.
    pub entity_id: Uuid,
}

/// Schedules side effects for events, in the write's transaction (the outbox).
pub trait Emitter: Send + Sync + 'static {
    /// Inserts the side effects of `events` and returns how many it scheduled.
    fn emit<'a>(
        &'a self,
        tx: &'a mut Tx,
        tenant: &'a str,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<u32, sqlx::Error>>;
}

/// An emitter that schedules nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEmitter;

impl Emitter for NoEmitter {
    fn emit<'a>(
        &'a self,
        _: &'a mut Tx,
        _: &'a str,
        _: &'a [Event],
    ) -> BoxFuture<'a, Result<u32, sqlx::Error>> {
        Box::pin(async { Ok(0) })
    }
}

/// How an operation's failure is classified (the `error_type` metric label).
pub trait OperationError: Send + 'static {
    /// `validation`, `not_found`, `business_rule`, `internal`, …
    fn error_type(&self) -> &'static str;
    /// A description for the audit log (never SQL text).
    fn audit_message(&self) -> String;
}

/// The operation's record as found by its deterministic id.
#[derive(Debug, Clone)]
pub struct Existing {
    /// Fingerprint of the request that created it.
    pub fingerprint: String,
    /// The resource as it is now, in the shape of the operation's 201 body.
    pub body: Vec<u8>,
    /// The 201's `Location`.
    pub location: Option<String>,
}

/// What a successful execution returns (answered with 201).
#[derive(Debug, Clone)]
pub struct Created {
    /// Response body, exactly as it will be replayed.
    pub body: Vec<u8>,
    /// `Location`, if the operation has one.
    pub location: Option<String>,
}

/// One idempotent operation, executed inside the engine's transaction.
pub trait Operation: Send + Sync {
    /// The operation's own failure type.
    type Error: OperationError;

    /// Finds the operation's record by its deterministic id (it outlives the key).
    fn find_existing(
        &self,
        tx: &mut Tx,
        tenant: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Existing>, Self::Error>> + Send;

    /// Validates and performs the write. The record row's id must be `ctx.id()` and it
    /// must keep `ctx.fingerprint()`.
    fn execute(
        &self,
        ctx: &mut ExecCtx<'_>,
    ) -> impl Future<Output = Result<Created, Self::Error>> + Send;
}

/// What an executing operation sees.
pub struct ExecCtx<'a> {
    tx: &'a mut Tx,
    scope: &'a Scope,
    user: Option<&'a str>,
    id: Uuid,
    fingerprint: &'a str,
    now: Ts,
    emitter: &'a dyn Emitter,
    workflows_triggered: u32,
}

impl ExecCtx<'_> {
    /// The write's transaction.
    pub fn tx(&mut self) -> &mut Tx {
        self.tx
    }
    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.scope.tenant
    }
    /// The acting user.
    pub fn user(&self) -> Option<&str> {
        self.user
    }
    /// The deterministic id of this operation's record.
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The request fingerprint to keep on the record row.
    pub fn fingerprint(&self) -> &str {
        self.fingerprint
    }
    /// The instant of this execution (microseconds).
    pub fn now(&self) -> Ts {
        self.now
    }
    /// Emits events: schedules their side effects in this transaction.
    pub async fn emit(&mut self, events: &[Event]) -> Result<u32, sqlx::Error> {
        let n = self
            .emitter
            .emit(self.tx, &self.scope.tenant, events)
            .await?;
        self.workflows_triggered += n;
        Ok(n)
    }
}

/// Request facts the engine records (audit, logs).
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Request id.
    pub request_id: String,
    /// Acting user.
    pub user_id: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
}

/// One write presented to the engine.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The registered operation.
    pub op: &'static OperationDef,
    /// (tenant, operation, key).
    pub scope: Scope,
    /// Request fingerprint.
    pub fingerprint: Fingerprint,
    /// `Prefer: wait=N` as sent (clamped by the engine).
    pub wait: Option<Duration>,
    /// Request facts.
    pub meta: RequestMeta,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct WriteReply {
    /// `true` for 200 (replay), `false` for 201 (first execution).
    pub replayed: bool,
    /// Body bytes.
    pub body: Bytes,
    /// `Location`.
    pub location: Option<String>,
}

/// Why a write was not answered with 200/201.
#[derive(Debug)]
pub enum WriteError<E> {
    /// Another execution holds the key (409).
    InFlight,
    /// The key completed with another fingerprint (422 `idempotency_key_reused`).
    Mismatch,
    /// The operation failed; nothing was committed and the key is free.
    Operation(E),
    /// The store failed.
    Store(sqlx::Error),
    /// The server is shutting down (a parked waiter is let go with 503).
    ShuttingDown,
    /// As many writes as allowed are executing (abandoned ones included): refused before
    /// claiming anything (503).
    Overloaded,
}

/// The engine's answer, and whether the request was held by `Prefer: wait`.
#[derive(Debug)]
pub struct Outcome<E> {
    /// 200/201 or the failure.
    pub result: Result<WriteReply, WriteError<E>>,
    /// `Some(clamped wait)` when the request was actually held.
    pub held: Option<Duration>,
}

#[derive(Debug)]
struct Cached {
    fingerprint: String,
    body: Bytes,
    location: Option<String>,
    expires_at: Ts,
}

impl Cached {
    fn size(&self) -> usize {
        self.body.len()
            + self.fingerprint.len()
            + self.location.as_ref().map_or(0, String::len)
            + 128
    }
}

/// Completed responses by scope, bounded by total bytes, least recently used evicted.
struct ReplayCache {
    entries: lru::LruCache<Scope, Arc<Cached>>,
    bytes: usize,
    budget: usize,
}

impl ReplayCache {
    fn new(budget: usize) -> Self {
        Self {
            entries: lru::LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    fn get(&mut self, scope: &Scope) -> Option<Arc<Cached>> {
        let hit = self.entries.get(scope)?.clone();
        if hit.expires_at <= Ts::now() {
            self.remove(scope);
            return None;
        }
        Some(hit)
    }

    fn remove(&mut self, scope: &Scope) {
        if let Some(old) = self.entries.pop(scope) {
            self.bytes -= old.size();
        }
    }

    fn put(&mut self, scope: Scope, value: Arc<Cached>) {
        let size = value.size();
        if size > self.budget / 16 {
            return;
        }
        self.remove(&scope);
        while self.bytes + size > self.budget {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.size(),
                None => break,
            }
        }
        self.bytes += size;
        self.entries.put(scope, value);
    }
}

/// The idempotent-write engine: shared by every handler of a service.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    audit: AuditQueue,
    emitter: Arc<dyn Emitter>,
    shutdown: CancellationToken,
    executions: TaskTracker,
    slots: Arc<tokio::sync::Semaphore>,
    local: Mutex<HashMap<Scope, watch::Receiver<()>>>,
    cache: Mutex<ReplayCache>,
    #[cfg(feature = "test-hooks")]
    hooks: crate::hooks::TestHooks,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// Removes the scope from the local in-flight map (waking its waiters) when dropped.
struct LocalGuard<'a> {
    engine: &'a Inner,
    scope: Scope,
    _done: watch::Sender<()>,
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.engine.local.lock().remove(&self.scope);
        self.engine.metrics.local_in_flight.dec();
    }
}

/// Frees the claim if the execution is abandoned (error, cancellation) before it commits.
struct ClaimGuard {
    db: Db,
    scope: Scope,
    fence: i64,
    armed: bool,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.armed {
            let (db, scope, fence) = (self.db.clone(), self.scope.clone(), self.fence);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = store::release(&db, &scope, fence).await {
                        tracing::warn!(error = %e, operation = scope.operation, "could not release an abandoned claim; its lease will free it");
                    }
                });
            }
        }
    }
}

/// A request the gate refused before the engine, for [`Engine::record_rejected`].
#[derive(Debug)]
pub struct Rejected<'a> {
    /// Tenant (authenticated before the gate).
    pub tenant: &'a str,
    /// The key, when the request carried a valid one.
    pub key: Option<&'a crate::key::IdempotencyKey>,
    /// Request id, user, method and path.
    pub meta: &'a RequestMeta,
    /// `missing_key`, `invalid_key`, `malformed_json`, `payload_too_large`,
    /// `unsupported_media_type`.
    pub error_type: &'static str,
    /// The problem's detail (never the body).
    pub message: &'a str,
}

/// What a run learned on the way, besides its result.
#[derive(Debug, Default)]
struct RunReport {
    /// It parked (`Prefer: wait`).
    held: bool,
    /// Workflow instances the execution scheduled.
    workflows: u32,
    /// The duration the `new` audit row recorded.
    recorded: Option<Duration>,
}

enum Executed<E> {
    /// Answered; with the duration its `new` audit row recorded, when it executed.
    Done(WriteReply, Option<Duration>),
    Failed(WriteError<E>, u32),
    LostClaim,
}

const MAX_LOST_CLAIMS: usize = 3;

impl Engine {
    /// Creates an engine. Requests parked by `Prefer: wait` are let go when `shutdown`
    /// is cancelled.
    pub fn new(
        db: Db,
        cfg: EngineConfig,
        metrics: Arc<Metrics>,
        audit: AuditQueue,
        emitter: Arc<dyn Emitter>,
        shutdown: CancellationToken,
    ) -> Self {
        let replay_budget = cfg.replay_cache_bytes;
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_executions.max(1)));
        Self {
            inner: Arc::new(Inner {
                db,
                cfg,
                metrics,
                audit,
                emitter,
                shutdown,
                executions: TaskTracker::new(),
                slots,
                local: Mutex::new(HashMap::new()),
                cache: Mutex::new(ReplayCache::new(replay_budget)),
                #[cfg(feature = "test-hooks")]
                hooks: crate::hooks::TestHooks::from_env(),
            }),
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Test-only hold points.
    #[cfg(feature = "test-hooks")]
    pub fn hooks(&self) -> &crate::hooks::TestHooks {
        &self.inner.hooks
    }

    /// Records a request the gate refused before it reached the engine (missing or
    /// invalid key, malformed JSON, body too large, wrong content type): the counters,
    /// the log event and a `failed` audit row (key and deterministic id only when the
    /// request carried a valid key).
    pub fn record_rejected(&self, op: &'static OperationDef, rejected: Rejected<'_>) {
        let m = &self.inner.metrics;
        let (name, kind) = (op.name, op.kind.label());
        m.writes
            .get_or_create(&[("operation", name), ("type", kind), ("status", "failed")])
            .inc();
        m.failed
            .get_or_create(&[
                ("operation", name),
                ("type", kind),
                ("error_type", rejected.error_type),
            ])
            .inc();
        let id = rejected
            .key
            .map(|k| Scope::new(rejected.tenant, op.name, k.clone()).deterministic_id());
        let row = AuditRow {
            id: Uuid::now_v7(),
            operation_name: name,
            operation_type: kind,
            deterministic_id: id.map(|id| id.to_string()),
            company_id: rejected.tenant.to_owned(),
            user_id: rejected.meta.user_id.clone(),
            status: "failed",
            execution_duration_ms: 0.0,
            timestamp: Ts::now(),
            request_id: rejected.meta.request_id.clone(),
            idempotency_key: rejected.key.map(|k| k.as_str().to_owned()),
            route_path: rejected.meta.path.clone(),
            http_method: rejected.meta.method.clone(),
            workflows_triggered: 0,
            side_effects_executed: false,
            error_message: Some(rejected.message.to_owned()),
            metadata: Some(serde_json::json!({ "error_type": rejected.error_type })),
        };
        log_write(&row, Some(rejected.error_type));
        self.inner.audit.enqueue(row);
    }

    /// Writes still running (their clients may have gone).
    pub fn executions_running(&self) -> usize {
        self.inner.executions.len()
    }

    /// Waits until every started write has finished (call after the server stopped
    /// taking requests; bound it with a timeout).
    pub async fn drain(&self) {
        self.inner.executions.close();
        self.inner.executions.wait().await;
    }

    /// Runs one idempotent write through the state machine. A completed key in the
    /// replay cache is answered here; anything else runs detached from the caller, so
    /// dropping this future (a client disconnecting) never cuts a write short.
    pub async fn run<O>(&self, req: WriteRequest, op: O) -> Outcome<O::Error>
    where
        O: Operation + 'static,
    {
        let started = Instant::now();
        if let Some(hit) = self.cached(&req.scope) {
            let result = replay(&hit, &req.fingerprint);
            self.observe(&req, &result, started.elapsed(), 0);
            return Outcome { result, held: None };
        }
        let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
            let result = Err(WriteError::Overloaded);
            self.observe(&req, &result, started.elapsed(), 0);
            return Outcome { result, held: None };
        };
        let client = CancellationToken::new();
        let _gone_on_drop = client.clone().drop_guard();
        let engine = self.clone();
        let task = self.inner.executions.spawn(async move {
            let outcome = engine.run_detached(req, op, started, client).await;
            drop(slot);
            outcome
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "idempotent write task failed");
                Outcome {
                    result: Err(WriteError::Store(sqlx::Error::WorkerCrashed)),
                    held: None,
                }
            }
        }
    }

    async fn run_detached<O: Operation>(
        &self,
        req: WriteRequest,
        op: O,
        started: Instant,
        client: CancellationToken,
    ) -> Outcome<O::Error> {
        let wait = req.wait.map(|w| w.min(self.inner.cfg.max_wait));
        let deadline = wait.map(|w| started + w);
        let mut report = RunReport::default();
        let result = self
            .drive(&req, &op, started, deadline, &client, &mut report)
            .await;
        // A waiter whose client left has no outcome to record; an execution always has.
        let gave_up_waiting = client.is_cancelled() && matches!(result, Err(WriteError::InFlight));
        if !gave_up_waiting {
            // A new execution reports the duration its audit row holds (the whole run up
            // to the row, written in the write's transaction): row and histogram agree.
            let elapsed = report.recorded.unwrap_or_else(|| started.elapsed());
            self.observe(&req, &result, elapsed, report.workflows);
        }
        Outcome {
            result,
            held: if report.held { wait } else { None },
        }
    }

    async fn drive<O: Operation>(
        &self,
        req: &WriteRequest,
        op: &O,
        started: Instant,
        deadline: Option<Instant>,
        client: &CancellationToken,
        report: &mut RunReport,
    ) -> Result<WriteReply, WriteError<O::Error>> {
        let inner = &*self.inner;
        let mut lost = 0;
        let mut poll = Duration::from_millis(10);
        // Held from the first claim attempt until this request is answered: the node's
        // other duplicates of the scope wait on it, whether it executes or polls.
        let mut local_guard: Option<LocalGuard<'_>> = None;
        loop {
            if let Some(hit) = self.cached(&req.scope) {
                return replay(&hit, &req.fingerprint);
            }
            if local_guard.is_none() {
                match self.enter_local(&req.scope) {
                    Ok(guard) => local_guard = Some(guard),
                    Err(mut rx) => {
                        let Some(deadline) = deadline else {
                            return Err(WriteError::InFlight);
                        };
                        report.held = true;
                        inner.metrics.waiters.inc();
                        let woke = tokio::select! {
                            r = tokio::time::timeout_at(deadline.into(), rx.changed()) => r.is_ok(),
                            () = client.cancelled() => false,
                            () = inner.shutdown.cancelled() => {
                                inner.metrics.waiters.dec();
                                return Err(WriteError::ShuttingDown);
                            }
                        };
                        inner.metrics.waiters.dec();
                        if !woke {
                            return Err(WriteError::InFlight);
                        }
                        continue;
                    }
                }
            }
            let ttl = req.op.ttl.unwrap_or(inner.cfg.key_ttl);
            self.hold("claim", &req.scope).await;
            let claim = store::claim(
                &inner.db,
                &req.scope,
                req.fingerprint.as_str(),
                &req.meta.request_id,
                inner.cfg.lease,
                ttl,
            )
            .await
            .map_err(WriteError::Store)?;
            match claim {
                Claim::Existing(record) if record.state == RecordState::Completed => {
                    let cached = Arc::new(Cached {
                        fingerprint: record.fingerprint,
                        body: Bytes::from(record.response_body.unwrap_or_default()),
                        location: record.location,
                        expires_at: record.expires_at,
                    });
                    inner.cache.lock().put(req.scope.clone(), cached.clone());
                    return replay(&cached, &req.fingerprint);
                }
                Claim::Existing(_) => {
                    // In flight on another node: poll until it finishes or the wait ends.
                    // The local guard stays held while polling, so this node's other
                    // duplicates park on it and one poller per scope reads the store.
                    let Some(deadline) = deadline else {
                        return Err(WriteError::InFlight);
                    };
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(WriteError::InFlight);
                    }
                    report.held = true;
                    inner.metrics.waiters.inc();
                    let stopped = tokio::select! {
                        () = tokio::time::sleep(poll.min(deadline - now)) => None,
                        () = client.cancelled() => Some(WriteError::InFlight),
                        () = inner.shutdown.cancelled() => Some(WriteError::ShuttingDown),
                    };
                    inner.metrics.waiters.dec();
                    if let Some(e) = stopped {
                        return Err(e);
                    }
                    poll = (poll * 2).min(Duration::from_millis(250));
                }
                Claim::Claimed { fence } => {
                    match self.execute(req, op, started, fence, ttl).await {
                        Executed::Done(reply, d) => {
                            report.recorded = d;
                            return Ok(reply);
                        }
                        Executed::Failed(e, n) => {
                            report.workflows = n;
                            return Err(e);
                        }
                        Executed::LostClaim => {
                            lost += 1;
                            if lost >= MAX_LOST_CLAIMS {
                                return Err(WriteError::InFlight);
                            }
                        }
                    }
                }
            }
        }
    }

    fn cached(&self, scope: &Scope) -> Option<Arc<Cached>> {
        self.inner.cache.lock().get(scope)
    }

    fn enter_local(&self, scope: &Scope) -> Result<LocalGuard<'_>, watch::Receiver<()>> {
        let mut local = self.inner.local.lock();
        if let Some(rx) = local.get(scope) {
            return Err(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        local.insert(scope.clone(), rx);
        self.inner.metrics.local_in_flight.inc();
        Ok(LocalGuard {
            engine: &self.inner,
            scope: scope.clone(),
            _done: tx,
        })
    }

    async fn execute<O: Operation>(
        &self,
        req: &WriteRequest,
        op: &O,
        started: Instant,
        fence: i64,
        ttl: Duration,
    ) -> Executed<O::Error> {
        let inner = &*self.inner;
        let mut claim = ClaimGuard {
            db: inner.db.clone(),
            scope: req.scope.clone(),
            fence,
            armed: true,
        };
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = AbortOnDrop(tokio::spawn(renew_loop(
            inner.db.clone(),
            req.scope.clone(),
            fence,
            inner.cfg.lease,
            lost.clone(),
            self.renewal_paused(),
        )));
        self.hold("claimed", &req.scope).await;

        let outcome = self.transact(req, op, started, fence, ttl).await;
        drop(renewer);
        match outcome {
            Ok(TxOutcome::Committed(reply, recorded)) => {
                claim.armed = false;
                let cached = Arc::new(Cached {
                    fingerprint: req.fingerprint.as_str().to_owned(),
                    body: reply.body.clone(),
                    location: reply.location.clone(),
                    expires_at: Ts::now().plus(ttl),
                });
                inner.cache.lock().put(req.scope.clone(), cached);
                Executed::Done(reply, Some(recorded))
            }
            Ok(TxOutcome::Lost) => {
                claim.armed = false;
                Executed::LostClaim
            }
            Ok(TxOutcome::Existing(existing)) => {
                release_now(&mut claim).await;
                if existing.fingerprint == req.fingerprint.as_str() {
                    Executed::Done(
                        WriteReply {
                            replayed: true,
                            body: Bytes::from(existing.body),
                            location: existing.location,
                        },
                        None,
                    )
                } else {
                    Executed::Failed(WriteError::Mismatch, 0)
                }
            }
            Ok(TxOutcome::Failed(e, n)) => {
                release_now(&mut claim).await;
                Executed::Failed(WriteError::Operation(e), n)
            }
            Err(e) => {
                // The commit may have failed because our session was ended after the
                // lease (a frozen executor): answer as a retry would.
                if lost.load(Ordering::SeqCst) || self.claim_gone(req, fence).await {
                    claim.armed = false;
                    return Executed::LostClaim;
                }
                release_now(&mut claim).await;
                Executed::Failed(WriteError::Store(e), 0)
            }
        }
    }

    async fn claim_gone(&self, req: &WriteRequest, fence: i64) -> bool {
        match store::load(&self.inner.db, &req.scope).await {
            Ok(Some(r)) => r.fence != fence || r.state == RecordState::Completed,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    async fn transact<O: Operation>(
        &self,
        req: &WriteRequest,
        op: &O,
        started: Instant,
        fence: i64,
        ttl: Duration,
    ) -> Result<TxOutcome<O::Error>, sqlx::Error> {
        let inner = &*self.inner;
        let id = req.scope.deterministic_id();
        self.hold("begin", &req.scope).await;
        let mut tx = inner.db.begin().await?;
        match op.find_existing(&mut tx, &req.scope.tenant, id).await {
            Ok(Some(existing)) => {
                tx.rollback().await?;
                return Ok(TxOutcome::Existing(existing));
            }
            Ok(None) => {}
            Err(e) => {
                tx.rollback().await?;
                return Ok(TxOutcome::Failed(e, 0));
            }
        }
        let mut ctx = ExecCtx {
            tx: &mut tx,
            scope: &req.scope,
            user: req.meta.user_id.as_deref(),
            id,
            fingerprint: req.fingerprint.as_str(),
            now: Ts::now(),
            emitter: &*inner.emitter,
            workflows_triggered: 0,
        };
        self.hold("execute", &req.scope).await;
        let created = op.execute(&mut ctx).await;
        let workflows = ctx.workflows_triggered;
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                tx.rollback().await?;
                return Ok(TxOutcome::Failed(e, workflows));
            }
        };
        self.hold("before_complete", &req.scope).await;
        let stored = StoredResponse {
            status: 201,
            body: created.body,
            location: created.location,
            resource_id: id,
        };
        if !store::complete(&mut tx, &req.scope, fence, &stored, ttl).await? {
            tx.rollback().await?;
            return Ok(TxOutcome::Lost);
        }
        let recorded = started.elapsed();
        let row = audit_row(req, id, "new", recorded, workflows, None, None);
        self.hold("audit", &req.scope).await;
        insert_audit(&mut tx, &row).await?;
        self.hold("commit", &req.scope).await;
        tx.commit().await?;
        inner
            .metrics
            .workflows_triggered
            .get_or_create(&op_labels(req.op))
            .inc_by(u64::from(workflows));
        Ok(TxOutcome::Committed(
            WriteReply {
                replayed: false,
                body: Bytes::from(stored.body),
                location: stored.location,
            },
            recorded,
        ))
    }

    fn observe<E: OperationError>(
        &self,
        req: &WriteRequest,
        result: &Result<WriteReply, WriteError<E>>,
        elapsed: Duration,
        workflows: u32,
    ) {
        let m = &self.inner.metrics;
        let (op, kind) = (req.op.name, req.op.kind.label());
        let id = req.scope.deterministic_id();
        let ms = elapsed.as_secs_f64() * 1000.0;
        m.duration_ms
            .get_or_create(&[("operation", op), ("type", kind)])
            .observe(ms);
        let (status, error_type, message) = match result {
            Ok(r) if r.replayed => ("replayed", None, None),
            Ok(_) => ("new", None, None),
            Err(WriteError::InFlight) => (
                "failed",
                Some("in_flight"),
                Some("idempotency key in flight".to_owned()),
            ),
            Err(WriteError::Mismatch) => (
                "failed",
                Some("mismatch"),
                Some(
                    "idempotency key mismatch: the key was reused with a different request"
                        .to_owned(),
                ),
            ),
            Err(WriteError::Operation(e)) => {
                ("failed", Some(e.error_type()), Some(e.audit_message()))
            }
            Err(WriteError::Store(e)) if crate::db::is_transient(e) => (
                "failed",
                Some("unavailable"),
                Some("store unavailable".to_owned()),
            ),
            Err(WriteError::Store(_)) => {
                ("failed", Some("internal"), Some("store error".to_owned()))
            }
            Err(WriteError::ShuttingDown) => (
                "failed",
                Some("unavailable"),
                Some("server shutting down".to_owned()),
            ),
            Err(WriteError::Overloaded) => (
                "failed",
                Some("unavailable"),
                Some("server at its limit of executing writes".to_owned()),
            ),
        };
        m.writes
            .get_or_create(&[("operation", op), ("type", kind), ("status", status)])
            .inc();
        match error_type {
            Some(et) => {
                m.failed
                    .get_or_create(&[("operation", op), ("type", kind), ("error_type", et)])
                    .inc();
            }
            None if status == "replayed" => {
                m.replayed
                    .get_or_create(&[("operation", op), ("type", kind)])
                    .inc();
            }
            None => {}
        }
        // Workflows of a failed execution were rolled back with it.
        let workflows = if status == "new" { workflows } else { 0 };
        let row = audit_row(req, id, status, elapsed, workflows, message, error_type);
        log_write(&row, error_type);
        if status != "new" {
            // The new row was written in the write's own transaction.
            self.inner.audit.enqueue(row);
        }
    }

    #[cfg(feature = "test-hooks")]
    async fn hold(&self, point: &'static str, scope: &Scope) {
        self.inner.hooks.reach(point, scope).await;
    }

    #[cfg(not(feature = "test-hooks"))]
    async fn hold(&self, _point: &'static str, _scope: &Scope) {}

    #[cfg(feature = "test-hooks")]
    fn renewal_paused(&self) -> Arc<AtomicBool> {
        self.inner.hooks.renewal_paused()
    }

    #[cfg(not(feature = "test-hooks"))]
    fn renewal_paused(&self) -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }
}

enum TxOutcome<E> {
    Committed(WriteReply, Duration),
    Existing(Existing),
    Failed(E, u32),
    Lost,
}

fn op_labels(op: &'static OperationDef) -> [(&'static str, &'static str); 2] {
    [("operation", op.name), ("type", op.kind.label())]
}

fn replay<E>(hit: &Cached, fingerprint: &Fingerprint) -> Result<WriteReply, WriteError<E>> {
    if hit.fingerprint == fingerprint.as_str() {
        Ok(WriteReply {
            replayed: true,
            body: hit.body.clone(),
            location: hit.location.clone(),
        })
    } else {
        Err(WriteError::Mismatch)
    }
}

async fn release_now(claim: &mut ClaimGuard) {
    claim.armed = false;
    if let Err(e) = store::release(&claim.db, &claim.scope, claim.fence).await {
        tracing::warn!(error = %e, operation = claim.scope.operation, "could not release a failed claim; its lease will free it");
    }
}

fn audit_row(
    req: &WriteRequest,
    id: Uuid,
    status: &'static str,
    elapsed: Duration,
    workflows: u32,
    error: Option<String>,
    error_type: Option<&str>,
) -> AuditRow {
    AuditRow {
        id: Uuid::now_v7(),
        operation_name: req.op.name,
        operation_type: req.op.kind.label(),
        deterministic_id: Some(id.to_string()),
        company_id: req.scope.tenant.clone(),
        user_id: req.meta.user_id.clone(),
        status,
        execution_duration_ms: elapsed.as_secs_f64() * 1000.0,
        timestamp: Ts::now(),
        request_id: req.meta.request_id.clone(),
        idempotency_key: Some(req.scope.key.as_str().to_owned()),
        route_path: req.meta.path.clone(),
        http_method: req.meta.method.clone(),
        workflows_triggered: i32::try_from(workflows).unwrap_or(i32::MAX),
        side_effects_executed: workflows > 0,
        error_message: error,
        metadata: error_type.map(|et| serde_json::json!({ "error_type": et })),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn renew_loop(
    db: Db,
    scope: Scope,
    fence: i64,
    lease: Duration,
    lost: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
) {
    let every = (lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        if paused.load(Ordering::SeqCst) {
            continue;
        }
        match store::renew(&db, &scope, fence, lease).await {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, operation = scope.operation, "lease renewal failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::IdempotencyKey;

    fn scope(k: &str) -> Scope {
        Scope::new("t", "op", IdempotencyKey::parse(k.as_bytes()).expect("key"))
    }

    fn entry(len: usize) -> Arc<Cached> {
        Arc::new(Cached {
            fingerprint: String::new(),
            body: Bytes::from(vec![b'x'; len]),
            location: None,
            expires_at: Ts::now().plus(Duration::from_secs(60)),
        })
    }

    #[test]
    fn the_replay_cache_stays_within_its_byte_budget_evicting_the_least_recent() {
        let mut cache = ReplayCache::new(16 * 1000);
        for i in 0..100 {
            cache.put(scope(&format!("k{i}")), entry(800));
            assert!(cache.bytes <= cache.budget);
        }
        assert!(cache.get(&scope("k99")).is_some());
        assert!(
            cache.get(&scope("k0")).is_none(),
            "the oldest entries were evicted"
        );
        cache.put(scope("huge"), entry(2000));
        assert!(
            cache.get(&scope("huge")).is_none(),
            "oversized responses are not cached"
        );
    }

    #[test]
    fn expired_entries_are_not_served() {
        let mut cache = ReplayCache::new(1 << 20);
        let stale = Arc::new(Cached {
            fingerprint: String::new(),
            body: Bytes::new(),
            location: None,
            expires_at: Ts::now().minus(Duration::from_secs(1)),
        });
        cache.put(scope("old"), stale);
        assert!(cache.get(&scope("old")).is_none());
        assert_eq!(cache.bytes, 0);
    }
}
