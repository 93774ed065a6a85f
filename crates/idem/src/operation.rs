//! What an adopting service implements and configures: the [`Operation`] trait and what
//! an execution sees ([`ExecCtx`]), what it answers ([`Created`], [`Existing`]), how its
//! failures are classified ([`OperationError`]), the outbox hook ([`Emitter`]) and the
//! engine's settings ([`Config`]).
//!
//! Invariants:
//! - An operation runs only inside the engine's transaction, after the claim, and may
//!   run more than once for one key when an attempt fails or loses its session: only
//!   the attempt that commits counts, so `execute` must write nothing outside `ctx.tx()`.
//! - The record row's id is `ctx.id()`, the scope's deterministic id.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::db::{Ts, Tx};
use crate::http::Problem;
use crate::key::Scope;

/// The engine's settings, set through [`Builder`](crate::Builder) and read with
/// [`Idem::config`](crate::Idem::config).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How long an executor's session may sit idle in its transaction, or run one
    /// statement, before the store ends it and the key can be taken over (PostgreSQL).
    pub lease: Duration,
    /// The longest one of a write's statements may wait for a row lock (PostgreSQL).
    pub lock_timeout: Duration,
    /// How long a completed record counts (operations may override).
    pub key_ttl: Duration,
    /// Cap for `Prefer: wait`.
    pub max_wait: Duration,
    /// Bytes of completed responses kept in memory for replay (a response larger than
    /// 1/16 of this is never cached).
    pub replay_cache_bytes: usize,
    /// Writes executing at once, counting those whose clients left; past it a write is
    /// refused (503) before it claims its key, so abandoned requests cannot pile up work.
    pub max_executions: usize,
    /// Largest accepted request body, in bytes (413 past it).
    pub body_limit: usize,
    /// What the service calls a tenant (`company`), in every deterministic id.
    pub tenancy: &'static str,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(5),
            key_ttl: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(30),
            replay_cache_bytes: 16 * 1024 * 1024,
            max_executions: 2048,
            body_limit: crate::http::DEFAULT_BODY_LIMIT,
            tenancy: "tenant",
        }
    }
}

/// A domain event emitted inside a write's transaction.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// Event name (`payment.created`).
    pub name: &'static str,
    /// Entity type of the record (`payment`).
    pub entity_type: &'static str,
    /// The operation's record id.
    pub entity_id: Uuid,
}

impl Event {
    /// The event `name` (`payment.created`) of the record `entity_id` of `entity_type`.
    pub fn new(name: &'static str, entity_type: &'static str, entity_id: Uuid) -> Self {
        Self {
            name,
            entity_type,
            entity_id,
        }
    }
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
    /// The store error behind this failure, if it is one: a lost session inside the
    /// operation is then read again like one in the engine's own statements.
    fn store_error(&self) -> Option<&sqlx::Error> {
        None
    }
}

/// The operation's record as found by its deterministic id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Existing {
    /// Fingerprint of the request that created it.
    pub fingerprint: String,
    /// The resource as it is now, in the shape of the operation's 201 body.
    pub body: Vec<u8>,
    /// The 201's `Location`.
    pub location: Option<String>,
}

impl Existing {
    /// The record kept `fingerprint`; `value` is the resource now, serialized as JSON
    /// (a value that cannot be is a `500 internal`).
    pub fn json<T: serde::Serialize>(
        fingerprint: impl Into<String>,
        value: &T,
    ) -> Result<Self, Problem> {
        Ok(Self::bytes(fingerprint, to_json(value)?))
    }

    /// The record kept `fingerprint`; `body` is the resource now, as JSON bytes.
    pub fn bytes(fingerprint: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            fingerprint: fingerprint.into(),
            body,
            location: None,
        }
    }

    /// Sets the `Location` of the answer.
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

/// What a successful execution returns (answered with 201).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Created {
    /// Response body, exactly as it will be replayed.
    pub body: Vec<u8>,
    /// `Location`, if the operation has one.
    pub location: Option<String>,
}

impl Created {
    /// A 201 whose body is `value` serialized as JSON (a value that cannot be is a
    /// `500 internal`).
    pub fn json<T: serde::Serialize>(value: &T) -> Result<Self, Problem> {
        Ok(Self::bytes(to_json(value)?))
    }

    /// A 201 with these exact body bytes (JSON).
    pub fn bytes(body: Vec<u8>) -> Self {
        Self {
            body,
            location: None,
        }
    }

    /// Sets the 201's `Location`.
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Problem> {
    serde_json::to_vec(value).map_err(|e| {
        tracing::error!(error = %e, "a response body could not be serialized");
        Problem::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    })
}

/// One idempotent operation, executed inside the engine's transaction.
pub trait Operation: Send + Sync {
    /// The operation's own failure type.
    type Error: OperationError;

    /// Finds the operation's record by its deterministic id (it outlives the key).
    ///
    /// Consulted only when an execution fails: a record standing from a key that expired
    /// makes the execution fail (its row's id is taken), and the engine then rolls back
    /// and tries once more, this time asking here first. A new write never pays for it.
    ///
    /// Without it (the default finds nothing), such a retry fails as the insert does.
    fn find_existing(
        &self,
        tx: &mut Tx,
        tenant: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Existing>, Self::Error>> + Send {
        let _ = (tx, tenant, id);
        async { Ok(None) }
    }

    /// Validates and performs the write. The record row's id must be `ctx.id()` and it
    /// must keep `ctx.fingerprint()`; the write must fail if that row already exists.
    fn execute(
        &self,
        ctx: &mut ExecCtx<'_>,
    ) -> impl Future<Output = Result<Created, Self::Error>> + Send;
}

/// What an executing operation sees.
pub struct ExecCtx<'a> {
    pub(crate) tx: &'a mut Tx,
    pub(crate) scope: &'a Scope,
    pub(crate) user: Option<&'a str>,
    pub(crate) id: Uuid,
    pub(crate) fingerprint: &'a str,
    pub(crate) now: Ts,
    pub(crate) emitter: &'a dyn Emitter,
    pub(crate) workflows_triggered: u32,
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
