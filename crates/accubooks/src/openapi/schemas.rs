//! Schema helpers for the hand-written request bodies, the problem document, and the
//! assembly of every component schema (the derived ones the routes reference, the
//! request bodies, the problem document).
//!
//! Invariants:
//! - Money is always a string matching [`crate::money::PATTERN`] and ids are `uuid`
//!   strings, as API.md states.
//! - Request bodies are closed (`additionalProperties: false`): the server rejects
//!   unknown fields with `422 validation_failed`. Response bodies are open, so a field
//!   added later is not a breaking change.

use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
use utoipa::openapi::{
    ArrayBuilder, ComponentsBuilder, ObjectBuilder, Ref, RefOr, Schema, SchemaFormat, Type,
};

/// A schema or a reference to one.
pub(super) type S = RefOr<Schema>;

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
        .pattern(Some(crate::money::PATTERN))
        .description(Some(description))
        .examples(["125.00"])
}

/// An id (36-character hyphenated UUID, rendered lowercase).
pub(super) fn id() -> ObjectBuilder {
    typed(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".to_owned())))
        .pattern(Some(UUID_PATTERN))
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
                array(r("FieldError")).description(Some("present on `validation_failed` only")),
            )
            .build(),
    )
}

/// Every component schema: those the handlers' types reference (`derived`), the
/// request bodies and the problem document.
pub(super) fn components(derived: impl IntoIterator<Item = (String, S)>) -> ComponentsBuilder {
    support(super::inputs::inputs(
        ComponentsBuilder::new().schemas_from_iter(derived),
    ))
}
