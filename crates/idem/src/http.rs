//! The axum integration: problem documents, request ids, and the idempotency gate.
//!
//! Invariants:
//! - Every error is an RFC 9457 problem document whose `request_id` equals the
//!   `X-Request-Id` response header ([`request_id_layer`] sets both).
//! - The gate applies the checks of the contract in order — body size (413), content
//!   type (415), `Idempotency-Key` (400), JSON (400) — before the engine decides between
//!   execute, replay (200), mismatch (422) and in flight (409).
//! - `Idempotent-Replayed` and `Location` appear only on 200/201 answers of operations;
//!   `Preference-Applied` appears on every answer to a request that was actually held.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::execute::{Idem, Rejected, RequestMeta, WriteError, WriteRequest};
use crate::fingerprint::{parse_canonical, Fingerprint};
use crate::key::{IdempotencyKey, KeyError, Scope};
use crate::operation::{Operation, OperationError};
use crate::registry::OperationDef;

/// Largest accepted request body (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// One invalid field of a `validation_failed` problem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldError {
    /// Dotted path with `[i]` indexes (`line_items[2].unit_price`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
///
/// Its `title` is idem's for the codes idem and most services share (`not_found`,
/// `forbidden`, `validation_failed`, the `idempotency_key_*` codes…) and `Request refused`
/// otherwise; a service names its own codes with [`Problem::with_title`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code (`idempotency_key_reused`).
    pub code: &'static str,
    /// Human explanation of this occurrence.
    pub detail: String,
    /// Field errors (`validation_failed`).
    pub errors: Vec<FieldError>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// Short summary of the problem type.
    pub title: &'static str,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
    request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl Problem {
    /// A problem with a status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            title: title(code),
        }
    }

    /// Sets the title (the same for every occurrence of this code).
    pub fn with_title(mut self, title: &'static str) -> Self {
        self.title = title;
        self
    }

    /// `422 validation_failed` with field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] if one.field.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    /// `404 not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// `422 validation_failed` for one invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// idem's title of a problem code.
fn title(code: &str) -> &'static str {
    match code {
        "not_found" => "Not found",
        "method_not_allowed" => "Method not allowed",
        "unauthenticated" => "Authentication required",
        "forbidden" => "Forbidden",
        "payload_too_large" => "Payload too large",
        "unsupported_media_type" => "Unsupported media type",
        "idempotency_key_missing" => "Idempotency-Key missing",
        "idempotency_key_invalid" => "Idempotency-Key invalid",
        "malformed_json" => "Malformed JSON",
        "idempotency_key_in_flight" => "Request with this Idempotency-Key in flight",
        "idempotency_key_reused" => "Idempotency-Key reused with another request",
        "validation_failed" => "Validation failed",
        "service_unavailable" => "Service unavailable",
        "internal" => "Internal error",
        _ => "Request refused",
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("/problems/{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            request_id: current_request_id(),
            errors: (self.code == "validation_failed").then_some(self.errors.as_slice()),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, bytes).into_response();
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request id of the request being served (empty outside [`request_id_layer`]).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The request id, also stored in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| s.to_owned())
}

/// Middleware: echoes a valid `X-Request-Id` (1–128 of `[A-Za-z0-9._:-]`) or generates
/// one, and sets it on every response and problem document.
pub async fn request_id_layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Reads a body of at most `limit` bytes (413 otherwise).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let Ok(chunk) = chunk else {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "the request body could not be read",
            ));
        };
        if buf.len() + chunk.len() > limit {
            drain(Body::from_stream(stream)).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads and discards up to 16 MiB (for 2 s at most) of a refused body, so that the
/// client reads the 413 instead of a reset connection; larger uploads are cut off.
async fn drain(body: Body) {
    let discard = axum::body::to_bytes(body, 16 * 1024 * 1024);
    let _ = tokio::time::timeout(Duration::from_secs(2), discard).await;
}

/// Whether the `Content-Type` is `application/json` (any case, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

/// `415 unsupported_media_type`.
pub fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as application/json",
    )
}

/// `Prefer: wait=N` (RFC 7240), in seconds; malformed preferences are ignored.
pub fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let token = pref.split(';').next()?.trim();
            let (name, value) = token.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let value = value.trim().trim_matches('"');
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            value.parse::<u64>().ok().map(Duration::from_secs)
        })
        .next()
}

/// Who is writing: the tenant (the scope of its keys) and the acting user.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Writer {
    /// Tenant id (lowercase).
    pub tenant: String,
    /// Acting user.
    pub user_id: Option<String>,
}

impl Writer {
    /// A write in `tenant` (lowercased), by no user in particular.
    pub fn tenant(tenant: impl Into<String>) -> Self {
        let mut tenant = tenant.into();
        tenant.make_ascii_lowercase();
        Self {
            tenant,
            user_id: None,
        }
    }

