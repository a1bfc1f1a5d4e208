//! Results: the summary table printed on stdout and the JSON file, both carrying the command
//! line and the machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

use crate::sys::Machine;

/// A table for the terminal.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    /// Column titles.
    pub headers: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as aligned text: the first column left-aligned, the others right-aligned.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            for (i, (cell, w)) in row.iter().zip(&width).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if i == 0 {
                    let _ = write!(out, "{cell:<w$}");
                } else {
                    let _ = write!(out, "{cell:>w$}");
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.headers);
        let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// Errors by kind, with the first few messages for diagnosis.
#[derive(Debug, Default)]
pub struct Errors {
    inner: Mutex<(BTreeMap<String, u64>, Vec<String>)>,
}

impl Errors {
    /// Counts an error of `kind`; keeps the message of the first ten.
    pub fn add(&self, kind: &str, message: impl FnOnce() -> String) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.0.entry(kind.to_owned()).or_default() += 1;
        if g.1.len() < 10 {
            let m = message();
            g.1.push(m);
        }
    }

    /// Errors counted so far.
    pub fn total(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.values().sum()
    }

    /// The counts and the sample messages.
    pub fn snapshot(&self) -> (BTreeMap<String, u64>, Vec<String>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What one run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `idle`, `fanout`, `presence-storm` or `join-rate`.
    pub scenario: String,
    /// `headcount` or the peer.
    pub target: String,
    /// The runner's label (its round), if any.
    pub label: Option<String>,
    /// The command line, secrets redacted.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// The generator's own settings.
    pub generator: serde_json::Value,
    /// Seconds since the Unix epoch when the run started.
    pub started_at_unix: u64,
    /// How long the run took.
    pub duration_secs: f64,
    /// The workload's parameters.
    pub params: serde_json::Value,
    /// The scenario's figures.
    pub result: serde_json::Value,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first error messages.
    pub error_samples: Vec<String>,
    /// The summary table as printed.
    pub table: Table,
}

impl Report {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The command line as typed, starting at the program's file name, with the values of
/// `--apikey` and `--jwt-secret` replaced by `***`.
pub fn command_line(args: &[String]) -> String {
    let mut out = Vec::new();
    let mut redact_next = false;
    for (i, a) in args.iter().enumerate() {
        let shown = if i == 0 {
            Path::new(a)
                .file_name()
                .map_or_else(|| a.clone(), |f| f.to_string_lossy().into_owned())
        } else if redact_next {
            redact_next = false;
            "***".to_owned()
        } else if let Some((flag, _)) = a.split_once('=').filter(|(f, _)| is_secret(f)) {
            format!("{flag}=***")
        } else {
            redact_next = is_secret(a);
            a.clone()
        };
        out.push(quote(&shown));
    }
    out.join(" ")
}

fn is_secret(flag: &str) -> bool {
    flag == "--apikey" || flag == "--jwt-secret"
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@*+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `1234567.0` as `1.23M`, `12345.0` as `12.3k`.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Bytes in binary units.
pub fn bytes(v: f64) -> String {
    let a = v.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", v / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_hide_secrets() {
        let args: Vec<String> = [
            "/usr/local/bin/headcount",
            "bench",
            "idle",
            "--jwt-secret",
            "s3cret",
            "--apikey=eyJ",
            "--label",
            "round 1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            command_line(&args),
            "headcount bench idle --jwt-secret *** --apikey=*** --label 'round 1'"
        );
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["step", "rate"]);
        t.row(vec!["1".into(), "100".into()]);
        t.row(vec!["10".into(), "5".into()]);
        assert_eq!(
            t.render(),
            "step  rate\n----------\n1      100\n10       5\n"
        );
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(bytes(8192.0), "8.0 KiB");
    }
}
