//! `reconcileLedger`: matches a bank transaction to a payment of the same amount, once.
//! Locks the transaction, then the payment (always in that order); a second match of
//! either is `already_reconciled`.

use axum::extract::State;
use axum::response::Response;
use idem::{on_tx, Created, ExecCtx, Existing, Id, Operation, Tx};
use serde_json::Value;
use uuid::Uuid;

use super::load_tx;
use crate::auth::{Need, Tenant};
use crate::domain::payments;
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::Validator;
use crate::web::IdPath;

struct ReconcileLedger {
    company: Uuid,
    transaction: Uuid,
    body: Value,
}

/// Body of `reconcileLedger`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReconcileIn {
    #[schema(schema_with = fields::id)]
    payment_id: Uuid,
}

fn parse(body: &Value) -> AppResult<ReconcileIn> {
    let mut v = Validator::new();
    let payment = v
        .object(body, "", &["payment_id"])
        .and_then(|o| v.uuid(o, "", "payment_id", true));
    v.finish()?;
    let payment_id =
        payment.ok_or_else(|| AppError::Internal("unreachable: payment_id checked".into()))?;
    Ok(ReconcileIn { payment_id })
}

async fn payment_matched(tx: &mut Tx, company: Uuid, payment: Uuid) -> AppResult<bool> {
    let n: Option<i32> = on_tx!(tx, |c| sqlx::query_scalar(
        "select 1 from reconciliations where company_id = $1 and payment_id = $2"
    )
    .bind(Id(company))
    .bind(Id(payment))
    .fetch_optional(c)
    .await)?;
    Ok(n.is_some())
}

impl ReconcileLedger {
    /// Checks references and rules under the locks; returns nothing when the match holds.
    async fn check(&self, tx: &mut Tx, payment: Uuid) -> AppResult<()> {
        let t = load_tx(tx, self.company, self.transaction, true)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!(
                    "bank transaction {} does not exist",
                    self.transaction
                ))
            })?;
        let p = payments::amounts(tx, self.company, payment, true)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!("payment_id: payment {payment} does not exist"))
            })?;
        if t.reconciled || payment_matched(tx, self.company, payment).await? {
            return Err(AppError::rule(
                "already_reconciled",
                "the transaction or the payment is already reconciled",
            ));
        }
        if t.amount.0 != p.amount {
            return Err(AppError::rule(
                "amount_mismatch",
                format!("transaction amount {} differs from the payment's", t.amount),
            ));
        }
        Ok(())
    }

    async fn record(&self, ctx: &mut ExecCtx<'_>, payment: Uuid) -> AppResult<()> {
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "update bank_transactions set reconciled = $1, payment_id = $2, reconciled_at = $3 \
             where company_id = $4 and id = $5"
        )
        .bind(true)
        .bind(Id(payment))
        .bind(now)
        .bind(Id(self.company))
        .bind(Id(self.transaction))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into reconciliations (company_id, id, bank_transaction_id, payment_id, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(self.transaction))
        .bind(Id(payment))
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}

impl Operation for ReconcileLedger {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let row: Option<(String, Id)> = on_tx!(tx, |c| sqlx::query_as(
            "select request_fingerprint, bank_transaction_id from reconciliations \
             where company_id = $1 and id = $2"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
        let Some((fp, t)) = row else { return Ok(None) };
        let t = load_tx(tx, self.company, t.0, false)
            .await?
            .ok_or_else(|| AppError::Internal("reconciled transaction vanished".into()))?;
        crate::domain::existing(fp, &t, None).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let payment = parse(&self.body)?.payment_id;
        self.check(ctx.tx(), payment).await?;
        self.record(ctx, payment).await?;
        let t = load_tx(ctx.tx(), self.company, self.transaction, false)
            .await?
            .ok_or_else(|| AppError::Internal("transaction vanished".into()))?;
        crate::domain::created(&t, None)
    }
}

/// Handles `POST /api/bank-transactions/{id}/reconcile`.
#[utoipa::path(
    post,
    path = crate::ops::RECONCILE_LEDGER.route(),
    operation_id = crate::ops::RECONCILE_LEDGER.name(),
    tag = "Banking",
    summary = "Reconcile a bank transaction with a payment",
    description = "Matches the transaction with a payment of the same original amount. The \
                      record is the reconciliation; a retry after expiry returns the bank \
                      transaction as it is now.",
    request_body = ReconcileIn,
    responses((status = 201, body = crate::domain::bank::BankTransaction), (status = 404, description = "the bank transaction or `payment_id` does not exist in your company"))
)]
pub async fn reconcile_ledger(
    IdPath(transaction): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| {
        ReconcileLedger {
            company,
            transaction,
            body,
        }
    })
    .await
}
