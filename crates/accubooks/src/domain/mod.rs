//! The accounting domain: one module per area, each owning its SQL, validation and
//! handlers. Every write is an [`idem::Operation`] run through the gate.

use axum::response::{IntoResponse, Response};
use idem::{Created, Existing, Operation, Write};
use serde_json::Value;

use crate::auth::{Need, Tenant};
use crate::state::AppState;
use serde::Serialize;

use crate::error::{AppError, AppResult};
use crate::web::ListQuery;

pub mod admin;
pub mod bank;
pub mod customers;
pub mod employees;
pub mod inventory;
pub mod invoices;
pub mod members;
pub mod payments;
pub mod payroll;
pub mod refunds;
pub mod settings;
pub mod webhook_secret;
pub mod workflows;

/// Takes the company row's lock for decisions that must be serialised per company
/// (membership, payroll). On PostgreSQL this is `FOR NO KEY UPDATE`: it excludes other
/// such decisions but not the `FOR KEY SHARE` that every insert referencing the company
/// takes, so ordinary writes of the company are never blocked by it. On SQLite the single
/// writer already serialises.
pub(crate) async fn lock_company(tx: &mut idem::Tx, company: uuid::Uuid) -> AppResult<()> {
    let lock = match tx {
        idem::Tx::Postgres(_) => " for no key update",
        _ => "",
    };
    let sql = format!("select id from companies where id = $1{lock}");
    idem::on_tx!(tx, |c| sqlx::query(&sql)
        .bind(idem::Id(company))
        .fetch_optional(c)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// The SQL of a list page over `from` (a table or a parenthesized select with an alias):
/// `$1` the company, `$2` the optional filter on `filter`, then the keyset, then the limit.
pub fn list_sql(columns: &str, from: &str, filter: Option<&str>, q: &ListQuery) -> String {
    let mut n = 2;
    let mut cond = String::new();
    if let Some(col) = filter {
        cond = format!(" and {col} = $2");
        n = 3;
    }
    let keyset = q.keyset(n, "id");
    if q.after.is_some() {
        n += 2;
    }
    format!(
        "select {columns} from {from} where company_id = $1{cond}{keyset} \
         order by created_at desc, id desc limit ${n}"
    )
}

/// The row of `from` with `id` in `company`, if any (the reads of every entity).
pub async fn find_row<R>(
    db: &idem::Db,
    columns: &str,
    from: &str,
    company: uuid::Uuid,
    id: uuid::Uuid,
) -> AppResult<Option<R>>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin,
{
    let sql = format!("select {columns} from {from} where company_id = $1 and id = $2");
    Ok(idem::on_db!(db, |c| sqlx::query_as::<_, R>(&sql)
        .bind(idem::Id(company))
        .bind(idem::Id(id))
        .fetch_optional(c)
        .await)?)
}

/// The value of a list's one filter.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    /// An id (`invoice_id`, `payment_id`).
    Id(uuid::Uuid),
    /// A flag (`reconciled`).
    Bool(bool),
    /// One of a fixed set of values (`status`).
    Text(&'static str),
    /// An id kept as text (`workflow_instances.trigger_entity_id`).
    TextId(uuid::Uuid),
}

/// One page of `from` for `company`, newest first, with an optional `(column, value)`
/// filter; `limit + 1` rows so [`crate::web::page`] can tell whether more exist.
pub async fn list_rows<R>(
    db: &idem::Db,
    columns: &str,
    from: &str,
    company: uuid::Uuid,
    filter: Option<(&str, Filter)>,
    q: &ListQuery,
) -> AppResult<Vec<R>>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin,
{
    let sql = list_sql(columns, from, filter.map(|(column, _)| column), q);
    Ok(idem::on_db!(db, |c| {
        let mut query = sqlx::query_as::<_, R>(&sql).bind(idem::Id(company));
        query = match filter {
            Some((_, Filter::Id(id))) => query.bind(idem::Id(id)),
            Some((_, Filter::Bool(b))) => query.bind(b),
            Some((_, Filter::Text(t))) => query.bind(t),
            Some((_, Filter::TextId(id))) => query.bind(id.hyphenated().to_string()),
            None => query,
        };
        if let Some((ts, id)) = q.after {
            query = query.bind(ts).bind(idem::Id(id));
        }
        query.bind(q.limit + 1).fetch_all(c).await
    })?)
}

/// `$first, $first+1, …` for `n` values of an `in (…)` list.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a write through the gate after checking the caller's role (403 comes before the
/// body, content-type and key checks of the gate). After a first execution (201, so
/// committed) the node's workflow worker is woken for the instances it may have written.
pub async fn gated<O, F>(
    state: &AppState,
    tenant: Tenant,
    need: Need,
    write: Write,
    make: F,
) -> Response
where
    O: Operation<Error = AppError> + 'static,
    F: FnOnce(Value) -> O,
{
    if let Err(e) = tenant.require(need) {
        return e.into_response();
    }
    let res = write.run(tenant.writer(), make).await;
    if res.status() == http::StatusCode::CREATED {
        state.outbox.after_commit();
    }
    res
}

/// The fingerprint kept by an operation's record row in `table` (a constant table name),
/// if the row exists: the first step of every `find_existing`.
pub async fn record_fingerprint(
    tx: &mut idem::Tx,
    table: &'static str,
    company: uuid::Uuid,
    id: uuid::Uuid,
) -> AppResult<Option<String>> {
    let sql = format!("select request_fingerprint from {table} where company_id = $1 and id = $2");
    Ok(idem::on_tx!(tx, |c| sqlx::query_scalar(&sql)
        .bind(idem::Id(company))
        .bind(idem::Id(id))
        .fetch_optional(c)
        .await)?)
}

/// An empty object: the body of `finalizeInvoice` and `rotateWebhookSecret`, which take no
/// input; an empty body without a content type means the same.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyIn {}

/// Validates a body that must be `{}` (the gate turns an allowed empty body into `{}`).
pub fn parse_empty(body: &Value) -> AppResult<EmptyIn> {
    let mut v = crate::validate::Validator::new();
    v.object(body, "", &[]);
    v.finish()?;
    Ok(EmptyIn {})
}

/// A response body as JSON (a value that cannot be serialized is an internal error).
fn json_body<T: Serialize>(value: &T) -> AppResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| AppError::Internal(format!("serialize: {e}")))
}

/// Serializes a 201 body.
pub fn created<T: Serialize>(value: &T, location: Option<String>) -> AppResult<Created> {
    let created = Created::bytes(json_body(value)?);
    Ok(match location {
        Some(l) => created.location(l),
        None => created,
    })
}

/// Serializes the current resource for a retry after the key's record expired.
pub fn existing<T: Serialize>(
    fingerprint: String,
    value: &T,
    location: Option<String>,
) -> AppResult<Existing> {
    let existing = Existing::bytes(fingerprint, json_body(value)?);
    Ok(match location {
        Some(l) => existing.location(l),
        None => existing,
    })
}

/// An operation's record row together with the fingerprint it keeps.
#[derive(Debug)]
pub struct WithFingerprint<T> {
    /// Fingerprint of the request that created the row.
    pub request_fingerprint: String,
    /// The entity.
    pub entity: T,
}

impl<'r, R, T> sqlx::FromRow<'r, R> for WithFingerprint<T>
where
    R: sqlx::Row,
    T: sqlx::FromRow<'r, R>,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            request_fingerprint: row.try_get("request_fingerprint")?,
            entity: T::from_row(row)?,
        })
    }
}
