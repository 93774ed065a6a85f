//! The company's webhook signing secret: `GET /api/company/webhook-secret` (admins) and
//! `rotateWebhookSecret` (`POST /api/company/webhook-secret/rotate`, admins, gated).
//!
//! Invariants: a company has at most one current secret (`webhook_secrets`, keyed by
//! company), created on first use; a rotation replaces it in the rotation's transaction
//! and bumps `version`, so deliveries that start after the commit sign with the new one.
//! The record of a rotation is `webhook_secret_rotations` (no secret in it).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use idem::{on_db, on_tx, Created, Db, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::web::ok_json;
use crate::workflows::signature;

/// The secret as the endpoints render it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
#[schema(as = WebhookSecret)]
pub struct Secret {
    secret: String,
    version: i32,
    created_at: Ts,
}

async fn ensure(tx: &mut Tx, company: Uuid) -> Result<Secret, sqlx::Error> {
    on_tx!(tx, |c| sqlx::query(
        "insert into webhook_secrets (company_id, secret, version, created_at) \
         values ($1, $2, 1, $3) on conflict (company_id) do nothing"
    )
    .bind(Id(company))
    .bind(signature::new_secret())
    .bind(Ts::now())
    .execute(c)
    .await
    .map(|_| ()))?;
    let sql = format!(
        "select secret, version, created_at from webhook_secrets where company_id = $1{}",
        tx.for_update()
    );
    on_tx!(tx, |c| sqlx::query_as::<_, Secret>(&sql)
        .bind(Id(company))
        .fetch_one(c)
        .await)
}

async fn current_row(db: &Db, company: Uuid) -> Result<Secret, sqlx::Error> {
    let found = on_db!(db, |c| sqlx::query_as::<_, Secret>(
        "select secret, version, created_at from webhook_secrets where company_id = $1"
    )
    .bind(Id(company))
    .fetch_optional(c)
    .await)?;
    if let Some(s) = found {
        return Ok(s);
    }
    // First use writes the secret: in a task of its own, so a reader that goes away
    // cannot leave the transaction half-done.
    let db = db.clone();
    idem::db::detached(async move {
        let mut tx = db.begin().await?;
        let s = ensure(&mut tx, company).await?;
        tx.commit().await?;
        Ok(s)
    })
    .await
}

/// The company's current signing secret (created on first use).
pub async fn current(db: &Db, company: Uuid) -> Result<String, sqlx::Error> {
    Ok(current_row(db, company).await?.secret)
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    res
}

/// Handles `GET /api/company/webhook-secret` (admins).
#[utoipa::path(
    get,
    path = "/api/company/webhook-secret",
    operation_id = "getWebhookSecret",
    tag = "Workflows",
    summary = "Get the webhook signing secret (admins)",
    responses((status = 200, description = "The current secret (created on first use), with `Cache-Control: no-store`.", body = Secret))
)]
pub async fn get_secret(State(state): State<AppState>, tenant: Tenant) -> AppResult<Response> {
    tenant.require(Need::Admin)?;
    let s = current_row(&state.db, tenant.company_id).await?;
    Ok(no_store(ok_json(&s)))
}

struct RotateSecret {
    company: Uuid,
    body: Value,
}

impl Operation for RotateSecret {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp =
            super::record_fingerprint(tx, "webhook_secret_rotations", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let s = ensure(tx, self.company).await?;
        super::existing(fp, &s, None).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        super::parse_empty(&self.body)?;
        let old = ensure(ctx.tx(), self.company).await?;
        let s = Secret {
            secret: signature::new_secret(),
            version: old.version.saturating_add(1),
            created_at: ctx.now(),
        };
        let (id, fp) = (ctx.id(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "update webhook_secrets set secret = $1, version = $2, created_at = $3 \
             where company_id = $4"
        )
        .bind(&s.secret)
        .bind(s.version)
        .bind(s.created_at)
        .bind(Id(self.company))
        .execute(c)
        .await
        .map(|_| ()))?;
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into webhook_secret_rotations (company_id, id, version, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(s.version)
        .bind(&fp)
        .bind(s.created_at)
        .execute(c)
        .await
        .map(|_| ()))?;
        super::created(&s, None)
    }
}

/// Handles `POST /api/company/webhook-secret/rotate` (admins).
#[utoipa::path(
    post,
    path = crate::ops::ROTATE_WEBHOOK_SECRET.route(),
    operation_id = crate::ops::ROTATE_WEBHOOK_SECRET.name(),
    tag = "Workflows",
    summary = "Rotate the webhook signing secret",
    description = "Replaces the company's webhook signing secret (`version` + 1); \
                      deliveries that start after the commit are signed with the new one. The \
                      body may be empty or `{}`. The response (and its replays) carry the new \
                      secret with `Cache-Control: no-store`. The record is the rotation.",
    request_body = super::EmptyIn,
    responses((status = 201, body = crate::domain::webhook_secret::Secret))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    let res = super::gated(&state, tenant, Need::Admin, write, |body| RotateSecret {
        company,
        body,
    })
    .await;
    no_store(res.into_response())
}
