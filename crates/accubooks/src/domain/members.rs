//! Company members: `grantUserAccess` (grant or change a role), reads and lists.
//!
//! Invariant: a company never loses its last admin. Role changes are decided under a
//! lock on the company row (PostgreSQL) or the single SQLite writer, so concurrent
//! demotions are serialized and the second one sees the first.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_db, on_tx, Created, Db, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Role, Tenant};
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::Validator;
use crate::web::{ok_json, page, IdPath, ListQuery};

/// A member, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Member {
    /// The user.
    pub user_id: Id,
    /// Email as first granted.
    pub email: String,
    /// Current role.
    #[schema(schema_with = role_schema)]
    pub role: String,
    /// When access was first granted.
    pub created_at: Ts,
}

const COLUMNS: &str = "user_id, email, role, created_at";

fn location(user: Uuid) -> String {
    format!("/api/company/members/{user}")
}

/// Finds a member by email (case-insensitive).
pub async fn find_by_email_tx(
    tx: &mut Tx,
    company: Uuid,
    email: &str,
) -> AppResult<Option<Member>> {
    let sql = format!("select {COLUMNS} from members where company_id = $1 and email_lower = $2");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Member>(&sql)
        .bind(Id(company))
        .bind(email.to_lowercase())
        .fetch_optional(c)
        .await)?)
}

async fn find_by_user_tx(tx: &mut Tx, company: Uuid, user: Uuid) -> AppResult<Option<Member>> {
    let sql = format!("select {COLUMNS} from members where company_id = $1 and user_id = $2");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Member>(&sql)
        .bind(Id(company))
        .bind(Id(user))
        .fetch_optional(c)
        .await)?)
}

/// Inserts a new member.
pub async fn insert(
    tx: &mut Tx,
    company: Uuid,
    user: Uuid,
    email: &str,
    role: Role,
    now: Ts,
) -> AppResult<Member> {
    on_tx!(tx, |c| {
        sqlx::query(
        "insert into members (company_id, user_id, email, email_lower, role, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, $6, $6)"
    )
    .bind(Id(company))
    .bind(Id(user))
    .bind(email)
    .bind(email.to_lowercase())
    .bind(role.as_str())
    .bind(now)
    .execute(c)
    .await
        .map(|r| r.rows_affected())
    })?;
    Ok(Member {
        user_id: Id(user),
        email: email.to_owned(),
        role: role.as_str().to_owned(),
        created_at: now,
    })
}

/// The schema of a role string.
pub fn role_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(Role::NAMES)
}

async fn admin_count(tx: &mut Tx, company: Uuid) -> AppResult<i64> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "select count(*) from members where company_id = $1 and role = 'admin'"
    )
    .bind(Id(company))
    .fetch_one(c)
    .await)?)
}

/// Body of `grantUserAccess`; re-granting changes the role.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GrantIn {
    #[schema(schema_with = fields::email)]
    email: String,
    #[schema(schema_with = role_schema)]
    role: Role,
}

fn parse(body: &Value) -> AppResult<GrantIn> {
    let mut v = Validator::new();
    let (email, role) = match v.object(body, "", &["email", "role"]) {
        Some(o) => (
            v.email(o, "", "email", true),
            v.one_of(o, "", "role", Role::NAMES, true),
        ),
        None => (None, None),
    };
    v.finish()?;
    Ok(GrantIn {
        email: email.unwrap_or_default(),
        role: role.and_then(Role::parse).unwrap_or(Role::Viewer),
    })
}

struct GrantAccess {
    company: Uuid,
    body: Value,
}

