//! Strict JSON parsing and the canonical request fingerprint.
//!
//! Invariants:
//! - A body is accepted only if it is valid UTF-8 JSON without duplicate object keys
//!   (keys compared after unescaping, so `{"a":1,"\u0061":2}` is a duplicate).
//! - The canonical form sorts object keys, drops insignificant whitespace, writes strings
//!   with one fixed escaping and numbers by their literal text (`1.0` ≠ `1`).
//! - The fingerprint is SHA-256 over method, lowercased path and canonical body, so two
//!   requests share a fingerprint exactly when they mean the same write.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedJson(pub String);

/// Parses a request body strictly: valid UTF-8, valid JSON, no duplicate keys.
pub fn parse_strict(body: &[u8]) -> Result<Value, MalformedJson> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedJson("the request body is empty".into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| MalformedJson(describe(&e)))?;
    serde_json::from_slice::<NoDuplicates>(body).map_err(|e| MalformedJson(describe(&e)))?;
    Ok(value)
}

fn describe(e: &serde_json::Error) -> String {
    format!("the request body is not valid JSON: {e}")
}

/// The canonical text of a JSON value (sorted keys, no whitespace, literal numbers).
pub fn canonical(value: &Value) -> String {
    // serde_json's map is a BTreeMap (sorted keys) and, with `arbitrary_precision`,
    // numbers keep their literal text, so its compact writer is already canonical.
    value.to_string()
}

/// The request fingerprint: SHA-256 over method, lowercased path and canonical body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Computes the fingerprint of a request.
    pub fn compute(method: &str, path: &str, body: &Value) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.to_ascii_uppercase().as_bytes());
        hasher.update(b"\n");
        hasher.update(path.to_ascii_lowercase().as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical(body).as_bytes());
        Self(hex::encode(hasher.finalize()))
    }

    /// Wraps a stored fingerprint.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Walks a document and fails on the first object with a repeated key.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_string<E>(self, _: String) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_none<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate object key {key:?}"
                )));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::compute("POST", "/api/x", &parse_strict(body.as_bytes()).unwrap())
    }

    #[test]
    fn key_order_whitespace_and_escapes_do_not_change_the_fingerprint() {
        assert_eq!(
            fp(r#"{"a":1,"b":"A"}"#),
            fp("{ \"b\" : \"\\u0041\",\n \"a\": 1 }")
        );
    }

    #[test]
    fn numbers_are_compared_by_their_literal_text() {
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":1.0}"#));
        assert_ne!(fp(r#"{"a":1}"#), fp(r#"{"a":1e0}"#));
    }

    #[test]
    fn method_and_path_case_are_part_of_the_fingerprint_but_path_case_is_folded() {
        let v = parse_strict(b"{}").unwrap();
        assert_eq!(
            Fingerprint::compute("POST", "/api/invoices/ABC/finalize", &v),
            Fingerprint::compute("POST", "/api/invoices/abc/finalize", &v)
        );
        assert_ne!(
            Fingerprint::compute("POST", "/a", &v),
            Fingerprint::compute("PATCH", "/a", &v)
        );
    }

    #[test]
    fn duplicate_keys_even_escaped_are_malformed() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"a":1,"\u0061":2}"#).is_err());
        assert!(parse_strict(br#"{"x":[{"a":1,"a":1}]}"#).is_err());
        assert!(parse_strict(br#"{"a":{"a":1}}"#).is_ok());
    }

    #[test]
    fn empty_truncated_and_invalid_utf8_bodies_are_malformed() {
        assert!(parse_strict(b"").is_err());
        assert!(parse_strict(b"  ").is_err());
        assert!(parse_strict(b"{\"a\":").is_err());
        assert!(parse_strict(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let v = parse_strict(br#"{ "b": [1, 2.50], "a": null }"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":null,"b":[1,2.50]}"#);
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(s in "[a-z]{0,8}", n in proptest::num::i64::ANY) {
            let body = format!(r#"{{"s":{:?},"n":{}}}"#, s, n);
            let v = parse_strict(body.as_bytes()).unwrap();
            let again = parse_strict(canonical(&v).as_bytes()).unwrap();
            proptest::prop_assert_eq!(canonical(&v), canonical(&again));
        }
    }
}
