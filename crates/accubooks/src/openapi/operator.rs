//! The operator endpoints under `/admin/` (operator token, exempt from the idempotency
//! gate) and the unauthenticated health, metrics and document routes.

use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ComponentsBuilder, Content, ObjectBuilder, PathItem, PathsBuilder, Response, ResponseBuilder,
    Type,
};

use super::responses::{json, path_id, problem, request_id_param, server_errors, unauthenticated};
use super::schemas::{email, enumeration, or_null, r, string, text, Obj, NAME};

fn operator() -> SecurityRequirement {
    SecurityRequirement::new("operator", Vec::<String>::new())
}

fn admin_body(schema: &str) -> RequestBody {
    RequestBodyBuilder::new()
        .required(Some(utoipa::openapi::Required::True))
        .content("application/json", Content::new(Some(r(schema))))
        .build()
}

fn admin_errors(op: OperationBuilder) -> OperationBuilder {
    let op = op
        .response(
            "400",
            problem(
                400,
                "`malformed_json`: the body is not one JSON object.",
                &["malformed_json"],
            ),
        )
        .response("401", unauthenticated("operator"))
        .response(
            "413",
            problem(
                413,
                "`payload_too_large`: the body exceeds 1 MiB.",
                &["payload_too_large"],
            ),
        )
        .response(
            "415",
            problem(
                415,
                "`unsupported_media_type`: send `application/json`.",
                &["unsupported_media_type"],
            ),
        )
        .response(
            "422",
            problem(
                422,
                "`validation_failed`: see `errors`.",
                &["validation_failed"],
            ),
        );
    server_errors()
        .into_iter()
        .fold(op, |op, (s, r)| op.response(s, r))
}

fn created_with_token(description: &str, schema: &str) -> Response {
    json(description, r(schema))
        .header(
            "Cache-Control",
            utoipa::openapi::HeaderBuilder::new()
                .schema(enumeration(&["no-store"]))
                .description(Some("responses carrying a token are never cached"))
                .build(),
        )
        .build()
}

/// `/admin/…`: companies, tokens and the system health page (operator token).
pub(super) fn admin(paths: PathsBuilder) -> PathsBuilder {
    let company = OperationBuilder::new()
        .tag("Operator")
        .operation_id(Some("createCompany"))
        .summary(Some("Create a company and its first admin"))
        .description(Some("Exempt from the idempotency gate (an operator bootstrap action): a retry creates another company. The first admin is `owner@<company_id>` unless `email` is given; the settings start at version 1."))
        .security(operator())
        .parameter(request_id_param())
        .request_body(Some(admin_body("CompanyIn")))
        .response("201", created_with_token("The company, its admin and a company token.", "CompanyCreated"));
    let token = OperationBuilder::new()
        .tag("Operator")
        .operation_id(Some("issueToken"))
        .summary(Some("Issue a company token for a member"))
        .description(Some(
            "Exempt from the idempotency gate: every call issues a new token.",
        ))
        .security(operator())
        .parameter(path_id("company_id"))
        .parameter(request_id_param())
        .request_body(Some(admin_body("TokenIn")))
        .response(
            "201",
            created_with_token("A new token for the member.", "TokenIssued"),
        )
        .response(
            "404",
            problem(
                404,
                "`not_found`: no such company, or the email has no access to it.",
                &["not_found"],
            ),
        );
    let health = OperationBuilder::new()
        .tag("Operator")
        .operation_id(Some("getSystemHealth"))
        .summary(Some("System health: database, idempotency store, prune job, audit log"))
        .security(operator())
        .parameter(request_id_param())
        .response("200", json("Component health; idempotency is `error` when expired_pending > 1000 or the oldest expired record is older than 48 h, `degraded` when expired_pending > 100 or the oldest pending claim is older than 30 min.", r("SystemHealth")).build())
        .response("401", unauthenticated("operator"));
    let health = server_errors()
        .into_iter()
        .fold(health, |op, (s, r)| op.response(s, r));
    paths
        .path(
            "/admin/companies",
            PathItem::new(HttpMethod::Post, admin_errors(company)),
        )
        .path(
            "/admin/companies/{company_id}/tokens",
            PathItem::new(HttpMethod::Post, admin_errors(token)),
        )
        .path(
            "/admin/system/health",
            PathItem::new(HttpMethod::Get, health),
        )
}

fn public(id: &str, summary: &str, response: Response) -> OperationBuilder {
    OperationBuilder::new()
        .tag("Health")
        .operation_id(Some(id))
        .summary(Some(summary))
        .securities(Some([SecurityRequirement::default()]))
        .response("200", response)
}

/// `/healthz`, `/readyz`, `/metrics`, `/openapi.json`: no token.
pub(super) fn public_paths(paths: PathsBuilder) -> PathsBuilder {
    let status = || r("Status");
    let metrics = ResponseBuilder::new()
        .description("OpenMetrics when the Accept header asks for it, else Prometheus text format 0.0.4 (idempotent_writes_total, idempotency_keys_total, pool, HTTP and audit-queue series…).")
        .content("application/openmetrics-text", Content::new(Some(string("metrics"))))
        .content("text/plain", Content::new(Some(string("metrics"))))
        .build();
    let document = ResponseBuilder::new()
        .description("This document.")
        .content("application/json", Content::new(Some(ObjectBuilder::new())))
        .build();
    let readyz = public(
        "readyz",
        "A write can start (the database answers; on SQLite the writer slot and write lock are free)",
        json("Ready.", status()).build(),
    )
    .response(
        "503",
        json("A write cannot start within 2 s.", status()).build(),
    );
    paths
        .path(
            "/healthz",
            PathItem::new(
                HttpMethod::Get,
                public(
                    "healthz",
                    "The process is alive",
                    json("Alive.", status()).build(),
                ),
            ),
        )
        .path("/readyz", PathItem::new(HttpMethod::Get, readyz))
        .path(
            "/metrics",
            PathItem::new(
                HttpMethod::Get,
                public("metrics", "Prometheus metrics", metrics),
            ),
        )
        .path(
            "/openapi.json",
            PathItem::new(
                HttpMethod::Get,
                public(
                    "openapi",
                    "This OpenAPI document (normative for shapes)",
                    document,
                ),
            ),
        )
}

/// Component schemas of the operator surface.
pub(super) fn schemas(c: ComponentsBuilder) -> ComponentsBuilder {
    c.schema(
        "CompanyIn",
        Obj::new("Body of `POST /admin/companies`.")
            .req("name", text(NAME))
            .opt("email", or_null(email(), Type::String))
            .closed()
            .build(),
    )
    .schema(
        "TokenIn",
        Obj::new("Body of `POST /admin/companies/{company_id}/tokens`.")
            .req("email", email())
            .closed()
            .build(),
    )
}
