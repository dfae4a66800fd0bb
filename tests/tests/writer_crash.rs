//! A writer killed with SIGKILL never signs two different changes at one position.
//!
//! Each round: three real `meshward run` processes; node A takes single-event appends through
//! its API as fast as it answers them; once its pushes reach its peers by gossip, A is killed
//! with SIGKILL at a random moment, restarted, and must take writes again. A pipelines its
//! announces ([`meshward_node::tail`]): the push of a commit leaves before the commit is
//! durable, and the fault hook `MESHWARD_FAULT_ANNOUNCE_DELAY_MS` holds A between the two, so
//! most kills land there: its peers then hold a change A's store lacks (the test counts those
//! rounds and needs at least one). Then every node's store is opened and, for each of A's
//! segments, the hash of the change at every position is compared across the nodes: one
//! position, one hash. A node that wrote a different change at such a position after its
//! restart fails here (its peers hold the first, its store the second); so does a mesh that
//! never converges again.
//!
//! Each round starts a fresh cluster, so one round's kill does not shape the next.
//!
//! Run with `MESHWARD_FAULT_SKIP_TAIL_RECOVERY=1` (A's daemons inherit it) and A skips the
//! recovery of its tail after a restart: the test fails, naming the position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use meshward_api::Request;
use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_crdt::{Digest, ReplicaConfig, SegmentKey, SyncItem, WriterId};
use meshward_node::store::Store;
use meshward_tests::{Daemon, SplitMix64, api, cluster, wait_for};

/// Rounds, each on a fresh cluster.
const ROUNDS: u64 = 4;
/// Seed of the kill delays; printed on failure.
const SEED: u64 = 0x6b69_6c6c_2d39_2121;
/// A round's kill comes up to this many milliseconds after A's pushes reach its peers.
const MAX_KILL_DELAY_MS: u64 = 300;
/// Bound on the appends the writer tries in a round.
const MAX_APPENDS: u64 = 100_000;
/// How long A is held between a pipelined announce and its durable write.
const ANNOUNCE_DELAY: (&str, &str) = ("MESHWARD_FAULT_ANNOUNCE_DELAY_MS", "30");

#[test]
fn a_writer_killed_while_announcing_never_signs_two_changes_at_one_position() -> anyhow::Result<()>
{
    let mut rng = SplitMix64(SEED);
    let mut ahead_rounds = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.next() % (MAX_KILL_DELAY_MS + 1));
        let ahead = run_round(delay)
            .with_context(|| format!("round {round} (seed {SEED:#x}, kill delay {delay:?})"))?;
        ahead_rounds += u64::from(ahead);
    }
    eprintln!(
        "{ROUNDS} kills of the writer, {ahead_rounds} with peers holding changes its store lacked"
    );
    ensure!(
        ahead_rounds > 0,
        "no kill landed between an announce and its write: the test showed nothing"
    );
    Ok(())
}

/// A starts with `args`, held between its announces and its writes.
fn start_a(data: &std::path::Path, peers: &[Daemon]) -> anyhow::Result<Daemon> {
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    for d in peers {
        let addr = d.listen_addr()?.context("a peer does not listen")?;
        args.extend(["--peer".to_string(), addr.to_string()]);
    }
    Daemon::start_with_env(data, &args, &[ANNOUNCE_DELAY])
}

