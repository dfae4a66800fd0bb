//! The random farm: scenarios generated from seeds ([`generate`]), every oracle checked on
//! each, failures shrunk to a minimal scenario that replays bit-exact, and coverage counted.
//!
//! `meshward-sim fuzz --seeds N [--minutes M] [--first S] [--out DIR] [--coverage]` runs seeds
//! `S..S+N` (stopping early after `M` minutes). Each run is the simulator on real node cores,
//! with every oracle of [`crate::sim`]; a fault that rightly did not happen (a failover the
//! others refused, a crash of a node already down) is counted, not failed.
//!
//! A failing run is shrunk ([`shrink`]): fewer nodes, fewer faults and writes, a plainer
//! network, a shorter run, each step kept only if the same oracle still fails with the same
//! seed. The minimal scenario (its `seed` set) is written to `DIR/seed-S/minimal.toml` beside
//! the original (`scenario.toml`) and the minimal run's report; `meshward-sim run
//! DIR/seed-S/minimal.toml` replays it bit for bit.
//!
//! **Coverage** ("sometimes" assertions): each run marks what it reached, every fault kind
//! that fired, every network decision taken, and every oracle that had something to check
//! ([`COVERAGE`]); the batch counts the runs that reached each. With `--coverage` a batch
//! fails if one was never reached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::Scenario;
use crate::sim::Sim;

pub mod generate;
pub mod shrink;

pub use generate::generate;

/// What a batch may reach, each counted in the runs that reached it.
pub const COVERAGE: [&str; 40] = [
    "fault:partition",
    "fault:heal",
    "fault:flap",
    "fault:crash",
    "fault:restart",
    "fault:rolling-restart",
    "fault:skew",
    "fault:failover",
    "fault:snapshot",
    "fault:restore",
    "fault:master",
    "fault:demote",
    "fault:remove",
    "fault:rotate",
    "fault:power-loss",
    "fault:disk-full",
    "fault:disk-error",
    "net:lost",
    "net:duplicated",
    "net:reordered",
    "net:held-by-cut",
    "net:retransmitted",
    "net:disconnect",
    "oracle:convergence",
    "oracle:heal-converged",
    "oracle:commits-on-down-nodes",
    "oracle:leaders-two-epochs",
    "oracle:chain-switch",
    "oracle:equivocation",
    "oracle:failover-elected",
    "oracle:failover-refused",
    "oracle:hand-over",
    "oracle:revocation",
    "oracle:rotation",
    "oracle:beyond-frontier",
    "oracle:acknowledged-after-power-loss",
    "oracle:torn-writes",
    "oracle:full-disk-hold-released",
    "oracle:store-stop",
    "oracle:corrupt-data-checked",
];

/// Test hooks applied to every run of a batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hooks {
    /// A deliberate bug injected into every core.
    #[cfg(feature = "bugs")]
    pub bug: Option<meshward_node::core::Bug>,
}

/// How to run a batch.
#[derive(Clone, Debug)]
pub struct Options {
    /// First seed.
    pub first: u64,
    /// Seeds to run.
    pub seeds: u64,
    /// Stop starting runs after this long (wall clock).
    pub minutes: Option<f64>,
    /// Where failures (and the batch's `farm.json`) go.
    pub out: Option<PathBuf>,
    /// Runs a shrink may spend.
    pub shrink_runs: usize,
    /// One line per run on stderr.
    pub verbose: bool,
    /// Test hooks.
    pub hooks: Hooks,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            first: 0,
            seeds: 10,
            minutes: None,
            out: None,
            shrink_runs: 150,
            verbose: false,
            hooks: Hooks::default(),
        }
    }
}

/// One simulated run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Oracle failures; empty when it passed.
    pub failures: Vec<String>,
    /// Its summary.
    pub summary: Value,
    /// What it reached (names from [`COVERAGE`]).
    pub reached: Vec<&'static str>,
}

