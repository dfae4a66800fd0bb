//! HA: the roles, resolving the members HA commands name, and the HA command log.
//!
//! Roles follow the HA guide: the **primary** is the node that created the cluster (the
//! epoch-1 leader); the **active** node is the current leader; the others are **standby**. A
//! primary that handed leadership away is **demoted**; a node that left the cluster (or was
//! never part of one) is **inactive**; a member the running node cannot reach is **failed**.
//!
//! Every change of leader needs endorsements from a majority of the members, the next leader
//! included: planned hand-over (`ha demote --to`, `ha failback`, on the leader) and `ha
//! failover` (on a follower) therefore talk to other nodes and need the running node, as do
//! `ha make-standalone` on a follower and `password change` on a follower; the daemon answers
//! them when the core is done ([`crate::core::Output::Done`]). Every HA command and its
//! outcome is appended to `DATA/ha-commands.log` (0600, local to the node, never replicated),
//! one tab-separated line each: time, node, who, command, `ok` or `error`, message
//! ([`log`]); `ha log` reads it back newest first ([`read_log`]).

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use meshward_crdt::mastered::Chain;

/// File name of the HA command log in the data directory.
pub const HA_LOG: &str = "ha-commands.log";

/// The node `ha failback` hands leadership to: the primary, when it is in the roster and does
/// not lead already. The core checks the rest (leader only, a majority).
pub fn failback_target(chain: &Chain, primary: Option<[u8; 32]>) -> anyhow::Result<[u8; 32]> {
    let primary = primary.context("no trust anchor")?;
    if chain.leader() == primary {
        bail!(
            "the primary already leads (epoch {}): nothing to fail back",
            chain.epoch()
        );
    }
    if !chain.roster().contains(&primary) {
        bail!("the primary is no longer in the roster; use `meshward ha demote --to NODE`");
    }
    Ok(primary)
}

/// A roster member named by address or by (a prefix of at least 8 hex digits of) its id.
pub fn resolve_member(chain: &Chain, name: &str) -> anyhow::Result<[u8; 32]> {
    let members = &chain.roster().members;
    if let Some(m) = members.iter().find(|m| m.address == name) {
        return Ok(m.key);
    }
    let hex_name = name.to_ascii_lowercase();
    let matches: Vec<_> = if hex_name.len() >= 8 && hex_name.bytes().all(|b| b.is_ascii_hexdigit())
    {
        members
            .iter()
            .filter(|m| hex::encode(m.key).starts_with(&hex_name))
            .collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [m] => Ok(m.key),
        [] => bail!(
            "no member {name:?} in the roster; members: {}",
            members
                .iter()
                .map(|m| m.address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => bail!("{name:?} names several members; give more digits"),
    }
}

/// How much of the end of the HA command log [`read_log`] reads at most.
pub const MAX_LOG_TAIL: u64 = 1024 * 1024;

/// What one HA log line records besides the time and the outcome.
#[derive(Clone, Copy, Debug)]
pub struct LogEntry<'a> {
    /// The node it ran on (its address).
    pub node: &'a str,
    /// Who asked (`local operator`, `user NAME`).
    pub who: &'a str,
    /// The command, as the CLI names it.
    pub command: &'a str,
}

/// Appends one line to the HA command log: time, node, who, command, outcome. A forced
/// failover is marked loudly. Tabs and line breaks in the fields become spaces, so a line is
/// one entry. Failure to log is reported on stderr, never fatal.
pub fn log(data: &Path, entry: &LogEntry<'_>, outcome: Result<&str, String>) {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let command = clean(entry.command);
    let (node, who) = (clean(entry.node), clean(entry.who));
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let loud = if command.contains("--force") {
        "FORCED FAILOVER (break-glass) "
    } else {
        ""
    };
    let line = match outcome {
        Ok(message) => format!(
            "{when}\t{node}\t{who}\t{loud}{command}\tok\t{}\n",
            clean(message)
        ),
        Err(error) => format!(
            "{when}\t{node}\t{who}\t{loud}{command}\terror\t{}\n",
            clean(&error)
        ),
    };
    let path = data.join(HA_LOG);
    let written =
        crate::disk::open_append_private(&path).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("warning: could not append to {}: {e}", path.display());
    }
}

/// The last `limit` entries of the HA command log, newest first, from at most its last
/// [`MAX_LOG_TAIL`] bytes. No log yet: none. Lines of earlier versions (time, command,
/// outcome, message) have an empty node and who; a line that is neither is skipped.
pub fn read_log(data: &Path, limit: usize) -> anyhow::Result<Vec<meshward_api::node::HaLogEntry>> {
    let path = data.join(HA_LOG);
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_LOG_TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(MAX_LOG_TAIL).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    Ok(lines
        .into_iter()
        .rev()
        .filter_map(parse_line)
        .take(limit)
        .collect())
}

fn parse_line(line: &str) -> Option<meshward_api::node::HaLogEntry> {
    let fields: Vec<&str> = line.split('\t').collect();
    let (at, node, who, command, outcome, message) = match fields.as_slice() {
        [at, node, who, command, outcome, message] => {
            (*at, *node, *who, *command, *outcome, *message)
        }
        [at, command, outcome, message] => (*at, "", "", *command, *outcome, *message),
        _ => return None,
    };
    let ok = match outcome {
        "ok" => true,
        "error" => false,
        _ => return None,
    };
    Some(meshward_api::node::HaLogEntry {
        at: at.to_string(),
        node: node.to_string(),
        who: who.to_string(),
        command: command.to_string(),
        ok,
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_reads_back_newest_first_with_who_and_where_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_log(dir.path(), 10).unwrap().is_empty());
        let entry = |command| LogEntry {
            node: "10.0.0.1:7400",
            who: "user alice",
            command,
        };
        log(
            dir.path(),
            &entry("ha demote --to b"),
            Ok("done\tat version 3"),
        );
        // An earlier version's line, and garbage, in between.
        let path = dir.path().join(HA_LOG);
        let mut file = crate::disk::open_append_private(&path).unwrap();
        file.write_all(b"2026-01-01T00:00:00Z\tha failback\terror\tno\n\xff\xfe junk\n")
            .unwrap();
        log(
            dir.path(),
            &entry("ha failover --force"),
            Err("no majority\nreally".into()),
        );
        let entries = read_log(dir.path(), 10).unwrap();
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert!(
            entries[0].command.starts_with("FORCED FAILOVER"),
            "{entries:?}"
        );
        assert!(!entries[0].ok && entries[0].message == "no majority really");
        assert_eq!(entries[1].command, "ha failback");
        assert_eq!(
            (entries[1].node.as_str(), entries[1].who.as_str()),
            ("", "")
        );
        assert_eq!(entries[2].who, "user alice");
        assert_eq!(entries[2].node, "10.0.0.1:7400");
        assert!(entries[2].ok && entries[2].message == "done at version 3");
        assert_eq!(read_log(dir.path(), 1).unwrap().len(), 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
