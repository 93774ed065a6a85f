//! Entities, as every endpoint renders them (open objects: a field added later is not a
//! breaking change; `required` lists what API.md guarantees).

use utoipa::openapi::{ComponentsBuilder, ObjectBuilder, OneOfBuilder, Type};

use super::schemas::{
    array, boolean, currency, date, email, enumeration, id, int, money, or_null, prefix, r, string,
    text, timestamp, Obj, DESCRIPTION, NAME, ROLES, S, SKU, TRIGGERS,
};

/// Entities, as every endpoint renders them.
pub(super) fn entities(c: ComponentsBuilder) -> ComponentsBuilder {
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
            .req("input", or_null(ObjectBuilder::new(), Type::Object))
            .req(
                "status",
                enumeration(&["pending", "running", "delivered", "failed"]),
            )
            .req("attempts", int(Some(0), None))
            .req("last_error", or_null(string("the last attempt's error"), Type::String))
            .req(
                "next_attempt_at",
                or_null(timestamp(), Type::String),
            )
            .req("created_at", timestamp())
            .req("updated_at", timestamp())
            .req("completed_at", or_null(timestamp(), Type::String))
            .req("notification", notification_or_null())
            .build(),
    )
    .schema(
        "Notification",
        Obj::new("The notification a `notify` instance recorded.")
            .req("id", id())
            .req("target", text(NAME))
            .req("created_at", timestamp())
            .build(),
    )
    .schema(
        "WebhookSecret",
        Obj::new(
            "The company's webhook signing secret. Webhooks carry `AccuBooks-Signature: \
             t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" keyed with secret>`.",
        )
        .req("secret", string("`whsec_…`"))
        .req("version", int(Some(1), None))
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

fn notification_or_null() -> S {
    OneOfBuilder::new()
        .item(r("Notification"))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

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
