//! A writer killed with SIGKILL never signs two different changes at one position.
//!
//! Three real `meshward run` processes; node A takes single-event appends through its API as
//! fast as it answers them, and is killed with SIGKILL and restarted, round after round, at
//! random moments (so some kills land between a commit and its durable write, or between
//! that write and the push). Afterwards every node's store is opened and, for each of A's
//! segments, the hash of the change at every position is compared across the nodes: one
//! position, one hash. A node that announced a change it had not made durable, and wrote a
//! different one at the same position after its restart, fails here (its peers hold the
//! first, its store the second); so does a mesh that never converges again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use meshward_api::Request;
use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_crdt::{Digest, ReplicaConfig, SegmentKey, SyncItem, WriterId};
use meshward_node::store::Store;
use meshward_tests::{Daemon, SplitMix64, api, cluster, start_all, wait_for};

/// Kill-and-restart rounds.
const ROUNDS: u64 = 8;
/// Seed of the kill delays; printed on failure.
const SEED: u64 = 0x6b69_6c6c_2d39_2121;
/// A round's kill comes 50 ms plus up to this many milliseconds after the round started.
const MAX_KILL_DELAY_MS: u64 = 400;
/// Bound on the appends the writer tries over the whole test.
const MAX_APPENDS: u64 = 200_000;

#[test]
fn a_writer_killed_again_and_again_never_signs_two_changes_at_one_position() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let nodes = cluster(root.path(), 3)?;
    let mut daemons = start_all(&nodes);
    let a_data = nodes[0].0.clone();
    let writer = nodes[0].1.clone();

    // The steady writer: one event per request, errors (A is down) retried after a pause.
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

    let mut rng = SplitMix64(SEED);
    for round in 0..ROUNDS {
        // A must take writes again before the next kill: wait for one more ack.
        let before = acked.load(Ordering::Relaxed);
        wait_for(Duration::from_secs(60), || {
            Ok(acked.load(Ordering::Relaxed) > before)
        })
        .with_context(|| format!("round {round}: node A takes no writes"))?;
        let delay = 50 + rng.next() % (MAX_KILL_DELAY_MS + 1);
        std::thread::sleep(Duration::from_millis(delay));
        let a = daemons.remove(0);
        a.kill(libc::SIGKILL);
        let peers: Vec<_> = daemons
            .iter()
            .map(|d| d.listen_addr()?.context("a peer does not listen"))
            .collect::<anyhow::Result<_>>()?;
        let restarted = Daemon::start(&a_data, &peers)
            .with_context(|| format!("round {round}: restarting A (seed {SEED:#x})"))?;
        daemons.insert(0, restarted);
    }
    stop.store(true, Ordering::Relaxed);
    load.join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    let acked = acked.load(Ordering::Relaxed);
    ensure!(acked > 0, "no append was ever acknowledged");

    // Give the mesh time to agree (a fork never would; the comparison below names it).
    let converged = wait_for(Duration::from_secs(60), || {
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
                        "nodes {first} and {node} hold different changes of writer A at \
                         {key} position {position} (seed {SEED:#x})"
                    ),
                    None => {
                        seen.insert((key, position), (hash, node));
                    }
                }
            }
        }
    }
    converged.context("the nodes did not converge after the last restart")?;
    // Every node holds A's rows (the comparison above was not vacuous): at least one change
    // per acknowledged append, on each of the 3 nodes.
    ensure!(
        positions >= 3 * acked as usize,
        "{positions} positions held over 3 nodes for {acked} acknowledged appends"
    );
    eprintln!(
        "{ROUNDS} kills of the writer, {acked} appends acknowledged, {} positions of its \
         segments compared over 3 nodes ({positions} held)",
        seen.len()
    );
    Ok(())
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
