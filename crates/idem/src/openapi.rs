//! OpenAPI schemas of the wire types (feature `utoipa`): [`Id`] is a `uuid` string and
//! [`Ts`] a `date-time` string with exactly six fraction digits, as they serialize.
//!
//! Invariant: each schema states what the type's `Serialize` impl writes, so a service
//! that derives `utoipa::ToSchema` on types holding them describes its wire format.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::db::{Id, Ts};

impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .pattern(Some(
                "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            ))
            .description(Some("a UUID, 36 characters, hyphenated, lowercase"))
            .into()
    }
}

impl ToSchema for Id {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Id")
    }
}

impl PartialSchema for Ts {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("date-time".to_owned())))
            .pattern(Some(
                r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$",
            ))
            .description(Some("a UTC instant with exactly six fraction digits"))
            .examples(["2026-01-31T09:30:00.123456Z"])
            .into()
    }
}

impl ToSchema for Ts {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}
