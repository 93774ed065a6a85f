//! Idempotency keys, their scope, and the deterministic record id.
//!
//! Invariants:
//! - A key is 1–255 characters of visible ASCII (0x21–0x7E) after decoding the optional
//!   RFC 8941 sf-string form, so `"abc"` and `abc` are the same key.
//! - A scope is (tenant, operation, key); the same key in another tenant or operation is
//!   another key.
//! - The deterministic id of a scope is UUIDv5 in the RFC 4122 URL namespace over
//!   `{tenancy}:{tenant}:op:{operation}:key:{key}`, where the tenancy is what the service
//!   calls its tenants (`company` in AccuBooks; set once, with
//!   [`Builder::tenancy`](crate::Builder::tenancy)); it never changes, so it outlives
//!   the key's record.

use std::fmt;

use uuid::Uuid;

/// The RFC 4122 URL namespace, `6ba7b811-9dad-11d1-80b4-00c04fd430c8`.
pub const DETERMINISTIC_NAMESPACE: Uuid = Uuid::NAMESPACE_URL;

/// Longest accepted key, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No header at all (`400 idempotency_key_missing`).
    #[error("the Idempotency-Key header is required on this operation")]
    Missing,
    /// Present but not acceptable (`400 idempotency_key_invalid`).
    #[error("the Idempotency-Key must be 1-255 visible ASCII characters, or an RFC 8941 string of them, sent once")]
    Invalid,
}

/// A validated, decoded idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses one header value: the bare token form or an RFC 8941 sf-string.
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        let decoded = if raw.first() == Some(&b'"') {
            decode_sf_string(raw)?
        } else {
            std::str::from_utf8(raw)
                .map_err(|_| KeyError::Invalid)?
                .to_owned()
        };
        if decoded.is_empty()
            || decoded.len() > MAX_KEY_LEN
            || !decoded.bytes().all(|b| (0x21..=0x7e).contains(&b))
        {
            return Err(KeyError::Invalid);
        }
        Ok(Self(decoded))
    }

    /// Parses the `Idempotency-Key` header(s) of a request: absent → `Missing`,
    /// repeated → `Invalid`.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Self, KeyError> {
        let mut values = headers.get_all("idempotency-key").iter();
        let first = values.next().ok_or(KeyError::Missing)?;
        if values.next().is_some() {
            return Err(KeyError::Invalid);
        }
        Self::parse(first.as_bytes())
    }

    /// The decoded key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes an RFC 8941 sf-string (`"..."` with `\"` and `\\` escapes, printable ASCII).
fn decode_sf_string(raw: &[u8]) -> Result<String, KeyError> {
    let inner = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .ok_or(KeyError::Invalid)?;
    let mut out = String::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(e as char),
                _ => return Err(KeyError::Invalid),
            },
            // An unescaped quote inside the string ends it early: not one sf-string.
            b'"' => return Err(KeyError::Invalid),
            0x20..=0x7e => out.push(b as char),
            _ => return Err(KeyError::Invalid),
        }
    }
    Ok(out)
}

/// The scope of a key: (tenant, operation, key), and what the service calls a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// What a tenant is (`company`): the first part of the deterministic id's name.
    pub tenancy: &'static str,
    /// The tenant (for AccuBooks, the lowercase company id).
    pub tenant: String,
    /// The operation name as registered (`createPayment`).
    pub operation: &'static str,
    /// The decoded key.
    pub key: IdempotencyKey,
}

impl Scope {
    /// Builds a scope.
    pub fn new(
        tenancy: &'static str,
        tenant: impl Into<String>,
        operation: &'static str,
        key: IdempotencyKey,
    ) -> Self {
        Self {
            tenancy,
            tenant: tenant.into(),
            operation,
            key,
        }
    }

    /// The deterministic id of the operation's record for this scope.
    pub fn deterministic_id(&self) -> Uuid {
        deterministic_id(
            self.tenancy,
            &self.tenant,
            self.operation,
            self.key.as_str(),
        )
    }
}

/// UUIDv5 (URL namespace) of `{tenancy}:{tenant}:op:{operation}:key:{key}`, the tenant in
/// lowercase.
pub fn deterministic_id(tenancy: &str, tenant: &str, operation: &str, key: &str) -> Uuid {
    let name = format!(
        "{tenancy}:{}:op:{operation}:key:{key}",
        tenant.to_ascii_lowercase()
    );
    Uuid::new_v5(&DETERMINISTIC_NAMESPACE, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_forms_are_the_same_key() {
        assert_eq!(
            IdempotencyKey::parse(b"abc"),
            IdempotencyKey::parse(b"\"abc\"")
        );
    }

    #[test]
    fn sf_string_escapes_are_decoded() {
        let key = IdempotencyKey::parse(br#""a\"b\\c""#).unwrap();
        assert_eq!(key.as_str(), r#"a"b\c"#);
    }

    #[test]
    fn empty_and_empty_quoted_keys_are_invalid() {
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Invalid));
        assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Invalid));
    }

    #[test]
    fn keys_with_spaces_controls_or_non_ascii_are_invalid() {
        for raw in [
            &b"a b"[..],
            b"a\tb",
            "é".as_bytes(),
            b"\"a",
            b"\"a\\x\"",
            b"\"a\"b\"",
        ] {
            assert_eq!(
                IdempotencyKey::parse(raw),
                Err(KeyError::Invalid),
                "{raw:?}"
            );
        }
        // A space is fine inside an sf-string? No: the decoded key must be visible ASCII.
        assert_eq!(IdempotencyKey::parse(b"\"a b\""), Err(KeyError::Invalid));
    }

    #[test]
    fn length_bounds_are_1_to_255() {
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        assert_eq!(IdempotencyKey::parse(&[b'k'; 256]), Err(KeyError::Invalid));
    }

    #[test]
    fn repeated_header_is_invalid_and_absent_is_missing() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            IdempotencyKey::from_headers(&headers),
            Err(KeyError::Missing)
        );
        headers.append("idempotency-key", "a".parse().unwrap());
        assert!(IdempotencyKey::from_headers(&headers).is_ok());
        headers.append("idempotency-key", "b".parse().unwrap());
        assert_eq!(
            IdempotencyKey::from_headers(&headers),
            Err(KeyError::Invalid)
        );
    }

    #[test]
    fn deterministic_id_matches_uuidv5_of_the_documented_name() {
        let id = deterministic_id(
            "company",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "createPayment",
            "k1",
        );
        let expected = Uuid::new_v5(
            &Uuid::parse_str("6ba7b811-9dad-11d1-80b4-00c04fd430c8").unwrap(),
            b"company:0f8fad5b-d9cb-469f-a165-70867728950e:op:createPayment:key:k1",
        );
        assert_eq!(id, expected);
        assert_eq!(id.get_version_num(), 5);
    }
}
