//! Workflow instances: `triggerWorkflow`, `GET /api/workflow-instances/{id}` and
//! `GET /api/workflow-instances?trigger_entity_id=`.
//!
//! Invariants: a manual instance is the record of its `triggerWorkflow` (deterministic
//! id, fingerprint kept), with `trigger_entity_type: "manual"` and no trigger entity, so
//! it never counts in the seeds' `trigger_entity_id = deterministic_id` accuracy join;
//! instances from events are written by the outbox (`crate::workflows::Outbox`).
//! `next_attempt_at` shows only while the instance is `pending` or `running` (then it is
//! the end of the running attempt's lease).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Tenant};
use crate::domain::Filter;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::validate::Validator;
use crate::web::{ok_json, page, IdPath, ListQuery};

#[derive(Debug, Clone, FromRow)]
struct InstanceRow {
    id: Id,
    workflow_id: Id,
    trigger_entity_type: String,
    trigger_entity_id: Option<String>,
    input: Option<String>,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: Ts,
    created_at: Ts,
    updated_at: Ts,
    completed_at: Option<Ts>,
    notification_id: Option<Id>,
    notification_target: Option<String>,
    notification_created_at: Option<Ts>,
}

fn entity_type_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(&[
        "invoice",
        "invoice_finalization",
        "payment",
        "refund",
        "payroll_run",
        "inventory_adjustment",
        "manual",
    ])
}

fn status_schema() -> utoipa::openapi::Object {
    crate::openapi::one_of(&["pending", "running", "delivered", "failed"])
}

/// The notification a `notify` instance wrote.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
struct Notification {
    id: Id,
    target: String,
    created_at: Ts,
}

/// A workflow instance, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = WorkflowInstance)]
pub struct Instance {
    id: Id,
    workflow_id: Id,
    #[schema(schema_with = entity_type_schema)]
    trigger_entity_type: String,
    /// The entity whose event created the instance; null for a manual trigger.
    #[schema(required = true, value_type = Option<Id>)]
    trigger_entity_id: Option<String>,
    /// The trigger's `input` (manual) or the event's entity; `null` when none.
    input: Value,
    #[schema(schema_with = status_schema)]
    status: String,
    #[schema(minimum = 0)]
    attempts: i32,
    #[schema(required = true)]
    last_error: Option<String>,
    #[schema(required = true)]
    next_attempt_at: Option<Ts>,
    created_at: Ts,
    updated_at: Ts,
    #[schema(required = true)]
    completed_at: Option<Ts>,
    /// What a `notify` instance recorded; null otherwise.
    #[schema(required = true)]
    notification: Option<Notification>,
}

impl From<InstanceRow> for Instance {
    fn from(r: InstanceRow) -> Self {
        let notification = match (
            r.notification_id,
            r.notification_target,
            r.notification_created_at,
        ) {
            (Some(id), Some(target), Some(created_at)) => Some(Notification {
                id,
                target,
                created_at,
            }),
            _ => None,
        };
        let live = matches!(r.status.as_str(), "pending" | "running");
        Instance {
            id: r.id,
            workflow_id: r.workflow_id,
            trigger_entity_type: r.trigger_entity_type,
            trigger_entity_id: r.trigger_entity_id,
            input: r
                .input
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null),
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            next_attempt_at: live.then_some(r.next_attempt_at),
            created_at: r.created_at,
            updated_at: r.updated_at,
            completed_at: r.completed_at,
            notification,
        }
    }
}

const COLUMNS: &str = "id, workflow_id, trigger_entity_type, trigger_entity_id, input, status, \
                       attempts, last_error, next_attempt_at, created_at, updated_at, \
                       completed_at, notification_id, notification_target, \
                       notification_created_at";
const FROM: &str = "(select i.company_id, i.id, i.workflow_id, i.trigger_entity_type, \
                    i.trigger_entity_id, i.input, i.status, i.attempts, i.last_error, \
                    i.next_attempt_at, i.created_at, i.updated_at, i.completed_at, \
                    n.id as notification_id, n.target as notification_target, \
                    n.created_at as notification_created_at from workflow_instances i \
                    left join notifications n on n.company_id = i.company_id \
                    and n.instance_id = i.id) x";

fn location(id: Uuid) -> String {
    format!("/api/workflow-instances/{id}")
}

