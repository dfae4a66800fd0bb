//! A mastered chain of 100 000 managed rows: the time a node takes to be ready again after a
//! restart, and the time a fresh node takes to join (receive the chain from a peer until it
//! holds the same view).
//!
//! `cargo bench -p meshward-node --bench chain` (`MESHWARD_BENCH_ROWS` overrides the default
//! of 100 000 rows).
//!
//! - build: the leader signs every row as its own record (real ed25519 keys, verified like
//!   any record) and stores them 1 000 records per durable transaction, with a checkpoint
//!   every `CHECKPOINT_EVERY` records as a leader writes them; not the figure of interest,
//!   printed for scale.
//! - restart, measured in a fresh child process (three runs): open the store, then what
//!   `meshward run` does with the chain before serving (the admitted roster, the core with its
//!   replica, the stored chain loaded into it, the daemon's chain cache), then the first admin
//!   request's users and revocations ([`meshward_node::authority::access`]).
//! - join: a fresh node holding the genesis only (as `meshward join` leaves it) and the leader,
//!   both real [`Core`]s over real redb stores, driven by the production output executor
//!   ([`meshward_node::drive`]), their requests and answers handed over in process (no
//!   network): timed until the joiner's store holds the leader's high-water mark and the same
//!   managed rows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use meshward_crdt::mastered::{CHECKPOINT_EVERY, ManagedChange, Member, RecordKind};
use meshward_crdt::{ClusterId, Effects, ReplicaConfig};
use meshward_node::core::{Core, CoreConfig, Input, Output};
use meshward_node::drive::{self, Driver};
use meshward_node::roster::{self, ChainCache, MasteredBundle};
use meshward_node::store::Store;

const CHILD: &str = "MESHWARD_BENCH_CHAIN_DIR";

/// Records per durable transaction while building the chain.
const BATCH: usize = 1_000;

