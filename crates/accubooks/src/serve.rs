//! Serving HTTP/1.1 with limits against slow and hostile clients.
//!
//! Invariants:
//! - A client has `--header-timeout` to send a request's headers, and an idle keep-alive
//!   connection is closed after the same time (hyper's header read timer runs from the
//!   moment the connection waits for a request).
//! - A request's body must arrive within `--body-timeout` of its headers, in total (a
//!   trickle of one byte at a time does not reset it); a late body fails to read and the
//!   request is refused without writing anything.
//! - At most `--max-connections` connections are open; further clients wait in the
//!   listen backlog. Idle connections cost a task each, never a request slot.
//! - At most `--max-in-flight` requests are served at once; past it a request is
//!   answered at once with `503 service_unavailable` and `Retry-After: 5` instead of
//!   queueing without bound. `/healthz`, `/readyz` and `/metrics` are never refused.
//! - On shutdown the listener stops accepting, idle connections close, and in-flight
//!   requests finish (the caller bounds the drain).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use idem::Problem;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::LimitArgs;

/// Accepts connections on `listener` and serves `router` on each until `shutdown` is
/// cancelled; then stops accepting and waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &LimitArgs,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout, malformed request).
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A failed accept: per-connection errors are the client's; running out of file
/// descriptors is the server's, and retrying at once would spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing for 100ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Routes that are never refused for load: probes and metrics must answer under
/// overload, or the node looks dead exactly when it is busiest.
fn never_shed(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Middleware: at most the semaphore's permits of requests in flight; the rest get
/// `503 service_unavailable` with `Retry-After: 5` at once.
pub async fn limit_in_flight(slots: Arc<Semaphore>, req: Request, next: Next) -> Response {
    if never_shed(req.uri().path()) {
        return next.run(req).await;
    }
    match slots.try_acquire_owned() {
        Ok(permit) => {
            let res = next.run(req).await;
            drop(permit);
            res
        }
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the server is at its limit of requests in flight; nothing was written; retry shortly",
        )
        .retry_after(5)
        .into_response(),
    }
}

/// Middleware: the request body must arrive within `timeout` of the headers, in total.
pub async fn limit_body_time(timeout: Duration, req: Request, next: Next) -> Response {
    use http_body::Body as _;
    // Most reads have no body at all: no timer for them.
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        })
    });
    next.run(req).await
}

/// The body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub struct BodyTimedOut;

/// A body that fails once its deadline passes (unlike a per-frame timeout, a trickle of
/// small frames does not extend it).
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
