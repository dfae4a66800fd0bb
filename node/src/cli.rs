//! The `meshward` command line: arguments (clap) and what each command does on the local
//! store. Every command takes `--data DIR` (or `MESHWARD_DATA`) and `--json`.
//!
//! Bad input is refused before the store is touched, with a message naming what was wrong,
//! and a non-zero exit status.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use meshward_crdt::mastered::RecordKind;
use meshward_crdt::{
    Event, EventKind, KeyType, Op, ReplicaConfig, Row, RowChange, TableId, UserDataException,
    WriterId,
};
use serde_json::json;

use crate::audit::{AuditLog, ChainBreak, NewAuditRecord};
use crate::cluster_config::{self, Approval, ClusterConfig, ConfigChange};
use crate::store::{EventFilter, Store};

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

impl Command {
    /// Whether the command only reads the store (lists, `get`s, `status`, `audit verify`,
    /// `backup`, which reads one snapshot, and `unseal`, which writes only the MEK file).
    pub fn reads_only(&self) -> bool {
        use crate::cli_admin::{CertCmd, UserCmd};
        use crate::cluster::LicenceCmd;
        use crate::ha::{HaCmd, PasswordCmd};
        matches!(
            self,
            Command::Event(EventCmd::List { .. })
                | Command::Fingerprint(FingerprintCmd::List)
                | Command::Exception(ExceptionCmd::List)
                | Command::Audit(AuditCmd::List { .. } | AuditCmd::Verify)
                | Command::Local(LocalCmd::Get { .. })
                | Command::Config(ConfigCmd::Get { .. } | ConfigCmd::List)
                | Command::Status
                | Command::User(UserCmd::List)
                | Command::Cert(CertCmd::Revoked)
                | Command::Licence(LicenceCmd::Show)
                | Command::Ha(HaCmd::Superseded)
                | Command::Password(PasswordCmd::List)
                | Command::Backup(_)
                | Command::Unseal(_)
        )
    }

