//! How the CLI shows a reply: JSON with `--json` (the API's own shapes; listings as arrays),
//! else a few lines of text.

use std::io::Write;

use meshward_api::shared::EventRow;
use meshward_api::{Reply, Request};
use serde_json::json;

use crate::args::Global;

/// Shows the reply of `request`.
pub fn render(
    g: &Global,
    request: &Request,
    reply: Reply,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (value, text) = shown(request, reply);
    if g.json {
        writeln!(out, "{value}")?;
    } else if !text.is_empty() {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// Events, one per line, or a JSON array.
pub fn events(g: &Global, rows: &[EventRow], out: &mut dyn Write) -> anyhow::Result<()> {
    if g.json {
        writeln!(out, "{}", serde_json::to_value(rows)?)?;
        return Ok(());
    }
    for e in rows {
        writeln!(
            out,
            "{} {}/{}/{} {} {} {} {}",
            e.at_ms,
            &e.writer[..8.min(e.writer.len())],
            e.segment,
            e.index,
            e.kind,
            e.user,
            e.target,
            e.detail.escape_debug()
        )?;
    }
    Ok(())
}

fn rotation_line(r: &meshward_api::credentials::RotationInfo) -> String {
    let mark = match (r.current, r.head) {
        (true, _) => "current",
        (false, true) => "head",
        _ => "-",
    };
    format!(
        "{} {mark} {} by {} at {} {}",
        r.version,
        r.how,
        r.user,
        r.at_ms,
        r.reason.escape_debug()
    )
}

fn lines<T>(items: &[T], line: impl Fn(&T) -> String) -> String {
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// The JSON and the text of a reply.
fn shown(request: &Request, reply: Reply) -> (serde_json::Value, String) {
    let value = serde_json::to_value(&reply).unwrap_or_default();
    let text = match (&reply, request) {
        (Reply::Appended(a), _) if a.count == 1 => format!(
            "appended event {} of segment {} (writer {})",
            a.index, a.segment, a.writer
        ),
        (Reply::Appended(a), _) => format!("appended {} events (writer {})", a.count, a.writer),
        (Reply::Fingerprint(f), _) => format!(
            "recorded {} {} {} (first seen {}, last seen {})",
            f.key.host, f.key.key_type, f.key.fingerprint, f.first_seen_ms, f.last_seen_ms
        ),
        (Reply::Fingerprints(rows), _) => lines(rows, |f| {
            format!(
                "{} {} {} {} {} {}{}",
                &f.seen_by[..8.min(f.seen_by.len())],
                f.key.host,
                f.key.key_type,
                f.key.fingerprint,
                f.first_seen_ms,
                f.last_seen_ms,
                if f.approved { " approved" } else { "" }
            )
        }),
        (Reply::Rotated(r), _) => {
            format!("rotated {} to version {} ({})", r.address, r.version, r.how)
        }
        (Reply::CredentialHistory(h), _) => {
            let mut text = format!(
                "{} current {}{}",
                h.address,
                h.current,
                if h.conflict { " CONFLICT" } else { "" }
            );
            for r in &h.rotations {
                text.push_str(&format!("\n{}", rotation_line(r)));
            }
            text
        }
        (Reply::CredentialConflicts(list), _) if list.is_empty() => "no conflicts".into(),
        (Reply::CredentialConflicts(list), _) => lines(list, |c| {
            let heads: Vec<&str> = c.heads.iter().map(|h| h.version.as_str()).collect();
            format!(
                "{} current {} heads {}",
                c.address,
                c.current,
                heads.join(" ")
            )
        }),
        (Reply::Secret(s), _) => s.secret.clone(),
        (Reply::Exception(x), _) => format!("set exception {} {}", x.user, x.field),
        (Reply::Exceptions(rows), _) => lines(rows, |x| {
            format!(
                "{} {} {} {}",
                &x.writer[..8.min(x.writer.len())],
                x.user,
                x.field,
                x.value.escape_debug()
            )
        }),
        (Reply::Empty, Request::DeleteException { user, field }) => {
            return (
                json!({"user": user, "field": field, "deleted": true}),
                format!("deleted exception {user} {field}"),
            );
        }
        (Reply::Recorded(r), _) => format!(
            "recorded audit {} ({})",
            r.last_seq,
            &r.hash[..16.min(r.hash.len())]
        ),
        (Reply::Audit(rows), _) => lines(rows, |r| {
            format!(
                "{} {} {} {} {} {}",
                r.seq,
                r.at_ms,
                r.actor,
                r.action,
                r.target,
                r.detail.escape_debug()
            )
        }),
        (Reply::AuditVerified(v), _) => match &v.first_bad {
            None => format!("audit chain intact: {} records verified", v.verified),
            Some(b) => format!(
                "audit chain broken: record {} {} ({} records before it verified)",
                b.seq, b.problem, v.verified
            ),
        },
        (Reply::AuditMeshVerified(v), _) => audit_mesh(v),
        (Reply::FingerprintChecked(c), _) if c.approved.is_empty() => {
            format!(
                "{}: {} (fingerprint-enforcement {})",
                c.status, c.decision, c.enforcement
            )
        }
        (Reply::FingerprintChecked(c), _) => format!(
            "{}: {} (fingerprint-enforcement {}); approved: {}",
            c.status,
            c.decision,
            c.enforcement,
            c.approved.join(", ")
        ),
        (Reply::Setting(s), _) => setting_line(s),
        (Reply::Settings(rows), _) => lines(rows, setting_line),
        (Reply::Config(c), _) => format!("{} = {}", c.key, c.value.as_deref().unwrap_or("(unset)")),
        (Reply::ConfigList(rows), _) => lines(rows, |c| {
            format!("{} = {}", c.key, c.value.as_deref().unwrap_or("(unset)"))
        }),
        (Reply::Written(w), request) => return written(request, w.version),
        (Reply::Users(rows), _) => lines(rows, |u| format!("{} {}", u.name, u.grants.join(" "))),
        (Reply::Revoked(rows), _) => lines(rows, |r| {
            format!("{} (mastered version {})", r.serial, r.version)
        }),
        (Reply::Licence(None), _) => "no licence installed: the cluster runs standalone".into(),
        (Reply::Licence(Some(l)), _) => format!(
            "{} may run {} nodes until {}",
            l.customer,
            l.max_nodes,
            meshward_node::join::utc(l.expires_at_ms)
        ),
        (Reply::PasswordChecked(c), _) => match (c.valid, c.expired) {
            (false, _) => format!("{}: the password does not match", c.user),
            (true, true) => format!("{}: the password is right but expired", c.user),
            (true, false) => format!("{}: the password is valid", c.user),
        },
        (Reply::Passwords(rows), _) => lines(rows, |p| {
            format!("{} (mastered version {})", p.user, p.version)
        }),
        (Reply::Imported(i), _) => format!(
            "imported {} records; roster has {} members",
            i.imported,
            i.roster.len()
        ),
        (Reply::Ha(ha), _) => {
            let mut text = format!(
                "{} ({}), epoch {}, leader {}",
                ha.role,
                ha.state,
                ha.epoch.unwrap_or(0),
                ha.leader.as_deref().unwrap_or("none")
            );
            for m in &ha.members {
                text.push_str(&format!(
                    "\n  {} {}{}",
                    m.address,
                    m.state,
                    if m.leader { " (leader)" } else { "" }
                ));
            }
            text
        }
        (Reply::HaDone(d), _) => format!(
            "done at mastered version {}; epoch {}, leader {}",
            d.version, d.epoch, d.leader
        ),
        (Reply::HaLog(rows), _) if rows.is_empty() => "no HA command has run on this node".into(),
        (Reply::HaLog(rows), _) => lines(rows, |e| {
            let outcome = if e.ok { "ok" } else { "FAILED" };
            let by = if e.who.is_empty() { "?" } else { &e.who };
            let on = if e.node.is_empty() { "?" } else { &e.node };
            format!(
                "{}  {on}  {by}  {}  {outcome}: {}",
                e.at, e.command, e.message
            )
        }),
        (Reply::Superseded(rows), _) => lines(rows, |r| {
            let state = match (r.in_force, r.restrictive) {
                (true, _) => "in force",
                (false, true) => "restrictive, not yet re-applied",
                (false, false) => "superseded",
            };
            format!(
                "{}  version {} epoch {} {}: {}: {}  [{state}]",
                &r.hash[..16.min(r.hash.len())],
                r.version,
                r.epoch,
                r.kind,
                r.subject,
                r.change,
            )
        }),
        (Reply::Status(s), _) => status_text(s),
        (Reply::Health(h), _) if h.healthy => "healthy".into(),
        (Reply::Health(h), _) => format!("unhealthy: {}", h.reasons.join("; ")),
        (Reply::Fault(f), Request::Fault(kind)) => format!("{}: {}", kind.name(), f.count),
        (Reply::Fault(f), _) => f.count.to_string(),
        (Reply::Events(page), _) => lines(&page.events, |e| format!("{e:?}")),
        (Reply::Certificate(c), _) => format!("certificate for {}: serial {}", c.user, c.serial),
        (Reply::Bundle(b), _) => format!("joining bundle valid until {}", b.expires_at_ms),
        (Reply::Row(r), _) => format!(
            "{}/{}/{} {} (version {})",
            r.namespace, r.table, r.key, r.document, r.version
        ),
        (Reply::Rows(page), _) => {
            let mut text = lines(&page.rows, |r| format!("{} {}", r.key, r.document));
            if let Some(next) = &page.next {
                text.push_str(&format!("\n(more: --after {next})"));
            }
            text
        }
        (Reply::Tables(t), _) => t.tables.join("\n"),
        (Reply::Empty, _) => String::new(),
    };
    (value, text)
}

/// A mastered write: what it did, with its version.
fn written(request: &Request, version: u64) -> (serde_json::Value, String) {
    let v = |what: String, json: serde_json::Value| {
        (json, format!("{what} (mastered version {version})"))
    };
    match request {
        Request::SetConfig { key, value } => v(
            format!("{key} = {value}"),
            json!({"key": key, "value": value, "version": version}),
        ),
        Request::UnsetConfig { key } => v(
            format!("{key} = (default)"),
            json!({"key": key, "value": null, "version": version}),
        ),
        Request::CreateUser { name } => v(
            format!("created user {name}"),
            json!({"user": name, "done": "created user", "version": version}),
        ),
        Request::DeleteUser { name } => v(
            format!("deleted user {name}"),
            json!({"user": name, "done": "deleted user", "version": version}),
        ),
        Request::Grant { name, grant } => v(
            format!("granted {grant} to {name}"),
            json!({"user": name, "done": format!("granted {grant} to"), "version": version}),
        ),
        Request::RevokeGrant { name, grant } => v(
            format!("revoked {grant} from {name}"),
            json!({"user": name, "done": format!("revoked {grant} from"), "version": version}),
        ),
        Request::RevokeCertificate(r) => v(
            format!("revoked certificate serial {}", r.serial),
            json!({"revoked": r.serial, "version": version}),
        ),
        Request::Approve(a) => v(
            format!(
                "{} {} {} {}",
                a.key.host,
                a.key.key_type,
                a.key.fingerprint,
                if a.approved {
                    "approved"
                } else {
                    "approval withdrawn"
                }
            ),
            json!({"host": a.key.host, "key_type": a.key.key_type,
                   "fingerprint": a.key.fingerprint, "approved": a.approved, "version": version}),
        ),
        Request::InstallLicence(_) => v("licence installed".into(), json!({"version": version})),
        Request::PutRow {
            namespace,
            table,
            key,
            ..
        } => v(
            format!("wrote {namespace}/{table}/{key}"),
            json!({"namespace": namespace, "table": table, "key": key, "version": version}),
        ),
        Request::DeleteRow {
            namespace,
            table,
            key,
        } => v(
            format!("deleted {namespace}/{table}/{key}"),
            json!({"namespace": namespace, "table": table, "key": key, "deleted": true, "version": version}),
        ),
        Request::ChangePassword { user, .. } => v(
            format!("password of {user} changed"),
            json!({"user": user, "version": version}),
        ),
        _ => v("written".into(), json!({"version": version})),
    }
}

fn status_text(s: &meshward_api::node::Status) -> String {
    let chain = s.mastered.as_ref().map_or(String::new(), |m| {
        format!(
            " (epoch {}, leader {}, mastered version {})",
            m.epoch, m.leader_address, m.version
        )
    });
    let full = s
        .mesh
        .as_ref()
        .filter(|m| m["store"]["disk_full"] == true)
        .map_or(String::new(), |m| {
            format!(
                "\ndisk full: {} writes refused so far; local writes fail and replicated \
                 changes wait until space is freed",
                m["store"]["writes_refused"]
            )
        });
    format!(
        "writer {}\nrole {}, HA state {}{chain}\ncluster {}\nrows {}\nsegments {} ({} live, {} sealed bytes)\naudit records {}{full}",
        s.writer,
        s.role,
        s.ha.state,
        s.cluster,
        s.rows
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        s.segments,
        s.live_segments,
        s.sealed_bytes,
        s.audit_records,
    )
}

/// One line of `meshward watch`: `CURSOR TABLE OP WHAT` (a snapshot row: `snapshot` as the
/// op), or the event as a JSON line with `--json`.
pub fn watch_line(
    event: &meshward_client::WatchEvent,
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use meshward_client::WatchEvent;
    let (WatchEvent::Snapshot(c) | WatchEvent::Change(c)) = event else {
        return Ok(());
    };
    if as_json {
        writeln!(out, "{}", serde_json::to_string(c)?)?;
    } else {
        let r = &c.row;
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let what = match c.table.as_str() {
            "events" => format!("{} {} {}", s("kind"), s("user"), s("target")),
            "fingerprints" if c.op != "delete" => format!(
                "{} {} {}{}",
                s("host"),
                s("key_type"),
                s("fingerprint"),
                if r["approved"] == true {
                    " approved"
                } else {
                    ""
                }
            ),
            "exceptions" if c.op != "delete" => format!("{} {}", s("user"), s("field")),
            "mastered" => {
                let mut w = format!("{} v{} epoch {}", s("kind"), r["version"], r["epoch"]);
                if let Some(a) = r.get("approval") {
                    let verb = if a["approved"] == true {
                        "approve"
                    } else {
                        "withdraw"
                    };
                    w.push_str(&format!(
                        " {verb} {} {} {}",
                        a["host"].as_str().unwrap_or_default(),
                        a["key_type"].as_str().unwrap_or_default(),
                        a["fingerprint"].as_str().unwrap_or_default()
                    ));
                }
                if let Some(cfg) = r.get("config") {
                    w.push_str(&format!(
                        " {}={}",
                        cfg["key"].as_str().unwrap_or_default(),
                        cfg["value"]
                    ));
                }
                w
            }
            _ => format!("{} {}", s("writer"), s("key")),
        };
        writeln!(out, "{} {} {} {what}", c.cursor, c.table, c.op)?;
    }
    out.flush()?;
    Ok(())
}

/// `name = value`, marked when the value is the default.
fn setting_line(s: &meshward_api::local::Setting) -> String {
    let value = s.value.as_deref().unwrap_or("(unset)");
    if s.default {
        format!("{} = {value} (default)", s.name)
    } else {
        format!("{} = {value}", s.name)
    }
}

/// `audit verify --against-mesh`: the local chain, then one line per peer.
fn audit_mesh(v: &meshward_api::local::AuditMeshVerified) -> String {
    let chain = if v.intact { "intact" } else { "BROKEN" };
    let mut out = format!(
        "audit chain {chain}: {} records, head {}",
        v.count,
        if v.hash.is_empty() { "none" } else { &v.hash }
    );
    for p in &v.peers {
        let name = p.address.clone().unwrap_or_else(|| p.node.clone());
        let short = p.node.get(..8).unwrap_or(&p.node);
        let count = p.count.unwrap_or(0);
        let what = match p.state.as_str() {
            "agrees" => format!("agrees at record {count}"),
            "disagrees" => format!(
                "DISAGREES at record {count}: it holds {}, the local audit {}",
                p.peer_hash.as_deref().unwrap_or("?"),
                p.local_hash.as_deref().unwrap_or("has fewer records")
            ),
            "no-row" => "holds no head of this node yet".to_string(),
            other => format!("{other}: {}", p.detail.as_deref().unwrap_or("")),
        };
        out.push_str(&format!("\npeer {name} ({short}): {what}"));
    }
    out
}
