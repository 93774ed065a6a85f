//! The uniform contract, added to the operations the handlers document: what every
//! route of a kind shares is stated here once instead of in each `#[utoipa::path]`.
//!
//! Invariants:
//! - Every `{name}` segment of a route is a required path parameter holding an id.
//! - `/api/` and `/admin/` routes take `X-Request-Id`; every JSON response carries it.
//! - A registered operation (its `operationId` names it) requires `Idempotency-Key`,
//!   answers 201 and 200 with `Idempotent-Replayed` (and its `Location`), in the shape of
//!   the body its handler declares for 201, and declares every problem the gate and the
//!   operation can answer, narrowed to their codes.
//! - An error status a handler declares without a body (its 404, with when it happens)
//!   becomes that status's problem document; reads add 401, 500 and 503, and 422 when
//!   they take list parameters; `/admin/` routes add the operator's problems, and their
//!   writes, which answer with a token, `Cache-Control: no-store`.

use idem::{OperationDef, Registry};
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, Parameter, ParameterIn};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::{Content, ObjectBuilder, RefOr, Required, Response};

use super::responses::{
    bad_query, idempotency_key, no_store_header, operation_success, path_id, prefer, problem,
    request_id_header, request_id_param, server_errors, unauthenticated,
};
use super::router::Route;
use super::schemas::S;
use super::specs::{self, Access, OpSpec};

/// `route`'s operation with the contract added.
pub(super) fn apply(registry: &Registry, route: &Route) -> Operation {
    let mut op = route.operation.clone();
    let def = op.operation_id.as_deref().and_then(|n| registry.get(n));
    parameters(&mut op, &route.path, def.is_some());
    let declared = declared_errors(&mut op);
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(r) = response {
            if r.content.contains_key("application/json") {
                r.headers
                    .insert("X-Request-Id".to_owned(), request_id_header());
            }
        }
    }
    let not_found = declared
        .iter()
        .find(|(s, _)| s == "404")
        .map(|(_, d)| d.as_str());
    if let Some(def) = def {
        return operation(def, specs::find(def.name()), op, not_found);
    }
    let mut op = OperationBuilder::from(op);
    if let Some(when) = not_found {
        op = op.response("404", not_found_problem(when));
    }
    if route.path.starts_with("/api/") {
        company_read(op, takes_list_parameters(&route.operation))
    } else if route.path.starts_with("/admin/") {
        operator(op, route.method == HttpMethod::Post)
    } else {
        op.build()
    }
}

/// Path ids first, then the handler's own parameters, then the headers of the contract.
fn parameters(op: &mut Operation, path: &str, idempotent: bool) {
    let own = op.parameters.take().unwrap_or_default();
    let mut params: Vec<Parameter> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .filter(|name| !own.iter().any(|p| p.name == *name))
        .map(path_id)
        .collect();
    params.extend(own);
    if idempotent {
        params.extend([idempotency_key(), prefer()]);
    }
    if path.starts_with("/api/") || path.starts_with("/admin/") {
        params.push(request_id_param());
    }
    op.parameters = (!params.is_empty()).then_some(params);
}

/// Removes the error responses the handler declared without a body, returning their
/// status and description.
fn declared_errors(op: &mut Operation) -> Vec<(String, String)> {
    let statuses: Vec<String> = op
        .responses
        .responses
        .iter()
        .filter(|(status, r)| {
            status.as_str() >= "400" && matches!(r, RefOr::T(r) if r.content.is_empty())
        })
        .map(|(status, _)| status.clone())
        .collect();
    statuses
        .into_iter()
        .filter_map(|status| match op.responses.responses.remove(&status) {
            Some(RefOr::T(r)) => Some((status, r.description)),
            _ => None,
        })
        .collect()
}

fn takes_list_parameters(op: &Operation) -> bool {
    op.parameters
        .iter()
        .flatten()
        .any(|p| p.name == "limit" && matches!(p.parameter_in, ParameterIn::Query))
}

fn not_found_problem(when: &str) -> Response {
    problem(404, &format!("`not_found`: {when}."), &["not_found"])
}

fn company_read(op: OperationBuilder, list: bool) -> Operation {
    let mut op = op.response("401", unauthenticated("company"));
    if list {
        op = op.response("422", bad_query());
    }
    with_server_errors(op).build()
}

