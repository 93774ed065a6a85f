//! The application state shared by every handler.

use std::sync::Arc;

use idem::{Db, Idem};
use tokio_util::sync::CancellationToken;

use crate::auth::AuthCache;
use crate::config::ServeArgs;
use crate::jobs::JobHealth;

/// Everything a handler needs, behind one reference count: axum clones the state for
/// every request and every layer that extracts it, so a clone must cost one increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// The store.
    pub db: Db,
    /// The exactly-once engine behind every operation.
    pub idem: Idem,
    /// Settings.
    pub config: ServeArgs,
    /// This app's metrics registry (never a global).
    pub metrics: prometheus_client::registry::Registry,
    /// Token cache.
    pub auth: AuthCache,
    /// SHA-256 of the operator token.
    pub operator_hash: String,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Background job status (prune, audit).
    pub jobs: JobHealth,
    /// HTTP metrics.
    pub http_metrics: crate::web::HttpMetrics,
    /// The workflow worker's wake-up call and the outbox metrics.
    pub outbox: crate::workflows::OutboxHandle,
}

impl AppState {
    /// Shares `shared` with every handler.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl axum::extract::FromRef<AppState> for Idem {
    fn from_ref(state: &AppState) -> Idem {
        state.idem.clone()
    }
}
