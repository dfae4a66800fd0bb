//! `meshward run`: the node daemon.
//!
//! One actor task owns the store, the [`Core`] and the transport handle, and runs a single
//! `tokio::select!` loop over, in priority order: shutdown signals, local commands from the
//! control socket, transport events, and the tick. Each input goes to the core, and its
//! outputs are executed by the executor the simulator shares ([`meshward_node::drive`]): the
//! rows to persist are written durably, in one transaction, before anything after them (a
//! forward, a reply) happens; only the push of a local commit leaves just before that write
//! (pipelined: [`meshward_node::tail`] says why that is safe, and what the node does after an
//! unclean stop). Every queue is bounded; the maps of ids waiting
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meshward_crdt::{CommitError, RowChange, WriterId};
use meshward_node::join::wire::{SetupRequest, SetupResponse};
use meshward_transport::setup::{Answer, Incoming, SetupServer, Then};
use meshward_transport::{Event, Handle, MessageId, RequestId, ResponseId};
use serde_json::json;
use tracing::{debug, info, warn};

use meshward_node::bootstrap::Bootstrap;
use meshward_node::core::{Core, Input};
use meshward_node::join::Admission;
use meshward_node::ops::now_ms;
use meshward_node::setup_gate::SetupGate;
use meshward_node::store::{HighWater, PeerEntry, Store};
use meshward_node::tail::Tail;

mod audit_heads;
mod backend;
mod drive;
mod forward;
mod jobs;
mod start;
mod watch;

use start::core_from;
pub use start::{RunOptions, run};

