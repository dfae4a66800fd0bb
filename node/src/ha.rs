//! The HA commands (`meshward ha …`, `meshward password …`), the HA command log, and the HA
//! part of `meshward status`.
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
use clap::Subcommand;
use meshward_crdt::WriterId;
use meshward_crdt::mastered::Chain;
use serde_json::json;

use crate::cli::{Backend, Global, emit};
use crate::cluster_config::ClusterConfig;

/// File name of the HA command log in the data directory.
pub const HA_LOG: &str = "ha-commands.log";

/// `meshward ha …`
#[derive(Debug, Subcommand)]
pub enum HaCmd {
    /// Hand leadership to another member (run on the leader): a planned hand-over, epoch + 1.
    Demote {
        /// The next leader: its address as in the roster, or its id (at least 8 hex digits).
        #[arg(long)]
        to: String,
    },
    /// Hand leadership back to the primary, the node that created the cluster (run on the
    /// current leader after a failover, once the primary is back).
    Failback,
    /// Become the leader of the next epoch (run on a follower whose leader is gone): needs
    /// endorsements from a majority of the roster.
    Failover {
        /// Break-glass for a two-node pair whose other node is gone: take over alone. If the
        /// other node still leads elsewhere, the higher epoch wins when they meet and the
        /// other side's later mastered writes become superseded.
        #[arg(long)]
        force: bool,
    },
    /// Mastered records that lost when two leaders' chains met, for review.
    Superseded,
    /// Leave the cluster (on a follower; local data and MEK are kept), or remove `--node`
    /// (on the leader). A removed node needs a new joining bundle to come back.
    MakeStandalone {
        /// The member to remove (leader only): address or id.
        #[arg(long)]
        node: Option<String>,
    },
}

/// `meshward password …`
#[derive(Debug, Subcommand)]
pub enum PasswordCmd {
    /// Change a local user's password: the new password is read from stdin (one line). On a
    /// follower the change is delegated to the leader, which applies its password policy.
    Change {
        /// The user.
        user: String,
    },
    /// Users whose password the leader set, with the mastered version of the last change.
    List,
}

/// Whether a command is answered by the running node after other nodes reply.
pub fn is_async(cmd: &crate::cli::Command) -> bool {
    use crate::cli::Command;
    matches!(
        cmd,
        Command::Ha(
            HaCmd::Demote { .. }
                | HaCmd::Failback
                | HaCmd::Failover { .. }
                | HaCmd::MakeStandalone { .. }
        ) | Command::Password(PasswordCmd::Change { .. })
    )
}

/// Runs an HA command that needs no other node.
pub fn run_ha(
    g: &Global,
    cmd: HaCmd,
    backend: &mut dyn Backend,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let line = command_line(&cmd);
    let result = run_ha_inner(g, cmd, backend, out);
    log(
        &g.data,
        &line,
        result
            .as_ref()
            .map(|s| s.as_str())
            .map_err(|e| format!("{e:#}")),
    );
    result.map(|_| ())
}

