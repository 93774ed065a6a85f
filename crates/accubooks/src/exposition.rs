//! The Prometheus text format (0.0.4) for scrapers that do not ask for OpenMetrics.
//!
//! `prometheus_client` writes OpenMetrics, where a counter family is named without its
//! `_total` suffix (`# TYPE idempotent_writes counter`, sample `idempotent_writes_total`)
//! and the text ends with `# EOF`. Prometheus itself asks for OpenMetrics; `curl`,
//! `promtool check metrics` and older scrapers read the classic format, where the HELP
//! and TYPE lines carry the sample's name. Invariant: sample lines pass unchanged.

use std::collections::HashSet;

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if kind == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_take_their_samples_name_and_eof_goes() {
        let om = "# HELP writes Writes.\n# TYPE writes counter\nwrites_total{a=\"b\"} 3\n\
                  # HELP keys_total Keys.\n# TYPE keys_total gauge\nkeys_total 1\n\
                  # TYPE x unknown\nx 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP writes_total Writes.\n# TYPE writes_total counter\nwrites_total{a=\"b\"} 3\n\
             # HELP keys_total Keys.\n# TYPE keys_total gauge\nkeys_total 1\n\
             # TYPE x untyped\nx 1\n"
        );
    }

    #[test]
    fn only_an_openmetrics_accept_gets_openmetrics() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
