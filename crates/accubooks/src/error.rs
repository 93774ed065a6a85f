//! The server's one error type, rendered as the problem documents of API.md.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use idem::{FieldError, Problem};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 422 `validation_failed`, with the invalid fields.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 404 `not_found`; the detail names what is missing.
    #[error("not found: {0}")]
    NotFound(String),
    /// 422 with a business-rule code (`payment_exceeds_balance`).
    #[error("{code}: {detail}")]
    Rule {
        /// The rule's code.
        code: &'static str,
        /// What happened.
        detail: String,
    },
    /// 401 `unauthenticated` (with `WWW-Authenticate: Bearer`).
    #[error("unauthenticated")]
    Unauthenticated,
    /// 403 `forbidden`.
    #[error("forbidden")]
    Forbidden,
    /// A ready problem (400/413/415 and friends).
    #[error("{}", .0.detail)]
    Problem(Problem),
    /// 500 `internal` or 503 `service_unavailable`; the cause is logged, never sent.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// 500 `internal`; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A single invalid field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    /// A business rule refused the write.
    pub fn rule(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Rule {
            code,
            detail: detail.into(),
        }
    }

    /// A referenced or addressed entity does not exist in the caller's company.
    pub fn not_found(detail: impl Into<String>) -> Self {
        AppError::NotFound(detail.into())
    }

    fn to_problem(&self) -> Problem {
        match self {
            AppError::Validation(errors) => Problem::validation(errors.clone()),
            AppError::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", detail.clone())
            }
            AppError::Rule { code, detail } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail.clone())
            }
            AppError::Unauthenticated => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send a valid bearer token for this API in the Authorization header",
            ),
            AppError::Forbidden => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role does not allow this operation",
            ),
            AppError::Problem(p) => p.clone(),
            AppError::Db(e) => idem::http::store_error(e),
            AppError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred",
                )
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let unauthenticated = matches!(self, AppError::Unauthenticated);
        let mut res = self.to_problem().into_response();
        if unauthenticated {
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl idem::OperationError for AppError {
    fn error_type(&self) -> &'static str {
        match self {
            AppError::Validation(_) | AppError::Problem(_) => "validation",
            AppError::NotFound(_) => "not_found",
            AppError::Rule { .. } => "business_rule",
            AppError::Unauthenticated | AppError::Forbidden => "forbidden",
            AppError::Db(_) | AppError::Internal(_) => "internal",
        }
    }

    fn audit_message(&self) -> String {
        match self {
            AppError::Db(_) | AppError::Internal(_) => "internal error".to_owned(),
            AppError::Validation(errors) => validation_summary(errors),
            other => other.to_problem().detail,
        }
    }

    fn store_error(&self) -> Option<&sqlx::Error> {
        match self {
            AppError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// Field errors named in an audit message; the rest are counted.
const AUDIT_ERRORS_SHOWN: usize = 5;
/// Longest field path quoted in an audit message, in characters.
const AUDIT_FIELD_MAX: usize = 100;

/// The first few field errors and a count of the rest: a body of 20,000 unknown fields
/// makes a short audit row, not one as large as the body.
fn validation_summary(errors: &[FieldError]) -> String {
    let mut parts: Vec<String> = errors
        .iter()
        .take(AUDIT_ERRORS_SHOWN)
        .map(|e| {
            let field: String = e.field.chars().take(AUDIT_FIELD_MAX).collect();
            let ellipsis = if e.field.chars().count() > AUDIT_FIELD_MAX {
                "…"
            } else {
                ""
            };
            format!("{field}{ellipsis}: {}", e.message)
        })
        .collect();
    if errors.len() > AUDIT_ERRORS_SHOWN {
        parts.push(format!("and {} more", errors.len() - AUDIT_ERRORS_SHOWN));
    }
    parts.join("; ")
}

/// Result alias for handlers and domain functions.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;
    use idem::OperationError;

    #[test]
    fn audit_messages_name_the_first_errors_and_count_the_rest() {
        let errors: Vec<FieldError> = (0..20_000)
            .map(|i| FieldError::new(format!("f{i}"), "unknown field"))
            .collect();
        let m = AppError::Validation(errors).audit_message();
        assert!(m.starts_with("f0: unknown field; f1: unknown field"), "{m}");
        assert!(m.ends_with("; and 19995 more"), "{m}");
        let long = AppError::field("x".repeat(10_000), "unknown field").audit_message();
        assert!(long.chars().count() < 120, "{long}");
    }
}
