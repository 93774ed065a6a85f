//! [`Write`]: the extractor that makes an operation's handler an ordinary axum handler.
//!
//! Invariants:
//! - Extracting reads nothing: the body, content type, key and JSON are checked when the
//!   handler calls [`Write::run`] or [`Write::json`], so a handler can refuse a caller
//!   (401, 403) before any of them, as the contract orders.
//! - A `Write` exists only on a route mounted with
//!   [`MutationRouter::operation`](crate::MutationRouter::operation): the route tells it
//!   which operation it runs, so a handler cannot run another operation's write.

use axum::extract::{FromRef, FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::execute::Idem;
use crate::http::{FieldError, Problem, Writer};
use crate::operation::Operation;
use crate::registry::{Mounted, OperationDef};

/// One request to an idempotent operation, not yet read.
///
/// Take it as the handler's last argument (it owns the body), decide who writes, and
/// hand it the operation:
///
/// ```
/// # use idem::{Created, ExecCtx, Idem, Operation, Problem, Write, Writer};
/// # struct CreateNote(NewNote);
/// # #[derive(serde::Deserialize)] struct NewNote { text: String }
/// # impl Operation for CreateNote {
/// #     type Error = Problem;
/// #     async fn execute(&self, _: &mut ExecCtx<'_>) -> Result<Created, Problem> {
/// #         Ok(Created::bytes(b"{}".to_vec()))
/// #     }
/// # }
/// async fn create_note(write: Write) -> axum::response::Response {
///     write.json(Writer::tenant("demo"), CreateNote).await
/// }
/// ```
#[derive(Debug)]
pub struct Write {
    idem: Idem,
    def: &'static OperationDef,
    req: Request,
}

impl<S> FromRequest<S> for Write
where
    Idem: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let Some(Mounted(def)) = req.extensions().get::<Mounted>().copied() else {
            tracing::error!(
                path = req.uri().path(),
                "a handler takes idem::Write on a route not mounted with MutationRouter::operation"
            );
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred",
            ));
        };
        Ok(Self {
            idem: Idem::from_ref(state),
            def,
            req,
        })
    }
}

impl Write {
    /// The operation this route runs.
    pub fn operation(&self) -> &'static OperationDef {
        self.def
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.req.headers()
    }

    /// The request itself, for a handler that must look at the body before the write
    /// (what it leaves in the body is what the write reads).
    pub fn request_mut(&mut self) -> &mut Request {
        &mut self.req
    }

    /// Runs the write for `writer`: checks the body (size, content type), the
    /// `Idempotency-Key` and the JSON, then executes `make(body)` once for the key, or
    /// answers with the key's first answer. The operation validates the body itself
    /// (its failures are executions that commit nothing).
    pub async fn run<O, F>(self, writer: Writer, make: F) -> Response
    where
        O: Operation + 'static,
        O::Error: IntoResponse,
        F: FnOnce(Value) -> O,
    {
        self.idem
            .handle(self.def, writer, self.req, |body| Ok(make(body)))
            .await
    }

    /// As [`run`](Self::run), with the body deserialized as `T` first: a body that is
    /// not a `T` is refused with `422 validation_failed` before anything executes.
    pub async fn json<T, O, F>(self, writer: Writer, make: F) -> Response
    where
        T: DeserializeOwned,
        O: Operation + 'static,
        O::Error: IntoResponse,
        F: FnOnce(T) -> O,
    {
        self.idem
            .handle(self.def, writer, self.req, |body| {
                serde_json::from_value(body)
                    .map(make)
                    .map_err(|e| Problem::validation(vec![FieldError::new("", e.to_string())]))
            })
            .await
    }
}
