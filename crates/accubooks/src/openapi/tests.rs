//! Unit tests of the document: the table covers the contract and the registry, and
//! every reference resolves.

use serde_json::Value;

use super::*;
use crate::ops;

fn doc() -> Value {
    let json = document(&ops::registry()).to_json().unwrap_or_default();
    serde_json::from_str(&json).unwrap_or(Value::Null)
}

#[test]
fn every_registered_operation_has_a_spec_that_agrees_with_the_registry() {
    for def in ops::registry().operations() {
        let spec = specs::find(def.name);
        assert!(
            spec.is_some(),
            "{} has no entry in openapi::specs::SPECS",
            def.name
        );
        let spec = spec.unwrap_or(&specs::SPECS[0]);
        assert!(
            spec.agrees_with(def),
            "{}: the entry's method, route or empty-body rule differ from the registry",
            def.name
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
fn request_schemas_of_every_spec_exist_even_before_registration() {
    let doc = doc();
    for s in specs::SPECS {
        for name in [s.request, s.response] {
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{}: {name}",
                s.name
            );
        }
    }
}

#[test]
fn once_all_seventeen_are_registered_each_is_documented_with_its_rules() {
    let registry = specs::SPECS.iter().fold(Registry::new(), |reg, s| {
        let def: &'static OperationDef = Box::leak(Box::new(OperationDef {
            name: s.name,
            kind: OperationType::Financial,
            method: http::Method::from_bytes(s.method.as_bytes()).unwrap_or(http::Method::POST),
            route: s.route,
            tables: &[],
            ttl: None,
            empty_body_is_empty_object: s.empty_body,
        }));
        reg.operation(def)
    });
    let doc: Value = serde_json::from_str(&document(&registry).to_json().unwrap_or_default())
        .unwrap_or(Value::Null);
    for s in specs::SPECS {
        let op = &doc["paths"][s.route][s.method.to_ascii_lowercase().as_str()];
        assert_eq!(op["operationId"], s.name);
        let unprocessable = op["responses"]["422"].to_string();
        for (code, _) in s.rules {
            assert!(unprocessable.contains(code), "{}: {code}", s.name);
        }
        let location = &op["responses"]["201"]["headers"]["Location"];
        assert_eq!(
            location.is_object(),
            s.location.is_some(),
            "{}: Location",
            s.name
        );
        assert_eq!(
            op["responses"]["404"].is_object(),
            s.not_found.is_some(),
            "{}: 404",
            s.name
        );
        let body_required = op["requestBody"]["required"] == true;
        assert_eq!(body_required, !s.empty_body, "{}: body required", s.name);
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
fn an_unregistered_operation_has_no_path() {
    let doc = doc();
    let registered: Vec<&str> = ops::registry()
        .operations()
        .iter()
        .map(|d| d.name)
        .collect();
    for s in specs::SPECS
        .iter()
        .filter(|s| !registered.contains(&s.name))
    {
        let m = s.method.to_ascii_lowercase();
        assert!(
            doc["paths"][s.route][m.as_str()].is_null(),
            "{} is documented but not registered",
            s.name
        );
    }
}

#[test]
fn a_registered_operation_without_an_entry_is_still_listed_with_the_generic_contract() {
    static NEW: OperationDef = OperationDef {
        name: "createThing",
        kind: OperationType::HighRisk,
        method: http::Method::POST,
        route: "/api/things/{id}/do",
        tables: &[],
        ttl: None,
        empty_body_is_empty_object: false,
    };
    let json = document(&Registry::new().operation(&NEW))
        .to_json()
        .unwrap_or_default();
    let doc: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
    let op = &doc["paths"]["/api/things/{id}/do"]["post"];
    assert_eq!(op["operationId"], "createThing");
    assert_eq!(op["tags"][0], "Undocumented");
    assert_eq!(op["parameters"][0]["name"], "id");
    assert!(op["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    assert!(op["responses"]["409"].is_object());
}
