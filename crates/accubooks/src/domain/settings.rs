//! Company settings: `updateCompanySettings` (a new version per change) and reads.

use axum::extract::State;
use axum::response::Response;
use idem::{on_db, on_tx, Created, Db, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Validator, NAME_MAX};
use crate::web::ok_json;

/// The settings of a company.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Settings {
    /// Name shown on documents.
    pub display_name: String,
    /// Default invoice currency.
    pub currency: String,
    /// Prefix of invoice numbers.
    pub invoice_prefix: String,
    /// Days until an invoice is due.
    pub payment_terms_days: i32,
    /// First month of the fiscal year.
    pub fiscal_year_start_month: i32,
}

/// `{settings, version}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = SettingsVersion)]
pub struct SettingsOut {
    settings: Settings,
    version: i64,
}

#[derive(FromRow)]
struct SettingsRow {
    #[sqlx(flatten)]
    settings: Settings,
    version: i64,
}

const COLUMNS: &str =
    "display_name, currency, invoice_prefix, payment_terms_days, fiscal_year_start_month, version";

/// Reads the current settings inside a write; with `lock`, the row stays locked until
/// the write commits (PostgreSQL; SQLite's single writer already excludes others).
pub async fn current(tx: &mut Tx, company: Uuid, lock: bool) -> AppResult<Settings> {
    let suffix = if lock { tx.for_update() } else { "" };
    let sql = format!("select {COLUMNS} from company_settings where company_id = $1{suffix}");
    let row = on_tx!(tx, |c| sqlx::query_as::<_, SettingsRow>(&sql)
        .bind(Id(company))
        .fetch_optional(c)
        .await)?;
    row.map(|r| r.settings)
        .ok_or_else(|| AppError::Internal(format!("company {company} has no settings")))
}

async fn load(db: &Db, company: Uuid) -> AppResult<SettingsOut> {
    let sql = format!("select {COLUMNS} from company_settings where company_id = $1");
    let row = on_db!(db, |c| sqlx::query_as::<_, SettingsRow>(&sql)
        .bind(Id(company))
        .fetch_optional(c)
        .await)?;
    row.map(|r| SettingsOut {
        settings: r.settings,
        version: r.version,
    })
    .ok_or_else(|| AppError::Internal(format!("company {company} has no settings")))
}

/// Inserts version 1 for a new company.
pub async fn insert_initial(tx: &mut Tx, company: Uuid, name: &str, now: Ts) -> AppResult<()> {
    let s = Settings {
        display_name: name.to_owned(),
        currency: "USD".into(),
        invoice_prefix: "INV-".into(),
        payment_terms_days: 30,
        fiscal_year_start_month: 1,
    };
    on_tx!(tx, |c| {
        sqlx::query(
        "insert into company_settings (company_id, display_name, currency, invoice_prefix, \
         payment_terms_days, fiscal_year_start_month, version, updated_at) values ($1, $2, $3, $4, $5, $6, 1, $7)"
    )
    .bind(Id(company))
    .bind(&s.display_name)
    .bind(&s.currency)
    .bind(&s.invoice_prefix)
    .bind(s.payment_terms_days)
    .bind(s.fiscal_year_start_month)
    .bind(now)
    .execute(c)
    .await
        .map(|r| r.rows_affected())
    })?;
    insert_version(tx, company, Uuid::now_v7(), 1, &s, None, now).await
}

async fn insert_version(
    tx: &mut Tx,
    company: Uuid,
    id: Uuid,
    version: i64,
    s: &Settings,
    fingerprint: Option<&str>,
    now: Ts,
) -> AppResult<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "insert into settings_versions (company_id, id, version, display_name, currency, invoice_prefix, \
         payment_terms_days, fiscal_year_start_month, request_fingerprint, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )
    .bind(Id(company))
    .bind(Id(id))
    .bind(version)
    .bind(&s.display_name)
    .bind(&s.currency)
    .bind(&s.invoice_prefix)
    .bind(s.payment_terms_days)
    .bind(s.fiscal_year_start_month)
    .bind(fingerprint)
    .bind(now)
    .execute(c)
    .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

const FIELDS: &[&str] = &[
    "display_name",
    "currency",
    "invoice_prefix",
    "payment_terms_days",
    "fiscal_year_start_month",
];

/// Longest invoice number prefix.
const PREFIX_MAX: usize = 10;
/// Longest payment term, in days.
const PAYMENT_TERMS_MAX: i64 = 365;

/// Body of `updateCompanySettings`: at least one field; `null` values are refused.
#[derive(utoipa::ToSchema)]
#[schema(min_properties = 1)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    #[schema(schema_with = fields::text::<NAME_MAX>)]
    display_name: Option<String>,
    #[schema(schema_with = fields::currency)]
    currency: Option<String>,
    #[schema(schema_with = prefix_schema)]
    invoice_prefix: Option<String>,
    #[schema(schema_with = fields::integer::<0, PAYMENT_TERMS_MAX>)]
    payment_terms_days: Option<i64>,
    #[schema(schema_with = fields::integer::<1, 12>)]
    fiscal_year_start_month: Option<i64>,
}

/// 1 to [`PREFIX_MAX`] of `A-Z`, `0-9` and `-`.
fn is_prefix(s: &str) -> bool {
    (1..=PREFIX_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

fn prefix_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(format!("^[A-Z0-9-]{{1,{PREFIX_MAX}}}$")))
        .build()
}