/// A failing seed, shrunk.
#[derive(Clone, Debug, Serialize)]
pub struct Failed {
    /// The seed.
    pub seed: u64,
    /// The oracle that failed ([`shrink::class`]).
    pub class: &'static str,
    /// Its failures.
    pub failures: Vec<String>,
    /// The minimal scenario, as TOML.
    pub minimal: String,
    /// The minimal scenario's failures.
    pub minimal_failures: Vec<String>,
    /// Nodes, faults and write series before and after shrinking.
    pub shrunk: [(usize, usize, usize); 2],
    /// Runs the shrink spent.
    pub shrink_runs: usize,
    /// Whether running the minimal scenario again gave the same summary, bit for bit.
    pub replays: bool,
    /// Where it was written.
    pub dir: Option<PathBuf>,
    /// The command that replays it.
    pub replay: String,
}

/// What a batch found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Batch {
    /// Seeds run, from the first.
    pub runs: u64,
    /// The first seed.
    pub first: u64,
    /// Failing seeds, shrunk.
    pub failed: Vec<Failed>,
    /// Runs that reached each coverage point.
    pub coverage: BTreeMap<&'static str, u64>,
    /// Coverage points no run reached.
    pub never: Vec<&'static str>,
    /// Runs per fault kind asked for that did not fire at least once (counted, not failed).
    pub unfired: BTreeMap<String, u64>,
    /// Revocations of a losing branch missing from a live node's final chain (each also an
    /// oracle failure when the chain's leader was live).
    pub revocations_undone: u64,
    /// CPU seconds of the runs (shrinks included), from the kernel's count for this thread.
    pub cpu_seconds: f64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Virtual seconds simulated.
    pub virtual_seconds: f64,
    /// Runs per CPU minute (without shrinks).
    pub runs_per_cpu_minute: f64,
    /// Nodes simulated in all, and the largest run.
    pub nodes: (u64, u64),
}

/// Runs `sc` with `seed` in the simulator, counting faults that did not fire.
pub fn run_scenario(sc: &Scenario, seed: u64, hooks: Hooks) -> anyhow::Result<Run> {
    let name = sc.name.clone();
    let nodes = sc.nodes;
    let mut sim = Sim::new(sc.clone(), seed, true)?;
    sim.count_unfired_faults();
    #[cfg(feature = "bugs")]
    if let Some(bug) = hooks.bug {
        sim.inject(bug);
    }
    let _ = hooks;
    sim.run()?;
    let replay = format!("meshward-sim run SCENARIO --seed {seed} --report DIR");
    let summary = sim.metrics.summary(&name, "sim", seed, nodes, &replay);
    Ok(Run {
        failures: sim.metrics.oracles.failures.clone(),
        reached: reached(&summary),
        summary,
    })
}

