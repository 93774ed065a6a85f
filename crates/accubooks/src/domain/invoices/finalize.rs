//! `finalizeInvoice`: draft → open (paid at total 0.00) with a gap-free per-company
//! number. The number comes from the company's counter row, incremented by an upsert in
//! the finalizing transaction: the upsert's row lock serializes concurrent finalizations
//! (PostgreSQL), the write gate does on SQLite, and a failed finalization rolls its
//! increment back, so numbers have no gaps.

use axum::extract::State;
use axum::response::Response;
use idem::{on_tx, Created, Event, ExecCtx, Existing, Id, Operation, Tx};
use serde_json::Value;
use uuid::Uuid;

use super::{load_tx, lock, missing};
use crate::auth::{Need, Tenant};
use crate::domain::settings;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::web::IdPath;

struct FinalizeInvoice {
    company: Uuid,
    invoice: Uuid,
    body: Value,
}

async fn next_number(tx: &mut Tx, company: Uuid) -> AppResult<i64> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "insert into invoice_counters (company_id, last_number) values ($1, 1) \
         on conflict (company_id) do update set last_number = invoice_counters.last_number + 1 \
         returning last_number"
    )
    .bind(Id(company))
    .fetch_one(c)
    .await)?)
}

impl FinalizeInvoice {
    async fn finalize(&self, ctx: &mut ExecCtx<'_>) -> AppResult<()> {
        let inv = lock(ctx.tx(), self.company, self.invoice)
            .await?
            .ok_or_else(|| missing(self.invoice))?;
        if inv.status != "draft" {
            return Err(AppError::rule(
                "invoice_not_draft",
                format!("invoice {} is {}, not draft", self.invoice, inv.status),
            ));
        }
        let prefix = settings::current(ctx.tx(), self.company, true)
            .await?
            .invoice_prefix;
        let number = format!("{prefix}{:06}", next_number(ctx.tx(), self.company).await?);
        let status = if inv.total == 0 { "paid" } else { "open" };
        on_tx!(ctx.tx(), |c| sqlx::query(
            "update invoices set status = $1, number = $2 where company_id = $3 and id = $4"
        )
        .bind(status)
        .bind(&number)
        .bind(Id(self.company))
        .bind(Id(self.invoice))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into invoice_finalizations (company_id, id, invoice_id, number, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(self.invoice))
        .bind(&number)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}

impl Operation for FinalizeInvoice {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let row: Option<(String, Id)> = on_tx!(tx, |c| sqlx::query_as(
            "select request_fingerprint, invoice_id from invoice_finalizations \
             where company_id = $1 and id = $2"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
        let Some((fp, invoice)) = row else {
            return Ok(None);
        };
        let invoice = load_tx(tx, self.company, invoice.0)
            .await?
            .ok_or_else(|| AppError::Internal("finalized invoice vanished".into()))?;
        crate::domain::existing(fp, &invoice, None).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        crate::domain::parse_empty(&self.body)?;
        self.finalize(ctx).await?;
        let id = ctx.id();
        ctx.emit(&[Event::new("invoice.finalized", "invoice_finalization", id)])
            .await?;
        let invoice = load_tx(ctx.tx(), self.company, self.invoice)
            .await?
            .ok_or_else(|| missing(self.invoice))?;
        crate::domain::created(&invoice, None)
    }
}

/// Handles `POST /api/invoices/{id}/finalize`.
#[utoipa::path(
    post,
    path = crate::ops::FINALIZE_INVOICE.route(),
    operation_id = crate::ops::FINALIZE_INVOICE.name(),
    tag = "Invoices",
    summary = "Finalize a draft invoice",
    description = "Numbers the invoice with the company's `invoice_prefix` and a gap-free \
                      sequence (`INV-000001`) and opens it (`paid` when its total is 0.00). \
                      The body must be `{}` or empty. The record is the finalization; a retry \
                      after expiry returns the invoice as it is now. Emits `invoice.finalized`.",
    request_body = crate::domain::EmptyIn,
    responses((status = 201, body = crate::domain::invoices::Invoice), (status = 404, description = "the invoice does not exist in your company"))
)]
pub async fn finalize_invoice(
    IdPath(invoice): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| {
        FinalizeInvoice {
            company,
            invoice,
            body,
        }
    })
    .await
}
