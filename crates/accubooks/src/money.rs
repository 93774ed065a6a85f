//! Money as integer minor units: parsed from and rendered to 2-decimal strings.
//!
//! Invariants: no binary float anywhere; amounts fit in 12 integer digits
//! (|x| < 10^14 minor units); arithmetic is checked.

use std::fmt;

/// Largest magnitude in minor units: 999,999,999,999.99.
pub const MAX_MINOR: i64 = 99_999_999_999_999;

/// An amount of money in minor units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

impl Money {
    /// Parses `^-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$`.
    pub fn parse(s: &str) -> Option<Money> {
        let (neg, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (int, frac) = match rest.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (rest, None),
        };
        let int_ok = int == "0"
            || (!int.is_empty()
                && int.len() <= 12
                && !int.starts_with('0')
                && int.bytes().all(|b| b.is_ascii_digit()));
        if !int_ok {
            return None;
        }
        let mut minor = int.parse::<i64>().ok()? * 100;
        if let Some(f) = frac {
            if f.is_empty() || f.len() > 2 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let cents = f.parse::<i64>().ok()? * if f.len() == 1 { 10 } else { 1 };
            minor += cents;
        }
        Some(Money(if neg { -minor } else { minor }))
    }

    /// Whether the amount fits the 12-integer-digit limit.
    pub fn in_range(self) -> bool {
        self.0.abs() <= MAX_MINOR
    }

    /// Checked addition, within range.
    pub fn checked_add(self, o: Money) -> Option<Money> {
        self.0.checked_add(o.0).map(Money).filter(|m| m.in_range())
    }

    /// Checked subtraction, within range.
    pub fn checked_sub(self, o: Money) -> Option<Money> {
        self.0.checked_sub(o.0).map(Money).filter(|m| m.in_range())
    }

    /// Checked multiplication by an integer quantity, within range.
    pub fn checked_mul(self, q: i64) -> Option<Money> {
        self.0.checked_mul(q).map(Money).filter(|m| m.in_range())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The wire pattern of a money string (API.md); responses always carry two decimals.
pub const PATTERN: &str = r"^-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$";

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(PATTERN))
            .description(Some(
                "a decimal string; responses always show exactly two decimal places",
            ))
            .examples(["125.00"])
            .into()
    }
}

impl utoipa::ToSchema for Money {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Money")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_with_two_digits() {
        assert_eq!(Money::parse("0"), Some(Money(0)));
        assert_eq!(Money::parse("12.5"), Some(Money(1250)));
        assert_eq!(Money::parse("-0.05"), Some(Money(-5)));
        assert_eq!(Money::parse("999999999999.99"), Some(Money(MAX_MINOR)));
        assert_eq!(Money(1250).to_string(), "12.50");
        assert_eq!(Money(-5).to_string(), "-0.05");
    }

    #[test]
    fn rejects_what_the_contract_rejects() {
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "1.234",
            "1e2",
            "+1",
            "1000000000000",
            " 1",
            "1,00",
            "0x10",
        ] {
            assert_eq!(Money::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_beyond_twelve_digits_is_refused() {
        assert_eq!(Money(MAX_MINOR).checked_add(Money(1)), None);
        assert_eq!(Money(MAX_MINOR / 2 + 1).checked_mul(2), None);
    }
}
