//! `meshward run`: the node daemon.
//!
//! One actor task owns the store, the [`Core`] and the transport handle, and runs a single
//! `tokio::select!` loop over, in priority order: shutdown signals, local commands from the
//! control socket, transport events, and the tick. Each input goes to the core; its outputs
//! are executed in order, and [`Output::Persist`] is written durably before anything after it
//! (an announce, a forward, a reply) happens. Every queue is bounded; the maps of ids waiting
//! for an answer are bounded too and evict their oldest entry, counted, when full.
//!
//! # A full disk
//! A write the store refuses because its disk is full does not stop the daemon. The refused
//! transaction changed nothing on disk, but the core may have run ahead of it (it applied
//! what it asked to persist), and redb refuses every later write on the open database. So
//! the node recovers ([`Node::recover`]): whoever asked for the write (a local command) gets
//! the disk-full error; nothing computed from the refused state leaves the node (announces,
//! forwards and sync answers of that batch are not sent; the batch's sync requests are
//! answered again from durable state); the store is reopened and the core rebuilt from it,
//! told which peers are connected, and held ([`Core::set_held`]): it keeps answering peers and
//! commands from what is on disk but drops what peers send. After a while (5 s, doubling up
//! to 60 s while the disk stays full), or as soon as a local write is durable, the hold is
//! released and anti-entropy brings back what was dropped. The refusal is logged once per
//! occurrence and counted (`mesh.store` in `status --json`, `meshward_store_*` in `/metrics`).
//! Any other store failure still stops the daemon.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use meshward_crdt::mastered::RecordKind;
use meshward_crdt::{CommitError, Op, ReplicaConfig, RowChange, WriterId};
use meshward_transport::setup::{Incoming, SetupServer};
use meshward_transport::{Event, Handle, MessageId, RequestId, ResponseId, Transport};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::cli::{Backend, Cli, Command, RunArgs, now_ms, run as run_command};
use crate::control::{ControlReply, ControlRequest, MAX_REQUEST, SOCKET};
use crate::core::{Core, CoreConfig, Input, Output, Secret, Verdict};
use crate::join::Admission;
use crate::setup_gate::SetupGate;
use crate::store::{HighWater, Identity, PeerEntry, Store};

/// Tick period: timers (redial, periodic sync, adverts) resolve to this. 50 ms.
const TICK: Duration = Duration::from_millis(50);
/// Transport events handled together, under one durable commit.
const EVENT_BATCH: usize = 256;
/// Control commands waiting for the actor.
const CONTROL_QUEUE: usize = 64;
/// Ids waiting for an answer (gossip verdicts, response channels, requests), per map.
const MAX_PENDING: usize = 4096;
/// How long the daemon waits at start for a command that holds the store to finish.
const BUSY_WAIT: Duration = Duration::from_secs(5);
/// How long resolving a roster member's name may take at start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a control connection may take to send its request.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After a write refused for a full disk, how long the core's replication stays held before
/// the node tries writing replicated data again: 5 s, doubling on each refusal up to
/// [`FULL_RETRY_MAX`]. Each refusal costs a reopen of the store and a rebuild of the core
/// from it, so while the disk stays full this bounds that work to one per hold.
const FULL_RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest hold: replication resumes within a minute of space being freed even when no
/// local write shows it sooner.
const FULL_RETRY_MAX: Duration = Duration::from_secs(60);

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(data: &Path, args: &RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut peers = Vec::new();
    for peer in &args.peers {
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(peer.as_str())
            .with_context(|| {
                format!("peer address {peer:?} does not resolve; give IP:PORT or HOST:PORT")
            })?
            .collect();
        anyhow::ensure!(
            !addrs.is_empty(),
            "peer address {peer:?} resolves to no address"
        );
        peers.extend(addrs);
    }
    runtime.block_on(serve(data.to_path_buf(), args, peers))
}

/// A map of ids awaiting an answer, bounded: inserting into a full map evicts the oldest.
#[derive(Debug)]
struct Pending<K: Ord + Copy, V> {
    map: BTreeMap<K, V>,
    order: VecDeque<K>,
    evicted: u64,
}

