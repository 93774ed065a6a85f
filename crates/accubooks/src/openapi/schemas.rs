//! Schema helpers and the component schemas of the document: entities, request bodies,
//! lists, problem documents and operator payloads.
//!
//! Invariants:
//! - Money is always a string matching [`MONEY_PATTERN`], ids are `uuid` strings and
//!   timestamps `date-time` strings with exactly six fraction digits, as API.md states.
//! - Request bodies are closed (`additionalProperties: false`): the server rejects
//!   unknown fields with `422 validation_failed`. Response bodies are open, so a field
//!   added later is not a breaking change.

use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
use utoipa::openapi::{
    ArrayBuilder, ComponentsBuilder, ObjectBuilder, OneOfBuilder, Ref, RefOr, Schema, SchemaFormat,
    Type,
};

/// A schema or a reference to one.
pub(super) type S = RefOr<Schema>;

/// The money pattern of API.md.
pub(super) const MONEY_PATTERN: &str = r"^-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$";
const TIMESTAMP_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$";
const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Text limits of API.md, in Unicode scalar values.
pub(super) const NAME: usize = 200;
pub(super) const DESCRIPTION: usize = 500;
const EMAIL: usize = 254;
pub(super) const SKU: usize = 64;

/// A reference to a component schema.
pub(super) fn r(name: &str) -> S {
    Ref::from_schema_name(name).into()
}

fn typed(t: Type) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(t)
}

/// Makes a primitive schema of type `t` also accept `null`.
pub(super) fn or_null(b: ObjectBuilder, t: Type) -> ObjectBuilder {
    b.schema_type(SchemaType::from_iter([t, Type::Null]))
}

/// A string with a description.
pub(super) fn string(description: &str) -> ObjectBuilder {
    typed(Type::String).description(Some(description))
}

/// A required text: at least one non-whitespace character, at most `max` characters.
pub(super) fn text(max: usize) -> ObjectBuilder {
    typed(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(r"\S"))
}

/// A decimal money string.
pub(super) fn money(description: &str) -> ObjectBuilder {
    typed(Type::String)
        .pattern(Some(MONEY_PATTERN))
        .description(Some(description))
        .examples(["125.00"])
}

/// An id (36-character hyphenated UUID, rendered lowercase).
pub(super) fn id() -> ObjectBuilder {
    typed(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".to_owned())))
        .pattern(Some(UUID_PATTERN))
}

/// A timestamp `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(super) fn timestamp() -> ObjectBuilder {
    typed(Type::String)
        .format(Some(SchemaFormat::Custom("date-time".to_owned())))
        .pattern(Some(TIMESTAMP_PATTERN))
        .examples(["2026-01-31T09:30:00.123456Z"])
}

/// A date `YYYY-MM-DD`.
pub(super) fn date() -> ObjectBuilder {
    typed(Type::String).format(Some(SchemaFormat::Custom("date".to_owned())))
}

/// An ISO 4217 currency with two minor units.
pub(super) fn currency() -> ObjectBuilder {
    typed(Type::String)
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some("ISO 4217 code with 2 minor units, uppercase"))
        .examples(["USD"])
}

pub(super) fn email() -> ObjectBuilder {
    typed(Type::String)
        .max_length(Some(EMAIL))
        .description(Some(
        "one `@` with non-empty parts, no whitespace; stored as sent, matched case-insensitively",
    ))
}

/// An integer within optional bounds.
pub(super) fn int(min: Option<i64>, max: Option<i64>) -> ObjectBuilder {
    typed(Type::Integer)
        .format(Some(SchemaFormat::Custom("int64".to_owned())))
        .minimum(min)
        .maximum(max)
}

pub(super) fn boolean() -> ObjectBuilder {
    typed(Type::Boolean)
}

/// An invoice number prefix.
pub(super) fn prefix() -> ObjectBuilder {
    typed(Type::String).pattern(Some("^[A-Z0-9-]{1,10}$"))
}

/// A string enumeration.
pub(super) fn enumeration(values: &[&str]) -> ObjectBuilder {
    typed(Type::String).enum_values(Some(values.iter().copied()))
}

/// An array of `item`.
pub(super) fn array(item: impl Into<S>) -> ArrayBuilder {
    ArrayBuilder::new().items(item.into())
}

/// An object schema under construction: `req` adds a required property, `opt` an
/// optional one; `closed` forbids unknown properties (request bodies).
pub(super) struct Obj(ObjectBuilder);

impl Obj {
    pub(super) fn new(description: &str) -> Self {
        Obj(ObjectBuilder::new().description(Some(description)))
    }

