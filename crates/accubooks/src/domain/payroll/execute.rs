//! `executePayroll`: one stub per active employee; salaried gross = annual_salary / 24,
//! hourly = rate × hours, each rounded half away from zero to cents; checked sums.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use idem::{on_tx, Created, Event, ExecCtx, Existing, Id, Operation, Tx};
use serde_json::{Map, Value};
use sqlx::FromRow;
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::{Object, ObjectBuilder, Type};
use uuid::Uuid;

use super::{load_tx, location};
use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{parse_uuid, Validator};

/// Most hours in a period: 744.00 (31 days).
const MAX_HOURS: i64 = 74_400;

/// Body of `executePayroll`; period_start ≤ period_end ≤ pay_date, inclusive.
#[derive(utoipa::ToSchema)]
#[schema(as = PayrollRunIn)]
#[serde(deny_unknown_fields)]
struct RunIn {
    #[schema(schema_with = fields::date)]
    period_start: String,
    #[schema(schema_with = fields::date)]
    period_end: String,
    #[schema(schema_with = fields::date)]
    pay_date: String,
    /// (key as sent, employee id, hours in hundredths).
    #[schema(schema_with = hours_schema, required = false)]
    hours: Vec<(String, Uuid, i64)>,
}

/// `hours` on the wire: an optional object of employee id → hours as a decimal string.
fn hours_schema() -> Object {
    let max = Money(MAX_HOURS);
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(format!(
            "active hourly employee id → hours worked, \"0.00\"..\"{max}\" (strings)"
        )))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(crate::money::PATTERN))
                .description(Some(format!("hours, 0.00..{max}")))
                .examples(["125.00"]),
        ))
        .build()
}

fn parse_hours(v: &mut Validator, o: &Map<String, Value>) -> Vec<(String, Uuid, i64)> {
    let Some(h) = o.get("hours").filter(|x| !x.is_null()) else {
        return Vec::new();
    };
    let Some(h) = h.as_object() else {
        v.error("hours", "must be an object of employee id to hours");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, val) in h {
        let at = format!("hours.{k}");
        let Some(id) = parse_uuid(k) else {
            v.error(at, "must be the id of an active hourly employee");
            continue;
        };
        match val.as_str().and_then(Money::parse) {
            Some(m) if (0..=MAX_HOURS).contains(&m.0) => out.push((k.clone(), id, m.0)),
            _ => v.error(at, "must be a decimal string from 0.00 to 744.00"),
        }
    }
    out
}

fn parse(body: &Value) -> AppResult<RunIn> {
    let mut v = Validator::new();
    let allowed = ["period_start", "period_end", "pay_date", "hours"];
    let Some(o) = v.object(body, "", &allowed) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let start = v.date(o, "", "period_start", true);
    let end = v.date(o, "", "period_end", true);
    let pay = v.date(o, "", "pay_date", true);
    let hours = parse_hours(&mut v, o);
    if let (Some(s), Some(e), Some(p)) = (start, end, pay) {
        if s > e {
            v.error("period_end", "must not be before period_start");
        } else if e > p {
            v.error("pay_date", "must not be before period_end");
        }
    }
    v.finish()?;
    let fmt = |d: Option<NaiveDate>| {
        d.map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    Ok(RunIn {
        period_start: fmt(start),
        period_end: fmt(end),
        pay_date: fmt(pay),
        hours,
    })
}

#[derive(Debug, FromRow)]
struct ActiveEmployee {
    id: Id,
    pay_type: String,
    annual_salary: Option<i64>,
    hourly_rate: Option<i64>,
}

async fn active_employees(tx: &mut Tx, company: Uuid) -> AppResult<Vec<ActiveEmployee>> {
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, ActiveEmployee>(
        "select id, pay_type, annual_salary, hourly_rate from employees \
         where company_id = $1 and active = $2 order by created_at, id"
    )
    .bind(Id(company))
    .bind(true)
    .fetch_all(c)
    .await)?)
}

/// Every `hours` key must be an active hourly employee (422 at `hours.<key>`).
fn check_hours(input: &RunIn, staff: &[ActiveEmployee]) -> AppResult<HashMap<Uuid, i64>> {
    let mut v = Validator::new();
    let mut map = HashMap::new();
    for (key, id, h) in &input.hours {
        if map.contains_key(id) {
            v.error(format!("hours.{key}"), "names an employee twice");
        } else if staff
            .iter()
            .any(|e| e.id.0 == *id && e.pay_type == "hourly")
        {
            map.insert(*id, *h);
        } else {
            v.error(
                format!("hours.{key}"),
                "must be the id of an active hourly employee",
            );
        }
    }
    v.finish()?;
    Ok(map)
}

/// `num / den` rounded half away from zero, for `num >= 0`, `den > 0`.
fn div_round(num: i128, den: i128) -> i128 {
    (num + den / 2) / den
}