/// Runs a batch.
pub fn fuzz(opts: &Options) -> anyhow::Result<Batch> {
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let mut batch = Batch {
        first: opts.first,
        coverage: COVERAGE.iter().map(|c| (*c, 0)).collect(),
        ..Batch::default()
    };
    let mut run_cpu = 0.0;
    for seed in opts.first..opts.first + opts.seeds {
        if opts
            .minutes
            .is_some_and(|m| started.elapsed().as_secs_f64() >= m * 60.0)
        {
            break;
        }
        let sc = generate(seed);
        let t0 = cpu_seconds();
        let run = run_scenario(&sc, seed, opts.hooks)
            .with_context(|| format!("running the scenario of seed {seed}"))?;
        run_cpu += cpu_seconds() - t0;
        batch.runs += 1;
        batch.nodes.0 += sc.nodes as u64;
        batch.nodes.1 = batch.nodes.1.max(sc.nodes as u64);
        batch.virtual_seconds += run.summary["virtual_seconds"].as_f64().unwrap_or(0.0);
        batch.revocations_undone += run.summary["oracles"]["revocations_undone"]
            .as_u64()
            .unwrap_or(0);
        for r in &run.reached {
            *batch.coverage.entry(r).or_default() += 1;
        }
        let requested = &run.summary["faults"]["requested"];
        let fired = &run.summary["faults"]["fired"];
        for (kind, asked) in requested.as_object().into_iter().flatten() {
            if fired[kind].as_u64().unwrap_or(0) < asked.as_u64().unwrap_or(0) {
                *batch.unfired.entry(kind.clone()).or_default() += 1;
            }
        }
        if opts.verbose {
            eprintln!(
                "[farm] seed {seed}: {} nodes, {} faults, {:.0} virtual s: {}",
                sc.nodes,
                sc.faults.len(),
                run.summary["virtual_seconds"].as_f64().unwrap_or(0.0),
                if run.failures.is_empty() {
                    "passed".to_string()
                } else {
                    format!("FAILED: {}", run.failures[0])
                }
            );
        }
        if !run.failures.is_empty() {
            let failed = shrink_failure(&sc, seed, &run, opts)?;
            batch.failed.push(failed);
        }
    }
    batch.never = batch
        .coverage
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(c, _)| *c)
        .collect();
    batch.cpu_seconds = cpu_seconds() - cpu0;
    batch.wall_seconds = started.elapsed().as_secs_f64();
    batch.runs_per_cpu_minute = if run_cpu > 0.0 {
        batch.runs as f64 * 60.0 / run_cpu
    } else {
        0.0
    };
    if let Some(out) = &opts.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let mut text = serde_json::to_string_pretty(&batch)?;
        text.push('\n');
        std::fs::write(out.join("farm.json"), text)?;
    }
    Ok(batch)
}

/// Shrinks a failing run of `sc` with `seed` and writes what it found.
fn shrink_failure(sc: &Scenario, seed: u64, run: &Run, opts: &Options) -> anyhow::Result<Failed> {
    let class = shrink::class(&run.failures[0]);
    let mut best = sc.clone();
    let mut best_failures = run.failures.clone();
    let mut spent = 0;
    'outer: loop {
        for candidate in shrink::candidates(&best) {
            if spent >= opts.shrink_runs {
                break 'outer;
            }
            spent += 1;
            let Ok(r) = run_scenario(&candidate, seed, opts.hooks) else {
                continue;
            };
            if r.failures.iter().any(|f| shrink::class(f) == class) {
                best = candidate;
                best_failures = r.failures;
                continue 'outer;
            }
        }
        break;
    }
    best.name = format!("{}-minimal", sc.name);
    best.seed = seed;
    best.description = format!(
        "shrunk by `meshward-sim fuzz` from seed {seed} ({} nodes, {} faults): fails {class}",
        sc.nodes,
        sc.faults.len()
    );
    let minimal = best.to_toml()?;
    // The file must replay what was found: read it back, run it twice.
    let again = Scenario::parse(&minimal)?;
    let first = run_scenario(&again, seed, opts.hooks)?;
    let second = run_scenario(&again, seed, opts.hooks)?;
    let replays = without_wall(&first.summary) == without_wall(&second.summary)
        && first.failures == best_failures;
    let dir = opts.out.as_ref().map(|o| o.join(format!("seed-{seed}")));
    let replay = format!(
        "meshward-sim run {} --report {}",
        dir.as_ref().map_or_else(
            || "minimal.toml".to_string(),
            |d| d.join("minimal.toml").display().to_string()
        ),
        dir.as_ref().map_or_else(
            || "report".to_string(),
            |d| d.join("report").display().to_string()
        ),
    );
    if let Some(dir) = &dir {
        write_failure(dir, sc, &minimal, &again, seed)?;
    }
    Ok(Failed {
        seed,
        class,
        failures: run.failures.clone(),
        minimal,
        minimal_failures: best_failures,
        shrunk: [
            (sc.nodes, sc.faults.len(), sc.writes.len()),
            (best.nodes, best.faults.len(), best.writes.len()),
        ],
        shrink_runs: spent,
        replays,
        dir,
        replay,
    })
}

