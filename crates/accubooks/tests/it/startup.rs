//! Start-up checks: schema, settings, and the operator token.

use std::time::Duration;

use accubooks::app::Application;

use crate::backend_tests;
use crate::harness::{serve_args, Backend, Options, TestDb};

async fn an_outdated_schema_stops_a_start_without_migration(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut args = serve_args(&db.url, &Options::default());
    args.no_migrate = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = Application::build_on(args, listener)
        .await
        .err()
        .expect("start refused");
    assert!(err.to_string().contains("schema is outdated"), "{err:#}");
}

async fn a_key_ttl_not_longer_than_the_lease_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let o = Options {
        lease: Duration::from_secs(30),
        key_ttl: Duration::from_secs(30),
        ..Options::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = Application::build_on(serve_args(&db.url, &o), listener)
        .await
        .err()
        .expect("start refused");
    assert!(err.to_string().contains("--key-ttl"), "{err:#}");
}

async fn a_generated_operator_token_is_stored_only_as_its_hash(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut args = serve_args(&db.url, &Options::default());
    args.admin_token = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = Application::build_on(args, listener).await.expect("starts");
    let stored: String = idem::on_db!(&app.state().db, |c| sqlx::query_scalar(
        "select value from operator_settings where name = 'admin_token_hash'"
    )
    .fetch_one(c)
    .await)
    .expect("hash stored");
    assert_eq!(stored.len(), 64, "a SHA-256 hex digest");
    assert!(!stored.starts_with("acbop_"), "never the token itself");
    assert_eq!(app.state().operator_hash.as_str(), stored);
    // A second start reuses the stored hash instead of generating another token.
    let mut args = serve_args(&db.url, &Options::default());
    args.admin_token = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let again = Application::build_on(args, listener)
        .await
        .expect("starts again");
    assert_eq!(again.state().operator_hash.as_str(), stored);
}

backend_tests!(
    an_outdated_schema_stops_a_start_without_migration,
    a_key_ttl_not_longer_than_the_lease_is_refused,
    a_generated_operator_token_is_stored_only_as_its_hash,
);
