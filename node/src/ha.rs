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
//! outcome is appended to `DATA/ha-commands.log`.

use std::io::Write as _;
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

/// Appends one line to the HA command log: time, command, outcome. A forced failover is
/// marked loudly. Failure to log is reported on stderr, never fatal.
pub fn log(data: &Path, command: &str, outcome: Result<&str, String>) {
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let loud = if command.contains("--force") {
        "FORCED FAILOVER (break-glass) "
    } else {
        ""
    };
    let line = match outcome {
        Ok(message) => format!("{when}\t{loud}{command}\tok\t{message}\n"),
        Err(error) => format!("{when}\t{loud}{command}\terror\t{error}\n"),
    };
    let path = data.join(HA_LOG);
    let written =
        crate::disk::open_append_private(&path).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("warning: could not append to {}: {e}", path.display());
    }
}