impl<K: Ord + Copy, V> Pending<K, V> {
    fn new() -> Self {
        Pending {
            map: BTreeMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.len() >= MAX_PENDING {
            while let Some(old) = self.order.pop_front() {
                if self.map.remove(&old).is_some() {
                    self.evicted += 1;
                    break;
                }
            }
        }
        self.order.push_back(k);
        self.map.insert(k, v);
        if self.order.len() > 2 * MAX_PENDING {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k)
    }

    /// Forgets every id (not counted as evicted).
    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Writes refused because the disk was full, and the hold on replication that follows.
#[derive(Debug)]
struct DiskFull {
    /// Writes refused since start (each one reopened the store and rebuilt the core).
    writes_refused: u64,
    /// The last write to the store was refused: set on a refusal, cleared when a write is
    /// durable again.
    full: bool,
    /// When the held core tries replicated writes again.
    retry_at: Option<std::time::Instant>,
    /// The next hold's length.
    backoff: Duration,
}

impl Default for DiskFull {
    fn default() -> Self {
        DiskFull {
            writes_refused: 0,
            full: false,
            retry_at: None,
            backoff: FULL_RETRY_MIN,
        }
    }
}

/// A write refused because the disk is full. The node recovered ([`Node::recover`]) and goes
/// on; the requester gets this error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// `result`, with a [`Refused`] write turned into success: the daemon goes on.
fn survive(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.is::<Refused>() => Ok(()),
        other => other,
    }
}

/// The actor's state.
struct Node {
    data: PathBuf,
    store: Store,
    core: Core,
    handle: Handle,
    listen: Option<SocketAddr>,
    gossip: Pending<u64, MessageId>,
    channels: Pending<u64, ResponseId>,
    requests: Pending<RequestId, (WriterId, u64)>,
    next_id: u64,
    next_token: u64,
    committed: Option<(u64, Result<Vec<RowChange>, CommitError>)>,
    /// The last [`Output::Done`] nobody waited for (a leader write answered at once).
    done: Option<(u64, Result<u64, String>)>,
    /// Control clients waiting for other nodes (failover, delegation), by core token.
    waiters: BTreeMap<u64, Waiter>,
    lag: Lag,
    /// The setup endpoint, when the node was initialised or joined (it has a certificate).
    setup: Option<SetupServer>,
    /// Which certificates may hold a setup connection ([`crate::setup_gate`]).
    gate: Arc<SetupGate>,
    /// Pending join challenges (leader side).
    admission: Admission,
    /// The admin API, when it runs.
    admin: Option<crate::admin::AdminServer>,
    /// The users and revoked serials for the admin API, keyed by the stored chain's
    /// high-water mark.
    access_cache: Option<(Option<HighWater>, crate::cli_admin::Access)>,
    /// The verified mastered chain, rebuilt only when the stored chain moved (setup requests).
    chain_cache: crate::roster::ChainCache,
    /// Writes refused for a full disk.
    disk: DiskFull,
}

/// A control client waiting for an [`Output::Done`].
#[derive(Debug)]
struct Waiter {
    reply: oneshot::Sender<ControlReply>,
    json: bool,
    /// The command line, for the HA log.
    command: String,
}

/// Replication lag of applied pushes (commit on the origin → durable here), over the last
/// [`LAG_SAMPLES`] pushes.
#[derive(Debug, Default)]
struct Lag {
    samples: VecDeque<u64>,
    total: u64,
}

/// Pushes the lag percentiles are computed over.
const LAG_SAMPLES: usize = 65_536;

impl Lag {
    fn record(&mut self, us: u64) {
        if self.samples.len() == LAG_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(us);
        self.total += 1;
    }

    fn summary(&self) -> serde_json::Value {
        let mut v: Vec<u64> = self.samples.iter().copied().collect();
        v.sort_unstable();
        let pct = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
        };
        json!({
            "pushes": self.total, "window": v.len(),
            "p50_us": pct(0.5), "p99_us": pct(0.99), "max_us": v.last(),
        })
    }
}

