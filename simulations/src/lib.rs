//! Network simulation and emulation for meshward.
//!
//! Users run meshward's own code under hostile networks before they trust it with a field
//! site; test authors use it to reproduce failures. Two modes read the same scenario files
//! ([`scenario`]):
//!
//! - **sim** ([`sim`]): many real node cores (the daemon's [`meshward_node::core::Core`] over
//!   a real redb store in memory) on a virtual clock with a seeded RNG and a model network:
//!   latency (fixed, uniform or per site pair), loss, duplication, reordering, a bandwidth
//!   cap, partitions, flapping links, crashes and restarts, clock skew. Same seed, same
//!   scenario: the same trace and report, bit for bit (apart from the `wall_ms` run time).
//! - **emulate** ([`emulate`]): real `meshward` daemons, each in its own network namespace,
//!   with partitions and loss from iptables and a bandwidth cap from `tc tbf`. Needs root.
//!
//! A run ends with oracles (identical tables on every live node, no committed event lost,
//! at most one leader per epoch, every requested fault fired) and a report ([`report`]):
//! `summary.json` and SVG plots.

#![deny(missing_docs)]

pub mod compare;
pub mod emulate;
pub mod farm;
pub mod fencing;
pub mod frontier;
pub mod html;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod time;

use std::path::Path;

pub use scenario::Scenario;

/// The result of a simulated run.
#[derive(Debug)]
pub struct Outcome {
    /// The JSON summary.
    pub summary: serde_json::Value,
    /// Oracle failures; empty when the run passed.
    pub failures: Vec<String>,
    /// The command that replays the run.
    pub replay: String,
}

/// Runs `scenario` (read from `path`, named in the replay command) in the simulator with
/// `seed`, writing the report to `report` when given.
pub fn simulate(
    path: &Path,
    scenario: Scenario,
    seed: u64,
    report: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let replay = format!(
        "cargo run --release -p meshward-simulations -- run {} --seed {seed} --report {}",
        path.display(),
        report.map_or_else(|| "sim-report".to_string(), |p| p.display().to_string())
    );
    let name = scenario.name.clone();
    let nodes = scenario.nodes;
    let mut sim = sim::Sim::new(scenario, seed, quiet)?;
    sim.run()?;
    let summary = sim.metrics.summary(&name, "sim", seed, nodes, &replay);
    if let Some(dir) = report {
        sim.metrics.write(dir, &summary)?;
    }
    Ok(Outcome {
        failures: sim.metrics.oracles.failures.clone(),
        summary,
        replay,
    })
}
