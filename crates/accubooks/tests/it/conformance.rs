//! The served OpenAPI document, checked against what the server really answers: for every
//! 2xx response the harness receives ([`crate::harness::TestApp::send`], which every
//! request helper goes through), the response body is validated against the response
//! schema of its operation in the document the same server serves at `/openapi.json`, and
//! the request body that was accepted against the operation's request-body schema (which
//! is derived from the input type the server's parser returns).
//!
//! Invariants:
//! - The document is fetched once per test server; the operation is found by method and
//!   route template (`/api/invoices/{id}`; a template with more literal segments wins).
//! - A 2xx answer to a route or with a status the document does not declare fails, and
//!   a declared `application/json` body must parse and validate (JSON Schema 2020-12,
//!   the dialect of OpenAPI 3.1, formats asserted).
//! - Validation of responses is strict where the document is lenient: an object may carry
//!   only the properties its schema declares (`unevaluatedProperties: false` is added to
//!   every object schema outside an `allOf`). The served document leaves response objects
//!   open so clients tolerate later additions; the tests close them so that a field the
//!   server writes but the document omits fails the test that received it.
//! - Request bodies are validated against the served schemas as they are (request bodies
//!   are closed objects already): a body the server accepted must be one the document
//!   admits, and [`Spec::request_errors`] tells whether the document refuses a body.
//!   An empty body is admitted where the document makes the body optional.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::{Draft, Validator};
use serde_json::{json, Map, Value};

/// What a validator checks: the body of a response with a status, or the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Body {
    Response(u16),
    Request,
}

/// The served document and the validators compiled from it so far.
pub struct Spec {
    doc: Value,
    /// `components`, closed as described in the module doc (for responses).
    closed: Value,
    validators: Mutex<HashMap<(String, String, Body), Arc<Validator>>>,
}

/// One operation of the document, as the response's request resolved to it.
struct Operation<'a> {
    method: String,
    route: &'a str,
    op: &'a Value,
}

impl Operation<'_> {
    fn name(&self) -> String {
        let id = self.op["operationId"]
            .as_str()
            .unwrap_or("(no operationId)");
        format!("{id} ({} {})", self.method.to_ascii_uppercase(), self.route)
    }
}

