//! Scenario files: TOML with kebab-case keys and human durations (`"500ms"`, `"10m"`).
//!
//! The same file drives both modes. See `simulations/README.md` for the format with an
//! example of every key; [`Scenario::parse`] refuses unknown keys, so a typo is an error, not
//! a silently ignored setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use meshward_crdt::mastered::MAX_ROSTER_MEMBERS;
use serde::{Deserialize, Serialize};

/// Shortest failover retry interval (a zero interval would retry forever at one instant).
const MIN_RETRY: Duration = Duration::from_millis(10);
/// Most nodes a scenario may have. Up to [`MAX_ROSTER_MEMBERS`] they form one cluster with a
/// genesis roster of all of them; beyond, they replicate without a mastered chain.
pub const MAX_NODES: usize = 20_000;
/// Largest scenario file read (the shipped ones are under 4 KiB).
pub const MAX_SCENARIO_FILE: u64 = 1024 * 1024;

/// A scenario: nodes, network, writes and faults.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Default seed (`--seed` overrides it).
    #[serde(default)]
    pub seed: u64,
    /// Virtual time during which writes and faults are scheduled.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// After `duration`, how long the run may go on for the live nodes to converge before the
    /// convergence oracle fails. Default 60 s.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Nodes start at random times within this span, as independently started daemons do
    /// (their sync timers are then not in step). Default 1 s.
    #[serde(default = "default_start_spread", with = "humantime_serde")]
    pub start_spread: Duration,
    /// The node tick (timers resolve to it). Default 50 ms, as the daemon's.
    #[serde(default = "default_tick", with = "humantime_serde")]
    pub tick: Duration,
    /// Which nodes connect to which.
    #[serde(default)]
    pub topology: Topology,
    /// The gossip model.
    #[serde(default)]
    pub gossip: GossipModel,
    /// The network model.
    #[serde(default)]
    pub network: Network,
    /// Scheduled local writes.
    #[serde(default, rename = "write")]
    pub writes: Vec<Writes>,
    /// Scheduled faults.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

/// Which nodes hold a connection to which.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Topology {
    /// Each node dials this many random other nodes (so it has at least that many
    /// connections); 0 means every node dials every other (a full mesh, as the daemon does
    /// with a small roster). Default 0.
    #[serde(default)]
    pub degree: usize,
}

/// The gossip layer: a gossipsub-like relay over the connections. Keys left out take their
/// defaults.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct GossipModel {
    /// Mesh peers per node (gossipsub `D`). Default 5, the transport's `large_mesh` preset.
    pub mesh_n: usize,
    /// Below this the heartbeat grafts more (`D_low`). Default 4.
    pub mesh_n_low: usize,
    /// Above this the heartbeat prunes (`D_high`). Default 8.
    pub mesh_n_high: usize,
    /// Publish own messages to every connected peer, not only the mesh. Default true.
    pub flood_publish: bool,
    /// Mesh maintenance interval. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long a message id is remembered to drop duplicates (gossipsub
    /// `duplicate_cache_time`). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub seen_ttl: Duration,
    /// Gossipsub v1.2 IDONTWANT, as the transport sends it: a node that receives a message
    /// larger than `idontwant-threshold` bytes tells its other mesh peers at once (before
    /// validating it), and a peer that has heard so does not forward or publish it to that
    /// node. Default true.
    pub idontwant: bool,
    /// Messages of at most this many bytes get no IDONTWANT. Default 256, the transport's
    /// `GossipConfig::idontwant_threshold`.
    pub idontwant_threshold: usize,
    /// How long a node takes from receiving a gossip message to forwarding it: the daemon's
    /// core applies and persists it before reporting it valid. The model's core applies it at
    /// once (its rows count as held on arrival); only the forward waits. Default 0.
    #[serde(with = "humantime_serde")]
    pub validation: Duration,
}

impl Default for GossipModel {
    fn default() -> Self {
        // The transport's large-mesh preset (`GossipConfig::large_mesh`).
        GossipModel {
            mesh_n: 5,
            mesh_n_low: 4,
            mesh_n_high: 8,
            flood_publish: true,
            heartbeat: Duration::from_secs(1),
            seen_ttl: Duration::from_secs(60),
            idontwant: true,
            idontwant_threshold: 256,
            validation: Duration::ZERO,
        }
    }
}

/// One-way latency: a fixed duration (`"20ms"`) or a uniform range (`["10ms", "50ms"]`).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Latency {
    /// Always this.
    Fixed(#[serde(with = "humantime_serde")] Duration),
    /// Uniform in `[lo, hi]`, drawn per message.
    Uniform(
        #[serde(with = "humantime_serde")] Duration,
        #[serde(with = "humantime_serde")] Duration,
    ),
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed(Duration::from_millis(1))
    }
}

