//! `Idem::run`: the one place that implements the idempotent-write state machine.
//!
//! | state of the scope                      | same fingerprint             | other fingerprint |
//! |-----------------------------------------|------------------------------|-------------------|
//! | no live record, nobody executing         | claim → execute              | claim → execute   |
//! | executing (its transaction holds the claim) | 409 (or wait, `Prefer: wait`) | 409 (or wait)  |
//! | executor crashed or frozen past its lease | its session is ended by the store: claim → execute | same |
//! | completed, not expired                  | replay byte for byte (200)   | 422 mismatch      |
//! | expired, deterministic record row exists | 200, the resource as it is now | 422 mismatch    |
//!
//! Invariants:
//! - One transaction per execution: the claim ([`store::claim`]), the business write,
//!   the completed record and the `new` audit row ([`store::complete`], one statement on
//!   PostgreSQL) and the outbox rows. At most one execution of a scope commits, because
//!   only the claim's holder executes and the claim ends with its transaction; the
//!   record row's id is the scope's deterministic id.
//! - A failed execution commits nothing; rolling back frees the key.
//! - An executor that loses its session (ended by the store after the lease, or cut off)
//!   cannot commit, and tries again as a retry would: it then finds the completion of
//!   whoever took over, or that nothing committed and executes.
//! - Duplicates of a key executing on this node wait on an in-process channel and hold no
//!   database connection; duplicates of a key executing elsewhere poll with backoff, one
//!   poller per scope per node (the others wait on it in-process).
//! - Completed records are immutable until they expire, so they are served from an
//!   in-memory cache (`cache.rs`) without touching the database.
//! - A started write is finished whatever the client does: everything past the replay
//!   cache runs in a task of its own (tracked, so shutdown can wait for it), and the
//!   request only waits for its answer. A client that leaves drops the answer, never the
//!   transaction or the audit row; its retry replays the result. Only waiting (for a
//!   duplicate in flight) stops when the client leaves, since it holds nothing.
//! - What each answer costs in telemetry (metrics, log event, audit row) is decided in
//!   one place, `observe.rs`; what an operation is and sees, in `operation.rs`; the
//!   replay cache, in `cache.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{Cached, ReplayCache};
use crate::db::{Db, Ts, Tx};
use crate::fingerprint::Fingerprint;
use crate::key::Scope;
use crate::registry::OperationDef;
use crate::store::{self, Claim, Lease, Record, StoredResponse};
use crate::telemetry::{AuditQueue, AuditWriter, Metrics};

pub(crate) use crate::observe::Rejected;
use crate::operation::{Config, Emitter, ExecCtx, Existing, Operation, OperationError};

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
#[non_exhaustive]
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

/// The idempotent-write engine: shared by every handler of a service.
#[derive(Clone)]
pub struct Idem {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    db: Db,
    cfg: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) audit: AuditQueue,
    audit_writer: tokio::sync::Mutex<Option<AuditWriter>>,
    audit_stop: CancellationToken,
    emitter: Arc<dyn Emitter>,
    shutdown: CancellationToken,
    executions: TaskTracker,
    slots: Arc<tokio::sync::Semaphore>,
    local: Mutex<HashMap<Scope, watch::Receiver<()>>>,
    cache: ReplayCache,
    #[cfg(feature = "test-hooks")]
    hooks: crate::hooks::TestHooks,
}

impl std::fmt::Debug for Idem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idem")
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

/// How one attempt at a scope ended.
enum Attempt<E> {
    /// Executed and committed; with the duration its `new` audit row recorded.
    Committed(WriteReply, Duration),
    /// A live completed record stands.
    Completed(Record),
    /// The operation's record exists (the key expired): answered from it.
    Existing(Existing),
    /// Another transaction holds the scope.
    InFlight,
    /// Failed; nothing committed. With the workflows its rolled-back execution scheduled.
    Failed(WriteError<E>, u32),
    /// The session went away under the executor (ended by the store after the lease, or
    /// the connection cut): whether its commit landed is read by the next attempt. With
    /// the failure to answer if the attempts run out.
    SessionLost(WriteError<E>),
}

/// Attempts after a lost session before the write is answered as unavailable.
const MAX_LOST_SESSIONS: usize = 3;

