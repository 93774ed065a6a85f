//! Inventory: `createInventoryItem`, `adjustInventory`, reads and lists.
//!
//! Invariants:
//! - An item's quantity is never negative and never above [`QUANTITY_MAX`], under any
//!   concurrency: an adjustment is one conditional `update … where quantity + delta
//!   between 0 and max returning quantity` (row-locked on PostgreSQL, under the write
//!   gate on SQLite), so two adjustments can never both pass a stale check.
//! - Every accepted adjustment is recorded (delta, reason, quantity after) in
//!   `inventory_adjustments`, the operation's deterministic-id record row, and emits
//!   `inventory.adjusted` in the same transaction.
//! - A sku is unique per company (`insert … on conflict do nothing`: concurrent creates
//!   of one sku give one item and `sku_taken`, never a 500).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use idem::{on_tx, Created, Event, ExecCtx, Existing, Id, Operation, Ts, Tx};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::auth::{Need, Tenant};
use crate::error::{AppError, AppResult};
use crate::openapi::fields;
use crate::state::AppState;
use crate::validate::{as_integer, Validator, NAME_MAX, TEXT_MAX};
use crate::web::{ok_json, page, IdPath, ListQuery};

/// Longest sku (Unicode scalar values).
pub const SKU_MAX: usize = 64;
/// Largest quantity an item may hold (and largest |delta|).
pub const QUANTITY_MAX: i64 = 1_000_000_000_000;

/// An inventory item, as every endpoint renders it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
#[schema(as = InventoryItem)]
pub struct Item {
    id: Id,
    sku: String,
    name: String,
    quantity: i64,
    created_at: Ts,
}

const COLUMNS: &str = "id, sku, name, quantity, created_at";

fn location(id: Uuid) -> String {
    format!("/api/inventory-items/{id}")
}

/// One recorded adjustment.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
#[schema(as = InventoryAdjustment)]
struct Adjustment {
    id: Id,
    delta: i64,
    reason: String,
    created_at: Ts,
}

/// The 201 body of `adjustInventory`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = InventoryAdjustmentResult)]
pub struct AdjustmentOut {
    item_id: Id,
    quantity: i64,
    adjustment: Adjustment,
}

/// Body of `createInventoryItem`.
#[derive(utoipa::ToSchema)]
#[schema(as = InventoryItemIn)]
#[serde(deny_unknown_fields)]
struct ItemIn {
    #[schema(schema_with = fields::text::<SKU_MAX>)]
    sku: String,
    #[schema(schema_with = fields::text::<NAME_MAX>)]
    name: String,
    #[schema(schema_with = fields::integer::<0, QUANTITY_MAX>)]
    quantity: i64,
}

fn parse_item(body: &Value) -> AppResult<ItemIn> {
    let mut v = Validator::new();
    let Some(o) = v.object(body, "", &["sku", "name", "quantity"]) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let sku = v.text(o, "", "sku", SKU_MAX, true);
    let name = v.text(o, "", "name", NAME_MAX, true);
    let quantity = v.integer(o, "", "quantity", 0, QUANTITY_MAX, true);
    v.finish()?;
    Ok(ItemIn {
        sku: sku.unwrap_or_default(),
        name: name.unwrap_or_default(),
        quantity: quantity.unwrap_or_default(),
    })
}

/// Body of `adjustInventory`; `delta` ≠ 0.
#[derive(utoipa::ToSchema)]
#[schema(as = AdjustmentIn)]
#[serde(deny_unknown_fields)]
struct AdjustIn {
    #[schema(schema_with = fields::integer::<{ -QUANTITY_MAX }, QUANTITY_MAX>)]
    delta: i64,
    #[schema(schema_with = fields::text::<TEXT_MAX>)]
    reason: String,
}

fn parse_adjustment(body: &Value) -> AppResult<AdjustIn> {
    let mut v = Validator::new();
    let Some(o) = v.object(body, "", &["delta", "reason"]) else {
        v.finish()?;
        return Err(AppError::Internal("unreachable: object check".into()));
    };
    let delta = match o.get("delta") {
        None | Some(Value::Null) => {
            v.error("delta", "is required");
            None
        }
        Some(d) => match as_integer(d) {
            Some(0) => {
                v.error("delta", "must not be 0");
                None
            }
            Some(n) if n.abs() <= QUANTITY_MAX => Some(n),
            _ => {
                v.error(
                    "delta",
                    format!("must be a non-zero integer from -{QUANTITY_MAX} to {QUANTITY_MAX}"),
                );
                None
            }
        },
    };
    let reason = v.text(o, "", "reason", TEXT_MAX, true);
    v.finish()?;
    Ok(AdjustIn {
        delta: delta.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
    })
}

