//! Parameters, headers and responses shared by the paths: the `Idempotency-Key` and
//! `Prefer` parameters, the success headers of operations, and problem responses.
//!
//! Invariants:
//! - Every problem response is `application/problem+json` with the `Problem` schema,
//!   narrowed to the codes that status can carry on that route.
//! - `Idempotent-Replayed` and `Location` are declared only on 200/201 of operations.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{
    AllOfBuilder, Content, HeaderBuilder, ObjectBuilder, Required, Response, ResponseBuilder, Type,
};

use super::fields::{id, int};
use super::schemas::{enumeration, r, string, S};

/// `Idempotency-Key`: required on every operation.
pub(super) fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(
            "Identifies this write for safe retries: 1–255 visible ASCII characters \
             (0x21–0x7E), or an RFC 8941 sf-string of them (`\"abc\"` and `abc` are the same \
             key). Send it exactly once. Scoped to (company, operation). Absent → 400 \
             `idempotency_key_missing`; empty, too long, outside the alphabet or repeated → \
             400 `idempotency_key_invalid`. A UUIDv4 per logical write is a good choice.",
        ))
        .schema(Some(
            string("the idempotency key")
                .min_length(Some(1))
                .pattern(Some(
                    r#"^(?:[!#-~][!-~]{0,254}|"(?:[!#-\[\]-~]|\\["\\]){1,255}")$"#,
                ))
                .examples(["9b2f3c1e-5a7d-4e0b-8c1a-2f6d7e8a9b0c"]),
        ))
        .build()
}

/// `Prefer: wait=N` (RFC 7240).
pub(super) fn prefer() -> Parameter {
    ParameterBuilder::new()
        .name("Prefer")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "`wait=N` (seconds): if a request with the same key is in flight, hold this one \
             until it finishes (then answer as a retry would) or N elapses (then 409). N is \
             clamped to the server's `--max-wait`; a malformed `wait` is ignored. Responses to \
             held requests carry `Preference-Applied: wait=<clamped N>`.",
        ))
        .schema(Some(string("RFC 7240 preferences").examples(["wait=10"])))
        .build()
}

/// `X-Request-Id` (optional; echoed when valid).
pub(super) fn request_id_param() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Echoed on the response when 1–128 characters of `[A-Za-z0-9._:-]`; any other \
             value is accepted and replaced by one the server generates (so the request \
             schema does not constrain it).",
        ))
        .schema(Some(string("request id")))
        .build()
}

/// A path parameter holding an id.
pub(super) fn path_id(name: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "a 36-character hyphenated UUID (any hex case); anything else makes the route \
             unknown (404 before authentication)",
        ))
        .schema(Some(id()))
        .build()
}

fn header(description: &str, schema: ObjectBuilder) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(schema)
        .description(Some(description))
        .build()
}

/// `Cache-Control: no-store`, on the responses that carry a token.
pub(super) fn no_store_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(enumeration(&["no-store"]))
        .description(Some("responses carrying a token are never cached"))
        .build()
}

/// The `X-Request-Id` response header.
pub(super) fn request_id_header() -> utoipa::openapi::Header {
    header(
        "the request id (echoed or generated); equals a problem's `request_id`",
        string("request id"),
    )
}

fn with_request_id(b: ResponseBuilder) -> ResponseBuilder {
    b.header("X-Request-Id", request_id_header())
}

/// A JSON success response with the `X-Request-Id` header.
pub(super) fn json(description: &str, schema: impl Into<S>) -> ResponseBuilder {
    with_request_id(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", Content::new(Some(schema))),
    )
}

/// A 200/201 response of an operation.
pub(super) fn operation_success(status: u16, schema: S, location: Option<&str>) -> Response {
    let (description, replayed) = if status == 201 {
        (
            "Executed now. The body is the operation's resource.",
            "false",
        )
    } else {
        (
            "A retry of a completed request: the byte-identical body of the first response \
             (or, after the key's record expired, the resource as it is now in the same shape). \
             Nothing was executed again.",
            "true",
        )
    };
    let mut b = json(description, schema)
        .header(
            "Idempotent-Replayed",
            header(
                "`false` on the first execution, `true` on a replay",
                enumeration(&[replayed]),
            ),
        )
        .header(
            "Preference-Applied",
            header(
                "`wait=<clamped N>` when the request was held by `Prefer: wait`",
                string("RFC 7240"),
            ),
        );
    if let Some(loc) = location {
        b = b.header(
            "Location",
            header(
                &format!("relative URL of the resource: `{loc}`"),
                string("relative URL"),
            ),
        );
    }
    b.build()
}

/// A problem response for `status` whose `code` is one of `codes`.
pub(super) fn problem(status: u16, description: &str, codes: &[&str]) -> Response {
    let schema = AllOfBuilder::new().item(r("Problem")).item(
        ObjectBuilder::new()
            .property("code", enumeration(codes))
            .property(
                "status",
                int(Some(i64::from(status)), Some(i64::from(status))),
            ),
    );
    let mut b = with_request_id(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", Content::new(Some(schema))),
    );
    match status {
        401 => {
            b = b.header(
                "WWW-Authenticate",
                header("`Bearer`", enumeration(&["Bearer"])),
            )
        }
        409 => {
            b = b
                .header(
                    "Retry-After",
                    header(
                        "seconds: 1",
                        ObjectBuilder::new().schema_type(Type::Integer),
                    ),
                )
                .header(
                    "Preference-Applied",
                    header(
                        "`wait=<clamped N>` when the request was held",
                        string("RFC 7240"),
                    ),
                )
        }
        503 => {
            b = b.header(
                "Retry-After",
                header(
                    "seconds: 5",
                    ObjectBuilder::new().schema_type(Type::Integer),
                ),
            )
        }
        _ => {}
    }
    b.build()
}

/// `401 unauthenticated`.
pub(super) fn unauthenticated(what: &str) -> Response {
    problem(
        401,
        &format!("`unauthenticated`: missing or unknown token, or not a {what} token."),
        &["unauthenticated"],
    )
}

/// `500 internal` and `503 service_unavailable`.
pub(super) fn server_errors() -> [(&'static str, Response); 2] {
    [
        (
            "500",
            problem(
                500,
                "`internal`: an unexpected error; opaque, logged with the request id.",
                &["internal"],
            ),
        ),
        (
            "503",
            problem(
                503,
                "`service_unavailable`: no database connection within 5 s, the request's \
                 deadline passed, or the server is shutting down. Nothing was written; retry \
                 with the same key.",
                &["service_unavailable"],
            ),
        ),
    ]
}

/// `422 validation_failed` of a list's query parameters.
pub(super) fn bad_query() -> Response {
    problem(
        422,
        "`validation_failed`: a bad `limit`, `cursor` or filter value; `errors` names the \
         parameter.",
        &["validation_failed"],
    )
}
