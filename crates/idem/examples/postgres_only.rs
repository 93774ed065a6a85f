//! idem on PostgreSQL alone (one sqlx driver): `POST /notes` is an exactly-once
//! operation whose record also answers retries that come after the key expired.
//!
//! `DATABASE_URL=postgres://… cargo run -p idem --no-default-features --features postgres
//! --example postgres_only`, then post the same note twice:
//! `curl -i localhost:3000/notes -H 'Content-Type: application/json'
//! -H 'Idempotency-Key: note-1' -d '{"text":"hello"}'`.

use idem::{on_db, on_tx, Created, Db, ExecCtx, Existing, Id, Idem, MutationRouter, Operation};
use idem::{OperationDef, Problem, Tx, Write, Writer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

static CREATE_NOTE: OperationDef = OperationDef::post("createNote", "/notes").tables(&["notes"]);

/// The service's own table; idem's come from `idem::migrate::IDEM`.
const NOTES_TABLE: &str = "create table if not exists notes (
    tenant text not null, id uuid not null, text text not null,
    request_fingerprint text not null, primary key (tenant, id))";

#[derive(Deserialize, Serialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
struct Note {
    #[serde(skip_deserializing)]
    id: Option<Id>,
    text: String,
}

#[derive(sqlx::FromRow)]
struct Stored {
    request_fingerprint: String,
    #[sqlx(flatten)]
    note: Note,
}

impl Operation for Note {
    type Error = Problem;

    /// A retry after the key's record expired finds the note by its deterministic id.
    async fn find_existing(
        &self,
        tx: &mut Tx,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<Existing>, Problem> {
        let sql = "select request_fingerprint, id, text from notes where tenant = $1 and id = $2";
        let row: Option<Stored> = on_tx!(tx, |c| sqlx::query_as(sql)
            .bind(tenant)
            .bind(Id(id))
            .fetch_optional(c)
            .await)?;
        row.map(|r| {
            Ok(Existing::json(r.request_fingerprint, &r.note)?.location(format!("/notes/{id}")))
        })
        .transpose()
    }

    /// Inserts the note with id = `ctx.id()`, keeping `ctx.fingerprint()` for the above.
    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> Result<Created, Problem> {
        if self.text.trim().is_empty() || self.text.chars().count() > 1000 {
            return Err(Problem::invalid("text", "1 to 1000 characters"));
        }
        let note = Note {
            id: Some(Id(ctx.id())),
            text: self.text.clone(),
        };
        let (tenant, fingerprint) = (ctx.tenant().to_owned(), ctx.fingerprint().to_owned());
        let sql =
            "insert into notes (tenant, id, text, request_fingerprint) values ($1, $2, $3, $4)";
        on_tx!(ctx.tx(), |c| sqlx::query(sql)
            .bind(&tenant)
            .bind(note.id)
            .bind(&note.text)
            .bind(&fingerprint)
            .execute(c)
            .await
            .map(drop))?;
        Ok(Created::json(&note)?.location(format!("/notes/{}", ctx.id())))
    }
}

async fn create_note(write: Write) -> axum::response::Response {
    // A real service takes the tenant from the caller's credentials.
    write.json(Writer::tenant("demo"), |note: Note| note).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL=postgres://…")?;
    let db = Db::connect(&url, &Default::default()).await?;
    idem::migrate::IDEM.run(&db).await?;
    on_db!(&db, |c| sqlx::query(NOTES_TABLE).execute(c).await.map(drop))?;

    let idem = Idem::builder(db)
        .lease(std::time::Duration::from_secs(10))
        .build();
    let (router, _) = MutationRouter::new()
        .operation(&CREATE_NOTE, create_note)
        .finish()?;
    let app = router.layer(axum::middleware::from_fn(idem::http::request_id_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app.with_state(idem.clone()))
        .with_graceful_shutdown(async { _ = tokio::signal::ctrl_c().await })
        .await?;
    idem.shutdown().await;
    Ok(())
}