    pub(super) fn req(self, name: &str, schema: impl Into<S>) -> Self {
        Obj(self.0.property(name, schema).required(name))
    }

    pub(super) fn opt(self, name: &str, schema: impl Into<S>) -> Self {
        Obj(self.0.property(name, schema))
    }

    pub(super) fn closed(self) -> Self {
        Obj(self
            .0
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false))))
    }

    pub(super) fn min_properties(self, n: usize) -> Self {
        Obj(self.0.min_properties(Some(n)))
    }

    pub(super) fn build(self) -> S {
        self.0.into()
    }
}

/// `{data: [item], next_cursor}`.
fn list(item: &str) -> S {
    Obj::new(&format!(
        "A page of {item}, newest first (`created_at desc, id desc`)."
    ))
    .req("data", array(r(item)))
    .req(
        "next_cursor",
        or_null(
            string("opaque; non-null only when more rows exist"),
            Type::String,
        ),
    )
    .build()
}

/// Entities, as every endpoint renders them.
fn entities(c: ComponentsBuilder) -> ComponentsBuilder {
    let invoice_ref = || {
        Obj::new("The invoice after this write.")
            .req("id", id())
            .req("status", enumeration(&["draft", "open", "paid"]))
            .req("amount_paid", money("total of payments minus refunds"))
            .req("balance_due", money("total − amount_paid"))
            .build()
    };
    c.schema(
        "Customer",
        Obj::new("A customer.")
            .req("id", id())
            .req("name", text(NAME))
            .req("email", or_null(email(), Type::String))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "Employee",
        Obj::new("An employee; exactly one of `annual_salary` / `hourly_rate` is set, matching `pay_type`.")
            .req("id", id())
            .req("name", text(NAME))
            .req("email", or_null(email(), Type::String))
            .req("pay_type", enumeration(&["salary", "hourly"]))
            .req("annual_salary", or_null(money("for `salary`"), Type::String))
            .req("hourly_rate", or_null(money("for `hourly`"), Type::String))
            .req("active", boolean())
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "LineItem",
        Obj::new("An invoice line; `amount` = quantity × unit_price.")
            .opt("id", id())
            .req("description", text(DESCRIPTION))
            .req("quantity", int(Some(1), Some(1_000_000)))
            .req("unit_price", money("≥ 0"))
            .req("amount", money("quantity × unit_price"))
            .build(),
    )
    .schema(
        "Invoice",
        Obj::new("An invoice. `number` is null until finalized.")
            .req("id", id())
            .req("customer_id", id())
            .req("status", enumeration(&["draft", "open", "paid"]))
            .req("number", or_null(string("`invoice_prefix` + at least six digits, e.g. `INV-000001`"), Type::String))
            .req("currency", currency())
            .req("due_date", date())
            .req("line_items", array(r("LineItem")).min_items(Some(1)).max_items(Some(100)))
            .req("total", money("sum of line amounts"))
            .req("amount_paid", money("payments minus refunds"))
            .req("balance_due", money("total − amount_paid"))
            .req("created_at", timestamp())
            .build(),
    )
    .schema("InvoiceState", invoice_ref())
    .schema(
        "Payment",
        Obj::new("A payment against an open invoice.")
            .req("id", id())
            .req("invoice_id", id())
            .req("amount", money("> 0"))
            .req("method", enumeration(&["card", "bank_transfer", "cash", "check"]))
            .req("received_on", date())
            .req("invoice", r("InvoiceState"))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "Refund",
        Obj::new("A refund of (part of) a payment.")
            .req("id", id())
            .req("payment_id", id())
            .req("amount", money("> 0"))
            .req("reason", text(DESCRIPTION))
            .req("invoice", r("InvoiceState"))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "PayrollRun",
        Obj::new("An executed payroll run: one stub per active employee.")
            .req("id", id())
            .req("period_start", date())
            .req("period_end", date())
            .req("pay_date", date())
            .req(
                "stubs",
                array(
                    Obj::new("A pay stub.")
                        .req("id", id())
                        .req("employee_id", id())
                        .req("gross", money("rounded half away from zero to cents"))
                        .build(),
                ),
            )
            .req("total_gross", money("sum of the stubs' gross"))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "BankTransaction",
        Obj::new("A bank transaction; reconciled against at most one payment.")
            .req("id", id())
            .req("amount", money("≠ 0; negative for outflows"))
            .req("posted_on", date())
            .req("description", text(DESCRIPTION))
            .req("reconciled", boolean())
            .req("payment_id", or_null(id(), Type::String))
            .req("reconciled_at", or_null(timestamp(), Type::String))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "InventoryItem",
        Obj::new("A stock-keeping unit.")
            .req("id", id())
            .req("sku", text(SKU))
            .req("name", text(NAME))
            .req("quantity", int(Some(0), None))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "InventoryAdjustmentResult",
        Obj::new("The item's quantity after an adjustment, and the adjustment.")
            .req("item_id", id())
            .req("quantity", int(Some(0), None))
            .req(
                "adjustment",
                Obj::new("The adjustment record.")
                    .req("id", id())
                    .req("delta", int(None, None))
                    .req("reason", text(DESCRIPTION))
                    .req("created_at", timestamp())
                    .build(),
            )
            .build(),
    )
    .schema("WorkflowAction", workflow_action())
    .schema(
        "Workflow",
        Obj::new("A workflow: on `trigger`, run `action`.")
            .req("id", id())
            .req("name", text(NAME))
            .req("trigger", enumeration(TRIGGERS))
            .req("action", r("WorkflowAction"))
            .req("active", boolean())
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "WorkflowInstance",
        Obj::new("One run of a workflow, created by an event or a manual trigger.")
            .req("id", id())
            .opt("workflow_id", id())
            .req(
                "trigger_entity_type",
                enumeration(&[
                    "invoice",
                    "invoice_finalization",
                    "payment",
                    "refund",
                    "payroll_run",
                    "inventory_adjustment",
                    "manual",
                ]),
            )
            .req("trigger_entity_id", or_null(id(), Type::String))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "Settings",
        Obj::new("Company settings.")
            .req("display_name", text(NAME))
            .req("currency", currency())
            .req("invoice_prefix", prefix())
            .req("payment_terms_days", int(Some(0), Some(365)))
            .req("fiscal_year_start_month", int(Some(1), Some(12)))
            .build(),
    )
    .schema(
        "SettingsVersion",
        Obj::new("The current settings and their version (1 at company creation, +1 per change).")
            .req("settings", r("Settings"))
            .req("version", int(Some(1), None))
            .build(),
    )
    .schema(
        "Member",
        Obj::new("A user's access to the company.")
            .req("user_id", id())
            .req("email", email())
            .req("role", enumeration(ROLES))
            .req("created_at", timestamp())
            .build(),
    )
}

