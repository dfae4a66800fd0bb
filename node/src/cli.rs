//! The `meshward` command line: arguments (clap) and what each command does on the local
//! store. Every command takes `--data DIR` (or `MESHWARD_DATA`) and `--json`.
//!
//! Bad input is refused before the store is touched, with a message naming what was wrong,
//! and a non-zero exit status.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use meshward_crdt::{Op, ReplicaConfig, RowChange};

use crate::store::Store;

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
    /// Leadership and HA: demote, failback, failover, superseded, make-standalone.
    #[command(subcommand)]
    Ha(crate::ha::HaCmd),
    /// Local users' passwords (set by the leader under its policy).
    #[command(subcommand)]
    Password(crate::ha::PasswordCmd),
    /// The node's identity, what its store holds and, with a running daemon, its mesh.
    Status,
    /// Whether the node should take traffic behind a load balancer (exit status 1 if not).
    Health {
        /// Unhealthy when the replication lag's p99 is over this (default 5000).
        #[arg(long)]
        max_lag_ms: Option<u64>,
    },
    /// Run the node: join the mesh and serve the other commands over a local socket.
    Run(RunArgs),
    /// Leader-signed mastered records (until `init`/`join` exist: import a signed bundle).
    #[command(subcommand)]
    Mastered(MasteredCmd),
    /// Admin users and their grants (mastered; written on the leader).
    #[command(subcommand)]
    User(crate::cli_admin::UserCmd),
    /// Admin API client certificates: revoke by serial, list the revoked (mastered).
    #[command(subcommand)]
    Cert(crate::cli_admin::CertCmd),
    /// Write a sealed backup of the node's store (consistent while a daemon runs).
    Backup(crate::cli_admin::BackupArgs),
    /// Restore a sealed backup into --data (a new directory, or --force).
    Restore(crate::cli_admin::RestoreArgs),
    /// Install the MEK of a sealed node (one whose DATA/mek is missing).
    Unseal(crate::sealed::UnsealArgs),
    /// Print the API's OpenAPI document (it is kept in docs/openapi.json).
    #[command(hide = true)]
    Openapi,
    /// Fault hooks for tests and simulations (only in builds with `fault-injection`).
    #[command(subcommand, hide = true)]
    Fault(FaultCmd),
    /// Create a new cluster with this node as its leader (epoch 1); prints the MEK once.
    Init(crate::cluster::InitArgs),
    /// Join a cluster with a joining bundle and the cluster's MEK.
    Join(crate::cluster::JoinArgs),
    /// Joining bundles (leader only).
    #[command(subcommand)]
    Bundle(crate::cluster::BundleCmd),
    /// The cluster licence.
    #[command(subcommand)]
    Licence(crate::cluster::LicenceCmd),
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
    /// (a fresh key outside the roster); `advert` publishes adverts "from" each peer, signed
    /// by us.
    Misbehave {
        /// garbage, oversize, foreign, phantom or advert.
        #[arg(long, value_parser = ["garbage", "oversize", "foreign", "phantom", "advert"])]
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

pub use crate::ops::Backend;
pub use exec::{Door, run};
pub use files::backup;

mod exec;
mod files;
mod render;

/// Runs commands directly on the store in a data directory.
#[derive(Debug)]
pub struct LocalBackend {
    data: PathBuf,
    store: Option<Store>,
    read_only: bool,
}

impl LocalBackend {
    /// A backend for the store in `data` (opened read-write when first needed).
    pub fn new(data: PathBuf) -> Self {
        LocalBackend {
            data,
            store: None,
            read_only: false,
        }
    }

    /// A backend for `request` on the store in `data`: opened read-only when the request only
    /// reads, so it cannot change the store and other readers may hold it at once.
    pub fn for_request(data: PathBuf, request: &meshward_api::Request) -> Self {
        let (_, access) = crate::ops::access::resource(request);
        LocalBackend {
            read_only: access == crate::ops::access::Access::Read,
            ..LocalBackend::new(data)
        }
    }
}

/// Opens the store in `data` read-only. The first command on a new data directory creates the
/// store and the node's identity first, as every command always did.
fn open_for_reading(data: &Path) -> anyhow::Result<Store> {
    let context = || format!("opening the store in {}", data.display());
    if data.join(crate::store::STORE_FILE).is_file() {
        let store = Store::open_read_only(data).with_context(context)?;
        if store.has_identity()? {
            return Ok(store);
        }
    }
    Store::open(data).with_context(context)?.identity()?;
    Store::open_read_only(data).with_context(context)
}

impl Backend for LocalBackend {
    fn store(&mut self) -> anyhow::Result<&Store> {
        if self.store.is_none() {
            let store = if self.read_only {
                open_for_reading(&self.data)?
            } else {
                Store::open(&self.data)
                    .with_context(|| format!("opening the store in {}", self.data.display()))?
            };
            self.store = Some(store);
        }
        self.store.as_ref().context("store not open")
    }

    fn data_dir(&mut self) -> anyhow::Result<PathBuf> {
        Ok(self.data.clone())
    }

    fn commit(&mut self, ops: Vec<Op>) -> anyhow::Result<Vec<RowChange>> {
        let store = self.store()?;
        let identity = store.identity()?;
        let mut replica = store.load_replica(&identity, ReplicaConfig::default())?;
        let effects = replica.commit(now_ms(), ops)?;
        store.persist(&effects)?;
        Ok(effects.rows)
    }
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

/// `meshward config …`: mastered cluster settings (see [`crate::cluster_config`]).
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
    Verify,
}

/// `meshward local …`
#[derive(Debug, Subcommand)]
pub enum LocalCmd {
    /// Set a node-only setting (e.g. fingerprint-enforcement).
    Set {
        /// Setting name.
        name: String,
        /// Value.
        value: String,
    },
    /// Show a node-only setting.
    Get {
        /// Setting name.
        name: String,
    },
}

/// Reads a file of at most `max` bytes; a larger one is refused, naming the file.
pub(crate) fn read_bounded(path: &std::path::Path, max: usize) -> anyhow::Result<Vec<u8>> {
    match crate::disk::read_at_most(path, max as u64)
        .with_context(|| format!("reading {}", path.display()))?
    {
        Some(bytes) => Ok(bytes),
        None => bail!("{} is over the limit of {max} bytes", path.display()),
    }
}

pub use crate::ops::now_ms;

/// The new password of `password change`, read from stdin (one line, bounded).
pub fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead as _, Read as _};
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(crate::core::MAX_PASSWORD as u64 + 2)
        .read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "give the new password on stdin (one line)"
    );
    Ok(password)
}

