//! `createInvoice`: a draft invoice with its line items; amounts and the total are
//! computed with checked arithmetic (beyond 12 integer digits → 422 naming the field).

use axum::extract::State;
use axum::response::Response;
use chrono::{Days, NaiveDate};
use idem::{on_tx, Created, Event, ExecCtx, Existing, Id, Operation, Tx};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{load_tx, location};
use crate::auth::{Need, Tenant};
use crate::domain::{customers, settings};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Sign, Validator, TEXT_MAX};

/// Most line items of an invoice (the schema's `maxItems` states it too; a test checks).
const LINE_ITEMS_MAX: usize = 100;
/// Largest quantity of a line.
const QUANTITY_MAX: i64 = 1_000_000;

/// An invoice line.
#[derive(utoipa::ToSchema)]
#[schema(as = LineItemIn)]
#[serde(deny_unknown_fields)]
struct LineIn {
    #[schema(schema_with = fields::text::<TEXT_MAX>)]
    description: String,
    #[schema(schema_with = fields::integer::<1, QUANTITY_MAX>)]
    quantity: i64,
    /// ≥ 0.
    unit_price: Money,
    /// Computed: `unit_price` × `quantity`.
    #[schema(ignore)]
    amount: Money,
}

/// Body of `createInvoice`. Defaults: the settings' currency; due date = UTC creation date +
/// `payment_terms_days`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InvoiceIn {
    #[schema(schema_with = fields::id)]
    customer_id: Uuid,
    #[schema(schema_with = fields::currency_or_null)]
    currency: Option<String>,
    #[schema(schema_with = fields::date_or_null)]
    due_date: Option<NaiveDate>,
    #[schema(min_items = 1, max_items = 100)]
    line_items: Vec<LineIn>,
    /// Computed: the sum of the line amounts.
    #[schema(ignore)]
    total: Money,
}

fn parse_line(v: &mut Validator, item: &Value, at: &str) -> Option<LineIn> {
    let o = v.object(item, at, &["description", "quantity", "unit_price"])?;
    let description = v.text(o, at, "description", TEXT_MAX, true);
    let quantity = v.integer(o, at, "quantity", 1, QUANTITY_MAX, true);
    let unit_price = v.money(o, at, "unit_price", Sign::NonNegative, true);
    let (description, quantity, unit_price) = (description?, quantity?, unit_price?);
    let Some(amount) = unit_price.checked_mul(quantity) else {
        v.error(format!("{at}.amount"), "exceeds 12 integer digits");
        return None;
    };
    Some(LineIn {
        description,
        quantity,
        unit_price,
        amount,
    })
}

fn parse_lines(v: &mut Validator, o: &Map<String, Value>) -> Vec<LineIn> {
    let Some(items) = o.get("line_items").filter(|x| !x.is_null()) else {
        v.error("line_items", "is required");
        return Vec::new();
    };
    let Some(items) = items
        .as_array()
        .filter(|a| (1..=LINE_ITEMS_MAX).contains(&a.len()))
    else {
        v.error(
            "line_items",
            format!("must be an array of 1 to {LINE_ITEMS_MAX} line items"),
        );
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_line(v, item, &format!("line_items[{i}]")))
        .collect()
}

fn parse(body: &Value) -> AppResult<InvoiceIn> {
    let mut v = Validator::new();
    let allowed = ["customer_id", "currency", "due_date", "line_items"];
    let Some(o) = v.object(body, "", &allowed) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let customer_id = v.uuid(o, "", "customer_id", true);
    let currency = v.currency(o, "", "currency", false);
    let due_date = v.date(o, "", "due_date", false);
    let line_items = parse_lines(&mut v, o);
    let total = if v.has_errors() {
        None
    } else {
        let t = line_items
            .iter()
            .try_fold(Money(0), |acc, l| acc.checked_add(l.amount));
        if t.is_none() {
            v.error("total", "exceeds 12 integer digits");
        }
        t
    };
    v.finish()?;
    Ok(InvoiceIn {
        customer_id: customer_id.unwrap_or_default(),
        currency,
        due_date,
        line_items,
        total: total.unwrap_or_default(),
    })
}

