//! Every SQL query of the seed documents 000, 002, 003 and 004, verbatim, run against a
//! PostgreSQL database after a scripted mix, with the figures each returns checked.
//!
//! The only changes to a query are its example literals ('comp-123', 'client-key-abc',
//! the payment's id, the compliance year …), replaced by the mix's own values before it
//! runs. Each query runs once as written (simple protocol, exactly the text) and once
//! wrapped as `select json_agg(…) from (<query>) t` to read its figures.
//!
//! Queries on `workflow_instances` run once that table exists (the workflows schema);
//! until then they are skipped with a notice. Seed text that cannot run on any
//! PostgreSQL as written is asserted to fail, with the reason (see `Expect::Fails`).

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{Backend, TestApp};

/// What a seed query is expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Runs; its rows are checked below.
    Runs,
    /// Needs `workflow_instances`: runs when the table exists, skipped otherwise.
    NeedsWorkflows,
    /// Cannot run as written; the SQLSTATE it fails with and why.
    Fails(&'static str, &'static str),
}

struct SeedQuery {
    seed: &'static str,
    name: &'static str,
    expect: Expect,
    sql: &'static str,
}

const QUERIES: &[SeedQuery] = &[
    // ---- Seed 000: observability guide ----
    SeedQuery {
        seed: "000",
        name: "trace: audit rows of a key",
        expect: Expect::Runs,
        sql: "SELECT *
FROM idempotent_write_audit_log
WHERE operation_name = 'createPayment'
  AND idempotency_key = 'idempotency-key-abc123'
  AND company_id = 'comp-123'
ORDER BY timestamp DESC;",
    },
    SeedQuery {
        seed: "000",
        name: "trace: the payment",
        expect: Expect::Runs,
        sql: "SELECT *
FROM payments
WHERE id = 'company:comp-123:op:createPayment:key:idempotency-key-abc123';",
    },
    SeedQuery {
        seed: "000",
        name: "trace: workflow triggers",
        expect: Expect::NeedsWorkflows,
        sql: "SELECT *
FROM workflow_instances
WHERE trigger_entity_type = 'payment'
  AND trigger_entity_id = 'company:comp-123:op:createPayment:key:idempotency-key-abc123';",
    },
    SeedQuery {
        seed: "000",
        name: "replays for a company",
        expect: Expect::Runs,
        sql: "SELECT 
  operation_name,
  COUNT(*) as replay_count,
  AVG(execution_duration_ms) as avg_duration_ms
FROM idempotent_write_audit_log
WHERE company_id = 'comp-123'
  AND status = 'replayed'
  AND timestamp >= NOW() - INTERVAL '7 days'
GROUP BY operation_name
ORDER BY replay_count DESC;",
    },
    SeedQuery {
        seed: "000",
        name: "high replay rate operations",
        expect: Expect::Runs,
        sql: "WITH stats AS (
  SELECT 
    operation_name,
    COUNT(*) FILTER (WHERE status = 'new') as new_count,
    COUNT(*) FILTER (WHERE status = 'replayed') as replay_count,
    COUNT(*) as total_count
  FROM idempotent_write_audit_log
  WHERE timestamp >= NOW() - INTERVAL '24 hours'
  GROUP BY operation_name
)
SELECT 
  operation_name,
  new_count,
  replay_count,
  total_count,
  ROUND(100.0 * replay_count / NULLIF(total_count, 0), 2) as replay_rate_pct
FROM stats
WHERE replay_count > 0
ORDER BY replay_rate_pct DESC;",
    },
    SeedQuery {
        seed: "000",
        name: "failed operations",
        expect: Expect::Runs,
        sql: "SELECT 
  operation_name,
  company_id,
  error_message,
  timestamp,
  idempotency_key
FROM idempotent_write_audit_log
WHERE status = 'failed'
  AND timestamp >= NOW() - INTERVAL '1 hour'
ORDER BY timestamp DESC;",
    },
    SeedQuery {
        seed: "000",
        name: "slow operations (5 s)",
        expect: Expect::Runs,
        sql: "SELECT 
  operation_name,
  operation_type,
  execution_duration_ms,
  company_id,
  timestamp
FROM idempotent_write_audit_log
WHERE execution_duration_ms > 5000  -- More than 5 seconds
  AND timestamp >= NOW() - INTERVAL '24 hours'
ORDER BY execution_duration_ms DESC
LIMIT 50;",
    },
    SeedQuery {
        seed: "000",
        name: "compliance report",
        expect: Expect::Runs,
        sql: "SELECT 
  operation_name,
  operation_type,
  status,
  timestamp,
  user_id,
  idempotency_key,
  workflows_triggered,
  side_effects_executed
FROM idempotent_write_audit_log
WHERE company_id = 'comp-123'
  AND timestamp BETWEEN '2026-01-01' AND '2026-12-31'
ORDER BY timestamp;",
    },
    SeedQuery {
        seed: "000",
        name: "exactly once (30 days)",
        expect: Expect::Runs,
        sql: "-- Should return 0 rows (no duplicates)
SELECT 
  deterministic_id,
  COUNT(*) as execution_count
FROM idempotent_write_audit_log
WHERE status = 'new'
  AND timestamp >= NOW() - INTERVAL '30 days'
GROUP BY deterministic_id
HAVING COUNT(*) > 1;",
    },
    // ---- Seed 002: rollout plan ----
    SeedQuery {
        seed: "002",
        name: "weekly replay rate by operation",
        expect: Expect::Runs,
        sql: "-- Weekly replay rate by operation
SELECT 
  operation_name,
  COUNT(*) FILTER (WHERE status = 'new') as new_count,
  COUNT(*) FILTER (WHERE status = 'replayed') as replay_count,
  ROUND(100.0 * COUNT(*) FILTER (WHERE status = 'replayed') / COUNT(*), 2) as replay_rate_pct
FROM idempotent_write_audit_log
WHERE timestamp >= NOW() - INTERVAL '7 days'
GROUP BY operation_name
ORDER BY replay_rate_pct DESC;",
    },
    SeedQuery {
        seed: "002",
        name: "weekly failure analysis",
        expect: Expect::Runs,
        sql: "-- Weekly failure analysis
SELECT 
  operation_name,
  error_message,
  COUNT(*) as failure_count
FROM idempotent_write_audit_log
WHERE status = 'failed'
  AND timestamp >= NOW() - INTERVAL '7 days'
GROUP BY operation_name, error_message
ORDER BY failure_count DESC;",
    },
    SeedQuery {
        seed: "002",
        name: "retention script: copy to the archive table",
        expect: Expect::Fails(
            "42P01",
            "there is no idempotent_write_audit_log_archive table: archiving detaches whole \
             monthly partitions instead (docs/OPERATIONS.md, audit log retention)",
        ),
        sql: "-- Archive old audit logs (run monthly)
INSERT INTO idempotent_write_audit_log_archive
SELECT * FROM idempotent_write_audit_log
WHERE timestamp < NOW() - INTERVAL '90 days';",
    },
    SeedQuery {
        seed: "002",
        name: "retention script: delete",
        expect: Expect::Runs,
        sql: "DELETE FROM idempotent_write_audit_log
WHERE timestamp < NOW() - INTERVAL '90 days';",
    },
    SeedQuery {
        seed: "002",
        name: "no duplicates (30 days)",
        expect: Expect::Runs,
        sql: "-- Should return 0 rows
SELECT 
  deterministic_id,
  COUNT(*) as execution_count
FROM idempotent_write_audit_log
WHERE status = 'new'
  AND timestamp >= NOW() - INTERVAL '30 days'
GROUP BY deterministic_id
HAVING COUNT(*) > 1;",
    },
    SeedQuery {
        seed: "002",
        name: "workflow accuracy (7 days)",
        expect: Expect::NeedsWorkflows,
        sql: "-- Compare audit log to workflow instances
SELECT 
  a.deterministic_id,
  a.workflows_triggered,
  COUNT(w.id) as actual_workflows
FROM idempotent_write_audit_log a
LEFT JOIN workflow_instances w ON w.trigger_entity_id = a.deterministic_id
WHERE a.status = 'new'
  AND a.timestamp >= NOW() - INTERVAL '7 days'
GROUP BY a.deterministic_id, a.workflows_triggered
HAVING a.workflows_triggered != COUNT(w.id);",
    },
    // ---- Seed 003: deployment plan ----
    SeedQuery {
        seed: "003",
        name: "staging replay rate analysis",
        expect: Expect::Runs,
        sql: "-- Replay rate analysis
SELECT operation_name,
  COUNT(*) FILTER (WHERE status = 'new') as new_count,
  COUNT(*) FILTER (WHERE status = 'replayed') as replay_count,
  ROUND(100.0 * COUNT(*) FILTER (WHERE status = 'replayed') / COUNT(*), 2) as replay_pct
FROM idempotent_write_audit_log
WHERE timestamp >= NOW() - INTERVAL '24 hours'
GROUP BY operation_name
ORDER BY replay_pct DESC;",
    },
    SeedQuery {
        seed: "003",
        name: "staging failure analysis",
        expect: Expect::Runs,
        sql: "-- Failure analysis
SELECT operation_name, error_message, COUNT(*) as failures
FROM idempotent_write_audit_log
WHERE status = 'failed' AND timestamp >= NOW() - INTERVAL '24 hours'
GROUP BY operation_name, error_message
ORDER BY failures DESC;",
    },
    SeedQuery {
        seed: "003",
        name: "operations for a company",
        expect: Expect::Runs,
        sql: "-- Find operations for a company
SELECT operation_name, status, timestamp, execution_duration_ms
FROM idempotent_write_audit_log
WHERE company_id = 'company-123' AND timestamp >= NOW() - INTERVAL '7 days'
ORDER BY timestamp DESC;",
    },
    SeedQuery {
        seed: "003",
        name: "trace by idempotency key",
        expect: Expect::Runs,
        sql: "-- Trace by idempotency key
SELECT * FROM idempotent_write_audit_log
WHERE idempotency_key = 'client-key-abc';",
    },
    SeedQuery {
        seed: "003",
        name: "slow operations (2 s, 24 h)",
        expect: Expect::Runs,
        sql: "-- Find slow operations
SELECT operation_name, deterministic_id, execution_duration_ms
FROM idempotent_write_audit_log
WHERE execution_duration_ms > 2000 AND timestamp >= NOW() - INTERVAL '24 hours'
ORDER BY execution_duration_ms DESC;",
    },
    SeedQuery {
        seed: "003",
        name: "high failure rate response",
        expect: Expect::Runs,
        sql: "SELECT operation_name, error_message, COUNT(*) 
   FROM idempotent_write_audit_log 
   WHERE status = 'failed' AND timestamp >= NOW() - INTERVAL '15 minutes'
   GROUP BY operation_name, error_message;",
    },
    SeedQuery {
        seed: "003",
        name: "key collision response",
        expect: Expect::Runs,
        sql: "SELECT * FROM idempotent_write_audit_log 
   WHERE error_message LIKE '%mismatch%' 
   ORDER BY timestamp DESC LIMIT 10;",
    },
    SeedQuery {
        seed: "003",
        name: "support: charged twice, audit rows",
        expect: Expect::Runs,
        sql: "SELECT * FROM idempotent_write_audit_log 
   WHERE idempotency_key = 'customer-key';",
    },
    SeedQuery {
        seed: "003",
        name: "support: charged twice, payments by key",
        expect: Expect::Fails(
            "42703",
            "payments carry no idempotency_key column: a payment's id is the deterministic \
             id of its key (the seeds' `WHERE id = 'company:…'` form, above)",
        ),
        sql: "SELECT * FROM payments WHERE idempotency_key = 'customer-key';",
    },
    SeedQuery {
        seed: "003",
        name: "support: no email notification",
        expect: Expect::Runs,
        sql: "SELECT workflows_triggered FROM idempotent_write_audit_log 
   WHERE deterministic_id = 'payment-id';",
    },
    SeedQuery {
        seed: "003",
        name: "no duplicates (48 hours)",
        expect: Expect::Runs,
        sql: "-- Verify no duplicates
SELECT deterministic_id, COUNT(*) as execution_count
FROM idempotent_write_audit_log
WHERE status = 'new' AND timestamp >= NOW() - INTERVAL '48 hours'
GROUP BY deterministic_id
HAVING COUNT(*) > 1;",
    },
    SeedQuery {
        seed: "003",
        name: "audit log growth",
        expect: Expect::Runs,
        sql: "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE timestamp >= NOW() - INTERVAL '24 hours';",
    },
    SeedQuery {
        seed: "003",
        name: "connection pool check",
        expect: Expect::Runs,
        sql: "SELECT count(*) FILTER (WHERE state = 'active') as active FROM pg_stat_activity WHERE datname = 'accubooks';",
    },
    SeedQuery {
        seed: "003",
        name: "weekly summary",
        expect: Expect::Runs,
        sql: "-- Weekly summary
SELECT 
  operation_type,
  COUNT(*) as total_ops,
  COUNT(*) FILTER (WHERE status = 'new') as new_ops,
  COUNT(*) FILTER (WHERE status = 'replayed') as replayed_ops,
  COUNT(*) FILTER (WHERE status = 'failed') as failed_ops,
  ROUND(AVG(execution_duration_ms), 2) as avg_duration,
  ROUND(PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY execution_duration_ms), 2) as p95_duration
