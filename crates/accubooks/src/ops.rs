//! The mutation registry of AccuBooks: every idempotent operation and every exempt route.

use http::Method;
use idem::{OperationDef, Registry};

/// What AccuBooks calls a tenant: the first part of every deterministic record id
/// (`company:{company_id}:op:…`).
pub const TENANCY: &str = "company";

/// The kind (metric label `type`) of a write that moves or records money.
pub const FINANCIAL: &str = "financial";

/// The kind of a write whose duplication is costly (customers, access, settings…).
pub const HIGH_RISK: &str = "high-risk";

macro_rules! op {
    ($ident:ident, $name:literal, $kind:ident, $method:ident, $route:literal, [$($table:literal),*]) => {
        #[doc = concat!("`", $name, "`: ", stringify!($method), " ", $route)]
        pub static $ident: OperationDef = OperationDef::new($name, Method::$method, $route)
            .kind(kind!($kind))
            .tables(&[$($table),*]);
    };
    ($ident:ident, $name:literal, $kind:ident, $method:ident, $route:literal, [$($table:literal),*], true) => {
        #[doc = concat!("`", $name, "`: ", stringify!($method), " ", $route)]
        pub static $ident: OperationDef = OperationDef::new($name, Method::$method, $route)
            .kind(kind!($kind))
            .tables(&[$($table),*])
            .empty_body_is_empty_object();
    };
}

macro_rules! kind {
    (Financial) => {
        FINANCIAL
    };
    (HighRisk) => {
        HIGH_RISK
    };
}

op!(
    CREATE_CUSTOMER,
    "createCustomer",
    HighRisk,
    POST,
    "/api/customers",
    ["customers"]
);
op!(
    CREATE_EMPLOYEE,
    "createEmployee",
    HighRisk,
    POST,
    "/api/employees",
    ["employees"]
);
op!(
    UPDATE_COMPANY_SETTINGS,
    "updateCompanySettings",
    HighRisk,
    PATCH,
    "/api/company/settings",
    ["company_settings", "settings_versions"]
);
op!(
    GRANT_USER_ACCESS,
    "grantUserAccess",
    HighRisk,
    POST,
    "/api/company/members",
    ["members", "access_grants"]
);

op!(
    CREATE_INVOICE,
    "createInvoice",
    Financial,
    POST,
    "/api/invoices",
    ["invoices", "invoice_line_items"]
);
op!(
    FINALIZE_INVOICE,
    "finalizeInvoice",
    Financial,
    POST,
    "/api/invoices/{id}/finalize",
    ["invoices", "invoice_counters", "invoice_finalizations"],
    true
);
op!(
    CREATE_PAYMENT,
    "createPayment",
    Financial,
    POST,
    "/api/payments",
    ["payments", "invoices"]
);
op!(
    CREATE_REFUND,
    "createRefund",
    Financial,
    POST,
    "/api/refunds",
    ["refunds", "payments", "invoices"]
);
op!(
    EXECUTE_PAYROLL,
    "executePayroll",
    Financial,
    POST,
    "/api/payroll-runs",
    ["payroll_runs", "payroll_stubs"]
);
op!(
    CREATE_BANK_TRANSACTION,
    "createBankTransaction",
    Financial,
    POST,
    "/api/bank-transactions",
    ["bank_transactions"]
);
op!(
    RECONCILE_LEDGER,
    "reconcileLedger",
    Financial,
    POST,
    "/api/bank-transactions/{id}/reconcile",
    ["bank_transactions", "reconciliations"]
);

op!(
    CREATE_INVENTORY_ITEM,
    "createInventoryItem",
    HighRisk,
    POST,
    "/api/inventory-items",
    ["inventory_items"]
);
op!(
    ADJUST_INVENTORY,
    "adjustInventory",
    HighRisk,
    POST,
    "/api/inventory-items/{id}/adjustments",
    [
        "inventory_items",
        "inventory_adjustments",
        "workflow_instances"
    ]
);
op!(
    CREATE_WORKFLOW,
    "createWorkflow",
    HighRisk,
    POST,
    "/api/workflows",
    ["workflows"]
);
op!(
    UPDATE_WORKFLOW,
    "updateWorkflow",
    HighRisk,
    PATCH,
    "/api/workflows/{id}",
    ["workflows", "workflow_updates"]
);
op!(
    TRIGGER_WORKFLOW,
    "triggerWorkflow",
    HighRisk,
    POST,
    "/api/workflows/{id}/trigger",
    ["workflow_instances"],
    true
);
op!(
    ROTATE_WEBHOOK_SECRET,
    "rotateWebhookSecret",
    HighRisk,
    POST,
    "/api/company/webhook-secret/rotate",
    ["webhook_secrets", "webhook_secret_rotations"],
    true
);
/// The table holding an operation's record row (the row whose id is the deterministic
/// id): what `audit verify` checks every `new` audit row against.
pub fn record_table(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "createCustomer" => "customers",
        "createEmployee" => "employees",
        "updateCompanySettings" => "settings_versions",
        "grantUserAccess" => "access_grants",
        "createInvoice" => "invoices",
        "finalizeInvoice" => "invoice_finalizations",
        "createPayment" => "payments",
        "createRefund" => "refunds",
        "executePayroll" => "payroll_runs",
        "createBankTransaction" => "bank_transactions",
        "reconcileLedger" => "reconciliations",
        "createInventoryItem" => "inventory_items",
        "adjustInventory" => "inventory_adjustments",
        "createWorkflow" => "workflows",
        "updateWorkflow" => "workflow_updates",
        "triggerWorkflow" => "workflow_instances",
        "rotateWebhookSecret" => "webhook_secret_rotations",
        _ => return None,
    })
}

/// The registry: operations and exempt routes.
pub fn registry() -> Registry {
    Registry::new()
        .operation(&CREATE_CUSTOMER)
        .operation(&CREATE_EMPLOYEE)
        .operation(&UPDATE_COMPANY_SETTINGS)
        .operation(&GRANT_USER_ACCESS)
        .operation(&CREATE_INVOICE)
        .operation(&FINALIZE_INVOICE)
        .operation(&CREATE_PAYMENT)
        .operation(&CREATE_REFUND)
        .operation(&EXECUTE_PAYROLL)
        .operation(&CREATE_BANK_TRANSACTION)
        .operation(&RECONCILE_LEDGER)
        .operation(&CREATE_INVENTORY_ITEM)
        .operation(&ADJUST_INVENTORY)
        .operation(&CREATE_WORKFLOW)
        .operation(&UPDATE_WORKFLOW)
        .operation(&TRIGGER_WORKFLOW)
        .operation(&ROTATE_WEBHOOK_SECRET)
        .exempt(
            Method::POST,
            "/admin/companies",
            "operator bootstrap: creates a tenant and its first token",
        )
        .exempt(
            Method::POST,
            "/admin/companies/{company_id}/tokens",
            "operator action: issues a token",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_operation_names_its_record_table() {
        for def in registry().operations() {
            assert!(
                record_table(def.name()).is_some_and(|t| def.written_tables().contains(&t)),
                "{}: record table missing or not among its tables",
                def.name()
            );
        }
    }
}
