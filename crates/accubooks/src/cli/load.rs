//! `accubooks load`: the seeds' concurrent and multi-tenant load test, for any operation.
//!
//! It creates its own tenants and what each operation needs (customers, open invoices
//! with room for payments, a payment to refund, employees, bank transactions with their
//! payments, drafts to finalize), sends the requests from a pool of workers with a share
//! of duplicates queued right beside their originals (so they race), measures latency
//! (HdrHistogram) and statuses, and ends by checking every key: at most one 201, every
//! 200/201 body identical, and each created entity readable at its id. Any breach is a
//! finding (exit 1). Ctrl-C stops sending; what was sent is still measured and checked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::client::{expect, operator_token, Answer, Api};
use super::output::{fail, Report};

/// `accubooks load` options.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server (`http://127.0.0.1:8080`).
    #[arg(long, env = "ACCUBOOKS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// One operation (`createPayment`) or `all` (round robin over every one).
    #[arg(long, default_value = "all")]
    pub operation: String,
    /// Requests to send, duplicates included.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Companies to spread the load over (each created for the run).
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    /// Share of the requests that repeat an original's key and body (0 to 0.9).
    #[arg(long, default_value_t = 0.3)]
    pub duplicate_ratio: f64,
    /// Stop sending after this long (what was sent is still checked).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// The registered operations the load generator knows how to send (by the unit test
/// below, all of them).
pub(super) fn operations() -> Vec<&'static str> {
    crate::ops::registry()
        .operations()
        .iter()
        .map(|d| d.name())
        .filter(|name| request(name, &Tenant::default(), 0, 0).is_some())
        .collect()
}

/// What a tenant's requests refer to, made before the run.
#[derive(Debug, Default)]
pub(super) struct Tenant {
    pub(super) token: String,
    customer: String,
    open_invoice: String,
    payment: String,
    drafts: Vec<String>,
    pairs: Vec<(String, String)>,
    item: String,
    triggered_workflow: String,
    toggled_workflow: String,
}

/// One request of the run.
#[derive(Debug, Clone)]
struct Job {
    op: &'static str,
    method: Method,
    tenant: usize,
    key: String,
    path: String,
    body: Value,
}

/// What came back for one request.
#[derive(Debug)]
struct Outcome {
    job: Arc<Job>,
    answer: Result<Answer, String>,
}

/// Runs the load test.
pub async fn run(args: LoadArgs, json: bool) -> ExitCode {
    let known = operations();
    let ops: Vec<&'static str> = if args.operation == "all" {
        known
    } else if let Some(op) = known.iter().find(|o| **o == args.operation) {
        vec![*op]
    } else {
        return fail(format!(
            "unknown operation {:?}; valid: all, {}",
            args.operation,
            known.join(", ")
        ));
    };
    if args.requests == 0 || args.concurrency == 0 || args.tenants == 0 {
        return fail("--requests, --concurrency and --tenants must be at least 1");
    }
    if !(0.0..=0.9).contains(&args.duplicate_ratio) {
        return fail("--duplicate-ratio must be between 0 and 0.9");
    }
    // Ctrl-C from here on stops the sending; what was sent is still reported and checked.
    let stop = CancellationToken::new();
    let ctrl_c = tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        }
    });
    let operator = match operator_token() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let api = match Api::new(&args.url, args.concurrency) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let plan = plan(&ops, &args);
    let tenants = match prepare(&api, &operator, &plan, args.tenants).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let jobs = jobs(plan, &tenants, args.duplicate_ratio);
    let (outcomes, elapsed) = send_all(&api, &tenants, jobs, &args, &stop).await;
    ctrl_c.abort();
    let findings = verify(&api, &tenants, &outcomes).await;
    summary(&outcomes, elapsed, findings, stop.is_cancelled()).print(json)
}

