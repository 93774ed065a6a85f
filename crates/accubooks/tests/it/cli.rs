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

#[test]
fn contract_verify_agrees_with_the_repository_and_finds_a_missing_row() {
    let ok = accubooks(&[
        "--json",
        "contract",
        "verify",
        "--contract",
        &contract_doc(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
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
    assert_eq!(bad.status.code(), Some(1));
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
    assert_eq!(out.status.code(), Some(2));
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
    assert_eq!(out.status.code(), Some(2));
}

async fn migrate_status_lists_pending_then_applied(backend: Backend) {
    let db = crate::harness::TestDb::new(backend).await;
    let pending = accubooks(&["--json", "migrate", "--status", "--database-url", &db.url]);
    if backend == Backend::Sqlite {
        // No file yet: nothing to report on, and nothing created.
        assert_eq!(pending.status.code(), Some(2));
    } else {
        assert_eq!(
            pending.status.code(),
            Some(1),
            "pending migrations are findings"
        );
        assert!(json_of(&pending)
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["state"] == json!("pending"))));
    }
    let applied = accubooks(&["migrate", "--database-url", &db.url]);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let status = accubooks(&["--json", "migrate", "--status", "--database-url", &db.url]);
    assert_eq!(status.status.code(), Some(0));
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
    assert_eq!(
        stats.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
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
    assert_eq!(
        show.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
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
    assert_eq!(dry.status.code(), Some(0));
    assert_eq!(json_of(&dry)["records"], json!(0), "nothing has expired");
    let pruned = accubooks(&["--json", "keys", "--database-url", &url, "prune"]);
    assert_eq!(pruned.status.code(), Some(0));
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
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

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
    assert_eq!(found.status.code(), Some(1));
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
    assert_eq!(failures.status.code(), Some(0));
}

backend_tests!(
    migrate_status_lists_pending_then_applied,
    keys_commands_show_stats_and_prune,
    audit_verify_finds_a_planted_duplicate_and_a_planted_orphan,
);
