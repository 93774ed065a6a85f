//! Strict JSON parsing and the canonical request fingerprint.
//!
//! Invariants:
//! - A body is accepted only if it is valid UTF-8 JSON without duplicate object keys
//!   (keys compared after unescaping, so `{"a":1,"\u0061":2}` is a duplicate).
//! - The canonical form sorts object keys, drops insignificant whitespace, writes strings
//!   with one fixed escaping and numbers by their literal text (`1.0` ≠ `1`). It is read
//!   from the body's bytes, not from a parsed [`Value`], so it does not depend on how
//!   serde_json is configured in the program (`arbitrary_precision`, `preserve_order`).
//! - The fingerprint is SHA-256 over method, lowercased path and canonical body, so two
//!   requests share a fingerprint exactly when they mean the same write.

use std::collections::{BTreeMap, HashSet};
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

/// The canonical text of a JSON body (sorted keys, no whitespace, one escaping of
/// strings, numbers by their literal text). Fails on what [`parse_strict`] refuses.
pub fn canonical(body: &[u8]) -> Result<String, MalformedJson> {
    parse_canonical(body).map(|(_, c)| c)
}

/// [`parse_strict`] and [`canonical`] in two passes over the body instead of four: the
/// value, then the canonical text (whose reader also finds repeated keys). A refused
/// body gets [`parse_strict`]'s message.
pub fn parse_canonical(body: &[u8]) -> Result<(Value, String), MalformedJson> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedJson("the request body is empty".into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| MalformedJson(describe(&e)))?;
    let mut reader = Reader { b: body, i: 0 };
    let read = reader.value().and_then(|node| {
        reader.ws();
        if reader.i == body.len() {
            Ok(node)
        } else {
            Err(reader.broken())
        }
    });
    match read {
        Ok(node) => {
            let mut out = String::with_capacity(body.len());
            node.write(&mut out);
            Ok((value, out))
        }
        Err(e) => Err(parse_strict(body).err().unwrap_or(e)),
    }
}

/// A JSON document as the canonical form needs it: numbers kept as written.
enum Node<'a> {
    Literal(&'a str),
    Str(String),
    Arr(Vec<Node<'a>>),
    Obj(BTreeMap<String, Node<'a>>),
}

impl Node<'_> {
    fn write(&self, out: &mut String) {
        match self {
            Node::Literal(t) => out.push_str(t),
            Node::Str(s) => write_str(s, out),
            Node::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// serde_json's own string escaping, so the canonical text is what its compact writer
/// makes of the same string.
fn write_str(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// A reader over a body that [`parse_strict`] has accepted; it still fails cleanly
/// (never panics) on anything else.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn broken(&self) -> MalformedJson {
        MalformedJson(format!(
            "the request body is not valid JSON at byte {}",
            self.i
        ))
    }

    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| b" \t\n\r".contains(c)) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), MalformedJson> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.broken())
        }
    }

    fn value(&mut self) -> Result<Node<'a>, MalformedJson> {
        self.ws();
        match self.b.get(self.i).copied() {
            Some(b'{') => {
                self.i += 1;
                let mut members = BTreeMap::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Node::Obj(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    let value = self.value()?;
                    if members.insert(key, value).is_some() {
                        return Err(self.broken());
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Node::Obj(members));
                        }
                        _ => return Err(self.broken()),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Node::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Node::Arr(items));
                        }
                        _ => return Err(self.broken()),
                    }
                }
            }
            Some(b'"') => Ok(Node::Str(self.string()?)),
            Some(_) => {
                // A number or `true`/`false`/`null`: its text up to the next delimiter.
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| !b" \t\n\r,]}:".contains(c))
                {
                    self.i += 1;
                }
                let text =
                    std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.broken())?;
                if text.is_empty() {
                    return Err(self.broken());
                }
                Ok(Node::Literal(text))
            }
            None => Err(self.broken()),
        }
    }

    /// A string token, unescaped by serde_json.
    fn string(&mut self) -> Result<String, MalformedJson> {
        let start = self.i;
        if self.b.get(self.i) != Some(&b'"') {
            return Err(self.broken());
        }
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(_) => self.i += 1,
                None => return Err(self.broken()),
            }
        }
        let raw = self.b.get(start..self.i).ok_or_else(|| self.broken())?;
        serde_json::from_slice::<String>(raw).map_err(|e| MalformedJson(describe(&e)))
    }
}

/// The request fingerprint: SHA-256 over method, lowercased path and canonical body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Computes the fingerprint of a request from its body's [`canonical`] text.
    pub fn compute(method: &str, path: &str, canonical_body: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.to_ascii_uppercase().as_bytes());
        hasher.update(b"\n");
        hasher.update(path.to_ascii_lowercase().as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical_body.as_bytes());
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
        Fingerprint::compute("POST", "/api/x", &canonical(body.as_bytes()).unwrap())
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
        let v = canonical(b"{}").unwrap();
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
        let c = canonical(br#"{ "b": [1, 2.50, -0, 1E2], "a": null, "\u00e9\n": "\u0041" }"#);
        assert_eq!(
            c.unwrap(),
            "{\"a\":null,\"b\":[1,2.50,-0,1E2],\"é\\n\":\"A\"}"
        );
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(s in "[a-z]{0,8}", n in proptest::num::i64::ANY) {
            let body = format!(r#"{{"s":{:?},"n":{}}}"#, s, n);
            let c = canonical(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(canonical(c.as_bytes()).unwrap(), c);
        }
    }
}
