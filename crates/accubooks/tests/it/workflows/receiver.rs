//! A local webhook receiver on 127.0.0.1 (tests never reach further than loopback): it
//! records every request, answers as its [`Mode`] says, and counts overlaps — a request
//! arriving while another with the same `Idempotency-Key` is still being handled.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// 200 to everything.
    Ok,
    /// 500 to the first `n` requests of each key, then 200.
    FailFirst(usize),
    /// 500 always.
    AlwaysFail,
    /// The first request of each key hangs (until the client goes away); then 200.
    HangFirst,
    /// 302 to another path, always.
    Redirect,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub key: String,
    pub signature: String,
    pub body: Bytes,
}

struct Inner {
    mode: Mode,
    delay: Duration,
    hits: Mutex<Vec<Hit>>,
    per_key: Mutex<HashMap<String, usize>>,
    in_flight: Mutex<HashSet<String>>,
    overlaps: AtomicUsize,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

struct Flight(Arc<Inner>, String);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.lock().remove(&self.1);
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let key = header("idempotency-key");
    inner.hits.lock().push(Hit {
        path: uri.path().to_owned(),
        key: key.clone(),
        signature: header("accubooks-signature"),
        body,
    });
    let nth = {
        let mut m = inner.per_key.lock();
        let n = m.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if !inner.in_flight.lock().insert(key.clone()) {
        inner.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    let _flight = Flight(inner.clone(), key);
    tokio::time::sleep(inner.delay).await;
    match inner.mode {
        Mode::Ok => StatusCode::OK.into_response(),
        Mode::FailFirst(n) if nth <= n => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::FailFirst(_) => StatusCode::OK.into_response(),
        Mode::AlwaysFail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::HangFirst if nth == 1 => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::OK.into_response()
        }
        Mode::HangFirst => StatusCode::OK.into_response(),
        Mode::Redirect => (StatusCode::FOUND, [("location", "/elsewhere")]).into_response(),
    }
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        Self::start_with(mode, Duration::ZERO).await
    }

    /// A receiver that holds each request `delay` before answering.
    pub async fn start_with(mode: Mode, delay: Duration) -> Receiver {
        let inner = Arc::new(Inner {
            mode,
            delay,
            hits: Mutex::default(),
            per_key: Mutex::default(),
            in_flight: Mutex::default(),
            overlaps: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().clone()
    }

    pub fn overlaps(&self) -> usize {
        self.inner.overlaps.load(Ordering::SeqCst)
    }

    /// Requests per `Idempotency-Key`.
    pub fn per_key(&self) -> HashMap<String, usize> {
        self.inner.per_key.lock().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
