//! What `GET /metrics` and `GET /` render from the node's status: Prometheus text and a small
//! HTML page.

use serde_json::Value;

/// Prometheus text from `status --json`: every number of the core's counters, the
/// transport's counters and gauges, the lag summary, the store's counts and its writes
/// refused for a full disk, the credential accounts in conflict
/// (`meshward_store_credential_conflicts`), plus the connected peers and the epoch as gauges.
pub fn prometheus(status: &Value) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP meshward_{name} {help}\n# TYPE meshward_{name} gauge\nmeshward_{name} {value}\n"
        ));
    };
    let mesh = &status["mesh"];
    let peers = mesh["peers"].as_object().map_or(0, serde_json::Map::len);
    gauge(
        "epoch",
        "Mastered epoch.",
        status["mastered"]["epoch"].as_f64().unwrap_or(0.0),
    );
    gauge(
        "mastered_version",
        "Last mastered version.",
        status["mastered"]["version"].as_f64().unwrap_or(0.0),
    );
    gauge("known_peers", "Peers the core knows.", peers as f64);
    let mut leaves = Vec::new();
    for (prefix, value) in [
        ("core", &mesh["core"]),
        ("transport", &mesh["transport"]),
        ("lag", &mesh["lag"]),
        ("setup", &mesh["setup_metrics"]),
        ("admin", &mesh["admin_metrics"]),
        ("join", &mesh["join"]),
        ("store", &mesh["store"]),
        ("store_rows", &status["rows"]),
    ] {
        flatten(prefix, value, &mut leaves);
    }
    for (name, key) in [
        ("segments", "segments"),
        ("live_segments", "live_segments"),
        ("sealed_bytes", "sealed_bytes"),
        ("audit_records", "audit_records"),
        ("credential_conflicts", "credential_conflicts"),
    ] {
        if let Some(v) = status[key].as_f64() {
            leaves.push((format!("store_{name}"), v));
        }
    }
    if let Some(v) = mesh["pending_evicted"].as_f64() {
        leaves.push(("pending_evicted".into(), v));
    }
    for (name, value) in leaves {
        out.push_str(&format!(
            "# TYPE meshward_{name} untyped\nmeshward_{name} {value}\n"
        ));
    }
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                out.push((metric_name(prefix), v));
            }
        }
        Value::Bool(b) => out.push((metric_name(prefix), f64::from(u8::from(*b)))),
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}_{k}"), v, out);
            }
        }
        _ => {}
    }
}

fn metric_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A small HTML page of the cluster's state, from `status --json`.
pub fn status_page(status: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => escape(s),
        Value::Null => "-".into(),
        other => escape(&other.to_string()),
    };
    let mut rows = String::new();
    for member in status["ha"]["members"].as_array().into_iter().flatten() {
        let mut role = Vec::new();
        if member["leader"] == Value::Bool(true) {
            role.push("leader");
        }
        if member["primary"] == Value::Bool(true) {
            role.push("primary");
        }
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            text(&member["address"]),
            text(&member["id"]),
            escape(&role.join(", ")),
            text(&member["state"]),
            text(&member["connected"]),
            text(&member["behind"]),
            text(&member["last_seen_ms"]),
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>meshward status</title></head>\n<body>\n<h1>meshward node</h1>\n<table id=\"node\">\n<tr><th>writer</th><td id=\"writer\"><code>{writer}</code></td></tr>\n<tr><th>cluster</th><td><code>{cluster}</code></td></tr>\n<tr><th>role</th><td id=\"role\">{role}</td></tr>\n<tr><th>HA state</th><td id=\"ha-state\">{ha}</td></tr>\n<tr><th>epoch</th><td id=\"epoch\">{epoch}</td></tr>\n<tr><th>leader</th><td>{leader}</td></tr>\n<tr><th>members</th><td>{members}</td></tr>\n<tr><th>lag</th><td id=\"lag\">{lag}</td></tr>\n</table>\n<h2>nodes and links</h2>\n<table id=\"members\">\n<tr><th>address</th><th>id</th><th>role</th><th>HA state</th><th>connected</th><th>behind</th><th>last seen (ms)</th></tr>\n{rows}</table>\n<p><a href=\"/metrics\">metrics</a> · <a href=\"/openapi.json\">OpenAPI</a></p>\n</body></html>\n",
        writer = text(&status["writer"]),
        cluster = text(&status["cluster"]),
        role = text(&status["role"]),
        ha = text(&status["ha"]["state"]),
        epoch = text(&status["mastered"]["epoch"]),
        leader = text(&status["mastered"]["leader_address"]),
        members = text(&status["mastered"]["members"]),
        lag = text(&status["mesh"]["lag"]),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prometheus_text_has_one_sample_per_line() {
        let status = json!({"mastered": {"epoch": 3, "version": 9},
            "mesh": {"peers": {"ab": {}}, "core": {"sync_rounds": 4}, "transport": {"connected_peers": 1},
                "store": {"writes_refused": 2, "disk_full": true}}});
        let text = prometheus(&status);
        assert!(text.contains("meshward_epoch 3\n"));
        assert!(text.contains("meshward_store_writes_refused 2\n"));
        assert!(text.contains("meshward_store_disk_full 1\n"));
        assert!(text.contains("meshward_core_sync_rounds 4\n"));
        assert!(text.contains("meshward_transport_connected_peers 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn the_status_page_lists_members_and_escapes_text() {
        let status = json!({"role": "leader", "ha": {"state": "active", "members": [
            {"address": "127.0.0.1:1", "id": "ab", "leader": true, "primary": true,
             "state": "active", "connected": null, "behind": 0, "last_seen_ms": null},
            {"address": "<script>", "id": "cd", "state": "standby"}]}});
        let page = status_page(&status);
        assert!(page.contains("<td>127.0.0.1:1</td>"), "{page}");
        assert!(page.contains("leader, primary"), "{page}");
        assert!(
            page.contains("&lt;script&gt;") && !page.contains("<script>"),
            "{page}"
        );
    }
}
