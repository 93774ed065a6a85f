//! Workflows: `createWorkflow`, `updateWorkflow` (`PATCH /api/workflows/{id}`,
//! `{active}`), reads and lists; instances and `triggerWorkflow` in [`instances`].
//!
//! Invariants:
//! - A webhook URL is an absolute http(s) URL (else `validation_failed` at
//!   `action.url`); unless `ACCUBOOKS_WEBHOOK_ALLOW_PRIVATE` is set, every address its
//!   host resolves to must be public (else `webhook_url_not_allowed`). The worker checks
//!   again at each delivery, after resolving, and connects to the checked address.
//! - The creation's DNS lookup happens in the handler, before the write's transaction
//!   begins (no network wait while holding a connection, a claim or SQLite's write gate);
//!   `execute` uses that answer for the URL it validated.
//! - Only active workflows get instances from events (the outbox selects `active`);
//!   deactivating one stops new instances, never ones already written.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use idem::http::{read_body, DEFAULT_BODY_LIMIT};
use idem::{on_tx, Created, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{Validator, NAME_MAX};
use crate::web::{ok_json, page, IdPath, ListQuery};
use crate::workflows::ssrf;

pub mod instances;

/// Events a workflow may listen to (`manual`: only `triggerWorkflow`).
pub const TRIGGERS: &[&str] = &[
    "invoice.created",
    "invoice.finalized",
    "payment.created",
    "refund.created",
    "payroll.executed",
    "inventory.adjusted",
    "manual",
];

fn trigger_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(TRIGGERS)
}

/// Longest webhook URL.
pub const URL_MAX: usize = 2048;

#[derive(Debug, Clone, FromRow)]
struct WorkflowRow {
    id: Id,
    name: String,
    trigger_event: String,
    action_type: String,
    action_target: Option<String>,
    action_url: Option<String>,
    active: bool,
    created_at: Ts,
}

/// What a workflow does.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = WorkflowAction)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Action {
    Notify { target: String },
    Webhook { url: String },
}

/// A workflow, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Workflow {
    id: Id,
    name: String,
    #[schema(schema_with = trigger_schema)]
    trigger: String,
    action: Action,
    active: bool,
    created_at: Ts,
}

