//! The documentation of every idempotent operation of API.md, keyed by operation name.
//!
//! Invariants:
//! - The table covers all seventeen operations (API.md's fifteen, plus `updateWorkflow`
//!   and `rotateWebhookSecret`), registered or not; only the
//!   registered ones become paths (`super::operations`), and a unit test fails when a
//!   registered operation has no entry here or disagrees with it on method or route.
//! - Business-rule codes are listed in the order the server checks them.

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `admin` and `accountant`.
    Writers,
    /// `admin` only.
    Admins,
}

/// How one operation is documented.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpSpec {
    /// Operation name (the `operationId`).
    pub(super) name: &'static str,
    /// Method, as registered.
    pub(super) method: &'static str,
    /// Route, as registered.
    pub(super) route: &'static str,
    /// Tag (the resource area).
    pub(super) tag: &'static str,
    /// One line.
    pub(super) summary: &'static str,
    /// What it does, beyond the summary.
    pub(super) description: &'static str,
    /// Component schema of the body.
    pub(super) request: &'static str,
    /// Component schema of the 201/200 body.
    pub(super) response: &'static str,
    /// The `Location` of the 201/200, if any.
    pub(super) location: Option<&'static str>,
    /// When the 404 happens, if it can.
    pub(super) not_found: Option<&'static str>,
    /// Business-rule 422 codes in check order, with their meaning.
    pub(super) rules: &'static [(&'static str, &'static str)],
    /// Roles allowed.
    pub(super) access: Access,
    /// Whether an empty body without a content type means `{}`.
    pub(super) empty_body: bool,
}

const BASE: OpSpec = OpSpec {
    name: "",
    method: "POST",
    route: "",
    tag: "",
    summary: "",
    description: "",
    request: "",
    response: "",
    location: None,
    not_found: None,
    rules: &[],
    access: Access::Writers,
    empty_body: false,
};

