//! Duplicate push copies (copies of a push a node receives beyond its first, per node per
//! commit), counted on a 200-node dissemination run: deterministic counts from a fixed seed,
//! not timings. See docs/simulation.md, "Duplicates".

use std::path::Path;

use meshward_simulations::{Scenario, simulate};

/// 200 nodes dialling 8 random others, 10–50 ms links, ten commits from ten nodes; `gossip`
/// is the scenario's `[gossip]` table.
fn run(gossip: &str) -> serde_json::Value {
    let text = format!(
        r#"
name = "duplicates-200"
nodes = 200
seed = 11
duration = "2s"
settle = "30s"

[topology]
degree = 8

[network]
latency = ["10ms", "50ms"]

[[write]]
at = "1500ms"
every = "50ms"
count = 10
nodes = [0, 20, 40, 60, 80, 100, 120, 140, 160, 180]

[gossip]
{gossip}
"#
    );
    let scenario = Scenario::parse(&text).expect("the scenario parses");
    let outcome = simulate(Path::new("duplicates-200.toml"), scenario, 11, None, true)
        .expect("the simulator runs");
    assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
    let m = &outcome.summary["messages"];
    assert_eq!(m["delivery_percent"].as_f64(), Some(100.0), "{m}");
    outcome.summary
}

fn duplicates(summary: &serde_json::Value) -> f64 {
    summary["messages"]["push_duplicates_per_node_per_message"]
        .as_f64()
        .expect("the summary counts duplicates")
}

#[test]
fn duplicate_push_copies_stay_under_plumtrees_figure_with_the_preset_and_near_the_mesh_degree() {
    // The transport's large-mesh preset (D = 5, 4..=8, flood publishing) with IDONTWANT:
    // each node gets a push about once per mesh peer less its source, under the issue's
    // target (plumtree's 3.5).
    let preset = run("");
    let d = duplicates(&preset);
    assert!(
        d <= 3.5,
        "{d} duplicate copies per node per push with the preset"
    );
    // The gossipsub spec's D = 6 (5..=12): a libp2p mesh averages about 7.4 peers, 4.9
    // duplicates. A fatter mesh (the model grafted up to 12 before it followed libp2p's rules:
    // 7.4 duplicates) or a broken IDONTWANT fails this.
    let six = run("mesh-n = 6\nmesh-n-low = 5\nmesh-n-high = 12\nflood-publish = false");
    let d6 = duplicates(&six);
    let mesh = six["gossip"]["mesh_mean"].as_f64().unwrap();
    assert!(
        d6 <= 5.2,
        "{d6} duplicate copies per node per push at D = 6"
    );
    assert!(mesh <= 7.6, "mean mesh size {mesh} at D = 6 (5..=12)");
    assert!(d < d6);
}

#[test]
fn idontwant_spares_copies_when_validation_is_slower_than_the_link() {
    // A node that takes 20 ms to validate forwards after its peers' IDONTWANTs (sent on
    // arrival, 10–50 ms away) reach it: a third of the copies are spared.
    // On the gossipsub spec's mesh (D = 6), where there are more copies to spare.
    let six = "mesh-n = 6\nmesh-n-low = 5\nmesh-n-high = 12\nflood-publish = false";
    let with = run(&format!("{six}\nvalidation = \"20ms\""));
    let without = run(&format!("{six}\nvalidation = \"20ms\"\nidontwant = false"));
    let (d_with, d_without) = (duplicates(&with), duplicates(&without));
    assert!(
        d_with + 1.0 <= d_without,
        "IDONTWANT: {d_with} duplicates per node per push, without: {d_without}"
    );
    assert!(with["gossip"]["spared_by_idontwant"].as_u64().unwrap() > 0);
    assert_eq!(without["gossip"]["spared_by_idontwant"].as_u64(), Some(0));
    assert_eq!(without["gossip"]["idontwant_sent"].as_u64(), Some(0));
}