pub(super) const TRIGGERS: &[&str] = &[
    "invoice.created",
    "invoice.finalized",
    "payment.created",
    "refund.created",
    "payroll.executed",
    "inventory.adjusted",
    "manual",
];
pub(super) const ROLES: &[&str] = &["admin", "accountant", "viewer"];

fn workflow_action() -> S {
    OneOfBuilder::new()
        .item(
            Obj::new("Record a notification for `target`.")
                .req("type", enumeration(&["notify"]))
                .req("target", text(NAME))
                .closed()
                .build(),
        )
        .item(
            Obj::new("POST the instance to `url` (http/https; private addresses refused).")
                .req("type", enumeration(&["webhook"]))
                .req("url", string("http(s) URL").max_length(Some(2048)))
                .closed()
                .build(),
        )
        .into()
}

/// Problem documents, lists, and the operator surface.
fn support(c: ComponentsBuilder) -> ComponentsBuilder {
    let c = c
        .schema(
            "FieldError",
            Obj::new("One invalid field.")
                .req(
                    "field",
                    string("dotted path with `[i]` indexes, e.g. `line_items[2].unit_price`"),
                )
                .req("message", string("what is wrong"))
                .build(),
        )
        .schema(
            "Problem",
            Obj::new("An RFC 9457 problem document (`application/problem+json`).")
                .req("type", string("`/problems/<code>`"))
                .req("title", string("a fixed title per code"))
                .req("status", int(Some(400), Some(599)))
                .req("detail", string("this occurrence, for people"))
                .req("code", string("stable machine code"))
                .req(
                    "request_id",
                    string("equals the `X-Request-Id` response header"),
                )
                .opt(
                    "errors",
                    array(r("FieldError")).description(Some("present on `validation_failed` only")),
                )
                .build(),
        );
    let c = [
        "Customer",
        "Employee",
        "Invoice",
        "Payment",
        "Refund",
        "PayrollRun",
        "BankTransaction",
        "InventoryItem",
        "Workflow",
        "WorkflowInstance",
        "Member",
    ]
    .into_iter()
    .fold(c, |c, item| c.schema(format!("{item}List"), list(item)));
    super::operator::schemas(c)
}

/// Every component schema.
pub(super) fn components() -> ComponentsBuilder {
    support(super::inputs::inputs(entities(ComponentsBuilder::new())))
}
