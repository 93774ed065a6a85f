//! `GET /openapi.json`: the OpenAPI 3 document of the whole HTTP API, the normative
//! machine-readable shape of API.md.
//!
//! Invariants:
//! - The idempotent operations' paths come from the mutation registry the router was
//!   built with: only registered (hence mounted) operations appear, each at its method and
//!   route with `operationId` = its name, the required `Idempotency-Key` header, 201/200
//!   with `Idempotent-Replayed`, and its problem responses.
//! - Every operation of API.md has an entry in [`specs::SPECS`]; a registered operation
//!   without one fails the unit tests (and would be documented as undescribed, never
//!   dropped silently).
//! - The document is built and serialized once, when the router is built; the handler
//!   only clones the bytes.

mod entities;
mod inputs;
mod operator;
mod reads;
mod responses;
mod schemas;
mod specs;

use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use idem::{OperationDef, OperationType, Registry};
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    Content, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Required,
};

use self::responses::{
    idempotency_key, operation_success, path_id, prefer, problem, request_id_param, server_errors,
    unauthenticated,
};
use self::schemas::S;
use self::specs::{Access, OpSpec};

/// The serialized document, shared by every request.
#[derive(Debug, Clone)]
pub struct OpenApiJson(Bytes);

impl OpenApiJson {
    /// Builds and serializes the document for `registry`.
    pub fn build(registry: &Registry) -> Result<Self, serde_json::Error> {
        document(registry).to_json().map(|s| Self(Bytes::from(s)))
    }

    /// The serialized document, as served.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The document for `registry` as JSON (for checks such as `accubooks contract verify`).
pub fn document_json(registry: &Registry) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(document(registry))
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
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    ([(CONTENT_TYPE, "application/json")], doc.0).into_response()
}

/// The document for the operations of `registry`.
pub fn document(registry: &Registry) -> OpenApi {
    let registered: Vec<&str> = registry.operations().iter().map(|d| d.name).collect();
    let mut paths = PathsBuilder::new();
    for def in registry.operations() {
        let spec = specs::find(def.name);
        match spec {
            None => tracing::warn!(
                operation = def.name,
                "no OpenAPI entry for a registered operation"
            ),
            Some(s) if !s.agrees_with(def) => tracing::warn!(
                operation = def.name,
                "the OpenAPI entry disagrees with the registry; the registry wins"
            ),
            Some(_) => {}
        }
        let (method, item) = operation(def, spec);
        paths = paths.path(def.route, PathItem::new(method, item));
    }
    let paths = operator::public_paths(operator::admin(reads::reads(paths, &registered)));
    let components = schemas::components()
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

fn http_method(def: &OperationDef) -> HttpMethod {
    match def.method.as_str() {
        "PATCH" => HttpMethod::Patch,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Post,
    }
}

/// The names of the `{param}` segments of a route.
fn path_params(route: &str) -> impl Iterator<Item = &str> {
    route
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// What the operation does, its type, roles and business rules, in Markdown.
fn description(def: &OperationDef, spec: Option<&OpSpec>) -> String {
    let kind = match def.kind {
        OperationType::Financial => "financial",
        OperationType::HighRisk => "high-risk",
    };
    let roles = match spec.map(|s| s.access) {
        Some(Access::Admins) => "admin",
        _ => "admin, accountant",
    };
    let mut text = format!(
        "Idempotent operation `{}` (type: {kind}; roles: {roles}).",
        def.name
    );
    if let Some(s) = spec {
        text.push_str(&format!(" {}", s.description));
        if !s.rules.is_empty() {
            text.push_str("\n\nBusiness rules (422, checked in this order):");
            for (code, meaning) in s.rules {
                text.push_str(&format!("\n- `{code}`: {meaning}"));
            }
        }
    }
    text
}

/// The request body: optional where an empty body means `{}`.
fn request_body(def: &OperationDef, schema: S) -> RequestBody {
    let (description, required) = if def.empty_body_is_empty_object {
        (
            "JSON object; an empty body without a content type means `{}`",
            Required::False,
        )
    } else {
        (
            "JSON object (application/json, any parameters such as charset)",
            Required::True,
        )
    };
    RequestBodyBuilder::new()
        .description(Some(description))
        .required(Some(required))
        .content("application/json", Content::new(Some(schema)))
        .build()
}

/// Documents a registered operation; without a spec entry it is still listed, tagged
/// `Undocumented`, with open object bodies and the generic contract.
fn operation(def: &OperationDef, spec: Option<&OpSpec>) -> (HttpMethod, OperationBuilder) {
    let open = || S::from(ObjectBuilder::new());
    let (tag, summary, request, response) = match spec {
        Some(s) => (
            s.tag,
            s.summary,
            schemas::r(s.request),
            schemas::r(s.response),
        ),
        None => ("Undocumented", def.name, open(), open()),
    };
    let mut op = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(def.name))
        .summary(Some(summary))
        .description(Some(description(def, spec)));
    for name in path_params(def.route) {
        op = op.parameter(path_id(name));
    }
    let location = spec.and_then(|s| s.location);
    let op = op
        .parameter(idempotency_key())
        .parameter(prefer())
        .parameter(request_id_param())
        .request_body(Some(request_body(def, request)))
        .response("201", operation_success(201, response.clone(), location))
        .response("200", operation_success(200, response, location));
    (http_method(def), problems(op, spec))
}

fn problems(op: OperationBuilder, spec: Option<&OpSpec>) -> OperationBuilder {
    let admins = spec.is_some_and(|s| s.access == Access::Admins);
    let mut codes_422 = vec!["validation_failed", "idempotency_key_reused"];
    codes_422.extend(
        spec.into_iter()
            .flat_map(|s| s.rules.iter().map(|(c, _)| *c)),
    );
    let mut desc_422 = "`validation_failed` (field errors in `errors`), \
        `idempotency_key_reused` (this key completed with a different request: use a new key)"
        .to_owned();
    if let Some(s) = spec.filter(|s| !s.rules.is_empty()) {
        let rules: Vec<String> = s
            .rules
            .iter()
            .map(|(c, m)| format!("`{c}` ({m})"))
            .collect();
        desc_422.push_str(&format!(", or a business rule: {}", rules.join(", ")));
    }
    let mut op = op
        .response("400", problem(400, "`idempotency_key_missing`, `idempotency_key_invalid`, or `malformed_json` (empty where not allowed, unparsable, invalid UTF-8, duplicate key).", &["idempotency_key_missing", "idempotency_key_invalid", "malformed_json"]))
        .response("401", unauthenticated("company"))
        .response("403", problem(403, if admins { "`forbidden`: only `admin` may call this operation." } else { "`forbidden`: `viewer` tokens are read-only." }, &["forbidden"]));
    if let Some(when) = spec.and_then(|s| s.not_found) {
        op = op.response(
            "404",
            problem(404, &format!("`not_found`: {when}."), &["not_found"]),
        );
    }
    op = op
        .response("409", problem(409, "`idempotency_key_in_flight`: a request with this key is still executing; retry after `Retry-After` seconds or send `Prefer: wait=N`.", &["idempotency_key_in_flight"]))
        .response("413", problem(413, "`payload_too_large`: the body exceeds 1 MiB.", &["payload_too_large"]))
        .response("415", problem(415, "`unsupported_media_type`: send `Content-Type: application/json`.", &["unsupported_media_type"]))
        .response("422", problem(422, &desc_422, &codes_422));
    server_errors()
        .into_iter()
        .fold(op, |op, (status, res)| op.response(status, res))
}

#[cfg(test)]
mod tests;