/// One cluster, one kill of A; whether its peers then held a change its store lacked.
fn run_round(delay: Duration) -> anyhow::Result<bool> {
    let root = tempfile::tempdir()?;
    let nodes = cluster(root.path(), 3)?;
    let a_data = nodes[0].0.clone();
    let writer = nodes[0].1.clone();
    let mut daemons = vec![start_a(&a_data, &[])?];
    for (data, _) in &nodes[1..] {
        let peers: Vec<_> = daemons
            .iter()
            .map(|d| d.listen_addr()?.context("not listening"))
            .collect::<anyhow::Result<_>>()?;
        daemons.push(Daemon::start(data, &peers)?);
    }
    wait_for(Duration::from_secs(90), || {
        for d in &daemons {
            if d.status()?["mesh"]["transport"]["connected_peers"].as_u64() != Some(2) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .context("the three nodes do not connect")?;

    // The steady writer: one event per request, errors (A is down or recovering) retried
    // after a pause.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, acked, data) = (stop.clone(), acked.clone(), a_data.clone());
        std::thread::spawn(move || {
            for seq in 0..MAX_APPENDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let events = vec![NewEvent {
                    kind: "session-start".into(),
                    user: format!("user{}", seq % 17),
                    target: format!("host-{seq}"),
                    detail: format!("append {seq}"),
                    at_ms: None,
                }];
                match api(&data, Request::AppendEvents(AppendEvents { events })) {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let result = kill_and_check(&mut daemons, &a_data, &writer, delay, &acked);
    stop.store(true, Ordering::Relaxed);
    load.join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    let ahead = result?;

    // Give the mesh time to agree (a fork never would; the comparison below names it).
    let converged = wait_for(Duration::from_secs(90), || {
        let digests: Vec<String> = daemons
            .iter()
            .map(|d| Ok(d.status()?["digest"].as_str().unwrap_or("").to_string()))
            .collect::<anyhow::Result<_>>()?;
        Ok(digests.iter().all(|d| d == &digests[0]))
    });
    let dirs: Vec<_> = daemons.into_iter().map(|d| d.kill(libc::SIGTERM)).collect();

    // Every node's changes of A's segments: (segment, position) → hash.
    let mut seen: BTreeMap<(SegmentKey, u64), ([u8; 32], usize)> = BTreeMap::new();
    let mut positions = 0;
    for (node, dir) in dirs.iter().enumerate() {
        for (key, hashes) in segments_of(dir, &writer)? {
            for (i, hash) in hashes.into_iter().enumerate() {
                let position = i as u64 + 1;
                positions += 1;
                match seen.get(&(key, position)) {
                    Some((other, first)) => ensure!(
                        *other == hash,
                        "nodes {first} and {node} hold different changes of writer A at {key} \
                         position {position}"
                    ),
                    None => {
                        seen.insert((key, position), (hash, node));
                    }
                }
            }
        }
    }
    converged.context("the nodes did not converge after the restart")?;
    let acked = acked.load(Ordering::Relaxed);
    // Every node holds A's rows (the comparison was not vacuous): at least one change per
    // acknowledged append, on each of the 3 nodes.
    ensure!(
        acked > 0 && positions >= 3 * acked as usize,
        "{positions} positions held over 3 nodes for {acked} acknowledged appends"
    );
    Ok(ahead)
}

/// Waits until A's pushes reach its peers, kills it `delay` later, compares what its store
/// holds of its own rows with what its peers hold, restarts it, and waits until it takes
/// writes again. Returns whether a peer held a change A's store lacked.
fn kill_and_check(
    daemons: &mut Vec<Daemon>,
    a_data: &std::path::Path,
    writer: &str,
    delay: Duration,
    acked: &AtomicU64,
) -> anyhow::Result<bool> {
    let pushes = |ds: &[Daemon]| -> anyhow::Result<u64> {
        let mut sum = 0;
        for d in ds {
            sum += d.status()?["mesh"]["core"]["pushes_applied"]
                .as_u64()
                .unwrap_or(0);
        }
        Ok(sum)
    };
    wait_for(Duration::from_secs(90), || Ok(pushes(&daemons[1..])? > 10))
        .context("A's writes do not reach its peers by gossip")?;
    std::thread::sleep(delay);
    daemons.remove(0).kill(libc::SIGKILL);
    // (give what was in flight a moment to land)
    std::thread::sleep(Duration::from_millis(200));
    let durable = own_changes(a_data, writer)?;
    let ahead = peer_events(daemons)? > durable;
    let restarted = start_a(a_data, daemons).context("restarting A")?;
    daemons.insert(0, restarted);
    // A must take writes again (once it has recovered its tail).
    let before = acked.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(90), || {
        Ok(acked.load(Ordering::Relaxed) > before + 5)
    })
    .context("A takes no writes after its restart")?;
    Ok(ahead)
}

/// The most events any of `daemons` holds (only A writes).
fn peer_events(daemons: &[Daemon]) -> anyhow::Result<u64> {
    let mut most = 0;
    for d in daemons {
        most = most.max(d.status()?["rows"]["events"].as_u64().unwrap_or(0));
    }
    Ok(most)
}

/// How many changes of its own segments the (stopped) node in `dir` holds.
fn own_changes(dir: &std::path::Path, writer: &str) -> anyhow::Result<u64> {
    Ok(segments_of(dir, writer)?
        .values()
        .map(|h| h.len() as u64)
        .sum())
}

/// The hash of each change, in seq order, of every segment of `writer` the store in `dir`
/// holds.
fn segments_of(
    dir: &std::path::Path,
    writer: &str,
) -> anyhow::Result<BTreeMap<SegmentKey, Vec<[u8; 32]>>> {
    let store = Store::open(dir)?;
    let mut replica = store.load_replica(&store.identity()?, ReplicaConfig::default())?;
    // (a restored replica accepts only its own writer until told the roster)
    replica.set_writers([writer.parse::<WriterId>().map_err(anyhow::Error::msg)?]);
    let (items, _) = replica.missing_for(&Digest::default(), usize::MAX)?;
    let mut out = BTreeMap::new();
    for item in items {
        let SyncItem::Snapshot { head, doc } = item else {
            anyhow::bail!("a snapshot was expected for an empty digest");
        };
        if head.head.key.writer.to_hex() != writer {
            continue;
        }
        let doc = automerge::Automerge::load(&doc)?;
        let mut changes = doc.get_changes(&[]);
        changes.sort_by_key(|c| c.seq());
        ensure!(
            changes
                .iter()
                .enumerate()
                .all(|(i, c)| c.seq() == i as u64 + 1),
            "{}: the changes are not one run from seq 1",
            head.head.key
        );
        out.insert(head.head.key, changes.iter().map(|c| c.hash().0).collect());
    }
    Ok(out)
}