    /// Makes every relative path of the command absolute, against `base` (the caller's working
    /// directory, for a command a daemon runs on the caller's behalf). With no `base`, a
    /// relative path is refused: the error names the argument.
    pub fn resolve_paths(&mut self, base: Option<&Path>) -> Result<(), String> {
        use crate::cluster::{BundleCmd, LicenceCmd};
        let paths: Vec<(&str, &mut PathBuf)> = match self {
            Command::Mastered(MasteredCmd::Import { file }) => vec![("FILE", file)],
            Command::User(crate::cli_admin::UserCmd::Cert { out, .. }) => vec![("--out", out)],
            Command::Backup(args) => {
                let mut paths = vec![("--out", &mut args.out)];
                paths.extend(args.mek.as_mut().map(|m| ("--mek", m)));
                paths
            }
            Command::Restore(args) => vec![("FILE", &mut args.file), ("--mek", &mut args.mek)],
            Command::Unseal(args) => vec![("--mek", &mut args.mek)],
            Command::Join(args) => vec![("--bundle", &mut args.bundle), ("--mek", &mut args.mek)],
            Command::Bundle(BundleCmd::Create { out, .. }) => vec![("--out", out)],
            Command::Licence(LicenceCmd::Install { file }) => vec![("FILE", file)],
            Command::Demo(args) => args
                .dir
                .as_mut()
                .map(|d| ("--dir", d))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        for (name, path) in paths {
            if path.is_relative() {
                match base {
                    Some(base) => *path = base.join(&*path),
                    None => {
                        return Err(format!(
                            "give {name} as an absolute path: this request has no working directory"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
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

/// Where commands run: on the store directly, or inside a running daemon.
pub trait Backend {
    /// The store (opened on first use by the local backend).
    fn store(&mut self) -> anyhow::Result<&Store>;
    /// Commits local writes durably (and in the daemon, announces them to the mesh).
    fn commit(&mut self, ops: Vec<Op>) -> anyhow::Result<Vec<RowChange>>;
    /// Live mesh state, when a daemon runs.
    fn mesh(&mut self) -> Option<serde_json::Value> {
        None
    }
    /// The verified roster changed (the daemon updates admission).
    fn roster_changed(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Writes a mastered record as the leader (and in the daemon, announces it); returns its
    /// version. On a follower the error names the leader.
    fn master(&mut self, kind: RecordKind, payload: Vec<u8>) -> anyhow::Result<u64> {
        let record = crate::roster::write(self.store()?, kind, payload)?;
        self.roster_changed()?;
        Ok(record.record.version)
    }
    /// The verified mastered chain (`None` before any import); the daemon keeps it cached
    /// per stored chain ([`crate::roster::ChainCache`]).
    fn chain(&mut self) -> anyhow::Result<Option<meshward_crdt::mastered::Chain>> {
        Ok(crate::roster::chain(self.store()?)?)
    }
    /// The node's data directory.
    fn data_dir(&mut self) -> anyhow::Result<PathBuf>;
    /// The address the running setup endpoint listens on, when a daemon runs one.
    fn setup_addr(&mut self) -> Option<SocketAddr> {
        None
    }
    /// The replica's counts and digest.
    fn replica_state(&mut self) -> anyhow::Result<(meshward_crdt::Stats, meshward_crdt::Digest)> {
        let store = self.store()?;
        let replica = store.load_replica(&store.identity()?, ReplicaConfig::default())?;
        Ok((replica.stats(), replica.digest()))
    }
    /// Sends crafted bad data to every peer (fault hook); returns how many messages.
    fn misbehave(&mut self, _kind: &str) -> anyhow::Result<u64> {
        bail!("fault hooks need a running daemon built with the `fault-injection` feature")
    }
    /// Cuts links to `peers` (empty: heal), when a daemon with fault hooks runs.
    fn set_blocked(&mut self, _peers: BTreeSet<WriterId>) -> anyhow::Result<()> {
        bail!("fault hooks need a running daemon built with the `fault-injection` feature")
    }
    /// Delays what `peers` send, when a daemon with fault hooks runs.
    fn set_delay(&mut self, _peers: BTreeSet<WriterId>, _delay: DelayMs) -> anyhow::Result<()> {
        bail!("fault hooks need a running daemon built with the `fault-injection` feature")
    }
}

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

    /// A backend for `command` on the store in `data`: opened read-only when the command only
    /// reads ([`Command::reads_only`]), so it cannot change the store and other readers may
    /// hold it at once.
    pub fn for_command(data: PathBuf, command: &Command) -> Self {
        LocalBackend {
            read_only: command.reads_only(),
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

/// Runs a parsed command on `backend`, writing its output to `out`. `run` itself is handled
/// by the binary, not here.
pub fn run(cli: Cli, backend: &mut dyn Backend, out: &mut dyn Write) -> anyhow::Result<()> {
    let g = &cli.global;
    // Parse everything the command needs before the store is opened: bad input changes nothing.
    match cli.command {
        Command::Event(EventCmd::Append {
            kind,
            user,
            target,
            detail,
            at,
            count,
        }) => {
            let kind: EventKind = kind.parse()?;
            let event = Event {
                at_ms: at.unwrap_or_else(now_ms),
                kind,
                user,
                target,
                detail,
            };
            let ops: Vec<Op> = if count == 1 {
                vec![Op::Append(event)]
            } else {
                (0..count)
                    .map(|i| {
                        let mut e = event.clone();
                        e.detail = format!("{} #{i}", e.detail);
                        Op::Append(e)
                    })
                    .collect()
            };
            for op in &ops {
                if let Op::Append(e) = op {
                    Row::Event(e.clone()).validate()?;
                }
            }
            let rows = backend.commit(ops)?;
            let appended: Vec<_> = rows
                .iter()
                .filter_map(|c| match c {
                    RowChange::Appended { key, index, .. } => Some((key, index)),
                    _ => None,
                })
                .collect();
            if let (Some((key, first)), Some((_, last))) = (appended.first(), appended.last()) {
                let text = if appended.len() == 1 {
                    format!(
                        "appended event {first} of segment {} (writer {})",
                        key.segment, key.writer
                    )
                } else {
                    format!("appended {} events (writer {})", appended.len(), key.writer)
                };
                emit(
                    g,
                    out,
                    json!({"writer": key.writer.to_hex(), "segment": key.segment, "index": first, "last_index": last, "count": appended.len()}),
                    &text,
                )?;
            }
        }
        Command::Event(EventCmd::List {
            writer,
            since,
            until,
            kind,
            limit,
        }) => {
            let filter = EventFilter {
                writer: writer
                    .map(|w| w.parse::<WriterId>())
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                since_ms: since,
                until_ms: until,
                kind: kind.map(|k| k.parse()).transpose()?,
                limit,
            };
            let store = backend.store()?;
            let events = store.events(&filter)?;
            if g.json {
                let rows: Vec<_> = events
                    .iter()
                    .map(|e| {
                        json!({
                            "writer": e.writer.to_hex(), "segment": e.segment, "index": e.index,
                            "at_ms": e.event.at_ms, "kind": e.event.kind.as_str(),
                            "user": e.event.user, "target": e.event.target, "detail": e.event.detail,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
            } else {
                for e in &events {
                    writeln!(
                        out,
                        "{} {}/{}/{} {} {} {} {}",
                        e.event.at_ms,
                        e.writer,
                        e.segment,
                        e.index,
                        e.event.kind,
                        e.event.user,
                        e.event.target,
                        e.event.detail.escape_debug()
                    )?;
                }
            }
        }
        Command::Fingerprint(FingerprintCmd::Add {
            key:
                HostKey {
                    host,
                    key_type,
                    fingerprint,
                },
            at,
        }) => {
            let key_type: KeyType = key_type.parse()?;
            let at_ms = at.unwrap_or_else(now_ms);
            Row::Fingerprint(meshward_crdt::Fingerprint {
                host: host.clone(),
                key_type,
                fingerprint: fingerprint.clone(),
                first_seen_ms: at_ms,
                last_seen_ms: at_ms,
            })
            .validate()?;
            let op = Op::ObserveFingerprint {
                host,
                key_type,
                fingerprint,
                at_ms,
            };
            let writer = backend.store()?.identity()?.writer();
            for change in backend.commit(vec![op])? {
                if let meshward_crdt::RowChange::Put {
                    row: Row::Fingerprint(f),
                    ..
                } = change
                {
                    emit(
                        g,
                        out,
                        fingerprint_json(&writer, &f),
                        &format!(
                            "recorded {} {} {} (first seen {}, last seen {})",
                            f.host, f.key_type, f.fingerprint, f.first_seen_ms, f.last_seen_ms
                        ),
                    )?;
                }
            }
        }
        Command::Fingerprint(FingerprintCmd::List) => {
            let rows = backend.store()?.map_rows(TableId::Fingerprints)?;
            let config = ClusterConfig::from_records(&backend.store()?.mastered_records()?);
            list_rows(g, out, rows, |w, row| match row {
                Row::Fingerprint(f) => {
                    let approved = config.approved(&f.host, f.key_type, &f.fingerprint);
                    let mut json = fingerprint_json(w, f);
                    json["approved"] = json!(approved);
                    let text = format!(
                        "{w} {} {} {} {} {}{}",
                        f.host,
                        f.key_type,
                        f.fingerprint,
                        f.first_seen_ms,
                        f.last_seen_ms,
                        if approved { " approved" } else { "" }
                    );
                    (json, text)
                }
                _ => (json!(null), String::new()),
            })?;
        }
        Command::Fingerprint(FingerprintCmd::Approve {
            key:
                HostKey {
                    host,
                    key_type,
                    fingerprint,
                },
            withdraw,
        }) => {
            let key_type: KeyType = key_type.parse()?;
            Row::Fingerprint(meshward_crdt::Fingerprint {
                host: host.clone(),
                key_type,
                fingerprint: fingerprint.clone(),
                first_seen_ms: 0,
                last_seen_ms: 0,
            })
            .validate()?;
            let approval = Approval {
                host,
                key_type,
                fingerprint,
                approved: !withdraw,
            };
            let version = backend.master(RecordKind::FingerprintApproval, approval.encode())?;
            emit(
                g,
                out,
                json!({"host": approval.host, "key_type": key_type.as_str(),
                       "fingerprint": approval.fingerprint, "approved": approval.approved,
                       "version": version}),
                &format!(
                    "{} {} {} {} (mastered version {version})",
                    approval.host,
                    key_type,
                    approval.fingerprint,
                    if approval.approved {
                        "approved"
                    } else {
                        "approval withdrawn"
                    }
                ),
            )?;
        }
        Command::Config(cmd) => run_config(g, cmd, backend, out)?,
        Command::Ha(cmd) => crate::ha::run_ha(g, cmd, backend, out)?,
        Command::Password(crate::ha::PasswordCmd::List) => {
            crate::ha::run_password_list(g, backend, out)?;
        }
        Command::Password(crate::ha::PasswordCmd::Change { .. }) => {
            bail!("password changes talk to the leader: start the node with `meshward run` first")
        }
        Command::Exception(ExceptionCmd::Set { user, field, value }) => {
            let x = UserDataException {
                user,
                field,
                value,
                at_ms: now_ms(),
            };
            Row::Exception(x.clone()).validate()?;
            backend.commit(vec![Op::PutException(x.clone())])?;
            emit(
                g,
                out,
                json!({"user": x.user, "field": x.field, "value": x.value}),
                &format!("set exception {} {}", x.user, x.field),
            )?;
        }
        Command::Exception(ExceptionCmd::Delete { user, field }) => {
            backend.commit(vec![Op::DeleteException {
                user: user.clone(),
                field: field.clone(),
            }])?;
            emit(
                g,
                out,
                json!({"user": user, "field": field, "deleted": true}),
                &format!("deleted exception {user} {field}"),
            )?;
        }
        Command::Exception(ExceptionCmd::List) => {
            let rows = backend.store()?.map_rows(TableId::Exceptions)?;
            list_rows(g, out, rows, |w, row| match row {
                Row::Exception(x) => (
                    json!({"writer": w.to_hex(), "user": x.user, "field": x.field, "value": x.value, "at_ms": x.at_ms}),
                    format!("{w} {} {} {}", x.user, x.field, x.value.escape_debug()),
                ),
                _ => (json!(null), String::new()),
            })?;
        }
        Command::Audit(AuditCmd::Record { stdin: true, .. }) => {
            if backend.mesh().is_some() {
                bail!("audit record --stdin needs the store to itself; stop the daemon first");
            }
            let store = backend.store()?;
            crate::audit::run_stdin_writer(
                store.db()?,
                std::io::BufReader::new(std::io::stdin()),
                out,
            )?;
        }
        Command::Audit(AuditCmd::Record {
            actor,
            action,
            target,
            detail,
            ..
        }) => {
            let record = NewAuditRecord {
                at_ms: now_ms(),
                actor: actor.unwrap_or_default(),
                action: action.unwrap_or_default(),
                target: target.unwrap_or_default(),
                detail,
            };
            record.validate()?;
            let store = backend.store()?;
            let written = AuditLog::append_batch(store.db()?, std::slice::from_ref(&record))?;
            for r in written {
                emit(
                    g,
                    out,
                    json!({"seq": r.seq, "hash": hex::encode(r.hash)}),
                    &format!("recorded audit {} ({})", r.seq, hex::encode(&r.hash[..8])),
                )?;
            }
        }
        Command::Audit(AuditCmd::List { from, limit }) => {
            let store = backend.store()?;
            let records = AuditLog::list(store.reader(), from, limit)?;
            if g.json {
                writeln!(out, "{}", serde_json::to_string(&records.iter().map(|r| json!({
                    "seq": r.seq, "at_ms": r.at_ms, "actor": r.actor, "action": r.action,
                    "target": r.target, "detail": r.detail, "hash": hex::encode(r.hash),
                })).collect::<Vec<_>>())?)?;
            } else {
                for r in &records {
                    writeln!(
                        out,
                        "{} {} {} {} {} {}",
                        r.seq,
                        r.at_ms,
                        r.actor,
                        r.action,
                        r.target,
                        r.detail.escape_debug()
                    )?;
                }
            }
        }
        Command::Audit(AuditCmd::Verify) => {
            let store = backend.store()?;
            let report = AuditLog::verify(store.reader())?;
            let broken = report.first_break.map(|b| {
                let what = match b {
                    ChainBreak::Altered { .. } => "altered",
                    ChainBreak::Removed { .. } => "removed",
                    ChainBreak::Reordered { .. } => "reordered",
                    ChainBreak::Unreadable { .. } => "unreadable",
                    ChainBreak::HeadMismatch { .. } => "head-mismatch",
                };
                (what, b.seq())
            });
            emit(
                g,
                out,
                json!({
                    "intact": report.is_intact(), "verified": report.verified,
                    "first_bad": broken.map(|(what, seq)| json!({"seq": seq, "problem": what})),
                }),
                &match broken {
                    None => format!("audit chain intact: {} records verified", report.verified),
                    Some((what, seq)) => format!(
                        "audit chain broken: record {seq} {what} ({} records before it verified)",
                        report.verified
                    ),
                },
            )?;
            if let Some((what, seq)) = broken {
                bail!("audit chain broken at record {seq} ({what})");
            }
        }
        Command::Local(LocalCmd::Set { name, value }) => {
            backend.store()?.set_setting(&name, &value)?;
            emit(
                g,
                out,
                json!({"name": name, "value": value}),
                &format!("{name} = {value}"),
            )?;
        }
        Command::Local(LocalCmd::Get { name }) => {
            let value = backend.store()?.setting(&name)?;
            emit(
                g,
                out,
                json!({"name": name, "value": value}),
                &format!("{name} = {}", value.as_deref().unwrap_or("(unset)")),
            )?;
        }
        Command::Status => {
            let (stats, digest) = backend.replica_state()?;
            let mesh = backend.mesh();
            let store = backend.store()?;
            let identity = store.identity()?;
            let audit = AuditLog::head(store.reader())?;
            let chain = crate::roster::chain(store)?;
            let primary = store.anchor()?.map(|a| a.genesis_leader);
            let ha = crate::ha::status(chain.as_ref(), primary, identity.writer(), mesh.as_ref());
            let role = ha["role"].as_str().unwrap_or("standalone").to_string();
            let mastered = chain.as_ref().map(|c| {
                json!({
                    "epoch": c.epoch(), "version": c.last_version(),
                    "leader": hex::encode(c.leader()),
                    "leader_address": crate::roster::leader_address(c),
                    "members": c.roster().members.len(),
                })
            });
            // With a daemon whose disk filled up: say so, and what it means.
            let full = mesh
                .as_ref()
                .filter(|m| m["store"]["disk_full"] == true)
                .map_or(String::new(), |m| {
                    format!(
                        "\ndisk full: {} writes refused so far; local writes fail and replicated \
                         changes wait until space is freed in {}",
                        m["store"]["writes_refused"],
                        backend.data_dir().unwrap_or_default().display()
                    )
                });
            let rows: serde_json::Map<_, _> = TableId::ALL
                .iter()
                .map(|t| {
                    (
                        t.as_str().to_string(),
                        json!(stats.rows.get(t).copied().unwrap_or(0)),
                    )
                })
                .collect();
            emit(
                g,
                out,
                json!({
                    "writer": identity.writer().to_hex(), "cluster": identity.cluster.to_hex(),
                    "rows": rows, "segments": stats.segments, "live_segments": stats.live,
                    "sealed_bytes": stats.sealed_bytes,
                    "digest": hex::encode(digest.fingerprint()),
                    "changes": digest.segments.iter().map(|s| s.seq).sum::<u64>(),
                    "tables": TableId::ALL.iter().map(|t| (t.as_str().to_string(), json!({
                        "rows": stats.rows.get(t).copied().unwrap_or(0),
                        "changes": digest.changes(*t),
                        "writers": digest.segments.iter().filter(|s| s.key.table == *t)
                            .map(|s| s.key.writer).collect::<BTreeSet<_>>().len(),
                    }))).collect::<serde_json::Map<_, _>>(),
                    "audit_records": audit.map_or(0, |h| h.seq),
                    "role": role,
                    "ha": ha,
                    "mastered": mastered,
                    "mesh": mesh,
                }),
                &format!(
                    "writer {}\nrole {role}, HA state {}{}\ncluster {}\nrows {}\nsegments {} ({} live, {} sealed bytes)\naudit records {}{full}",
                    identity.writer().to_hex(),
                    ha["state"].as_str().unwrap_or("inactive"),
                    chain.as_ref().map_or(String::new(), |c| format!(
                        " (epoch {}, leader {}, mastered version {})",
                        c.epoch(),
                        crate::roster::leader_address(c),
                        c.last_version()
                    )),
                    identity.cluster.to_hex(),
                    TableId::ALL
                        .iter()
                        .map(|t| format!("{}={}", t, stats.rows.get(t).copied().unwrap_or(0)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    stats.segments,
                    stats.live,
                    stats.sealed_bytes,
                    audit.map_or(0, |h| h.seq),
                ),
            )?;
        }
        Command::User(cmd) => crate::cli_admin::user(g, cmd, backend, out)?,
        Command::Cert(cmd) => crate::cli_admin::cert(g, cmd, backend, out)?,
        Command::Backup(args) => crate::cli_admin::backup(g, args, backend, out)?,
        Command::Restore(args) => crate::cli_admin::restore(g, args, backend, out)?,
        Command::Unseal(args) => {
            if backend.mesh().is_some() {
                bail!("the node is not sealed: its daemon runs");
            }
            let data = backend.data_dir()?;
            crate::sealed::unseal(&data, backend.store()?, &args.mek)?;
            emit(g, out, json!({"unsealed": true}), "unsealed")?;
        }
        Command::Run(_) | Command::Init(_) | Command::Join(_) | Command::Demo(_) => {
            bail!("this command is run by the binary on its own, not through a running node")
        }
        Command::Bundle(cmd) => crate::cluster::run_bundle(cmd, g, backend, out)?,
        Command::Licence(cmd) => crate::cluster::run_licence(cmd, g, backend, out)?,
        Command::Mastered(MasteredCmd::Import { file }) => {
            let bytes = read_bounded(&file, crate::roster::MAX_BUNDLE)?;
            let added = crate::roster::import(backend.store()?, &bytes)?;
            let members = crate::roster::admitted(backend.store()?)?;
            backend.roster_changed()?;
            emit(
                g,
                out,
                json!({"imported": added, "roster": members.iter().map(WriterId::to_hex).collect::<Vec<_>>()}),
                &format!(
                    "imported {added} records; roster has {} members",
                    members.len()
                ),
            )?;
        }
        Command::Fault(FaultCmd::Block { peers }) => {
            let peers = parse_peers(&peers)?;
            let n = peers.len();
            backend.set_blocked(peers)?;
            emit(g, out, json!({"blocked": n}), &format!("blocked {n} peers"))?;
        }
        Command::Fault(FaultCmd::Misbehave { kind }) => {
            let sent = backend.misbehave(&kind)?;
            emit(
                g,
                out,
                json!({"sent": sent}),
                &format!("sent {sent} bad messages"),
            )?;
        }
        Command::Fault(FaultCmd::Heal) => {
            backend.set_blocked(BTreeSet::new())?;
            emit(g, out, json!({"blocked": 0}), "healed")?;
        }
        Command::Fault(FaultCmd::Delay { ms, peers }) => {
            let peers = parse_peers(&peers)?;
            let n = peers.len();
            backend.set_delay(peers, ms)?;
            let (min, max) = (ms.min.as_millis() as u64, ms.max.as_millis() as u64);
            emit(
                g,
                out,
                json!({"delayed": n, "min_ms": min, "max_ms": max}),
                &format!("messages from {n} peers delayed {min}..{max} ms"),
            )?;
        }
    }
    Ok(())
}

/// Writer ids given as hex on the command line.
fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeSet<WriterId>> {
    peers
        .iter()
        .map(|p| p.parse::<WriterId>())
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(anyhow::Error::msg)
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

/// `meshward config …`
fn run_config(
    g: &Global,
    cmd: ConfigCmd,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (key, change) = match cmd {
        ConfigCmd::Set { key, value } => {
            cluster_config::validate(&key, &value)?;
            (key.clone(), ConfigChange::Set { key, value })
        }
        ConfigCmd::Unset { key } => {
            cluster_config::validate_key(&key)?;
            (key.clone(), ConfigChange::Unset { key })
        }
        ConfigCmd::Get { key } => {
            cluster_config::validate_key(&key)?;
            let config = ClusterConfig::from_records(&backend.store()?.mastered_records()?);
            let value = config.get(&key);
            return emit(
                g,
                out,
                json!({"key": key, "value": value}),
                &format!("{key} = {}", value.as_deref().unwrap_or("(unset)")),
            );
        }
        ConfigCmd::List => {
            let config = ClusterConfig::from_records(&backend.store()?.mastered_records()?);
            let all = config.list();
            let text = all
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join("\n");
            return emit(g, out, json!(all), &text);
        }
    };
    let version = backend.master(RecordKind::Config, change.encode())?;
    let value = match &change {
        ConfigChange::Set { value, .. } => Some(value.clone()),
        ConfigChange::Unset { .. } => None,
    };
    emit(
        g,
        out,
        json!({"key": key, "value": value, "version": version}),
        &format!(
            "{key} = {} (mastered version {version})",
            value.as_deref().unwrap_or("(default)")
        ),
    )
}

fn fingerprint_json(w: &WriterId, f: &meshward_crdt::Fingerprint) -> serde_json::Value {
    json!({
        "seen_by": w.to_hex(), "host": f.host, "key_type": f.key_type.as_str(),
        "fingerprint": f.fingerprint, "first_seen_ms": f.first_seen_ms, "last_seen_ms": f.last_seen_ms,
    })
}

fn list_rows(
    g: &Global,
    out: &mut dyn Write,
    rows: Vec<(WriterId, Row)>,
    render: impl Fn(&WriterId, &Row) -> (serde_json::Value, String),
) -> anyhow::Result<()> {
    let rendered: Vec<_> = rows.iter().map(|(w, r)| render(w, r)).collect();
    if g.json {
        let all: Vec<_> = rendered.into_iter().map(|(j, _)| j).collect();
        writeln!(out, "{}", serde_json::Value::Array(all))?;
    } else {
        for (_, line) in rendered {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// Prints `value` as JSON with `--json`, else `text`.
pub(crate) fn emit(
    g: &Global,
    out: &mut dyn Write,
    value: serde_json::Value,
    text: &str,
) -> anyhow::Result<()> {
    if g.json {
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// The wall clock, read only at the edges (here and in the daemon).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_argument_is_resolved_against_the_callers_directory() {
        let cases: &[&[&str]] = &[
            &["mastered", "import", "f"],
            &["user", "cert", "alice", "--out", "f"],
            &["backup", "--out", "f", "--mek", "f"],
            &["restore", "f", "--mek", "f"],
            &["unseal", "--mek", "f"],
            &["join", "--bundle", "f", "--mek", "f", "--address", "a"],
            &["bundle", "create", "--out", "f"],
            &["licence", "install", "f"],
            &["demo", "--dir", "f"],
        ];
        for args in cases {
            let parse = || {
                Cli::try_parse_from(std::iter::once("meshward").chain(args.iter().copied()))
                    .unwrap()
            };
            let mut cli = parse();
            cli.command
                .resolve_paths(Some(Path::new("/caller")))
                .unwrap();
            let text = format!("{:?}", cli.command);
            assert!(text.contains("\"/caller/f\""), "{args:?}: {text}");
            assert!(!text.contains("\"f\""), "{args:?}: {text}");
            let err = parse().command.resolve_paths(None).unwrap_err();
            assert!(err.contains("absolute"), "{args:?}: {err}");
        }
        // Absolute paths are kept as they are, with or without a base.
        let mut cli = Cli::try_parse_from(["meshward", "licence", "install", "/abs/f"]).unwrap();
        cli.command.resolve_paths(None).unwrap();
        cli.command
            .resolve_paths(Some(Path::new("/caller")))
            .unwrap();
        assert!(format!("{:?}", cli.command).contains("\"/abs/f\""));
    }

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
