//! Payments: `createPayment`, reads and lists.
//!
//! Invariant: a payment is accepted only on an open invoice and never for more than its
//! balance due, decided under the invoice's row lock in the transaction that raises its
//! `amount_paid`; the invoice becomes `paid` at zero balance. `refunded` is the sum of
//! the payment's refunds, changed only under the payment's row lock.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, Event, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use super::invoices::{self, InvoiceSummary};
use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Sign, Validator};
use crate::web::{ok_json, page, IdPath, ListQuery};

const METHODS: &[&str] = &["card", "bank_transfer", "cash", "check"];

fn method_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(METHODS)
}

#[derive(Debug, Clone, FromRow)]
struct PaymentRow {
    id: Id,
    invoice_id: Id,
    amount: i64,
    refunded: i64,
    method: String,
    received_on: String,
    created_at: Ts,
    invoice_status: String,
    invoice_total: i64,
    invoice_amount_paid: i64,
}

/// A payment, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Payment {
    id: Id,
    invoice_id: Id,
    amount: Money,
    /// The sum of the payment's refunds so far.
    amount_refunded: Money,
    #[schema(schema_with = method_schema)]
    method: String,
    #[schema(format = Date)]
    received_on: String,
    created_at: Ts,
    invoice: InvoiceSummary,
}

