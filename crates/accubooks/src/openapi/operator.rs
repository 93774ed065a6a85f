//! The paths outside the idempotency gate: reads and lists, the operator endpoints under
//! `/admin/`, and the unauthenticated health, metrics and document routes.
//!
//! Invariant: a collection's reads are documented only when the operation that creates
//! its entities is registered, so the document never lists routes the server lacks.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, Parameter};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ComponentsBuilder, Content, ObjectBuilder, PathItem, PathsBuilder, Response, ResponseBuilder,
    Type,
};

use super::responses::{
    bad_query, json, not_found, path_id, problem, query, request_id_param, server_errors,
    unauthenticated,
};
use super::schemas::{email, enumeration, id, int, or_null, r, string, text, Obj, NAME, ROLES};

/// A collection and its reads.
struct Collection {
    /// The operation whose registration makes these reads exist.
    owner: &'static str,
    path: &'static str,
    param: &'static str,
    entity: &'static str,
    noun: &'static str,
    tag: &'static str,
    filters: &'static [(&'static str, &'static str)],
}

const COLLECTIONS: &[Collection] = &[
    Collection {
        owner: "createCustomer",
        path: "/api/customers",
        param: "id",
        entity: "Customer",
        noun: "customer",
        tag: "Customers",
        filters: &[],
    },
    Collection {
        owner: "createEmployee",
        path: "/api/employees",
        param: "id",
        entity: "Employee",
        noun: "employee",
        tag: "Employees",
        filters: &[],
    },
    Collection {
        owner: "createInvoice",
        path: "/api/invoices",
        param: "id",
        entity: "Invoice",
        noun: "invoice",
        tag: "Invoices",
        filters: &[("status", "draft|open|paid")],
    },
    Collection {
        owner: "createPayment",
        path: "/api/payments",
        param: "id",
        entity: "Payment",
        noun: "payment",
        tag: "Payments",
        filters: &[("invoice_id", "id")],
    },
    Collection {
        owner: "createRefund",
        path: "/api/refunds",
        param: "id",
        entity: "Refund",
        noun: "refund",
        tag: "Payments",
        filters: &[("payment_id", "id")],
    },
    Collection {
        owner: "executePayroll",
        path: "/api/payroll-runs",
        param: "id",
        entity: "PayrollRun",
        noun: "payroll run",
        tag: "Payroll",
        filters: &[],
    },
    Collection {
        owner: "createBankTransaction",
        path: "/api/bank-transactions",
        param: "id",
        entity: "BankTransaction",
        noun: "bank transaction",
        tag: "Banking",
        filters: &[("reconciled", "bool")],
    },
    Collection {
        owner: "createInventoryItem",
        path: "/api/inventory-items",
        param: "id",
        entity: "InventoryItem",
        noun: "inventory item",
        tag: "Inventory",
        filters: &[],
    },
    Collection {
        owner: "createWorkflow",
        path: "/api/workflows",
        param: "id",
        entity: "Workflow",
        noun: "workflow",
        tag: "Workflows",
        filters: &[],
    },
    Collection {
        owner: "createWorkflow",
        path: "/api/workflow-instances",
        param: "id",
        entity: "WorkflowInstance",
        noun: "workflow instance",
        tag: "Workflows",
        filters: &[("trigger_entity_id", "id")],
    },
    Collection {
        owner: "grantUserAccess",
        path: "/api/company/members",
        param: "user_id",
        entity: "Member",
        noun: "member",
        tag: "Company",
        filters: &[],
    },
];

fn operator() -> SecurityRequirement {
    SecurityRequirement::new("operator", Vec::<String>::new())
}

fn read(tag: &str, id: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(id))
        .summary(Some(summary))
        .parameter(request_id_param())
}

fn with(
    op: OperationBuilder,
    responses: impl IntoIterator<Item = (String, Response)>,
) -> OperationBuilder {
    responses
        .into_iter()
        .fold(op, |op, (status, res)| op.response(status, res))
}

fn company_errors() -> Vec<(String, Response)> {
    let mut v = vec![("401".to_owned(), unauthenticated("company"))];
    v.extend(server_errors().map(|(s, r)| (s.to_owned(), r)));
    v
}

fn list_params(c: &Collection) -> Vec<Parameter> {
    let mut params = vec![
        query(
            "limit",
            "page size, 1..500 (default 50)",
            int(Some(1), Some(500)),
        ),
        query(
            "cursor",
            "the `next_cursor` of the previous page",
            string("opaque cursor"),
        ),
    ];
    for (name, kind) in c.filters {
        let schema = match *kind {
            "id" => id(),
            "bool" => enumeration(&["true", "false"]),
            _ => enumeration(&["draft", "open", "paid"]),
        };
        params.push(query(
            name,
            "filter; a value matching nothing gives an empty page",
            schema,
        ));
    }
    params
}

