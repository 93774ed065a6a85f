//! Bounded property-based fuzzing of the parsers that see raw client bytes: the
//! `Idempotency-Key` parser, the strict JSON parser and fingerprint canonicaliser, and
//! the `Prefer` parser. Each property holds for every input, not just well-formed ones:
//! no panic, and whatever is accepted satisfies the documented invariants.
//!
//! `cargo test` runs 256 cases each; `scripts/fuzz.sh` runs many more for a bounded time
//! (`PROPTEST_CASES`). Failing inputs proptest finds are kept in `proptest-regressions/`
//! and replayed first on every run.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use idem::fingerprint::{canonical, parse_strict, Fingerprint};
use idem::http::prefer_wait;
use idem::key::{IdempotencyKey, KeyError, MAX_KEY_LEN};
use proptest::prelude::*;

/// JSON text, mostly valid, with hostile strings (NUL, controls, escapes, non-ASCII),
/// literal numbers of every shape, nesting and repeated keys.
fn json_text() -> impl Strategy<Value = String> {
    let string = prop_oneof![
        "[a-z]{0,6}",
        any::<String>(),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        Just("\\\"".to_owned()),
        Just("\\u0061".to_owned()),
    ]
    .prop_map(|s| {
        if s.starts_with('\\') {
            format!("\"{s}\"")
        } else {
            serde_json::Value::String(s).to_string()
        }
    });
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?",
    ];
    let leaf = prop_oneof![
        string.clone(),
        number,
        Just("true".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((string.clone(), inner), 0..6).prop_map(|kv| {
                let body: Vec<String> =
                    kv.into_iter().map(|(k, v)| format!("{k} :\n{v}")).collect();
                format!("{{{}}}", body.join(" , "))
            }),
        ]
    })
}

proptest! {
    #[test]
    fn the_key_parser_accepts_only_visible_ascii_of_1_to_255(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(key) = IdempotencyKey::parse(&raw) {
            let k = key.as_str();
            prop_assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
            prop_assert!(k.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
    }

    #[test]
    fn bare_keys_and_their_sf_string_form_are_the_same_key(key in "[!-~]{1,255}") {
        prop_assume!(!key.starts_with('"'));
        let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
        let bare = IdempotencyKey::parse(key.as_bytes());
        prop_assert_eq!(bare.as_ref().map(IdempotencyKey::as_str), Ok(key.as_str()));
        prop_assert_eq!(IdempotencyKey::parse(quoted.as_bytes()), bare);
    }

    #[test]
    fn keys_over_255_are_invalid(key in "[!-~]{256,400}") {
        prop_assert_eq!(IdempotencyKey::parse(key.as_bytes()), Err(KeyError::Invalid));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_json_parser(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_strict(&body);
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point_and_fingerprints_agree(text in json_text()) {
        prop_assert_eq!(
            parse_strict(text.as_bytes()).is_ok(),
            idem::fingerprint::parse_canonical(text.as_bytes()).is_ok(),
            "the gate accepts exactly what parse_strict accepts: {}", text
        );
        if parse_strict(text.as_bytes()).is_ok() {
            let c = canonical(text.as_bytes());
            prop_assert!(c.is_ok(), "an accepted body has a canonical form: {text}");
            let c = c.unwrap_or_default();
            let again = canonical(c.as_bytes());
            prop_assert!(again.is_ok(), "the canonical form parses: {c}");
            let again = again.unwrap_or_default();
            prop_assert_eq!(&again, &c);
            prop_assert_eq!(
                Fingerprint::compute("POST", "/api/x", &c),
                Fingerprint::compute("POST", "/api/x", &again)
            );
            // The value a program reads and the canonical text agree.
            let v: serde_json::Value = serde_json::from_str(&c).unwrap_or_default();
            let w: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            prop_assert_eq!(v, w);
        }
    }

    #[test]
    fn the_prefer_parser_never_panics_and_reads_only_digits(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let Ok(value) = HeaderValue::from_bytes(&raw) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert("prefer", value);
        if let Some(d) = prefer_wait(&h) {
            let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            prop_assert!(text.contains("wait"));
            prop_assert!(d <= Duration::from_secs(u64::MAX));
        }
    }

    #[test]
    fn wait_preferences_are_read_among_others(n in 0u64..100_000, before in "[a-z-]{1,10}") {
        let mut h = HeaderMap::new();
        let v = format!("{before}, wait={n}");
        h.insert("prefer", HeaderValue::from_str(&v).map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assume!(!before.eq_ignore_ascii_case("wait"));
        prop_assert_eq!(prefer_wait(&h), Some(Duration::from_secs(n)));
    }
}

/// Inputs found by hand or by earlier runs that must keep their answers.
#[test]
fn corpus() {
    for (raw, ok) in [
        (&b"\"\""[..], false),
        (b"\"a\\", false),
        (b"\"\\\"\"", true),
        (b"a\x00b", false),
        (b"\xff", false),
    ] {
        assert_eq!(IdempotencyKey::parse(raw).is_ok(), ok, "{raw:?}");
    }
    for (body, ok) in [
        (&br#"{"a":1,"\u0061":2}"#[..], false),
        (br#"{"name":"a\u0000b"}"#, true),
        // Beyond what a JSON number can mean to a program here (f64): refused, not
        // passed on as text.
        (br#"[1e999999999]"#, false),
        (br#""\ud800""#, false),
        (b"\xef\xbb\xbf{}", false),
        (b"{\"a\":1}\x00", false),
    ] {
        assert_eq!(
            parse_strict(body).is_ok(),
            ok,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            idem::fingerprint::parse_canonical(body).is_ok(),
            ok,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}
