//! Employees: `createEmployee`, reads and lists.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, Db, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use super::WithFingerprint;
use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Sign, Validator, NAME_MAX};
use crate::web::{ok_json, page, IdPath, ListQuery};

#[derive(Debug, Clone, FromRow)]
struct EmployeeRow {
    id: Id,
    name: String,
    email: Option<String>,
    pay_type: String,
    annual_salary: Option<i64>,
    hourly_rate: Option<i64>,
    active: bool,
    created_at: Ts,
}

const PAY_TYPES: &[&str] = &["salary", "hourly"];

fn pay_type_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(PAY_TYPES)
}

/// An employee, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Employee {
    id: Id,
    name: String,
    #[schema(required = true)]
    email: Option<String>,
    #[schema(schema_with = pay_type_schema)]
    pay_type: String,
    /// Set for `salary`, else null.
    #[schema(required = true)]
    annual_salary: Option<Money>,
    /// Set for `hourly`, else null.
    #[schema(required = true)]
    hourly_rate: Option<Money>,
    active: bool,
    created_at: Ts,
}

impl From<EmployeeRow> for Employee {
    fn from(r: EmployeeRow) -> Self {
        Employee {
            id: r.id,
            name: r.name,
            email: r.email,
            pay_type: r.pay_type,
            annual_salary: r.annual_salary.map(Money),
            hourly_rate: r.hourly_rate.map(Money),
            active: r.active,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "id, name, email, pay_type, annual_salary, hourly_rate, active, created_at";

fn location(id: Uuid) -> String {
    format!("/api/employees/{id}")
}

/// Body of `createEmployee`: exactly the one of `annual_salary` / `hourly_rate` that
/// matches `pay_type`, > 0.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EmployeeIn {
    #[schema(schema_with = fields::text::<NAME_MAX>)]
    name: String,
    #[schema(schema_with = fields::email_or_null)]
    email: Option<String>,
    #[schema(schema_with = pay_type_schema)]
    pay_type: &'static str,
    /// > 0; required for `salary`.
    annual_salary: Option<Money>,
    /// > 0; required for `hourly`.
    hourly_rate: Option<Money>,
}

fn parse(body: &Value) -> AppResult<EmployeeIn> {
    let mut v = Validator::new();
    let Some(o) = v.object(
        body,
        "",
        &["name", "email", "pay_type", "annual_salary", "hourly_rate"],
    ) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let name = v.text(o, "", "name", NAME_MAX, true);
    let email = v.email(o, "", "email", false);
    let pay_type = v.one_of(o, "", "pay_type", PAY_TYPES, true);
    let (mut annual_salary, mut hourly_rate) = (None, None);
    match pay_type {
        Some("salary") => {
            annual_salary = v.money(o, "", "annual_salary", Sign::Positive, true);
            if !o.get("hourly_rate").is_none_or(Value::is_null) {
                v.error("hourly_rate", "must be absent when pay_type is salary");
            }
        }
        Some(_) => {
            hourly_rate = v.money(o, "", "hourly_rate", Sign::Positive, true);
            if !o.get("annual_salary").is_none_or(Value::is_null) {
                v.error("annual_salary", "must be absent when pay_type is hourly");
            }
        }
        None => {}
    }
    v.finish()?;
    Ok(EmployeeIn {
        name: name.unwrap_or_default(),
        email,
        pay_type: pay_type.unwrap_or("salary"),
        annual_salary,
        hourly_rate,
    })
}

/// Loads an employee of `company`.
pub async fn find(db: &Db, company: Uuid, id: Uuid) -> AppResult<Option<Employee>> {
    let row = super::find_row::<EmployeeRow>(db, COLUMNS, "employees", company, id).await?;
    Ok(row.map(Employee::from))
}

struct CreateEmployee {
    company: Uuid,
    body: Value,
}

impl Operation for CreateEmployee {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let sql = format!("select request_fingerprint, {COLUMNS} from employees where company_id = $1 and id = $2");
        let row = on_tx!(tx, |c| sqlx::query_as::<_, WithFingerprint<EmployeeRow>>(
            &sql
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
        row.map(|r| {
            super::existing(
                r.request_fingerprint,
                &Employee::from(r.entity),
                Some(location(id)),
            )
        })
        .transpose()
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        let employee = Employee {
            id: Id(ctx.id()),
            name: input.name,
            email: input.email,
            pay_type: input.pay_type.to_owned(),
            annual_salary: input.annual_salary,
            hourly_rate: input.hourly_rate,
            active: true,
            created_at: ctx.now(),
        };
        let fingerprint = ctx.fingerprint().to_owned();
        on_tx!(ctx.tx(), |c| {
            sqlx::query(
            "insert into employees (company_id, id, name, email, pay_type, annual_salary, hourly_rate, \
             active, request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        .bind(Id(self.company))
        .bind(employee.id)
        .bind(&employee.name)
        .bind(employee.email.as_deref())
        .bind(&employee.pay_type)
        .bind(employee.annual_salary.map(|m| m.0))
        .bind(employee.hourly_rate.map(|m| m.0))
        .bind(employee.active)
        .bind(&fingerprint)
        .bind(employee.created_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        super::created(&employee, Some(location(employee.id.0)))
    }
}

/// Handles `POST /api/employees`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_EMPLOYEE.route(),
    operation_id = crate::ops::CREATE_EMPLOYEE.name(),
    tag = "Employees",
    summary = "Create an employee",
    description = "Creates an active employee paid a salary or an hourly rate.",
    request_body = EmployeeIn,
    responses((status = 201, body = crate::domain::employees::Employee))
)]
pub async fn create_employee(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Writer, write, |body| CreateEmployee {
        company,
        body,
    })
    .await
}

/// Handles `GET /api/employees/{id}`.
#[utoipa::path(
    get,
    path = "/api/employees/{id}",
    operation_id = "getEmployee",
    tag = "Employees",
    summary = "Get a employee",
    responses(
        (status = 200, description = "The employee, in the shape its create returned.", body = crate::domain::employees::Employee),
        (status = 404, description = "no employee with this id in your company (or a malformed id)")
    )
)]
pub async fn get_employee(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let employee = find(&state.db, tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("employee {id} does not exist")))?;
    Ok(ok_json(&employee))
}

/// Handles `GET /api/employees`.
#[utoipa::path(
    get,
    path = "/api/employees",
    operation_id = "listEmployees",
    tag = "Employees",
    summary = "List employees",
    params(crate::web::ListParams),
    responses((status = 200, description = "A page of employees, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<crate::domain::employees::Employee>))
)]
pub async fn list_employees(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &[])?;
    let rows: Vec<EmployeeRow> =
        super::list_rows(&state.db, COLUMNS, "employees", tenant.company_id, None, &q).await?;
    let rows: Vec<Employee> = rows.into_iter().map(Employee::from).collect();
    Ok(ok_json(&page(rows, q.limit, |e| (e.created_at, e.id.0))))
}
