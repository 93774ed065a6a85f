//! `POST /notes` runs once per `Idempotency-Key`, `GET /notes/{id}` reads; on SQLite. Run it,
//! then twice: `curl -i localhost:3000/notes -H 'Content-Type: application/json'
//! -H 'Idempotency-Key: note-1' -d '{"text":"hello"}'` (201, then the same answer as 200).

use axum::{extract::Path, extract::State, Json};
use idem::{on_db, on_tx, Created, Db, ExecCtx, Id, Idem, MutationRouter};
use idem::{Operation, OperationDef, Problem, Write, Writer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

static CREATE_NOTE: OperationDef = OperationDef::post("createNote", "/notes").tables(&["notes"]);
const TENANT: &str = "demo"; // a real service takes it from the caller's credentials

#[derive(Deserialize, Serialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
struct Note {
    #[serde(skip_deserializing)]
    id: Option<Id>,
    text: String,
}

impl Operation for Note {
    type Error = Problem;

    /// Runs once per key, in the transaction that also records the answer.
    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> Result<Created, Problem> {
        if self.text.trim().is_empty() || self.text.chars().count() > 1000 {
            return Err(Problem::invalid("text", "1 to 1000 characters"));
        }
        let (id, text) = (Some(Id(ctx.id())), self.text.clone());
        let tenant = ctx.tenant().to_owned();
        let sql = "insert into notes (tenant, id, text) values ($1, $2, $3)";
        on_tx!(ctx.tx(), |c| sqlx::query(sql)
            .bind(&tenant)
            .bind(id)
            .bind(&text)
            .execute(c)
            .await
            .map(drop))?;
        Ok(Created::json(&Note { id, text })?.location(format!("/notes/{}", ctx.id())))
    }
}

async fn create_note(write: Write) -> axum::response::Response {
    write.json(Writer::tenant(TENANT), |note: Note| note).await
}

async fn get_note(State(idem): State<Idem>, Path(id): Path<Uuid>) -> Result<Json<Note>, Problem> {
    let sql = "select id, text from notes where tenant = $1 and id = $2";
    on_db!(idem.db(), |c| sqlx::query_as(sql)
        .bind(TENANT)
        .bind(Id(id))
        .fetch_optional(c)
        .await)?
    .map(Json)
    .ok_or_else(|| Problem::not_found("no such note"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::var("NOTES_DB").unwrap_or_else(|_| "notes.db".to_owned());
    let db = Db::connect(&format!("sqlite://{file}"), &Default::default()).await?;
    idem::migrate::IDEM.run(&db).await?;
    let table = "create table if not exists notes (tenant, id, text, primary key (tenant, id))";
    on_db!(&db, |c| sqlx::query(table).execute(c).await.map(drop))?;

    let idem = Idem::builder(db).build();
    let (router, _) = MutationRouter::new()
        .operation(&CREATE_NOTE, create_note)
        .read("/notes/{id}", get_note)
        .finish()?;
    let app = router.layer(axum::middleware::from_fn(idem::http::request_id_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app.with_state(idem.clone()))
        .with_graceful_shutdown(async { _ = tokio::signal::ctrl_c().await })
        .await?;
    idem.shutdown().await; // running writes finish, the audit queue is written
    Ok(())
}
