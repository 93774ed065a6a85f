//! What each answer of the engine costs in telemetry, decided in one place: the metrics,
//! the structured log event and the audit row.
//!
//! Invariants:
//! - Every write answered by the engine, or refused by the gate before it, is counted
//!   once in `idempotent_writes_total`, logged once (target `idem::write`) and audited
//!   once.
//! - A `new` row is written inside the write's own transaction (by the engine, through
//!   [`crate::store::complete`]); every other row goes through the batched
//!   [`AuditQueue`](crate::telemetry::AuditQueue), off the request path.
//! - The log event and the audit row are built from the same [`AuditRow`], so they
//!   cannot disagree.

use std::time::Duration;

use uuid::Uuid;

use crate::db::Ts;
use crate::execute::{Idem, RequestMeta, WriteError, WriteReply, WriteRequest};
use crate::key::Scope;
use crate::operation::OperationError;
use crate::registry::OperationDef;
use crate::telemetry::{log_write, AuditRow};

/// A request the gate refused before the engine, for [`Idem::record_rejected`].
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

impl Idem {
    /// Records one answered write: the duration histogram and counters, the structured
    /// log event and, for anything but a new execution (whose row is written in its own
    /// transaction), the audit row through the queue. The engine calls it for every
    /// answer; it is public so that its cost can be measured on its own.
    pub fn observe<E: OperationError>(
        &self,
        req: &WriteRequest,
        result: &Result<WriteReply, WriteError<E>>,
        elapsed: Duration,
        workflows: u32,
    ) {
        let m = &self.inner.metrics;
        let (op, kind) = (req.op.name(), req.op.kind_label());
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

    /// Records a request the gate refused before it reached the engine (missing or
    /// invalid key, malformed JSON, body too large, wrong content type): the counters,
    /// the log event and a `failed` audit row (key and deterministic id only when the
    /// request carried a valid key).
    pub fn record_rejected(&self, op: &'static OperationDef, rejected: Rejected<'_>) {
        let m = &self.inner.metrics;
        let (name, kind) = (op.name(), op.kind_label());
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
        let id = rejected.key.map(|k| {
            Scope::new(self.config().tenancy, rejected.tenant, op.name(), k.clone())
                .deterministic_id()
        });
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
}

pub(crate) fn audit_row(
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
        operation_name: req.op.name(),
        operation_type: req.op.kind_label(),
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