    /// The acting user, for the audit log.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

impl Idem {
    /// Runs `req` as the operation `def` for `writer`: checks the body size, content
    /// type, key and JSON, then hands the parsed body to `make` and the result to the
    /// state machine. Authentication and authorization happen before.
    pub(crate) async fn handle<O, F>(
        &self,
        def: &'static OperationDef,
        writer: Writer,
        req: Request,
        make: F,
    ) -> Response
    where
        O: Operation + 'static,
        O::Error: IntoResponse,
        F: FnOnce(Value) -> Result<O, Problem>,
    {
        let (parts, body) = req.into_parts();
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(current_request_id);
        let meta = RequestMeta {
            request_id,
            user_id: writer.user_id.clone(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        };
        let key = IdempotencyKey::from_headers(&parts.headers);
        // Refused before the engine: counted, logged and audited all the same.
        let refuse = |problem: Problem, error_type: &'static str| {
            self.record_rejected(
                def,
                Rejected {
                    tenant: &writer.tenant,
                    key: key.as_ref().ok(),
                    meta: &meta,
                    error_type,
                    message: &problem.detail,
                },
            );
            problem.into_response()
        };
        let bytes = match read_body(&parts.headers, body, self.config().body_limit).await {
            Ok(b) => b,
            Err(p) => {
                let code = p.code;
                return refuse(p, code);
            }
        };
        let empty_allowed = bytes.is_empty() && def.accepts_empty_body();
        let has_content_type = parts.headers.contains_key(CONTENT_TYPE);
        if !(is_json(&parts.headers) || (empty_allowed && !has_content_type)) {
            return refuse(unsupported_media_type(), "unsupported_media_type");
        }
        let key = match &key {
            Ok(k) => k.clone(),
            Err(e) => {
                let (code, label) = match e {
                    KeyError::Missing => ("idempotency_key_missing", "missing_key"),
                    KeyError::Invalid => ("idempotency_key_invalid", "invalid_key"),
                };
                return refuse(
                    Problem::new(StatusCode::BAD_REQUEST, code, e.to_string()),
                    label,
                );
            }
        };
        let (value, canonical_body) = if empty_allowed {
            (Value::Object(serde_json::Map::new()), String::from("{}"))
        } else {
            match parse_canonical(&bytes) {
                Ok(parsed) => parsed,
                Err(e) => {
                    return refuse(
                        Problem::new(StatusCode::BAD_REQUEST, "malformed_json", e.0),
                        "malformed_json",
                    );
                }
            }
        };
        let op = match make(value) {
            Ok(op) => op,
            Err(problem) => return refuse(problem, "validation"),
        };
        let fingerprint = Fingerprint::compute(parts.method.as_str(), &meta.path, &canonical_body);
        let write = WriteRequest {
            op: def,
            scope: Scope::new(
                self.config().tenancy,
                writer.tenant.clone(),
                def.name(),
                key,
            ),
            fingerprint,
            wait: prefer_wait(&parts.headers),
            meta,
        };
        let outcome = self.run(write, op).await;
        let mut res = match outcome.result {
            Ok(reply) => {
                let status = if reply.replayed { StatusCode::OK } else { StatusCode::CREATED };
                let mut res = (status, reply.body).into_response();
                let h = res.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(
                    "idempotent-replayed",
                    HeaderValue::from_static(if reply.replayed { "true" } else { "false" }),
                );
                if let Some(loc) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                    h.insert(LOCATION, loc);
                }
                res
            }
            Err(WriteError::InFlight) => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still executing; retry shortly",
            )
            .retry_after(1)
            .into_response(),
            Err(WriteError::Mismatch) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key for a new request",
            )
            .into_response(),
            Err(WriteError::Operation(e)) => e.into_response(),
            Err(WriteError::Store(e)) => store_error(&e).into_response(),
            Err(WriteError::ShuttingDown) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the server is shutting down; retry on another node or shortly",
            )
            .retry_after(5)
            .into_response(),
            Err(WriteError::Overloaded) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the server is at its limit of writes in progress; nothing was written, retry shortly",
            )
            .retry_after(5)
            .into_response(),
        };
        if let Some(wait) = outcome.held {
            if let Ok(v) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
                res.headers_mut().insert("preference-applied", v);
            }
        }
        res
    }
}

impl OperationError for Problem {
    fn error_type(&self) -> &'static str {
        match self.code {
            "validation_failed" => "validation",
            "not_found" => "not_found",
            "internal" => "internal",
            "service_unavailable" => "unavailable",
            _ => "business_rule",
        }
    }

    fn audit_message(&self) -> String {
        self.detail.clone()
    }
}

/// A store error as its problem: see [`store_error`].
impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        store_error(&e)
    }
}

/// Maps a store error to `503 service_unavailable` (unreachable, pool exhausted) or an
/// opaque `500 internal`, logging the cause.
pub fn store_error(e: &sqlx::Error) -> Problem {
    let unavailable = crate::db::is_transient(e);
    if unavailable {
        tracing::warn!(error = %e, "database unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the database is unavailable; retry shortly",
        )
        .retry_after(5)
    } else {
        tracing::error!(error = ?e, "database error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn prefer_wait_is_read_among_other_preferences_and_malformed_is_ignored() {
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "respond-async, wait=10")])),
            Some(Duration::from_secs(10))
        );
        assert_eq!(prefer_wait(&headers(&[("prefer", "wait=abc")])), None);
        assert_eq!(prefer_wait(&headers(&[("prefer", "wait=-1")])), None);
        assert_eq!(prefer_wait(&headers(&[])), None);
    }

    #[test]
    fn json_content_type_is_case_insensitive_and_allows_parameters() {
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[("content-type", "application/jsonx")])));
    }

    #[test]
    fn an_unreachable_store_is_503_with_retry_after_and_other_errors_are_opaque_500() {
        let p = store_error(&sqlx::Error::PoolTimedOut);
        assert_eq!(
            (p.status, p.code, p.retry_after),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some(5)
            )
        );
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(store_error(&io).status, StatusCode::SERVICE_UNAVAILABLE);
        let p = store_error(&sqlx::Error::RowNotFound);
        assert_eq!(
            (p.status, p.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        assert!(
            !p.detail.contains("row"),
            "no database text reaches the client"
        );
    }

    #[test]
    fn request_ids_outside_the_alphabet_or_length_are_replaced() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-1.2_3:4")).is_some());
        assert!(valid_request_id(&HeaderValue::from_static("has space")).is_none());
        let long = "a".repeat(129);
        assert!(valid_request_id(&HeaderValue::from_str(&long).unwrap()).is_none());
    }
}