impl From<PaymentRow> for Payment {
    fn from(r: PaymentRow) -> Self {
        Payment {
            invoice: InvoiceSummary::new(
                r.invoice_id,
                r.invoice_status,
                r.invoice_total,
                r.invoice_amount_paid,
            ),
            id: r.id,
            invoice_id: r.invoice_id,
            amount: Money(r.amount),
            amount_refunded: Money(r.refunded),
            method: r.method,
            received_on: r.received_on,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "id, invoice_id, amount, refunded, method, received_on, created_at, \
                       invoice_status, invoice_total, invoice_amount_paid";
const FROM: &str = "(select p.company_id, p.id, p.invoice_id, p.amount, p.refunded, p.method, \
                    p.received_on, p.created_at, i.status as invoice_status, i.total as invoice_total, \
                    i.amount_paid as invoice_amount_paid from payments p join invoices i \
                    on i.company_id = p.company_id and i.id = p.invoice_id) x";

fn location(id: Uuid) -> String {
    format!("/api/payments/{id}")
}

/// A payment's amounts, read under its row lock.
#[derive(Debug, Clone, FromRow)]
pub struct PaymentLock {
    /// The paid invoice.
    pub invoice_id: Id,
    /// Original amount.
    pub amount: i64,
    /// Sum of its refunds.
    pub refunded: i64,
}

/// Reads a payment's amounts; with `lock`, holds its row lock (PostgreSQL).
pub async fn amounts(
    tx: &mut Tx,
    company: Uuid,
    id: Uuid,
    lock: bool,
) -> AppResult<Option<PaymentLock>> {
    let sql = format!(
        "select invoice_id, amount, refunded from payments where company_id = $1 and id = $2{}",
        if lock { tx.for_update() } else { "" }
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, PaymentLock>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?)
}

/// Loads a payment with its invoice summary inside a write.
pub async fn load_tx(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<Payment>> {
    let sql = format!("select {COLUMNS} from {FROM} where company_id = $1 and id = $2");
    let row = on_tx!(tx, |c| sqlx::query_as::<_, PaymentRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
    Ok(row.map(Payment::from))
}

/// Body of `createPayment`; `received_on` defaults to the UTC creation date.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PaymentIn {
    #[schema(schema_with = fields::id)]
    invoice_id: Uuid,
    /// > 0.
    amount: Money,
    #[schema(schema_with = method_schema)]
    method: &'static str,
    #[schema(schema_with = fields::date_or_null)]
    received_on: Option<String>,
}

fn parse(body: &Value) -> AppResult<PaymentIn> {
    let mut v = Validator::new();
    let allowed = ["invoice_id", "amount", "method", "received_on"];
    let Some(o) = v.object(body, "", &allowed) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let invoice_id = v.uuid(o, "", "invoice_id", true);
    let amount = v.money(o, "", "amount", Sign::Positive, true);
    let method = v.one_of(o, "", "method", METHODS, true);
    let received_on = v.date(o, "", "received_on", false);
    v.finish()?;
    Ok(PaymentIn {
        invoice_id: invoice_id.unwrap_or_default(),
        amount: amount.unwrap_or_default(),
        method: method.unwrap_or("card"),
        received_on: received_on.map(|d| d.format("%Y-%m-%d").to_string()),
    })
}

struct CreatePayment {
    company: Uuid,
    body: Value,
}

impl CreatePayment {
    /// Applies the payment to its locked invoice, checking the rules in order.
    async fn apply(&self, ctx: &mut ExecCtx<'_>, input: &PaymentIn) -> AppResult<()> {
        let mut inv = invoices::lock(ctx.tx(), self.company, input.invoice_id)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!(
                    "invoice_id: invoice {} does not exist",
                    input.invoice_id
                ))
            })?;
        if inv.status != "open" {
            return Err(AppError::rule(
                "invoice_not_open",
                format!("invoice {} is {}, not open", input.invoice_id, inv.status),
            ));
        }
        let balance = inv.balance_due();
        if input.amount > balance {
            return Err(AppError::rule(
                "payment_exceeds_balance",
                format!("amount {} exceeds the balance due {balance}", input.amount),
            ));
        }
        inv.amount_paid += input.amount.0;
        if inv.amount_paid == inv.total {
            inv.status = "paid".into();
        }
        invoices::set_paid(ctx.tx(), self.company, &inv).await
    }

    async fn insert(&self, ctx: &mut ExecCtx<'_>, input: &PaymentIn) -> AppResult<()> {
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        let received_on = input
            .received_on
            .clone()
            .unwrap_or_else(|| now.date().format("%Y-%m-%d").to_string());
        on_tx!(ctx.tx(), |c| {
            sqlx::query(
            "insert into payments (company_id, id, invoice_id, amount, refunded, method, received_on, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, 0, $5, $6, $7, $8)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(input.invoice_id))
        .bind(input.amount.0)
        .bind(input.method)
        .bind(&received_on)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

impl Operation for CreatePayment {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = crate::domain::record_fingerprint(tx, "payments", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let payment = load_tx(tx, self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("payment vanished".into()))?;
        super::existing(fp, &payment, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        self.apply(ctx, &input).await?;
        self.insert(ctx, &input).await?;
        let id = ctx.id();
        ctx.emit(&[Event::new("payment.created", "payment", id)])
            .await?;
        let payment = load_tx(ctx.tx(), self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("payment vanished".into()))?;
        super::created(&payment, Some(location(id)))
    }
}

/// Handles `POST /api/payments`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_PAYMENT.route(),
    operation_id = crate::ops::CREATE_PAYMENT.name(),
    tag = "Payments",
    summary = "Record a payment",
    description = "Records a payment on an open invoice; the invoice becomes `paid` at zero \
                      balance. Emits `payment.created`.",
    request_body = PaymentIn,
    responses((status = 201, body = crate::domain::payments::Payment), (status = 404, description = "`invoice_id` does not exist in your company"))
)]
pub async fn create_payment(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| CreatePayment {
        company,
        body,
    })
    .await
}

/// Handles `GET /api/payments/{id}`.
#[utoipa::path(
    get,
    path = "/api/payments/{id}",
    operation_id = "getPayment",
    tag = "Payments",
    summary = "Get a payment",
    responses(
        (status = 200, description = "The payment, in the shape its create returned.", body = Payment),
        (status = 404, description = "no payment with this id in your company (or a malformed id)")
    )
)]
pub async fn get_payment(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row = super::find_row::<PaymentRow>(&state.db, COLUMNS, FROM, tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("payment {id} does not exist")))?;
    Ok(ok_json(&Payment::from(row)))
}

/// Handles `GET /api/payments?invoice_id=`.
#[utoipa::path(
    get,
    path = "/api/payments",
    operation_id = "listPayments",
    tag = "Payments",
    summary = "List payments",
    params(crate::web::ListParams, ("invoice_id" = Option<idem::Id>, Query, description = "filter: only this invoice's payments; a value matching nothing gives an empty page")),
    responses((status = 200, description = "A page of payments, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Payment>))
)]
pub async fn list_payments(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &["invoice_id"])?;
    let invoice = q.uuid_filter("invoice_id")?;
    let rows: Vec<PaymentRow> = super::list_rows(
        &state.db,
        COLUMNS,
        FROM,
        tenant.company_id,
        invoice.map(|v| ("invoice_id", super::Filter::Id(v))),
        &q,
    )
    .await?;
    let rows: Vec<Payment> = rows.into_iter().map(Payment::from).collect();
    Ok(ok_json(&page(rows, q.limit, |p| (p.created_at, p.id.0))))
}