/// The network model.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Network {
    /// Latency between nodes of the same site (or all nodes without sites). Default 1 ms.
    #[serde(default)]
    pub latency: Latency,
    /// Share of gossip messages lost (dropped). On sync requests and answers, which travel on
    /// a reliable stream, a loss costs one retransmission timeout instead. Default 0.
    #[serde(default)]
    pub loss: f64,
    /// Share of gossip messages delivered twice. Default 0.
    #[serde(default)]
    pub duplicate: f64,
    /// Share of messages held back by an extra delay up to `reorder-delay`, so later ones
    /// overtake them. Default 0.
    #[serde(default)]
    pub reorder: f64,
    /// Largest extra delay of a reordered message. Default 50 ms.
    #[serde(default = "default_reorder_delay", with = "humantime_serde")]
    pub reorder_delay: Duration,
    /// Upload cap per node in bytes per second (each node's sends queue behind each other).
    /// Default: none.
    #[serde(default)]
    pub bandwidth: Option<u64>,
    /// How long a connection whose packets do not get through (a cut link, a crashed peer)
    /// stays up before both ends see it closed: the QUIC idle timeout. Default 10 s.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Sites: named groups of nodes. Nodes in no site are in the first one.
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
    /// Latency between sites (both directions); pairs not listed use `latency`.
    #[serde(default, rename = "wan")]
    pub wans: Vec<Wan>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency: Latency::default(),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: default_reorder_delay(),
            bandwidth: None,
            idle_timeout: default_idle(),
            sites: Vec::new(),
            wans: Vec::new(),
        }
    }
}

/// A site.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Site {
    /// Its name.
    pub name: String,
    /// Its nodes.
    pub nodes: Nodes,
}

/// The latency between two sites.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Wan {
    /// The two sites, by name.
    pub between: [String; 2],
    /// One-way latency.
    pub latency: Latency,
}

/// A set of nodes: `"all"`, a list of indices `[0, 1, 2]`, or a range `"3..5"` (end excluded).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Nodes {
    /// Indices.
    List(Vec<usize>),
    /// `"all"` or `"A..B"`.
    Named(String),
}

impl Nodes {
    /// The indices, checked against `n` nodes.
    pub fn resolve(&self, n: usize) -> anyhow::Result<Vec<usize>> {
        let out = match self {
            Nodes::List(v) => v.clone(),
            Nodes::Named(s) if s == "all" => (0..n).collect(),
            Nodes::Named(s) => {
                let (a, b) = s.split_once("..").with_context(|| {
                    format!("node set {s:?}: write \"all\", \"A..B\" or a list")
                })?;
                let a: usize = a
                    .trim()
                    .parse()
                    .with_context(|| format!("node set {s:?}"))?;
                let b: usize = b
                    .trim()
                    .parse()
                    .with_context(|| format!("node set {s:?}"))?;
                (a..b).collect()
            }
        };
        if let Some(bad) = out.iter().find(|&&i| i >= n) {
            bail!("node {bad} does not exist; the scenario has {n} nodes (0..{n})");
        }
        Ok(out)
    }
}

/// A series of local writes: `count` commits, one every `every` from `at`, each of `rows`
/// events, on `nodes` (each commit on the next node of the set, round robin).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Writes {
    /// First commit.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// Interval between commits. Default 100 ms.
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
    /// Commits.
    pub count: u64,
    /// Events per commit. Default 1.
    #[serde(default = "one")]
    pub rows: u64,
    /// Writing nodes. Default all.
    #[serde(default = "all")]
    pub nodes: Nodes,
}

/// A scheduled fault.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawFault")]
pub struct Fault {
    /// When.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
}

/// A fault as written: `at`, and the kind's keys (parsed strictly by [`FaultKind`]; serde's
/// `flatten` would let unknown keys through).
#[derive(Deserialize)]
struct RawFault {
    #[serde(with = "humantime_serde")]
    at: Duration,
    #[serde(flatten)]
    rest: toml::Table,
}

impl Serialize for Fault {
    /// As written: `at` and the kind's keys in one table.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = toml::Table::try_from(&self.kind).map_err(serde::ser::Error::custom)?;
        table.insert(
            "at".into(),
            toml::Value::String(humantime::format_duration(self.at).to_string()),
        );
        table.serialize(serializer)
    }
}

impl TryFrom<RawFault> for Fault {
    type Error = toml::de::Error;