fn collection_paths(paths: PathsBuilder, c: &Collection) -> PathsBuilder {
    let plural = format!("{}s", c.noun);
    let list = read(
        c.tag,
        &format!("list{}s", c.entity),
        &format!("List {plural}"),
    )
    .parameters(Some(list_params(c)));
    let list = with(
        list,
        [
            (
                "200".to_owned(),
                json(
                    &format!("A page of {plural}."),
                    r(&format!("{}List", c.entity)),
                )
                .build(),
            ),
            ("422".to_owned(), bad_query()),
        ],
    );
    let list = with(list, company_errors());
    let get = read(
        c.tag,
        &format!("get{}", c.entity),
        &format!("Get a {}", c.noun),
    )
    .parameter(path_id(c.param));
    let get = with(
        get,
        [
            (
                "200".to_owned(),
                json(
                    &format!("The {}, in the shape its create returned.", c.noun),
                    r(c.entity),
                )
                .build(),
            ),
            ("404".to_owned(), not_found(c.noun)),
        ],
    );
    let get = with(get, company_errors());
    paths
        .path(c.path, PathItem::new(HttpMethod::Get, list))
        .path(
            format!("{}/{{{}}}", c.path, c.param),
            PathItem::new(HttpMethod::Get, get),
        )
}

/// Reads of the collections whose creating operation is registered, and the settings.
pub(super) fn reads(mut paths: PathsBuilder, registered: &[&str]) -> PathsBuilder {
    for c in COLLECTIONS.iter().filter(|c| registered.contains(&c.owner)) {
        paths = collection_paths(paths, c);
    }
    if registered.contains(&"updateCompanySettings") {
        let get = read("Company", "getCompanySettings", "Get the company settings");
        let get = with(
            get,
            [(
                "200".to_owned(),
                json("The current settings and version.", r("SettingsVersion")).build(),
            )],
        );
        paths = paths.path(
            "/api/company/settings",
            PathItem::new(HttpMethod::Get, with(get, company_errors())),
        );
    }
    paths
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
        .description("Prometheus text exposition (idempotent_writes_total, idempotency_keys_total, pool, HTTP and audit-queue series…).")
        .content("application/openmetrics-text", Content::new(Some(string("metrics"))))
        .build();
    let document = ResponseBuilder::new()
        .description("This document.")
        .content("application/json", Content::new(Some(ObjectBuilder::new())))
        .build();
    let readyz = public(
        "readyz",
        "The database is reachable",
        json("Ready.", status()).build(),
    )
    .response(
        "503",
        json("The database is unreachable.", status()).build(),
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
    let idem_stats = Obj::new("Idempotency store statistics (null when unavailable).")
        .req("status", enumeration(&["ok", "degraded", "error"]))
        .req("total_keys", or_null(int(Some(0), None), Type::Integer))
        .req(
            "expired_pending",
            or_null(int(Some(0), None), Type::Integer),
        )
        .req(
            "pending_requests",
            or_null(int(Some(0), None), Type::Integer),
        )
        .req(
            "oldest_pending_age_minutes",
            or_null(ObjectBuilder::new(), Type::Number),
        )
        .req(
            "oldest_expired_age_hours",
            or_null(ObjectBuilder::new(), Type::Number),
        )
        .build();
    let component = |d: &str| {
        Obj::new(d)
            .req("status", enumeration(&["ok", "degraded", "error"]))
            .build()
    };
    c.schema(
        "CompanyIn",
        Obj::new("Body of `POST /admin/companies`.")
            .req("name", text(NAME))
            .opt("email", or_null(email(), Type::String))
            .closed()
            .build(),
    )
    .schema(
        "CompanyCreated",
        Obj::new("A new company with its first admin and token.")
            .req("company_id", id())
            .req("user_id", id())
            .req("email", email())
            .req("role", enumeration(&["admin"]))
            .req("api_token", string("bearer token for `/api/`; shown once"))
            .build(),
    )
    .schema(
        "TokenIn",
        Obj::new("Body of `POST /admin/companies/{company_id}/tokens`.")
            .req("email", email())
            .closed()
            .build(),
    )
    .schema(
        "TokenIssued",
        Obj::new("A new company token.")
            .req("api_token", string("bearer token for `/api/`; shown once"))
            .req("user_id", id())
            .req("role", enumeration(ROLES))
            .build(),
    )
    .schema(
        "Status",
        Obj::new("Liveness or readiness.")
            .req("status", enumeration(&["ok", "error"]))
            .build(),
    )
    .schema(
        "SystemHealth",
        Obj::new("Overall status is the worst of the components.")
            .req("status", enumeration(&["ok", "degraded", "error"]))
            .req(
                "components",
                Obj::new("Per component.")
                    .req("database", component("Reachability, latency and pool."))
                    .req("idempotency", idem_stats)
                    .req(
                        "prune_job",
                        component("The scheduled prune of expired records."),
                    )
                    .req(
                        "audit_log",
                        component("The audit queue (`degraded` once rows were dropped)."),
                    )
                    .build(),
            )
            .build(),
    )
}