impl From<WorkflowRow> for Workflow {
    fn from(r: WorkflowRow) -> Self {
        let action = match (r.action_type.as_str(), r.action_url) {
            ("webhook", Some(url)) => Action::Webhook { url },
            (_, _) => Action::Notify {
                target: r.action_target.unwrap_or_default(),
            },
        };
        Workflow {
            id: r.id,
            name: r.name,
            trigger: r.trigger_event,
            action,
            active: r.active,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str =
    "id, name, trigger_event, action_type, action_target, action_url, active, created_at";

fn location(id: Uuid) -> String {
    format!("/api/workflows/{id}")
}

/// Loads a workflow of `company` inside a write (locked on PostgreSQL when `lock`).
async fn load_tx(tx: &mut Tx, company: Uuid, id: Uuid, lock: bool) -> AppResult<Option<Workflow>> {
    let lock = if lock { tx.for_update() } else { "" };
    let sql = format!("select {COLUMNS} from workflows where company_id = $1 and id = $2{lock}");
    let row = on_tx!(tx, |c| sqlx::query_as::<_, WorkflowRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
    Ok(row.map(Workflow::from))
}

/// Body of `createWorkflow`; `active` defaults to true.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WorkflowIn {
    #[schema(schema_with = fields::text::<NAME_MAX>)]
    name: String,
    #[schema(schema_with = trigger_schema)]
    trigger: &'static str,
    action: Action,
    #[schema(required = false, nullable, default = true)]
    active: bool,
}

/// Body of `updateWorkflow`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WorkflowPatch {
    active: bool,
}

fn parse_patch(body: &Value) -> AppResult<WorkflowPatch> {
    let mut v = Validator::new();
    let active = match v.object(body, "", &["active"]) {
        Some(o) => v.boolean(o, "", "active", true),
        None => None,
    };
    v.finish()?;
    Ok(WorkflowPatch {
        active: active.unwrap_or(true),
    })
}

fn parse_action(v: &mut Validator, o: &Map<String, Value>) -> Option<Action> {
    let a = match o.get("action") {
        None | Some(Value::Null) => {
            v.error("action", "is required");
            return None;
        }
        Some(a) => a,
    };
    let Value::Object(map) = a else {
        v.error("action", "must be a JSON object");
        return None;
    };
    let kind = v.one_of(map, "action", "type", &["notify", "webhook"], true)?;
    let allowed: &[&str] = if kind == "notify" {
        &["type", "target"]
    } else {
        &["type", "url"]
    };
    v.object(a, "action", allowed);
    if kind == "notify" {
        let target = v.text(map, "action", "target", NAME_MAX, true)?;
        return Some(Action::Notify { target });
    }
    let url = v.text(map, "action", "url", URL_MAX, true)?;
    if ssrf::parse(&url).is_err() {
        v.error(
            "action.url",
            "must be an absolute http or https URL with a host",
        );
        return None;
    }
    Some(Action::Webhook { url })
}

fn parse(body: &Value) -> AppResult<WorkflowIn> {
    let mut v = Validator::new();
    let Some(o) = v.object(body, "", &["name", "trigger", "action", "active"]) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let name = v.text(o, "", "name", NAME_MAX, true);
    let trigger = v.one_of(o, "", "trigger", TRIGGERS, true);
    let action = parse_action(&mut v, o);
    let active = v.boolean(o, "", "active", false);
    v.finish()?;
    Ok(WorkflowIn {
        name: name.unwrap_or_default(),
        trigger: trigger.unwrap_or("manual"),
        action: action.unwrap_or(Action::Notify {
            target: String::new(),
        }),
        active: active.unwrap_or(true),
    })
}

struct CreateWorkflow {
    company: Uuid,
    allow_private: bool,
    /// The URL of the body's webhook action, if any, and the SSRF verdict on it, found
    /// before the transaction.
    checked: Option<(String, Result<(), ssrf::Refusal>)>,
    body: Value,
}

const DNS_TIMEOUT: Duration = Duration::from_secs(2);

async fn check_url(url: &str, allow_private: bool) -> Result<(), ssrf::Refusal> {
    let parsed = ssrf::parse(url)?;
    ssrf::resolve(&parsed, allow_private, DNS_TIMEOUT)
        .await
        .map(|_| ())
}

/// The webhook URL of a createWorkflow body, if it has one (before validation).
fn webhook_url(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let url = v.get("action")?.get("url")?.as_str()?;
    (url.chars().count() <= URL_MAX).then(|| url.to_owned())
}

impl Operation for CreateWorkflow {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = super::record_fingerprint(tx, "workflows", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let w = load_tx(tx, self.company, id, false)
            .await?
            .ok_or_else(|| AppError::Internal("workflow vanished".into()))?;
        super::existing(fp, &w, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse(&self.body)?;
        if let Action::Webhook { url } = &input.action {
            let verdict = match &self.checked {
                Some((checked, verdict)) if checked == url => verdict.clone(),
                _ => check_url(url, self.allow_private).await,
            };
            if let Err(e) = verdict {
                return Err(AppError::rule(
                    "webhook_url_not_allowed",
                    format!("action.url {e}"),
                ));
            }
        }
        let (target, url) = match &input.action {
            Action::Notify { target } => (Some(target.as_str()), None),
            Action::Webhook { url } => (None, Some(url.as_str())),
        };
        let kind = if url.is_some() { "webhook" } else { "notify" };
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into workflows (company_id, id, name, trigger_event, action_type, \
             action_target, action_url, active, request_fingerprint, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(&input.name)
        .bind(input.trigger)
        .bind(kind)
        .bind(target)
        .bind(url)
        .bind(input.active)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        let w = Workflow {
            id: Id(id),
            name: input.name,
            trigger: input.trigger.to_owned(),
            action: input.action,
            active: input.active,
            created_at: now,
        };
        super::created(&w, Some(location(id)))
    }
}

struct UpdateWorkflow {
    company: Uuid,
    workflow: Uuid,
    body: Value,
}

impl Operation for UpdateWorkflow {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = super::record_fingerprint(tx, "workflow_updates", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let w = load_tx(tx, self.company, self.workflow, false)
            .await?
            .ok_or_else(|| AppError::Internal("workflow vanished".into()))?;
        super::existing(fp, &w, None).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let WorkflowPatch { active } = parse_patch(&self.body)?;
        let mut w = load_tx(ctx.tx(), self.company, self.workflow, true)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!("workflow {} does not exist", self.workflow))
            })?;
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "update workflows set active = $1, updated_at = $2 where company_id = $3 and id = $4"
        )
        .bind(active)
        .bind(now)
        .bind(Id(self.company))
        .bind(Id(self.workflow))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into workflow_updates (company_id, id, workflow_id, active, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(self.workflow))
        .bind(active)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        w.active = active;
        super::created(&w, None)
    }
}