    fn try_from(raw: RawFault) -> Result<Self, Self::Error> {
        Ok(Fault {
            at: raw.at,
            kind: raw.rest.try_into()?,
        })
    }
}

/// The kinds of faults.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum FaultKind {
    /// Split the nodes into groups that cannot reach each other; nodes in no group form one
    /// more group. Replaces any earlier partition.
    Partition {
        /// The groups.
        groups: Vec<Nodes>,
    },
    /// End every partition and flapping cut.
    Heal {},
    /// Cut the links between `a` and `b` for `down`, then restore them for `up`, `count`
    /// times; other links are untouched.
    Flap {
        /// One side.
        a: Nodes,
        /// The other side.
        b: Nodes,
        /// How long each cut lasts.
        #[serde(with = "humantime_serde")]
        down: Duration,
        /// How long the link is up between cuts.
        #[serde(with = "humantime_serde")]
        up: Duration,
        /// Number of cuts.
        count: u64,
    },
    /// Stop nodes abruptly; their stores are kept.
    Crash {
        /// Which.
        nodes: Nodes,
    },
    /// Start crashed nodes again from their stores.
    Restart {
        /// Which.
        nodes: Nodes,
    },
    /// Restart nodes one at a time: each is down for `down`, the next goes down `every`
    /// after the previous one did.
    RollingRestart {
        /// Which, in order.
        nodes: Nodes,
        /// Downtime of each.
        #[serde(with = "humantime_serde")]
        down: Duration,
        /// Interval between two nodes going down.
        #[serde(with = "humantime_serde")]
        every: Duration,
    },
    /// Run `meshward ha failover` on `node` (the core's failover input): it asks the members
    /// for endorsements and leads the next epoch if a strict majority gives them. A refusal
    /// (the leader still heard, a minority side) is retried every `retry` until the node
    /// leads, is down, or follows a leader of a later epoch elected elsewhere.
    Failover {
        /// The candidate.
        node: usize,
        /// Interval between attempts. Default 1 s; at least 10 ms.
        #[serde(default = "default_retry", with = "humantime_serde")]
        retry: Duration,
    },
    /// Keep a copy of the nodes' stores as they are now (one copy per node; a later snapshot
    /// replaces it): the operator's backup of a data directory.
    Snapshot {
        /// Which.
        nodes: Nodes,
    },
    /// Stop the nodes and start them again from their snapshot: a node restarted from an old
    /// copy of its data, which forgets every record and vote it made since.
    Restore {
        /// Which.
        nodes: Nodes,
    },
    /// A mastered write on `node` (`meshward config set`): applied if it leads the epoch its
    /// chain is in, refused otherwise; the report lists the answer.
    Master {
        /// The writer.
        node: usize,
        /// Write a revocation (`meshward cert revoke`: a record that takes access away)
        /// instead of a config setting. Default false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        revoke: bool,
    },
    /// `meshward ha make-standalone --node TARGET` on the leader `node`: the roster record
    /// removing `target` fixes the frontier of its segments as `node` holds them. The model
    /// network still carries `target`'s messages, and it goes on writing with its key: every
    /// other node must refuse its rows beyond the frontier (oracle `rows-beyond-frontier`),
    /// and come to hold those within it. `target` no longer counts among the live nodes that
    /// must converge.
    Remove {
        /// The leader.
        node: usize,
        /// The node removed.
        target: usize,
    },
    /// `meshward credential rotate ACCOUNT` on `node`: a rotation row in its shared
    /// `rotations` table, made from what the node holds (its HLC, what it has seen). The
    /// oracle checks that no acknowledged rotation is lost and that every live node names the
    /// same current rotation at the end.
    Rotate {
        /// The node that rotates.
        node: usize,
        /// The account, `NS/DEVICE/ACCOUNT` (default `sim/db-01/root`).
        #[serde(default = "default_account")]
        account: String,
    },
    /// `meshward ha demote --to TO` on `node`: a planned hand-over, signed once a majority, `to`
    /// included, endorsed it; the report lists the answer.
    Demote {
        /// The leader.
        node: usize,
        /// The next leader.
        to: usize,
    },
    /// The power goes on the nodes during their next store writes (after a random number of
    /// page writes and syncs): each stops, its disk keeps what was synced plus any subset of
    /// the unsynced writes, the last one torn; it starts again `down` later. Every write it
    /// acknowledged must still be there.
    PowerLoss {
        /// Which.
        nodes: Nodes,
        /// How long each stays down.
        #[serde(with = "humantime_serde")]
        down: Duration,
    },
    /// The nodes' disks are full for `lasts`: every store write fails with ENOSPC, and the
    /// node holds replication as the daemon does (README "A full disk").
    DiskFull {
        /// Which.
        nodes: Nodes,
        /// How long.
        #[serde(with = "humantime_serde")]
        lasts: Duration,
    },
    /// The nodes' disks fail every read, write and sync with EIO for `lasts`: a node whose
    /// store fails so stops, saying why, and is started again when the disk works again.
    DiskError {
        /// Which.
        nodes: Nodes,
        /// How long.
        #[serde(with = "humantime_serde")]
        lasts: Duration,
    },
    /// Set the clock offset of nodes (from now on they read virtual time + `offset-ms`).
    Skew {
        /// Which.
        nodes: Nodes,
        /// Offset in milliseconds, may be negative.
        offset_ms: i64,
    },
}