FROM idempotent_write_audit_log
WHERE timestamp >= NOW() - INTERVAL '7 days'
GROUP BY operation_type;",
    },
    SeedQuery {
        seed: "003",
        name: "slow query analysis",
        expect: Expect::Runs,
        sql: "-- Slow query analysis
SELECT operation_name, deterministic_id, execution_duration_ms
FROM idempotent_write_audit_log
WHERE execution_duration_ms > 2000 AND timestamp >= NOW() - INTERVAL '7 days'
ORDER BY execution_duration_ms DESC LIMIT 20;",
    },
    SeedQuery {
        seed: "003",
        name: "key collision check",
        expect: Expect::Runs,
        sql: "-- Key collision check
SELECT idempotency_key, COUNT(DISTINCT deterministic_id) as unique_ops
FROM idempotent_write_audit_log
WHERE timestamp >= NOW() - INTERVAL '7 days'
GROUP BY idempotency_key
HAVING COUNT(DISTINCT deterministic_id) > 1;
-- Expected: 0 rows",
    },
    SeedQuery {
        seed: "003",
        name: "no duplicates (compliance)",
        expect: Expect::Runs,
        sql: "-- Verify no duplicates (CRITICAL)
SELECT deterministic_id, COUNT(*) as count
FROM idempotent_write_audit_log
WHERE status = 'new' AND timestamp >= NOW() - INTERVAL '30 days'
GROUP BY deterministic_id
HAVING COUNT(*) > 1;
-- Expected: 0 rows (compliance requirement)",
    },
    SeedQuery {
        seed: "003",
        name: "workflow accuracy (30 days)",
        expect: Expect::NeedsWorkflows,
        sql: "-- Workflow accuracy
SELECT a.operation_name,
  SUM(a.workflows_triggered) as total_workflows,
  COUNT(DISTINCT w.id) as actual_workflows
FROM idempotent_write_audit_log a
LEFT JOIN workflow_instances w ON w.trigger_entity_id = a.deterministic_id
WHERE a.status = 'new' AND a.timestamp >= NOW() - INTERVAL '30 days'
GROUP BY a.operation_name;
-- Verify: total_workflows = actual_workflows",
    },
    SeedQuery {
        seed: "003",
        name: "archive: delete from hot storage",
        expect: Expect::Runs,
        sql: "DELETE FROM idempotent_write_audit_log WHERE timestamp < NOW() - INTERVAL '90 days';",
    },
    SeedQuery {
        seed: "003",
        name: "weekly KPI report",
        expect: Expect::Runs,
        sql: "WITH weekly_stats AS (
  SELECT 
    COUNT(*) as total_ops,
    COUNT(*) FILTER (WHERE status = 'new') as new_ops,
    COUNT(*) FILTER (WHERE status = 'replayed') as replayed_ops,
    COUNT(*) FILTER (WHERE status = 'failed') as failed_ops,
    AVG(execution_duration_ms) as avg_duration,
    PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY execution_duration_ms) as p95,
    PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY execution_duration_ms) as p99
  FROM idempotent_write_audit_log
  WHERE timestamp >= NOW() - INTERVAL '7 days'
)
SELECT 
  total_ops,
  ROUND(100.0 * replayed_ops / total_ops, 2) as replay_rate_pct,
  ROUND(100.0 * failed_ops / total_ops, 2) as failure_rate_pct,
  ROUND(p95, 2) as p95_ms,
  ROUND(p99, 2) as p99_ms,
  CASE WHEN failed_ops::float / total_ops < 0.01 THEN 'âœ… PASS' ELSE 'âŒ FAIL' END as failure_status,
  CASE WHEN replayed_ops::float / total_ops < 0.20 THEN 'âœ… PASS' ELSE 'âš ï¸ WARNING' END as replay_status,
  CASE WHEN p95 < 500 THEN 'âœ… PASS' ELSE 'âŒ FAIL' END as latency_status
