//! A complete service adopting idem: `POST /notes` is an exactly-once operation
//! (`createNote`), `GET /notes/{id}` an ordinary read, on a SQLite file.
//!
//! Run it with `cargo run -p idem --example notes` (set `NOTES_DB` to choose the file,
//! `NOTES_BIND` the address), then follow the curl commands it prints. Ctrl-C stops it
//! gracefully: in-flight requests finish and the audit queue is flushed.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use idem::telemetry::{AuditQueue, Metrics};
use idem::{
    on_db, on_tx, Created, Db, Engine, EngineConfig, ExecCtx, Existing, FieldError, Gate, Id,
    MutationRouter, NoEmitter, Operation, OperationDef, OperationType, Problem, Registry, Ts, Tx,
    Writer,
};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The one idempotent operation of this service.
static CREATE_NOTE: OperationDef = OperationDef {
    name: "createNote",
    kind: OperationType::HighRisk,
    method: Method::POST,
    route: "/notes",
    tables: &["notes"],
    ttl: None,
    empty_body_is_empty_object: false,
};

/// The service's own table; idem's tables come from `idem::migrate::IDEM`.
const NOTES_TABLE: &str = "create table if not exists notes (
    tenant              text    not null,
    id                  text    not null,
    text                text    not null,
    request_fingerprint text    not null,
    created_at          integer not null,
    primary key (tenant, id)
)";

/// A note, as both endpoints render it.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Note {
    id: Id,
    text: String,
    created_at: Ts,
}

/// The note row together with the fingerprint of the request that created it.
#[derive(sqlx::FromRow)]
struct NoteRow {
    request_fingerprint: String,
    #[sqlx(flatten)]
    note: Note,
}

/// Everything a request of this service can fail with.
#[derive(Debug)]
enum NoteError {
    Validation(Vec<FieldError>),
    NotFound,
    Db(sqlx::Error),
    Internal(String),
}

impl From<sqlx::Error> for NoteError {
    fn from(e: sqlx::Error) -> Self {
        NoteError::Db(e)
    }
}

impl idem::OperationError for NoteError {
    fn error_type(&self) -> &'static str {
        match self {
            NoteError::Validation(_) => "validation",
            NoteError::NotFound => "not_found",
            NoteError::Db(_) | NoteError::Internal(_) => "internal",
        }
    }

    fn audit_message(&self) -> String {
        match self {
            NoteError::Validation(errors) => format!("{} invalid fields", errors.len()),
            NoteError::NotFound => "not found".to_owned(),
            NoteError::Db(_) => "database error".to_owned(),
            NoteError::Internal(e) => e.clone(),
        }
    }
}

impl IntoResponse for NoteError {
    fn into_response(self) -> Response {
        match self {
            NoteError::Validation(errors) => Problem::validation(errors).into_response(),
            NoteError::NotFound => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", "no such note").into_response()
            }
            NoteError::Db(e) => idem::http::store_error(&e).into_response(),
            NoteError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred",
                )
                .into_response()
            }
        }
    }
}

fn location(id: Uuid) -> String {
    format!("/notes/{id}")
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, NoteError> {
    serde_json::to_vec(value).map_err(|e| NoteError::Internal(format!("serialize: {e}")))
}

/// `{"text": "…"}`: a non-empty string of at most 1,000 characters, nothing else.
fn parse_text(body: &Value) -> Result<String, NoteError> {
    let invalid =
        |field: &str, message: &str| NoteError::Validation(vec![FieldError::new(field, message)]);
    let Some(obj) = body.as_object() else {
        return Err(invalid("", "must be an object"));
    };
    if let Some(unknown) = obj.keys().find(|k| k.as_str() != "text") {
        return Err(invalid(unknown, "unknown field"));
    }
    match obj.get("text").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() && t.chars().count() <= 1000 => Ok(t.to_owned()),
        _ => Err(invalid("text", "required, 1 to 1000 characters")),
    }
}

/// `createNote`, executed by the engine inside its transaction.
struct CreateNote(Value);

impl Operation for CreateNote {
    type Error = NoteError;