/// All seventeen operations.
pub(super) const SPECS: &[OpSpec] = &[
    OpSpec {
        name: "createCustomer",
        route: "/api/customers",
        tag: "Customers",
        summary: "Create a customer",
        description: "Creates a customer; its id is the operation's deterministic id.",
        request: "CustomerIn",
        response: "Customer",
        location: Some("/api/customers/{id}"),
        ..BASE
    },
    OpSpec {
        name: "createEmployee",
        route: "/api/employees",
        tag: "Employees",
        summary: "Create an employee",
        description: "Creates an active employee paid a salary or an hourly rate.",
        request: "EmployeeIn",
        response: "Employee",
        location: Some("/api/employees/{id}"),
        ..BASE
    },
    OpSpec {
        name: "createInvoice",
        route: "/api/invoices",
        tag: "Invoices",
        summary: "Create a draft invoice",
        description: "Creates a `draft` invoice with `number: null`; line amounts and totals \
                      are computed with checked arithmetic (a computed amount beyond 12 integer \
                      digits → 422 naming that field). Emits `invoice.created`.",
        request: "InvoiceIn",
        response: "Invoice",
        location: Some("/api/invoices/{id}"),
        not_found: Some(
            "`customer_id` does not exist in your company (the detail names the field)",
        ),
        ..BASE
    },
    OpSpec {
        name: "finalizeInvoice",
        route: "/api/invoices/{id}/finalize",
        tag: "Invoices",
        summary: "Finalize a draft invoice",
        description: "Numbers the invoice with the company's `invoice_prefix` and a gap-free \
                      sequence (`INV-000001`) and opens it (`paid` when its total is 0.00). \
                      The body must be `{}` or empty. The record is the finalization; a retry \
                      after expiry returns the invoice as it is now. Emits `invoice.finalized`.",
        request: "EmptyIn",
        response: "Invoice",
        not_found: Some("the invoice does not exist in your company"),
        rules: &[("invoice_not_draft", "the invoice is not a draft")],
        empty_body: true,
        ..BASE
    },
    OpSpec {
        name: "createPayment",
        route: "/api/payments",
        tag: "Payments",
        summary: "Record a payment",
        description: "Records a payment on an open invoice; the invoice becomes `paid` at zero \
                      balance. Emits `payment.created`.",
        request: "PaymentIn",
        response: "Payment",
        location: Some("/api/payments/{id}"),
        not_found: Some("`invoice_id` does not exist in your company"),
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
        route: "/api/refunds",
        tag: "Payments",
        summary: "Refund (part of) a payment",
        description: "Lowers the invoice's `amount_paid`; a paid invoice with a balance is \
                      `open` again. Emits `refund.created`.",
        request: "RefundIn",
        response: "Refund",
        location: Some("/api/refunds/{id}"),
        not_found: Some("`payment_id` does not exist in your company"),
        rules: &[(
            "refund_exceeds_payment",
            "the amount exceeds the payment minus earlier refunds",
        )],
        ..BASE
    },
    OpSpec {
        name: "executePayroll",
        route: "/api/payroll-runs",
        tag: "Payroll",
        summary: "Execute a payroll run",
        description: "Creates one stub per active employee: salaried gross = annual_salary / \
                      24, hourly = rate × hours (0.00 without hours), rounded half away from \
                      zero. `hours` keys must be active hourly employees of the company (else \
                      422 `validation_failed` at `hours.<key>`, never 404). Emits \
                      `payroll.executed`.",
        request: "PayrollRunIn",
        response: "PayrollRun",
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
        route: "/api/bank-transactions",
        tag: "Banking",
        summary: "Record a bank transaction",
        description: "Records an unreconciled bank transaction (`reconciled: false`, \
                      `payment_id: null`).",
        request: "BankTransactionIn",
        response: "BankTransaction",
        location: Some("/api/bank-transactions/{id}"),
        ..BASE
    },
    OpSpec {
        name: "reconcileLedger",
        route: "/api/bank-transactions/{id}/reconcile",
        tag: "Banking",
        summary: "Reconcile a bank transaction with a payment",
        description: "Matches the transaction with a payment of the same original amount. The \
                      record is the reconciliation; a retry after expiry returns the bank \
                      transaction as it is now.",
        request: "ReconcileIn",
        response: "BankTransaction",
        not_found: Some("the bank transaction or `payment_id` does not exist in your company"),
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
        route: "/api/inventory-items",
        tag: "Inventory",
        summary: "Create an inventory item",
        description: "Creates a stock-keeping unit with an initial quantity.",
        request: "InventoryItemIn",
        response: "InventoryItem",
        location: Some("/api/inventory-items/{id}"),
        rules: &[("sku_taken", "another item of the company has this sku")],
        ..BASE
    },
    OpSpec {
        name: "adjustInventory",
        route: "/api/inventory-items/{id}/adjustments",
        tag: "Inventory",
        summary: "Adjust an item's quantity",
        description: "Adds `delta` (≠ 0) to the quantity. The record is the adjustment. Emits \
                      `inventory.adjusted`.",
        request: "AdjustmentIn",
        response: "InventoryAdjustmentResult",
        not_found: Some("the item does not exist in your company"),
        rules: &[("insufficient_stock", "the quantity would become negative")],
        ..BASE
    },
    OpSpec {
        name: "createWorkflow",
        route: "/api/workflows",
        tag: "Workflows",
        summary: "Create a workflow",
        description: "On each event `trigger`, an active workflow gets an instance that runs \
                      `action` asynchronously, at least once (webhooks: signed with \
                      HMAC-SHA256, `Idempotency-Key: <instance id>`, retried with backoff).",
        request: "WorkflowIn",
        response: "Workflow",
        location: Some("/api/workflows/{id}"),
        rules: &[(
            "webhook_url_not_allowed",
            "the URL is not http(s) or resolves to a loopback, private or link-local address",
        )],
        ..BASE
    },
    OpSpec {
        name: "triggerWorkflow",
        route: "/api/workflows/{id}/trigger",
        tag: "Workflows",
        summary: "Trigger a workflow manually",
        description: "Creates a workflow instance with `trigger_entity_type: \"manual\"`. The \
                      body may be empty, `{}` or `{\"input\": {...}}`.",
        request: "TriggerIn",
        response: "WorkflowInstance",
        location: Some("/api/workflow-instances/{id}"),
        not_found: Some("the workflow does not exist in your company"),
        rules: &[("workflow_inactive", "the workflow is not active")],
        empty_body: true,
        ..BASE
    },
    OpSpec {
        name: "updateWorkflow",
        method: "PATCH",
        route: "/api/workflows/{id}",
        tag: "Workflows",
        summary: "Activate or deactivate a workflow",
        description: "Sets `active`; answers 201 on first execution like every operation, \
                      without `Location`. An inactive workflow gets no instances from events \
                      and refuses manual triggers (`workflow_inactive`); instances already \
                      written still run. The record is the workflow update.",
        request: "WorkflowPatch",
        response: "Workflow",
        not_found: Some("the workflow does not exist in your company"),
        ..BASE
    },
    OpSpec {
        name: "rotateWebhookSecret",
        route: "/api/company/webhook-secret/rotate",
        tag: "Workflows",
        summary: "Rotate the webhook signing secret",
        description: "Replaces the company's webhook signing secret (`version` + 1); \
                      deliveries that start after the commit are signed with the new one. The \
                      body may be empty or `{}`. The response (and its replays) carry the new \
                      secret with `Cache-Control: no-store`. The record is the rotation.",
        request: "RotateIn",
        response: "WebhookSecret",
        access: Access::Admins,
        empty_body: true,
        ..BASE
    },
    OpSpec {
        name: "updateCompanySettings",
        method: "PATCH",
        route: "/api/company/settings",
        tag: "Company",
        summary: "Change company settings",
        description: "Applies the given fields and increments `version`; answers 201 on first \
                      execution like every operation. The record is the settings version.",
        request: "SettingsPatch",
        response: "SettingsVersion",
        access: Access::Admins,
        ..BASE
    },
    OpSpec {
        name: "grantUserAccess",
        route: "/api/company/members",
        tag: "Company",
        summary: "Grant a user access (or change their role)",
        description: "Gives `email` the `role` in the company; re-granting changes the role. \
                      Demotions are decided under a company lock, so concurrent demotions \
                      never leave zero admins. Tokens are issued by the operator.",
        request: "GrantIn",
        response: "Member",
        location: Some("/api/company/members/{user_id}"),
        rules: &[(
            "cannot_demote_last_admin",
            "the change would leave the company without an admin",
        )],
        access: Access::Admins,
        ..BASE
    },
];

impl OpSpec {
    /// Whether the entry describes `def` as registered: same method, route and
    /// empty-body rule.
    pub(super) fn agrees_with(&self, def: &idem::OperationDef) -> bool {
        self.method == def.method.as_str()
            && self.route == def.route
            && self.empty_body == def.empty_body_is_empty_object
    }
}

/// The entry of `name`.
pub(super) fn find(name: &str) -> Option<&'static OpSpec> {
    SPECS.iter().find(|s| s.name == name)
}