struct CreateInvoice {
    company: Uuid,
    body: Value,
}

impl CreateInvoice {
    async fn insert(&self, ctx: &mut ExecCtx<'_>, input: &InvoiceIn) -> AppResult<()> {
        let s = settings::current(ctx.tx(), self.company, false).await?;
        let currency = input.currency.clone().unwrap_or(s.currency);
        let terms = u64::try_from(s.payment_terms_days).unwrap_or(0);
        let due = match input.due_date {
            Some(d) => d,
            None => ctx
                .now()
                .date()
                .checked_add_days(Days::new(terms))
                .ok_or_else(|| AppError::Internal("due date out of range".into()))?,
        };
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| {
            sqlx::query(
            "insert into invoices (company_id, id, customer_id, currency, due_date, status, number, \
             total, amount_paid, request_fingerprint, created_at) \
             values ($1, $2, $3, $4, $5, 'draft', null, $6, 0, $7, $8)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(input.customer_id))
        .bind(&currency)
        .bind(due.format("%Y-%m-%d").to_string())
        .bind(input.total.0)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        insert_lines(ctx.tx(), self.company, id, &input.line_items).await
    }
}

async fn insert_lines(
    tx: &mut Tx,
    company: Uuid,
    invoice: Uuid,
    lines: &[LineIn],
) -> AppResult<()> {
    for (pos, l) in lines.iter().enumerate() {
        let pos = i32::try_from(pos).unwrap_or(i32::MAX);
        on_tx!(tx, |c| sqlx::query(
            "insert into invoice_line_items (company_id, invoice_id, id, position, description, \
             quantity, unit_price, amount) values ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(Id(company))
        .bind(Id(invoice))
        .bind(Id(Uuid::now_v7()))
        .bind(pos)
        .bind(&l.description)
        .bind(l.quantity)
        .bind(l.unit_price.0)
        .bind(l.amount.0)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

impl Operation for CreateInvoice {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = crate::domain::record_fingerprint(tx, "invoices", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let invoice = load_tx(tx, self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("invoice vanished".into()))?;
        crate::domain::existing(fp, &invoice, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        if !customers::exists(ctx.tx(), self.company, input.customer_id).await? {
            return Err(AppError::not_found(format!(
                "customer_id: customer {} does not exist",
                input.customer_id
            )));
        }
        self.insert(ctx, &input).await?;
        let id = ctx.id();
        ctx.emit(&[Event::new("invoice.created", "invoice", id)])
            .await?;
        let invoice = load_tx(ctx.tx(), self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("invoice vanished".into()))?;
        crate::domain::created(&invoice, Some(location(id)))
    }
}

/// Handles `POST /api/invoices`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_INVOICE.route(),
    operation_id = crate::ops::CREATE_INVOICE.name(),
    tag = "Invoices",
    summary = "Create a draft invoice",
    description = "Creates a `draft` invoice with `number: null`; line amounts and totals \
                      are computed with checked arithmetic (a computed amount beyond 12 integer \
                      digits → 422 naming that field). Emits `invoice.created`.",
    request_body = InvoiceIn,
    responses((status = 201, body = crate::domain::invoices::Invoice), (status = 404, description = "`customer_id` does not exist in your company (the detail names the field)"))
)]
pub async fn create_invoice(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| CreateInvoice {
        company,
        body,
    })
    .await
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn the_schema_states_the_parsers_line_item_limits() {
        let schema = serde_json::to_value(InvoiceIn::schema()).unwrap_or_default();
        let lines = &schema["properties"]["line_items"];
        assert_eq!(lines["minItems"], 1);
        assert_eq!(lines["maxItems"], LINE_ITEMS_MAX);
    }
}