fn write_failure(
    dir: &Path,
    original: &Scenario,
    minimal: &str,
    parsed: &Scenario,
    seed: u64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("scenario.toml"), original.to_toml()?)?;
    let path = dir.join("minimal.toml");
    std::fs::write(&path, minimal)?;
    crate::simulate(&path, parsed.clone(), seed, Some(&dir.join("report")), true)?;
    Ok(())
}

fn without_wall(summary: &Value) -> Value {
    let mut s = summary.clone();
    s["wall_ms"] = Value::Null;
    s
}

/// What a run reached, from its summary.
fn reached(s: &Value) -> Vec<&'static str> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = Vec::new();
    for c in COVERAGE {
        let hit = if let Some(kind) = c.strip_prefix("fault:") {
            n(&s["faults"]["fired"][kind]) > 0
        } else {
            let net = &s["network"];
            let o = &s["oracles"];
            let disk = &s["disk"];
            let ops = s["leader_ops"].as_array().cloned().unwrap_or_default();
            let op_ok = |kind: &str| {
                ops.iter()
                    .any(|op| op["kind"] == kind && op["result"].get("Ok").is_some())
            };
            let failovers = s["failovers"].as_array().cloned().unwrap_or_default();
            match c {
                "net:lost" => n(&net["lost"]) > 0,
                "net:duplicated" => n(&net["duplicated"]) > 0,
                "net:reordered" => n(&net["reordered"]) > 0,
                "net:held-by-cut" => n(&net["held_by_cut"]) > 0,
                "net:retransmitted" => n(&net["retransmitted"]) > 0,
                "net:disconnect" => n(&net["disconnects"]) > 0,
                "oracle:convergence" => {
                    n(&s["live_nodes_at_end"]) >= 2 && n(&s["writes"]["committed"]) > 0
                }
                "oracle:heal-converged" => s["convergence"]["after_heals_ms"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()),
                "oracle:commits-on-down-nodes" => n(&o["commits_only_on_down_nodes"]) > 0,
                "oracle:leaders-two-epochs" => n(&o["epochs_seen"]) >= 2,
                "oracle:chain-switch" => n(&o["chain_switches"]) > 0,
                "oracle:equivocation" => n(&o["equivocations"]) > 0,
                "oracle:failover-elected" => failovers.iter().any(|f| f["epoch"].is_u64()),
                "oracle:failover-refused" => failovers.iter().any(|f| n(&f["refusals"]) > 0),
                "oracle:hand-over" => op_ok("demote"),
                "oracle:revocation" => op_ok("revoke"),
                "oracle:rotation" => n(&o["rotations_acknowledged"]) > 0,
                "oracle:beyond-frontier" => n(&o["refused_beyond_frontier"]) > 0,
                "oracle:acknowledged-after-power-loss" => {
                    n(&disk["power_losses"]) > 0 && n(&disk["stores_checked"]) > 0
                }
                "oracle:torn-writes" => n(&disk["writes_torn_or_lost"]) > 0,
                "oracle:full-disk-hold-released" => n(&disk["holds_released"]) > 0,
                "oracle:store-stop" => disk["store_stops"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()),
                "oracle:corrupt-data-checked" => n(&s["live_nodes_at_end"]) > 0,
                _ => false,
            }
        };
        if hit {
            out.push(c);
        }
    }
    out
}

/// CPU seconds this thread has used (`/proc/thread-self/schedstat`), or the process's
/// (`/proc/self/stat`, 10 ms ticks) where that is missing; 0 elsewhere.
pub fn cpu_seconds() -> f64 {
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        && ns > 0
    {
        return ns as f64 / 1e9;
    }
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| {
            // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
            let rest = text.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}
