//! Operator endpoints under `/admin/`: companies and tokens (exempt from the gate).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::CACHE_CONTROL;
use http::StatusCode;
use idem::{on_tx, Id, Ts};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::members;
use super::settings;
use crate::auth::{generate_token, hash_token, Operator, Role, COMPANY_TOKEN_PREFIX};
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Validator, NAME_MAX};
use crate::web::{json_body, IdPath};

/// A new company with its first admin and token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CompanyCreated {
    company_id: Id,
    user_id: Id,
    email: String,
    /// Always `admin`.
    role: &'static str,
    /// Bearer token for `/api/`; shown once.
    api_token: String,
}

/// A new company token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenIssued {
    /// Bearer token for `/api/`; shown once.
    api_token: String,
    user_id: Id,
    #[schema(schema_with = crate::domain::members::role_schema)]
    role: String,
}

/// Body of `POST /admin/companies`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompanyIn {
    #[schema(schema_with = fields::text::<NAME_MAX>)]
    name: String,
    #[schema(schema_with = fields::email_or_null)]
    email: Option<String>,
}

fn parse_company(body: &Value) -> AppResult<CompanyIn> {
    let mut v = Validator::new();
    let (name, email) = match v.object(body, "", &["name", "email"]) {
        Some(o) => (
            v.text(o, "", "name", NAME_MAX, true),
            v.email(o, "", "email", false),
        ),
        None => (None, None),
    };
    v.finish()?;
    Ok(CompanyIn {
        name: name.unwrap_or_default(),
        email,
    })
}

/// Body of `POST /admin/companies/{company_id}/tokens`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    #[schema(schema_with = fields::email)]
    email: String,
}

fn parse_token(body: &Value) -> AppResult<TokenIn> {
    let mut v = Validator::new();
    let email = v
        .object(body, "", &["email"])
        .and_then(|o| v.email(o, "", "email", true));
    v.finish()?;
    Ok(TokenIn {
        email: email.unwrap_or_default(),
    })
}

fn no_store<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::CREATED,
            [
                (http::header::CONTENT_TYPE, "application/json"),
                (CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => AppError::Internal(format!("serialize: {e}")).into_response(),
    }
}

async fn insert_token(tx: &mut idem::Tx, company: Uuid, user: Uuid, now: Ts) -> AppResult<String> {
    let token = generate_token(COMPANY_TOKEN_PREFIX);
    on_tx!(tx, |c| {
        sqlx::query(
        "insert into api_tokens (token_hash, company_id, user_id, created_at) values ($1, $2, $3, $4)"
    )
    .bind(hash_token(&token))
    .bind(Id(company))
    .bind(Id(user))
    .bind(now)
    .execute(c)
    .await
        .map(|r| r.rows_affected())
    })?;
    Ok(token)
}

/// Handles `POST /admin/companies`.
#[utoipa::path(
    post,
    path = "/admin/companies",
    operation_id = "createCompany",
    tag = "Operator",
    summary = "Create a company and its first admin",
    description = "Exempt from the idempotency gate (an operator bootstrap action): a retry creates another company. The first admin is `owner@<company_id>` unless `email` is given; the settings start at version 1.",
    security(("operator" = [])),
    request_body = CompanyIn,
    responses((
        status = 201,
        description = "The company, its admin and a company token.",
        body = CompanyCreated
    ))
)]
pub async fn create_company(
    _: Operator,
    State(state): State<AppState>,
    req: Request,
) -> AppResult<Response> {
    let CompanyIn { name, email } = parse_company(&json_body(req).await?)?;
    let company = Uuid::new_v4();
    let user = Uuid::now_v7();
    let email = email.unwrap_or_else(|| format!("owner@{company}"));
    let now = Ts::now();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, |c| sqlx::query(
        "insert into companies (id, name, created_at) values ($1, $2, $3)"
    )
    .bind(Id(company))
    .bind(&name)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    settings::insert_initial(&mut tx, company, &name, now).await?;
    members::insert(&mut tx, company, user, &email, Role::Admin, now).await?;
    let api_token = insert_token(&mut tx, company, user, now).await?;
    tx.commit().await?;
    tracing::info!(company_id = %company, "company created");
    Ok(no_store(&CompanyCreated {
        company_id: Id(company),
        user_id: Id(user),
        email,
        role: "admin",
        api_token,
    }))
}

/// Handles `POST /admin/companies/{company_id}/tokens`.
#[utoipa::path(
    post,
    path = "/admin/companies/{company_id}/tokens",
    operation_id = "issueToken",
    tag = "Operator",
    summary = "Issue a company token for a member",
    description = "Exempt from the idempotency gate: every call issues a new token.",
    security(("operator" = [])),
    request_body = TokenIn,
    responses(
        (
            status = 201,
            description = "A new token for the member.",
            body = TokenIssued
        ),
        (status = 404, description = "no such company, or the email has no access to it")
    )
)]
pub async fn issue_token(
    IdPath(company): IdPath,
    _: Operator,
    State(state): State<AppState>,
    req: Request,
) -> AppResult<Response> {
    let TokenIn { email } = parse_token(&json_body(req).await?)?;
    let mut tx = state.db.begin().await?;
    let member = members::find_by_email_tx(&mut tx, company, &email)
        .await?
        .ok_or_else(|| {
            AppError::not_found(format!(
                "no user with email {email} has access to company {company}"
            ))
        })?;
    let api_token = insert_token(&mut tx, company, member.user_id.0, Ts::now()).await?;
    tx.commit().await?;
    Ok(no_store(&TokenIssued {
        api_token,
        user_id: member.user_id,
        role: member.role,
    }))
}
