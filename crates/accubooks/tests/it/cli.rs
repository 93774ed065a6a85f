//! The operator commands of the `accubooks` binary, run as an operator would, against a
//! real store (and a real server where the data comes from).

use std::process::Output;

use serde_json::{json, Value};

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

fn accubooks(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_accubooks"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the accubooks binary runs")
}

/// Asserts the exit code, showing what the command printed when it differs.
fn expect_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "JSON on stdout: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn contract_doc() -> String {
    format!("{}/../../docs/CONTRACT.md", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_openapi_prints_the_document_the_server_serves() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let served = app.send(app.client.get(app.url("/openapi.json"))).await;

    let out = accubooks(&["contract", "openapi"]);

    expect_exit(&out, 0);
    assert_eq!(served.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&served.body),
        "the printed document is the served one, byte for byte"
    );
}

#[test]
fn contract_verify_agrees_with_the_repository_and_finds_a_missing_row() {
    let ok = accubooks(&[
        "--json",
        "contract",
        "verify",
        "--contract",
        &contract_doc(),
    ]);
    expect_exit(&ok, 0);
    assert_eq!(json_of(&ok)["findings"], json!(0));

    let text = std::fs::read_to_string(contract_doc()).expect("CONTRACT.md");
    let without: String = text
        .lines()
        .filter(|l| !l.contains("`createRefund`"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = dir.path().join("CONTRACT.md");
    std::fs::write(&doc, without).expect("write");
    let bad = accubooks(&[
        "--json",
        "contract",
        "verify",
        "--contract",
        &doc.display().to_string(),
    ]);
    expect_exit(&bad, 1);
    let rows = json_of(&bad)["rows"].clone();
    assert!(
        rows.as_array().is_some_and(|r| r
            .iter()
            .any(|row| row["operation"] == json!("createRefund"))),
        "{rows}"
    );
}

#[test]
fn a_wrong_database_or_operation_is_one_line_and_exit_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let out = accubooks(&["keys", "--database-url", &missing, "stats"]);
    expect_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot connect"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!dir.path().join("nope.db").exists(), "no file was created");

    let out = accubooks(&[
        "keys",
        "--database-url",
        &missing,
        "show",
        "--company",
        "00000000-0000-0000-0000-000000000000",
        "--operation",
        "payMe",
        "--key",
        "k",
    ]);
    expect_exit(&out, 2);
}

async fn migrate_status_lists_pending_then_applied(backend: Backend) {
    let db = crate::harness::TestDb::new(backend).await;
    let pending = accubooks(&["--json", "migrate", "--status", "--database-url", &db.url]);
    if backend == Backend::Sqlite {
        // No file yet: nothing to report on, and nothing created.
        expect_exit(&pending, 2);
    } else {
        expect_exit(&pending, 1); // pending migrations are findings
        assert!(json_of(&pending)
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["state"] == json!("pending"))));
    }
    let applied = accubooks(&["migrate", "--database-url", &db.url]);
    expect_exit(&applied, 0);
    let status = accubooks(&["--json", "migrate", "--status", "--database-url", &db.url]);
    expect_exit(&status, 0);
    let rows = json_of(&status);
    assert!(
        rows.as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|row| row["state"] == json!("applied"))),
        "{rows}"
    );
}

