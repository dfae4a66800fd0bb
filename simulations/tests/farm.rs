//! The random farm finds a deliberately broken core and shrinks the failure to a minimal
//! scenario that replays bit for bit.
//!
//! The core is patched in this test build only (`meshward-node`'s `bugs` feature, enabled by
//! this crate's dev-dependency on itself): every 7th local commit is announced and
//! acknowledged but never persisted, so the node's store lacks a change it gave its peers.

use meshward_node::core::Bug;
use meshward_simulations::Scenario;
use meshward_simulations::farm::{self, Hooks, Options};

const BUG: Bug = Bug::UnpersistedCommit { every: 7 };

#[test]
fn a_core_that_drops_a_change_is_found_by_the_farm_and_shrunk_to_a_replayable_scenario() {
    let out = tempfile::tempdir().unwrap();
    let batch = farm::fuzz(&Options {
        first: 1,
        seeds: 1,
        out: Some(out.path().to_path_buf()),
        shrink_runs: 60,
        hooks: Hooks { bug: Some(BUG) },
        ..Options::default()
    })
    .unwrap();
    assert_eq!(batch.failed.len(), 1, "{batch:#?}");
    let failed = &batch.failed[0];
    // The store lacks a change the node signed: its next start finds out, after a restart
    // (store-untrusted) or a power loss (acknowledged-lost, checked first), whichever the
    // seed's scenario draws first.
    assert!(
        ["store-untrusted", "acknowledged-lost"].contains(&failed.class),
        "{failed:#?}"
    );
    // Shrunk: one node, a handful of commits, and only what the failure needs: the node's
    // restart or power loss, where its store no longer matches the heads it signed (it stops
    // and says so).
    let [before, after] = failed.shrunk;
    assert!(after.1 < before.1, "{failed:#?}");
    assert_eq!(after.0, 1, "{failed:#?}");
    assert!(after.1 <= 2, "{failed:#?}");
    assert!(
        failed.minimal_failures[0].contains("does not match its signed head"),
        "{failed:#?}"
    );
    assert!(failed.replays, "{failed:#?}");
    // The minimal scenario is on disk beside the original and the minimal run's report, and
    // replays: the same failure with the bug, none without it.
    let dir = out.path().join("seed-1");
    for file in ["scenario.toml", "minimal.toml", "report/summary.json"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let minimal = Scenario::load(&dir.join("minimal.toml")).unwrap();
    assert_eq!(minimal.seed, 1);
    let bugged = farm::run_scenario(&minimal, minimal.seed, Hooks { bug: Some(BUG) }).unwrap();
    assert_eq!(bugged.failures, failed.minimal_failures);
    let sound = farm::run_scenario(&minimal, minimal.seed, Hooks::default()).unwrap();
    assert_eq!(sound.failures, Vec::<String>::new());
    let writes: u64 = minimal.writes.iter().map(|w| w.count).sum();
    assert!((7..=14).contains(&writes), "{writes} commits left");
}

/// The CI's random batch (`.ci/run`): seeds 0..80 of the farm on both cores, every oracle
/// on each; fails on any failure, and if a fault kind, network decision or oracle was never
/// reached. `cargo test -p meshward-simulations --test farm -- --ignored farm_ci_batch`
#[test]
#[ignore = "the CI's random batch, run by .ci/run (about a minute)"]
fn farm_ci_batch() {
    const SEEDS: u64 = 80;
    let half = SEEDS / 2;
    let batches: Vec<farm::Batch> = [0, half]
        .into_iter()
        .map(|first| {
            std::thread::spawn(move || {
                farm::fuzz(&Options {
                    first,
                    seeds: half,
                    ..Options::default()
                })
                .expect("the farm runs")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a batch thread"))
        .collect();
    let mut never: Vec<&str> = farm::COVERAGE.to_vec();
    for b in &batches {
        never.retain(|c| b.never.contains(c));
        eprintln!(
            "seeds {}..{}: {} runs, {:.1} CPU s, {:.0} runs per CPU minute",
            b.first,
            b.first + b.runs,
            b.runs,
            b.cpu_seconds,
            b.runs_per_cpu_minute
        );
    }
    let failed: Vec<_> = batches.iter().flat_map(|b| &b.failed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(
        never.is_empty(),
        "never reached in {SEEDS} seeds: {never:?}"
    );
}
