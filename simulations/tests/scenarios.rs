//! The shipped scenarios: every file parses, and each runs with its fixed seed (about 20 s in
//! a debug build on two cores), except the 1 000-node run, which is `#[ignore]`d and says the
//! command that runs it.

use std::path::{Path, PathBuf};

use meshward_simulations::{Scenario, simulate};

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Runs a shipped scenario with its own seed and fails with the replay command.
fn run(name: &str) -> serde_json::Value {
    let path = scenarios().join(format!("{name}.toml"));
    let scenario = Scenario::load(&path).expect("a shipped scenario parses");
    let seed = scenario.seed;
    let outcome = simulate(&path, scenario, seed, None, true).expect("the simulator runs");
    assert!(
        outcome.failures.is_empty(),
        "{name} failed with seed {seed}: {:#?}\nreplay with:\n  {}",
        outcome.failures,
        outcome.replay
    );
    outcome.summary
}

fn without_wall_clock(mut summary: serde_json::Value) -> serde_json::Value {
    summary["wall_ms"] = serde_json::Value::Null;
    summary
}

#[test]
fn every_shipped_scenario_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(scenarios()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap();
            n += 1;
        }
    }
    assert!(n >= 7, "found {n} scenarios");
}

#[test]
fn the_ci_smoke_run_converges_and_fires_every_fault() {
    let summary = run("ci-smoke");
    let fired = &summary["faults"]["fired"];
    for kind in ["partition", "heal", "flap", "crash", "restart", "skew"] {
        assert!(
            fired[kind].as_u64().unwrap_or(0) >= 1,
            "{kind} did not fire"
        );
    }
    let net = &summary["network"];
    for what in [
        "lost",
        "duplicated",
        "reordered",
        "held_by_cut",
        "retransmitted",
    ] {
        assert!(
            net[what].as_u64().unwrap_or(0) >= 1,
            "no message was {what}"
        );
    }
    assert_eq!(summary["oracles"]["distinct_digests"], 1);
    assert_eq!(
        summary["oracles"]["event_rows"],
        summary["writes"]["committed"]
    );
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = without_wall_clock(run("ci-smoke"));
    let b = without_wall_clock(run("ci-smoke"));
    assert_eq!(a, b);
}

#[test]
fn a_different_seed_gives_a_different_trace() {
    let path = scenarios().join("ci-smoke.toml");
    let scenario = Scenario::load(&path).unwrap();
    let a = simulate(&path, scenario.clone(), 100, None, true).unwrap();
    let b = simulate(&path, scenario, 101, None, true).unwrap();
    assert!(a.failures.is_empty() && b.failures.is_empty());
    assert_ne!(a.summary["events"], b.summary["events"]);
}

#[test]
fn a_majority_goes_on_writing_after_losing_node_0() {
    let summary = run("leader-loss");
    assert_eq!(summary["live_nodes_at_end"], 4);
    assert_eq!(summary["oracles"]["commits_missing_on_live_nodes"], 0);
}

#[test]
fn a_rolling_restart_under_writes_converges() {
    run("rolling-restart");
}

#[test]
fn a_ten_minute_field_split_merges_after_the_heal() {
    let summary = run("field-split");
    assert_eq!(
        summary["convergence"]["after_heals_ms"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn three_sites_over_wan_links_converge() {
    run("three-sites");
}

#[test]
fn a_flapping_link_converges() {
    run("flapping-link");
}

/// `cargo test --release -p meshward-simulations -- --ignored dissemination_1000`
#[test]
#[ignore = "takes tens of seconds in release"]
fn dissemination_1000_reaches_every_node() {
    let summary = run("dissemination-1000");
    assert_eq!(summary["messages"]["delivery_percent"], 100.0);
}