FROM weekly_stats;",
    },
    // ---- Seed 004: key hygiene ----
    SeedQuery {
        seed: "004",
        name: "key table health",
        expect: Expect::Fails(
            "42601",
            "FILTER may only follow an aggregate call, not an expression over one (a syntax \
             error on every PostgreSQL); idem::hygiene::stats computes the same figures",
        ),
        sql: "SELECT
    COUNT(*) as total_keys,
    COUNT(*) FILTER (WHERE expires_at < NOW()) as expired_pending,
    COUNT(*) FILTER (
        WHERE status = 'pending' AND expires_at >= NOW()
    ) as pending_requests,
    EXTRACT(EPOCH FROM (NOW() - MIN(created_at)))::FLOAT / 60.0
        FILTER (WHERE status = 'pending' AND expires_at >= NOW())
        as oldest_pending_age_minutes,
    EXTRACT(EPOCH FROM (NOW() - MIN(expires_at)))::FLOAT / 3600.0
        FILTER (WHERE expires_at < NOW())
        as oldest_expired_age_hours
FROM idempotency_keys",
    },
];

/// The mix: one company; customers, an invoice, its finalization and a payment, with
/// replays, a key reused with another body, a validation failure and a missing key.
struct Mix {
    company: String,
    payment_id: String,
}