async fn item_tx(tx: &mut Tx, company: Uuid, id: Uuid) -> AppResult<Option<Item>> {
    let sql = format!("select {COLUMNS} from inventory_items where company_id = $1 and id = $2");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Item>(&sql)
        .bind(Id(company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?)
}

struct CreateItem {
    company: Uuid,
    body: Value,
}

impl Operation for CreateItem {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = super::record_fingerprint(tx, "inventory_items", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let item = item_tx(tx, self.company, id)
            .await?
            .ok_or_else(|| AppError::Internal("item vanished".into()))?;
        super::existing(fp, &item, Some(location(id))).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse_item(&self.body)?;
        let item = Item {
            id: Id(ctx.id()),
            sku: input.sku,
            name: input.name,
            quantity: input.quantity,
            created_at: ctx.now(),
        };
        let fp = ctx.fingerprint().to_owned();
        let inserted: Option<i32> = on_tx!(ctx.tx(), |c| sqlx::query_scalar(
            "insert into inventory_items (company_id, id, sku, name, quantity, \
             request_fingerprint, created_at) values ($1, $2, $3, $4, $5, $6, $7) \
             on conflict (company_id, sku) do nothing returning 1"
        )
        .bind(Id(self.company))
        .bind(item.id)
        .bind(&item.sku)
        .bind(&item.name)
        .bind(item.quantity)
        .bind(&fp)
        .bind(item.created_at)
        .fetch_optional(c)
        .await)?;
        if inserted.is_none() {
            return Err(AppError::rule(
                "sku_taken",
                format!("another item of the company has sku {:?}", item.sku),
            ));
        }
        super::created(&item, Some(location(item.id.0)))
    }
}

struct AdjustItem {
    company: Uuid,
    item: Uuid,
    body: Value,
}

impl AdjustItem {
    /// The conditional update: `Some(quantity after)` when it applied.
    async fn apply(&self, tx: &mut Tx, delta: i64) -> AppResult<Option<i64>> {
        Ok(on_tx!(tx, |c| sqlx::query_scalar(
            "update inventory_items set quantity = quantity + $1 \
             where company_id = $2 and id = $3 and quantity + $1 >= 0 and quantity + $1 <= $4 \
             returning quantity"
        )
        .bind(delta)
        .bind(Id(self.company))
        .bind(Id(self.item))
        .bind(QUANTITY_MAX)
        .fetch_optional(c)
        .await)?)
    }

    /// Why the update did not apply: 404, `insufficient_stock` or too much stock.
    async fn refusal(&self, tx: &mut Tx, delta: i64) -> AppError {
        match item_tx(tx, self.company, self.item).await {
            Err(e) => e,
            Ok(None) => AppError::not_found(format!("inventory item {} does not exist", self.item)),
            Ok(Some(item)) if delta < 0 => AppError::rule(
                "insufficient_stock",
                format!(
                    "quantity {} cannot be lowered by {}",
                    item.quantity,
                    delta.unsigned_abs()
                ),
            ),
            Ok(Some(item)) => AppError::field(
                "delta",
                format!(
                    "would raise quantity {} above {QUANTITY_MAX}",
                    item.quantity
                ),
            ),
        }
    }

    async fn load(&self, tx: &mut Tx, id: Uuid) -> AppResult<Option<AdjustmentOut>> {
        let adjustment = on_tx!(tx, |c| sqlx::query_as::<_, Adjustment>(
            "select id, delta, reason, created_at from inventory_adjustments \
             where company_id = $1 and id = $2"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .fetch_optional(c)
        .await)?;
        let Some(adjustment) = adjustment else {
            return Ok(None);
        };
        let item = item_tx(tx, self.company, self.item)
            .await?
            .ok_or_else(|| AppError::Internal("item vanished".into()))?;
        Ok(Some(AdjustmentOut {
            item_id: item.id,
            quantity: item.quantity,
            adjustment,
        }))
    }
}

impl Operation for AdjustItem {
    type Error = AppError;

    async fn find_existing(
        &self,
        tx: &mut Tx,
        _tenant: &str,
        id: Uuid,
    ) -> AppResult<Option<Existing>> {
        let fp = super::record_fingerprint(tx, "inventory_adjustments", self.company, id).await?;
        let Some(fp) = fp else { return Ok(None) };
        let out = self
            .load(tx, id)
            .await?
            .ok_or_else(|| AppError::Internal("adjustment vanished".into()))?;
        super::existing(fp, &out, None).map(Some)
    }

    async fn execute(&self, ctx: &mut ExecCtx<'_>) -> AppResult<Created> {
        let input = parse_adjustment(&self.body)?;
        let Some(after) = self.apply(ctx.tx(), input.delta).await? else {
            return Err(self.refusal(ctx.tx(), input.delta).await);
        };
        let (id, now, fp) = (ctx.id(), ctx.now(), ctx.fingerprint().to_owned());
        on_tx!(ctx.tx(), |c| sqlx::query(
            "insert into inventory_adjustments (company_id, id, item_id, delta, reason, \
             quantity_after, request_fingerprint, created_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(Id(self.company))
        .bind(Id(id))
        .bind(Id(self.item))
        .bind(input.delta)
        .bind(&input.reason)
        .bind(after)
        .bind(&fp)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        ctx.emit(&[Event::new("inventory.adjusted", "inventory_adjustment", id)])
            .await?;
        let out = AdjustmentOut {
            item_id: Id(self.item),
            quantity: after,
            adjustment: Adjustment {
                id: Id(id),
                delta: input.delta,
                reason: input.reason,
                created_at: now,
            },
        };
        super::created(&out, None)
    }
}

/// Handles `POST /api/inventory-items`.
#[utoipa::path(
    post,
    path = crate::ops::CREATE_INVENTORY_ITEM.route(),
    operation_id = crate::ops::CREATE_INVENTORY_ITEM.name(),
    tag = "Inventory",
    summary = "Create an inventory item",
    description = "Creates a stock-keeping unit with an initial quantity.",
    request_body = ItemIn,
    responses((status = 201, body = crate::domain::inventory::Item))
)]
pub async fn create_item(
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    super::gated(&state, tenant, Need::Writer, write, |body| CreateItem {
        company,
        body,
    })
    .await
}

/// Handles `POST /api/inventory-items/{id}/adjustments`.
#[utoipa::path(
    post,
    path = crate::ops::ADJUST_INVENTORY.route(),
    operation_id = crate::ops::ADJUST_INVENTORY.name(),
    tag = "Inventory",
    summary = "Adjust an item's quantity",
    description = "Adds `delta` (≠ 0) to the quantity. The record is the adjustment. Emits \
                      `inventory.adjusted`.",
    request_body = AdjustIn,
    responses((status = 201, body = crate::domain::inventory::AdjustmentOut), (status = 404, description = "the item does not exist in your company"))
)]
pub async fn adjust_item(
    IdPath(item): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
    write: idem::Write,
) -> Response {
    let company = tenant.company_id;
    super::gated(&state, tenant, Need::Writer, write, |body| AdjustItem {
        company,
        item,
        body,
    })
    .await
}

