//! Field validation over a parsed JSON body, collecting every error with its dotted path.
//!
//! Invariants: an unknown field at any depth is an error naming its path; integers are
//! JSON integers only (`1.0`, `1e0` refused); money is a decimal string; text lengths
//! count Unicode scalar values; `null` and absence mean the same for optional fields; no
//! text reaching the database contains NUL (every string field goes through
//! [`Validator::text`] or a fixed set of values, and a field name outside the allowed set
//! is refused by [`Validator::object`]).

use chrono::NaiveDate;
use idem::FieldError;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::AppError;
use crate::money::Money;

/// Name length limit.
pub const NAME_MAX: usize = 200;
/// Description / reason length limit.
pub const TEXT_MAX: usize = 500;
/// Email length limit.
pub const EMAIL_MAX: usize = 254;

/// Sign rules for money fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// > 0
    Positive,
    /// ≥ 0
    NonNegative,
    /// ≠ 0, may be negative
    NonZero,
}

/// Joins a path prefix and a field name.
pub fn path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Collects field errors.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// A fresh validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error.
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// `Ok` when nothing was wrong, else `422 validation_failed` with every error.
    pub fn finish(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.errors))
        }
    }

    /// The value must be an object with only `allowed` keys.
    pub fn object<'a>(
        &mut self,
        v: &'a Value,
        at: &str,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Value::Object(map) = v else {
            self.error(
                if at.is_empty() { "body" } else { at },
                "must be a JSON object",
            );
            return None;
        };
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                self.error(path(at, k), "unknown field");
            }
        }
        Some(map)
    }

    fn present<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        at: &str,
        field: &str,
        required: bool,
    ) -> Option<&'a Value> {
        match obj.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.error(path(at, field), "is required");
                }
                None
            }
            Some(v) => Some(v),
        }
    }

    /// A string of at most `max` characters; a required one needs a non-whitespace character.
    pub fn text(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        max: usize,
        required: bool,
    ) -> Option<String> {
        let v = self.present(obj, at, field, required)?;
        let Some(s) = v.as_str() else {
            self.error(path(at, field), "must be a string");
            return None;
        };
        if s.contains('\0') {
            // PostgreSQL text cannot hold NUL; refuse it on every store alike.
            self.error(path(at, field), "must not contain the NUL character");
            return None;
        }
        if s.chars().count() > max {
            self.error(path(at, field), format!("must be at most {max} characters"));
            return None;
        }
        if required && s.trim().is_empty() {
            self.error(path(at, field), "must not be blank");
            return None;
        }
        Some(s.to_owned())
    }

    /// An email: one `@`, non-empty parts, no whitespace, at most 254 characters.
    pub fn email(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        required: bool,
    ) -> Option<String> {
        let s = self.text(obj, at, field, EMAIL_MAX, required)?;
        if !is_email(&s) {
            self.error(path(at, field), "must be an email address");
            return None;
        }
        Some(s)
    }

    /// A money string with the given sign rule.
    pub fn money(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        sign: Sign,
        required: bool,
    ) -> Option<Money> {
        let v = self.present(obj, at, field, required)?;
        let p = path(at, field);
        let Some(s) = v.as_str() else {
            self.error(p, "must be a decimal string such as \"12.50\"");
            return None;
        };
        let Some(m) = Money::parse(s) else {
            self.error(
                p,
                "must be a decimal string with at most 12 integer and 2 fraction digits",
            );
            return None;
        };
        let ok = match sign {
            Sign::Positive => m.0 > 0,
            Sign::NonNegative => m.0 >= 0,
            Sign::NonZero => m.0 != 0,
        };
        if !ok {
            let msg = match sign {
                Sign::Positive => "must be greater than 0",
                Sign::NonNegative => "must not be negative",
                Sign::NonZero => "must not be zero",
            };
            self.error(p, msg);
            return None;
        }
        Some(m)
    }

    /// A JSON integer in `min..=max`.
    pub fn integer(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        min: i64,
        max: i64,
        required: bool,
    ) -> Option<i64> {
        let v = self.present(obj, at, field, required)?;
        match as_integer(v) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    path(at, field),
                    format!("must be an integer from {min} to {max}"),
                );
                None
            }
        }
    }

    /// A boolean.
    pub fn boolean(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        required: bool,
    ) -> Option<bool> {
        let v = self.present(obj, at, field, required)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(path(at, field), "must be true or false");
                None
            }
        }
    }

    /// One of a fixed set of strings.
    pub fn one_of(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        allowed: &[&'static str],
        required: bool,
    ) -> Option<&'static str> {
        let v = self.present(obj, at, field, required)?;
        match v.as_str().and_then(|s| allowed.iter().find(|a| **a == s)) {
            Some(a) => Some(*a),
            None => {
                self.error(
                    path(at, field),
                    format!("must be one of: {}", allowed.join(", ")),
                );
                None
            }
        }
    }

    /// A calendar date `YYYY-MM-DD`.
    pub fn date(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        required: bool,
    ) -> Option<NaiveDate> {
        let v = self.present(obj, at, field, required)?;
        match v.as_str().and_then(parse_date) {
            Some(d) => Some(d),
            None => {
                self.error(path(at, field), "must be a date YYYY-MM-DD");
                None
            }
        }
    }

    /// A UUID reference in the 36-character hyphenated form.
    pub fn uuid(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        required: bool,
    ) -> Option<Uuid> {
        let v = self.present(obj, at, field, required)?;
        match v.as_str().and_then(parse_uuid) {
            Some(u) => Some(u),
            None => {
                self.error(path(at, field), "must be an id (36-character UUID)");
                None
            }
        }
    }

    /// A 3-letter ISO 4217 currency with 2 minor units.
    pub fn currency(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        field: &str,
        required: bool,
    ) -> Option<String> {
        let v = self.present(obj, at, field, required)?;
        match v.as_str().filter(|s| is_currency(s)) {
            Some(s) => Some(s.to_owned()),
            None => {
                self.error(
                    path(at, field),
                    "must be an ISO 4217 currency code with 2 minor units, such as USD",
                );
                None
            }
        }
    }
}

