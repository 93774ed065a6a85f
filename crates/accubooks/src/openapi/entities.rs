//! The response bodies, derived from the types the handlers serialize
//! (`#[derive(utoipa::ToSchema)]` beside `#[derive(Serialize)]`), with every schema they
//! reference (`Id`, `Timestamp`, `Money`, embedded objects).
//!
//! Invariant: a response type is listed here once; its fields, their types and whether
//! they may be null come from the Rust type, so the document cannot omit a field the
//! server writes.

use utoipa::openapi::{ComponentsBuilder, RefOr, Schema};
use utoipa::ToSchema;

use crate::domain::workflows::{instances::Instance, Workflow};
use crate::domain::{
    admin, bank, customers, employees, inventory, invoices, members, payments, payroll, refunds,
    settings, webhook_secret,
};
use crate::health;

/// Adds `T` and every schema it references.
fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

/// Every response body of the API, as component schemas.
pub(super) fn entities(c: ComponentsBuilder) -> ComponentsBuilder {
    let mut all = Vec::new();
    add::<customers::Customer>(&mut all);
    add::<employees::Employee>(&mut all);
    add::<invoices::Invoice>(&mut all);
    add::<payments::Payment>(&mut all);
    add::<refunds::Refund>(&mut all);
    add::<payroll::PayrollRun>(&mut all);
    add::<bank::BankTransaction>(&mut all);
    add::<inventory::Item>(&mut all);
    add::<inventory::AdjustmentOut>(&mut all);
    add::<Workflow>(&mut all);
    add::<Instance>(&mut all);
    add::<webhook_secret::Secret>(&mut all);
    add::<settings::SettingsOut>(&mut all);
    add::<members::Member>(&mut all);
    add::<admin::CompanyCreated>(&mut all);
    add::<admin::TokenIssued>(&mut all);
    add::<health::Status>(&mut all);
    add::<health::SystemHealth>(&mut all);
    c.schemas_from_iter(all)
}
