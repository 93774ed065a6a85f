//! Workflows and the outbox on both backends: instances written in the write's
//! transaction (exactly one per matching active workflow of the company, none on
//! replay), the worker's deliveries, SSRF rules, bad input, and the seeds' accuracy
//! query.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::{Company, TestApp};

mod delivery;
mod nodes;
mod outbox;
pub mod receiver;

/// Creates a workflow and returns its id.
pub async fn workflow(
    app: &TestApp,
    co: &Company,
    key: &str,
    trigger: &str,
    action: Value,
    active: bool,
) -> String {
    let r = app
        .post(
            "/api/workflows",
            &co.token,
            key,
            &json!({"name": key, "trigger": trigger, "action": action, "active": active}),
        )
        .await;
    assert_eq!(r.status, 201, "workflow: {:?}", r.json());
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Triggers a workflow manually and returns the instance id.
pub async fn trigger(app: &TestApp, co: &Company, workflow: &str, key: &str) -> String {
    let r = app
        .post(
            &format!("/api/workflows/{workflow}/trigger"),
            &co.token,
            key,
            &json!({"input": {"n": key}}),
        )
        .await;
    assert_eq!(r.status, 201, "trigger: {:?}", r.json());
    r.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// Polls an instance until its status is terminal (`delivered` or `failed`).
pub async fn settled(app: &TestApp, co: &Company, instance: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let v = app
            .get(&format!("/api/workflow-instances/{instance}"), &co.token)
            .await
            .json();
        if matches!(v["status"].as_str(), Some("delivered" | "failed")) {
            return v;
        }
        assert!(
            started.elapsed() < within,
            "instance {instance} did not settle: {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The company's current signing secret.
pub async fn secret(app: &TestApp, co: &Company) -> String {
    let r = app.get("/api/company/webhook-secret", &co.token).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["secret"].as_str().unwrap_or_default().to_owned()
}

/// Checks `t=…,v1=…` against `body`, computed independently of the server's code.
pub fn signature_is_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let Ok(expected) = hex::decode(v1) else {
        return false;
    };
    mac.verify_slice(&expected).is_ok()
}

/// The value of the series `name{…}` of `/metrics` whose labels include `labels`
/// (0 when absent).
pub async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = String::from_utf8_lossy(&app.get("/metrics", "").await.body).into_owned();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
