//! A node holding 1 M events: write rate through the store (commit per tick of 1 000 events,
//! one durable redb transaction each), then memory and time to serve again after a restart,
//! measured in a fresh child process (open the store, rebuild the replica, answer a digest and
//! an event query).
//!
//! `cargo bench -p meshward-node --bench store` (`MESHWARD_BENCH_EVENTS` overrides the default of 1 049 000: twenty sealed 50 k segments
//! and a 49 k-event live one, the worst case for a restart, which must load that document).

use std::process::Command;
use std::time::Instant;

use common::TICK;
use meshward_crdt::ReplicaConfig;
use meshward_node::store::{EventFilter, STORE_FILE, Store};

mod common;

const CHILD: &str = "MESHWARD_BENCH_RELOAD_DIR";

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn reload(dir: &str) {
    let start = Instant::now();
    let store = Store::open(dir.as_ref()).expect("open");
    let id = store.identity().expect("identity");
    let replica = store
        .load_replica(&id, ReplicaConfig::default())
        .expect("load");
    let digest = replica.digest();
    let recent = store
        .events(&EventFilter {
            limit: Some(100),
            ..Default::default()
        })
        .expect("events");
    let elapsed = start.elapsed();
    assert_eq!(recent.len(), 100);
    println!(
        "{{\"served_again_ms\": {:.1}, \"rss_mb\": {:.1}, \"peak_rss_mb\": {:.1}, \"segments\": {}}}",
        elapsed.as_secs_f64() * 1e3,
        status_kb("VmRSS:") as f64 / 1024.0,
        status_kb("VmHWM:") as f64 / 1024.0,
        digest.segments.len()
    );
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        return reload(&dir);
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / criterion-style listing: nothing to run
    }
    let events = common::events_from_env(1_049_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let start = Instant::now();
    let replica = common::write_events(&store, events);
    let secs = start.elapsed().as_secs_f64();
    let file = std::fs::metadata(dir.path().join(STORE_FILE)).map_or(0, |m| m.len());
    println!(
        "wrote {events} events in {secs:.1} s: {:.0} events/s durable (tick of {TICK}); \
         writer rss {:.1} MB; store file {:.1} MB",
        events as f64 / secs,
        status_kb("VmRSS:") as f64 / 1024.0,
        file as f64 / 1e6,
    );
    drop(replica);
    drop(store);
    let exe = std::env::current_exe().expect("current exe");
    for run in 1..=3 {
        let out = Command::new(&exe)
            .env(CHILD, dir.path())
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("reload run {run}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
