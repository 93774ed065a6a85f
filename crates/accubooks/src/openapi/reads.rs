//! Reads and lists of the collections, and the settings read.
//!
//! Invariant: a collection's reads are documented only when the operation that creates
//! its entities is registered, so the document never lists routes the server lacks.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, Parameter};
use utoipa::openapi::{PathItem, PathsBuilder, Response};

use super::responses::{
    bad_query, json, not_found, path_id, query, request_id_param, server_errors, unauthenticated,
};
use super::schemas::{enumeration, id, int, r, string};

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
    if registered.contains(&"rotateWebhookSecret") {
        let get = read(
            "Workflows",
            "getWebhookSecret",
            "Get the webhook signing secret (admins)",
        );
        let get = with(
            get,
            [(
                "200".to_owned(),
                json(
                    "The current secret (created on first use), with `Cache-Control: no-store`.",
                    r("WebhookSecret"),
                )
                .build(),
            )],
        );
        paths = paths.path(
            "/api/company/webhook-secret",
            PathItem::new(HttpMethod::Get, with(get, company_errors())),
        );
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
