//! Bearer tokens, roles and the tenant context.
//!
//! Invariants:
//! - Tokens are random (256 bits) and stored only as SHA-256 hashes; a bearer value that
//!   is not exactly a company token's shape never reaches the database.
//! - A configured operator token is at least 32 visible ASCII characters with at least
//!   10 distinct ones (checked at start).
//! - The company of every request comes from its token, never from the body or path.
//! - Company tokens and the operator token are different kinds: each is refused (401)
//!   where the other belongs.
//! - A token's role is cached for at most one second, so role changes reach every node
//!   within a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use base64::Engine as _;
use http::request::Parts;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;
use idem::{on_db, Db, Id};

/// Company token prefix.
pub const COMPANY_TOKEN_PREFIX: &str = "acb_";
/// Operator token prefix.
pub const OPERATOR_TOKEN_PREFIX: &str = "acbop_";
/// Characters after the prefix of a generated token: 32 random bytes, URL-safe base64
/// without padding.
pub const TOKEN_BODY_LEN: usize = 43;
/// Shortest operator token accepted from the configuration.
pub const OPERATOR_TOKEN_MIN_LEN: usize = 32;
/// Fewest distinct characters in a configured operator token (`aaaa…` and `abab…` are
/// long but guessable).
pub const OPERATOR_TOKEN_MIN_DISTINCT: usize = 10;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Everything but settings and access.
    Accountant,
    /// Reads only.
    Viewer,
}

impl Role {
    /// Every role, as sent and rendered.
    pub const NAMES: &'static [&'static str] = &["admin", "accountant", "viewer"];

    /// Parses `admin` / `accountant` / `viewer`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "accountant" => Some(Role::Accountant),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Accountant => "accountant",
            Role::Viewer => "viewer",
        }
    }
}

/// Who may run an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Admins and accountants.
    Writer,
    /// Admins only.
    Admin,
}

/// The authenticated caller of `/api/`.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The token's company.
    pub company_id: Uuid,
    /// The token's user.
    pub user_id: Uuid,
    /// The user's role in the company.
    pub role: Role,
}

impl Tenant {
    /// 403 unless the role allows `need`.
    pub fn require(&self, need: Need) -> Result<(), AppError> {
        let ok = match need {
            Need::Writer => matches!(self.role, Role::Admin | Role::Accountant),
            Need::Admin => self.role == Role::Admin,
        };
        if ok {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// The idem writer (tenant scope and user).
    pub fn writer(&self) -> idem::Writer {
        idem::Writer {
            tenant: self.company_id.to_string(),
            user_id: Some(self.user_id.to_string()),
        }
    }
}

/// Generates a token with `prefix`.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Whether `token` has exactly the shape of a company token: the prefix and 43 URL-safe
/// base64 characters. Anything else is refused without a database lookup.
pub fn is_company_token_shape(token: &str) -> bool {
    token.len() == COMPANY_TOKEN_PREFIX.len() + TOKEN_BODY_LEN
        && token.starts_with(COMPANY_TOKEN_PREFIX)
        && token.as_bytes()[COMPANY_TOKEN_PREFIX.len()..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Why a configured operator token is too weak to accept, if it is.
pub fn operator_token_weakness(token: &str) -> Option<String> {
    if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Some("it must be visible ASCII characters without spaces".into());
    }
    if token.len() < OPERATOR_TOKEN_MIN_LEN {
        return Some(format!(
            "it has {} characters; at least {OPERATOR_TOKEN_MIN_LEN} are needed",
            token.len()
        ));
    }
    let distinct = token
        .bytes()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < OPERATOR_TOKEN_MIN_DISTINCT {
        return Some(format!(
            "it uses only {distinct} distinct characters; at least {OPERATOR_TOKEN_MIN_DISTINCT} are needed"
        ));
    }
    None
}

/// SHA-256 hex of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 50_000;

/// Token → tenant, cached for at most a second. Lookups are single-flight: while one
/// request reads a token from the database, concurrent requests with the same token wait
/// for its answer instead of taking connections of their own (a duplicate storm costs one
/// query per token per second).
#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, (SharedLookup, Instant)>>,
}

/// One token lookup, shared by every request that needs it meanwhile.
type SharedLookup = Arc<OnceCell<Option<Tenant>>>;

impl AuthCache {
    async fn lookup(&self, db: &Db, token: &str) -> Result<Option<Tenant>, AppError> {
        let hash = hash_token(token);
        let cell = {
            let mut entries = self.entries.lock();
            match entries.get(&hash) {
                Some((cell, at)) if at.elapsed() < CACHE_TTL => cell.clone(),
                _ => {
                    if entries.len() >= CACHE_MAX {
                        entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                        if entries.len() >= CACHE_MAX {
                            entries.clear();
                        }
                    }
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(hash.clone(), (cell.clone(), Instant::now()));
                    cell
                }
            }
        };
        let tenant = cell.get_or_try_init(|| load_tenant(db, &hash)).await?;
        Ok(tenant.clone())
    }
}

async fn load_tenant(db: &Db, hash: &str) -> Result<Option<Tenant>, AppError> {
    let row: Option<(Id, Id, String)> = on_db!(db, |c| sqlx::query_as(
        "select t.company_id, t.user_id, m.role from api_tokens t \
         join members m on m.company_id = t.company_id and m.user_id = t.user_id \
         where t.token_hash = $1"
    )
    .bind(hash)
    .fetch_optional(c)
    .await)?;
    Ok(row.and_then(|(c, u, r)| {
        Some(Tenant {
            company_id: c.0,
            user_id: u.0,
            role: Role::parse(&r)?,
        })
    }))
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer(parts).ok_or(AppError::Unauthenticated)?;
        if !is_company_token_shape(token) {
            return Err(AppError::Unauthenticated);
        }
        state
            .auth
            .lookup(&state.db, token)
            .await?
            .ok_or(AppError::Unauthenticated)
    }
}

/// The authenticated operator (`/admin/`).
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer(parts).ok_or(AppError::Unauthenticated)?;
        let presented = hash_token(token);
        let expected = state.operator_hash.as_bytes();
        // Constant-time comparison of the two hashes.
        let same = presented.len() == expected.len()
            && presented
                .as_bytes()
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(Operator)
        } else {
            Err(AppError::Unauthenticated)
        }
    }
}

