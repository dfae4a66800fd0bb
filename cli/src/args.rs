//! The `meshward` command line's arguments (clap). Every command takes `--data DIR` (or
//! `MESHWARD_DATA`) and `--json`.
//!
//! Bad input is refused before the store is touched, with a message naming what was wrong,
//! and a non-zero exit status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod cluster;
mod credential;

pub use cluster::{BundleCmd, HaCmd, InitArgs, JoinArgs, LicenceCmd};
pub use credential::CredentialCmd;

/// meshward: a gossip-mesh node for clusters of privileged-access-management servers.
#[derive(Debug, Parser)]
#[command(name = "meshward", version, about)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The node's data directory (created on first use).
    #[arg(
        long,
        global = true,
        env = "MESHWARD_DATA",
        default_value = "./meshward-data"
    )]
    pub data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Talk to the node at this URL (`https://HOST:PORT`, its admin API) instead of the
    /// local daemon; needs --cert, --key and --ca.
    #[arg(long, global = true, env = "MESHWARD_REMOTE")]
    pub remote: Option<String>,
    /// With --remote: the client certificate (PEM).
    #[arg(
        long = "cert",
        id = "remote_cert",
        global = true,
        env = "MESHWARD_CERT"
    )]
    pub cert: Option<PathBuf>,
    /// With --remote: its private key (PEM, PKCS#8).
    #[arg(long = "key", id = "remote_key", global = true, env = "MESHWARD_KEY")]
    pub key: Option<PathBuf>,
    /// With --remote: the CA certificate(s) the node's certificate must chain to (PEM).
    #[arg(long = "ca", id = "remote_ca", global = true, env = "MESHWARD_CA")]
    pub ca: Option<PathBuf>,
    /// Log lines on stderr as `text` (coloured only on a terminal) or `json` (one object per
    /// line). Which lines: MESHWARD_LOG (e.g. `debug`, `info,meshward_transport=debug`);
    /// default `info` for `run` and `demo`, `warn` for other commands.
    #[arg(
        long,
        global = true,
        env = "MESHWARD_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The shared event log.
    #[command(subcommand)]
    Event(EventCmd),
    /// Observed host key fingerprints (shared).
    #[command(subcommand)]
    Fingerprint(FingerprintCmd),
    /// User data exceptions (shared).
    #[command(subcommand)]
    Exception(ExceptionCmd),
    /// The node's session audit (local, hash-chained).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Node-only settings (never replicated).
    #[command(subcommand)]
    Local(LocalCmd),
    /// Cluster settings (mastered: the leader writes, every node applies).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Managed tables NS/TABLE/KEY → JSON (mastered: the leader writes, every node reads).
    #[command(subcommand)]
    Table(TableCmd),
    /// Managed accounts' secrets NS/DEVICE/ACCOUNT: set, rotate, reveal, history, conflicts
    /// (shared: any node rotates, also during a partition; sealed under the MEK).
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Leadership and HA: demote, failback, failover, superseded, make-standalone.
    #[command(subcommand)]
    Ha(HaCmd),
    /// Local users' passwords (set by the leader under its policy).
    #[command(subcommand)]
    Password(PasswordCmd),
    /// The node's identity, what its store holds and, with a running daemon, its mesh.
    Status,
    /// Whether the node should take traffic behind a load balancer (exit status 1 if not).
    Health {
        /// Unhealthy when the replication lag's p99 is over this (default 5000).
        #[arg(long)]
        max_lag_ms: Option<u64>,
    },
    /// Follow the node's changes (the watch stream): one line per change, JSON lines with
    /// --json; resumes by itself after an overflow. Needs a running daemon (or --remote).
    Watch {
        /// Comma-separated: events, fingerprints, exceptions, mastered, managed, rotations
        /// (default: all).
        #[arg(long)]
        tables: Option<String>,
        /// Start after this cursor (an `id` printed before, on the same node) or `now`;
        /// default: the current state first, then the changes.
        #[arg(long)]
        from: Option<String>,
        /// Print each event as a JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Run the node: join the mesh and serve the other commands over a local socket.
    Run(RunArgs),
    /// Leader-signed mastered records: import a signed bundle of them (every record verified).
    #[command(subcommand)]
    Mastered(MasteredCmd),
    /// Admin users and their grants (mastered; written on the leader).
    #[command(subcommand)]
    User(UserCmd),
    /// Admin API client certificates: revoke by serial, list the revoked (mastered).
    #[command(subcommand)]
    Cert(CertCmd),
    /// Write a sealed backup of the node's store (consistent while a daemon runs).
    Backup(BackupArgs),
    /// Restore a sealed backup into --data (a new directory, or --force).
    Restore(RestoreArgs),
    /// Install the MEK of a sealed node (one whose DATA/mek is missing).
    Unseal(UnsealArgs),
    /// Print the API's OpenAPI document (it is kept in docs/openapi.json).
    #[command(hide = true)]
    Openapi,
    /// Wait until the node's daemon answers on its local socket (for scripts, after
    /// `meshward run &`); fails after --timeout.
    Wait {
        /// How long to wait, e.g. 30s.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script (the Debian package installs them).
    #[command(hide = true)]
    Completions {
        /// For this shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, meshward(1), as roff (the Debian package installs it).
    #[command(hide = true)]
    Man,
    /// Fault hooks for tests and simulations (only in builds with `fault-injection`).
    #[command(subcommand, hide = true)]
    Fault(FaultCmd),
    /// Create a new cluster with this node as its leader (epoch 1); prints the MEK once.
    Init(InitArgs),
    /// Join a cluster with a joining bundle and the cluster's MEK.
    Join(JoinArgs),
    /// Joining bundles (leader only).
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// The cluster licence.
    #[command(subcommand)]
    Licence(LicenceCmd),
    /// Start a local 3-node demo cluster on 127.0.0.1 (Ctrl-C stops it).
    Demo(crate::demo::DemoArgs),
}

/// `meshward run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// UDP address for the mesh (QUIC), e.g. 127.0.0.1:7400 (port 0: any free port).
    /// Default: the address given to `init`/`join`, else 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// UDP address of the setup endpoint (joins). Default: the mesh address with the next
    /// port (any free port when the mesh port is 0).
    #[arg(long)]
    pub setup_listen: Option<SocketAddr>,
    /// Peers to dial at start, as IP:PORT or HOST:PORT (names are resolved at start); known
    /// peers are redialled anyway.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// TCP address of the HTTPS admin API, e.g. 127.0.0.1:7443 (port 0: any free port; the
    /// bound address is in `status --json` under mesh.admin). Off when not given. Needs a
    /// cluster (`init` or `join`): clients present certificates from `user cert`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// TCP address of a plain-HTTP door that serves only `GET /v1/health` (200, or 503 with
    /// the reasons), with no client certificate, for load balancers, e.g. 127.0.0.1:7480
    /// (port 0: any free port; the bound address is in `status --json` under mesh.health).
    /// Off when not given.
    #[arg(long)]
    pub health_listen: Option<SocketAddr>,
    /// The node's config file (TOML, see meshward.example.toml), which must exist. Default:
    /// DATA/meshward.toml if there is one. The Debian package's unit gives
    /// /etc/meshward/meshward.toml.
    #[arg(long, env = "MESHWARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `meshward mastered …`
#[derive(Debug, Subcommand)]
pub enum MasteredCmd {
    /// Verify and store the records of a signed bundle file.
    Import {
        /// The bundle file.
        file: PathBuf,
    },
}

/// `meshward fault …`
#[derive(Debug, Subcommand)]
pub enum FaultCmd {
    /// Cut this node's links to these peers (writer ids) until `fault heal`.
    Block {
        /// Peers to cut off.
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
    },
    /// Restore every link.
    Heal,
    /// Hold what these peers send (gossip, sync requests and answers) for a one-way delay
    /// before this node sees it, to emulate latency: `--ms 20`, or `--ms 10..50` for a
    /// uniform draw per message (at most 1000); `--ms 0` removes it.
    Delay {
        /// Milliseconds: N or MIN..MAX.
        #[arg(long, value_parser = parse_delay)]
        ms: DelayMs,
        /// Peers (writer ids) whose messages are held.
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
    },
    /// Misbehave towards every peer, to show they refuse and count it: `garbage` publishes
    /// and requests junk bytes and answers the next sync requests with junk; `oversize`
    /// does the same with messages one byte over the peers' limits; `foreign` publishes
    /// another writer's rows re-signed as ours; `phantom` publishes rows of a made-up writer
    /// (a fresh key outside the roster); `stolen` publishes rows continuing the event log of
    /// the node whose key is in DATA/stolen.key (a removed node's key, stolen); `advert`
    /// publishes adverts "from" each peer, signed by us.
    Misbehave {
        /// garbage, oversize, foreign, phantom, stolen or advert.
        #[arg(long, value_parser = ["garbage", "oversize", "foreign", "phantom", "stolen", "advert"])]
        kind: String,
    },
}

/// A one-way delay range for `fault delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayMs {
    /// Shortest delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

fn parse_delay(s: &str) -> Result<DelayMs, String> {
    let bad = || format!("{s:?}: give milliseconds as N or MIN..MAX, e.g. 20 or 10..50");
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let lo: u64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u64 = hi.trim().parse().map_err(|_| bad())?;
    let max = meshward_transport::MAX_DELAY.as_millis() as u64;
    if lo > hi || hi > max {
        return Err(format!(
            "{s:?}: the range must not be empty and at most {max} ms"
        ));
    }
    Ok(DelayMs {
        min: Duration::from_millis(lo),
        max: Duration::from_millis(hi),
    })
}

/// `meshward event …`
#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Append an event written by this node.
    Append {
        /// Event kind: login, logout, session-start, session-end, access-denied,
        /// password-change, config-change, task-run, cluster.
        #[arg(long)]
        kind: String,
        /// Who did it.
        #[arg(long)]
        user: String,
        /// What it was done to.
        #[arg(long)]
        target: String,
        /// Free text.
        #[arg(long, default_value = "")]
        detail: String,
        /// When it happened, unix ms (default: now).
        #[arg(long)]
        at: Option<i64>,
        /// Append this many copies in one commit (the detail gets " #i"); for bulk loads.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        count: u32,
    },
    /// List events from every writer.
    List {
        /// Only events written by this node (64 hex digits).
        #[arg(long)]
        writer: Option<String>,
        /// At or after this time, unix ms.
        #[arg(long)]
        since: Option<i64>,
        /// Before this time, unix ms.
        #[arg(long)]
        until: Option<i64>,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// A host key as the fingerprint commands name it.
#[derive(Debug, Args)]
pub struct HostKey {
    /// The host that presents the key.
    #[arg(long)]
    pub host: String,
    /// ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521 or x509.
    #[arg(long)]
    pub key_type: String,
    /// The fingerprint, e.g. SHA256:….
    #[arg(long)]
    pub fingerprint: String,
}

/// `meshward fingerprint …`
#[derive(Debug, Subcommand)]
pub enum FingerprintCmd {
    /// Record that this node observed a host key.
    Add {
        /// The key.
        #[command(flatten)]
        key: HostKey,
        /// When it was seen, unix ms (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
    /// List fingerprints observed by every node, with the leader's approval.
    List,
    /// What this node does with a host key: approved, unknown or mismatch by the leader's
    /// approvals, and allow, warn or deny by this node's fingerprint-enforcement (`local set`).
    /// Fails when the decision is deny.
    Check {
        /// The key.
        #[command(flatten)]
        key: HostKey,
    },
    /// Approve a host key for the whole cluster (mastered: leader only).
    Approve {
        /// The key.
        #[command(flatten)]
        key: HostKey,
        /// Withdraw the approval instead.
        #[arg(long)]
        withdraw: bool,
    },
}

/// `meshward config …`: mastered cluster settings (see [`meshward_node::cluster_config`]).
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Set a cluster setting (leader only).
    Set {
        /// The setting, e.g. password.min-length or managed.NAME.
        key: String,
        /// Its value.
        value: String,
    },
    /// Return a cluster setting to its default (leader only).
    Unset {
        /// The setting.
        key: String,
    },
    /// Show one setting as this node holds it.
    Get {
        /// The setting.
        key: String,
    },
    /// Show every setting as this node holds it.
    List,
}

/// `meshward table …`: managed tables (see [`meshward_api::managed`]).
#[derive(Debug, Subcommand)]
pub enum TableCmd {
    /// Write a row (leader; a follower's daemon forwards it). Needs admin:NAMESPACE or root.
    Put {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The row key.
        key: String,
        /// The document, JSON (at most 16 KiB).
        document: String,
    },
    /// Delete a row (leader; a follower's daemon forwards it).
    Delete {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The row key.
        key: String,
    },
    /// Show one row as this node holds it.
    Get {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The row key.
        key: String,
    },
    /// List a table's rows (a page; --after the last key shown), or without a table the
    /// namespace's tables.
    List {
        /// The namespace.
        namespace: String,
        /// The table.
        table: Option<String>,
        /// At most this many rows (default 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this key (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
}

/// `meshward exception …`
#[derive(Debug, Subcommand)]
pub enum ExceptionCmd {
    /// Set a user data exception on this node.
    Set {
        /// The user.
        #[arg(long)]
        user: String,
        /// The field.
        #[arg(long)]
        field: String,
        /// The value.
        #[arg(long)]
        value: String,
    },
    /// Remove one of this node's user data exceptions.
    Delete {
        /// The user.
        #[arg(long)]
        user: String,
        /// The field.
        #[arg(long)]
        field: String,
    },
    /// List exceptions of every node.
    List,
}

/// `meshward audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Append one record, or with --stdin one per line (actor TAB action TAB target TAB
    /// detail), answering `ack SEQ` once each is durable.
    Record {
        /// Read records from standard input.
        #[arg(long, conflicts_with_all = ["actor", "action", "target"])]
        stdin: bool,
        /// Who acted.
        #[arg(long, required_unless_present = "stdin")]
        actor: Option<String>,
        /// What was done.
        #[arg(long, required_unless_present = "stdin")]
        action: Option<String>,
        /// What it was done to.
        #[arg(long, required_unless_present = "stdin")]
        target: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// List records.
    List {
        /// First seq to list.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Check the whole chain; names the first altered, removed or reordered record.
    Verify {
        /// Also compare the chain with the head of it each peer holds (signed by this node
        /// into the shared table `audit-heads`): catches a rewritten audit even when its
        /// chain was recomputed. Needs the running daemon; fails when a peer disagrees.
        #[arg(long)]
        against_mesh: bool,
    },
}

/// `meshward local …`
#[derive(Debug, Subcommand)]
pub enum LocalCmd {
    /// Set a node-only setting: fingerprint-enforcement (off, warn or enforce), listen, or a
    /// free label.NAME.
    Set {
        /// Setting name.
        name: String,
        /// Value.
        value: String,
    },
    /// Show a node-only setting (its default when unset).
    Get {
        /// Setting name.
        name: String,
    },
    /// Show every known node-only setting (defaults marked) and the labels set.
    List,
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
    /// Check a user's password (read from stdin, one line) against the hash the leader set,
    /// on this node, also during a partition. Fails (exit 1) when it does not match or has
    /// expired (`password.max-age-days`).
    Verify {
        /// The user.
        user: String,
    },
}

impl RunArgs {
    /// How the daemon runs.
    pub fn options(&self) -> meshward_daemon::RunOptions {
        meshward_daemon::RunOptions {
            listen: self.listen,
            setup_listen: self.setup_listen,
            peers: self.peers.clone(),
            admin_listen: self.admin_listen,
            health_listen: self.health_listen,
            config: self.config.clone(),
        }
    }
}

/// `meshward user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create an admin user, with no grant (leader only).
    Create {
        /// The user name (also the CN of its certificates).
        name: String,
    },
    /// Give a user a grant: root, admin:NS, guest:NS or guest:* (leader only).
    Grant {
        /// The user.
        name: String,
        /// The grant.
        grant: String,
    },
    /// Take a grant back, or without GRANT delete the user (leader only).
    Revoke {
        /// The user.
        name: String,
        /// The grant to take back; omitted: delete the user.
        grant: Option<String>,
    },
    /// List users and their grants.
    List,
    /// Issue a client certificate for the admin API (leader only; needs DATA/mek): writes
    /// DIR/NAME.key (0600), DIR/NAME.crt (CN=NAME, signed by the cluster CA) and DIR/ca.crt
    /// (kept if it holds this CA already), and prints the certificate's serial (for `cert
    /// revoke`).
    Cert {
        /// The user (must exist).
        name: String,
        /// The directory to write to (created 0700 if missing). Existing files, and links, are
        /// refused: nothing is written then.
        #[arg(long)]
        out: PathBuf,
        /// How long the certificate is valid, e.g. 90d.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        valid: std::time::Duration,
    },
}

/// `meshward cert …`
#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Revoke an admin API client certificate by its serial, whichever CA issued it (leader
    /// only); the API refuses it from the next request on, also on open connections.
    Revoke {
        /// The serial in hex, as `user cert` or `openssl x509 -serial` prints it (`:` allowed).
        serial: String,
    },
    /// List the revoked serials.
    Revoked,
}

/// `meshward backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The archive to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The MEK file (default: the node's, DATA/mek).
    #[arg(long)]
    pub mek: Option<PathBuf>,
}

/// `meshward restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive to restore.
    pub file: PathBuf,
    /// The MEK file the archive was sealed with.
    #[arg(long)]
    pub mek: PathBuf,
    /// Replace an existing store (atomically: the old one stays until the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// `meshward unseal`
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The MEK file to install as the node's.
    #[arg(long)]
    pub mek: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_delay_is_n_or_a_range_of_at_most_one_second() {
        let ms = Duration::from_millis;
        assert_eq!(
            parse_delay("20"),
            Ok(DelayMs {
                min: ms(20),
                max: ms(20)
            })
        );
        assert_eq!(
            parse_delay("10..50"),
            Ok(DelayMs {
                min: ms(10),
                max: ms(50)
            })
        );
        for bad in ["", "x", "10..", "..5", "-1", "50..10", "1001", "0..1001"] {
            assert!(parse_delay(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_delay("5000").unwrap_err().contains("at most 1000 ms"));
    }
}
