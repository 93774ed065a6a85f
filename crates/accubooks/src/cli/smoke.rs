//! `accubooks smoke`: the post-deploy check of a running server. Every operation once
//! and its retry (201, then 200 with the same bytes), `/readyz`, the operator health page,
//! `/metrics` with the write counters, and `/openapi.json` listing every operation.
//! Each failed check is a finding (exit 1).

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{operator_token, Api};
use super::load::{prepare, request};
use super::output::{fail, Report};
use super::tenants::ServerArgs;

/// Runs the smoke test.
pub async fn run(server: &ServerArgs, as_json: bool) -> ExitCode {
    let operator = match operator_token() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let api = match Api::new(&server.url, 4) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let registry = crate::ops::registry();
    let plan: Vec<(&'static str, usize)> = registry
        .operations()
        .iter()
        .map(|d| (d.name(), 0))
        .collect();
    let tenants = match prepare(&api, &operator, &plan, 1).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let tenant = &tenants[0];
    let mut r = Report::new(
        format!("Smoke test of {}", server.url),
        &["check", "result"],
    );
    let run = uuid::Uuid::now_v7().simple().to_string();
    for (i, def) in registry.operations().iter().enumerate() {
        let op = def.name();
        let Some((path, body)) = request(op, tenant, i, 0) else {
            check(&mut r, op, Err("the smoke test cannot send it".to_owned()));
            continue;
        };
        let key = format!("smoke-{run}-{op}");
        let mut answers = Vec::new();
        for _ in 0..2 {
            let a = api
                .send(
                    def.method().clone(),
                    &path,
                    &tenant.token,
                    Some(&key),
                    Some(&body),
                )
                .await;
            answers.push(a);
        }
        let verdict = match (&answers[0], &answers[1]) {
            (Ok(first), Ok(retry)) if first.status == 201 && retry.status == 200 => {
                if first.body == retry.body {
                    Ok("201, then 200 with the same bytes".to_owned())
                } else {
                    Err("the retry's body differs".to_owned())
                }
            }
            (Ok(first), Ok(retry)) => Err(format!(
                "{} then {} ({})",
                first.status,
                retry.status,
                first.json()["detail"].as_str().unwrap_or("")
            )),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        check(&mut r, op, verdict);
    }
    let get = |path: &'static str, token: Option<&str>| {
        let (api, token) = (api.clone(), token.unwrap_or("").to_owned());
        async move { api.send(Method::GET, path, &token, None, None).await }
    };
    let ready = get("/readyz", None).await;
    check(
        &mut r,
        "readyz",
        status_is(&ready, 200).map(|()| "ready".to_owned()),
    );
    let health = get("/admin/system/health", Some(&operator)).await;
    let health_status = health
        .as_ref()
        .map(|a| a.json()["status"].as_str().unwrap_or("?").to_owned());
    check(
        &mut r,
        "system health",
        match health_status {
            Ok(s) if s == "ok" || s == "degraded" => Ok(s),
            Ok(s) => Err(s),
            Err(e) => Err(e.clone()),
        },
    );
    let metrics = get("/metrics", None).await;
    check(
        &mut r,
        "metrics",
        match metrics {
            Ok(a) if String::from_utf8_lossy(&a.body).contains("idempotent_writes_total") => {
                Ok("idempotent_writes_total exported".to_owned())
            }
            Ok(a) => Err(format!("{}: no idempotent_writes_total", a.status)),
            Err(e) => Err(e),
        },
    );
    let doc = get("/openapi.json", None).await;
    let names: Vec<&str> = registry.operations().iter().map(|d| d.name()).collect();
    check(
        &mut r,
        "openapi.json",
        openapi_lists_every_operation(doc, &names),
    );
    let rows = r.rows_json();
    let findings = r.findings();
    r.with_json(json!({"findings": findings, "checks": rows}))
        .print(as_json)
}

fn status_is(a: &Result<super::client::Answer, String>, want: u16) -> Result<(), String> {
    match a {
        Ok(a) if a.status == want => Ok(()),
        Ok(a) => Err(format!("answered {}", a.status)),
        Err(e) => Err(e.clone()),
    }
}

fn openapi_lists_every_operation(
    doc: Result<super::client::Answer, String>,
    operations: &[&str],
) -> Result<String, String> {
    let doc: Value = doc?.json();
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .map(|paths| {
            paths
                .values()
                .filter_map(Value::as_object)
                .flat_map(|item| item.values())
                .filter_map(|op| op["operationId"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = operations
        .iter()
        .copied()
        .filter(|op| !ids.contains(op))
        .collect();
    if missing.is_empty() {
        Ok(format!(
            "OpenAPI {} with every operation",
            doc["openapi"].as_str().unwrap_or("?")
        ))
    } else {
        Err(format!("missing {}", missing.join(", ")))
    }
}

fn check(r: &mut Report, what: &str, verdict: Result<String, String>) {
    match verdict {
        Ok(ok) => r.row(vec![json!(what), json!(format!("ok: {ok}"))]),
        Err(e) => r.finding(vec![json!(what), json!(format!("FAILED: {e}"))]),
    }
}