/// Resolves the operator token hash at start: the configured token, else the stored hash,
/// else a new token (returned so the caller can print it once).
pub async fn operator_token_hash(
    db: &Db,
    configured: Option<&str>,
) -> Result<(String, Option<String>), sqlx::Error> {
    if let Some(token) = configured {
        return Ok((hash_token(token), None));
    }
    let stored = stored_operator_hash(db).await?;
    if let Some(h) = stored {
        return Ok((h, None));
    }
    let token = generate_token(OPERATOR_TOKEN_PREFIX);
    let hash = hash_token(&token);
    {
        let _gate = db.write_gate().await?;
        on_db!(db, |c| {
            sqlx::query(
            "insert into operator_settings (name, value) values ('admin_token_hash', $1) on conflict (name) do nothing"
        )
        .bind(&hash)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
    }
    // Another node may have won the race: only the stored token is valid.
    let winner = stored_operator_hash(db).await?.unwrap_or_default();
    if winner == hash {
        Ok((hash, Some(token)))
    } else {
        Ok((winner, None))
    }
}

async fn stored_operator_hash(db: &Db) -> Result<Option<String>, sqlx::Error> {
    on_db!(db, |c| sqlx::query_scalar::<_, String>(
        "select value from operator_settings where name = 'admin_token_hash'"
    )
    .fetch_optional(c)
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_company_token_shape_and_nothing_else_does() {
        for _ in 0..100 {
            assert!(is_company_token_shape(&generate_token(
                COMPANY_TOKEN_PREFIX
            )));
        }
        let body = "A".repeat(TOKEN_BODY_LEN);
        assert!(is_company_token_shape(&format!("acb_{body}")));
        for bad in [
            format!("acb_{body}A"),
            format!("acb_{}", &body[1..]),
            format!("acbop_{body}"),
            format!("acb_{}+", &body[1..]),
            format!("acb_{}é", &body[2..]),
            String::new(),
        ] {
            assert!(!is_company_token_shape(&bad), "{bad}");
        }
    }

    #[test]
    fn weak_operator_tokens_are_named_and_generated_ones_pass() {
        assert!(operator_token_weakness(&generate_token(OPERATOR_TOKEN_PREFIX)).is_none());
        assert!(operator_token_weakness("0123456789abcdef0123456789abcdef").is_none());
        for weak in [
            "short",
            &"a".repeat(64),
            &"ab".repeat(20),
            &format!("{} x", "y".repeat(40)),
        ] {
            assert!(operator_token_weakness(weak).is_some(), "{weak}");
        }
    }
}
