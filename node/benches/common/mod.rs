//! What the node benchmarks share: synthetic PAM events written through the store.

use meshward_crdt::{Event, EventKind, Op, Replica, ReplicaConfig};
use meshward_node::store::Store;

/// Events per commit: one durable redb transaction each.
pub const TICK: u64 = 1_000;

/// How many events to write: `MESHWARD_BENCH_EVENTS`, or `default`.
pub fn events_from_env(default: u64) -> u64 {
    std::env::var("MESHWARD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends `events` synthetic PAM events (200 users, 1 500 hosts, a short detail) to `store`,
/// one commit of [`TICK`] events per durable transaction. Returns the writing replica.
pub fn write_events(store: &Store, events: u64) -> Replica {
    let id = store.identity().expect("identity");
    let mut replica = store
        .load_replica(&id, ReplicaConfig::default())
        .expect("load");
    for t in (0..events).step_by(TICK as usize) {
        let ops = (t..(t + TICK).min(events))
            .map(|i| {
                Op::Append(Event {
                    at_ms: 1_790_000_000_000 + i as i64,
                    kind: EventKind::ALL[(i % EventKind::ALL.len() as u64) as usize],
                    user: format!("user{:03}", i % 200),
                    target: format!("srv-{:04}.corp.example", i % 1500),
                    detail: format!("session {i} from 10.1.{}.{}", (i / 256) % 256, i % 256),
                })
            })
            .collect();
        let effects = replica.commit(0, ops).expect("commit");
        store.persist(&effects).expect("persist");
    }
    replica
}