fn default_account() -> String {
    "sim/db-01/root".into()
}

impl FaultKind {
    /// The node set of a kind that acts on one (crash, restart, rolling restart, skew,
    /// snapshot, restore and the disk faults).
    pub fn nodes_mut(&mut self) -> Option<&mut Nodes> {
        match self {
            FaultKind::Crash { nodes }
            | FaultKind::Restart { nodes }
            | FaultKind::RollingRestart { nodes, .. }
            | FaultKind::Skew { nodes, .. }
            | FaultKind::Snapshot { nodes }
            | FaultKind::Restore { nodes }
            | FaultKind::PowerLoss { nodes, .. }
            | FaultKind::DiskFull { nodes, .. }
            | FaultKind::DiskError { nodes, .. } => Some(nodes),
            _ => None,
        }
    }

    /// Short name, used to count fired faults.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Partition { .. } => "partition",
            FaultKind::Heal {} => "heal",
            FaultKind::Flap { .. } => "flap",
            FaultKind::Crash { .. } => "crash",
            FaultKind::Restart { .. } => "restart",
            FaultKind::RollingRestart { .. } => "rolling-restart",
            FaultKind::Failover { .. } => "failover",
            FaultKind::Skew { .. } => "skew",
            FaultKind::Snapshot { .. } => "snapshot",
            FaultKind::Restore { .. } => "restore",
            FaultKind::Master { .. } => "master",
            FaultKind::Demote { .. } => "demote",
            FaultKind::Remove { .. } => "remove",
            FaultKind::Rotate { .. } => "rotate",
            FaultKind::PowerLoss { .. } => "power-loss",
            FaultKind::DiskFull { .. } => "disk-full",
            FaultKind::DiskError { .. } => "disk-error",
        }
    }
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text).context("parsing the scenario")?;
        s.check()?;
        Ok(s)
    }

    /// The scenario as TOML that [`Scenario::parse`] reads back to the same scenario.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("writing the scenario as TOML")
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let Some(bytes) = meshward_node::disk::read_at_most(path, MAX_SCENARIO_FILE)
            .with_context(|| format!("reading scenario {}", path.display()))?
        else {
            bail!(
                "scenario {} is over the limit of {MAX_SCENARIO_FILE} bytes",
                path.display()
            );
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("scenario {} is not UTF-8 text", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("in scenario {}", path.display()))
    }

    fn check(&self) -> anyhow::Result<()> {
        let n = self.nodes;
        ensure!(n >= 1, "a scenario needs at least one node");
        ensure!(
            n <= MAX_NODES,
            "{n} nodes: the simulator runs at most {MAX_NODES} (a cluster's roster holds at \
             most {MAX_ROSTER_MEMBERS}; beyond that a run has no mastered chain)"
        );
        ensure!(!self.tick.is_zero(), "tick must be more than 0");
        let g = &self.gossip;
        ensure!(
            g.mesh_n_low <= g.mesh_n && g.mesh_n <= g.mesh_n_high && g.mesh_n > 0,
            "gossip needs 0 < mesh-n-low <= mesh-n <= mesh-n-high"
        );
        let net = &self.network;
        for (name, p) in [
            ("loss", net.loss),
            ("duplicate", net.duplicate),
            ("reorder", net.reorder),
        ] {
            ensure!(
                (0.0..=1.0).contains(&p),
                "network.{name} is a share between 0 and 1, not {p}"
            );
        }
        ensure!(
            net.bandwidth != Some(0),
            "network.bandwidth must be more than 0"
        );
        for l in std::iter::once(&net.latency).chain(net.wans.iter().map(|w| &w.latency)) {
            if let Latency::Uniform(lo, hi) = l {
                ensure!(lo <= hi, "latency range [{lo:?}, {hi:?}] is empty");
            }
        }
        let mut names = BTreeMap::new();
        for s in &net.sites {
            s.nodes.resolve(n)?;
            ensure!(
                names.insert(s.name.clone(), ()).is_none(),
                "site {:?} is defined twice",
                s.name
            );
        }
        for w in &net.wans {
            for site in &w.between {
                ensure!(names.contains_key(site), "wan names unknown site {site:?}");
            }
        }
        for w in &self.writes {
            ensure!(
                !w.nodes.resolve(n)?.is_empty(),
                "a write series needs nodes"
            );
            ensure!(w.rows >= 1, "a write needs at least one row");
        }
        for f in &self.faults {
            match &f.kind {
                FaultKind::Partition { groups } => {
                    for g in groups {
                        g.resolve(n)?;
                    }
                }
                FaultKind::Heal {} => {}
                FaultKind::Failover { node, retry } => {
                    ensure!(
                        *node < n,
                        "failover names node {node}; the scenario has {n} nodes (0..{n})"
                    );
                    ensure!(
                        *retry >= MIN_RETRY,
                        "failover retry is {retry:?}; use at least {MIN_RETRY:?}"
                    );
                }
                FaultKind::Flap { a, b, count, .. } => {
                    a.resolve(n)?;
                    b.resolve(n)?;
                    ensure!(*count >= 1, "a flap needs count >= 1");
                }
                FaultKind::Crash { .. }
                | FaultKind::Restart { .. }
                | FaultKind::RollingRestart { .. }
                | FaultKind::Skew { .. }
                | FaultKind::Snapshot { .. }
                | FaultKind::Restore { .. }
                | FaultKind::PowerLoss { .. }
                | FaultKind::DiskFull { .. }
                | FaultKind::DiskError { .. } => {
                    if let Some(nodes) = f.kind.clone().nodes_mut() {
                        nodes.resolve(n)?;
                    }
                }
                FaultKind::Master { node, .. } => ensure!(
                    *node < n,
                    "master names node {node}; the scenario has {n} nodes (0..{n})"
                ),
                FaultKind::Rotate { node, account } => {
                    ensure!(
                        *node < n,
                        "rotate names node {node}; the scenario has {n} nodes (0..{n})"
                    );
                    meshward_crdt::rotation::check_address(account)
                        .with_context(|| format!("rotate account {account:?}"))?;
                }
                FaultKind::Demote { node, to } => {
                    ensure!(
                        *node < n && *to < n,
                        "demote names nodes {node} and {to}; the scenario has {n} nodes (0..{n})"
                    );
                    ensure!(
                        node != to,
                        "demote hands over to another node, not to {to} itself"
                    );
                }
                FaultKind::Remove { node, target } => {
                    ensure!(
                        *node < n && *target < n,
                        "remove names nodes {node} and {target}; the scenario has {n} nodes \
                         (0..{n})"
                    );
                    ensure!(
                        node != target,
                        "remove: the leader removes another node, not {target} itself"
                    );
                }
            }
        }
        Ok(())
    }

    /// The site index of every node (0 without sites).
    pub fn site_of(&self) -> anyhow::Result<Vec<usize>> {
        let mut site = vec![0; self.nodes];
        for (i, s) in self.network.sites.iter().enumerate() {
            for n in s.nodes.resolve(self.nodes)? {
                site[n] = i;
            }
        }
        Ok(site)
    }

    /// Latency between sites `a` and `b`.
    pub fn latency_between(&self, a: usize, b: usize) -> &Latency {
        if a == b {
            return &self.network.latency;
        }
        let (na, nb) = (&self.network.sites[a].name, &self.network.sites[b].name);
        self.network
            .wans
            .iter()
            .find(|w| {
                (&w.between[0] == na && &w.between[1] == nb)
                    || (&w.between[0] == nb && &w.between[1] == na)
            })
            .map_or(&self.network.latency, |w| &w.latency)
    }
}

fn default_settle() -> Duration {
    Duration::from_secs(60)
}
fn default_start_spread() -> Duration {
    Duration::from_secs(1)
}
fn default_tick() -> Duration {
    Duration::from_millis(50)
}
fn default_reorder_delay() -> Duration {
    Duration::from_millis(50)
}
fn default_idle() -> Duration {
    Duration::from_secs(10)
}
fn default_retry() -> Duration {
    Duration::from_secs(1)
}
fn default_every() -> Duration {
    Duration::from_millis(100)
}
fn one() -> u64 {
    1
}
fn all() -> Nodes {
    Nodes::Named("all".into())
}

#[cfg(test)]
mod tests;
