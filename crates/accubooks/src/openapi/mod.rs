//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP API, assembled from
//! the routes the server mounts.
//!
//! Invariants:
//! - Every path comes from a mounted handler's `#[utoipa::path]`: [`ApiRouter`] mounts and
//!   documents in one step, so the document lists exactly the routes the server has, at
//!   their methods, and each response body is the schema of the Rust type the handler
//!   serializes (`#[derive(ToSchema)]`), each request body the schema of the input type
//!   its parser returns (closed objects whose field schemas come from [`fields`], built
//!   from the parser's own limits).
//! - What every route of a kind shares is added in one place ([`contract`]): path
//!   parameters, `X-Request-Id`, the idempotency contract of registered operations
//!   (`Idempotency-Key`, `Prefer`, 201 and 200 with `Idempotent-Replayed` and
//!   `Location`, their problem responses), and the problem responses of reads and of the
//!   operator routes. Operations' business rules are in [`specs`].
//! - The document is built and serialized once, when the router is built; the handler
//!   only clones the bytes.

mod contract;
pub mod fields;
mod responses;
mod router;
mod schemas;
mod specs;

use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use idem::Registry;
use utoipa::openapi::path::PathItem;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, PathsBuilder};

pub use self::router::{Api, ApiRouter, Route};

/// The serialized document, shared by every request.
#[derive(Debug, Clone)]
pub struct OpenApiJson(Bytes);

impl OpenApiJson {
    /// Builds and serializes the document of the routes in `api`.
    pub fn build(registry: &Registry, api: &Api) -> Result<Self, serde_json::Error> {
        document(registry, api)
            .to_json()
            .map(|s| Self(Bytes::from(s)))
    }

    /// The serialized document, as served.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A string schema admitting exactly `values` (for `#[schema(schema_with = …)]` on the
/// string fields that hold one of a fixed set).
pub fn one_of(values: &[&str]) -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// Handles `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "Health",
    summary = "This OpenAPI document (normative for shapes)",
    security(()),
    responses((status = 200, description = "This document.", body = Object))
)]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    ([(CONTENT_TYPE, "application/json")], doc.0).into_response()
}

/// The document of the routes in `api`, mounted over `registry`.
pub fn document(registry: &Registry, api: &Api) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in &api.routes {
        let operation = contract::apply(registry, route);
        paths = paths.path(&route.path, PathItem::new(route.method.clone(), operation));
    }
    let components = schemas::components(api.schemas.iter().cloned())
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("acb_…")
                    .description(Some(
                        "A company token (issued by the operator): it fixes the company and the user.",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("acbop_…")
                    .description(Some("The operator token; only for `/admin/`."))
                    .build(),
            ),
        )
        .build();
    let tags = [
        "Customers",
        "Employees",
        "Invoices",
        "Payments",
        "Payroll",
        "Banking",
        "Inventory",
        "Workflows",
        "Company",
        "Operator",
        "Health",
    ]
    .map(|t| TagBuilder::new().name(t).build());
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("AccuBooks API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(INTRO))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .security(Some([SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .tags(Some(tags))
        .build()
}

const INTRO: &str = "Multi-tenant accounting API whose every financial and high-risk write is \
exactly-once. Every write (`operationId` = operation name) requires an `Idempotency-Key`: \
the first execution answers 201 with `Idempotent-Replayed: false`; a retry with the same key \
and body answers 200 with the byte-identical body and `Idempotent-Replayed: true`; the same \
key with another body is 422 `idempotency_key_reused`; while the first is executing, 409 \
`idempotency_key_in_flight` (or wait with `Prefer: wait=N`). Errors are RFC 9457 problem \
documents. See docs/API.md for the conventions.";

#[cfg(test)]
mod tests;
