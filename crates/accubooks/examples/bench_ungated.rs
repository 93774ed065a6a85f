//! The "same handler without the gate" of `scripts/bench.sh`: a server of its own that
//! answers `POST /api/customers` with createCustomer's checks, validation and insert,
//! but no idempotency key, record, fingerprint or audit row.
//!
//! It takes the settings of `accubooks serve` (`--bind`, `--database-url`,
//! `ACCUBOOKS_ADMIN_TOKEN`, …), builds the application state the same way (same pool,
//! timeouts, migrations, background jobs) and serves, with the server's own middleware
//! and connection handling, only:
//! - `POST /api/customers`: the ungated write;
//! - `POST /admin/companies`: the admin API's company creation, so a bench can get a
//!   company token for this server's database;
//! - `GET /healthz`.
//!
//! It exists for the benchmark only and is never part of the `accubooks` binary.

use std::net::SocketAddr;

use accubooks::app::{self, Application};
use accubooks::auth::{Need, Tenant};
use accubooks::config::ServeArgs;
use accubooks::domain::{self, admin, customers};
use accubooks::error::AppError;
use accubooks::health;
use accubooks::state::AppState;
use anyhow::Context;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use http::header::{CONTENT_TYPE, LOCATION};
use http::StatusCode;
use idem::Ts;
use tokio::net::TcpListener;
use uuid::Uuid;

/// Serves createCustomer without the idempotency gate (benchmark only).
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Handles `POST /api/customers` without the gate: the same role check, body limit,
/// content-type check, strict JSON parse, validation and insert (one transaction) as
/// createCustomer.
async fn create_customer_ungated(
    State(state): State<AppState>,
    tenant: Tenant,
    req: Request,
) -> Result<Response, AppError> {
    tenant.require(Need::Writer)?;
    let (parts, body) = req.into_parts();
    let bytes = idem::http::read_body(&parts.headers, body, idem::http::DEFAULT_BODY_LIMIT)
        .await
        .map_err(AppError::Problem)?;
    if !idem::http::is_json(&parts.headers) {
        return Err(AppError::Problem(idem::http::unsupported_media_type()));
    }
    let value = idem::fingerprint::parse_strict(&bytes).map_err(|e| {
        AppError::Problem(idem::Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            e.0,
        ))
    })?;
    let input = customers::parse(&value)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    let customer = customers::insert(&mut tx, tenant.company_id, id, input, Ts::now(), "").await?;
    tx.commit().await?;
    let created = domain::created(&customer, Some(customers::location(id)))?;
    Ok((
        StatusCode::CREATED,
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (LOCATION, customers::location(id)),
        ],
        created.body,
    )
        .into_response())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { serve: args } = Cli::parse();
    let _log = accubooks::cli::init_logging(args.log_format);
    let bind: SocketAddr = args.bind;
    // The application is built (state, pool, jobs) but its own listener is never served.
    let unused = TcpListener::bind(("127.0.0.1", 0)).await?;
    let application = Application::build_on(args, unused).await?;
    let state = application.state().clone();
    let routes = Router::new()
        .route("/api/customers", post(create_customer_ungated))
        .route("/admin/companies", post(admin::create_company))
        .route("/healthz", get(health::healthz));
    let router = app::with_middleware(routes, state.clone());
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("failed to bind {bind}"))?;
    tracing::info!(address = %bind, "ungated bench server listening");
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        accubooks::cli::shutdown_signal().await;
        shutdown.cancel();
    });
    accubooks::serve::serve(
        listener,
        router,
        &state.config.limits,
        state.shutdown.clone(),
    )
    .await;
    state.db.close().await;
    drop(application);
    Ok(())
}