/// Handles `GET /api/inventory-items/{id}`.
#[utoipa::path(
    get,
    path = "/api/inventory-items/{id}",
    operation_id = "getInventoryItem",
    tag = "Inventory",
    summary = "Get a inventory item",
    responses(
        (status = 200, description = "The inventory item, in the shape its create returned.", body = Item),
        (status = 404, description = "no inventory item with this id in your company (or a malformed id)")
    )
)]
pub async fn get_item(
    IdPath(id): IdPath,
    State(state): State<AppState>,
    tenant: Tenant,
) -> AppResult<Response> {
    let item: Item = super::find_row(&state.db, COLUMNS, "inventory_items", tenant.company_id, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("inventory item {id} does not exist")))?;
    Ok(ok_json(&item))
}

/// Handles `GET /api/inventory-items`.
#[utoipa::path(
    get,
    path = "/api/inventory-items",
    operation_id = "listInventoryItems",
    tag = "Inventory",
    summary = "List inventory items",
    params(crate::web::ListParams),
    responses((status = 200, description = "A page of inventory items, newest first (`created_at desc, id desc`).", body = crate::web::ListPage<Item>))
)]
pub async fn list_items(
    State(state): State<AppState>,
    tenant: Tenant,
    RawQuery(q): RawQuery,
) -> AppResult<Response> {
    let q = ListQuery::parse(q.as_deref(), &[])?;
    let rows: Vec<Item> = super::list_rows(
        &state.db,
        COLUMNS,
        "inventory_items",
        tenant.company_id,
        None,
        &q,
    )
    .await?;
    Ok(ok_json(&page(rows, q.limit, |i| (i.created_at, i.id.0))))
}
