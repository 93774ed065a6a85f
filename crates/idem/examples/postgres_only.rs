//! A service adopting idem on PostgreSQL alone, built without the `sqlite` feature (one
//! sqlx driver): `POST /notes` is an exactly-once operation (`createNote`).
//!
//! Run it with
//! `DATABASE_URL=postgres://… cargo run -p idem --no-default-features --features postgres --example postgres_only`
//! (`NOTES_BIND` chooses the address), then post the same note twice:
//! `curl -i -X POST http://127.0.0.1:3000/notes -H 'Content-Type: application/json'
//! -H 'Idempotency-Key: note-1' -d '{"text":"hello"}'`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::Method;
use idem::telemetry::{AuditQueue, Metrics};
use idem::{
    on_db, on_tx, Created, Db, Engine, EngineConfig, ExecCtx, Existing, Gate, Id, MutationRouter,
    NoEmitter, Operation, OperationDef, OperationType, Registry, Tx, Writer,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

static CREATE_NOTE: OperationDef = OperationDef {
    name: "createNote",
    kind: OperationType::HighRisk,
    method: Method::POST,
    route: "/notes",
    tables: &["notes"],
    ttl: None,
    empty_body_is_empty_object: false,
};

/// The service's own table (PostgreSQL types); idem's come from `idem::migrate::IDEM`.
const NOTES_TABLE: &str = "create table if not exists notes (
    tenant              text        not null,
    id                  uuid        not null,
    body                jsonb       not null,
    request_fingerprint text        not null,
    created_at          timestamptz not null default now(),
    primary key (tenant, id)
)";

#[derive(Debug)]
struct NoteError(sqlx::Error);

impl From<sqlx::Error> for NoteError {
    fn from(e: sqlx::Error) -> Self {
        NoteError(e)
    }
}

impl idem::OperationError for NoteError {
    fn error_type(&self) -> &'static str {
        "internal"
    }

    fn audit_message(&self) -> String {
        "database error".to_owned()
    }
}

impl IntoResponse for NoteError {
    fn into_response(self) -> Response {
        idem::http::store_error(&self.0).into_response()
    }
}

/// `createNote`: stores the request's JSON body as the note.
struct CreateNote(Value);

impl Operation for CreateNote {
    type Error = NoteError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<Existing>, NoteError> {
        let row: Option<(String, sqlx::types::Json<Value>)> = on_tx!(tx, |c| sqlx::query_as(
            "select request_fingerprint, body from notes where tenant = $1 and id = $2"
        )
        .bind(tenant)
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
        Ok(row.map(|(fingerprint, body)| Existing {
            fingerprint,
            body: json!({ "id": id, "note": body.0 }).to_string().into_bytes(),
            location: None,
        }))
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> Result<Created, NoteError> {
        let (id, tenant, fingerprint) = (
            ctx.id(),
            ctx.tenant().to_owned(),
            ctx.fingerprint().to_owned(),
        );
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into notes (tenant, id, body, request_fingerprint) values ($1, $2, $3, $4)"
        )
        .bind(&tenant)
        .bind(Id(id))
        .bind(sqlx::types::Json(&self.0))
        .bind(&fingerprint)
        .execute(c)
        .await
        .map(|_| ()))?;
        Ok(Created {
            body: json!({ "id": id, "note": self.0 }).to_string().into_bytes(),
            location: None,
        })
    }
}

/// Handles `POST /notes`.
async fn create_note(State(gate): State<Gate>, req: Request) -> Response {
    let writer = Writer {
        tenant: "demo".to_owned(),
        user_id: None,
    };
    gate.handle(&CREATE_NOTE, writer, req, CreateNote).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL=postgres://…")?;
    let bind = std::env::var("NOTES_BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    // idem's tables (bookkept in idem_migrations), then ours.
    let db = Db::connect(&url, &Default::default()).await?;
    idem::migrate::IDEM.run(&db).await?;
    on_db!(&db, |c| sqlx::query(NOTES_TABLE)
        .execute(c)
        .await
        .map(|_| ()))?;

    let shutdown = CancellationToken::new();
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut prometheus));
    // The audit writer stops after the server, so the last requests' rows are written.
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
    let (router, _registry) = MutationRouter::new(Registry::new().operation(&CREATE_NOTE))
        .operation("createNote", create_note)
        .finish()?;
    let app = router.with_state(Gate::new(engine));

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!(
        "postgres_only: listening on http://{}",
        listener.local_addr()?
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
