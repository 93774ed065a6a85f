//! HTTP plumbing shared by the domain handlers: path ids, JSON bodies outside the gate,
//! list pagination, fallbacks and HTTP metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::request::Parts;
use http::StatusCode;
use idem::http::{is_json, read_body, unsupported_media_type, DEFAULT_BODY_LIMIT};
use idem::{Problem, Ts};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::validate::parse_uuid;

/// A UUID path segment; anything else makes the route unknown (404, before auth).
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw): Path<String> = Path::from_request_parts(parts, state)
            .await
            .map_err(|_| route_not_found())?;
        parse_uuid(&raw).map(IdPath).ok_or_else(route_not_found)
    }
}

fn route_not_found() -> AppError {
    AppError::not_found("no such route")
}

/// Fallback: `404 not_found`.
pub async fn not_found() -> AppError {
    route_not_found()
}

/// Method fallback: `405 method_not_allowed`.
pub async fn method_not_allowed() -> AppError {
    AppError::Problem(Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not support that method",
    ))
}

/// Reads a JSON body on a route outside the gate (413, 415, 400 in that order).
pub async fn json_body(req: Request) -> AppResult<Value> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, DEFAULT_BODY_LIMIT)
        .await
        .map_err(AppError::Problem)?;
    if !is_json(&parts.headers) {
        return Err(AppError::Problem(unsupported_media_type()));
    }
    idem::fingerprint::parse_strict(&bytes).map_err(|e| {
        AppError::Problem(Problem::new(StatusCode::BAD_REQUEST, "malformed_json", e.0))
    })
}

/// `?limit=&cursor=` and filters of a list.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Page size, 1..=500.
    pub limit: i64,
    /// Keyset position: rows strictly older than this.
    pub after: Option<(Ts, Uuid)>,
    pairs: Vec<(String, String)>,
}

impl ListQuery {
    /// Parses the query string; `filters` are the names this list accepts.
    pub fn parse(raw: Option<&str>, filters: &[&str]) -> AppResult<Self> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut v = crate::validate::Validator::new();
        let mut q = ListQuery {
            limit: 50,
            after: None,
            pairs: Vec::new(),
        };
        for (k, val) in pairs {
            match k.as_str() {
                "limit" => match val.parse::<i64>() {
                    Ok(n) if (1..=500).contains(&n) && !val.starts_with('+') => q.limit = n,
                    _ => v.error("limit", "must be an integer from 1 to 500"),
                },
                "cursor" => match decode_cursor(&val) {
                    Some(c) => q.after = Some(c),
                    None => v.error("cursor", "is not a cursor returned by this list"),
                },
                f if filters.contains(&f) => q.pairs.push((k, val)),
                _ => {}
            }
        }
        v.finish()?;
        Ok(q)
    }

    /// A filter's raw value.
    pub fn filter(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A filter that must be an id (422 naming it otherwise).
    pub fn uuid_filter(&self, name: &str) -> AppResult<Option<Uuid>> {
        match self.filter(name) {
            None => Ok(None),
            Some(s) => parse_uuid(s)
                .map(Some)
                .ok_or_else(|| AppError::field(name, "must be an id (36-character UUID)")),
        }
    }

    /// A filter that must be `true` or `false`.
    pub fn bool_filter(&self, name: &str) -> AppResult<Option<bool>> {
        match self.filter(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(AppError::field(name, "must be true or false")),
        }
    }

    /// A filter that must be one of `allowed`.
    pub fn enum_filter(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> AppResult<Option<&'static str>> {
        match self.filter(name) {
            None => Ok(None),
            Some(s) => allowed
                .iter()
                .find(|a| **a == s)
                .map(|a| Some(*a))
                .ok_or_else(|| {
                    AppError::field(name, format!("must be one of: {}", allowed.join(", ")))
                }),
        }
    }

    /// The keyset clause over `created_at`/`id` (`$n`, `$n+1`), empty on the first page.
    pub fn keyset(&self, first: usize, id_col: &str) -> String {
        match self.after {
            None => String::new(),
            Some(_) => format!(
                " and (created_at < ${first} or (created_at = ${first} and {id_col} < ${}))",
                first + 1
            ),
        }
    }
}

fn decode_cursor(s: &str) -> Option<(Ts, Uuid)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ts, id) = text.split_once('/')?;
    Some((Ts::from_micros(ts.parse().ok()?), Uuid::parse_str(id).ok()?))
}

fn encode_cursor(ts: Ts, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}/{}", ts.micros(), id))
}

/// The paging parameters every list reads (see [`ListQuery::parse`]), for the document.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1..500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `{"data": [...], "next_cursor": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListPage<T> {
    /// This page, newest first.
    pub data: Vec<T>,
    /// Where the next page starts; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Builds a page from `limit + 1` rows fetched newest first.
pub fn page<T, F: Fn(&T) -> (Ts, Uuid)>(mut rows: Vec<T>, limit: i64, key: F) -> ListPage<T> {
    let limit = usize::try_from(limit).unwrap_or(50);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|r| {
            let (ts, id) = key(r);
            encode_cursor(ts, id)
        })
    } else {
        None
    };
    ListPage {
        data: rows,
        next_cursor,
    }
}

/// A JSON 200 response.
pub fn ok_json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => AppError::Internal(format!("serialize: {e}")).into_response(),
    }
}

type HttpLabels = [(&'static str, String); 3];

/// HTTP request metrics: `http_requests_total{method,route,status}`,
/// `http_request_duration_seconds{method,route}`, `http_requests_in_flight`, and the
/// pool gauges `db_pool_connections_{in_use,open,max}`.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<[(&'static str, String); 2], Histogram>,
    in_flight: Gauge,
    pool_in_use: Gauge,
    pool_open: Gauge,
    pool_max: Gauge,
}

impl HttpMetrics {
    /// Creates and registers the HTTP metrics.
    pub fn register(r: &mut prometheus_client::registry::Registry) -> Self {
        let m = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            in_flight: Gauge::default(),
            pool_in_use: Gauge::default(),
            pool_open: Gauge::default(),
            pool_max: Gauge::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            m.duration.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "HTTP requests being served",
            m.in_flight.clone(),
        );
        r.register(
            "db_pool_connections_in_use",
            "Database connections checked out",
            m.pool_in_use.clone(),
        );
        r.register(
            "db_pool_connections_open",
            "Database connections open",
            m.pool_open.clone(),
        );
        r.register(
            "db_pool_connections_max",
            "Database pool size limit",
            m.pool_max.clone(),
        );
        m
    }

    /// Reads the pool's numbers into the gauges (on scrape).
    pub fn publish_pool(&self, db: &idem::Db) {
        self.pool_in_use.set(i64::from(db.connections_in_use()));
        self.pool_open.set(i64::from(db.connections_open()));
        self.pool_max.set(i64::from(db.max_connections()));
    }
}

/// The `method` label: one of a fixed set, so that a client cannot create label values
/// (and memory) by inventing methods.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware recording the HTTP metrics. Every label value comes from a fixed set: the
/// method through [`method_label`], the route as its template (`/api/invoices/{id}`) or
/// `unmatched` for the 404 fallback (never the raw path), the status as a number.
pub async fn track_http(m: Arc<HttpMetrics>, req: Request, next: Next) -> Response {
    let method = method_label(req.method()).to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    m.in_flight.inc();
    let started = Instant::now();
    let res = next.run(req).await;
    m.in_flight.dec();
    m.duration
        .get_or_create(&[("method", method.clone()), ("route", route.clone())])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&[
            ("method", method),
            ("route", route),
            ("status", res.status().as_u16().to_string()),
        ])
        .inc();
    res
}
