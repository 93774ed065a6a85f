//! Refunds: `createRefund`, reads and lists.
//!
//! Invariant: a payment's refunds never exceed its amount. Decided under the row locks
//! of the payment's invoice and then the payment (always in that order), in the
//! transaction that lowers the invoice's `amount_paid` and reopens a paid invoice.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, Event, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use super::invoices::{self, InvoiceSummary};
use super::payments;
use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Sign, Validator, TEXT_MAX};
use crate::web::{ok_json, page, IdPath, ListQuery};

#[derive(Debug, Clone, FromRow)]
struct RefundRow {
    id: Id,
    payment_id: Id,
    invoice_id: Id,
    amount: i64,
    reason: String,
    created_at: Ts,
    invoice_status: String,
    invoice_total: i64,
    invoice_amount_paid: i64,
}

/// A refund, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refund {
    id: Id,
    payment_id: Id,
    amount: Money,
    reason: String,
    created_at: Ts,
    invoice: InvoiceSummary,
}

impl From<RefundRow> for Refund {
    fn from(r: RefundRow) -> Self {
        Refund {
            invoice: InvoiceSummary::new(
                r.invoice_id,
                r.invoice_status,
                r.invoice_total,
                r.invoice_amount_paid,
            ),
            id: r.id,
            payment_id: r.payment_id,
            amount: Money(r.amount),
            reason: r.reason,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "id, payment_id, invoice_id, amount, reason, created_at, \
                       invoice_status, invoice_total, invoice_amount_paid";
const FROM: &str = "(select r.company_id, r.id, r.payment_id, r.invoice_id, r.amount, r.reason, \
                    r.created_at, i.status as invoice_status, i.total as invoice_total, \
                    i.amount_paid as invoice_amount_paid from refunds r join invoices i \
                    on i.company_id = r.company_id and i.id = r.invoice_id) x";

fn location(id: Uuid) -> String {
    format!("/api/refunds/{id}")
}

async fn load_tx(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<Refund>> {
    let sql = format!("select {COLUMNS} from {FROM} where company_id = $1 and id = $2");
    let row = on_tx!(tx, |c| sqlx::query_as::<_, RefundRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
    Ok(row.map(Refund::from))
}

/// Body of `createRefund`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundIn {
    #[schema(schema_with = fields::id)]
    payment_id: Uuid,
    /// > 0.
    amount: Money,
    #[schema(schema_with = fields::text::<TEXT_MAX>)]
    reason: String,
}

fn parse(body: &Value) -> AppResult<RefundIn> {
    let mut v = Validator::new();
    let Some(o) = v.object(body, "", &["payment_id", "amount", "reason"]) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let payment_id = v.uuid(o, "", "payment_id", true);
    let amount = v.money(o, "", "amount", Sign::Positive, true);
    let reason = v.text(o, "", "reason", TEXT_MAX, true);
    v.finish()?;
    Ok(RefundIn {
        payment_id: payment_id.unwrap_or_default(),
        amount: amount.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
    })
}

struct CreateRefund {
    company: Uuid,
    body: Value,
}

impl CreateRefund {
    /// Locks the invoice, then the payment; checks the rule; lowers both balances.
    async fn apply(&self, tx: &mut Tx, input: &RefundIn) -> AppResult<Id> {
        let missing = || {
            AppError::not_found(format!(
                "payment_id: payment {} does not exist",
                input.payment_id
            ))
        };
        let p = payments::amounts(tx, self.company, input.payment_id, false)
            .await?
            .ok_or_else(missing)?;
        let mut inv = invoices::lock(tx, self.company, p.invoice_id.0)
            .await?
            .ok_or_else(|| AppError::Internal("payment without invoice".into()))?;
        let p = payments::amounts(tx, self.company, input.payment_id, true)
            .await?
            .ok_or_else(missing)?;
        let refundable = Money(p.amount - p.refunded);
        if input.amount > refundable {
            return Err(AppError::rule(
                "refund_exceeds_payment",
                format!(
                    "amount {} exceeds the refundable {refundable}",
                    input.amount
                ),
            ));
        }
        on_tx!(tx, |c| sqlx::query(
            "update payments set refunded = refunded + $1 where company_id = $2 and id = $3"
        )
        .bind(input.amount.0)
        .bind(Id(self.company))
        .bind(Id(input.payment_id))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        inv.amount_paid -= input.amount.0;
        if inv.status == "paid" && inv.amount_paid < inv.total {
            inv.status = "open".into();
        }
        invoices::set_paid(tx, self.company, &inv).await?;
        Ok(p.invoice_id)
    }

    async fn insert(&self, ctx: &mut ExecCtx<'_>, input: &RefundIn, invoice: Id) -> AppResult<()> {
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into refunds (company_id, id, payment_id, invoice_id, amount, reason, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(input.payment_id))
        .bind(invoice)
        .bind(input.amount.0)
        .bind(&input.reason)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}

impl Operation for CreateRefund {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = crate::domain::record_fingerprint(tx, "refunds", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let refund = load_tx(tx, self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("refund vanished".into()))?;
        super::existing(fp, &refund, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        let invoice = self.apply(ctx.tx(), &input).await?;
        self.insert(ctx, &input, invoice).await?;
        let id = ctx.id();
        ctx.emit(&[Event::new("refund.created", "refund", id)])
            .await?;
        let refund = load_tx(ctx.tx(), self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("refund vanished".into()))?;
        super::created(&refund, Some(location(id)))
    }
}

/// Handles `POST /api/refunds`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_REFUND.route(),
    operation_id = crate::ops::CREATE_REFUND.name(),
    tag = "Payments",
    summary = "Refund (part of) a payment",
    description = "Lowers the invoice's `amount_paid`; a paid invoice with a balance is \
                      `open` again. Emits `refund.created`.",
    request_body = RefundIn,
    responses((status = 201, body = crate::domain::refunds::Refund), (status = 404, description = "`payment_id` does not exist in your company"))
)]
pub async fn create_refund(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| CreateRefund {
        company,
        body,
    })
    .await
}

/// Handles `GET /api/refunds/{id}`.
#[utoipa::path(
    get,
    path = "/api/refunds/{id}",
    operation_id = "getRefund",
    tag = "Payments",
    summary = "Get a refund",
    responses(
        (status = 200, description = "The refund, in the shape its create returned.", body = Refund),
        (status = 404, description = "no refund with this id in your company (or a malformed id)")
    )
)]
pub async fn get_refund(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row = super::find_row::<RefundRow>(&state.db, COLUMNS, FROM, tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("refund {id} does not exist")))?;
    Ok(ok_json(&Refund::from(row)))
}

/// Handles `GET /api/refunds?payment_id=`.
#[utoipa::path(
    get,
    path = "/api/refunds",
    operation_id = "listRefunds",
    tag = "Payments",
    summary = "List refunds",
    params(crate::web::ListParams, ("payment_id" = Option<idem::Id>, Query, description = "filter: only this payment's refunds; a value matching nothing gives an empty page")),
    responses((status = 200, description = "A page of refunds, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Refund>))
)]
pub async fn list_refunds(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &["payment_id"])?;
    let payment = q.uuid_filter("payment_id")?;
    let rows: Vec<RefundRow> = super::list_rows(
        &state.db,
        COLUMNS,
        FROM,
        tenant.company_id,
        payment.map(|v| ("payment_id", super::Filter::Id(v))),
        &q,
    )
    .await?;
    let rows: Vec<Refund> = rows.into_iter().map(Refund::from).collect();
    Ok(ok_json(&page(rows, q.limit, |r| (r.created_at, r.id.0))))
}
