//! One output type for every operator command: an aligned table for people (colour only
//! on a terminal), or JSON for scripts (`--json`), and an exit code that means something.
//!
//! Invariants: a command builds a [`Report`] and prints it once; data goes to stdout,
//! problems to stderr as one line; the exit code is 0 ok, 1 findings, 2 usage or
//! connection.

use std::io::IsTerminal;
use std::process::ExitCode;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// What a command reports: a title, rows under headers, and whether it found problems.
#[derive(Debug, Clone)]
pub struct Report {
    title: String,
    headers: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
    findings: usize,
    json: Option<Value>,
}

impl Report {
    /// An empty report with these column headers.
    pub fn new(title: impl Into<String>, headers: &[&'static str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.to_vec(),
            rows: Vec::new(),
            findings: 0,
            json: None,
        }
    }

    /// Adds a row, one value per header.
    pub fn row(&mut self, values: Vec<Value>) {
        self.rows.push(values);
    }

    /// Adds a row that is a problem (the command exits 1).
    pub fn finding(&mut self, values: Vec<Value>) {
        self.findings += 1;
        self.rows.push(values);
    }

    /// The JSON shape for `--json`, when it is not the rows as objects.
    pub fn with_json(mut self, value: Value) -> Self {
        self.json = Some(value);
        self
    }

    /// Problems found.
    pub fn findings(&self) -> usize {
        self.findings
    }

    /// The rows as JSON objects keyed by header.
    pub fn rows_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    Value::Object(
                        self.headers
                            .iter()
                            .map(|h| (*h).to_owned())
                            .zip(r.iter().cloned())
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    /// Renders for people or for scripts.
    pub fn render(&self, json: bool) -> String {
        if json {
            let body = self.json.clone().unwrap_or_else(|| self.rows_json());
            return serde_json::to_string_pretty(&body).unwrap_or_default();
        }
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(self.headers.iter().copied());
        if !std::io::stdout().is_terminal() {
            table.force_no_tty();
        }
        for row in &self.rows {
            table.add_row(row.iter().map(cell));
        }
        let summary = match (self.rows.len(), self.findings) {
            (0, _) => "nothing to show".to_owned(),
            (n, 0) => format!("{n} row(s)"),
            (n, f) => format!("{n} row(s), {f} finding(s)"),
        };
        format!("{}\n{table}\n{summary}", self.title)
    }

    /// Prints and returns the exit code: 1 when there are findings, else 0.
    pub fn print(&self, json: bool) -> ExitCode {
        println!("{}", self.render(json));
        if self.findings > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A usage or connection problem: one line on stderr, exit 2.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn findings_make_the_exit_code_one_and_json_keys_rows_by_header() {
        let mut r = Report::new("t", &["a", "b"]);
        r.row(vec![json!(1), json!("x")]);
        assert_eq!(r.findings(), 0);
        r.finding(vec![json!(2), Value::Null]);
        assert_eq!(r.findings(), 1);
        let parsed: Value = serde_json::from_str(&r.render(true)).expect("json");
        assert_eq!(parsed, json!([{"a": 1, "b": "x"}, {"a": 2, "b": null}]));
        let text = r.render(false);
        assert!(text.contains("2 row(s), 1 finding(s)"), "{text}");
    }
}
