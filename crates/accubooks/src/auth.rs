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

use std::future::Future;
use std::time::Duration;

use axum::extract::FromRequestParts;
use base64::Engine as _;
use http::request::Parts;
use idem::http::store_error;
use idem::{on_db, Db, Id, Problem};
use moka::future::Cache;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;

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
        idem::Writer::tenant(self.company_id.to_string()).user(self.user_id.to_string())
    }
}

/// Generates a token with `prefix`.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
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

/// Whether two secrets (or their hashes) are equal, in time that depends only on their
/// lengths.
fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
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

/// Longest a token's answer is reused: role changes reach every node within it.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Most tokens cached at once. Every entry has the same size (a 64-character hash and a
/// tenant), so counting entries bounds the memory as a weigher would.
const CACHE_MAX: u64 = 50_000;

/// Token → tenant (or "no such token"), cached for at most [`CACHE_TTL`], at most
/// [`CACHE_MAX`] tokens. Loads are single-flight: while one request reads a token from
/// the database, concurrent requests with the same token wait for its answer instead of
/// taking connections of their own (a duplicate storm costs one query per token per
/// second). A failed read is not cached: its waiters get its error, the next request
/// reads again.
pub struct AuthCache {
    tenants: Cache<String, Option<Tenant>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self {
            tenants: Cache::builder()
                .max_capacity(CACHE_MAX)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("entries", &self.tenants.entry_count())
            .finish()
    }
}

impl AuthCache {
    async fn lookup(&self, db: &Db, token: &str) -> Result<Option<Tenant>, AppError> {
        let hash = hash_token(token);
        let load = load_tenant(db, hash.clone());
        self.get_or_load(hash, async move { load.await.map_err(|e| store_error(&e)) })
            .await
    }

    /// The cached answer for `hash`, or the answer of `load`, shared with every
    /// concurrent caller for the same hash.
    async fn get_or_load(
        &self,
        hash: String,
        load: impl Future<Output = Result<Option<Tenant>, Problem>>,
    ) -> Result<Option<Tenant>, AppError> {
        self.tenants
            .try_get_with(hash, load)
            .await
            .map_err(|problem| AppError::Problem(Problem::clone(&problem)))
    }
}

/// Two reads, each answered by one node under Citus: the token (a reference table) and
/// then its member (by the distribution column). A token without a member is no tenant.
async fn load_tenant(db: &Db, hash: String) -> Result<Option<Tenant>, sqlx::Error> {
    let token: Option<(Id, Id)> = on_db!(db, |c| sqlx::query_as(
        "select company_id, user_id from api_tokens where token_hash = $1"
    )
    .bind(&hash)
    .fetch_optional(c)
    .await)?;
    let Some((company, user)) = token else {
        return Ok(None);
    };
    let role: Option<String> = on_db!(db, |c| sqlx::query_scalar(
        "select role from members where company_id = $1 and user_id = $2"
    )
    .bind(company)
    .bind(user)
    .fetch_optional(c)
    .await)?;
    Ok(role.and_then(|r| {
        Some(Tenant {
            company_id: company.0,
            user_id: user.0,
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
        if same_secret(&hash_token(token), &state.operator_hash) {
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
    if same_secret(&winner, &hash) {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use tokio::sync::Barrier;

    use super::*;

    fn tenant() -> Tenant {
        Tenant {
            company_id: Uuid::new_v4(),
            user_id: Uuid::now_v7(),
            role: Role::Accountant,
        }
    }

    #[test]
    fn secrets_are_the_same_only_byte_for_byte() {
        let hash = hash_token("acbop_a");
        assert!(same_secret(&hash, &hash_token("acbop_a")));
        assert!(!same_secret(&hash, &hash_token("acbop_b")));
        assert!(!same_secret(&hash, &hash[..63]));
        assert!(!same_secret(&hash, ""));
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_token_load_it_once() {
        // Arrange
        let cache = AuthCache::default();
        let expected = tenant();
        let loads = AtomicUsize::new(0);
        let barrier = Barrier::new(32);

        // Act
        let answers = futures::future::join_all((0..32).map(|_| async {
            barrier.wait().await;
            cache
                .get_or_load("hash".to_owned(), async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Some(expected.clone()))
                })
                .await
        }))
        .await;

        // Assert
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        for answer in answers {
            let got = answer.ok().flatten().map(|t| t.company_id);
            assert_eq!(got, Some(expected.company_id));
        }
    }

    #[tokio::test]
    async fn a_failed_load_reaches_its_caller_and_is_not_cached() {
        // Arrange
        let cache = AuthCache::default();
        let unavailable = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "down",
        );

        // Act
        let failed = cache
            .get_or_load("hash".to_owned(), async { Err(unavailable) })
            .await;
        let retried = cache
            .get_or_load("hash".to_owned(), async { Ok(None) })
            .await;

        // Assert
        match failed {
            Err(AppError::Problem(p)) => assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE),
            other => panic!("expected the load's problem, got {other:?}"),
        }
        assert!(matches!(retried, Ok(None)));
    }

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
