//! Replication benchmarks of the pure replica: local commit rate, apply rate of remote
//! changes (1 000 events per change, and one event per change as the segment grows), and a 60 k-event-per-side partition heal (CPU time and bytes on the wire against
//! the zstd-compressed size of the missing events).
//!
//! `cargo bench -p meshward-crdt --bench replication`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use meshward_crdt::{
    ClusterId, Event, EventKind, Op, Replica, ReplicaConfig, Row, SyncItem, SyncMessage, TableId,
};

const CLUSTER: ClusterId = ClusterId([1; 16]);
const TICK: usize = 1_000;

fn replica(n: u8) -> Replica {
    Replica::new(
        CLUSTER,
        SigningKey::from_bytes(&[n; 32]),
        ReplicaConfig::default(),
    )
}

fn event(i: u64) -> Event {
    Event {
        at_ms: 1_790_000_000_000 + i as i64,
        kind: EventKind::ALL[(i % EventKind::ALL.len() as u64) as usize],
        user: format!("user{:03}", i % 200),
        target: format!("srv-{:04}.corp.example", i % 1500),
        detail: format!("session {i} from 10.1.{}.{}", (i / 256) % 256, i % 256),
    }
}

fn batch(from: u64) -> Vec<Op> {
    (from..from + TICK as u64)
        .map(|i| Op::Append(event(i)))
        .collect()
}

/// Writes `events` on `r` in ticks; returns the pushed items.
fn write(r: &mut Replica, start: u64, events: u64) -> Vec<SyncItem> {
    let mut pushed = Vec::new();
    for t in (start..start + events).step_by(TICK) {
        pushed.extend(r.commit(0, batch(t)).expect("commit").push);
    }
    pushed
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit");
    g.throughput(Throughput::Elements(TICK as u64));
    g.bench_function("events_per_tick_1000", |b| {
        let mut r = replica(1);
        let mut i = 0;
        b.iter_batched(
            || {
                i += TICK as u64;
                batch(i)
            },
            |ops| black_box(r.commit(0, ops).expect("commit")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(TICK as u64));
    g.bench_function("remote_events_per_change_1000", |b| {
        // A long stream from one writer; each iteration applies its next change, and a fresh
        // receiver (not timed) starts over when the stream is used up.
        let mut w = replica(1);
        let items = write(&mut w, 0, 200_000);
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut r = replica(2);
            let mut next = 0;
            for _ in 0..iters {
                if next == items.len() {
                    r = replica(2);
                    next = 0;
                }
                let item = items[next].clone();
                next += 1;
                let start = std::time::Instant::now();
                black_box(r.apply(item).expect("apply"));
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    g.finish();
}

/// One event per change, as a node writing events one at a time sends them: the CPU time to
/// commit and to apply (check and take) each change as the segment grows to 40 000 rows,
/// printed per 10 000 (automerge's apply walks the list, so applying changes one by one
/// would grow with the rows; the replica applies them in batches).
fn single_event_changes(_: &mut Criterion) {
    let (mut w, mut r) = (replica(1), replica(2));
    let (mut commit, mut apply) = (Duration::ZERO, Duration::ZERO);
    for i in 0..40_000u64 {
        let start = std::time::Instant::now();
        let items = w
            .commit(0, vec![Op::Append(event(i))])
            .expect("commit")
            .push;
        commit += start.elapsed();
        let start = std::time::Instant::now();
        for item in items {
            black_box(r.apply(item).expect("apply"));
        }
        apply += start.elapsed();
        if (i + 1) % 10_000 == 0 {
            println!(
                "one-event changes, rows {:>5}..{:>5}: commit {:.1} µs, apply {:.1} µs per change",
                i + 1 - 10_000,
                i + 1,
                commit.as_secs_f64() * 1e6 / 10_000.0,
                apply.as_secs_f64() * 1e6 / 10_000.0
            );
            (commit, apply) = (Duration::ZERO, Duration::ZERO);
        }
    }
}

/// Two replicas share 10 k events each, then write 60 k each while partitioned.
fn diverged() -> (Replica, Replica, Vec<Row>, Vec<Row>) {
    let (mut a, mut b) = (replica(1), replica(2));
    for item in write(&mut a, 0, 10_000) {
        b.apply(item).expect("apply");
    }
    for item in write(&mut b, 1_000_000, 10_000) {
        a.apply(item).expect("apply");
    }
    let a_new: Vec<Row> = (10_000..70_000).map(|i| Row::Event(event(i))).collect();
    let b_new: Vec<Row> = (1_010_000..1_070_000)
        .map(|i| Row::Event(event(i)))
        .collect();
    write(&mut a, 10_000, 60_000);
    write(&mut b, 1_010_000, 60_000);
    (a, b, a_new, b_new)
}

/// One heal round both ways: digest, missing items, wire encode/decode, apply. Returns bytes.
fn heal(a: &mut Replica, b: &mut Replica) -> usize {
    let mut wire = 0;
    for _ in 0..16 {
        let (da, db) = (a.digest().encode(), b.digest().encode());
        let (to_b, more_b) = a.missing_for(&b.digest(), 8 << 20).expect("missing");
        let (to_a, more_a) = b.missing_for(&a.digest(), 8 << 20).expect("missing");
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        for (items, to) in [(to_b, &mut *b), (to_a, &mut *a)] {
            let bytes = SyncMessage { items }.encode();
            wire += bytes.len();
            for item in SyncMessage::decode(&bytes).expect("decode").items {
                to.apply(item).expect("apply");
            }
        }
        wire += da.len() + db.len();
        if !more_a && !more_b {
            break;
        }
    }
    assert_eq!(a.digest(), b.digest());
    wire
}

fn heal_60k(c: &mut Criterion) {
    let (mut a, mut b, a_new, b_new) = diverged();
    let missing: Vec<u8> = a_new.iter().chain(&b_new).flat_map(Row::encode).collect();
    let compressed = zstd::bulk::compress(&missing, 3).expect("zstd").len();
    let wire = heal(&mut a, &mut b);
    assert_eq!(a.rows(TableId::Events).expect("rows").len(), 140_000);
    println!(
        "heal_60k_per_side: wire {wire} B for 120000 missing events ({:.1} B/event); \
         zstd of the missing rows {compressed} B; ratio {:.2}",
        wire as f64 / 120_000.0,
        wire as f64 / compressed as f64
    );
    let mut g = c.benchmark_group("heal");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(120_000));
    g.bench_function("diverged_60k_per_side", |bench| {
        bench.iter_batched(
            diverged,
            |(mut a, mut b, _, _)| black_box(heal(&mut a, &mut b)),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, commit, apply, single_event_changes, heal_60k);
criterion_main!(benches);
