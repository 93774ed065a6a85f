//! Unit tests of the document: built from the routes, it covers the registry, every
//! reference resolves, and a handler documented elsewhere than it is registered is
//! refused.

use idem::{OperationDef, Registry};
use serde_json::Value;
use utoipa_axum::routes;

use super::*;
use crate::domain::{admin, customers};
use crate::ops;
use crate::state::AppState;

fn doc() -> Value {
    crate::app::document(ops::registry())
        .ok()
        .and_then(|d| serde_json::from_slice(d.bytes()).ok())
        .unwrap_or(Value::Null)
}

#[test]
fn every_registered_operation_has_a_spec() {
    for def in ops::registry().operations() {
        assert!(
            specs::find(def.name()).is_some(),
            "{} has no entry in openapi::specs::SPECS",
            def.name()
        );
    }
}

#[test]
fn the_table_covers_the_seventeen_operations() {
    let names = [
        "createCustomer",
        "createEmployee",
        "createInvoice",
        "finalizeInvoice",
        "createPayment",
        "createRefund",
        "executePayroll",
        "createBankTransaction",
        "reconcileLedger",
        "createInventoryItem",
        "adjustInventory",
        "createWorkflow",
        "updateWorkflow",
        "triggerWorkflow",
        "rotateWebhookSecret",
        "updateCompanySettings",
        "grantUserAccess",
    ];
    assert_eq!(specs::SPECS.len(), names.len());
    for name in names {
        assert!(specs::find(name).is_some(), "{name} is missing");
    }
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(s)) = m.get("$ref") {
                out.push(s);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_to_a_component_schema() {
    let doc = doc();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
}

#[test]
fn every_operation_is_documented_at_its_registration_with_its_rules() {
    let doc = doc();
    for def in ops::registry().operations() {
        let spec = specs::find(def.name());
        let op = &doc["paths"][def.route()][def.method().as_str().to_ascii_lowercase()];
        assert_eq!(op["operationId"], def.name());
        let unprocessable = op["responses"]["422"].to_string();
        for (code, _) in spec.map(|s| s.rules).unwrap_or_default() {
            assert!(unprocessable.contains(code), "{}: {code}", def.name());
        }
        let location = &op["responses"]["201"]["headers"]["Location"];
        assert_eq!(
            location.is_object(),
            spec.and_then(|s| s.location).is_some(),
            "{}: Location",
            def.name()
        );
        let body_required = op["requestBody"]["required"] == true;
        assert_eq!(
            body_required,
            !def.accepts_empty_body(),
            "{}: body required",
            def.name()
        );
        assert!(
            op["responses"]["201"]["content"]["application/json"]["schema"].is_object(),
            "{}: 201 body",
            def.name()
        );
    }
    for read in [
        "/api/invoices/{id}",
        "/api/workflow-instances",
        "/api/payroll-runs",
    ] {
        assert!(doc["paths"][read]["get"].is_object(), "{read}");
    }
}

#[test]
fn a_handler_documented_elsewhere_than_its_registration_is_refused() {
    static MOVED: OperationDef = OperationDef::post("createCustomer", "/api/clients");
    let built = ApiRouter::<AppState>::new(Registry::new().operation(&MOVED))
        .operation(routes!(customers::create_customer))
        .finish();
    let errors = built.err().map(|e| e.0.join("\n")).unwrap_or_default();
    assert!(
        errors.contains(
            "createCustomer is documented at POST /api/customers but registered at POST /api/clients"
        ),
        "{errors}"
    );
}

#[test]
fn an_exempt_route_the_registry_does_not_declare_is_refused() {
    let built = ApiRouter::<AppState>::new(Registry::new())
        .exempt(routes!(admin::create_company))
        .finish();
    let errors = built.err().map(|e| e.0.join("\n")).unwrap_or_default();
    assert!(
        errors.contains("POST /admin/companies is mounted as exempt but not declared exempt"),
        "{errors}"
    );
}
