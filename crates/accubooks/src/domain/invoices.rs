//! Invoices: `createInvoice`, `finalizeInvoice`, reads and lists.
//!
//! Invariants: money is integer minor units; `0 <= amount_paid <= total` (a check
//! constraint on both stores); `balance_due = total - amount_paid` is computed, never
//! stored; an invoice's totals only change in a write transaction that holds its row
//! lock ([`lock`]), so payments and refunds see each other's effects.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_db, on_tx, Db, Id, Ts, Tx};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::state::AppState;
use crate::web::{ok_json, page, IdPath, ListQuery};

mod create;
mod finalize;

pub use create::{__path_create_invoice, create_invoice};
pub use finalize::{__path_finalize_invoice, finalize_invoice};

const STATUSES: &[&str] = &["draft", "open", "paid"];

fn status_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(STATUSES)
}

/// An invoice row (without its line items).
#[derive(Debug, Clone, FromRow)]
pub struct InvoiceRow {
    /// The invoice id.
    pub id: Id,
    customer_id: Id,
    currency: String,
    due_date: String,
    /// `draft`, `open` or `paid`.
    pub status: String,
    number: Option<String>,
    /// Total in minor units.
    pub total: i64,
    /// Amount paid in minor units.
    pub amount_paid: i64,
    created_at: Ts,
}

impl InvoiceRow {
    /// `total - amount_paid`.
    pub fn balance_due(&self) -> Money {
        Money(self.total - self.amount_paid)
    }
}

#[derive(Debug, Clone, FromRow)]
struct PageLineRow {
    invoice_id: Id,
    #[sqlx(flatten)]
    line: LineRow,
}

#[derive(Debug, Clone, FromRow)]
struct LineRow {
    id: Id,
    description: String,
    quantity: i64,
    unit_price: i64,
    amount: i64,
}

/// A line item, as rendered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineItem {
    id: Id,
    description: String,
    quantity: i64,
    unit_price: Money,
    amount: Money,
}

impl From<LineRow> for LineItem {
    fn from(r: LineRow) -> Self {
        LineItem {
            id: r.id,
            description: r.description,
            quantity: r.quantity,
            unit_price: Money(r.unit_price),
            amount: Money(r.amount),
        }
    }
}

/// An invoice, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    id: Id,
    customer_id: Id,
    currency: String,
    #[schema(format = Date)]
    due_date: String,
    #[schema(schema_with = status_schema)]
    status: String,
    /// `invoice_prefix` + at least six digits (`INV-000001`); null until finalized.
    #[schema(required = true)]
    number: Option<String>,
    line_items: Vec<LineItem>,
    total: Money,
    amount_paid: Money,
    balance_due: Money,
    created_at: Ts,
}

impl Invoice {
    fn new(r: InvoiceRow, lines: Vec<LineRow>) -> Self {
        Invoice {
            balance_due: r.balance_due(),
            id: r.id,
            customer_id: r.customer_id,
            currency: r.currency,
            due_date: r.due_date,
            status: r.status,
            number: r.number,
            line_items: lines.into_iter().map(LineItem::from).collect(),
            total: Money(r.total),
            amount_paid: Money(r.amount_paid),
            created_at: r.created_at,
        }
    }
}

/// The invoice embedded in payments and refunds: `{id, status, amount_paid, balance_due}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InvoiceSummary {
    id: Id,
    #[schema(schema_with = status_schema)]
    status: String,
    amount_paid: Money,
    balance_due: Money,
}

impl InvoiceSummary {
    /// The summary of `id` from its status and amounts.
    pub fn new(id: Id, status: String, total: i64, amount_paid: i64) -> Self {
        InvoiceSummary {
            id,
            status,
            amount_paid: Money(amount_paid),
            balance_due: Money(total - amount_paid),
        }
    }
}

impl From<&InvoiceRow> for InvoiceSummary {
    fn from(r: &InvoiceRow) -> Self {
        InvoiceSummary::new(r.id, r.status.clone(), r.total, r.amount_paid)
    }
}

const COLUMNS: &str =
    "id, customer_id, currency, due_date, status, number, total, amount_paid, created_at";
const LINES: &str = "select id, description, quantity, unit_price, amount from invoice_line_items \
                     where company_id = $1 and invoice_id = $2 order by position";

/// Loads an invoice row inside a write; with `lock`, holds its row lock (PostgreSQL).
pub async fn row_tx(
    tx: &mut Tx,
    company: Uuid,
    id: Uuid,
    lock: bool,
) -> AppResult<Option<InvoiceRow>> {
    let sql = format!(
        "select {COLUMNS} from invoices where company_id = $1 and id = $2{}",
        if lock { tx.for_update() } else { "" }
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, InvoiceRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?)
}

