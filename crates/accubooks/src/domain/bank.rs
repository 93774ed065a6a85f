//! Bank transactions: `createBankTransaction`, `reconcileLedger`, reads and lists.
//!
//! Invariant: a transaction and a payment are each matched at most once (decided under
//! their row locks, and backed by unique constraints on `reconciliations`).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Sign, Validator, TEXT_MAX};
use crate::web::{ok_json, page, IdPath, ListQuery};

mod reconcile;

pub use reconcile::{__path_reconcile_ledger, reconcile_ledger};

#[derive(Debug, Clone, FromRow)]
struct TransactionRow {
    id: Id,
    amount: i64,
    posted_on: String,
    description: String,
    reconciled: bool,
    payment_id: Option<Id>,
    reconciled_at: Option<Ts>,
    created_at: Ts,
}

/// A bank transaction, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BankTransaction {
    id: Id,
    amount: Money,
    #[schema(format = Date)]
    posted_on: String,
    description: String,
    reconciled: bool,
    #[schema(required = true)]
    payment_id: Option<Id>,
    #[schema(required = true)]
    reconciled_at: Option<Ts>,
    created_at: Ts,
}

impl From<TransactionRow> for BankTransaction {
    fn from(r: TransactionRow) -> Self {
        BankTransaction {
            id: r.id,
            amount: Money(r.amount),
            posted_on: r.posted_on,
            description: r.description,
            reconciled: r.reconciled,
            payment_id: r.payment_id,
            reconciled_at: r.reconciled_at,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str =
    "id, amount, posted_on, description, reconciled, payment_id, reconciled_at, created_at";

fn location(id: Uuid) -> String {
    format!("/api/bank-transactions/{id}")
}

/// Loads a transaction inside a write; with `lock`, holds its row lock (PostgreSQL).
async fn load_tx(
    tx: &mut Tx,
    company: Uuid,
    id: Uuid,
    lock: bool,
) -> AppResult<Option<BankTransaction>> {
    let sql = format!(
        "select {COLUMNS} from bank_transactions where company_id = $1 and id = $2{}",
        if lock { tx.for_update() } else { "" }
    );
    let row = on_tx!(tx, |c| sqlx::query_as::<_, TransactionRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
    Ok(row.map(BankTransaction::from))
}

/// Body of `createBankTransaction`.
#[derive(utoipa::ToSchema)]
#[schema(as = BankTransactionIn)]
#[serde(deny_unknown_fields)]
struct TransactionIn {
    /// ≠ 0; may be negative.
    amount: Money,
    #[schema(schema_with = fields::date)]
    posted_on: String,
    #[schema(schema_with = fields::text::<TEXT_MAX>)]
    description: String,
}

fn parse(body: &Value) -> AppResult<TransactionIn> {
    let mut v = Validator::new();
    let Some(o) = v.object(body, "", &["amount", "posted_on", "description"]) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let amount = v.money(o, "", "amount", Sign::NonZero, true);
    let posted_on = v.date(o, "", "posted_on", true);
    let description = v.text(o, "", "description", TEXT_MAX, true);
    v.finish()?;
    Ok(TransactionIn {
        amount: amount.unwrap_or_default(),
        posted_on: posted_on
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        description: description.unwrap_or_default(),
    })
}

struct CreateBankTransaction {
    company: Uuid,
    body: Value,
}

impl Operation for CreateBankTransaction {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp: Option<String> = on_tx!(tx, |c| {
            sqlx::query_scalar(
            "select request_fingerprint from bank_transactions where company_id = $1 and id = $2"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await
        })?;
        let Some(fp) = fp else { return Ok(None) };
        let t = load_tx(tx, self.company, id, false)
            .await?
            .ok_or_else(|| AppError::Internal("bank transaction vanished".into()))?;
        super::existing(fp, &t, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        let t = BankTransaction {
            id: Id(ctx.id()),
            amount: input.amount,
            posted_on: input.posted_on,
            description: input.description,
            reconciled: false,
            payment_id: None,
            reconciled_at: None,
            created_at: ctx.now(),
        };
        let fp = ctx.fingerprint().to_owned();
        on_tx!(ctx.tx(), |c| {
            sqlx::query(
            "insert into bank_transactions (company_id, id, amount, posted_on, description, reconciled, \
             payment_id, reconciled_at, request_fingerprint, created_at) \
             values ($1, $2, $3, $4, $5, $6, null, null, $7, $8)"
        )
        .bind(Id(self.company))
        .bind(t.id)
        .bind(t.amount.0)
        .bind(&t.posted_on)
        .bind(&t.description)
        .bind(false)
        .bind(&fp)
        .bind(t.created_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        super::created(&t, Some(location(t.id.0)))
    }
}

/// Handles `POST /api/bank-transactions`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_BANK_TRANSACTION.route(),
    operation_id = crate::ops::CREATE_BANK_TRANSACTION.name(),
    tag = "Banking",
    summary = "Record a bank transaction",
    description = "Records an unreconciled bank transaction (`reconciled: false`, \
                      `payment_id: null`).",
    request_body = TransactionIn,
    responses((status = 201, body = crate::domain::bank::BankTransaction))
)]
pub async fn create_bank_transaction(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| {
        CreateBankTransaction { company, body }
    })
    .await
}

/// Handles `GET /api/bank-transactions/{id}`.
#[utoipa::path(
    get,
    path = "/api/bank-transactions/{id}",
    operation_id = "getBankTransaction",
    tag = "Banking",
    summary = "Get a bank transaction",
    responses(
        (status = 200, description = "The bank transaction, in the shape its create returned.", body = BankTransaction),
        (status = 404, description = "no bank transaction with this id in your company (or a malformed id)")
    )
)]
pub async fn get_bank_transaction(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row = super::find_row::<TransactionRow>(
        &state.db,
        COLUMNS,
        "bank_transactions",
        tenant.company_id,
        id,
    )
    .await?
    .ok_or_else(|| AppError::not_found(format!("bank transaction {id} does not exist")))?;
    Ok(ok_json(&BankTransaction::from(row)))
}

/// Handles `GET /api/bank-transactions?reconciled=`.
#[utoipa::path(
    get,
    path = "/api/bank-transactions",
    operation_id = "listBankTransactions",
    tag = "Banking",
    summary = "List bank transactions",
    params(crate::web::ListParams, ("reconciled" = Option<String>, Query, description = "filter: `true` or `false`; a value matching nothing gives an empty page")),
    responses((status = 200, description = "A page of bank transactions, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<BankTransaction>))
)]
pub async fn list_bank_transactions(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &["reconciled"])?;
    let reconciled = q.bool_filter("reconciled")?;
    let rows: Vec<TransactionRow> = super::list_rows(
        &state.db,
        COLUMNS,
        "bank_transactions",
        tenant.company_id,
        reconciled.map(|v| ("reconciled", super::Filter::Bool(v))),
        &q,
    )
    .await?;
    let rows: Vec<BankTransaction> = rows.into_iter().map(BankTransaction::from).collect();
    Ok(ok_json(&page(rows, q.limit, |t| (t.created_at, t.id.0))))
}
