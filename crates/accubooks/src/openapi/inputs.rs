//! Request bodies of the idempotent operations and the operator routes (closed objects:
//! unknown fields → 422).

use utoipa::openapi::{ComponentsBuilder, ObjectBuilder, Type};

use super::schemas::{
    array, boolean, currency, date, email, enumeration, id, int, money, or_null, prefix, r, text,
    Obj, DESCRIPTION, NAME, SKU,
};

/// Request bodies of the operations.
pub(super) fn inputs(c: ComponentsBuilder) -> ComponentsBuilder {
    let opt_email = || or_null(email(), Type::String);
    c.schema(
        "CustomerIn",
        Obj::new("Body of `createCustomer`.")
            .req("name", text(NAME))
            .opt("email", opt_email())
            .closed()
            .build(),
    )
    .schema(
        "EmployeeIn",
        Obj::new("Body of `createEmployee`: exactly the one of `annual_salary` / `hourly_rate` that matches `pay_type`, > 0.")
            .req("name", text(NAME))
            .opt("email", opt_email())
            .req("pay_type", enumeration(&["salary", "hourly"]))
            .opt("annual_salary", money("> 0; required for `salary`"))
            .opt("hourly_rate", money("> 0; required for `hourly`"))
            .closed()
            .build(),
    )
    .schema(
        "LineItemIn",
        Obj::new("An invoice line.")
            .req("description", text(DESCRIPTION))
            .req("quantity", int(Some(1), Some(1_000_000)))
            .req("unit_price", money("≥ 0"))
            .closed()
            .build(),
    )
    .schema(
        "InvoiceIn",
        Obj::new("Body of `createInvoice`. Defaults: the settings' currency; due date = UTC creation date + `payment_terms_days`.")
            .req("customer_id", id())
            .opt("currency", or_null(currency(), Type::String))
            .opt("due_date", or_null(date(), Type::String))
            .req("line_items", array(r("LineItemIn")).min_items(Some(1)).max_items(Some(100)))
            .closed()
            .build(),
    )
    .schema(
        "EmptyIn",
        Obj::new("An empty object; an empty body without a content type means the same.")
            .closed()
            .build(),
    )
    .schema(
        "PaymentIn",
        Obj::new("Body of `createPayment`; `received_on` defaults to the UTC creation date.")
            .req("invoice_id", id())
            .req("amount", money("> 0"))
            .req("method", enumeration(&["card", "bank_transfer", "cash", "check"]))
            .opt("received_on", or_null(date(), Type::String))
            .closed()
            .build(),
    )
    .schema(
        "RefundIn",
        Obj::new("Body of `createRefund`.")
            .req("payment_id", id())
            .req("amount", money("> 0"))
            .req("reason", text(DESCRIPTION))
            .closed()
            .build(),
    )
    .schema(
        "PayrollRunIn",
        Obj::new("Body of `executePayroll`; period_start ≤ period_end ≤ pay_date, inclusive.")
            .req("period_start", date())
            .req("period_end", date())
            .req("pay_date", date())
            .opt(
                "hours",
                or_null(ObjectBuilder::new(), Type::Object)
                    .description(Some("active hourly employee id → hours worked, \"0.00\"..\"744.00\" (strings)"))
                    .additional_properties(Some(money("hours, 0.00..744.00"))),
            )
            .closed()
            .build(),
    )
    .schema(
        "BankTransactionIn",
        Obj::new("Body of `createBankTransaction`.")
            .req("amount", money("≠ 0; may be negative"))
            .req("posted_on", date())
            .req("description", text(DESCRIPTION))
            .closed()
            .build(),
    )
    .schema(
        "ReconcileIn",
        Obj::new("Body of `reconcileLedger`.")
            .req("payment_id", id())
            .closed()
            .build(),
    )
    .schema(
        "InventoryItemIn",
        Obj::new("Body of `createInventoryItem`.")
            .req("sku", text(SKU))
            .req("name", text(NAME))
            .req("quantity", int(Some(0), None))
            .closed()
            .build(),
    )
    .schema(
        "AdjustmentIn",
        Obj::new("Body of `adjustInventory`; `delta` ≠ 0.")
            .req("delta", int(None, None))
            .req("reason", text(DESCRIPTION))
            .closed()
            .build(),
    )
    .schema(
        "WorkflowIn",
        Obj::new("Body of `createWorkflow`; `active` defaults to true.")
            .req("name", text(NAME))
            .req("trigger", enumeration(crate::domain::workflows::TRIGGERS))
            .req("action", r("WorkflowAction"))
            .opt("active", or_null(boolean(), Type::Boolean))
            .closed()
            .build(),
    )
    .schema(
        "TriggerIn",
        Obj::new("Body of `triggerWorkflow`; an empty body without a content type means `{}`.")
            .opt("input", or_null(ObjectBuilder::new(), Type::Object))
            .closed()
            .build(),
    )
    .schema(
        "WorkflowPatch",
        Obj::new("Body of `updateWorkflow`.")
            .req("active", boolean())
            .closed()
            .build(),
    )
    .schema(
        "RotateIn",
        Obj::new("Body of `rotateWebhookSecret`: `{}` (or an empty body).")
            .closed()
            .build(),
    )
    .schema(
        "SettingsPatch",
        Obj::new("Body of `updateCompanySettings`: at least one field; `null` values are refused.")
            .opt("display_name", text(NAME))
            .opt("currency", currency())
            .opt("invoice_prefix", prefix())
            .opt("payment_terms_days", int(Some(0), Some(365)))
            .opt("fiscal_year_start_month", int(Some(1), Some(12)))
            .min_properties(1)
            .closed()
            .build(),
    )
    .schema(
        "GrantIn",
        Obj::new("Body of `grantUserAccess`; re-granting changes the role.")
            .req("email", email())
            .req("role", enumeration(crate::auth::Role::NAMES))
            .closed()
            .build(),
    )
    .schema(
        "CompanyIn",
        Obj::new("Body of `POST /admin/companies`.")
            .req("name", text(NAME))
            .opt("email", opt_email())
            .closed()
            .build(),
    )
    .schema(
        "TokenIn",
        Obj::new("Body of `POST /admin/companies/{company_id}/tokens`.")
            .req("email", email())
            .closed()
            .build(),
    )
}