/// The stubs' gross amounts and their total, checked (422 naming the output field).
fn gross_amounts(
    staff: &[ActiveEmployee],
    hours: &HashMap<Uuid, i64>,
) -> AppResult<(Vec<Money>, Money)> {
    let mut out = Vec::with_capacity(staff.len());
    let mut total = Money(0);
    for (i, e) in staff.iter().enumerate() {
        let g = match (e.pay_type.as_str(), e.annual_salary, e.hourly_rate) {
            ("salary", Some(s), _) => div_round(i128::from(s), 24),
            (_, _, Some(r)) => div_round(
                i128::from(r) * i128::from(hours.get(&e.id.0).copied().unwrap_or(0)),
                100,
            ),
            _ => 0,
        };
        let g = i64::try_from(g)
            .ok()
            .map(Money)
            .filter(|m| m.in_range())
            .ok_or_else(|| {
                AppError::field(format!("stubs[{i}].gross"), "exceeds 12 integer digits")
            })?;
        total = total
            .checked_add(g)
            .ok_or_else(|| AppError::field("total_gross", "exceeds 12 integer digits"))?;
        out.push(g);
    }
    Ok((out, total))
}

async fn overlaps(tx: &mut Tx, company: Uuid, input: &RunIn) -> AppResult<bool> {
    let n: Option<i32> = on_tx!(tx, |c| sqlx::query_scalar(
        "select 1 from payroll_runs where company_id = $1 and period_start <= $2 \
         and period_end >= $3 limit 1"
    )
    .bind(Id(company))
    .bind(&input.period_end)
    .bind(&input.period_start)
    .fetch_optional(c)
    .await)?;
    Ok(n.is_some())
}

struct ExecutePayroll {
    company: Uuid,
    body: Value,
}

impl ExecutePayroll {
    async fn insert(
        &self,
        ctx: &mut ExecCtx<'_>,
        input: &RunIn,
        staff: &[ActiveEmployee],
        gross: &[Money],
        total: Money,
    ) -> AppResult<()> {
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| {
            sqlx::query(
            "insert into payroll_runs (company_id, id, period_start, period_end, pay_date, total_gross, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(&input.period_start)
        .bind(&input.period_end)
        .bind(&input.pay_date)
        .bind(total.0)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        for (pos, (e, g)) in staff.iter().zip(gross).enumerate() {
            let pos = i32::try_from(pos).unwrap_or(i32::MAX);
            on_tx!(ctx.tx(), |c| sqlx::query(
                "insert into payroll_stubs (company_id, run_id, id, position, employee_id, gross) \
                 values ($1, $2, $3, $4, $5, $6)"
            )
            .bind(Id(self.company))
            .bind(Id(id))
            .bind(Id(Uuid::now_v7()))
            .bind(pos)
            .bind(e.id)
            .bind(g.0)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        }
        Ok(())
    }
}

impl Operation for ExecutePayroll {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = crate::domain::record_fingerprint(tx, "payroll_runs", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let run = load_tx(tx, self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("payroll run vanished".into()))?;
        crate::domain::existing(fp, &run, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        crate::domain::lock_company(ctx.tx(), self.company).await?;
        let staff = active_employees(ctx.tx(), self.company).await?;
        let hours = check_hours(&input, &staff)?;
        let (gross, total) = gross_amounts(&staff, &hours)?;
        if staff.is_empty() {
            return Err(AppError::rule(
                "no_active_employees",
                "the company has no active employees",
            ));
        }
        if overlaps(ctx.tx(), self.company, &input).await? {
            return Err(AppError::rule(
                "payroll_period_already_executed",
                format!(
                    "{}..{} overlaps an executed payroll run",
                    input.period_start, input.period_end
                ),
            ));
        }
        self.insert(ctx, &input, &staff, &gross, total).await?;
        let id = ctx.id();
        ctx.emit(&[Event::new("payroll.executed", "payroll_run", id)])
            .await?;
        let run = load_tx(ctx.tx(), self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("payroll run vanished".into()))?;
        crate::domain::created(&run, Some(location(id)))
    }
}

/// Handles `POST /api/payroll-runs`.
#[utoipa::path(
    post,
    path = crate::ops::EXECUTE_PAYROLL.route(),
    operation_id = crate::ops::EXECUTE_PAYROLL.name(),
    tag = "Payroll",
    summary = "Execute a payroll run",
    description = "Creates one stub per active employee: salaried gross = annual_salary / \
                      24, hourly = rate × hours (0.00 without hours), rounded half away from \
                      zero. `hours` keys must be active hourly employees of the company (else \
                      422 `validation_failed` at `hours.<key>`, never 404). Emits \
                      `payroll.executed`.",
    request_body = RunIn,
    responses((status = 201, body = crate::domain::payroll::PayrollRun))
)]
pub async fn execute_payroll(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| ExecutePayroll {
        company,
        body,
    })
    .await
}