async fn keys_commands_show_stats_and_prune(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let r = app
        .post(
            "/api/customers",
            &co.token,
            "cli-key",
            &json!({"name": "Ann"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let url = app.db.url.clone();

    let stats = accubooks(&["--json", "keys", "--database-url", &url, "stats"]);
    expect_exit(&stats, 0);
    assert!(json_of(&stats)["total_keys"]
        .as_i64()
        .is_some_and(|n| n >= 1));

    let show = accubooks(&[
        "--json",
        "keys",
        "--database-url",
        &url,
        "show",
        "--company",
        &co.id,
        "--operation",
        "createCustomer",
        "--key",
        "cli-key",
    ]);
    expect_exit(&show, 0);
    let rec = json_of(&show);
    assert_eq!(rec["state"], json!("completed"));
    assert_eq!(rec["response_status"], json!(201));
    assert_eq!(rec["deterministic_id"], r.json()["id"]);

    let dry = accubooks(&[
        "--json",
        "keys",
        "--database-url",
        &url,
        "prune",
        "--dry-run",
    ]);
    expect_exit(&dry, 0);
    assert_eq!(json_of(&dry)["records"], json!(0), "nothing has expired");
    let pruned = accubooks(&["--json", "keys", "--database-url", &url, "prune"]);
    expect_exit(&pruned, 0);
    assert_eq!(json_of(&pruned)["outcome"], json!("deleted"));
}

async fn audit_verify_finds_a_planted_duplicate_and_a_planted_orphan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let r = app
        .post("/api/customers", &co.token, "real", &json!({"name": "Ann"}))
        .await;
    assert_eq!(r.status, 201);
    let url = app.db.url.clone();
    let clean = accubooks(&["--json", "audit", "--database-url", &url, "verify"]);
    expect_exit(&clean, 0);

    // Plant a second `new` row for the real execution, and a `new` row with no entity.
    let real_id = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let orphan_id = uuid::Uuid::new_v4().to_string();
    for id in [&real_id, &orphan_id] {
        let sql = "insert into idempotent_write_audit_log (id, operation_name, operation_type, \
                   deterministic_id, company_id, status, execution_duration_ms, timestamp) \
                   values ($1, 'createCustomer', 'high-risk', $2, $3, 'new', 1, $4)";
        let row_id = idem::Id(uuid::Uuid::now_v7());
        idem::on_db!(&app.state.db, |c| sqlx::query(sql)
            .bind(row_id)
            .bind(id.as_str())
            .bind(co.id.as_str())
            .bind(idem::Ts::now())
            .execute(c)
            .await
            .map(|_| ()))
        .expect("plant an audit row");
    }

    let found = accubooks(&["--json", "audit", "--database-url", &url, "verify"]);
    expect_exit(&found, 1);
    let report = json_of(&found);
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter()
            .any(|r| r["check"] == json!("executed twice")
                && r["deterministic_id"] == json!(real_id)),
        "{report}"
    );
    assert!(
        rows.iter()
            .any(|r| r["check"] == json!("record missing")
                && r["deterministic_id"] == json!(orphan_id)),
        "{report}"
    );

    let failures = accubooks(&[
        "--json",
        "audit",
        "--database-url",
        &url,
        "replays",
        "--since",
        "1h",
    ]);
    expect_exit(&failures, 0);
}

async fn keys_release_refuses_a_live_executor_and_frees_a_silent_one(backend: Backend) {
    let o = crate::harness::Options {
        lease: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let app = TestApp::spawn_with(backend, o).await;
    let co = app.create_company("Acme").await;
    let url = app.db.url.clone();
    let release = |key: &str| {
        accubooks(&[
            "--json",
            "keys",
            "--database-url",
            &url,
            "release",
            "--company",
            &co.id,
            "--operation",
            "createCustomer",
            "--key",
            key,
            "--observe",
            "1500ms",
            "--yes",
        ])
    };

    if backend == Backend::Sqlite {
        // A claim on SQLite is the server's own write transaction: nothing to end from
        // outside, and the command says so instead of pretending.
        let refused = release("anything");
        expect_exit(&refused, 2);
        assert!(String::from_utf8_lossy(&refused.stderr).contains("SQLite"));
        return;
    }

    // A live executor runs statements: here its insert waits on a row lock the test
    // holds on its company. The release is refused.
    let idem::Db::Postgres(pg) = &app.state.db else {
        unreachable!("PostgreSQL above")
    };
    let pool = pg.pool();
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("select id from companies where id = $1::uuid for update")
        .bind(&co.id)
        .fetch_one(&mut *blocker)
        .await
        .expect("lock the company row");
    let live = spawn_post(&app, &co.token, "live");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused = tokio::task::spawn_blocking({
        let release = release("live");
        move || release
    })
    .await
    .expect("release ran");
    expect_exit(&refused, 1);
    blocker.rollback().await.expect("rollback");
    assert_eq!(live.await.expect("task"), 201, "the live executor finished");

    // A silent executor (idle in its transaction, parked): the release ends its session,
    // which rolls its write back, and is audited.
    let hold = app.state.idem.hooks().arm("claimed");
    let silent = spawn_post(&app, &co.token, "silent");
    hold.reached().await;
    let freed = release("silent");
    expect_exit(&freed, 0);
    assert_eq!(json_of(&freed)["outcome"], json!("released"));
    let audited: i64 = idem::on_db!(&app.state.db, |c| sqlx::query_scalar(
        "select count(*) from idempotent_write_audit_log where idempotency_key = 'silent' \
         and error_message like '%released by an operator%'"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    assert_eq!(audited, 1, "the release is audited");
    hold.release();
    // The resumed executor lost its session: it cannot commit, reads the key again and
    // executes it afresh; the key still ends with exactly one customer.
    let status = silent.await.expect("task");
    assert!(matches!(status, 200 | 201), "{status}");
    let again = app
        .post(
            "/api/customers",
            &co.token,
            "silent",
            &json!({"name": "silent"}),
        )
        .await;
    assert_eq!(again.status, 200);
    let n: i64 = idem::on_db!(&app.state.db, |c| sqlx::query_scalar(
        "select count(*) from customers where name = 'silent'"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    assert_eq!(n, 1, "exactly one execution committed");
}

fn spawn_post(app: &TestApp, token: &str, key: &str) -> tokio::task::JoinHandle<u16> {
    let request = app
        .client
        .post(app.url("/api/customers"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "name": key }));
    tokio::spawn(async move {
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

async fn report_weekly_passes_a_healthy_week_and_fails_a_bad_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    for i in 0..10 {
        let r = app
            .post(
                "/api/customers",
                &co.token,
                &format!("k{i}"),
                &json!({"name": "C"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let url = app.db.url.clone();
    let good = accubooks(&["--json", "report", "--database-url", &url, "weekly"]);
    expect_exit(&good, 0);
    let rows = json_of(&good);
    assert!(
        rows.as_array().is_some_and(|r| r
            .iter()
            .any(|row| row["operation"] == json!("createCustomer")
                && row["requests"] == json!(10)
                && row["verdict"] == json!("PASS"))),
        "{rows}"
    );

    // Three replays in thirteen requests: a 23 % replay rate fails the week.
    for i in 0..3 {
        let r = app
            .post(
                "/api/customers",
                &co.token,
                &format!("k{i}"),
                &json!({"name": "C"}),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    // Stopping flushes the replays' queued audit rows; the database stays with `_db`.
    let _db = app.stop().await;
    let bad = accubooks(&["--json", "report", "--database-url", &url, "weekly"]);
    expect_exit(&bad, 1);
    let slow = accubooks(&[
        "--json",
        "audit",
        "--database-url",
        &url,
        "slow",
        "--over",
        "0ms",
    ]);
    expect_exit(&slow, 0);
    assert!(json_of(&slow).as_array().is_some_and(|r| r.len() >= 10));
}

backend_tests!(
    migrate_status_lists_pending_then_applied,
    keys_commands_show_stats_and_prune,
    audit_verify_finds_a_planted_duplicate_and_a_planted_orphan,
    keys_release_refuses_a_live_executor_and_frees_a_silent_one,
    report_weekly_passes_a_healthy_week_and_fails_a_bad_one,
    load_all_operations_with_duplicates_executes_every_key_once,
    smoke_passes_on_a_healthy_server_and_a_wrong_token_is_exit_two,
    audit_trace_follows_a_request_by_key_id_and_request_id,
    companies_create_and_tokens_issue_go_through_the_admin_api,
);

async fn load_all_operations_with_duplicates_executes_every_key_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let out = tokio::task::spawn_blocking({
        let url = app.base.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_accubooks"))
                .args([
                    "--json",
                    "load",
                    "--url",
                    &url,
                    "--operation",
                    "all",
                    "--requests",
                    "330",
                    "--concurrency",
                    "20",
                    "--tenants",
                    "3",
                    "--duplicate-ratio",
                    "0.3",
                ])
                .env("ACCUBOOKS_ADMIN_TOKEN", crate::harness::OPERATOR)
                .output()
                .expect("load runs")
        }
    })
    .await
    .expect("load task");
    expect_exit(&out, 0);
    let report = json_of(&out);
    assert_eq!(report["requests"], json!(330));
    assert_eq!(report["findings"], json!([]));
    assert!(
        report["keys"].as_u64().is_some_and(|k| k < 330),
        "duplicates were sent"
    );
    // Every key ran once: one `new` audit row per key of the run.
    let news: i64 = idem::on_db!(&app.state.db, |c| sqlx::query_scalar(
        "select count(*) from idempotent_write_audit_log where status = 'new' \
         and idempotency_key like 'load-%' and idempotency_key not like 'load-setup-%'"
    )
    .fetch_one(c)
    .await)
    .expect("count");
    assert_eq!(Some(news as u64), report["keys"].as_u64());
}

#[test]
fn load_refuses_an_unknown_operation_listing_the_valid_ones() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_accubooks"))
        .args(["load", "--operation", "payEveryone"])
        .env("ACCUBOOKS_ADMIN_TOKEN", "x")
        .output()
        .expect("runs");
    expect_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid: all, createCustomer"));
}

async fn smoke_passes_on_a_healthy_server_and_a_wrong_token_is_exit_two(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.base.clone();
    let (ok, wrong) = tokio::task::spawn_blocking(move || {
        let run = |token: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_accubooks"))
                .args(["--json", "smoke", "--url", &url])
                .env("ACCUBOOKS_ADMIN_TOKEN", token)
                .output()
                .expect("smoke runs")
        };
        (run(crate::harness::OPERATOR), run("acbop_not-the-token"))
    })
    .await
    .expect("smoke task");
    expect_exit(&ok, 0);
    let report = json_of(&ok);
    assert_eq!(report["findings"], json!(0), "{report}");
    assert!(report["checks"].as_array().is_some_and(|c| c.len() >= 15));
    expect_exit(&wrong, 2);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("401"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

async fn audit_trace_follows_a_request_by_key_id_and_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let co = app.create_company("Acme").await;
    let first = app
        .write_with(
            reqwest::Method::POST,
            "/api/customers",
            &co.token,
            Some("traced"),
            json!({"name": "Traced"}).to_string(),
            &[
                ("content-type", "application/json"),
                ("x-request-id", "req-traced-1"),
            ],
        )
        .await;
    assert_eq!(first.status, 201);
    let retry = app
        .post(
            "/api/customers",
            &co.token,
            "traced",
            &json!({"name": "Traced"}),
        )
        .await;
    assert_eq!(retry.status, 200);
    let id = first.json()["id"].as_str().unwrap_or_default().to_owned();
    let url = app.db.url.clone();
    // Stopping flushes the replay's queued audit row.
    let _db = app.stop().await;

    let by_key = accubooks(&[
        "--json",
        "audit",
        "--database-url",
        &url,
        "trace",
        "--key",
        "traced",
        "--company",
        &co.id,
    ]);
    expect_exit(&by_key, 0);
    let rows = json_of(&by_key);
    let kinds: Vec<(String, String)> = rows
        .as_array()
        .map(|r| {
            r.iter()
                .map(|row| {
                    (
                        row["kind"].as_str().unwrap_or("").to_owned(),
                        row["status"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        kinds,
        vec![
            ("audit row".to_owned(), "new".to_owned()),
            ("audit row".to_owned(), "replayed".to_owned()),
            ("record".to_owned(), "present".to_owned()),
        ],
        "{rows}"
    );
    let by_id = accubooks(&[
        "--json",
        "audit",
        "--database-url",
        &url,
        "trace",
        "--id",
        &id,
    ]);
    expect_exit(&by_id, 0);
    assert_eq!(
        json_of(&by_id),
        rows,
        "the deterministic id finds the same rows"
    );
    let by_request = accubooks(&[
        "--json",
        "audit",
        "--database-url",
        &url,
        "trace",
        "--request-id",
        "req-traced-1",
    ]);
    expect_exit(&by_request, 0);
    assert_eq!(json_of(&by_request)[0]["status"], json!("new"));
    let neither = accubooks(&["audit", "--database-url", &url, "trace"]);
    expect_exit(&neither, 2);
}

async fn companies_create_and_tokens_issue_go_through_the_admin_api(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.base.clone();
    let run = move |args: &[&str], token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_accubooks"))
            .args(args)
            .env("ACCUBOOKS_URL", &url)
            .env("ACCUBOOKS_ADMIN_TOKEN", token)
            .output()
            .expect("runs")
    };
    let created = tokio::task::spawn_blocking({
        let run = run.clone();
        move || {
            run(
                &[
                    "--json",
                    "companies",
                    "create",
                    "Globex",
                    "--email",
                    "boss@globex.test",
                ],
                crate::harness::OPERATOR,
            )
        }
    })
    .await
    .expect("task");
    expect_exit(&created, 0);
    let company = json_of(&created);
    assert_eq!(company["email"], json!("boss@globex.test"));
    assert_eq!(company["role"], json!("admin"));
    let token = company["api_token"].as_str().unwrap_or_default().to_owned();
    let me = app.get("/api/company/settings", &token).await;
    assert_eq!(me.status, 200, "the printed token works");
    assert_eq!(me.json()["settings"]["display_name"], json!("Globex"));

    let id = company["company_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (issued, unknown, no_token) = tokio::task::spawn_blocking(move || {
        (
            run(
                &[
                    "--json",
                    "tokens",
                    "issue",
                    "--company",
                    &id,
                    "--email",
                    "boss@globex.test",
                ],
                crate::harness::OPERATOR,
            ),
            run(
                &[
                    "tokens",
                    "issue",
                    "--company",
                    &id,
                    "--email",
                    "nobody@globex.test",
                ],
                crate::harness::OPERATOR,
            ),
            run(
                &[
                    "tokens",
                    "issue",
                    "--company",
                    &id,
                    "--email",
                    "boss@globex.test",
                ],
                "",
            ),
        )
    })
    .await
    .expect("task");
    expect_exit(&issued, 0);
    let second = json_of(&issued)["api_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(second, token, "a new token");
    assert_eq!(app.get("/api/company/settings", &second).await.status, 200);
    expect_exit(&unknown, 2);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    expect_exit(&no_token, 2);
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("ACCUBOOKS_ADMIN_TOKEN"));
}

/// Ctrl-C stops the sending, and the run still reports and checks what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_load_reports_and_checks_what_it_sent() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_accubooks"))
            .args([
                "--json",
                "load",
                "--url",
                &url,
                "--operation",
                "createCustomer",
                "--requests",
                "200000",
                "--concurrency",
                "8",
                "--tenants",
                "1",
            ])
            .env("ACCUBOOKS_ADMIN_TOKEN", crate::harness::OPERATOR)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("load starts");
        std::thread::sleep(std::time::Duration::from_secs(3));
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        child.wait_with_output().expect("load ends")
    })
    .await
    .expect("task");
    expect_exit(&out, 0);
    let report = json_of(&out);
    assert_eq!(report["interrupted"], json!(true), "{report}");
    let sent = report["requests"].as_u64().unwrap_or(0);
    assert!(sent > 0 && sent < 200_000, "{report}");
    assert_eq!(report["findings"], json!([]));
}
