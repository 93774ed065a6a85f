//! What the contract says about each idempotent operation beyond what its handler's
//! `#[utoipa::path]` and the registry state: who may call it, the `Location` of its
//! 201/200, and its business-rule 422 codes.
//!
//! Invariants:
//! - Keyed by operation name; an operation without an entry is documented with the
//!   generic contract (writers, no `Location`, no business rules), and a unit test fails
//!   when a registered operation has none.
//! - Business-rule codes are listed in the order the server checks them.

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `admin` and `accountant`.
    Writers,
    /// `admin` only.
    Admins,
}

/// The contract of one operation.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpSpec {
    /// Operation name (the `operationId`).
    pub(super) name: &'static str,
    /// The `Location` of the 201/200, if any.
    pub(super) location: Option<&'static str>,
    /// Business-rule 422 codes in check order, with their meaning.
    pub(super) rules: &'static [(&'static str, &'static str)],
    /// Roles allowed.
    pub(super) access: Access,
}

const BASE: OpSpec = OpSpec {
    name: "",
    location: None,
    rules: &[],
    access: Access::Writers,
};

/// All seventeen operations.
pub(super) const SPECS: &[OpSpec] = &[
    OpSpec {
        name: "createCustomer",
        location: Some("/api/customers/{id}"),
        ..BASE
    },
    OpSpec {
        name: "createEmployee",
        location: Some("/api/employees/{id}"),
        ..BASE
    },
    OpSpec {
        name: "createInvoice",
        location: Some("/api/invoices/{id}"),
        ..BASE
    },
    OpSpec {
        name: "finalizeInvoice",
        rules: &[("invoice_not_draft", "the invoice is not a draft")],
        ..BASE
    },
    OpSpec {
        name: "createPayment",
        location: Some("/api/payments/{id}"),
        rules: &[
            ("invoice_not_open", "the invoice is a draft or already paid"),
            (
                "payment_exceeds_balance",
                "the amount exceeds the balance due",
            ),
        ],
        ..BASE
    },
    OpSpec {
        name: "createRefund",
        location: Some("/api/refunds/{id}"),
        rules: &[(
            "refund_exceeds_payment",
            "the amount exceeds the payment minus earlier refunds",
        )],
        ..BASE
    },
    OpSpec {
        name: "executePayroll",
        location: Some("/api/payroll-runs/{id}"),
        rules: &[
            ("no_active_employees", "the company has no active employee"),
            (
                "payroll_period_already_executed",
                "the period overlaps an executed run (sharing a day is an overlap)",
            ),
        ],
        ..BASE
    },
    OpSpec {
        name: "createBankTransaction",
        location: Some("/api/bank-transactions/{id}"),
        ..BASE
    },
    OpSpec {
        name: "reconcileLedger",
        rules: &[
            (
                "already_reconciled",
                "the transaction or the payment is already matched",
            ),
            (
                "amount_mismatch",
                "the transaction amount differs from the payment's original amount",
            ),
        ],
        ..BASE
    },
    OpSpec {
        name: "createInventoryItem",
        location: Some("/api/inventory-items/{id}"),
        rules: &[("sku_taken", "another item of the company has this sku")],
        ..BASE
    },
    OpSpec {
        name: "adjustInventory",
        rules: &[("insufficient_stock", "the quantity would become negative")],
        ..BASE
    },
    OpSpec {
        name: "createWorkflow",
        location: Some("/api/workflows/{id}"),
        rules: &[(
            "webhook_url_not_allowed",
            "the URL is not http(s) or resolves to a loopback, private or link-local address",
        )],
        ..BASE
    },
    OpSpec {
        name: "triggerWorkflow",
        location: Some("/api/workflow-instances/{id}"),
        rules: &[("workflow_inactive", "the workflow is not active")],
        ..BASE
    },
    OpSpec {
        name: "updateWorkflow",
        ..BASE
    },
    OpSpec {
        name: "rotateWebhookSecret",
        access: Access::Admins,
        ..BASE
    },
    OpSpec {
        name: "updateCompanySettings",
        access: Access::Admins,
        ..BASE
    },
    OpSpec {
        name: "grantUserAccess",
        location: Some("/api/company/members/{user_id}"),
        rules: &[(
            "cannot_demote_last_admin",
            "the change would leave the company without an admin",
        )],
        access: Access::Admins,
    },
];

/// The entry of `name`.
pub(super) fn find(name: &str) -> Option<&'static OpSpec> {
    SPECS.iter().find(|s| s.name == name)
}