    /// A retry after the key's record expired finds the note by its deterministic id.
    async fn find_existing(
        &self,
        tx: &mut Tx,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<Existing>, NoteError> {
        let row = on_tx!(tx, |c| sqlx::query_as::<_, NoteRow>(
            "select request_fingerprint, id, text, created_at from notes \
             where tenant = $1 and id = $2"
        )
        .bind(tenant)
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
        row.map(|r| {
            Ok(Existing {
                fingerprint: r.request_fingerprint,
                body: to_json(&r.note)?,
                location: Some(location(id)),
            })
        })
        .transpose()
    }

    /// Inserts the note with id = `ctx.id()`, keeping `ctx.fingerprint()`.
    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> Result<Created, NoteError> {
        let note = Note {
            id: Id(ctx.id()),
            text: parse_text(&self.0)?,
            created_at: ctx.now(),
        };
        let (tenant, fingerprint) = (ctx.tenant().to_owned(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into notes (tenant, id, text, request_fingerprint, created_at) \
             values ($1, $2, $3, $4, $5)"
        )
        .bind(&tenant)
        .bind(note.id)
        .bind(&note.text)
        .bind(&fingerprint)
        .bind(note.created_at)
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(Created {
            body: to_json(&note)?,
            location: Some(location(note.id.0)),
        })
    }
}

/// The tenant of a request. A real service takes it from the caller's credentials;
/// here it is the `X-Tenant` header (lowercase), `demo` when absent.
fn tenant_of(req: &Request) -> String {
    req.headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .unwrap_or("demo")
        .to_ascii_lowercase()
}

/// Handles `POST /notes`.
async fn create_note(State(gate): State<Gate>, req: Request) -> Response {
    let writer = Writer {
        tenant: tenant_of(&req),
        user_id: None,
    };
    gate.handle(&CREATE_NOTE, writer, req, CreateNote).await
}

/// Handles `GET /notes/{id}`.
async fn get_note(
    State(gate): State<Gate>,
    Path(id): Path<Uuid>,
    req: Request,
) -> Result<Response, NoteError> {
    let tenant = tenant_of(&req);
    let note = on_db!(gate.engine().db(), |c| sqlx::query_as::<_, Note>(
        "select id, text, created_at from notes where tenant = $1 and id = $2"
    )
    .bind(&tenant)
    .bind(Id(id))
    .fetch_optional(c)
    .await)?
    .ok_or(NoteError::NotFound)?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        to_json(&note)?,
    )
        .into_response())
}

async fn migrate(db: &Db) -> Result<(), Box<dyn std::error::Error>> {
    idem::migrate::IDEM.run(db).await?;
    on_db!(db, |c| sqlx::query(NOTES_TABLE)
        .execute(c)
        .await
        .map(|_| ()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // idem logs one `idem::write` event per write; show them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let path = std::env::var("NOTES_DB").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("idem-notes.db")
            .display()
            .to_string()
    });
    let bind = std::env::var("NOTES_BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    // The store, idem's tables and ours.
    let db = Db::connect(&format!("sqlite://{path}"), &Default::default()).await?;
    migrate(&db).await?;

    // The engine: metrics in our own registry, the batched audit writer, a shutdown token.
    let shutdown = CancellationToken::new();
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut prometheus));
    let audit_stop = CancellationToken::new();
    let (audit, audit_writer) =
        AuditQueue::start(db.clone(), metrics.clone(), 10_000, audit_stop.clone());
    let engine = Engine::new(
        db.clone(),
        EngineConfig::default(),
        metrics,
        audit,
        Arc::new(NoEmitter),
        shutdown.clone(),
    );

    // Routes: mutating handlers can only be mounted through the registry, and `finish`
    // fails when a registered operation has no route.
    let (router, _registry) = MutationRouter::new(Registry::new().operation(&CREATE_NOTE))
        .operation("createNote", create_note)
        .read("/notes/{id}", get_note)
        .finish()?;
    let app = router
        .layer(middleware::from_fn(idem::http::request_id_layer))
        .with_state(Gate::new(engine));

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let addr = listener.local_addr()?;
    println!(
        "notes: listening on http://{addr} (SQLite file {path})\n\n\
         Create a note (run it twice: the second answer is the same note, replayed):\n\n    \
         curl -i -X POST http://{addr}/notes -H 'Content-Type: application/json' \
         -H 'Idempotency-Key: note-1' -d '{{\"text\":\"hello\"}}'\n\n\
         Same key, another body (422 idempotency_key_reused):\n\n    \
         curl -i -X POST http://{addr}/notes -H 'Content-Type: application/json' \
         -H 'Idempotency-Key: note-1' -d '{{\"text\":\"bye\"}}'\n\n\
         Read it back with the Location header of the first answer: curl -i http://{addr}/notes/ID\n"
    );
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await?;
    audit_stop.cancel();
    audit_writer.finish().await;
    db.close().await;
    Ok(())
}