/// A JSON integer (not `1.0`, not `1e0`).
pub fn as_integer(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        return None;
    }
    n.as_i64()
}

/// One `@` with non-empty parts and no whitespace.
pub fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && !d.is_empty())
        && !s.chars().any(char::is_whitespace)
}

/// `YYYY-MM-DD`, exactly: ten ASCII characters, four-digit years 0001–9999, a real
/// calendar day. No signs, spaces or shortened fields (chrono's `%Y-%m-%d` accepts
/// `+2024-1-01` and `2024- 1- 1`, and negative years break text ordering).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return None;
    }
    let year: i32 = s[0..4].parse().ok()?;
    let month: u32 = s[5..7].parse().ok()?;
    let day: u32 = s[8..10].parse().ok()?;
    if year < 1 {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

/// A UUID in the 36-character hyphenated form, any hex case.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    let b = s.as_bytes();
    let hyphens_ok = [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
    if !hyphens_ok {
        return None;
    }
    Uuid::parse_str(s).ok()
}

/// ISO 4217 codes whose minor unit is 2 digits.
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CNY", "COP", "CRC", "CUP", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD",
    "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR",
    "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "MAD", "MDL", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR",
    "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD",
    "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VES", "WST", "XCD", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `s` is a supported currency code.
pub fn is_currency(s: &str) -> bool {
    CURRENCIES.binary_search(&s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Value {
        idem::fingerprint::parse_strict(s.as_bytes()).unwrap()
    }

    #[test]
    fn integers_reject_fractions_and_exponents() {
        assert_eq!(as_integer(&obj("1")), Some(1));
        assert_eq!(as_integer(&obj("1.0")), None);
        assert_eq!(as_integer(&obj("1e0")), None);
        assert_eq!(as_integer(&obj("\"1\"")), None);
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let body = obj(r#"{"name":"x","extra":1}"#);
        let mut v = Validator::new();
        v.object(&body, "", &["name"]);
        let Err(AppError::Validation(errs)) = v.finish() else {
            panic!()
        };
        assert_eq!(errs[0].field, "extra");
    }

    #[test]
    fn the_currency_table_is_sorted_for_binary_search() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        assert!(
            is_currency("USD") && is_currency("EUR") && !is_currency("usd") && !is_currency("JPY")
        );
    }

    #[test]
    fn emails_need_one_at_and_no_whitespace() {
        assert!(is_email("a@b"));
        for bad in ["a", "@b", "a@", "a@b@c", "a b@c"] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn dates_are_exactly_yyyy_mm_dd_with_years_0001_to_9999() {
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("0001-01-01").is_some());
        assert!(parse_date("9999-12-31").is_some());
        for bad in [
            "+2024-1-01",
            "2024- 1- 1",
            "-999-01-01",
            "0000-01-01",
            "2023-02-29",
            "2024-1-1",
            "2024-01-1 ",
            "2024/01/01",
            "２０２４-1-01",
            "",
        ] {
            assert!(parse_date(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn text_counts_unicode_scalars() {
        let body = obj(&format!(r#"{{"name":"{}"}}"#, "é".repeat(200)));
        let mut v = Validator::new();
        let map = v.object(&body, "", &["name"]).unwrap();
        assert!(v.text(map, "", "name", NAME_MAX, true).is_some());
    }
}