fn rows_from_env() -> usize {
    std::env::var("MESHWARD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// A managed row change: host `i` of namespace `pam`, a small JSON document.
fn row(i: usize) -> Vec<u8> {
    ManagedChange {
        namespace: "pam".into(),
        table: "hosts".into(),
        key: format!("host{i:07}"),
        document: Some(format!(
            r#"{{"address":"10.{}.{}.{}","port":22,"owner":"team{}"}}"#,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            i % 40
        )),
    }
    .encode()
}

/// The leader signs `rows` managed rows into its stored chain, and a checkpoint every
/// [`CHECKPOINT_EVERY`] records as the leader's executor does ([`meshward_node::drive`]).
fn build(store: &Store, rows: usize) {
    let key = store.identity().expect("identity").key;
    let mut chain = roster::chain(store).expect("chain").expect("a cluster");
    let mut batch = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<_>| {
        store.append_mastered_all(batch).expect("stored");
        batch.clear();
    };
    for i in 0..rows {
        let record = chain.sign_next(&key, RecordKind::Managed, row(i));
        let verified = chain
            .verify(&record)
            .expect("the leader signs the next record");
        batch.push(verified.duplicate());
        chain.apply(verified).expect("applied");
        let due = chain.last_version() - store.mastered_checkpoint_version().expect("checkpoint")
            >= CHECKPOINT_EVERY;
        if batch.len() == BATCH || due {
            flush(&mut batch);
        }
        if due {
            let payload = chain.checkpoint(store.state_digest().expect("digest"));
            let record = chain.sign_next(&key, RecordKind::Checkpoint, payload.encode());
            let verified = chain.verify(&record).expect("a checkpoint verifies");
            store.append_mastered(&verified).expect("stored");
            chain.apply(verified).expect("applied");
        }
    }
    flush(&mut batch);
}

/// What `meshward run` does with the chain before it serves, timed step by step.
fn restart(dir: &str) {
    let start = Instant::now();
    let store = Store::open(Path::new(dir)).expect("open");
    let opened = ms(start);
    let identity = store.identity().expect("identity");
    let admitted = roster::admitted(&store).expect("admitted");
    let roster_ms = ms(start);
    let replica = store
        .load_replica(&identity, ReplicaConfig::default())
        .expect("replica");
    let mut core = Core::new(replica, admitted, CoreConfig::default(), 1, [], 0);
    roster::load_into(&store, &mut core, 0).expect("load");
    let loaded = ms(start);
    let mut cache = ChainCache::default();
    let chain = cache.get(&store).expect("cache").expect("a chain");
    let ready = ms(start);
    let access = meshward_node::authority::access(&store).expect("access");
    let first_admin = ms(start);
    assert_eq!(
        chain.last_version(),
        core.chain().expect("loaded").last_version()
    );
    drop(access);
    println!(
        "{{\"open_ms\": {opened:.1}, \"roster_ms\": {roster_ms:.1}, \"core_loaded_ms\": \
         {loaded:.1}, \"ready_ms\": {ready:.1}, \"first_admin_access_ms\": {first_admin:.1}, \
         \"version\": {}}}",
        chain.last_version()
    );
}

/// A core over a store, its sends kept for the bench to hand over.
struct Node {
    core: Core,
    store: Store,
    sent: Vec<Output>,
}

impl Driver for Node {
    fn core(&mut self) -> Option<&mut Core> {
        Some(&mut self.core)
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn now_ms(&mut self) -> u64 {
        1
    }
    fn persisted(&mut self, _: &[Effects]) -> anyhow::Result<()> {
        Ok(())
    }
    fn wrote(&mut self, _: &Output) -> anyhow::Result<()> {
        Ok(())
    }
    fn send(&mut self, output: Output, _: &mut VecDeque<Input>) -> anyhow::Result<()> {
        self.sent.push(output);
        Ok(())
    }
}

fn node(store: Store) -> Node {
    let identity = store.identity().expect("identity");
    let admitted = roster::admitted(&store).expect("admitted");
    let replica = store
        .load_replica(&identity, ReplicaConfig::default())
        .expect("replica");
    let mut core = Core::new(replica, admitted, CoreConfig::default(), 7, [], 0);
    roster::load_into(&store, &mut core, 0).expect("load");
    Node {
        core,
        store,
        sent: Vec::new(),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Hands `nodes[from]`'s sends to the other node; returns how many inputs it queued.
fn route(nodes: &mut [Node; 2], from: usize, inputs: &mut [VecDeque<Input>; 2]) -> usize {
    let to = 1 - from;
    let me = nodes[from].core.me();
    let mut n = 0;
    for out in std::mem::take(&mut nodes[from].sent) {
        let input = match out {
            Output::Request { request, data, .. } => Input::SyncRequest {
                peer: me,
                // The channel carries the request token back.
                channel: request,
                data,
            },
            Output::Respond { channel, data } => Input::SyncResponse {
                peer: me,
                request: channel,
                data,
            },
            _ => continue,
        };
        inputs[to].push_back(input);
        n += 1;
    }
    n
}

/// A fresh node joins: returns the time until its store holds the leader's chain.
fn join(leader_store: Store, joiner_store: Store) -> f64 {
    let target = leader_store
        .mastered_high_water()
        .expect("high water")
        .expect("a chain");
    let mut nodes = [node(leader_store), node(joiner_store)];
    let ids = [nodes[0].core.me(), nodes[1].core.me()];
    let start = Instant::now();
    let mut inputs: [VecDeque<Input>; 2] = Default::default();
    inputs[0].push_back(Input::Connected {
        peer: ids[1],
        addr: addr(2),
    });
    inputs[1].push_back(Input::Connected {
        peer: ids[0],
        addr: addr(1),
    });
    for _ in 0..100_000 {
        for i in 0..2 {
            let queued = std::mem::take(&mut inputs[i]);
            drive::run(&mut nodes[i], |_, _| {}, queued).expect("drive");
        }
        let moved = route(&mut nodes, 0, &mut inputs) + route(&mut nodes, 1, &mut inputs);
        if nodes[1].store.mastered_high_water().expect("hw") == Some(target) {
            break;
        }
        if moved == 0 {
            // Nothing in flight: the next sync round starts on a tick.
            inputs[1].push_back(Input::Tick);
        }
    }
    let elapsed = ms(start);
    assert_eq!(
        nodes[1].store.mastered_high_water().expect("hw"),
        Some(target),
        "the joiner caught up"
    );
    let theirs = nodes[0]
        .store
        .managed_rows("pam", "hosts", None, usize::MAX);
    let ours = nodes[1]
        .store
        .managed_rows("pam", "hosts", None, usize::MAX);
    assert_eq!(theirs.expect("rows"), ours.expect("rows"), "the same view");
    elapsed
}

/// Copies the files of `from` (a data directory: no subdirectories needed) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        return restart(&dir);
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rows = rows_from_env();
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let leader = Store::open(dirs[0].path()).expect("open");
    let joiner = Store::open(dirs[1].path()).expect("open");
    let members: Vec<Member> = [&leader, &joiner]
        .iter()
        .enumerate()
        .map(|(i, s)| Member {
            key: s
                .identity()
                .expect("identity")
                .key
                .verifying_key()
                .to_bytes(),
            address: addr(i as u16 + 1).to_string(),
        })
        .collect();
    let leader_key = leader.identity().expect("identity").key;
    let bundle = MasteredBundle::genesis(&leader_key, ClusterId([9; 16]), members, None).encode();
    roster::import(&leader, &bundle).expect("leader genesis");
    roster::import(&joiner, &bundle).expect("joiner genesis");
    drop(joiner);
    let start = Instant::now();
    build(&leader, rows);
    println!(
        "built {rows} managed rows in {:.1} s (sign, verify, store {BATCH} per transaction)",
        start.elapsed().as_secs_f64()
    );
    drop(leader);
    let exe = std::env::current_exe().expect("current exe");
    for run in 1..=3 {
        let out = Command::new(&exe)
            .env(CHILD, dirs[0].path())
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("restart {run}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // The joiner as `meshward join` leaves it (genesis only), copied afresh for each run.
    for run in 1..=3 {
        let fresh = tempfile::tempdir().expect("tempdir");
        copy_dir(dirs[1].path(), fresh.path());
        let leader = Store::open(dirs[0].path()).expect("open");
        let joiner = Store::open(fresh.path()).expect("open");
        let joined = join(leader, joiner);
        println!("join {run}: {joined:.1} ms until the fresh node holds the {rows} rows");
    }
}
