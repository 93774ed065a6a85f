//! Payroll runs: `executePayroll`, reads and lists.
//!
//! Invariant: no two executed runs of a company have overlapping inclusive periods. The
//! overlap is checked under the company row's lock (PostgreSQL; the write gate on SQLite),
//! so concurrent runs for one period serialize and exactly one executes.

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

mod execute;

pub use execute::{__path_execute_payroll, execute_payroll};

#[derive(Debug, Clone, FromRow)]
struct RunRow {
    id: Id,
    period_start: String,
    period_end: String,
    pay_date: String,
    total_gross: i64,
    created_at: Ts,
}

#[derive(Debug, Clone, FromRow)]
struct PageStubRow {
    run_id: Id,
    #[sqlx(flatten)]
    stub: StubRow,
}

#[derive(Debug, Clone, FromRow)]
struct StubRow {
    id: Id,
    employee_id: Id,
    gross: i64,
}

/// A pay stub, as rendered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stub {
    id: Id,
    employee_id: Id,
    gross: Money,
}

/// A payroll run, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PayrollRun {
    id: Id,
    #[schema(format = Date)]
    period_start: String,
    #[schema(format = Date)]
    period_end: String,
    #[schema(format = Date)]
    pay_date: String,
    stubs: Vec<Stub>,
    total_gross: Money,
    created_at: Ts,
}

impl PayrollRun {
    fn new(r: RunRow, stubs: Vec<StubRow>) -> Self {
        PayrollRun {
            id: r.id,
            period_start: r.period_start,
            period_end: r.period_end,
            pay_date: r.pay_date,
            stubs: stubs
                .into_iter()
                .map(|s| Stub {
                    id: s.id,
                    employee_id: s.employee_id,
                    gross: Money(s.gross),
                })
                .collect(),
            total_gross: Money(r.total_gross),
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "id, period_start, period_end, pay_date, total_gross, created_at";
const STUBS: &str = "select id, employee_id, gross from payroll_stubs \
                     where company_id = $1 and run_id = $2 order by position";

fn location(id: Uuid) -> String {
    format!("/api/payroll-runs/{id}")
}

/// Loads a run with its stubs inside a write.
async fn load_tx(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<PayrollRun>> {
    let sql = format!("select {COLUMNS} from payroll_runs where company_id = $1 and id = $2");
    let Some(row) = on_tx!(tx, |c| sqlx::query_as::<_, RunRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?
    else {
        return Ok(None);
    };
    let stubs = on_tx!(tx, |c| sqlx::query_as::<_, StubRow>(STUBS)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_all(c)
        .await)?;
    Ok(Some(PayrollRun::new(row, stubs)))
}

async fn with_stubs(db: &Db, company: Uuid, row: RunRow) -> AppResult<PayrollRun> {
    let id = row.id;
    let stubs = on_db!(db, |c| sqlx::query_as::<_, StubRow>(STUBS)
        .bind(Id(company))
        .bind(id)
        .fetch_all(c)
        .await)?;
    Ok(PayrollRun::new(row, stubs))
}

/// The stubs of a page of runs, in one query.
async fn page_stubs(
    db: &Db,
    company: Uuid,
    rows: &[RunRow],
) -> AppResult<HashMap<Uuid, Vec<StubRow>>> {
    let mut out: HashMap<Uuid, Vec<StubRow>> = HashMap::new();
    if rows.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "select run_id, id, employee_id, gross from payroll_stubs \
         where company_id = $1 and run_id in ({}) order by run_id, position",
        super::placeholders(2, rows.len())
    );
    let stubs = on_db!(db, |c| {
        let mut query = sqlx::query_as::<_, PageStubRow>(&sql).bind(Id(company));
        for r in rows {
            query = query.bind(r.id);
        }
        query.fetch_all(c).await
    })?;
    for s in stubs {
        out.entry(s.run_id.0).or_default().push(s.stub);
    }
    Ok(out)
}

/// Handles `GET /api/payroll-runs/{id}`.
#[utoipa::path(
    get,
    path = "/api/payroll-runs/{id}",
    operation_id = "getPayrollRun",
    tag = "Payroll",
    summary = "Get a payroll run",
    responses(
        (status = 200, description = "The payroll run, in the shape its create returned.", body = PayrollRun),
        (status = 404, description = "no payroll run with this id in your company (or a malformed id)")
    )
)]
pub async fn get_payroll_run(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row = super::find_row::<RunRow>(&state.db, COLUMNS, "payroll_runs", tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("payroll run {id} does not exist")))?;
    Ok(ok_json(
        &with_stubs(&state.db, tenant.company_id, row).await?,
    ))
}

/// Handles `GET /api/payroll-runs`.
#[utoipa::path(
    get,
    path = "/api/payroll-runs",
    operation_id = "listPayrollRuns",
    tag = "Payroll",
    summary = "List payroll runs",
    params(crate::web::ListParams),
    responses((status = 200, description = "A page of payroll runs, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<PayrollRun>))
)]
pub async fn list_payroll_runs(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &[])?;
    let rows: Vec<RunRow> = super::list_rows(
        &state.db,
        COLUMNS,
        "payroll_runs",
        tenant.company_id,
        None,
        &q,
    )
    .await?;
    let mut stubs = page_stubs(&state.db, tenant.company_id, &rows).await?;
    let out: Vec<PayrollRun> = rows
        .into_iter()
        .map(|r| {
            let s = stubs.remove(&r.id.0).unwrap_or_default();
            PayrollRun::new(r, s)
        })
        .collect();
    Ok(ok_json(&page(out, q.limit, |r| (r.created_at, r.id.0))))
}