/// The originals: (operation, tenant) for each, round robin.
fn plan(ops: &[&'static str], args: &LoadArgs) -> Vec<(&'static str, usize)> {
    let duplicates = (args.requests as f64 * args.duplicate_ratio).round() as usize;
    let originals = args.requests.saturating_sub(duplicates).max(1);
    (0..originals)
        .map(|i| (ops[i % ops.len()], (i / ops.len()) % args.tenants))
        .collect()
}

async fn setup(
    api: &Api,
    token: &str,
    key: &str,
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let a = api
        .send(Method::POST, path, token, Some(key), Some(&body))
        .await?;
    expect(a, 201, &format!("prepare {path}"))
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// Creates the tenants and what their requests need.
pub(super) async fn prepare(
    api: &Api,
    operator: &str,
    plan: &[(&'static str, usize)],
    tenants: usize,
) -> Result<Vec<Tenant>, String> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut out = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let company = api
            .create_company(operator, &format!("Load {run} #{t}"), None)
            .await?;
        let token = company["api_token"].as_str().unwrap_or_default().to_owned();
        let count = |op: &str| plan.iter().filter(|(o, n)| *o == op && *n == t).count();
        let k = |what: &str| format!("load-setup-{run}-{t}-{what}");
        let mut tenant = Tenant {
            token: token.clone(),
            ..Tenant::default()
        };
        let customer = setup(
            api,
            &token,
            &k("customer"),
            "/api/customers",
            json!({"name": "Load customer"}),
        )
        .await?;
        tenant.customer = id_of(&customer);
        let big = json!({"customer_id": tenant.customer, "line_items": [
            {"description": "Load", "quantity": 1_000_000, "unit_price": "10000.00"}]});
        let invoice = setup(api, &token, &k("invoice"), "/api/invoices", big).await?;
        tenant.open_invoice = id_of(&invoice);
        let path = format!("/api/invoices/{}/finalize", tenant.open_invoice);
        setup(api, &token, &k("finalize"), &path, json!({})).await?;
        let payment = setup(
            api,
            &token,
            &k("payment"),
            "/api/payments",
            json!({
            "invoice_id": tenant.open_invoice, "amount": "1000000.00", "method": "bank_transfer"}),
        )
        .await?;
        tenant.payment = id_of(&payment);
        if count("executePayroll") > 0 {
            setup(
                api,
                &token,
                &k("employee"),
                "/api/employees",
                json!({
                "name": "Load employee", "pay_type": "salary", "annual_salary": "48000.00"}),
            )
            .await?;
        }
        if count("adjustInventory") > 0 {
            let item = setup(
                api,
                &token,
                &k("item"),
                "/api/inventory-items",
                json!({
                "sku": format!("SETUP-{t}"), "name": "Load item", "quantity": 0}),
            )
            .await?;
            tenant.item = id_of(&item);
        }
        for (what, slot) in [("triggerWorkflow", 0), ("updateWorkflow", 1)] {
            if count(what) > 0 {
                let wf = setup(
                    api,
                    &token,
                    &k(what),
                    "/api/workflows",
                    json!({
                    "name": format!("Load {what}"), "trigger": "manual",
                    "action": {"type": "notify", "target": "load"}}),
                )
                .await?;
                if slot == 0 {
                    tenant.triggered_workflow = id_of(&wf);
                } else {
                    tenant.toggled_workflow = id_of(&wf);
                }
            }
        }
        let drafts = count("finalizeInvoice");
        let pairs = count("reconcileLedger");
        let keys: Vec<String> = (0..drafts + pairs).map(|i| k(&format!("p{i}"))).collect();
        let made = futures::future::join_all(
            keys.iter()
                .enumerate()
                .map(|(i, key)| prerequisite(api, &token, &tenant, key, i < drafts)),
        )
        .await;
        for m in made {
            let (draft, a, b) = m?;
            if draft {
                tenant.drafts.push(a);
            } else {
                tenant.pairs.push((a, b));
            }
        }
        out.push(tenant);
    }
    Ok(out)
}

/// A draft invoice to finalize, or a (bank transaction, payment) pair to reconcile.
async fn prerequisite(
    api: &Api,
    token: &str,
    t: &Tenant,
    key: &str,
    draft: bool,
) -> Result<(bool, String, String), String> {
    if draft {
        let v = setup(
            api,
            token,
            key,
            "/api/invoices",
            json!({"customer_id": t.customer,
            "line_items": [{"description": "Load", "quantity": 1, "unit_price": "10.00"}]}),
        )
        .await?;
        return Ok((true, id_of(&v), String::new()));
    }
    let payment = setup(
        api,
        token,
        &format!("{key}-pay"),
        "/api/payments",
        json!({
        "invoice_id": t.open_invoice, "amount": "0.02", "method": "cash"}),
    )
    .await?;
    let tx = setup(
        api,
        token,
        &format!("{key}-tx"),
        "/api/bank-transactions",
        json!({
        "amount": "0.02", "posted_on": "2026-01-02", "description": "Load deposit"}),
    )
    .await?;
    Ok((false, id_of(&tx), id_of(&payment)))
}

/// The requests: each original, and duplicates queued right after theirs.
fn jobs(plan: Vec<(&'static str, usize)>, tenants: &[Tenant], ratio: f64) -> VecDeque<Arc<Job>> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let methods: HashMap<&str, Method> = crate::ops::registry()
        .operations()
        .iter()
        .map(|d| (d.name(), d.method().clone()))
        .collect();
    let mut used: HashMap<(usize, &str), usize> = HashMap::new();
    let originals: Vec<Arc<Job>> = plan
        .into_iter()
        .enumerate()
        .filter_map(|(i, (op, tenant))| {
            let n = used.entry((tenant, op)).or_default();
            let nth = *n;
            *n += 1;
            let (path, body) = request(op, &tenants[tenant], i, nth)?;
            Some(Arc::new(Job {
                op,
                method: methods.get(op)?.clone(),
                tenant,
                key: format!("load-{run}-{i}"),
                path,
                body,
            }))
        })
        .collect();
    let wanted = ((originals.len() as f64) * ratio / (1.0 - ratio)).round() as usize;
    let mut dup_of: Vec<usize> = (0..originals.len()).collect();
    dup_of.shuffle(&mut rand::rng());
    dup_of.truncate(wanted.min(originals.len()));
    let mut dups: HashMap<usize, usize> = HashMap::new();
    for i in dup_of {
        *dups.entry(i).or_default() += 1;
    }
    let mut queue = VecDeque::new();
    for (i, job) in originals.into_iter().enumerate() {
        for _ in 0..dups.get(&i).copied().unwrap_or(0) {
            queue.push_back(job.clone());
        }
        queue.push_back(job);
    }
    queue
}

/// The path and body of the `nth` request of `op` for one tenant (`i`: across the run).
/// `None` for an operation the generator does not know.
pub(super) fn request(op: &str, t: &Tenant, i: usize, nth: usize) -> Option<(String, Value)> {
    let day = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(nth as u64)))
        .map(|d| d.to_string())
        .unwrap_or_default();
    Some(match op {
        "createCustomer" => (
            "/api/customers".into(),
            json!({"name": format!("Load {i}")}),
        ),
        "createEmployee" => (
            "/api/employees".into(),
            json!({"name": format!("Load {i}"),
            "pay_type": "hourly", "hourly_rate": "20.00"}),
        ),
        "updateCompanySettings" => (
            "/api/company/settings".into(),
            json!({"display_name": format!("Load {i}")}),
        ),
        "grantUserAccess" => (
            "/api/company/members".into(),
            json!({"email": format!("load-{i}@example.com"), "role": "viewer"}),
        ),
        "createInvoice" => (
            "/api/invoices".into(),
            json!({"customer_id": t.customer,
            "line_items": [{"description": format!("Load {i}"), "quantity": 1, "unit_price": "10.00"}]}),
        ),
        "finalizeInvoice" => (
            format!(
                "/api/invoices/{}/finalize",
                t.drafts.get(nth).cloned().unwrap_or_default()
            ),
            json!({}),
        ),
        "createPayment" => (
            "/api/payments".into(),
            json!({"invoice_id": t.open_invoice, "amount": "0.01", "method": "card"}),
        ),
        "createRefund" => (
            "/api/refunds".into(),
            json!({"payment_id": t.payment, "amount": "0.01", "reason": format!("Load {i}")}),
        ),
        "executePayroll" => (
            "/api/payroll-runs".into(),
            json!({"period_start": day, "period_end": day, "pay_date": day}),
        ),
        "createBankTransaction" => (
            "/api/bank-transactions".into(),
            json!({"amount": "1.00",
            "posted_on": "2026-01-02", "description": format!("Load {i}")}),
        ),
        "createInventoryItem" => (
            "/api/inventory-items".into(),
            json!({"sku": format!("LOAD-{i}"),
            "name": format!("Load {i}"), "quantity": 10}),
        ),
        "adjustInventory" => (
            format!("/api/inventory-items/{}/adjustments", t.item),
            json!({"delta": 1, "reason": format!("Load {i}")}),
        ),
        "createWorkflow" => (
            "/api/workflows".into(),
            json!({"name": format!("Load {i}"),
            "trigger": "manual", "action": {"type": "notify", "target": "load"}}),
        ),
        "updateWorkflow" => (
            format!("/api/workflows/{}", t.toggled_workflow),
            json!({"active": nth % 2 == 1}),
        ),
        "triggerWorkflow" => (
            format!("/api/workflows/{}/trigger", t.triggered_workflow),
            json!({"input": {"n": i}}),
        ),
        "rotateWebhookSecret" => ("/api/company/webhook-secret/rotate".into(), json!({})),
        "reconcileLedger" => {
            let (tx, payment) = t.pairs.get(nth).cloned().unwrap_or_default();
            (
                format!("/api/bank-transactions/{tx}/reconcile"),
                json!({"payment_id": payment}),
            )
        }
        _ => return None,
    })
}

/// Sends every job from `concurrency` workers; stops early on `stop` or the duration.
async fn send_all(
    api: &Api,
    tenants: &[Tenant],
    jobs: VecDeque<Arc<Job>>,
    args: &LoadArgs,
    stop: &CancellationToken,
) -> (Vec<(Outcome, Duration)>, Duration) {
    let total = jobs.len() as u64;
    let bar = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {elapsed_precise}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let queue = Arc::new(Mutex::new(jobs));
    let results = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let tokens: Arc<Vec<String>> = Arc::new(tenants.iter().map(|t| t.token.clone()).collect());
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let workers = (0..args.concurrency).map(|_| {
        let (api, queue, results, tokens, bar, stop) = (
            api.clone(),
            queue.clone(),
            results.clone(),
            tokens.clone(),
            bar.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                if stop.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                let Some(job) = queue.lock().pop_front() else {
                    return;
                };
                let t0 = Instant::now();
                let token = tokens.get(job.tenant).cloned().unwrap_or_default();
                let answer = api
                    .send(
                        job.method.clone(),
                        &job.path,
                        &token,
                        Some(&job.key),
                        Some(&job.body),
                    )
                    .await;
                results.lock().push((Outcome { job, answer }, t0.elapsed()));
                bar.inc(1);
            }
        })
    });
    futures::future::join_all(workers).await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let results = std::mem::take(&mut *results.lock());
    (results, elapsed)
}