/// Ids waiting for an answer (gossip verdicts, response channels, requests), per map.
const MAX_PENDING: usize = 4096;
/// After a write refused for a full disk, how long the core's replication stays held before
/// the node tries writing replicated data again: 5 s, doubling on each refusal up to
/// [`FULL_RETRY_MAX`]. Each refusal costs a reopen of the store and a rebuild of the core
/// from it, so while the disk stays full this bounds that work to one per hold.
const FULL_RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest hold: replication resumes within a minute of space being freed even when no
/// local write shows it sooner.
const FULL_RETRY_MAX: Duration = Duration::from_secs(60);

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
    /// The last [`meshward_node::core::Output::Done`] nobody waited for (a leader write answered at once).
    done: Option<(u64, Result<u64, String>)>,
    /// Control clients waiting for other nodes (failover, delegation), by core token.
    waiters: BTreeMap<u64, jobs::Waiter>,
    /// Callers waiting for the leader's answer to a forwarded request, by core token.
    forwards: BTreeMap<u64, jobs::Waiter>,
    /// Requests forwarded to this node as the leader, and their answers.
    serving: forward::ServeQueue,
    lag: Lag,
    /// The setup endpoint, when the node was initialised or joined (it has a certificate).
    setup: Option<SetupServer>,
    /// Which certificates may hold a setup connection ([`meshward_node::setup_gate`]).
    gate: Arc<SetupGate>,
    /// Pending join challenges (leader side).
    admission: Admission,
    /// The admin API, when it runs.
    admin: Option<crate::admin::AdminServer>,
    /// The plain health door, when it runs.
    health: Option<crate::api::HealthServer>,
    /// The users and revoked serials for the admin API, keyed by the stored chain's
    /// high-water mark.
    access_cache: Option<(Option<HighWater>, meshward_node::authority::Access)>,
    /// The verified mastered chain, rebuilt only when the stored chain moved (setup requests).
    chain_cache: meshward_node::roster::ChainCache,
    /// Writes refused for a full disk.
    disk: DiskFull,
    /// The `--peer` and roster addresses, dialled again while a member was never reached.
    bootstrap: Bootstrap,
    /// Live watch streams ([`watch`]).
    watchers: watch::Watchers,
    /// Set when the leader removed this node at its own request (`make-standalone`): its
    /// roster address. The daemon then stops and starts again as a standalone node.
    leaving: Option<String>,
    /// Whether announces are pipelined, or the node recovers its tail
    /// ([`meshward_node::tail`]).
    tail: Tail,
    /// A local commit's push went out before its rows were durable, and no write has been
    /// durable since ([`meshward_node::tail`]): should that write fail, peers may hold it.
    unwritten: bool,
    /// When the audit head is published next ([`audit_heads`]).
    audit: audit_heads::AuditPublisher,
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
        meshward_node::roster::load_into(&self.store, &mut self.core, now_ms() as u64)
    }

    fn feed(&mut self, input: Input) -> anyhow::Result<()> {
        self.feed_batch(vec![input])
    }

    /// Feeds inputs to the core, then executes their outputs: every row to persist first,
    /// in one durable transaction (group commit), then the rest (announces, forwards, answers,
    /// replies) in order. Nothing is forwarded or answered before it is durable; a local
    /// commit's push leaves just before the write when pipelined ([`meshward_node::tail`]).
    ///
    /// A write refused for a full disk returns [`Refused`] after the node recovered
    /// ([`Node::recover`]); any other store error is returned as is, and stops the daemon: the
    /// store may be damaged or the disk failing, and a node that cannot tell what it holds
    /// must not go on.
    fn feed_batch(&mut self, inputs: Vec<Input>) -> anyhow::Result<()> {
        // The batch's sync requests (a digest each: small), to answer them again from durable
        // state should the batch's write be refused.
        let asked: Vec<Input> = inputs.iter().filter_map(Input::sync_request_copy).collect();
        match self.run_batch(inputs) {
            Err(e) if self.store.write_refused() => {
                debug!(error = %format!("{e:#}"), "a write was refused for a full disk");
                let announced = self.unwritten;
                self.recover(asked)?;
                let error = meshward_node::disk::full_error(&self.data).to_string();
                if announced {
                    // The push left before the write: peers may hold it, and the node takes
                    // it back from them before it writes again.
                    return Err(Refused(format!(
                        "{error}, but it had already been announced to the mesh and peers \
                         may keep it: check (e.g. list the events) before writing it again"
                    ))
                    .into());
                }
                Err(Refused(error).into())
            }
            other => other,
        }
    }

    /// [`Node::feed_batch`] without the recovery: the shared executor
    /// ([`meshward_node::drive::run`]) with this node as its [`meshward_node::drive::Driver`]
    /// (`actor/drive.rs`).
    fn run_batch(&mut self, inputs: Vec<Input>) -> anyhow::Result<()> {
        meshward_node::drive::run(self, |_, _| {}, inputs.into()).context("the node cannot go on")
    }

    /// A write to the store was durable: if the disk was full, it has space again, and the
    /// core's replication is released at once.
    /// While the node recovers its tail: once every other member answered a sync, it holds
    /// every change of its own any of them held, and writes (pipelined) again.
    fn check_tail(&mut self) {
        if self.tail == Tail::Recovering && !self.core.held() && self.core.tail_recovered() {
            self.tail = Tail::Open;
            info!(
                "every member answered: this node's latest changes are back, local writes resume"
            );
        }
    }

    pub(super) fn wrote(&mut self) {
        self.unwritten = false;
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
        self.watchers.take_views();
        drop(std::mem::replace(&mut self.store, Store::in_memory()?));
        let reopen = || -> anyhow::Result<(Store, Core)> {
            let mut store = Store::open(&self.data)?;
            let config = meshward_node::config::NodeConfig::load(&self.data)?;
            store.set_keep_changes(config.watch_limits().keep_changes);
            let roster = meshward_node::roster::admitted(&store)?;
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
        if std::mem::take(&mut self.unwritten) {
            // What was announced is not in the store: take it back before writing again.
            self.tail = Tail::Recovering;
        }
        self.access_cache = None;
        self.chain_cache = meshward_node::roster::ChainCache::default();
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
            meshward_node::disk::full_error(&self.data)
        );
        self.fail_waiters(&error);
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

    /// Dials the bootstrap addresses again when some roster member was never reached and a
    /// retry is due (see [`meshward_node::bootstrap`]).
    fn retry_bootstrap(&mut self) {
        let unreached = self.core.unreached();
        let connected: BTreeSet<SocketAddr> = self
            .core
            .peers()
            .filter(|(_, p)| p.connected)
            .filter_map(|(_, p)| p.addr)
            .collect();
        let due = self.bootstrap.due(now_ms() as u64, unreached);
        for addr in due.iter().filter(|a| !connected.contains(a)) {
            debug!(%addr, "dialling a bootstrap address again");
            let _ = self.handle.dial(*addr);
        }
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
        let Some(request) = SetupRequest::decode(&request) else {
            let reason = "malformed setup request".to_string();
            let refusal = SetupResponse::Refused {
                reason: reason.clone(),
            };
            let _ = reply.send(Answer {
                bytes: refusal.encode(),
                then: Then::Malformed(reason),
            });
            return;
        };
        let mut admission = std::mem::replace(&mut self.admission, Admission::new([0; 32]));
        let response = meshward_node::ops::setup::serve_setup(
            &mut backend::DaemonBackend::local(self),
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
        let then = match response.ends() {
            None => Then::Next,
            Some(Ok(())) => Then::Done,
            Some(Err(reason)) => Then::Refused(reason.to_string()),
        };
        let _ = reply.send(Answer {
            bytes: response.encode(),
            then,
        });
    }

    /// Gives the setup endpoint's gate the current bundle, and the revoked serials when the
    /// stored chain changed (two small reads otherwise).
    pub(super) fn refresh_gate(&mut self) -> anyhow::Result<()> {
        let bundle = meshward_node::authority::bundle_state(&self.store)?;
        let chain = self.store.mastered_high_water()?;
        let revoked = if self.gate.knows(chain) {
            None
        } else {
            Some(self.admin_access()?.revoked.clone())
        };
        self.gate.update(bundle, chain, revoked);
        Ok(())
    }

    /// The users and revoked serials of the verified mastered chain, folded again only when
    /// the stored chain changed (its high-water mark: the newest record's epoch, version and
    /// hash, one small read), so a request costs no signature checks and no read of the chain.
    fn admin_access(&mut self) -> anyhow::Result<&meshward_node::authority::Access> {
        let key = self.store.mastered_high_water()?;
        let fresh = matches!(&self.access_cache, Some((k, _)) if *k == key);
        if !fresh {
            self.access_cache = Some((key, meshward_node::authority::access(&self.store)?));
        }
        self.access_cache
            .as_ref()
            .map(|(_, access)| access)
            .context("no users view")
    }
}