impl Idem {
    /// Assembles an engine from its parts; [`Builder`](crate::Builder) is the public way.
    pub(crate) fn assemble(
        db: Db,
        cfg: Config,
        metrics: Arc<Metrics>,
        audit: (AuditQueue, AuditWriter, CancellationToken),
        emitter: Arc<dyn Emitter>,
        shutdown: CancellationToken,
    ) -> Self {
        let cache = ReplayCache::new(cfg.replay_cache_bytes);
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_executions.max(1)));
        let (audit, writer, audit_stop) = audit;
        Self {
            inner: Arc::new(Inner {
                db,
                cfg,
                metrics,
                audit,
                audit_writer: tokio::sync::Mutex::new(Some(writer)),
                audit_stop,
                emitter,
                shutdown,
                executions: TaskTracker::new(),
                slots,
                local: Mutex::new(HashMap::new()),
                cache,
                #[cfg(feature = "test-hooks")]
                hooks: crate::hooks::TestHooks::from_env(),
            }),
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &Config {
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

    /// Lets requests parked by `Prefer: wait` go (answered 503): the first step of a
    /// shutdown, once the server stops taking requests.
    pub fn release_waiters(&self) {
        self.inner.shutdown.cancel();
    }

    /// Writes the audit rows still queued and stops the audit writer (after
    /// [`drain`](Self::drain): rows queued later are counted as dropped).
    pub async fn finish_audit(&self) {
        self.inner.audit_stop.cancel();
        let writer = self.inner.audit_writer.lock().await.take();
        if let Some(writer) = writer {
            writer.finish().await;
        }
    }

    /// The whole shutdown, for a service that needs no finer control: releases the
    /// waiters, waits for the running writes, then flushes the audit queue. Call it
    /// after the server stopped (`axum::serve(…).with_graceful_shutdown(…)` returned).
    pub async fn shutdown(&self) {
        self.release_waiters();
        self.drain().await;
        self.finish_audit().await;
    }

    /// Runs one idempotent write through the state machine. A completed key in the
    /// replay cache is answered here; anything else runs detached from the caller, so
    /// dropping this future (a client disconnecting) never cuts a write short.
    pub async fn run<O>(&self, req: WriteRequest, op: O) -> Outcome<O::Error>
    where
        O: Operation + 'static,
    {
        let started = Instant::now();
        if let Some(hit) = self.inner.cache.get(&req.scope) {
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
        // The first attempt executes straight away; a failed one is tried once more,
        // looking for the operation's record first (see `Operation::find_existing`).
        let mut cautious = false;
        // Held from the first claim attempt until this request is answered: the node's
        // other duplicates of the scope wait on it, whether it executes or polls.
        let mut local_guard: Option<LocalGuard<'_>> = None;
        loop {
            if let Some(hit) = inner.cache.get(&req.scope) {
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
            self.hold("claim", &req.scope).await;
            match self.attempt(req, op, started, cautious).await {
                Attempt::Committed(reply, recorded) => {
                    report.recorded = Some(recorded);
                    return Ok(reply);
                }
                Attempt::Completed(record) => {
                    let cached = Arc::new(Cached {
                        fingerprint: record.fingerprint,
                        body: Bytes::from(record.response_body),
                        location: record.location,
                        remaining: record.remaining,
                    });
                    inner.cache.put(req.scope.clone(), cached.clone());
                    return replay(&cached, &req.fingerprint);
                }
                Attempt::Existing(existing) => {
                    return if existing.fingerprint == req.fingerprint.as_str() {
                        Ok(WriteReply {
                            replayed: true,
                            body: Bytes::from(existing.body),
                            location: existing.location,
                        })
                    } else {
                        Err(WriteError::Mismatch)
                    };
                }
                Attempt::Failed(WriteError::Operation(_), _) if !cautious => cautious = true,
                Attempt::Failed(e, workflows) => {
                    report.workflows = workflows;
                    return Err(e);
                }
                Attempt::SessionLost(e) => {
                    lost += 1;
                    tracing::warn!(
                        operation = req.op.name(),
                        attempt = lost,
                        "the write's session was lost; reading the key again"
                    );
                    if lost >= MAX_LOST_SESSIONS {
                        return Err(e);
                    }
                }
                Attempt::InFlight => {
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
            }
        }
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

    /// One transaction: claim the scope, and if it is ours and has no live record,
    /// execute, complete and commit.
    async fn attempt<O: Operation>(
        &self,
        req: &WriteRequest,
        op: &O,
        started: Instant,
        cautious: bool,
    ) -> Attempt<O::Error> {
        let inner = &*self.inner;
        let lease = Lease {
            lease: inner.cfg.lease,
            lock_timeout: inner.cfg.lock_timeout,
        };
        let mut tx = match inner.db.begin().await {
            Ok(tx) => tx,
            Err(e) => return Attempt::Failed(WriteError::Store(e), 0),
        };
        match store::claim(&mut tx, &req.scope, lease).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Completed(record)) => {
                let _ = tx.rollback().await;
                return Attempt::Completed(record);
            }
            Ok(Claim::InFlight) => {
                let _ = tx.rollback().await;
                return Attempt::InFlight;
            }
            Err(e) => return Attempt::Failed(WriteError::Store(e), 0),
        }
        match self.execute(&mut tx, req, op, started, cautious).await {
            Ok(Executed::Done(reply, recorded, workflows)) => {
                self.hold("commit", &req.scope).await;
                if let Err(e) = tx.commit().await {
                    return store_failure(e);
                }
                inner
                    .metrics
                    .workflows_triggered
                    .get_or_create(&op_labels(req.op))
                    .inc_by(u64::from(workflows));
                let cached = Arc::new(Cached {
                    fingerprint: req.fingerprint.as_str().to_owned(),
                    body: reply.body.clone(),
                    location: reply.location.clone(),
                    remaining: req.op.key_ttl().unwrap_or(inner.cfg.key_ttl),
                });
                inner.cache.put(req.scope.clone(), cached);
                Attempt::Committed(reply, recorded)
            }
            Ok(Executed::Existing(existing)) => {
                let _ = tx.rollback().await;
                Attempt::Existing(existing)
            }
            Ok(Executed::Failed(e, workflows)) => {
                let _ = tx.rollback().await;
                if e.store_error().is_some_and(crate::db::session_lost) {
                    return Attempt::SessionLost(WriteError::Operation(e));
                }
                Attempt::Failed(WriteError::Operation(e), workflows)
            }
            Ok(Executed::RecordStands) => {
                // Only a claim holder writes records, so this means the claim was not
                // what it seemed: read the key again.
                let _ = tx.rollback().await;
                Attempt::SessionLost(WriteError::InFlight)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                store_failure(e)
            }
        }
    }

    /// The operation and the completion, inside the claimed transaction; `cautious`
    /// looks for the operation's record first.
    async fn execute<O: Operation>(
        &self,
        tx: &mut Tx,
        req: &WriteRequest,
        op: &O,
        started: Instant,
        cautious: bool,
    ) -> Result<Executed<O::Error>, sqlx::Error> {
        let inner = &*self.inner;
        let id = req.scope.deterministic_id();
        self.hold("claimed", &req.scope).await;
        self.hold("begin", &req.scope).await;
        if cautious {
            match op.find_existing(tx, &req.scope.tenant, id).await {
                Ok(Some(existing)) => return Ok(Executed::Existing(existing)),
                Ok(None) => {}
                Err(e) => return Ok(Executed::Failed(e, 0)),
            }
        }
        let mut ctx = ExecCtx {
            tx,
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
            Err(e) => return Ok(Executed::Failed(e, workflows)),
        };
        self.hold("before_complete", &req.scope).await;
        let stored = StoredResponse {
            status: 201,
            body: created.body,
            location: created.location,
            resource_id: id,
        };
        let recorded = started.elapsed();
        let row = crate::observe::audit_row(req, id, "new", recorded, workflows, None, None);
        self.hold("audit", &req.scope).await;
        let ttl = req.op.key_ttl().unwrap_or(inner.cfg.key_ttl);
        if !store::complete(tx, &req.scope, req.fingerprint.as_str(), &stored, ttl, &row).await? {
            return Ok(Executed::RecordStands);
        }
        Ok(Executed::Done(
            WriteReply {
                replayed: false,
                body: Bytes::from(stored.body),
                location: stored.location,
            },
            recorded,
            workflows,
        ))
    }

    #[cfg(feature = "test-hooks")]
    async fn hold(&self, point: &'static str, scope: &Scope) {
        self.inner.hooks.reach(point, scope).await;
    }

    #[cfg(not(feature = "test-hooks"))]
    async fn hold(&self, _point: &'static str, _scope: &Scope) {}
}

enum Executed<E> {
    Done(WriteReply, Duration, u32),
    Existing(Existing),
    Failed(E, u32),
    RecordStands,
}

/// A store error inside a claimed transaction: a lost session is read again (the
/// commit may or may not have landed), anything else fails the write.
fn store_failure<E>(e: sqlx::Error) -> Attempt<E> {
    if crate::db::session_lost(&e) {
        Attempt::SessionLost(WriteError::Store(e))
    } else {
        Attempt::Failed(WriteError::Store(e), 0)
    }
}

pub(crate) fn op_labels(op: &'static OperationDef) -> [(&'static str, &'static str); 2] {
    [("operation", op.name()), ("type", op.kind_label())]
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