/// An operator route; a write's body is required and its 201 is not to be cached.
fn operator(op: OperationBuilder, write: bool) -> Operation {
    let mut op = op.response("401", unauthenticated("operator"));
    if write {
        op = op
            .response(
                "400",
                problem(
                    400,
                    "`malformed_json`: the body is not one JSON object.",
                    &["malformed_json"],
                ),
            )
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
    }
    let mut op = with_server_errors(op).build();
    if write {
        if let Some(body) = op.request_body.as_mut() {
            body.required = Some(Required::True);
        }
        // The operator's writes answer with a token.
        if let Some(RefOr::T(created)) = op.responses.responses.get_mut("201") {
            created
                .headers
                .insert("Cache-Control".to_owned(), no_store_header());
        }
    }
    op
}

fn with_server_errors(op: OperationBuilder) -> OperationBuilder {
    server_errors()
        .into_iter()
        .fold(op, |op, (status, res)| op.response(status, res))
}

/// The JSON schema of `response`, or an open object.
fn json_schema(response: Option<&RefOr<Response>>) -> S {
    match response {
        Some(RefOr::T(r)) => r
            .content
            .get("application/json")
            .and_then(|c| c.schema.clone())
            .unwrap_or_else(|| ObjectBuilder::new().into()),
        _ => ObjectBuilder::new().into(),
    }
}

/// A registered operation: the idempotency contract around the handler's body types.
fn operation(
    def: &OperationDef,
    spec: Option<&OpSpec>,
    mut op: Operation,
    not_found: Option<&str>,
) -> Operation {
    let success = json_schema(op.responses.responses.get("201"));
    op.responses.responses.clear();
    let request = op
        .request_body
        .take()
        .and_then(|b| {
            b.content
                .get("application/json")
                .and_then(|c| c.schema.clone())
        })
        .unwrap_or_else(|| ObjectBuilder::new().into());
    op.description = Some(description(def, spec, op.description.as_deref()));
    let location = spec.and_then(|s| s.location);
    let mut op = OperationBuilder::from(op)
        .request_body(Some(request_body(def, request)))
        .response("201", operation_success(201, success.clone(), location))
        .response("200", operation_success(200, success, location));
    if let Some(when) = not_found {
        op = op.response("404", not_found_problem(when));
    }
    problems(op, spec).build()
}

/// What the operation does, its type, roles and business rules, in Markdown.
fn description(def: &OperationDef, spec: Option<&OpSpec>, own: Option<&str>) -> String {
    let kind = def.kind_label();
    let roles = match spec.map(|s| s.access) {
        Some(Access::Admins) => "admin",
        _ => "admin, accountant",
    };
    let mut text = format!(
        "Idempotent operation `{}` (type: {kind}; roles: {roles}).",
        def.name()
    );
    if let Some(own) = own.filter(|d| !d.is_empty()) {
        text.push_str(&format!(" {own}"));
    }
    if let Some(s) = spec.filter(|s| !s.rules.is_empty()) {
        text.push_str("\n\nBusiness rules (422, checked in this order):");
        for (code, meaning) in s.rules {
            text.push_str(&format!("\n- `{code}`: {meaning}"));
        }
    }
    text
}

/// The request body: optional where an empty body means `{}`.
fn request_body(def: &OperationDef, schema: S) -> RequestBody {
    let (description, required) = if def.accepts_empty_body() {
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
    let op = op
        .response("400", problem(400, "`idempotency_key_missing`, `idempotency_key_invalid`, or `malformed_json` (empty where not allowed, unparsable, invalid UTF-8, duplicate key).", &["idempotency_key_missing", "idempotency_key_invalid", "malformed_json"]))
        .response("401", unauthenticated("company"))
        .response("403", problem(403, if admins { "`forbidden`: only `admin` may call this operation." } else { "`forbidden`: `viewer` tokens are read-only." }, &["forbidden"]))
        .response("409", problem(409, "`idempotency_key_in_flight`: a request with this key is still executing; retry after `Retry-After` seconds or send `Prefer: wait=N`.", &["idempotency_key_in_flight"]))
        .response("413", problem(413, "`payload_too_large`: the body exceeds 1 MiB.", &["payload_too_large"]))
        .response("415", problem(415, "`unsupported_media_type`: send `Content-Type: application/json`.", &["unsupported_media_type"]))
        .response("422", problem(422, &desc_422, &codes_422));
    with_server_errors(op)
}