/// The per-key checks; each breach is a finding line.
async fn verify(api: &Api, tenants: &[Tenant], outcomes: &[(Outcome, Duration)]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for (o, _) in outcomes {
        by_key.entry(o.job.key.as_str()).or_default().push(o);
    }
    let mut findings = Vec::new();
    for (key, answers) in by_key {
        let ok: Vec<&Answer> = answers
            .iter()
            .filter_map(|o| o.answer.as_ref().ok())
            .filter(|a| a.status == 200 || a.status == 201)
            .collect();
        let created = ok.iter().filter(|a| a.status == 201).count();
        if created > 1 {
            findings.push(format!("{key}: executed {created} times (201 × {created})"));
        }
        if ok.windows(2).any(|w| w[0].body != w[1].body) {
            findings.push(format!("{key}: a replay differs from the first answer"));
        }
        let job = &answers[0].job;
        let collection = job.path.starts_with("/api/")
            && job.path.matches('/').count() == 2
            && job.op != "grantUserAccess";
        if let (true, Some(first)) = (collection, ok.first()) {
            let id = first.json()["id"].as_str().unwrap_or_default().to_owned();
            let token = &tenants[job.tenant].token;
            let path = format!("{}/{id}", job.path);
            match api.send(Method::GET, &path, token, None, None).await {
                Ok(a) if a.status == 200 => {}
                Ok(a) => findings.push(format!("{key}: GET {path} answered {}", a.status)),
                Err(e) => findings.push(format!("{key}: {e}")),
            }
        }
    }
    findings
}

