//! The replay ceiling of `scripts/bench.sh`: a bare axum server that answers every
//! request (any method, any path) with a stored JSON body — by default one of the same size as a
//! createCustomer reply — and nothing else: no middleware, no auth, no database.
//!
//! `bench_ceiling --bind 127.0.0.1:8090 --body reply.json`

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use http::header::CONTENT_TYPE;
use http::StatusCode;
use tokio::net::TcpListener;

/// Serves a stored JSON body to every request (benchmark only).
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    bind: SocketAddr,
    /// File holding the body to answer with (e.g. a real createCustomer reply); without
    /// it, a body shaped like one.
    #[arg(long)]
    body: Option<PathBuf>,
}

const SAMPLE: &str = r#"{"id":"019ad7a8-53f1-7c52-9b3e-4a8c1d2e3f40","name":"Customer n-0000000000-0-0","email":"c0@example.com","created_at":"2026-12-02T00:00:00.000000Z"}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = match &cli.body {
        Some(path) => Bytes::from(
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?,
        ),
        None => Bytes::from_static(SAMPLE.as_bytes()),
    };
    let router = Router::new().fallback(move || {
        let body = body.clone();
        async move { (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body) }
    });
    let listener = TcpListener::bind(cli.bind)
        .await
        .with_context(|| format!("failed to bind {}", cli.bind))?;
    axum::serve(listener, router)
        .with_graceful_shutdown(accubooks::cli::shutdown_signal())
        .await?;
    Ok(())
}