/// The wall clock in microseconds.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Node {
    /// (Re)loads the stored mastered chain into the core, which admits its roster.
    fn load_mastered(&mut self) -> anyhow::Result<()> {
        crate::roster::load_into(&self.store, &mut self.core, now_ms() as u64)
    }

    fn feed(&mut self, input: Input) -> anyhow::Result<()> {
        self.feed_batch(vec![input])
    }

    /// Feeds inputs to the core, then executes their outputs: every [`Output::Persist`] first,
    /// in one durable transaction (group commit), then the rest (announces, forwards, answers,
    /// replies) in order. Nothing is announced or forwarded before it is durable.
    ///
    /// A write refused for a full disk returns [`Refused`] after the node recovered
    /// ([`Node::recover`]); any other store error is returned as is, and stops the daemon: the
    /// store may be damaged or the disk failing, and a node that cannot tell what it holds
    /// must not go on.
    fn feed_batch(&mut self, inputs: Vec<Input>) -> anyhow::Result<()> {
        // The batch's sync requests (a digest each: small), to answer them again from durable
        // state should the batch's write be refused.
        let asked: Vec<Input> = inputs
            .iter()
            .filter_map(|input| match input {
                Input::SyncRequest {
                    peer,
                    channel,
                    data,
                } => Some(Input::SyncRequest {
                    peer: *peer,
                    channel: *channel,
                    data: data.clone(),
                }),
                _ => None,
            })
            .collect();
        match self.run_batch(inputs) {
            Err(e) if self.store.write_refused() => {
                debug!(error = %format!("{e:#}"), "a write was refused for a full disk");
                self.recover(asked)?;
                Err(Refused(crate::disk::full_error(&self.data).to_string()).into())
            }
            other => other,
        }
    }

    /// [`Node::feed_batch`] without the recovery.
    fn run_batch(&mut self, inputs: Vec<Input>) -> anyhow::Result<()> {
        let mut queue = VecDeque::from(inputs);
        while !queue.is_empty() {
            let mut persist = Vec::new();
            let mut rest = Vec::new();
            while let Some(input) = queue.pop_front() {
                self.core.handle(now_ms() as u64, input);
                for output in self.core.drain() {
                    match output {
                        Output::Persist(effects) => persist.push(effects),
                        other => rest.push(other),
                    }
                }
            }
            if !persist.is_empty() {
                if let Err(e) = self.store.persist_all(&persist) {
                    self.unsent(rest);
                    return Err(e).context("persisting replicated data; the node cannot go on");
                }
                self.wrote();
            }
            let mut rest = rest.into_iter();
            while let Some(output) = rest.next() {
                if let Err(e) = self.execute(output, &mut queue) {
                    self.unsent(rest);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Outputs left unexecuted because a write before them failed. They were computed from
    /// state that is not durable, so none is sent; only gossip still gets a verdict, so it
    /// does not wait for one: what would have been accepted is ignored (not forwarded, no
    /// penalty), what was invalid stays rejected.
    fn unsent(&mut self, outputs: impl IntoIterator<Item = Output>) {
        for output in outputs {
            if let Output::Validate { id, verdict } = output
                && let Some(message) = self.gossip.remove(&id)
            {
                let verdict = match verdict {
                    Verdict::Reject => meshward_transport::Verdict::Reject,
                    Verdict::Accept | Verdict::Ignore => meshward_transport::Verdict::Ignore,
                };
                let _ = self.handle.report(message, verdict);
            }
        }
    }

    /// A write to the store was durable: if the disk was full, it has space again, and the
    /// core's replication is released at once.
    fn wrote(&mut self) {
        if self.disk.full {
            self.disk.full = false;
            self.disk.retry_at = None;
            self.disk.backoff = FULL_RETRY_MIN;
            self.core.set_held(now_ms() as u64, false);
            info!(dir = %self.data.display(), "the disk has space again: writes and replication resumed");
        }
    }

    /// Recovers from a write the store refused because its disk is full (see the module doc):
    /// redb refuses every later write on the open database, and the core may hold state that
    /// never reached disk. Reopens the store, rebuilds the core from what is durable (keeping
    /// its counters), tells it which peers are connected, holds its replication (for
    /// [`DiskFull::backoff`]), answers with an error every control client the old core owed
    /// an answer, and lets the new core answer `asked` (sync requests whose answers were
    /// computed from the refused state and not sent). Only failing to reopen the store or to
    /// rebuild the core from it is fatal.
    fn recover(&mut self, asked: Vec<Input>) -> anyhow::Result<()> {
        let now = now_ms() as u64;
        self.disk.writes_refused += 1;
        let hold = self.disk.backoff;
        self.disk.backoff = (hold * 2).min(FULL_RETRY_MAX);
        self.disk.retry_at = Some(std::time::Instant::now() + hold);
        if self.disk.full {
            debug!(refused = self.disk.writes_refused, hold = ?hold, "disk still full: a write was refused again");
        } else {
            self.disk.full = true;
            // warn, not error: the node goes on (see STYLE.md's levels).
            warn!(
                dir = %self.data.display(),
                "disk full: a write was refused; the node goes on serving what is on disk, \
                 refuses local writes and drops replicated changes (anti-entropy brings them \
                 again) until space is freed"
            );
        }
        // Close the refused database before opening the file again (it is locked while open).
        drop(std::mem::replace(&mut self.store, Store::in_memory()?));
        let reopen = || -> anyhow::Result<(Store, Core)> {
            let store = Store::open(&self.data)?;
            let roster = crate::roster::admitted(&store)?;
            let core = core_from(&store, &store.identity()?, roster, now)?;
            Ok((store, core))
        };
        let (store, core) = reopen().with_context(|| {
            format!(
                "reopening the store in {} after a full disk; the node cannot go on",
                self.data.display()
            )
        })?;
        self.store = store;
        self.access_cache = None;
        self.chain_cache = crate::roster::ChainCache::default();
        let old = std::mem::replace(&mut self.core, core);
        self.core.carry_counters(old.counters().clone());
        self.core.set_held(now, true);
        self.load_mastered()?;
        // The old core's requests and tokens mean nothing to the new one.
        self.requests.clear();
        self.committed = None;
        self.done = None;
        let error = format!(
            "{}; the command was not completed: check with `meshward status` and try again",
            crate::disk::full_error(&self.data)
        );
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            self.finish(waiter, Err(error.clone()));
        }
        let mut inputs: Vec<Input> = old
            .peers()
            .filter(|(_, p)| p.connected)
            .filter_map(|(peer, p)| p.addr.map(|addr| Input::Connected { peer: *peer, addr }))
            .collect();
        inputs.extend(asked);
        // The held core persists nothing for these. Should a write be refused anyway, the
        // store says so and the loop recovers again ([`Node::check_store`]), without them.
        if let Err(e) = self.run_batch(inputs) {
            if !self.store.write_refused() {
                return Err(e);
            }
            debug!(error = %format!("{e:#}"), "a write was refused while recovering");
        }
        Ok(())
    }

    /// After each step of the loop: a write refused for a full disk by any path (a command's
    /// own write, the peer book) leaves the store refusing every later write, so recover
    /// before it is used again.
    fn check_store(&mut self) -> anyhow::Result<()> {
        if self.store.write_refused() {
            self.recover(Vec::new())?;
        }
        Ok(())
    }

    /// Releases the core's hold after a full disk once its time has come, so replicated data
    /// is written again (and, if the disk is still full, refused again).
    fn retry_writes(&mut self) {
        if self
            .disk
            .retry_at
            .is_some_and(|at| std::time::Instant::now() >= at)
        {
            self.disk.retry_at = None;
            debug!("trying replicated writes again after a full disk");
            self.core.set_held(now_ms() as u64, false);
        }
    }

    /// Executes one output that is not a persist. Follow-up inputs (a request the transport
    /// could not take) go to `queue`.
    fn execute(&mut self, output: Output, queue: &mut VecDeque<Input>) -> anyhow::Result<()> {
        let writes = matches!(
            output,
            Output::Persist(_)
                | Output::PersistMastered(_)
                | Output::PersistVote { .. }
                | Output::AdoptChain { .. }
                | Output::Superseded(_)
        );
        match output {
            Output::Persist(effects) => self
                .store
                .persist(&effects)
                .context("persisting replicated data; the node cannot go on")?,
            Output::PersistMastered(record) => self
                .store
                .append_mastered(&record)
                .context("persisting a mastered record; the node cannot go on")?,
            Output::PersistVote { epoch, candidate } => self
                .store
                .set_vote(epoch, &candidate)
                .context("persisting an endorsement; the node cannot go on")?,
            Output::AdoptChain {
                from,
                records,
                superseded,
            } => self
                .store
                .replace_mastered(from, &records, &superseded)
                .context("replacing the mastered chain; the node cannot go on")?,
            Output::Superseded(records) => self
                .store
                .add_superseded(&records)
                .context("keeping superseded records; the node cannot go on")?,
            Output::Done { token, result } => match self.waiters.remove(&token) {
                Some(waiter) => self.finish(waiter, result),
                None => self.done = Some((token, result)),
            },
            Output::Roster(roster) => {
                info!(members = roster.len(), "roster changed");
                self.handle.set_roster(roster)?;
            }
            Output::Publish(data) => {
                if let Err(e) = self.handle.publish(data) {
                    debug!(error = %e, "gossip publish dropped");
                }
            }
            Output::Validate { id, verdict } => {
                if let Some(message) = self.gossip.remove(&id) {
                    let verdict = match verdict {
                        Verdict::Accept => meshward_transport::Verdict::Accept,
                        Verdict::Ignore => meshward_transport::Verdict::Ignore,
                        Verdict::Reject => meshward_transport::Verdict::Reject,
                    };
                    let _ = self.handle.report(message, verdict);
                }
            }
            Output::Request {
                peer,
                request,
                data,
            } => match self.handle.request(peer, data) {
                Ok(id) => self.requests.insert(id, (peer, request)),
                Err(e) => {
                    debug!(peer = %peer, error = %e, "sync request not sent");
                    queue.push_back(Input::SyncFailed { peer, request });
                }
            },
            Output::Respond { channel, data } => {
                if let Some(ch) = self.channels.remove(&channel) {
                    let _ = self.handle.respond(ch, data);
                }
            }
            Output::Dial { peer, addr } => {
                debug!(peer = %peer, %addr, "dialling");
                let _ = self.handle.dial(addr);
            }
            Output::Committed { token, result } => self.committed = Some((token, result)),
            Output::Applied { sent_us, .. } => self.lag.record(now_us().saturating_sub(sent_us)),
        }
        if writes {
            self.wrote();
        }
        Ok(())
    }

    /// Turns a transport event into a core input (or handles it here).
    fn on_event(&mut self, event: Event) -> Option<Input> {
        let input = match event {
            Event::Listening { addr } => {
                info!(%addr, "listening");
                self.listen = Some(addr);
                return None;
            }
            Event::Connected { peer, addr } => {
                info!(peer = %peer, %addr, "peer connected");
                let entry = PeerEntry {
                    addresses: vec![addr.to_string()],
                    last_seen_ms: now_ms(),
                };
                if let Err(e) = self.store.remember_peer(&peer.to_hex(), &entry) {
                    warn!(error = %e, "peer book not updated");
                }
                Input::Connected { peer, addr }
            }
            Event::Disconnected { peer } => {
                info!(peer = %peer, "peer disconnected");
                Input::Disconnected { peer }
            }
            Event::Gossip { source, id, data } => {
                self.next_id += 1;
                self.gossip.insert(self.next_id, id);
                Input::Gossip {
                    source,
                    id: self.next_id,
                    data,
                }
            }
            Event::Request {
                peer,
                channel,
                data,
            } => {
                self.next_id += 1;
                self.channels.insert(self.next_id, channel);
                Input::SyncRequest {
                    peer,
                    channel: self.next_id,
                    data,
                }
            }
            Event::Response {
                peer,
                request,
                data,
            } => match self.requests.remove(&request) {
                Some((_, token)) => Input::SyncResponse {
                    peer,
                    request: token,
                    data,
                },
                None => return None,
            },
            Event::RequestFailed {
                peer,
                request,
                reason,
            } => {
                debug!(peer = %peer, reason, "sync request failed");
                match self.requests.remove(&request) {
                    Some((_, token)) => Input::SyncFailed {
                        peer,
                        request: token,
                    },
                    None => return None,
                }
            }
            Event::Refused { peer, reason } => {
                warn!(peer = ?peer.map(|p| p.to_string()), reason, "connection refused");
                return None;
            }
        };
        Some(input)
    }

    /// Answers one request of the setup endpoint.
    fn setup_request(&mut self, incoming: Incoming) {
        let data = self.data.clone();
        let Incoming {
            connection,
            client_cert,
            request,
            reply,
        } = incoming;
        let mut admission = std::mem::replace(&mut self.admission, Admission::new([0; 32]));
        let response = crate::cluster::serve_setup(
            &mut DaemonBackend { node: self },
            &mut admission,
            &data,
            connection,
            client_cert,
            request,
        );
        self.admission = admission;
        if let Err(e) = self.refresh_gate() {
            warn!(error = %format!("{e:#}"), "the setup endpoint's gate keeps its last state");
        }
        let _ = reply.send(response);
    }

    /// Gives the setup endpoint's gate the current bundle, and the revoked serials when the
    /// stored chain changed (two small reads otherwise).
    fn refresh_gate(&mut self) -> anyhow::Result<()> {
        let bundle = crate::cluster::bundle_state(&self.store)?;
        let chain = self.store.mastered_high_water()?;
        let revoked = if self.gate.knows(chain) {
            None
        } else {
            Some(self.admin_access()?.revoked.clone())
        };
        self.gate.update(bundle, chain, revoked);
        Ok(())
    }

    /// Decides an admin API request on the verified users view, then runs its command like a
    /// control job.
    fn admin_job(&mut self, job: crate::admin::AdminJob) {
        use crate::admin::AdminAnswer;
        let decision = self.admin_access().map(|access| {
            crate::admin::check(access, job.cert.as_ref(), &job.need, job.args.as_deref())
        });
        let answer = match decision {
            Err(e) => AdminAnswer::Refused(500, format!("reading the users: {e:#}")),
            Ok(decision) => match decision {
                Err((code, message)) => AdminAnswer::Refused(code, message),
                Ok(()) => match job.args {
                    None => AdminAnswer::Allowed,
                    Some(args) => {
                        let (tx, rx) = oneshot::channel();
                        self.control_job(
                            ControlRequest {
                                args,
                                secret: job.secret,
                                // The API has no working directory: its paths are absolute.
                                cwd: None,
                            },
                            tx,
                        );
                        AdminAnswer::Running(rx)
                    }
                },
            },
        };
        let _ = job.reply.send(answer);
    }

    /// The users and revoked serials of the verified mastered chain, folded again only when
    /// the stored chain changed (its high-water mark: the newest record's epoch, version and
    /// hash, one small read), so a request costs no signature checks and no read of the chain.
    fn admin_access(&mut self) -> anyhow::Result<&crate::cli_admin::Access> {
        let key = self.store.mastered_high_water()?;
        let fresh = matches!(&self.access_cache, Some((k, _)) if *k == key);
        if !fresh {
            self.access_cache = Some((key, crate::cli_admin::access(&self.store)?));
        }
        self.access_cache
            .as_ref()
            .map(|(_, access)| access)
            .context("no users view")
    }

    /// Runs a forwarded command on the live node; commands that wait for other nodes answer
    /// later, when the core is done.
    fn control_job(&mut self, request: ControlRequest, reply: oneshot::Sender<ControlReply>) {
        let args = std::iter::once("meshward".to_string()).chain(request.args);
        let parsed = Cli::try_parse_from(args)
            .map_err(|e| e.to_string())
            .and_then(|mut cli| {
                // The caller's paths, on this daemon's data directory (see `crate::control`).
                cli.command.resolve_paths(request.cwd.as_deref())?;
                cli.global.data = self.data.clone();
                Ok(cli)
            });
        let cli = match parsed {
            Ok(cli) => cli,
            Err(e) => {
                let _ = reply.send(ControlReply {
                    stdout: String::new(),
                    error: Some(e),
                });
                return;
            }
        };
        if !crate::ha::is_async(&cli.command) {
            let _ = reply.send(self.control(cli));
            return;
        }
        let command = crate::ha::describe(&cli.command);
        self.next_token += 1;
        let token = self.next_token;
        let input = match self.async_input(token, cli.command, request.secret) {
            Ok(input) => input,
            Err(e) => {
                let waiter = Waiter {
                    reply,
                    json: cli.global.json,
                    command,
                };
                self.finish(waiter, Err(format!("{e:#}")));
                return;
            }
        };
        self.waiters.insert(
            token,
            Waiter {
                reply,
                json: cli.global.json,
                command,
            },
        );
        if let Err(e) = self.feed(input) {
            warn!(error = %e, "a control command failed");
        }
    }

    fn async_input(
        &self,
        token: u64,
        command: Command,
        secret: Option<Secret>,
    ) -> anyhow::Result<Input> {
        use crate::ha::{HaCmd, PasswordCmd};
        Ok(match command {
            Command::Ha(HaCmd::Failover { force }) => Input::Failover { token, force },
            Command::Ha(cmd @ (HaCmd::Demote { .. } | HaCmd::Failback)) => {
                let chain = self.core.chain().context("this node is not in a cluster")?;
                let primary = self.store.anchor()?.map(|a| a.genesis_leader);
                let next = WriterId(crate::ha::handover_target(chain, primary, &cmd)?);
                Input::Handover { token, next }
            }
            Command::Ha(HaCmd::MakeStandalone { node }) => {
                let node = match node {
                    None => None,
                    Some(name) => {
                        let chain = self.core.chain().context("this node is not in a cluster")?;
                        Some(WriterId(crate::ha::resolve_member(chain, &name)?))
                    }
                };
                Input::Leave { token, node }
            }
            Command::Password(PasswordCmd::Change { user }) => Input::Password {
                token,
                user,
                password: secret.context("give the new password on stdin")?,
            },
            _ => bail!("not a command that waits for other nodes"),
        })
    }

    /// Answers a waiting control client and logs the HA command.
    fn finish(&mut self, waiter: Waiter, result: Result<u64, String>) {
        let epoch = self.core.chain().map_or(0, |c| c.epoch());
        let leader = self
            .core
            .chain()
            .map(crate::roster::leader_address)
            .unwrap_or_default();
        let message = result
            .as_ref()
            .map(|version| {
                format!("done at mastered version {version}; epoch {epoch}, leader {leader}")
            })
            .map_err(Clone::clone);
        if !waiter.command.is_empty() {
            crate::ha::log(
                &self.data,
                &waiter.command,
                message.as_deref().map_err(Clone::clone),
            );
        }
        let reply = match message {
            Ok(text) => ControlReply {
                stdout: if waiter.json {
                    format!(
                        "{}\n",
                        json!({"version": result.unwrap_or(0), "epoch": epoch, "leader": leader})
                    )
                } else {
                    format!("{text}\n")
                },
                error: None,
            },
            Err(error) => ControlReply {
                stdout: String::new(),
                error: Some(error),
            },
        };
        let _ = waiter.reply.send(reply);
    }

    /// Runs a parsed command line on the live node.
    fn control(&mut self, cli: Cli) -> ControlReply {
        if matches!(cli.command, Command::Run(_)) {
            return ControlReply {
                stdout: String::new(),
                error: Some(format!("a daemon already runs on {}", self.data.display())),
            };
        }
        let mut out = Vec::new();
        let result = run_command(cli, &mut DaemonBackend { node: self }, &mut out);
        // Before the answer: a bundle just created is let through at once.
        if let Err(e) = self.refresh_gate() {
            warn!(error = %format!("{e:#}"), "the setup endpoint's gate keeps its last state");
        }
        ControlReply {
            stdout: String::from_utf8_lossy(&out).into_owned(),
            error: result.err().map(|e| format!("{e:#}")),
        }
    }
}

/// Commands run inside the daemon.
struct DaemonBackend<'a> {
    node: &'a mut Node,
}

impl Backend for DaemonBackend<'_> {
    fn store(&mut self) -> anyhow::Result<&Store> {
        Ok(&self.node.store)
    }

    fn chain(&mut self) -> anyhow::Result<Option<meshward_crdt::mastered::Chain>> {
        Ok(self.node.chain_cache.get(&self.node.store)?)
    }

    fn data_dir(&mut self) -> anyhow::Result<PathBuf> {
        Ok(self.node.data.clone())
    }

    fn commit(&mut self, ops: Vec<Op>) -> anyhow::Result<Vec<RowChange>> {
        self.node.next_token += 1;
        let token = self.node.next_token;
        self.node.feed(Input::Commit {
            ops,
            token,
            at_us: now_us(),
        })?;
        match self.node.committed.take() {
            Some((t, result)) if t == token => Ok(result?),
            _ => bail!("the core did not answer the commit"),
        }
    }

    fn mesh(&mut self) -> Option<serde_json::Value> {
        let node = &self.node;
        let peers: serde_json::Map<String, serde_json::Value> = node
            .core
            .peers()
            .map(|(id, p)| (id.to_hex(), json!(p)))
            .collect();
        let m = node.handle.metrics();
        Some(json!({
            "listen": node.listen.map(|a| a.to_string()),
            "peers": peers,
            "core": node.core.counters(),
            "transport": m,
            "lag": node.lag.summary(),
            "pending_evicted": node.gossip.evicted + node.channels.evicted + node.requests.evicted,
            "setup": node.setup.as_ref().map(|s| s.local_addr().to_string()),
            "admin": node.admin.as_ref().map(|a| a.local_addr().to_string()),
            "setup_metrics": node.setup.as_ref().map(SetupServer::metrics),
            "admin_metrics": node.admin.as_ref().map(crate::admin::AdminServer::metrics),
            "join": node.admission.counters(),
            "store": {
                "writes_refused": node.disk.writes_refused,
                "disk_full": node.disk.full,
                "replication_held": node.core.held(),
            },
        }))
    }

    fn setup_addr(&mut self) -> Option<SocketAddr> {
        self.node.setup.as_ref().map(SetupServer::local_addr)
    }

    fn replica_state(&mut self) -> anyhow::Result<(meshward_crdt::Stats, meshward_crdt::Digest)> {
        let replica = self.node.core.replica();
        Ok((replica.stats(), replica.digest()))
    }

    fn roster_changed(&mut self) -> anyhow::Result<()> {
        self.node.load_mastered()?;
        self.node.feed_batch(Vec::new())
    }

    fn master(&mut self, kind: RecordKind, payload: Vec<u8>) -> anyhow::Result<u64> {
        self.node.next_token += 1;
        let token = self.node.next_token;
        self.node.feed(Input::Master {
            token,
            kind,
            payload,
        })?;
        match self.node.done.take() {
            Some((t, result)) if t == token => result.map_err(anyhow::Error::msg),
            _ => bail!("the core did not answer the write"),
        }
    }

    #[cfg(feature = "fault-injection")]
    fn misbehave(&mut self, kind: &str) -> anyhow::Result<u64> {
        use meshward_crdt::{Digest, Head, SegmentKey, SyncItem, SyncMessage, TableId};
        use meshward_transport::Misbehaviour;

        use crate::core::Gossip;
        let node = &mut *self.node;
        let peers: Vec<WriterId> = node
            .core
            .peers()
            .filter(|(_, p)| p.connected)
            .map(|(id, _)| *id)
            .collect();
        let mut sent = 0;
        match kind {
            "garbage" => {
                node.handle.publish(vec![0xab; 1000])?;
                sent += 1;
                for &peer in &peers {
                    node.handle.request(peer, vec![0xcd; 500])?;
                    sent += 1;
                }
                // Answers to the next sync requests (not counted: not sent yet).
                node.handle
                    .misbehave(Misbehaviour::GarbageResponses(peers.len()))?;
            }
            "oversize" => {
                node.handle.misbehave(Misbehaviour::OversizeGossip)?;
                sent += 1;
                for &peer in &peers {
                    node.handle.misbehave(Misbehaviour::OversizeRequest(peer))?;
                    sent += 1;
                }
                node.handle
                    .misbehave(Misbehaviour::OversizeResponses(peers.len()))?;
            }
            "phantom" => {
                // Rows under a made-up identity: a fresh key, not in the roster, signs its own
                // segment. Signature and authorship are valid; the writer is nobody.
                let identity = node.store.identity()?;
                let phantom = ed25519_dalek::SigningKey::from_bytes(&rand::random());
                let mut replica = meshward_crdt::Replica::new(
                    identity.cluster,
                    phantom.clone(),
                    ReplicaConfig::default(),
                );
                let event = meshward_crdt::Event {
                    at_ms: now_ms(),
                    kind: meshward_crdt::EventKind::Login,
                    user: "phantom".into(),
                    target: "nowhere".into(),
                    detail: "written by nobody in the roster".into(),
                };
                let items = replica
                    .commit(now_ms(), vec![meshward_crdt::Op::Append(event)])?
                    .push;
                node.handle.publish(
                    Gossip::Push {
                        origin: replica.writer(),
                        sent_us: 0,
                        message: SyncMessage { items }.encode(),
                    }
                    .encode(),
                )?;
                sent += 1;
            }
            "advert" => {
                // An advert "from" each peer, signed by us: it must not pass for theirs.
                let identity = node.store.identity()?;
                for &peer in &peers {
                    let advert = crate::core::Advert {
                        origin: peer,
                        fingerprint: [0; 32],
                        changes: u64::MAX,
                        mastered: 0,
                        mastered_hash: [0; 32],
                        at_ms: u64::MAX,
                        signature: ed25519_dalek::Signature::from_bytes(&[0; 64]),
                    }
                    .sign(&identity.key, identity.cluster);
                    node.handle.publish(Gossip::Advert(advert).encode())?;
                    sent += 1;
                }
            }
            _ => {
                // Another writer's event segment, re-signed as if we had written it: the
                // signature is valid, the authorship is not.
                let identity = node.store.identity()?;
                let me = identity.writer();
                let (items, _) = node
                    .core
                    .replica()
                    .missing_for(&Digest::default(), usize::MAX)?;
                let Some(SyncItem::Snapshot { head, doc }) = items.into_iter().find(|i| {
                    let k = i.head().head.key;
                    k.writer != me && k.table == TableId::Events
                }) else {
                    bail!("no events of another writer to misuse yet");
                };
                let forged = Head {
                    key: SegmentKey {
                        writer: me,
                        segment: 999,
                        ..head.head.key
                    },
                    ..head.head
                }
                .sign(&identity.key);
                let message = SyncMessage {
                    items: vec![SyncItem::Snapshot { head: forged, doc }],
                }
                .encode();
                node.handle.publish(
                    Gossip::Push {
                        origin: me,
                        sent_us: 0,
                        message,
                    }
                    .encode(),
                )?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    #[cfg(feature = "fault-injection")]
    fn set_delay(
        &mut self,
        peers: BTreeSet<WriterId>,
        delay: crate::cli::DelayMs,
    ) -> anyhow::Result<()> {
        self.node.handle.set_delay(peers, delay.min, delay.max)?;
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    fn set_blocked(&mut self, peers: BTreeSet<WriterId>) -> anyhow::Result<()> {
        let heal = peers.is_empty();
        self.node.handle.set_blocked(peers)?;
        if heal {
            self.node.core.redial_now(now_ms() as u64);
            self.node.feed(Input::Tick)?;
        }
        Ok(())
    }
}

/// A core on what `store` holds: the replica, the admitted `roster`, the peers it knows.
fn core_from(
    store: &Store,
    identity: &Identity,
    roster: BTreeSet<WriterId>,
    now: u64,
) -> anyhow::Result<Core> {
    let replica = store.load_replica(identity, ReplicaConfig::default())?;
    let known = store.known_peers()?;
    Ok(Core::new(
        replica,
        roster,
        CoreConfig::default(),
        rand::random(),
        known,
        now,
    ))
}

async fn serve(data: PathBuf, args: &RunArgs, mut dial: Vec<SocketAddr>) -> anyhow::Result<()> {
    let mut store = open_waiting(&data).await?;
    if crate::sealed::is_sealed(&data, &store)? {
        drop(store);
        crate::sealed::serve(&data).await?;
        store = open_waiting(&data).await?;
    }
    let identity = store.identity()?;
    // The admin API's external CAs, read before anything listens: a bad file stops the start.
    let node_config = crate::config::NodeConfig::load(&data)?;
    let external = match node_config.admin_client_ca.clone() {
        Some(path) if args.admin_listen.is_some() => {
            crate::certs::load_ca_file(&data.join(path))
                .context("admin-client-ca in DATA/meshward.toml")?
        }
        _ => Vec::new(),
    };
    let listen = match args.listen {
        Some(listen) => listen,
        None => store
            .setting(crate::cluster::LISTEN_SETTING)?
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(crate::cluster::default_listen),
    };
    dial.extend(roster_addresses(&store, &identity).await?);
    let roster: BTreeSet<WriterId> = crate::roster::admitted(&store)?;
    if roster.is_empty() {
        warn!("no roster: this node runs standalone and admits no peer");
    }
    let core = core_from(&store, &identity, roster.clone(), now_ms() as u64)?;
    let config = meshward_transport::Config {
        listen,
        ..meshward_transport::Config::default()
    };
    let (handle, mut events) = Transport::spawn(identity.key.to_bytes(), roster.clone(), config)
        .context("starting the mesh transport")?;
    let setup_tls = crate::cluster::tls_identity(&store)?;
    let mut node = Node {
        data: data.clone(),
        store,
        core,
        handle,
        listen: None,
        gossip: Pending::new(),
        channels: Pending::new(),
        requests: Pending::new(),
        next_id: 0,
        next_token: 0,
        committed: None,
        done: None,
        waiters: BTreeMap::new(),
        lag: Lag::default(),
        setup: None,
        gate: Arc::new(SetupGate::default()),
        admission: Admission::new(rand::random()),
        admin: None,
        access_cache: None,
        chain_cache: crate::roster::ChainCache::default(),
        disk: DiskFull::default(),
    };
    node.load_mastered()?;
    // The gate knows the current bundle before the setup endpoint listens.
    node.refresh_gate()?;
    let mut setup_rx = None;
    if let Some(tls) = setup_tls {
        let bind = args
            .setup_listen
            .unwrap_or_else(|| crate::cluster::setup_listen(listen));
        let (server, rx) =
            SetupServer::listen(bind, &tls, node.gate.clone()).with_context(|| {
                format!("starting the setup endpoint on {bind}; give another --setup-listen")
            })?;
        info!(addr = %server.local_addr(), "setup endpoint listening");
        node.setup = Some(server);
        setup_rx = Some(rx);
    }
    for addr in dial {
        let _ = node.handle.dial(addr);
    }
    let socket = data.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    set_private(&socket)?;
    let (control_tx, mut control_rx) = mpsc::channel(CONTROL_QUEUE);
    tokio::spawn(accept(listener, control_tx));
    let (admin_tx, mut admin_rx) = mpsc::channel(crate::admin::JOB_QUEUE);
    if let Some(bind) = args.admin_listen {
        let tls = crate::cluster::tls_identity(&node.store)?.context(
            "the admin API needs the node's certificate: run `meshward init` or `join` first",
        )?;
        node.admin = Some(
            crate::admin::spawn(bind, &tls, &external, node_config.admin_limits(), admin_tx)
                .await?,
        );
    } else {
        drop(admin_tx);
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    info!(writer = %identity.writer().to_hex(), "node running");
    let result = loop {
        let step = tokio::select! {
            biased;
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            Some((request, reply)) = control_rx.recv() => {
                node.control_job(request, reply);
                Ok(())
            }
            Some(job) = admin_rx.recv() => {
                node.admin_job(job);
                Ok(())
            }
            Some(incoming) = next_setup(&mut setup_rx) => {
                node.setup_request(incoming);
                Ok(())
            }
            event = events.recv() => {
                let Some(event) = event else {
                    break Err(anyhow::anyhow!("the mesh transport stopped"));
                };
                // Take whatever else is ready too: one durable commit for the whole batch.
                let mut inputs: Vec<Input> = node.on_event(event).into_iter().collect();
                while inputs.len() < EVENT_BATCH {
                    let Ok(event) = events.try_recv() else { break };
                    inputs.extend(node.on_event(event));
                }
                node.feed_batch(inputs)
            }
            _ = tick.tick() => {
                node.retry_writes();
                if let Err(e) = node.refresh_gate() {
                    warn!(error = %format!("{e:#}"), "the setup endpoint's gate keeps its last state");
                }
                node.feed(Input::Tick)
            }
        };
        // A write refused for a full disk is survived (the node recovered); any other
        // failure stops the daemon.
        if let Err(e) = survive(step).and_then(|()| node.check_store()) {
            break Err(e);
        }
    };
    let _ = std::fs::remove_file(&socket);
    info!("node stopped");
    result
}

/// The next setup request; never ready when the node runs no setup endpoint.
async fn next_setup(rx: &mut Option<mpsc::Receiver<Incoming>>) -> Option<Incoming> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The mesh addresses of the other roster members whose address carries a port (names are
/// resolved, each within [`RESOLVE_TIMEOUT`]); dialled at start.
async fn roster_addresses(store: &Store, identity: &Identity) -> anyhow::Result<Vec<SocketAddr>> {
    let me = identity.key.verifying_key().to_bytes();
    let mut out = Vec::new();
    let Some(chain) = crate::roster::chain(store)? else {
        return Ok(out);
    };
    for member in chain.roster().members.iter().filter(|m| m.key != me) {
        if let Ok(addr) = member.address.parse::<SocketAddr>() {
            out.push(addr);
        } else if crate::cluster::address_host(&member.address) != member.address
            && let Ok(Ok(addrs)) =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&member.address))
                    .await
        {
            out.extend(addrs);
        }
    }
    Ok(out)
}

/// Opens the store, waiting up to [`BUSY_WAIT`] while a one-shot command holds it.
async fn open_waiting(data: &Path) -> anyhow::Result<Store> {
    let deadline = tokio::time::Instant::now() + BUSY_WAIT;
    loop {
        match Store::open(data) {
            Err(crate::store::StoreError::Busy { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                return other.with_context(|| format!("opening the store in {}", data.display()));
            }
        }
    }
}

type ControlJob = (ControlRequest, oneshot::Sender<ControlReply>);

/// Accepts control connections; each reads one bounded request and waits for the actor.
async fn accept(listener: UnixListener, jobs: mpsc::Sender<ControlJob>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or similar: do not spin; try again shortly.
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let jobs = jobs.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, jobs).await {
                debug!(error = %e, "control connection failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, jobs: mpsc::Sender<ControlJob>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
    tokio::time::timeout(CONTROL_READ_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .context("control request timed out")??;
    let reply = match serde_json::from_slice::<ControlRequest>(&line) {
        Err(e) => ControlReply {
            stdout: String::new(),
            error: Some(format!("malformed control request: {e}")),
        },
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            jobs.send((request, tx)).await.context("the node stopped")?;
            rx.await.context("the node stopped")?
        }
    };
    let mut bytes = serde_json::to_vec(&reply)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    Ok(())
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // bind(2) creates the socket with the umask's mode; restrict it at once.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}