fn run_ha_inner(
    g: &Global,
    cmd: HaCmd,
    backend: &mut dyn Backend,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<String> {
    crate::roster::chain(backend.store()?)?.context(
        "this node is not part of a cluster; run `meshward init` or `meshward join` first",
    )?;
    match cmd {
        HaCmd::Superseded => {
            let records = backend.store()?.superseded()?;
            let rows: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    json!({"version": r.record.version, "epoch": r.record.epoch,
                           "kind": r.record.kind.as_str(), "signer": hex::encode(r.signer),
                           "hash": r.hash().to_hex(), "payload_bytes": r.record.payload.len()})
                })
                .collect();
            let text = records
                .iter()
                .map(|r| {
                    format!(
                        "version {} epoch {} {} signed by {} ({} bytes)",
                        r.record.version,
                        r.record.epoch,
                        r.record.kind,
                        &hex::encode(r.signer)[..16],
                        r.record.payload.len()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            emit(g, out, json!(rows), &text)?;
            Ok(format!("{} superseded records", records.len()))
        }
        HaCmd::Demote { .. } | HaCmd::Failback => bail!(
            "a hand-over needs endorsements from a majority of the members, the next leader \
             included: start the node with `meshward run` first"
        ),
        HaCmd::Failover { .. } | HaCmd::MakeStandalone { .. } => {
            bail!("this command talks to other nodes: start the node with `meshward run` first")
        }
    }
}

/// The node a planned hand-over goes to: `ha demote --to NODE`, or the primary for
/// `ha failback`. The core checks the rest (leader only, another member, a majority).
pub fn handover_target(
    chain: &Chain,
    primary: Option<[u8; 32]>,
    cmd: &HaCmd,
) -> anyhow::Result<[u8; 32]> {
    match cmd {
        HaCmd::Demote { to } => resolve_member(chain, to),
        HaCmd::Failback => {
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
        _ => bail!("not a hand-over"),
    }
}

/// `meshward password list`.
pub fn run_password_list(
    g: &Global,
    backend: &mut dyn Backend,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let config = ClusterConfig::from_records(&backend.store()?.mastered_records()?);
    let text = config
        .passwords
        .iter()
        .map(|(u, v)| format!("{u} (mastered version {v})"))
        .collect::<Vec<_>>()
        .join("\n");
    emit(g, out, json!(config.passwords), &text)
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

fn member_name(chain: &Chain, key: &[u8; 32]) -> String {
    chain
        .roster()
        .members
        .iter()
        .find(|m| &m.key == key)
        .map_or_else(|| hex::encode(key), |m| m.address.clone())
}

fn command_line(cmd: &HaCmd) -> String {
    match cmd {
        HaCmd::Demote { to } => format!("ha demote --to {to}"),
        HaCmd::Failback => "ha failback".into(),
        HaCmd::Failover { force } => {
            format!("ha failover{}", if *force { " --force" } else { "" })
        }
        HaCmd::Superseded => "ha superseded".into(),
        HaCmd::MakeStandalone { node } => format!(
            "ha make-standalone{}",
            node.as_ref()
                .map_or(String::new(), |n| format!(" --node {n}"))
        ),
    }
}

/// The command line of an HA or password command, for the HA log (never a password).
pub fn describe(cmd: &crate::cli::Command) -> String {
    use crate::cli::Command;
    match cmd {
        Command::Ha(ha) => command_line(ha),
        Command::Password(PasswordCmd::Change { user }) => format!("password change {user}"),
        _ => String::new(),
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

/// The HA block of `meshward status`: this node's state, and each member's, with liveness
/// from the running node's mesh when there is one.
pub fn status(
    chain: Option<&Chain>,
    primary: Option<[u8; 32]>,
    me: WriterId,
    mesh: Option<&serde_json::Value>,
) -> serde_json::Value {
    let Some(chain) = chain else {
        return json!({"state": "inactive", "role": "standalone"});
    };
    let role = |key: &[u8; 32]| {
        if !chain.roster().contains(key) {
            "inactive"
        } else if *key == chain.leader() {
            "active"
        } else if Some(*key) == primary {
            "demoted"
        } else {
            "standby"
        }
    };
    let members: Vec<serde_json::Value> = chain
        .roster()
        .members
        .iter()
        .map(|m| {
            let id = hex::encode(m.key);
            let peer = mesh.and_then(|mesh| mesh["peers"].get(&id));
            let connected = peer.and_then(|p| p["connected"].as_bool());
            let state = match (m.key == me.0, connected) {
                (false, Some(false)) => "failed",
                _ => role(&m.key),
            };
            json!({
                "id": id, "address": m.address, "state": state,
                "leader": m.key == chain.leader(), "primary": Some(m.key) == primary,
                "connected": connected, "last_seen_ms": peer.map(|p| p["last_seen_ms"].clone()),
                "behind": peer.map(|p| p["behind"].clone()),
            })
        })
        .collect();
    json!({
        "state": role(&me.0),
        "role": if chain.leader() == me.0 { "leader" } else if chain.roster().contains(&me.0) { "follower" } else { "standalone" },
        "epoch": chain.epoch(),
        "leader": member_name(chain, &chain.leader()),
        "primary": primary.map(|p| member_name(chain, &p)),
        "members": members,
    })
}
