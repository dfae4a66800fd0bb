//! `meshward-sim compare A B`: the figures of two reports side by side.
//!
//! Every number in the two `summary.json` files (a report directory or the file itself) is
//! listed by its path (`messages.delivery_percent`), with A's value, B's, and B's change in
//! per cent where both are numbers; values that are the same in both are listed too, so the
//! table reads the same whatever changed. Arrays are summarised by their length.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

/// Largest `summary.json` read.
const MAX_SUMMARY: u64 = 64 * 1024 * 1024;

/// Reads a report's summary: `path` is its directory or its `summary.json`.
pub fn load(path: &Path) -> anyhow::Result<Value> {
    let file = if path.is_dir() {
        path.join("summary.json")
    } else {
        path.to_path_buf()
    };
    let Some(bytes) = meshward_node::disk::read_at_most(&file, MAX_SUMMARY)
        .with_context(|| format!("reading {}", file.display()))?
    else {
        anyhow::bail!(
            "{} is over the limit of {MAX_SUMMARY} bytes",
            file.display()
        );
    };
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a report's summary.json", file.display()))
}

/// The side-by-side table of two summaries.
pub fn compare(a: &Value, b: &Value) -> String {
    let mut rows: BTreeMap<String, (Option<Value>, Option<Value>)> = BTreeMap::new();
    let mut fa = Vec::new();
    flatten("", a, &mut fa);
    for (k, v) in fa {
        rows.entry(k).or_default().0 = Some(v);
    }
    let mut fb = Vec::new();
    flatten("", b, &mut fb);
    for (k, v) in fb {
        rows.entry(k).or_default().1 = Some(v);
    }
    let width = rows.keys().map(String::len).max().unwrap_or(10).max(6);
    let cell = |v: &Option<Value>| match v {
        None => "—".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{f:.0}")
            } else {
                format!("{f:.3}")
            }
        }
        Some(other) => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:>16}  {:>16}  {:>9}",
        "figure", "A", "B", "B vs A"
    );
    for (k, (x, y)) in &rows {
        let change = match (
            x.as_ref().and_then(Value::as_f64),
            y.as_ref().and_then(Value::as_f64),
        ) {
            (Some(p), Some(q)) if p == q => "=".to_string(),
            (Some(p), Some(q)) if p != 0.0 => format!("{:+.1} %", (q - p) / p.abs() * 100.0),
            (Some(_), Some(_)) => "new".to_string(),
            _ if x == y => "=".to_string(),
            _ => "≠".to_string(),
        };
        let _ = writeln!(
            out,
            "{k:width$}  {:>16}  {:>16}  {change:>9}",
            cell(x),
            cell(y)
        );
    }
    out
}

/// Leaves of `v` by dotted path; arrays as their length (`path.len`).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(items) => out.push((key("len"), Value::from(items.len()))),
        Value::String(s) if s.len() > 60 => out.push((
            prefix.to_string(),
            Value::from(format!("{}…", s.chars().take(57).collect::<String>())),
        )),
        other => out.push((prefix.to_string(), other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn two_summaries_are_listed_side_by_side_with_the_change() {
        let a = json!({"messages": {"delivery_percent": 99.0, "count": 10}, "wall_ms": 2000, "oracles": {"failures": []}, "mode": "sim"});
        let b = json!({"messages": {"delivery_percent": 100.0, "count": 10}, "wall_ms": 1000, "oracles": {"failures": ["x"]}, "nodes": 5, "mode": "sim"});
        let table = compare(&a, &b);
        let line = |k: &str| {
            table
                .lines()
                .find(|l| l.starts_with(k))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line("messages.delivery_percent").ends_with("+1.0 %"),
            "{table}"
        );
        assert!(line("messages.count").ends_with('='), "{table}");
        assert!(line("wall_ms").ends_with("-50.0 %"), "{table}");
        assert!(
            line("oracles.failures.len").contains('0')
                && line("oracles.failures.len").contains('1'),
            "{table}"
        );
        assert!(line("nodes").contains('—'), "{table}");
        assert!(line("mode").ends_with('='), "{table}");
    }

    #[test]
    fn a_report_that_is_not_a_summary_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("summary.json"), b"not json").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("is not a report's summary.json"), "{err}");
        let err = format!("{:#}", load(&dir.path().join("missing")).unwrap_err());
        assert!(err.contains("reading"), "{err}");
    }
}