impl Operation for GrantAccess {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let grant: Option<(String, Id)> = on_tx!(tx, |c| {
            sqlx::query_as(
            "select request_fingerprint, user_id from access_grants where company_id = $1 and id = $2"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await
        })?;
        let Some((fp, user)) = grant else {
            return Ok(None);
        };
        let member = find_by_user_tx(tx, self.company, user.0)
            .await?
            .ok_or_else(|| AppError::Internal(format!("grant {id} names a missing member")))?;
        super::existing(fp, &member, Some(location(user.0))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        let now = ctx.now();
        super::lock_company(ctx.tx(), self.company).await?;
        let member = match find_by_email_tx(ctx.tx(), self.company, &input.email).await? {
            Some(mut m) => {
                if m.role == "admin"
                    && input.role != Role::Admin
                    && admin_count(ctx.tx(), self.company).await? <= 1
                {
                    return Err(AppError::rule(
                        "cannot_demote_last_admin",
                        format!(
                            "{} is the company's last admin; grant admin to someone else first",
                            m.email
                        ),
                    ));
                }
                on_tx!(ctx.tx(), |c| {
                    sqlx::query(
                    "update members set role = $1, updated_at = $2 where company_id = $3 and user_id = $4"
                )
                .bind(input.role.as_str())
                .bind(now)
                .bind(Id(self.company))
                .bind(m.user_id)
                .execute(c)
                .await
        .map(|r| r.rows_affected())
                })?;
                m.role = input.role.as_str().to_owned();
                m
            }
            None => {
                insert(
                    ctx.tx(),
                    self.company,
                    Uuid::now_v7(),
                    &input.email,
                    input.role,
                    now,
                )
                .await?
            }
        };
        let (id, fp) = (ctx.id(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| {
            sqlx::query(
            "insert into access_grants (company_id, id, user_id, email, role, request_fingerprint, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(member.user_id)
        .bind(&input.email)
        .bind(input.role.as_str())
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        super::created(&member, Some(location(member.user_id.0)))
    }
}

/// Handles `POST /api/company/members`.
#[utoipa::path(
    post,
    path = crate::ops::GRANT_USER_ACCESS.route(),
    operation_id = crate::ops::GRANT_USER_ACCESS.name(),
    tag = "Company",
    summary = "Grant a user access (or change their role)",
    description = "Gives `email` the `role` in the company; re-granting changes the role. \
                      Demotions are decided under a company lock, so concurrent demotions \
                      never leave zero admins. Tokens are issued by the operator.",
    request_body = GrantIn,
    responses((status = 201, body = crate::domain::members::Member))
)]
pub async fn grant_access(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Admin, write, |body| GrantAccess {
        company,
        body,
    })
    .await
}

async fn find(db: &Db, company: Uuid, user: Uuid) -> AppResult<Option<Member>> {
    let sql = format!("select {COLUMNS} from members where company_id = $1 and user_id = $2");
    Ok(on_db!(db, |c| sqlx::query_as::<_, Member>(&sql)
        .bind(Id(company))
        .bind(Id(user))
        .fetch_optional(c)
        .await)?)
}

/// Handles `GET /api/company/members/{user_id}`.
#[utoipa::path(
    get,
    path = "/api/company/members/{user_id}",
    operation_id = "getMember",
    tag = "Company",
    summary = "Get a member",
    responses(
        (status = 200, description = "The member, in the shape its create returned.", body = Member),
        (status = 404, description = "no member with this id in your company (or a malformed id)")
    )
)]
pub async fn get_member(
    IdPath(user): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let member = find(&state.db, tenant.company_id, user)
        .await?
        .ok_or_else(|| AppError::not_found(format!("member {user} does not exist")))?;
    Ok(ok_json(&member))
}

/// Handles `GET /api/company/members`.
#[utoipa::path(
    get,
    path = "/api/company/members",
    operation_id = "listMembers",
    tag = "Company",
    summary = "List members",
    params(crate::web::ListParams),
    responses((status = 200, description = "A page of members, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Member>))
)]
pub async fn list_members(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &[])?;
    let sql = format!(
        "select {COLUMNS} from members where company_id = $1{} order by created_at desc, user_id desc limit ${}",
        q.keyset(2, "user_id"),
        if q.after.is_some() { 4 } else { 2 }
    );
    let rows = on_db!(&state.db, |c| {
        let mut query = sqlx::query_as::<_, Member>(&sql).bind(Id(tenant.company_id));
        if let Some((ts, id)) = q.after {
            query = query.bind(ts).bind(Id(id));
        }
        query.bind(q.limit + 1).fetch_all(c).await
    })?;
    Ok(ok_json(&page(rows, q.limit, |m| {
        (m.created_at, m.user_id.0)
    })))
}
