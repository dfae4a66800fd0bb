//! Mode 2: real `meshward` daemons, each in its own network namespace.
//!
//! The harness creates a hub namespace holding a bridge, and per node a namespace joined to
//! it by a veth pair, with the node's address (10.77.0.N/24) only inside its namespace: the
//! host's namespace is never touched. Nodes get a genesis roster signed by a real leader key
//! (as the end-to-end tests do) and run `meshward run --listen 10.77.0.N:7946 --peer …`.
//!
//! Faults: a partition or a flap cut is an iptables DROP of the peers' addresses in each
//! node's namespace; `loss` is an iptables `statistic` drop of every incoming packet (QUIC
//! then retransmits, so it slows both gossip and sync, unlike the simulator, which drops only
//! gossip); `bandwidth` is a `tc tbf` on each node's veth; a crash is SIGKILL by pid and a
//! restart starts the daemon again on its data directory. Latency comes from the transport's
//! delay fault hook (this kernel has no netem): each daemon is told, with `meshward fault
//! delay`, to hold what each peer sends for the one-way latency the scenario gives that pair
//! (drawn per message from a range), so the daemons must be built with the `fault-injection`
//! feature. It delays gossip and sync messages, not QUIC handshakes.
//!
//! A failover fault runs `meshward ha failover` on its node, retried every `retry` within the
//! scenario's duration until it succeeds.
//!
//! Not emulated (reported in the summary): duplication, reordering and clock skew.
//!
//! Everything started is stopped by pid and every namespace is deleted (which removes its
//! veths and the bridge), also on error: [`Lab`] does it on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;

use crate::report::Failover;
use crate::scenario::{FaultKind, Latency, Scenario};
use crate::sim::Micros;

mod lab;
use lab::*;

/// Most nodes this machine runs as real daemons.
pub const MAX_NODES: usize = 25;
const PORT: u16 = 7946;

/// Why emulation cannot run here, if it cannot: not root, a tool missing, or network
/// namespaces not allowed (checked by creating and deleting one).
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("emulation needs root (network namespaces, iptables, tc)".into());
    }
    for tool in ["ip", "iptables", "tc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "emulation needs `{tool}`; install it (apt-get install -y iproute2 iptables)"
            ));
        }
    }
    let probe = format!("{}probe", namespace_prefix());
    if let Err(e) = run("ip", &["netns", "add", &probe]) {
        return Some(format!("network namespaces cannot be created here: {e:#}"));
    }
    let _ = run("ip", &["netns", "del", &probe]);
    None
}

