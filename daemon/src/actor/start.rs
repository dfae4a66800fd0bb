//! Starting the daemon: resolving the peers, waiting for the store, the sealed stage, the
//! transport, the setup endpoint and both doors of the API, then the actor's loop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meshward_crdt::{ReplicaConfig, WriterId};
use meshward_transport::Transport;
use meshward_transport::setup::{Incoming, SetupServer};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{DiskFull, Lag, Node, Pending, survive};
use crate::api::ApiState;
use meshward_node::bootstrap::Bootstrap;
use meshward_node::core::{Core, CoreConfig, Input};
use meshward_node::join::Admission;
use meshward_node::ops::now_ms;
use meshward_node::setup_gate::SetupGate;
use meshward_node::store::{Identity, Store};
use meshward_node::tail::Tail;

/// Tick period: timers (redial, periodic sync, adverts) resolve to this. 50 ms.
const TICK: Duration = Duration::from_millis(50);
/// Transport events handled together, under one durable commit.
const EVENT_BATCH: usize = 256;
/// How long the daemon waits at start for a command that holds the store to finish.
const BUSY_WAIT: Duration = Duration::from_secs(5);
/// How long resolving a roster member's name may take at start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node that left its cluster serves on, so the API answers the caller who asked,
/// before it starts again as a standalone node.
const LEAVE_GRACE: Duration = Duration::from_millis(500);
/// After the audit head published at a graceful stop: time for its push to leave.
const AUDIT_FLUSH: Duration = Duration::from_millis(300);
/// How `meshward run` runs the node.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The mesh's UDP address; default the one stored by `init`/`join`, else 127.0.0.1:7400.
    pub listen: Option<SocketAddr>,
    /// The setup endpoint's UDP address; default the mesh address with the next port.
    pub setup_listen: Option<SocketAddr>,
    /// Peers to dial at start (IP:PORT or HOST:PORT, resolved at start).
    pub peers: Vec<String>,
    /// The HTTPS admin API's TCP address; off when `None`.
    pub admin_listen: Option<SocketAddr>,
    /// The plain health door's TCP address (`GET /v1/health` only); off when `None`.
    pub health_listen: Option<SocketAddr>,
    /// The node's config file (must exist); `None`: DATA/meshward.toml if there is one.
    pub config: Option<PathBuf>,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(data: &Path, args: &RunOptions) -> anyhow::Result<()> {
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
    let Some(address) = runtime.block_on(serve(data.to_path_buf(), args, peers))? else {
        return Ok(());
    };
    drop(runtime);
    // The leader removed this node at its request: found its own cluster, then start again
    // as that cluster's node (same process id, same arguments).
    let store =
        Store::open(data).with_context(|| format!("opening the store in {}", data.display()))?;
    let left = meshward_node::standalone::become_standalone(data, &store, &address)?;
    drop(store);
    info!(old = %left.old.to_hex(), new = %left.new.to_hex(), "restarting as a standalone node");
    restart()
}

/// Replaces this process with a fresh start of the same program and arguments.
fn restart() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("finding this program to start it again")?;
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(error).context("starting this program again; start it by hand")
}

