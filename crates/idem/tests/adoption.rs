#![cfg(feature = "sqlite")]
//! What an adopting service sees: the builder, the `Write` extractor on a route mounted
//! by its definition, replays, refusals, and metric names under a prefix.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use idem::{on_db, on_tx, Created, Db, ExecCtx, Id, Idem, MutationRouter, Operation};
use idem::{OperationDef, Problem, Write, Writer};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

static CREATE_NOTE: OperationDef = OperationDef::post("createNote", "/notes").kind("demo");

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Note {
    text: String,
}

impl Operation for Note {
    type Error = Problem;

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> Result<Created, Problem> {
        let (id, tenant) = (Id(ctx.id()), ctx.tenant().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into notes (tenant, id, text) values ($1, $2, $3)"
        )
        .bind(&tenant)
        .bind(id)
        .bind(&self.text)
        .execute(c)
        .await
        .map(drop))?;
        Ok(Created::json(self)?.location(format!("/notes/{}", ctx.id())))
    }
}

async fn create_note(write: Write) -> Response {
    write.json(Writer::tenant("T-1"), |note: Note| note).await
}

/// A handler that takes `Write` on a route not mounted as an operation.
async fn misplaced(write: Write) -> Response {
    write.json(Writer::tenant("t-1"), |note: Note| note).await
}

async fn store() -> (Db, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("idem-adoption-{}.db", uuid::Uuid::new_v4()));
    let db = Db::connect(&format!("sqlite://{}", path.display()), &Default::default())
        .await
        .expect("connect");
    idem::migrate::IDEM.run(&db).await.expect("migrate");
    on_db!(&db, |c| sqlx::query(
        "create table notes (tenant text, id text, text text, primary key (tenant, id))"
    )
    .execute(c)
    .await
    .map(drop))
    .expect("table");
    (db, path)
}

async fn notes(db: &Db) -> i64 {
    on_db!(db, |c| sqlx::query_scalar::<_, i64>(
        "select count(*) from notes"
    )
    .fetch_one(c)
    .await)
    .expect("count")
}

fn post(uri: &str, key: &str, body: &'static str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body))
        .expect("request")
}

async fn answer(router: &axum::Router, req: Request<Body>) -> (StatusCode, String, String) {
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        replayed,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn a_handler_with_the_extractor_runs_once_per_key_and_replays_the_first_answer() {
    let (db, path) = store().await;
    let idem = Idem::builder(db.clone()).tenancy("team").build();
    let (router, registry) = MutationRouter::new()
        .operation(&CREATE_NOTE, create_note)
        .finish()
        .expect("router");
    assert_eq!(registry.operations()[0].name(), "createNote");
    let router = router.with_state(idem.clone());

    let first = answer(&router, post("/notes", "k1", r#"{"text":"hello"}"#)).await;
    assert_eq!(
        (first.0, first.1.as_str()),
        (StatusCode::CREATED, "false"),
        "{first:?}"
    );
    let again = answer(&router, post("/notes", "k1", r#"{ "text" : "hello" }"#)).await;
    assert_eq!((again.0, again.1.as_str()), (StatusCode::OK, "true"));
    assert_eq!(again.2, first.2, "the replay is the first answer's bytes");
    let other = answer(&router, post("/notes", "k1", r#"{"text":"bye"}"#)).await;
    assert_eq!(other.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(other.2.contains("idempotency_key_reused"), "{}", other.2);
    assert_eq!(notes(&db).await, 1);

    // A body that is not a `Note` is refused before anything runs, and frees nothing.
    let unknown = answer(&router, post("/notes", "k2", r#"{"text":"x","y":1}"#)).await;
    assert_eq!(unknown.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.2.contains("validation_failed"), "{}", unknown.2);
    assert_eq!(notes(&db).await, 1);
    let retried = answer(&router, post("/notes", "k2", r#"{"text":"x"}"#)).await;
    assert_eq!(retried.0, StatusCode::CREATED);

    // The record row's id is the scope's deterministic id under the chosen tenancy, and
    // the tenant is lowercased.
    let id: String = on_db!(&db, |c| sqlx::query_scalar(
        "select id from notes where text = 'hello'"
    )
    .fetch_one(c)
    .await)
    .expect("id");
    assert_eq!(
        id,
        idem::deterministic_id("team", "t-1", "createNote", "k1").to_string()
    );
    idem.shutdown().await;
    db.close().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn the_extractor_on_a_route_not_mounted_as_an_operation_is_a_500_not_a_write() {
    let (db, path) = store().await;
    let idem = Idem::builder(db.clone()).build();
    let router = axum::Router::new()
        .route("/notes", axum::routing::post(misplaced))
        .with_state(idem.clone());
    let res = answer(&router, post("/notes", "k1", r#"{"text":"hello"}"#)).await;
    assert_eq!(res.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(notes(&db).await, 0);
    idem.shutdown().await;
    db.close().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn metrics_carry_the_chosen_prefix_and_the_operations_kind() {
    let (db, path) = store().await;
    let mut registry = prometheus_client::registry::Registry::default();
    let (_, operations) = MutationRouter::<Idem>::new()
        .operation(&CREATE_NOTE, create_note)
        .finish()
        .expect("router");
    let idem = Idem::builder(db.clone())
        .metrics(&mut registry)
        .metric_prefix("notes")
        .operations(&operations)
        .build();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(
            r#"notes_idempotent_writes_total{operation="createNote",type="demo",status="new"} 0"#
        ),
        "{text}"
    );
    assert!(!text.contains("\nidempotent_writes_total"), "{text}");
    idem.shutdown().await;
    db.close().await;
    let _ = std::fs::remove_file(path);
}
