//! Schema helpers for the problem document and the shared parameters and headers, and
//! the assembly of every component schema (the derived ones the routes reference and the
//! problem document).
//!
//! Invariants:
//! - Request bodies are derived from the input types the parsers return and are closed
//!   (`additionalProperties: false`): the server rejects unknown fields with
//!   `422 validation_failed`. Response bodies are open, so a field added later is not a
//!   breaking change.

use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, Ref, RefOr, Schema, Type};

use super::fields::int;

/// A schema or a reference to one.
pub(super) type S = RefOr<Schema>;

/// A reference to a component schema.
pub(super) fn r(name: &str) -> S {
    Ref::from_schema_name(name).into()
}

/// A string with a description.
pub(super) fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// A string enumeration.
pub(super) fn enumeration(values: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
}

/// An object schema under construction: `req` adds a required property, `opt` an
/// optional one.
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

    pub(super) fn build(self) -> S {
        self.0.into()
    }
}

/// The problem document.
fn support(c: ComponentsBuilder) -> ComponentsBuilder {
    c.schema(
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
                ArrayBuilder::new()
                    .items(r("FieldError"))
                    .description(Some("present on `validation_failed` only")),
            )
            .build(),
    )
}

/// Every component schema: those the handlers' types reference (`derived`: request and
/// response bodies) and the problem document.
pub(super) fn components(derived: impl IntoIterator<Item = (String, S)>) -> ComponentsBuilder {
    let derived = derived
        .into_iter()
        .map(|(name, schema)| (name, min_properties_fixed(schema)));
    support(ComponentsBuilder::new().schemas_from_iter(derived))
}

/// utoipa-gen 5.5.0 renders the container attribute `#[schema(min_properties = n)]` as
/// `maxProperties: n`. Input types (closed objects) declare only `min_properties` (no
/// request body has an upper bound on its fields), so on a closed object the number is
/// moved back where the attribute put it.
fn min_properties_fixed(schema: S) -> S {
    match schema {
        RefOr::T(Schema::Object(mut o))
            if matches!(
                o.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            ) =>
        {
            if let Some(n) = o.max_properties.take() {
                o.min_properties = Some(n);
            }
            RefOr::T(Schema::Object(o))
        }
        other => other,
    }
}