async fn load_tx(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<Instance>> {
    let sql = format!("select {COLUMNS} from {FROM} where company_id = $1 and id = $2");
    let row = on_tx!(tx, |c| sqlx::query_as::<_, InstanceRow>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
    Ok(row.map(Instance::from))
}

/// Body of `triggerWorkflow`; an empty body without a content type means `{}`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TriggerIn {
    /// Any JSON object; it becomes the instance's `input`.
    #[schema(value_type = Option<Object>)]
    input: Option<String>,
}

fn parse(body: &Value) -> AppResult<TriggerIn> {
    let mut v = Validator::new();
    let input = match v.object(body, "", &["input"]) {
        Some(o) => match o.get("input") {
            None | Some(Value::Null) => None,
            Some(i @ Value::Object(_)) => Some(i.to_string()),
            Some(_) => {
                v.error("input", "must be a JSON object");
                None
            }
        },
        None => None,
    };
    v.finish()?;
    Ok(TriggerIn { input })
}

struct TriggerWorkflow {
    company: Uuid,
    workflow: Uuid,
    body: Value,
}

impl Operation for TriggerWorkflow {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp =
            super::super::record_fingerprint(tx, "workflow_instances", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let inst = load_tx(tx, self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("instance vanished".into()))?;
        super::super::existing(fp, &inst, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let TriggerIn { input } = parse(&self.body)?;
        let w = super::load_tx(ctx.tx(), self.company, self.workflow, true)
            .await?
            .ok_or_else(|| {
                AppError::not_found(format!("workflow {} does not exist", self.workflow))
            })?;
        if !w.active {
            return Err(AppError::rule(
                "workflow_inactive",
                format!("workflow {} is not active", self.workflow),
            ));
        }
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into workflow_instances (company_id, id, workflow_id, trigger_entity_type, \
             trigger_entity_id, input, status, attempts, next_attempt_at, request_fingerprint, \
             created_at, updated_at) values ($1, $2, $3, 'manual', null, $4, 'pending', 0, $5, \
             $6, $5, $5)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(self.workflow))
        .bind(input.as_deref())
        .bind(now)
        .bind(&fp)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        let inst = load_tx(ctx.tx(), self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("instance vanished".into()))?;
        super::super::created(&inst, Some(location(id)))
    }
}

/// Handles `POST /api/workflows/{id}/trigger`. The instance is the operation's own
/// record (not an emitted one), so a 201 wakes the worker explicitly.
#[utoipa::path(
    post,
    path = crate::ops::TRIGGER_WORKFLOW.route(),
    operation_id = crate::ops::TRIGGER_WORKFLOW.name(),
    tag = "Workflows",
    summary = "Trigger a workflow manually",
    description = "Creates a workflow instance with `trigger_entity_type: \"manual\"`. The \
                      body may be empty, `{}` or `{\"input\": {...}}`.",
    request_body = TriggerIn,
    responses((status = 201, body = crate::domain::workflows::instances::Instance), (status = 404, description = "the workflow does not exist in your company"))
)]
pub async fn trigger_workflow(
    IdPath(workflow): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    let res = crate::domain::gated(&state, tenant, Need::Writer, write, |body| {
        TriggerWorkflow {
            company,
            workflow,
            body,
        }
    })
    .await;
    if res.status() == http::StatusCode::CREATED {
        state.outbox.wake();
    }
    res
}

/// Handles `GET /api/workflow-instances/{id}`.
#[utoipa::path(
    get,
    path = "/api/workflow-instances/{id}",
    operation_id = "getWorkflowInstance",
    tag = "Workflows",
    summary = "Get a workflow instance",
    responses(
        (status = 200, description = "The workflow instance, in the shape its create returned.", body = Instance),
        (status = 404, description = "no workflow instance with this id in your company (or a malformed id)")
    )
)]
pub async fn get_instance(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let row: InstanceRow = crate::domain::find_row(&state.db, COLUMNS, FROM, tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("workflow instance {id} does not exist")))?;
    Ok(ok_json(&Instance::from(row)))
}

/// Handles `GET /api/workflow-instances?trigger_entity_id=`.
#[utoipa::path(
    get,
    path = "/api/workflow-instances",
    operation_id = "listWorkflowInstances",
    tag = "Workflows",
    summary = "List workflow instances",
    params(crate::web::ListParams, ("trigger_entity_id" = Option<idem::Id>, Query, description = "filter: only the instances this entity's event created; a value matching nothing gives an empty page")),
    responses((status = 200, description = "A page of workflow instances, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Instance>))
)]
pub async fn list_instances(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &["trigger_entity_id"])?;
    let entity = q.uuid_filter("trigger_entity_id")?;
    let rows: Vec<InstanceRow> = crate::domain::list_rows(
        &state.db,
        COLUMNS,
        FROM,
        tenant.company_id,
        entity.map(|e| ("trigger_entity_id", Filter::TextId(e))),
        &q,
    )
    .await?;
    let rows: Vec<Instance> = rows.into_iter().map(Instance::from).collect();
    Ok(ok_json(&page(rows, q.limit, |i| (i.created_at, i.id.0))))
}