impl Spec {
    /// Prepares the checks for the document `doc`.
    pub fn new(doc: Value) -> Spec {
        let mut closed = doc["components"].clone();
        close(&mut closed, false);
        Spec {
            doc,
            closed,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Checks one response: `Err` says which operation, where in the body and what the
    /// schema requires. Non-2xx responses are not checked (problem documents are covered
    /// by their own tests).
    pub fn check(&self, method: &str, path: &str, status: u16, body: &[u8]) -> Result<(), String> {
        if !(200..300).contains(&status) {
            return Ok(());
        }
        let op = self.operation(method, path).ok_or_else(|| {
            format!(
                "{method} {path} answered {status} but the served document has no such operation"
            )
        })?;
        let response = &op.op["responses"][status.to_string()];
        if !response.is_object() {
            return Err(format!(
                "{}: status {status} is not a documented response",
                op.name()
            ));
        }
        let Some(schema) = response["content"]["application/json"].get("schema") else {
            return Ok(());
        };
        let instance: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "{}: the {status} body is not the JSON the document declares: {e}",
                op.name()
            )
        })?;
        let errors = self
            .validator(&op, Body::Response(status), schema)?
            .errors(&instance);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: the {status} body does not match the served schema:\n  {}\nbody: {instance}",
                op.name(),
                errors.join("\n  ")
            ))
        }
    }

    /// Checks the body of a request the server answered with a 2xx: `Err` says which
    /// operation, where in the body and what the request-body schema requires.
    pub fn check_request(&self, method: &str, path: &str, body: &[u8]) -> Result<(), String> {
        let op = self.operation(method, path).ok_or_else(|| {
            format!("{method} {path} was accepted but the served document has no such operation")
        })?;
        let Some(declared) = op.op.get("requestBody") else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{}: a body was accepted but the document declares none",
                    op.name()
                ))
            };
        };
        if body.is_empty() && declared["required"] != true {
            return Ok(());
        }
        let instance: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{}: the accepted request body is not JSON: {e}", op.name()))?;
        let errors = self.request_errors(method, path, &instance)?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: the server accepted a request body its served schema refuses:\n  {}\nbody: {instance}",
                op.name(),
                errors.join("\n  ")
            ))
        }
    }

    /// What the request-body schema of the operation serving `method path` finds wrong
    /// with `body` (empty when it admits it).
    pub fn request_errors(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<Vec<String>, String> {
        let op = self
            .operation(method, path)
            .ok_or_else(|| format!("{method} {path}: no such operation"))?;
        let schema = op.op["requestBody"]["content"]["application/json"]
            .get("schema")
            .ok_or_else(|| format!("{}: no JSON request body", op.name()))?;
        Ok(self.validator(&op, Body::Request, schema)?.errors(body))
    }

    /// The operation serving `method path`.
    fn operation(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        let method = method.to_ascii_lowercase();
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .iter()
            .filter_map(|(route, item)| {
                let literal = matches(route, &segments)?;
                let op = item.get(method.as_str())?;
                Some((literal, route, op))
            })
            .max_by_key(|(literal, _, _)| *literal)
            .map(|(_, route, op)| Operation {
                method: method.clone(),
                route,
                op,
            })
    }

    fn validator(
        &self,
        op: &Operation<'_>,
        body: Body,
        schema: &Value,
    ) -> Result<Arc<Validator>, String> {
        let key = (op.method.clone(), op.route.to_owned(), body);
        let mut cache = self.validators.lock().map_err(|e| e.to_string())?;
        if let Some(v) = cache.get(&key) {
            return Ok(v.clone());
        }
        let mut schema = schema.clone();
        let components = match body {
            Body::Response(_) => {
                close(&mut schema, false);
                &self.closed
            }
            Body::Request => &self.doc["components"],
        };
        let root = json!({"allOf": [schema], "components": components});
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("{}: the {body:?} schema does not compile: {e}", op.name()))?;
        let validator = Arc::new(validator);
        cache.insert(key, validator.clone());
        Ok(validator)
    }
}

trait Errors {
    fn errors(&self, instance: &Value) -> Vec<String>;
}

impl Errors for Validator {
    /// Every violation, with where in `instance` it is.
    fn errors(&self, instance: &Value) -> Vec<String> {
        self.iter_errors(instance)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect()
    }
}

/// The number of literal segments when `route` matches the path `segments`.
fn matches(route: &str, segments: &[&str]) -> Option<usize> {
    let parts: Vec<&str> = route.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut literal = 0;
    for (part, segment) in parts.iter().zip(segments) {
        if part.starts_with('{') && part.ends_with('}') {
            if segment.is_empty() {
                return None;
            }
        } else if part == segment {
            literal += 1;
        } else {
            return None;
        }
    }
    Some(literal)
}

/// Adds `unevaluatedProperties: false` to every object schema that declares
/// `properties` and says nothing about others, except directly inside an `allOf`
/// (where it would refuse the properties of the sibling schemas).
fn close(v: &mut Value, in_all_of: bool) {
    match v {
        Value::Object(m) => {
            if !in_all_of
                && m.contains_key("properties")
                && !m.contains_key("additionalProperties")
                && !m.contains_key("unevaluatedProperties")
            {
                m.insert("unevaluatedProperties".to_owned(), Value::Bool(false));
            }
            close_children(m);
        }
        Value::Array(items) => items.iter_mut().for_each(|i| close(i, in_all_of)),
        _ => {}
    }
}

fn close_children(m: &mut Map<String, Value>) {
    for (key, child) in m.iter_mut() {
        match key.as_str() {
            // Examples and enumerations are data, not schemas.
            "examples" | "example" | "enum" | "const" | "default" => {}
            "allOf" => close(child, true),
            _ => close(child, false),
        }
    }
}
