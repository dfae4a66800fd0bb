//! The mesh under load: 7 real `meshward run` processes on 127.0.0.1 (release build).
//!
//! - **latency**: one node appends at a fixed rate (100, then 1 000 events/s, one event per
//!   commit); every other node records the lag from the commit on the origin until the event is
//!   durable in its own store (`status` → `mesh.lag`); p50 and p99 over all six receivers.
//!   Each rate runs twice: with announces pipelined (the default) and with the fault hook
//!   `MESHWARD_FAULT_NO_PIPELINE` that makes them wait for the origin's write, as before.
//! - **etcd**: beside the latency phase, when `etcd` is on PATH (skipped with the reason
//!   printed otherwise), a 3-member etcd cluster on 127.0.0.1 takes the same 100 puts/s (put on
//!   member 0 → watch event on member 2), and the ratio of meshward's p50 and p99 at 100
//!   events/s to etcd's is printed (the target: p50 ≤ 0.8 × etcd's, p99 ≤ etcd's).
//! - **throughput**: every node appends 500-event commits as fast as it accepts them for a
//!   while; events/s = all events / time until every node holds all of them.
//! - **heal**: the mesh is cut 4|3 (fault hooks), each side writes 1 000 events/s for the
//!   partition time, the cut is lifted, and we time until all 7 nodes hold identical tables.
//!
//! `cargo bench -p meshward-tests --bench mesh`
//! (`MESHWARD_BENCH_SECS` load seconds, default 10; `MESHWARD_BENCH_PARTITION_SECS`, default 60;
//! `MESHWARD_BENCH_ONLY=latency|throughput|heal` runs one phase)

#![allow(clippy::unwrap_used)] // a benchmark run aborts loudly on any failure

use std::path::Path;
use std::time::{Duration, Instant};

use meshward_api::Request;
use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_tests::{Daemon, api, cli, cluster, wait_for};

const NODES: usize = 7;

fn secs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(root: &Path) -> (Vec<Daemon>, Vec<String>) {
    start_with_env(root, &[])
}

fn start_with_env(root: &Path, env: &[(&str, &str)]) -> (Vec<Daemon>, Vec<String>) {
    let nodes = cluster(root, NODES).expect("cluster");
    // Every node dials those before it, and all are connected to all before this returns.
    let daemons = meshward_tests::start_all_with_env(&nodes, env);
    (daemons, nodes.into_iter().map(|(_, w)| w).collect())
}

/// Appends `count` events in one commit; `seq` varies user, host and detail like real PAM
/// traffic (200 users, 1 500 hosts), so rows compress like production rows, not like copies.
fn append(data: &Path, count: u32, seq: u64) {
    let event = NewEvent {
        kind: "session-start".into(),
        user: format!("user{:03}", seq % 200),
        target: format!("srv-{:04}.corp.example", seq % 1500),
        detail: format!(
            "session {seq} from 10.1.{}.{}",
            (seq / 256) % 256,
            seq % 256
        ),
        at_ms: None,
    };
    let events = (0..count)
        .map(|i| NewEvent {
            detail: format!("{} #{i}", event.detail),
            ..event.clone()
        })
        .collect();
    api(data, Request::AppendEvents(AppendEvents { events })).expect("the daemon appends");
}

/// Appends `rate` events/s (in commits of `per_commit`) for `seconds`, paced.
fn paced(data: &Path, rate: u64, per_commit: u32, seconds: u64) -> u64 {
    let commits = rate * seconds / per_commit as u64;
    let interval = Duration::from_secs_f64(per_commit as f64 / rate as f64);
    let start = Instant::now();
    for i in 0..commits {
        meshward_tests::pace(start, interval, i);
        append(data, per_commit, i);
    }
    commits * per_commit as u64
}

fn changes(d: &Daemon) -> (u64, String) {
    let s = d.status().expect("status");
    (
        s["rows"]["events"].as_u64().unwrap_or(0),
        s["digest"].as_str().unwrap_or("").to_string(),
    )
}

fn converge(daemons: &[Daemon], events: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(limit, || {
        let states: Vec<_> = daemons.iter().map(changes).collect();
        Ok(states.iter().all(|s| s.0 == events && s.1 == states[0].1))
    })
    .expect("converged");
    start.elapsed()
}

/// The fault hook that makes announces wait for their write (as before pipelining).
const NO_PIPELINE: (&str, &str) = ("MESHWARD_FAULT_NO_PIPELINE", "1");

/// p50 and p99 over the receivers (the median receiver's), ms. `pipelined`: announces leave
/// before their write (the default); otherwise after it (the fault hook).
fn latency(rate: u64, seconds: u64, pipelined: bool) -> (f64, f64) {
    let root = tempfile::tempdir().unwrap();
    let env: &[(&str, &str)] = if pipelined { &[] } else { &[NO_PIPELINE] };
    let (daemons, _) = start_with_env(root.path(), env);
    let written = paced(&daemons[0].data, rate, 1, seconds);
    converge(&daemons, written, Duration::from_secs(120));
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), 0u64);
    for d in &daemons[1..] {
        let lag = &d.status().unwrap()["mesh"]["lag"];
        p50.push(lag["p50_us"].as_u64().unwrap_or(0));
        p99.push(lag["p99_us"].as_u64().unwrap_or(0));
        max = max.max(lag["max_us"].as_u64().unwrap_or(0));
    }
    p50.sort_unstable();
    p99.sort_unstable();
    let mode = if pipelined {
        "pipelined"
    } else {
        "announce after the write"
    };
    println!(
        "latency ({mode}) at {rate} events/s for {seconds} s ({written} events, one per commit): \
         p50 {:.2} ms (receivers {:.2}..{:.2}), p99 {:.2} ms (receivers {:.2}..{:.2}), max {:.2} ms",
        p50[p50.len() / 2] as f64 / 1e3,
        p50[0] as f64 / 1e3,
        p50[p50.len() - 1] as f64 / 1e3,
        p99[p99.len() / 2] as f64 / 1e3,
        p99[0] as f64 / 1e3,
        p99[p99.len() - 1] as f64 / 1e3,
        max as f64 / 1e3,
    );
    (
        p50[p50.len() / 2] as f64 / 1e3,
        p99[p99.len() / 2] as f64 / 1e3,
    )
}