/// Handles `POST /api/workflows`. Reads the body first (after the role check, so the
/// order of checks is unchanged) to resolve a webhook URL outside the transaction.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_WORKFLOW.route(),
    operation_id = crate::ops::CREATE_WORKFLOW.name(),
    tag = "Workflows",
    summary = "Create a workflow",
    description = "On each event `trigger`, an active workflow gets an instance that runs \
                      `action` asynchronously, at least once (webhooks: signed with \
                      HMAC-SHA256, `Idempotency-Key: <instance id>`, retried with backoff).",
    request_body = WorkflowIn,
    responses((status = 201, body = crate::domain::workflows::Workflow))
)]
pub async fn create_workflow(
    State(state): State<AppState>,
    tenant: Tenant,
    mut write: idem::Write,
) -> Response {
    if let Err(e) = tenant.require(Need::Writer) {
        return e.into_response();
    }
    let body = std::mem::take(write.request_mut().body_mut());
    let bytes = match read_body(write.headers(), body, DEFAULT_BODY_LIMIT).await {
        Ok(b) => b,
        Err(problem) => return problem.into_response(),
    };
    let allow_private = state.config.webhook_allow_private;
    let checked = match webhook_url(&bytes) {
        Some(url) => {
            let verdict = check_url(&url, allow_private).await;
            Some((url, verdict))
        }
        None => None,
    };
    *write.request_mut().body_mut() = Body::from(bytes);
    let company = tenant.company_id;
    super::gated(&state, tenant, Need::Writer, write, |body| CreateWorkflow {
        company,
        allow_private,
        checked,
        body,
    })
    .await
}

/// Handles `PATCH /api/workflows/{id}`.
#[utoipa::path(
    patch,
    path = crate::ops::UPDATE_WORKFLOW.route(),
    operation_id = crate::ops::UPDATE_WORKFLOW.name(),
    tag = "Workflows",
    summary = "Activate or deactivate a workflow",
    description = "Sets `active`; answers 201 on first execution like every operation, \
                      without `Location`. An inactive workflow gets no instances from events \
                      and refuses manual triggers (`workflow_inactive`); instances already \
                      written still run. The record is the workflow update.",
    request_body = WorkflowPatch,
    responses((status = 201, body = crate::domain::workflows::Workflow), (status = 404, description = "the workflow does not exist in your company"))
)]
pub async fn update_workflow(
    IdPath(workflow): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    super::gated(&state, tenant, Need::Writer, write, |body| UpdateWorkflow {
        company,
        workflow,
        body,
    })
    .await
}

/// Handles `GET /api/workflows/{id}`.
#[utoipa::path(
    get,
    path = "/api/workflows/{id}",
    operation_id = "getWorkflow",
    tag = "Workflows",
    summary = "Get a workflow",
    responses(
        (status = 200, description = "The workflow, in the shape its create returned.", body = Workflow),
        (status = 404, description = "no workflow with this id in your company (or a malformed id)")
    )
)]
pub async fn get_workflow(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row: WorkflowRow = super::find_row(&state.db, COLUMNS, "workflows", tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("workflow {id} does not exist")))?;
    Ok(ok_json(&Workflow::from(row)))
}

/// Handles `GET /api/workflows`.
#[utoipa::path(
    get,
    path = "/api/workflows",
    operation_id = "listWorkflows",
    tag = "Workflows",
    summary = "List workflows",
    params(crate::web::ListParams),
    responses((status = 200, description = "A page of workflows, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Workflow>))
)]
pub async fn list_workflows(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &[])?;
    let rows: Vec<WorkflowRow> =
        super::list_rows(&state.db, COLUMNS, "workflows", tenant.company_id, None, &q).await?;
    let rows: Vec<Workflow> = rows.into_iter().map(Workflow::from).collect();
    Ok(ok_json(&page(rows, q.limit, |w| (w.created_at, w.id.0))))
}