/// A core on what `store` holds: the replica, the admitted `roster`, the peers it knows.
pub(super) fn core_from(
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

/// Serves until a signal (`None`) or until the leader removed this node at its request
/// (`Some`: its roster address, to found its own cluster with).
async fn serve(
    data: PathBuf,
    args: &RunOptions,
    mut dial: Vec<SocketAddr>,
) -> anyhow::Result<Option<String>> {
    let mut store = open_waiting(&data).await?;
    if let Some(cluster) = meshward_node::standalone::finish_founding(&data, &store)? {
        info!(cluster = %cluster.to_hex(), "finished leaving the cluster: this node runs standalone");
    }
    let (node_config, config_name) = match &args.config {
        Some(file) => (
            meshward_node::config::NodeConfig::load_file(file)?,
            file.display().to_string(),
        ),
        None => (
            meshward_node::config::NodeConfig::load(&data)?,
            "DATA/meshward.toml".to_owned(),
        ),
    };
    store.set_keep_changes(node_config.watch_limits().keep_changes);
    if meshward_node::authority::is_sealed(&data, &store)? {
        drop(store);
        crate::sealed::serve(&data).await?;
        store = open_waiting(&data).await?;
    }
    let identity = store.identity()?;
    // The admin API's external CAs, read before anything listens: a bad file stops the start.
    let external = match node_config.admin_client_ca.clone() {
        Some(path) if args.admin_listen.is_some() => {
            meshward_node::certs::load_ca_file(&data.join(path))
                .with_context(|| format!("admin-client-ca in {config_name}"))?
        }
        _ => Vec::new(),
    };
    let listen = match args.listen {
        Some(listen) => listen,
        None => store
            .setting(meshward_node::authority::LISTEN_SETTING)?
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(meshward_node::authority::default_listen),
    };
    dial.extend(roster_addresses(&store, &identity).await?);
    let roster: BTreeSet<WriterId> = meshward_node::roster::admitted(&store)?;
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
    let setup_tls = crate::setup::tls_identity(&store)?;
    let tail = start_tail(&data)?;
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
        forwards: BTreeMap::new(),
        serving: Default::default(),
        lag: Lag::default(),
        setup: None,
        gate: Arc::new(SetupGate::default()),
        admission: Admission::new(rand::random()),
        admin: None,
        health: None,
        access_cache: None,
        chain_cache: meshward_node::roster::ChainCache::default(),
        disk: DiskFull::default(),
        bootstrap: Bootstrap::new(Vec::new(), 0),
        watchers: Default::default(),
        leaving: None,
        audit: Default::default(),
        tail,
        unwritten: false,
    };
    node.load_mastered()?;
    // The gate knows the current bundle before the setup endpoint listens.
    node.refresh_gate()?;
    let mut setup_rx = None;
    if let Some(tls) = setup_tls {
        let bind = args
            .setup_listen
            .unwrap_or_else(|| meshward_node::authority::setup_listen(listen));
        let (server, rx) = SetupServer::listen(
            bind,
            &tls,
            Arc::new(crate::setup::EndpointGate(node.gate.clone())),
        )
        .with_context(|| {
            format!("starting the setup endpoint on {bind}; give another --setup-listen")
        })?;
        info!(addr = %server.local_addr(), "setup endpoint listening");
        node.setup = Some(server);
        setup_rx = Some(rx);
    }
    for addr in &dial {
        let _ = node.handle.dial(*addr);
    }
    node.bootstrap = Bootstrap::new(dial, now_ms() as u64);
    let (api_tx, mut api_rx) = mpsc::channel(crate::api::JOB_QUEUE);
    let state = ApiState {
        jobs: api_tx,
        watch: crate::api::watch::WatchDoor::new(node_config.watch_limits()),
    };
    let router = crate::api::router(state.clone());
    if let Some(bind) = args.health_listen {
        node.health = Some(crate::api::serve_health(bind, state).await?);
    }
    let (socket, _server) = crate::api::serve_local(&data, router.clone())?;
    if let Some(bind) = args.admin_listen {
        let tls = crate::setup::tls_identity(&node.store)?.context(
            "the admin API needs the node's certificate: run `meshward init` or `join` first",
        )?;
        node.admin = Some(
            crate::admin::spawn(bind, &tls, &external, node_config.admin_limits(), router).await?,
        );
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    info!(writer = %identity.writer().to_hex(), "node running");
    let result = loop {
        let step = tokio::select! {
            biased;
            _ = term.recv() => break Ok(None),
            _ = int.recv() => break Ok(None),
            Some(job) = api_rx.recv() => {
                node.api_job(job);
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
                node.retry_bootstrap();
                node.publish_audit_head(false);
                if let Err(e) = node.refresh_gate() {
                    warn!(error = %format!("{e:#}"), "the setup endpoint's gate keeps its last state");
                }
                node.feed(Input::Tick)
            }
        };
        // A write refused for a full disk is survived (the node recovered); any other
        // failure stops the daemon.
        let step = step.and_then(|()| node.run_served());
        node.check_tail();
        node.publish_watch();
        if let Err(e) = survive(step).and_then(|()| node.check_store()) {
            break Err(e);
        }
        if let Some(address) = node.leaving.take() {
            // Time for the API to send its answer before the process starts again.
            tokio::time::sleep(LEAVE_GRACE).await;
            break Ok(Some(address));
        }
    };
    // A graceful stop publishes the audit head, and gives its push a moment to leave.
    if result.is_ok() && node.publish_audit_head(true) {
        tokio::time::sleep(AUDIT_FLUSH).await;
    }
    // A clean stop after the last write: nothing announced is missing from the store, so the
    // next start need not recover the tail. (Still recovering: it must, next time too.)
    if result.is_ok()
        && node.tail == Tail::Open
        && !node.unwritten
        && let Err(e) = meshward_node::tail::set_open(&node.data, false)
    {
        warn!(error = %e, "the tail stays open: the next start recovers it from the peers");
    }
    let _ = std::fs::remove_file(&socket);
    info!("node stopped");
    result
}

/// Where the tail stands at start ([`meshward_node::tail`]): still open on disk (the node
/// stopped uncleanly while pipelining), it must be recovered from the peers before the node
/// writes; otherwise it is closed, and opened, durably, on the first local write.
fn start_tail(data: &Path) -> anyhow::Result<Tail> {
    if !meshward_node::tail::is_open(data)? {
        return Ok(Tail::Closed);
    }
    #[cfg(feature = "fault-injection")]
    if std::env::var_os("MESHWARD_FAULT_SKIP_TAIL_RECOVERY").is_some() {
        // A deliberately broken node for the kill -9 test: it writes at once.
        warn!("fault injection: the tail is not recovered after an unclean stop");
        return Ok(Tail::Open);
    }
    warn!(
        "this node stopped uncleanly while announcing its writes: local writes wait until \
         every member has answered it"
    );
    Ok(Tail::Recovering)
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
    let Some(chain) = meshward_node::roster::chain(store)? else {
        return Ok(out);
    };
    for member in chain.roster().members.iter().filter(|m| m.key != me) {
        if let Ok(addr) = member.address.parse::<SocketAddr>() {
            out.push(addr);
        } else if meshward_node::authority::address_host(&member.address) != member.address
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
            Err(meshward_node::store::StoreError::Busy { .. })
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
