//! Customers: `createCustomer`, reads and lists.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, Db, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use super::WithFingerprint;
use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Validator, NAME_MAX};
use crate::web::{ok_json, page, IdPath, ListQuery};

/// A customer, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Customer {
    id: Id,
    name: String,
    #[schema(required = true)]
    email: Option<String>,
    created_at: Ts,
}

const COLUMNS: &str = "id, name, email, created_at";

/// Where a customer lives (the `Location` of its 201).
pub fn location(id: Uuid) -> String {
    format!("/api/customers/{id}")
}

/// Body of `createCustomer`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerIn {
    #[schema(schema_with = fields::text::<NAME_MAX>)]
    name: String,
    #[schema(schema_with = fields::email_or_null)]
    email: Option<String>,
}

/// Validates a createCustomer body.
pub fn parse(body: &Value) -> AppResult<CustomerIn> {
    let mut v = Validator::new();
    let obj = v.object(body, "", &["name", "email"]);
    let (name, email) = match obj {
        Some(o) => (
            v.text(o, "", "name", NAME_MAX, true),
            v.email(o, "", "email", false),
        ),
        None => (None, None),
    };
    v.finish()?;
    Ok(CustomerIn {
        name: name.unwrap_or_default(),
        email,
    })
}

/// Loads a customer of `company`.
pub async fn find(db: &Db, company: Uuid, id: Uuid) -> AppResult<Option<Customer>> {
    super::find_row(db, COLUMNS, "customers", company, id).await
}

/// Whether a customer exists in `company` (inside a write).
pub async fn exists(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<bool> {
    let n: Option<i32> = on_tx!(tx, |c| sqlx::query_scalar(
        "select 1 from customers where company_id = $1 and id = $2"
    )
    .bind(Id(company))
    .bind(Id(id))
    .fetch_optional(c)
    .await)?;
    Ok(n.is_some())
}

struct CreateCustomer {
    company: Uuid,
    body: Value,
}

impl Operation for CreateCustomer {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let sql = format!("select request_fingerprint, {COLUMNS} from customers where company_id = $1 and id = $2");
        let row = on_tx!(tx, |c| sqlx::query_as::<_, WithFingerprint<Customer>>(&sql)
            .bind(Id(self.company))
            .bind(Id(id))
            .fetch_optional(c)
            .await)?;
        row.map(|r| super::existing(r.request_fingerprint, &r.entity, Some(location(id))))
            .transpose()
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        let (id, now) = (ctx.id(), ctx.now());
        let fingerprint = ctx.fingerprint().to_owned();
        let customer = insert(ctx.tx(), self.company, id, input, now, &fingerprint).await?;
        super::created(&customer, Some(location(id)))
    }
}

/// Inserts the customer `id` of `company` (inside a write) and returns it as rendered.
pub async fn insert(
    tx: &mut Tx,
    company: Uuid,
    id: Uuid,
    input: CustomerIn,
    created_at: Ts,
    fingerprint: &str,
) -> AppResult<Customer> {
    let customer = Customer {
        id: Id(id),
        name: input.name,
        email: input.email,
        created_at,
    };
    on_tx!(tx, |c| sqlx::query(
        "insert into customers (company_id, id, name, email, request_fingerprint, created_at) \
         values ($1, $2, $3, $4, $5, $6)"
    )
    .bind(Id(company))
    .bind(customer.id)
    .bind(&customer.name)
    .bind(customer.email.as_deref())
    .bind(fingerprint)
    .bind(customer.created_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(customer)
}

/// Handles `POST /api/customers`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_CUSTOMER.route(),
    operation_id = crate::ops::CREATE_CUSTOMER.name(),
    tag = "Customers",
    summary = "Create a customer",
    description = "Creates a customer; its id is the operation's deterministic id.",
    request_body = CustomerIn,
    responses((status = 201, body = crate::domain::customers::Customer))
)]
pub async fn create_customer(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| CreateCustomer {
        company,
        body,
    })
    .await
}

/// Handles `GET /api/customers/{id}`.
#[utoipa::path(
    get,
    path = "/api/customers/{id}",
    operation_id = "getCustomer",
    tag = "Customers",
    summary = "Get a customer",
    responses(
        (status = 200, description = "The customer, in the shape its create returned.", body = crate::domain::customers::Customer),
        (status = 404, description = "no customer with this id in your company (or a malformed id)")
    )
)]
pub async fn get_customer(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let customer = find(&state.db, tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("customer {id} does not exist")))?;
    Ok(ok_json(&customer))
}

/// Handles `GET /api/customers`.
#[utoipa::path(
    get,
    path = "/api/customers",
    operation_id = "listCustomers",
    tag = "Customers",
    summary = "List customers",
    params(crate::web::ListParams),
    responses((status = 200, description = "A page of customers, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<crate::domain::customers::Customer>))
)]
pub async fn list_customers(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &[])?;
    let rows: Vec<Customer> =
        super::list_rows(&state.db, COLUMNS, "customers", tenant.company_id, None, &q).await?;
    Ok(ok_json(&page(rows, q.limit, |c| (c.created_at, c.id.0))))
}