/// Validates a settings patch.
fn parse_patch(body: &Value) -> AppResult<SettingsPatch> {
    let mut v = Validator::new();
    let Some(o) = v.object(body, "", FIELDS) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    if !FIELDS.iter().any(|f| o.contains_key(*f)) {
        v.error(
            "body",
            format!("must contain at least one of: {}", FIELDS.join(", ")),
        );
    }
    for f in FIELDS {
        if o.get(*f).is_some_and(Value::is_null) {
            v.error(*f, "must not be null");
        }
    }
    let mut display_name = v.text(o, "", "display_name", NAME_MAX, false);
    if display_name.as_ref().is_some_and(|x| x.trim().is_empty()) {
        v.error("display_name", "must not be blank");
        display_name = None;
    }
    let currency = v.currency(o, "", "currency", false);
    let mut invoice_prefix = v.text(o, "", "invoice_prefix", PREFIX_MAX, false);
    if invoice_prefix.as_ref().is_some_and(|x| !is_prefix(x)) {
        v.error(
            "invoice_prefix",
            format!("must be 1 to {PREFIX_MAX} of A-Z, 0-9 and -"),
        );
        invoice_prefix = None;
    }
    let payment_terms_days = v.integer(o, "", "payment_terms_days", 0, PAYMENT_TERMS_MAX, false);
    let fiscal_year_start_month = v.integer(o, "", "fiscal_year_start_month", 1, 12, false);
    v.finish()?;
    Ok(SettingsPatch {
        display_name,
        currency,
        invoice_prefix,
        payment_terms_days,
        fiscal_year_start_month,
    })
}

impl SettingsPatch {
    /// Applies this patch to `s`.
    fn apply(self, s: &mut Settings) {
        if let Some(x) = self.display_name {
            s.display_name = x;
        }
        if let Some(x) = self.currency {
            s.currency = x;
        }
        if let Some(x) = self.invoice_prefix {
            s.invoice_prefix = x;
        }
        if let Some(x) = self.payment_terms_days {
            s.payment_terms_days = i32::try_from(x).unwrap_or_default();
        }
        if let Some(x) = self.fiscal_year_start_month {
            s.fiscal_year_start_month = i32::try_from(x).unwrap_or(1);
        }
    }
}

struct UpdateSettings {
    company: Uuid,
    body: Value,
}

impl Operation for UpdateSettings {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp: Option<Option<String>> = on_tx!(tx, |c| {
            sqlx::query_scalar(
            "select request_fingerprint from settings_versions where company_id = $1 and id = $2"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await
        })?;
        let Some(fp) = fp else { return Ok(None) };
        let sql = format!("select {COLUMNS} from company_settings where company_id = $1");
        let row = on_tx!(tx, |c| sqlx::query_as::<_, SettingsRow>(&sql)
            .bind(Id(self.company))
            .fetch_one(c)
            .await)?;
        let out = SettingsOut {
            settings: row.settings,
            version: row.version,
        };
        super::existing(fp.unwrap_or_default(), &out, None).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let patch = parse_patch(&self.body)?;
        let mut s = current(ctx.tx(), self.company, true).await?;
        patch.apply(&mut s);
        let now = ctx.now();
        let version: i64 = on_tx!(ctx.tx(), |c| {
            sqlx::query_scalar(
            "update company_settings set display_name = $1, currency = $2, invoice_prefix = $3, \
             payment_terms_days = $4, fiscal_year_start_month = $5, version = version + 1, updated_at = $6 \
             where company_id = $7 returning version"
        )
        .bind(&s.display_name)
        .bind(&s.currency)
        .bind(&s.invoice_prefix)
        .bind(s.payment_terms_days)
        .bind(s.fiscal_year_start_month)
        .bind(now)
        .bind(Id(self.company))
        .fetch_one(c)
        .await
        })?;
        let (id, fp) = (ctx.id(), ctx.fingerprint().to_owned());
        insert_version(ctx.tx(), self.company, id, version, &s, Some(&fp), now).await?;
        super::created(
            &SettingsOut {
                settings: s,
                version,
            },
            None,
        )
    }
}

/// Handles `PATCH /api/company/settings`.
#[utoipa::path(
    patch,
    path = crate::ops::UPDATE_COMPANY_SETTINGS.route(),
    operation_id = crate::ops::UPDATE_COMPANY_SETTINGS.name(),
    tag = "Company",
    summary = "Change company settings",
    description = "Applies the given fields and increments `version`; answers 201 on first \
                      execution like every operation. The record is the settings version.",
    request_body = SettingsPatch,
    responses((status = 201, body = crate::domain::settings::SettingsOut))
)]
pub async fn update_settings(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    crate::domain::gated(&state, tenant, Need::Admin, write, |body| UpdateSettings {
        company,
        body,
    })
    .await
}

/// Handles `GET /api/company/settings`.
#[utoipa::path(
    get,
    path = "/api/company/settings",
    operation_id = "getCompanySettings",
    tag = "Company",
    summary = "Get the company settings",
    responses((status = 200, description = "The current settings and version.", body = SettingsOut))
)]
pub async fn get_settings(State(state): State<AppState>, tenant: Tenant) -> AppResult<Response> {
    Ok(ok_json(&load(&state.db, tenant.company_id).await?))
}
