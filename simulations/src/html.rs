//! One HTML page per run (`index.html` beside `summary.json`): the figures, the oracles, the
//! faults that fired, the plots and the command that replays the run. Self-contained (inline
//! SVG and style, no script), so it reads offline.

use std::fmt::Write as _;

use serde_json::Value;

use crate::plot::escape;

/// The page for a run's `summary` and its plots (file name, SVG).
pub fn page(summary: &Value, plots: &[(&str, String)]) -> String {
    let s = summary;
    let mut h = String::new();
    let title = format!(
        "{}: {} ({} mode, seed {})",
        text(&s["scenario"]),
        if s["passed"] == Value::Bool(true) {
            "passed"
        } else {
            "FAILED"
        },
        text(&s["mode"]),
        text(&s["seed"])
    );
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let secs = s["virtual_seconds"].as_f64().unwrap_or(0.0);
    let wall = s["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let m = &s["messages"];
    let ms = |v: &Value| format!("{} ms (p50), {} ms (max)", text(&v["p50"]), text(&v["max"]));
    let rows: Vec<(&str, String)> = vec![
        (
            "nodes (live at the end)",
            format!("{} ({})", text(&s["nodes"]), text(&s["live_nodes_at_end"])),
        ),
        ("virtual time", format!("{secs:.1} s")),
        ("run time (wall clock)", format!("{wall:.2} s")),
        (
            "speed",
            if wall > 0.0 {
                format!("{:.0}× real time", secs / wall)
            } else {
                "—".into()
            },
        ),
        ("events", text(&s["events"])),
        ("commits (messages)", text(&m["count"])),
        (
            "delivery",
            format!(
                "{} % of (commit, live node) pairs",
                num(&m["delivery_percent"])
            ),
        ),
        (
            "reached by gossip",
            format!(
                "{} % (the rest by a sync answer)",
                num(&m["reached_by_gossip_percent"])
            ),
        ),
        (
            "duplicate push copies per node per message",
            num(&m["push_duplicates_per_node_per_message"]),
        ),
        (
            "gossip hops",
            format!(
                "mean {}, max {}",
                num(&m["hops_mean"]),
                text(&m["hops_max"])
            ),
        ),
        (
            "time to 99 % of live nodes",
            ms(&m["time_to_99_percent_ms"]),
        ),
        ("time to 99.9 %", ms(&m["time_to_99_9_percent_ms"])),
        ("time to 100 %", ms(&m["time_to_100_percent_ms"])),
        (
            "push lag, commit to durable",
            format!(
                "p50 {} ms, p99 {} ms",
                text(&m["push_lag_ms"]["p50"]),
                text(&m["push_lag_ms"]["p99"])
            ),
        ),
        (
            "payload bytes per node",
            format!(
                "mean {}, max {}",
                num(&s["bytes_per_node"]["mean"]),
                text(&s["bytes_per_node"]["max"])
            ),
        ),
        ("sync requests", text(&s["sync_requests"])),
        (
            "writes",
            format!(
                "{} committed, {} skipped on down nodes, {} refused by a store",
                text(&s["writes"]["committed"]),
                text(&s["writes"]["skipped_on_down_nodes"]),
                text(&s["writes"]["refused_by_store"])
            ),
        ),
        (
            "converged after heals",
            heals(&s["convergence"]["after_heals_ms"]),
        ),
    ];
    h.push_str("<h2>Summary</h2>\n<table>\n");
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Oracles</h2>\n");
    let failures = s["oracles"]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if failures.is_empty() {
        h.push_str("<p class=\"ok\">Every oracle passed.</p>\n");
    } else {
        h.push_str("<ul class=\"bad\">\n");
        for f in &failures {
            let _ = writeln!(h, "<li>{}</li>", escape(&text(f)));
        }
        h.push_str("</ul>\n");
    }
    table_of(&mut h, &s["oracles"], &["failures"]);

    h.push_str("<h2>Faults</h2>\n<table><tr><th>kind</th><th>asked for</th><th>fired</th></tr>\n");
    let requested = s["faults"]["requested"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let fired = s["faults"]["fired"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut kinds: Vec<&String> = requested.keys().chain(fired.keys()).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            escape(k),
            requested.get(k).map_or("—".into(), text),
            fired.get(k).map_or("0".into(), text)
        );
    }
    h.push_str("</table>\n");
    list_of(&mut h, "Failovers", &s["failovers"]);
    list_of(
        &mut h,
        "Leader operations (master, revoke, demote)",
        &s["leader_ops"],
    );
    if !s["disk"].is_null() {
        h.push_str("<h3>Disk</h3>\n");
        table_of(&mut h, &s["disk"], &[]);
    }
    h.push_str("<h3>Network and gossip</h3>\n");
    table_of(&mut h, &s["network"], &[]);
    table_of(&mut h, &s["gossip"], &[]);

    h.push_str("<h2>Plots</h2>\n");
    for (name, svg) in plots {
        let _ = writeln!(
            h,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            escape(name)
        );
    }
    let _ = write!(
        h,
        "<h2>Replay</h2>\n<pre>{}</pre>\n<p>The same scenario and seed give the same run, bit for bit (but for the run time).</p>\n</body></html>\n",
        escape(&text(&s["replay"]))
    );
    h
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f4f4f4;font-weight:normal}.ok{color:#2a7a2a}.bad{color:#b00}pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap}\
figure{margin:1em 0}figcaption{font-size:small;color:#666}";

/// A JSON value as text (strings without quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// A number with at most 3 decimals.
fn num(v: &Value) -> String {
    v.as_f64().map_or_else(
        || text(v),
        |f| {
            let t = format!("{f:.3}");
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        },
    )
}

fn heals(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| format!("{} ms after {} ms", text(&h["took_ms"]), text(&h["at_ms"])))
        .collect();
    if items.is_empty() {
        "—".into()
    } else {
        items.join("; ")
    }
}

/// The fields of an object, one row each.
fn table_of(h: &mut String, v: &Value, skip: &[&str]) {
    let Some(map) = v.as_object() else { return };
    h.push_str("<table>\n");
    for (k, val) in map.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        let shown = match val {
            Value::Object(_) | Value::Array(_) => serde_json::to_string(val).unwrap_or_default(),
            other => text(other),
        };
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&shown)
        );
    }
    h.push_str("</table>\n");
}

/// An array of objects, one table each.
fn list_of(h: &mut String, title: &str, v: &Value) {
    let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
        return;
    };
    let _ = writeln!(h, "<h3>{}</h3>", escape(title));
    for item in items {
        table_of(h, item, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_stands_alone_and_escapes_what_it_shows() {
        let summary = serde_json::json!({
            "scenario": "x<y", "mode": "sim", "seed": 3, "passed": false,
            "virtual_seconds": 10.0, "wall_ms": 5,
            "oracles": {"failures": ["<b>bad</b>"], "rollbacks": 0},
            "faults": {"requested": {"crash": 1}, "fired": {"crash": 1}},
            "replay": "meshward-sim run a.toml --seed 3 --report r",
        });
        let html = page(&summary, &[("reach.svg", "<svg></svg>".into())]);
        assert!(html.contains("x&lt;y: FAILED"));
        assert!(html.contains("&lt;b&gt;bad&lt;/b&gt;"));
        assert!(html.contains("2000× real time"));
        assert!(html.contains("<svg></svg>"));
        assert!(html.contains("meshward-sim run a.toml --seed 3"));
        // Nothing fetched from elsewhere.
        for outside in ["src=", "<link", "<script", "@import"] {
            assert!(!html.contains(outside), "{outside}");
        }
    }
}