fn summary(
    outcomes: &[(Outcome, Duration)],
    elapsed: Duration,
    findings: Vec<String>,
    interrupted: bool,
) -> Report {
    let mut hist = Histogram::<u64>::new(3).ok();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for (o, d) in outcomes {
        if let Some(h) = hist.as_mut() {
            let _ = h.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
        }
        let label = match &o.answer {
            Ok(a) => a.status.to_string(),
            Err(_) => "error".to_owned(),
        };
        *statuses.entry(label).or_default() += 1;
    }
    let ms = |q: f64| {
        hist.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let max = hist.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0);
    let rate = outcomes.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let keys = outcomes
        .iter()
        .map(|(o, _)| o.job.key.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut r = Report::new(
        format!(
            "Load: {} requests ({keys} keys) in {:.1} s{}",
            outcomes.len(),
            elapsed.as_secs_f64(),
            if interrupted { ", interrupted" } else { "" }
        ),
        &["figure", "value"],
    );
    let figures: Vec<(String, Value)> = vec![
        (
            "throughput_per_s".into(),
            json!((rate * 10.0).round() / 10.0),
        ),
        ("p50_ms".into(), json!(ms(0.50))),
        ("p95_ms".into(), json!(ms(0.95))),
        ("p99_ms".into(), json!(ms(0.99))),
        ("max_ms".into(), json!(max)),
    ];
    for (k, v) in &figures {
        r.row(vec![json!(k), v.clone()]);
    }
    for (s, n) in &statuses {
        r.row(vec![json!(format!("status {s}")), json!(n)]);
    }
    for f in &findings {
        r.finding(vec![json!("finding"), json!(f)]);
    }
    let mut object: serde_json::Map<String, Value> = figures.into_iter().collect();
    object.insert("requests".into(), json!(outcomes.len()));
    object.insert("keys".into(), json!(keys));
    object.insert("statuses".into(), json!(statuses));
    object.insert("findings".into(), json!(findings));
    object.insert("interrupted".into(), json!(interrupted));
    r.with_json(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_generator_drives_every_registered_operation() {
        for def in crate::ops::registry().operations() {
            assert!(
                operations().contains(&def.name()),
                "{} is registered but `accubooks load` cannot send it",
                def.name()
            );
        }
    }
}