/// The prefix of the names of the network namespaces this process creates.
pub fn namespace_prefix() -> String {
    format!("mw{}-", std::process::id() % 100_000)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Runs `scenario` (read from `path`) on real daemons, working in `report/nodes`, then in the
/// simulator with the same seed (report in `report/sim`), and writes `report/summary.json`
/// with the figures both measure side by side under `comparison`. Returns that summary and
/// the emulation's oracle failures.
pub fn emulate_and_compare(
    path: &Path,
    scenario: Scenario,
    seed: u64,
    meshward: &Path,
    report: &Path,
) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    let work = report.join("nodes");
    let _ = std::fs::remove_dir_all(&work);
    let (mut summary, failures) = emulate(&scenario, seed, meshward, &work)?;
    let sim = crate::simulate(path, scenario, seed, Some(&report.join("sim")), true)?;
    summary["comparison"] = compare(&summary, &sim.summary);
    std::fs::write(
        report.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    Ok((summary, failures))
}

/// The figures both modes measure, side by side.
fn compare(emulated: &serde_json::Value, simulated: &serde_json::Value) -> serde_json::Value {
    json!({
        "passed": { "emulate": emulated["passed"], "sim": simulated["passed"] },
        "event_rows": {
            "emulate": emulated["oracles"]["event_rows"],
            "sim": simulated["oracles"]["event_rows"],
        },
        "distinct_digests": {
            "emulate": emulated["oracles"]["distinct_digests"],
            "sim": simulated["oracles"]["distinct_digests"],
        },
        "faults_fired": { "emulate": emulated["faults"]["fired"], "sim": simulated["faults"]["fired"] },
        "failover_elected_after_asked_ms": {
            "emulate": elected_after_asked(emulated),
            "sim": elected_after_asked(simulated),
        },
        "push_lag_ms": {
            "emulate": emulated["push_lag_ms"],
            "sim": simulated["messages"]["push_lag_ms"],
        },
        "convergence_after_end_ms": {
            "emulate": emulated["convergence"]["after_end_ms"],
            "sim_converged_at_ms": simulated["convergence"]["converged_at_ms"],
            "sim_after_heals_ms": simulated["convergence"]["after_heals_ms"],
        },
        "not_emulated": emulated["not_emulated"],
    })
}

/// Each failover's time from being asked for to elected (null if never), from a summary.
fn elected_after_asked(summary: &serde_json::Value) -> Vec<serde_json::Value> {
    summary["failovers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["elected_after_asked_ms"].clone())
        .collect()
}

/// Runs `scenario` on real daemons; returns the summary and the oracle failures.
pub fn emulate(
    scenario: &Scenario,
    seed: u64,
    meshward: &Path,
    work: &Path,
) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    let n = scenario.nodes;
    ensure!(
        n <= MAX_NODES,
        "emulation runs at most {MAX_NODES} nodes on this machine; the scenario has {n}"
    );
    let mut unsupported = Vec::new();
    let net = &scenario.network;
    if net.duplicate > 0.0 {
        unsupported.push("duplicate");
    }
    if net.reorder > 0.0 {
        unsupported.push("reorder");
    }
    let mut lab = Lab::new(n, meshward, work)?;
    lab.latency = latencies(scenario)?;
    lab.setup_network(scenario)?;
    lab.init_cluster()?;
    let edges = topology(scenario, seed);
    for (i, peers) in edges.iter().enumerate() {
        lab.start(i, peers)?;
    }
    // The timeline: (time, step), in order.
    let mut steps: Vec<(Duration, Step)> = Vec::new();
    let mut failovers: Vec<Failover> = Vec::new();
    for (s, w) in scenario.writes.iter().enumerate() {
        let nodes = w.nodes.resolve(n)?;
        for k in 0..w.count {
            let node = nodes[(k % nodes.len() as u64) as usize];
            steps.push((
                w.at + w.every * k as u32,
                Step::Write {
                    node,
                    tag: format!("n{node}-s{s}-w{k}"),
                    rows: w.rows,
                },
            ));
        }
    }
    let mut requested = std::collections::BTreeMap::<String, u64>::new();
    for f in &scenario.faults {
        *requested.entry(f.kind.name().to_string()).or_default() += 1;
        match &f.kind {
            FaultKind::Flap {
                a,
                b,
                down,
                up,
                count,
            } => {
                let (a, b) = (a.resolve(n)?, b.resolve(n)?);
                for c in 0..*count as u32 {
                    let at = f.at + (*down + *up) * c;
                    steps.push((at, Step::Flap(Some((a.clone(), b.clone())))));
                    steps.push((at + *down, Step::Flap(None)));
                }
                steps.push((f.at + (*down + *up) * *count as u32, Step::Fired("flap")));
            }
            FaultKind::RollingRestart {
                nodes, down, every, ..
            } => {
                for (k, i) in nodes.resolve(n)?.into_iter().enumerate() {
                    steps.push((f.at + *every * k as u32, Step::Crash(i)));
                    steps.push((f.at + *every * k as u32 + *down, Step::Restart(i)));
                }
                steps.push((f.at, Step::Fired("rolling-restart")));
            }
            FaultKind::Crash { nodes } => {
                for i in nodes.resolve(n)? {
                    steps.push((f.at, Step::Crash(i)));
                }
            }
            FaultKind::Restart { nodes } => {
                for i in nodes.resolve(n)? {
                    steps.push((f.at, Step::Restart(i)));
                }
            }
            FaultKind::Partition { groups } => {
                let mut label = vec![groups.len() + 1; n];
                for (g, nodes) in groups.iter().enumerate() {
                    for i in nodes.resolve(n)? {
                        label[i] = g + 1;
                    }
                }
                steps.push((f.at, Step::Partition(label)));
            }
            FaultKind::Heal {} => steps.push((f.at, Step::Heal)),
            FaultKind::Skew { .. } => unsupported.push("skew"),
            FaultKind::Snapshot { .. } => unsupported.push("snapshot"),
            FaultKind::Restore { .. } => unsupported.push("restore"),
            FaultKind::Master { .. } => unsupported.push("master"),
            FaultKind::Demote { .. } => unsupported.push("demote"),
            FaultKind::Remove { .. } => unsupported.push("remove"),
            FaultKind::Rotate { .. } => unsupported.push("rotate"),
            FaultKind::PowerLoss { .. } => unsupported.push("power-loss"),
            FaultKind::DiskFull { .. } => unsupported.push("disk-full"),
            FaultKind::DiskError { .. } => unsupported.push("disk-error"),
            FaultKind::Failover { node, retry } => {
                failovers.push(Failover {
                    node: *node as u32,
                    asked_at: micros(f.at),
                    retry: micros(*retry),
                    ..Failover::default()
                });
                let record = failovers.len() - 1;
                steps.push((
                    f.at,
                    Step::Failover {
                        record,
                        retry: *retry,
                    },
                ));
            }
        }
    }
    // Not emulated (reported under not_emulated), so not a fault that must fire.
    requested.remove("skew");
    // In time order, and in the order added at one time; a retried failover goes back in.
    let mut queue: std::collections::BTreeMap<(Duration, usize), Step> = steps
        .into_iter()
        .enumerate()
        .map(|(k, (at, step))| ((at, k), step))
        .collect();
    let mut next_seq = queue.len();
    let mut fired = std::collections::BTreeMap::<String, u64>::new();
    let mut writes = (0u64, 0u64);
    let mut last_heal = None;
    let start = Instant::now();
    let mut k = 0;
    while let Some(((at, _), step)) = queue.pop_first() {
        k += 1;
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        eprint!(
            "\r[meshward-sim emulate] {}: t={:.1}s step {k} live={}/{n}   ",
            scenario.name,
            start.elapsed().as_secs_f64(),
            lab.live()
        );
        let name = step.name();
        let ok = match step {
            Step::Write { node, tag, rows } => {
                if lab.write(node, &tag, rows).is_ok() {
                    writes.0 += rows;
                } else {
                    writes.1 += 1;
                }
                continue;
            }
            Step::Partition(label) => lab.cut("MWCUT", |a, b| label[a] != label[b]).is_ok(),
            Step::Heal => {
                last_heal = Some(start.elapsed());
                lab.flush("MWCUT").is_ok() && lab.flush("MWFLAP").is_ok()
            }
            Step::Flap(Some((a, b))) => lab
                .cut("MWFLAP", |x, y| {
                    (a.contains(&x) && b.contains(&y)) || (a.contains(&y) && b.contains(&x))
                })
                .is_ok(),
            Step::Flap(None) => {
                last_heal = Some(start.elapsed());
                lab.flush("MWFLAP").is_ok()
            }
            Step::Crash(i) => lab.crash(i),
            Step::Restart(i) => lab.start(i, &edges[i]).is_ok(),
            Step::Fired(_) => true,
            Step::Failover { record, retry } => {
                let fo = &mut failovers[record];
                fo.attempts += 1;
                match lab.cli(fo.node as usize, &["ha", "failover"]) {
                    Ok(_) => {
                        fo.elected_at = Some(micros(start.elapsed()));
                        true
                    }
                    Err(e) => {
                        fo.refuse(micros(start.elapsed()), format!("{e:#}"));
                        // Retried within the scenario's duration only.
                        let again = start.elapsed() + retry;
                        if again < scenario.duration {
                            next_seq += 1;
                            queue.insert((again, next_seq), Step::Failover { record, retry });
                        }
                        false
                    }
                }
            }
        };
        if ok {
            *fired.entry(name.to_string()).or_default() += 1;
        }
    }
    let until = start.elapsed().max(scenario.duration);
    if let Some(wait) = until.checked_sub(start.elapsed()) {
        std::thread::sleep(wait);
    }
    // Converged: every live node shows the same digest.
    let settle_start = Instant::now();
    let mut converged_after = None;
    let mut last = Vec::new();
    let mut statuses = Vec::new();
    while settle_start.elapsed() < scenario.settle {
        statuses = lab.statuses();
        last = statuses.iter().filter_map(digest).collect();
        let first = last.first().map(|d| d.0.clone());
        if !last.is_empty() && last.iter().all(|d| Some(&d.0) == first.as_ref()) {
            converged_after = Some(settle_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!();
    let mut failures = Vec::new();
    if converged_after.is_none() {
        failures.push(format!(
            "the live nodes had not converged {:?} after the scenario's end: {last:?}",
            scenario.settle
        ));
    }
    let rows = last.first().map_or(0, |d| d.1);
    if converged_after.is_some() && lab.live() == n && rows != writes.0 {
        failures.push(format!("{} event rows written, {rows} held", writes.0));
    }
    for (kind, asked) in &requested {
        let got = fired.get(kind).copied().unwrap_or(0);
        if got < *asked {
            failures.push(format!("fault {kind}: asked for {asked}, fired {got}"));
        }
    }
    let summary = json!({
        "scenario": scenario.name,
        "mode": "emulate",
        "seed": seed,
        "nodes": n,
        "live_nodes_at_end": lab.live(),
        "passed": failures.is_empty(),
        "wall_ms": start.elapsed().as_millis() as u64,
        "writes": { "rows_committed": writes.0, "failed": writes.1 },
        "oracles": {
            "distinct_digests": last.iter().map(|d| &d.0).collect::<std::collections::BTreeSet<_>>().len(),
            "event_rows": rows,
            "failures": failures,
        },
        "convergence": {
            "after_end_ms": converged_after.map(|d| d.as_millis() as u64),
            "last_heal_at_ms": last_heal.map(|d: Duration| d.as_millis() as u64),
        },
        "push_lag_ms": push_lag(&statuses),
        "failovers": failovers.iter().map(Failover::summary).collect::<Vec<_>>(),
        "faults": { "requested": requested, "fired": fired },
        "not_emulated": unsupported,
    });
    Ok((summary, failures))
}

#[derive(Debug)]
enum Step {
    Write { node: usize, tag: String, rows: u64 },
    Partition(Vec<usize>),
    Heal,
    Flap(Option<(Vec<usize>, Vec<usize>)>),
    Crash(usize),
    Restart(usize),
    Fired(&'static str),
    Failover { record: usize, retry: Duration },
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Write { .. } => "write",
            Step::Partition(_) => "partition",
            Step::Heal => "heal",
            Step::Flap(Some(_)) => "flap-cut",
            Step::Flap(None) => "flap-heal",
            Step::Crash(_) => "crash",
            Step::Restart(_) => "restart",
            Step::Fired(name) => name,
            Step::Failover { .. } => "failover",
        }
    }
}

/// (digest, event rows) from a node's `status --json`.
fn digest(status: &serde_json::Value) -> Option<(String, u64)> {
    Some((
        status["digest"].as_str()?.to_string(),
        status["rows"]["events"].as_u64()?,
    ))
}

/// The daemons' replication lag of applied pushes (commit on the origin to durable here, one
/// host clock): the median of the nodes' p50 and the largest p99.
fn push_lag(statuses: &[serde_json::Value]) -> serde_json::Value {
    let lags: Vec<&serde_json::Value> = statuses.iter().map(|s| &s["mesh"]["lag"]).collect();
    let mut p50: Vec<u64> = lags.iter().filter_map(|l| l["p50_us"].as_u64()).collect();
    p50.sort_unstable();
    let p99 = lags.iter().filter_map(|l| l["p99_us"].as_u64()).max();
    let pushes: u64 = lags.iter().filter_map(|l| l["pushes"].as_u64()).sum();
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "pushes": pushes,
        "p50_median_over_nodes": p50.get(p50.len() / 2).copied().map(ms),
        "p99_max_over_nodes": p99.map(ms),
    })
}

/// The one-way latency range `(min, max)` from node `a` to node `b`, per the scenario.
fn latencies(scenario: &Scenario) -> anyhow::Result<Vec<Vec<(Duration, Duration)>>> {
    let site = scenario.site_of()?;
    Ok(site
        .iter()
        .map(|&a| {
            site.iter()
                .map(|&b| match scenario.latency_between(a, b) {
                    Latency::Fixed(d) => (*d, *d),
                    Latency::Uniform(lo, hi) => (*lo, *hi),
                })
                .collect()
        })
        .collect())
}

/// Who dials whom: as in the simulator, everyone or `degree` random peers.
fn topology(scenario: &Scenario, seed: u64) -> Vec<Vec<usize>> {
    use rand::{Rng as _, SeedableRng as _};
    let n = scenario.nodes;
    let degree = scenario.topology.degree;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|a| {
            if degree == 0 || degree + 1 >= n {
                (0..n).filter(|&b| b != a).collect()
            } else {
                let mut chosen = std::collections::BTreeSet::new();
                while chosen.len() < degree {
                    let b = rng.gen_range(0..n);
                    if b != a {
                        chosen.insert(b);
                    }
                }
                chosen.into_iter().collect()
            }
        })
        .collect()
}

/// Builds the `meshward` binary with the fault hooks (latency, cuts) that emulation and the
/// end-to-end tests need, in release or debug, and returns its path.
pub fn build_meshward(release: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the simulations package has no parent directory")?;
    let mut cmd = Command::new(cargo);
    // What cargo sets for the running test or binary (its package's name, manifest, ...), not
    // for this build. Inherited, they would differ from the outer build's environment, and
    // dependencies whose build scripts watch them (ring, quinn) would be rebuilt, a minute each
    // time, and again by the next outer build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&&*name)
        {
            cmd.env_remove(&*name);
        }
    }
    cmd.current_dir(workspace).args([
        "build",
        "--quiet",
        "-p",
        "meshward",
        "--bin",
        "meshward",
        "--features",
        "fault-injection",
        "--message-format=json",
    ]);
    if release {
        cmd.arg("--release");
    }
    let output = cmd.output().context("running cargo build")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo build failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).context("cargo output is not UTF-8")?;
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_meshward = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "meshward"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if let (true, Some(exe)) = (is_meshward, message["executable"].as_str()) {
            return Ok(PathBuf::from(exe));
        }
    }
    anyhow::bail!("cargo build reported no `meshward` executable")
}