fn throughput(seconds: u64) {
    let root = tempfile::tempdir().unwrap();
    let (daemons, _) = start(root.path());
    let start = Instant::now();
    let written: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = daemons
            .iter()
            .map(|d| {
                s.spawn(move || {
                    let mut n = 0;
                    while start.elapsed() < Duration::from_secs(seconds) {
                        append(&d.data, 500, n);
                        n += 500;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    converge(&daemons, written, Duration::from_secs(300));
    let total = start.elapsed();
    println!(
        "throughput: {written} events from 7 writers, all 7 nodes converged after {:.1} s: {:.0} events/s",
        total.as_secs_f64(),
        written as f64 / total.as_secs_f64()
    );
}

fn heal(seconds: u64) {
    let root = tempfile::tempdir().unwrap();
    let (daemons, writers) = start(root.path());
    let (left, right) = (0..4, 4..NODES);
    for (i, d) in daemons.iter().enumerate() {
        let other = if left.contains(&i) {
            &writers[right.clone()]
        } else {
            &writers[left.clone()]
        };
        let mut args = vec!["fault", "block"];
        for w in other {
            args.extend(["--peer", w.as_str()]);
        }
        cli(&d.data, &args).unwrap();
    }
    let written: u64 = std::thread::scope(|s| {
        let a = s.spawn(|| paced(&daemons[0].data, 1000, 10, seconds));
        let b = s.spawn(|| paced(&daemons[4].data, 1000, 10, seconds));
        a.join().unwrap() + b.join().unwrap()
    });
    let received = |d: &Daemon| {
        d.status().unwrap()["mesh"]["core"]["bytes_received"]
            .as_u64()
            .unwrap_or(0)
    };
    let before: u64 = daemons.iter().map(received).sum();
    let core = |field: &str| -> u64 {
        daemons
            .iter()
            .map(|d| {
                d.status().unwrap()["mesh"]["core"][field]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    };
    const BREAKDOWN: [&str; 4] = [
        "pushes_applied",
        "pushes_ignored",
        "sync_rounds",
        "items_applied",
    ];
    let counts_before: Vec<u64> = BREAKDOWN.iter().map(|f| core(f)).collect();
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    let took = converge(&daemons, written, Duration::from_secs(300));
    let wire = daemons.iter().map(received).sum::<u64>() - before;
    let breakdown: Vec<String> = BREAKDOWN
        .iter()
        .zip(&counts_before)
        .map(|(f, b)| format!("{f} {}", core(f) - b))
        .collect();
    println!("heal, all 7 nodes: {}", breakdown.join(", "));
    // What each node lacked: the other side's rows, encoded as stored and zstd-compressed.
    let side = |w: &str| -> usize {
        let out = cli(
            &daemons[0].data,
            &["event", "list", "--json", "--writer", w],
        )
        .unwrap();
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
        let encoded: Vec<u8> = rows
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                meshward_crdt::Row::Event(meshward_crdt::Event {
                    at_ms: r["at_ms"].as_i64().unwrap(),
                    kind: r["kind"].as_str().unwrap().parse().unwrap(),
                    user: r["user"].as_str().unwrap().into(),
                    target: r["target"].as_str().unwrap().into(),
                    detail: r["detail"].as_str().unwrap().into(),
                })
                .encode()
            })
            .collect();
        zstd::bulk::compress(&encoded, 3).unwrap().len()
    };
    let (za, zb) = (side(&writers[0]), side(&writers[4]));
    let reference = 3 * za + 4 * zb; // the 3 right-side nodes lacked A's rows, the 4 left ones B's
    println!(
        "heal after a {seconds} s 4|3 partition with 1000 events/s per side ({written} events): \
         all 7 identical {:.2} s after the cut was lifted; {wire} payload bytes received by the 7 \
         nodes during the heal vs {reference} bytes of the missing rows zstd-compressed per node: \
         {:.2}x",
        took.as_secs_f64(),
        wire as f64 / reference as f64
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let load = secs("MESHWARD_BENCH_SECS", 10);
    let only = std::env::var("MESHWARD_BENCH_ONLY").ok();
    let run = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    if run("latency") {
        // Both ways in one run, interleaved, so the machine's load weighs on both alike.
        latency(100, load, false);
        let (p50, p99) = latency(100, load, true);
        latency(1000, load, false);
        latency(1000, load, true);
        match meshward_tests::etcd::latency(100, load) {
            Ok(etcd) => println!(
                "etcd at 100 puts/s ({} puts, put on member 0 -> watch event on member 2): \
                 p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; meshward at 100 events/s: p50 \
                 {:.2}x etcd's (target <= 0.8), p99 {:.2}x etcd's (target <= 1)",
                etcd.count,
                etcd.p50_ms,
                etcd.p99_ms,
                etcd.max_ms,
                p50 / etcd.p50_ms,
                p99 / etcd.p99_ms
            ),
            Err(why) => println!("etcd: skipped, {why:#}"),
        }
    }
    if run("throughput") {
        throughput(load);
    }
    if run("heal") {
        heal(secs("MESHWARD_BENCH_PARTITION_SECS", 60));
    }
}