/// `audit record --stdin`: `actor TAB action TAB target TAB detail` lines, each answered `ack
/// SEQ` once durable. Through a running daemon, lines are sent in batches as they come;
/// without one, the store's group committer writes them.
fn audit_stdin(door: &mut Door, g: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    if !door.daemon() {
        let store = Store::open(&g.data)
            .with_context(|| format!("opening the store in {}", g.data.display()))?;
        return crate::audit::run_stdin_writer(
            store.db()?,
            std::io::BufReader::new(std::io::stdin()),
            out,
        );
    }
    let stdin = std::io::stdin();
    let mut batch = Vec::new();
    let mut flush = |batch: &mut Vec<meshward_api::local::NewAudit>,
                     out: &mut dyn Write|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(batch);
        let reply = door.send(meshward_api::Request::RecordAudit(
            meshward_api::local::RecordAudit { records },
        ))?;
        if let meshward_api::Reply::Recorded(r) = reply {
            for seq in r.first_seq..=r.last_seq {
                writeln!(out, "ack {seq}")?;
            }
            out.flush()?;
        }
        Ok(())
    };
    for line in stdin.lock().lines() {
        let line = line?;
        let mut fields = line.splitn(4, '\t');
        let (Some(actor), Some(action), Some(target)) =
            (fields.next(), fields.next(), fields.next())
        else {
            bail!("a line must be actor TAB action TAB target [TAB detail]: {line:?}");
        };
        batch.push(meshward_api::local::NewAudit {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: fields.next().unwrap_or_default().into(),
        });
        if batch.len() >= 1024 {
            flush(&mut batch, out)?;
        }
    }
    flush(&mut batch, out)
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
