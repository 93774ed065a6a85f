//! Bounded property-based fuzzing of AccuBooks' own parsers of client input: the JSON
//! field validator (text, money, dates, integers, ids, currencies over arbitrary JSON),
//! the date parser and the list query / cursor decoder. No panic on any input, and what
//! is accepted satisfies the documented rules.
//!
//! `cargo test` runs 256 cases each; `scripts/fuzz.sh` runs many more for a bounded time.

use accubooks::validate::{parse_date, parse_uuid, Sign, Validator, NAME_MAX};
use accubooks::web::ListQuery;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "-?[0-9]{1,14}(\\.[0-9]{1,3})?([eE][0-9])?"
            .prop_map(|s| { serde_json::from_str::<Value>(&s).unwrap_or(Value::Null) }),
        any::<String>().prop_map(Value::String),
        "[0-9+ -]{8,12}".prop_map(Value::String),
        "[0-9]{1,13}\\.[0-9]{0,3}".prop_map(Value::String),
        "\\PC{0,3}\u{0}\\PC{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("amount".to_owned()),
                    Just("on".to_owned()),
                    any::<String>()
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn the_validator_never_panics_and_accepts_only_valid_values(body in any_json()) {
        let mut v = Validator::new();
        let allowed = ["name", "amount", "on", "n", "id", "currency", "flag"];
        if let Some(o) = v.object(&body, "", &allowed) {
            if let Some(name) = v.text(o, "", "name", NAME_MAX, true) {
                prop_assert!(!name.contains('\0'));
                prop_assert!(name.chars().count() <= NAME_MAX && !name.trim().is_empty());
            }
            if let Some(m) = v.money(o, "", "amount", Sign::Positive, false) {
                prop_assert!(m.0 > 0);
            }
            if let Some(d) = v.date(o, "", "on", false) {
                let text = d.format("%Y-%m-%d").to_string();
                prop_assert_eq!(text.len(), 10);
                prop_assert_eq!(Some(&Value::String(text)), o.get("on"));
            }
            if let Some(n) = v.integer(o, "", "n", 1, 365, false) {
                prop_assert!((1..=365).contains(&n));
            }
            let _ = v.uuid(o, "", "id", false);
            let _ = v.currency(o, "", "currency", false);
            let _ = v.boolean(o, "", "flag", false);
        }
        let _ = v.finish();
    }

    #[test]
    fn dates_round_trip_and_nothing_else_parses(s in "\\PC{0,12}") {
        if let Some(d) = parse_date(&s) {
            prop_assert_eq!(d.format("%Y-%m-%d").to_string(), s);
        }
    }

    #[test]
    fn every_real_date_parses(y in 1i32..=9999, m in 1u32..=12, d in 1u32..=28) {
        let s = format!("{y:04}-{m:02}-{d:02}");
        prop_assert!(parse_date(&s).is_some(), "{}", s);
    }

    #[test]
    fn ids_are_only_the_36_character_form(s in "\\PC{0,40}") {
        if let Some(u) = parse_uuid(&s) {
            prop_assert_eq!(u.to_string(), s.to_ascii_lowercase());
        }
    }

    #[test]
    fn list_queries_and_cursors_never_panic(q in "\\PC{0,80}", cursor in "[A-Za-z0-9_=%-]{0,80}") {
        let _ = ListQuery::parse(Some(&q), &["status"]);
        let _ = ListQuery::parse(Some(&format!("cursor={cursor}")), &[]);
    }
}

/// Inputs from the hardening review that must keep their answers.
#[test]
fn corpus() {
    for bad in [
        "+2024-1-01",
        "2024- 1- 1",
        "-999-01-01",
        "0000-01-01",
        "2024-1-1",
    ] {
        assert!(parse_date(bad).is_none(), "{bad}");
    }
    for bad in [
        "cursor=%%%",
        "cursor=",
        "cursor=MTc2",
        "cursor=AAAA%00",
        "limit=+1",
    ] {
        assert!(ListQuery::parse(Some(bad), &[]).is_err(), "{bad}");
    }
}
