//! Schemas of request fields, one per check of [`crate::validate::Validator`], for
//! `#[schema(schema_with = …)]` on the input types the parsers return: the input type is
//! the one description of a body, and its fields name the check's limits through the same
//! constants the parser passes to the check (`text::<NAME_MAX>`).
//!
//! Invariants:
//! - Each schema admits what its check accepts and refuses what JSON Schema can express of
//!   what it refuses; what it cannot (a real calendar day, the currency table) is said in
//!   the description.
//! - The `*_or_null` variants are for optional fields: `null` means absent (API.md).
//!   Money fields use the `Money` component ([`crate::money::Money`]'s own schema).

use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::{Object, ObjectBuilder, SchemaFormat, Type};

const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

fn typed(t: Type) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(t)
}

/// Makes a schema of type `t` also accept `null`.
fn or_null(b: ObjectBuilder, t: Type) -> Object {
    b.schema_type(SchemaType::from_iter([t, Type::Null]))
        .build()
}

/// A string of at most `max` characters with a non-whitespace one ([`Validator::text`]
/// of a required field).
///
/// [`Validator::text`]: crate::validate::Validator::text
fn text_of(max: usize) -> ObjectBuilder {
    typed(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(r"\S"))
}

/// [`text_of`] `MAX`, for `schema_with`.
pub fn text<const MAX: usize>() -> Object {
    text_of(MAX).build()
}

fn email_of() -> ObjectBuilder {
    typed(Type::String)
        .max_length(Some(crate::validate::EMAIL_MAX))
        .pattern(Some(r"^[^@\s]+@[^@\s]+$"))
        .description(Some(
            "one `@` with non-empty parts, no whitespace; stored as sent, matched case-insensitively",
        ))
}

/// An email ([`crate::validate::Validator::email`]).
pub fn email() -> Object {
    email_of().build()
}

/// An optional email.
pub fn email_or_null() -> Object {
    or_null(email_of(), Type::String)
}

/// An id: a 36-character hyphenated UUID, any hex case
/// ([`crate::validate::Validator::uuid`]).
fn id_of() -> ObjectBuilder {
    typed(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".to_owned())))
        .pattern(Some(UUID_PATTERN))
}

/// A reference to an entity by id.
pub fn id() -> Object {
    id_of().build()
}

fn date_of() -> ObjectBuilder {
    typed(Type::String).format(Some(SchemaFormat::Custom("date".to_owned())))
}

/// A date `YYYY-MM-DD` ([`crate::validate::Validator::date`]).
pub fn date() -> Object {
    date_of().build()
}

/// An optional date.
pub fn date_or_null() -> Object {
    or_null(date_of(), Type::String)
}

fn currency_of() -> ObjectBuilder {
    typed(Type::String)
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some("ISO 4217 code with 2 minor units, uppercase"))
        .examples(["USD"])
}

/// A currency ([`crate::validate::Validator::currency`]).
pub fn currency() -> Object {
    currency_of().build()
}

/// An optional currency.
pub fn currency_or_null() -> Object {
    or_null(currency_of(), Type::String)
}

/// A JSON integer within bounds ([`crate::validate::Validator::integer`]).
pub(crate) fn int(min: Option<i64>, max: Option<i64>) -> ObjectBuilder {
    typed(Type::Integer)
        .format(Some(SchemaFormat::Custom("int64".to_owned())))
        .minimum(min)
        .maximum(max)
}

/// [`int`] from `MIN` to `MAX`, for `schema_with`.
pub fn integer<const MIN: i64, const MAX: i64>() -> Object {
    int(Some(MIN), Some(MAX)).build()
}