/// Loads and locks an invoice row (the lock every change of its totals takes).
pub async fn lock(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<InvoiceRow>> {
    row_tx(tx, company, id, true).await
}

/// Loads a whole invoice inside a write.
pub async fn load_tx(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<Invoice>> {
    let Some(row) = row_tx(tx, company, id, false).await? else {
        return Ok(None);
    };
    let lines = on_tx!(tx, |c| sqlx::query_as::<_, LineRow>(LINES)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_all(c)
        .await)?;
    Ok(Some(Invoice::new(row, lines)))
}

async fn with_lines(db: &Db, company: Uuid, row: InvoiceRow) -> AppResult<Invoice> {
    let id = row.id;
    let lines = on_db!(db, |c| sqlx::query_as::<_, LineRow>(LINES)
        .bind(Id(company))
        .bind(id)
        .fetch_all(c)
        .await)?;
    Ok(Invoice::new(row, lines))
}

/// The line items of a page of invoices, in one query.
async fn page_lines(
    db: &Db,
    company: Uuid,
    rows: &[InvoiceRow],
) -> AppResult<HashMap<Uuid, Vec<LineRow>>> {
    let mut out: HashMap<Uuid, Vec<LineRow>> = HashMap::new();
    if rows.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "select invoice_id, id, description, quantity, unit_price, amount from invoice_line_items \
         where company_id = $1 and invoice_id in ({}) order by invoice_id, position",
        super::placeholders(2, rows.len())
    );
    let lines = on_db!(db, |c| {
        let mut query = sqlx::query_as::<_, PageLineRow>(&sql).bind(Id(company));
        for r in rows {
            query = query.bind(r.id);
        }
        query.fetch_all(c).await
    })?;
    for l in lines {
        out.entry(l.invoice_id.0).or_default().push(l.line);
    }
    Ok(out)
}

/// Sets an invoice's amount paid and status (the caller holds its lock).
pub async fn set_paid(tx: &mut Tx, company: Uuid, inv: &InvoiceRow) -> AppResult<()> {
    on_tx!(tx, |c| sqlx::query(
        "update invoices set amount_paid = $1, status = $2 where company_id = $3 and id = $4"
    )
    .bind(inv.amount_paid)
    .bind(&inv.status)
    .bind(Id(company))
    .bind(inv.id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

fn location(id: Uuid) -> String {
    format!("/api/invoices/{id}")
}

fn missing(id: Uuid) -> AppError {
    AppError::not_found(format!("invoice {id} does not exist"))
}

/// Handles `GET /api/invoices/{id}`.
#[utoipa::path(
    get,
    path = "/api/invoices/{id}",
    operation_id = "getInvoice",
    tag = "Invoices",
    summary = "Get a invoice",
    responses(
        (status = 200, description = "The invoice, in the shape its create returned.", body = Invoice),
        (status = 404, description = "no invoice with this id in your company (or a malformed id)")
    )
)]
pub async fn get_invoice(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row = super::find_row::<InvoiceRow>(&state.db, COLUMNS, "invoices", tenant.company_id, id)
        .await?
        .ok_or_else(|| missing(id))?;
    Ok(ok_json(
        &with_lines(&state.db, tenant.company_id, row).await?,
    ))
}

/// Handles `GET /api/invoices?status=`.
#[utoipa::path(
    get,
    path = "/api/invoices",
    operation_id = "listInvoices",
    tag = "Invoices",
    summary = "List invoices",
    params(crate::web::ListParams, ("status" = Option<String>, Query, description = "filter: `draft`, `open` or `paid`; a value matching nothing gives an empty page")),
    responses((status = 200, description = "A page of invoices, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Invoice>))
)]
pub async fn list_invoices(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &["status"])?;
    let status = q.enum_filter("status", STATUSES)?;
    let rows: Vec<InvoiceRow> = super::list_rows(
        &state.db,
        COLUMNS,
        "invoices",
        tenant.company_id,
        status.map(|v| ("status", super::Filter::Text(v))),
        &q,
    )
    .await?;
    let mut lines = page_lines(&state.db, tenant.company_id, &rows).await?;
    let out: Vec<Invoice> = rows
        .into_iter()
        .map(|r| {
            let l = lines.remove(&r.id.0).unwrap_or_default();
            Invoice::new(r, l)
        })
        .collect();
    Ok(ok_json(&page(out, q.limit, |i| (i.created_at, i.id.0))))
}
