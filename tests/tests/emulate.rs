//! The simulator's emulate mode on real daemons: `simulations/scenarios/emulate-smoke.toml`
//! (4 nodes, 5–20 ms links from the transport's delay hook, 2 % packet loss from iptables, a
//! 2|2 partition healed after 6 s) in network namespaces the harness creates and removes.
//! Needs root, `ip` with network namespaces, `iptables` and `tc`; without them the test says
//! why and passes without running (`.ci/run` installs iptables). About 30 s.

use std::path::Path;

use meshward_simulations::{Scenario, emulate};
use meshward_tests::meshward_bin;

/// Pids of running processes whose command line mentions `dir`.
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

fn our_namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    let prefix = emulate::namespace_prefix();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn real_daemons_in_namespaces_converge_after_a_partition_with_loss_and_delay() {
    if let Some(why) = emulate::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulations/scenarios/emulate-smoke.toml");
    let scenario = Scenario::load(&path).unwrap();
    let seed = scenario.seed;
    let report = tempfile::tempdir().unwrap();
    let meshward = meshward_bin();
    let result = emulate::emulate_and_compare(&path, scenario, seed, &meshward, report.path());
    // Whatever happened, the harness stopped every daemon and removed its namespaces.
    assert_eq!(our_namespaces(), Vec::<String>::new());
    assert_eq!(processes_under(report.path()), Vec::<u32>::new());
    let replay = format!(
        "sudo MESHWARD_BIN={} target/debug/meshward-sim run {} --mode emulate --seed {seed} --report /tmp/emu",
        meshward.display(),
        path.display()
    );
    let (summary, failures) = result.unwrap_or_else(|e| panic!("{e:#}\nreplay: {replay}"));
    assert!(
        failures.is_empty(),
        "{failures:#?}\nseed {seed}; replay: {replay}\n{summary:#}"
    );
    assert_eq!(summary["faults"]["fired"]["partition"], 1);
    assert_eq!(summary["faults"]["fired"]["heal"], 1);
    assert_eq!(summary["not_emulated"], serde_json::json!([]));
    assert_eq!(summary["oracles"]["distinct_digests"], 1);
    assert_eq!(summary["oracles"]["event_rows"], 56);
    // Every push waited at least the scenario's shortest one-way latency (5 ms).
    let lag = &summary["comparison"]["push_lag_ms"];
    let p50 = lag["emulate"]["p50_median_over_nodes"].as_f64().unwrap();
    assert!(p50 >= 5.0, "{lag:#}");
    assert!(lag["sim"]["p50"].as_f64().unwrap() >= 5.0, "{lag:#}");
    assert_eq!(summary["comparison"]["passed"]["sim"], true);
}
