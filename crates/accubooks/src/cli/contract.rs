//! `accubooks contract verify`: the registry, the OpenAPI document and docs/CONTRACT.md
//! name the same operations with the same type, method and route. `accubooks contract
//! openapi` prints the document the server serves.
//!
//! The router is checked against the registry at every start (`MutationRouter::finish`
//! refuses to build a router that differs), so this command covers the two descriptions
//! meant for people and clients.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use super::output::{fail, Report};

/// One operation as a description states it: (name, type, method, route).
type Entry = (String, String, String, String);

/// Runs the check against the CONTRACT.md at `doc`.
pub fn verify(doc: &Path, json: bool) -> ExitCode {
    let text = match std::fs::read_to_string(doc) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", doc.display())),
    };
    let registry = crate::ops::registry();
    let registered: BTreeSet<Entry> = registry
        .operations()
        .iter()
        .map(|d| {
            (
                d.name().to_owned(),
                d.kind_label().to_owned(),
                d.method().as_str().to_owned(),
                d.route().to_owned(),
            )
        })
        .collect();
    let openapi = match crate::app::document(registry.clone())
        .and_then(|doc| Ok(serde_json::from_slice::<Value>(doc.bytes())?))
    {
        Ok(v) => v,
        Err(e) => return fail(format!("{e:#}")),
    };
    let mut r = Report::new(
        "Contract: registry, OpenAPI document and CONTRACT.md",
        &["operation", "where", "problem"],
    );
    for (name, _, method, route) in &registered {
        if let Some(problem) = openapi_problem(&openapi, name, method, route) {
            r.finding(vec![json!(name), json!("openapi.json"), json!(problem)]);
        }
    }
    let documented = contract_table(&text);
    let missing = registered
        .difference(&documented)
        .map(|e| (e, "registered", "listed"));
    let extra = documented
        .difference(&registered)
        .map(|e| (e, "listed", "registered"));
    for (e, is, not) in missing.chain(extra) {
        r.finding(vec![
            json!(e.0),
            json!("CONTRACT.md"),
            json!(format!(
                "{is} as `{} | {} | {}` but not {not} so",
                e.1, e.2, e.3
            )),
        ]);
    }
    if r.findings() == 0 {
        r.row(vec![
            json!(format!("{} operations", registered.len())),
            json!("all"),
            json!("agree"),
        ]);
    }
    let summary =
        json!({"operations": registered.len(), "findings": r.findings(), "rows": r.rows_json()});
    r.with_json(summary).print(json)
}

/// Prints the OpenAPI document of the registry the server mounts, byte for byte as
/// `GET /openapi.json` serves it.
pub fn print_openapi() -> ExitCode {
    match crate::app::document(crate::ops::registry()) {
        Ok(doc) => {
            println!("{}", String::from_utf8_lossy(doc.bytes()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{e:#}")),
    }
}

fn openapi_problem(doc: &Value, name: &str, method: &str, route: &str) -> Option<String> {
    let op = &doc["paths"][route][method.to_ascii_lowercase()];
    if op.is_null() {
        return Some(format!("no {method} {route}"));
    }
    if op["operationId"] != json!(name) {
        return Some(format!("operationId is {}", op["operationId"]));
    }
    if op["responses"]["201"]["content"]["application/json"]["schema"].is_null() {
        return Some("its 201 response has no body schema".to_owned());
    }
    let has_key = op["parameters"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["name"] == json!("Idempotency-Key") && p["required"] == json!(true))
    });
    (!has_key).then(|| "no required Idempotency-Key header".to_owned())
}

/// The rows of CONTRACT.md's operations table: `| name | type | METHOD | route |`, the
/// route in backticks.
fn contract_table(text: &str) -> BTreeSet<Entry> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            match cells.as_slice() {
                [name, kind, method, route]
                    if matches!(*kind, "financial" | "high-risk") && route.starts_with('/') =>
                {
                    Some((
                        (*name).to_owned(),
                        (*kind).to_owned(),
                        (*method).to_owned(),
                        (*route).to_owned(),
                    ))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_table_is_read_with_backticked_routes() {
        let t = contract_table(
            "| operation | type | method | route |\n|---|---|---|---|\n\
             | `createPayment` | financial | POST | `/api/payments` |\nprose | not | a | row\n",
        );
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            vec![(
                "createPayment".to_owned(),
                "financial".to_owned(),
                "POST".to_owned(),
                "/api/payments".to_owned()
            )]
        );
    }
}