async fn drive_mix(app: &TestApp) -> Mix {
    let co = app.create_company("Acme").await;
    let t = &co.token;
    let ada = json!({"name": "Ada"});
    let r = app.post("/api/customers", t, "client-key", &ada).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let customer = r.json()["id"].as_str().expect("customer id").to_owned();
    for _ in 0..2 {
        let r = app.post("/api/customers", t, "client-key", &ada).await;
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    let r = app
        .post("/api/customers", t, "client-key", &json!({"name": "Bob"}))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "idempotency_key_reused")
    );
    let r = app
        .post("/api/customers", t, "bad-customer", &json!({"name": "  "}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (422, "validation_failed"));
    let r = app
        .write(Method::POST, "/api/customers", t, None, &ada.to_string())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "idempotency_key_missing")
    );
    let lines = json!([{"description": "Consulting", "quantity": 1, "unit_price": "100.00"}]);
    let r = app
        .post(
            "/api/invoices",
            t,
            "invoice-1",
            &json!({"customer_id": customer, "line_items": lines}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let invoice = r.json()["id"].as_str().expect("invoice id").to_owned();
    let r = app
        .post(
            &format!("/api/invoices/{invoice}/finalize"),
            t,
            "finalize-1",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let pay = json!({"invoice_id": invoice, "amount": "40.00", "method": "cash"});
    let r = app.post("/api/payments", t, "pay-1", &pay).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let payment_id = r.json()["id"].as_str().expect("payment id").to_owned();
    let r = app.post("/api/payments", t, "pay-1", &pay).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    Mix {
        company: co.id,
        payment_id,
    }
}

/// The seed's example literals replaced by the mix's values.
fn bind(sql: &str, mix: &Mix) -> String {
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Duration::days(1);
    let to = today + chrono::Duration::days(1);
    sql.replace(
        "'company:comp-123:op:createPayment:key:idempotency-key-abc123'",
        &format!("'{}'", mix.payment_id),
    )
    .replace("'comp-123'", &format!("'{}'", mix.company))
    .replace("'company-123'", &format!("'{}'", mix.company))
    .replace("'idempotency-key-abc123'", "'pay-1'")
    .replace("'client-key-abc'", "'client-key'")
    .replace("'customer-key'", "'pay-1'")
    .replace("'payment-id'", &format!("'{}'", mix.payment_id))
    .replace(
        "BETWEEN '2026-01-01' AND '2026-12-31'",
        &format!("BETWEEN '{from}' AND '{to}'"),
    )
}

/// The rows of `sql` as JSON objects.
async fn rows(pool: &PgPool, sql: &str) -> Result<Vec<Value>, sqlx::Error> {
    // The statement without its trailing `-- Expected: …` lines and `;`.
    let mut lines: Vec<&str> = sql.trim().lines().collect();
    while lines
        .last()
        .is_some_and(|l| l.trim_start().starts_with("--"))
    {
        lines.pop();
    }
    let joined = lines.join("\n");
    let body = joined.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let wrapped = format!("select coalesce(json_agg(to_jsonb(t)), '[]'::json) from (\n{body}\n) t");
    let v: sqlx::types::Json<Value> = sqlx::query_scalar(&wrapped).fetch_one(pool).await?;
    Ok(v.0.as_array().cloned().unwrap_or_default())
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// `(column a, column b)` of every row, for compact comparisons.
fn pairs(rows: &[Value], a: &str, b: &str) -> Vec<(String, f64)> {
    rows.iter()
        .map(|r| (r[a].as_str().unwrap_or_default().to_owned(), num(&r[b])))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn every_seed_query_runs_on_postgresql_with_the_expected_figures() {
    if crate::harness::postgres_url().is_none() {
        eprintln!("skipped on PostgreSQL: DATABASE_URL_TEST is not set");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let mix = drive_mix(&app).await;
    // Stopping the server flushes the audit queue (replay and failure rows).
    let db = app.stop().await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    let workflows: bool =
        sqlx::query_scalar("select to_regclass('workflow_instances') is not null")
            .fetch_one(&pool)
            .await
            .expect("to_regclass");

    let mut results: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for q in QUERIES {
        let sql = bind(q.sql, &mix);
        let label = format!("seed {} {:?}", q.seed, q.name);
        if q.expect == Expect::NeedsWorkflows && !workflows {
            eprintln!("{label}: skipped, the workflow_instances table does not exist yet");
            continue;
        }
        // As written: the exact text through the simple query protocol.
        let ran = sqlx::raw_sql(&sql).execute(&pool).await;
        match q.expect {
            Expect::Fails(code, why) => {
                let err = ran.expect_err(&format!("{label} was expected to fail: {why}"));
                let got = err
                    .as_database_error()
                    .and_then(|e| e.code())
                    .map(|c| c.into_owned());
                assert_eq!(got.as_deref(), Some(code), "{label}: {err} ({why})");
                continue;
            }
            Expect::Runs | Expect::NeedsWorkflows => {
                if let Err(e) = ran {
                    panic!("{label} fails on PostgreSQL: {e}\n{sql}");
                }
            }
        }
        if sql.trim_start().to_uppercase().starts_with("DELETE") {
            // Nothing in the mix is 90 days old: the seeds' purge deletes nothing (and
            // the append-only trigger refuses it for any row that would go).
            results.insert(q.name, Vec::new());
            continue;
        }
        let got = rows(&pool, &sql)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        results.insert(q.name, got);
    }
    let r = |name: &str| results.get(name).cloned().unwrap_or_default();

    // Audit rows of the mix: 4 new (customer, invoice, finalization, payment),
    // 3 replayed (2 customer, 1 payment), 3 failed (mismatch, validation, and the
    // request without a key, refused before the engine: its row has no key and no id).
    let (total, replayed, failed) = (10.0, 3.0, 3.0);

    // 000
    let trace = r("trace: audit rows of a key");
    let statuses: Vec<&str> = trace.iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, ["replayed", "new"], "{trace:#?}");
    assert!(trace
        .iter()
        .all(|r| r["deterministic_id"] == json!(mix.payment_id)));
    let payment = r("trace: the payment");
    assert_eq!(payment.len(), 1, "{payment:#?}");
    assert_eq!(payment[0]["amount"], json!(4000));
    assert_eq!(
        pairs(
            &r("replays for a company"),
            "operation_name",
            "replay_count"
        ),
        [
            ("createCustomer".into(), 2.0),
            ("createPayment".into(), 1.0)
        ]
    );
    let high = r("high replay rate operations");
    let mut high = pairs(&high, "operation_name", "replay_rate_pct");
    high.sort_by(|a, b| a.0.cmp(&b.0));
    // createCustomer: 2 replays of 6 rows; createPayment: 1 of 2.
    assert_eq!(
        high,
        [
            ("createCustomer".into(), 33.33),
            ("createPayment".into(), 50.0)
        ]
    );
    let failures = r("failed operations");
    assert_eq!(failures.len() as f64, failed, "{failures:#?}");
    assert!(failures
        .iter()
        .all(|f| f["company_id"] == json!(mix.company)));
    assert!(r("slow operations (5 s)").is_empty());
    let report = r("compliance report");
    assert_eq!(report.len() as f64, total, "{report:#?}");
    assert_eq!(
        report.iter().filter(|r| r["status"] == "new").count(),
        4,
        "{report:#?}"
    );
    assert!(r("exactly once (30 days)").is_empty());

    // 002
    let weekly = pairs(
        &r("weekly replay rate by operation"),
        "operation_name",
        "replay_rate_pct",
    );
    assert_eq!(weekly.len(), 4, "{weekly:?}");
    assert_eq!(
        weekly[..2],
        [
            ("createPayment".into(), 50.0),
            ("createCustomer".into(), 33.33)
        ]
    );
    let mut analysis = pairs(
        &r("weekly failure analysis"),
        "error_message",
        "failure_count",
    );
    analysis.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(analysis.len(), 3, "{analysis:?}");
    assert!(
        analysis.iter().any(|(m, _)| m.contains("mismatch")),
        "{analysis:?}"
    );
    assert!(analysis.iter().all(|(_, n)| *n == 1.0));
    assert!(r("no duplicates (30 days)").is_empty());

    // 003
    assert_eq!(r("staging replay rate analysis").len(), 4);
    assert_eq!(r("staging failure analysis").len(), 3);
    assert_eq!(r("operations for a company").len() as f64, total);
    assert_eq!(
        r("trace by idempotency key").len(),
        4,
        "new, 2 replays, mismatch"
    );
    assert!(r("slow operations (2 s, 24 h)").is_empty());
    assert_eq!(r("high failure rate response").len(), 3);
    let collisions = r("key collision response");
    assert_eq!(collisions.len(), 1, "{collisions:#?}");
    assert_eq!(collisions[0]["idempotency_key"], "client-key");
    assert_eq!(collisions[0]["status"], "failed");
    assert_eq!(r("support: charged twice, audit rows").len(), 2);
    let notify = r("support: no email notification");
    assert_eq!(notify.len(), 2, "the new row and its replay: {notify:#?}");
    assert!(r("no duplicates (48 hours)").is_empty());
    assert_eq!(num(&r("audit log growth")[0]["count"]), total);
    assert_eq!(r("connection pool check").len(), 1);
    let mut summary = r("weekly summary");
    summary.sort_by_key(|s| s["operation_type"].as_str().unwrap_or_default().to_owned());
    let figures: Vec<(String, f64, f64, f64, f64)> = summary
        .iter()
        .map(|s| {
            (
                s["operation_type"].as_str().unwrap_or_default().to_owned(),
                num(&s["total_ops"]),
                num(&s["new_ops"]),
                num(&s["replayed_ops"]),
                num(&s["failed_ops"]),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            ("financial".into(), 4.0, 3.0, 1.0, 0.0),
            ("high-risk".into(), 6.0, 1.0, 2.0, 3.0)
        ]
    );
    assert!(summary
        .iter()
        .all(|s| num(&s["avg_duration"]) > 0.0 && num(&s["p95_duration"]) > 0.0));
    assert!(r("slow query analysis").is_empty());
    assert!(r("key collision check").is_empty());
    assert!(r("no duplicates (compliance)").is_empty());
    let kpi = r("weekly KPI report");
    assert_eq!(kpi.len(), 1, "{kpi:#?}");
    let kpi = &kpi[0];
    assert_eq!(num(&kpi["total_ops"]), total);
    let pct = |n: f64| (10000.0 * n / total).round() / 100.0;
    assert_eq!(num(&kpi["replay_rate_pct"]), pct(replayed));
    assert_eq!(num(&kpi["failure_rate_pct"]), pct(failed));
    assert!(num(&kpi["p95_ms"]) > 0.0 && num(&kpi["p99_ms"]) >= num(&kpi["p95_ms"]));
    assert_eq!(kpi["failure_status"], "âŒ FAIL");
    assert_eq!(kpi["replay_status"], "âš ï¸ WARNING");
    assert_eq!(kpi["latency_status"], "âœ… PASS");

    if workflows {
        // No workflow definitions exist in the mix: nothing triggered, nothing missing.
        assert!(r("trace: workflow triggers").is_empty());
        assert!(r("workflow accuracy (7 days)").is_empty());
        assert!(r("workflow accuracy (30 days)")
            .iter()
            .all(|w| num(&w["total_workflows"]) == num(&w["actual_workflows"])));
    }
    pool.close().await;
    drop(db);
}
