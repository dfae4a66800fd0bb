//! `meshward-sim`: runs a scenario in the simulator or the emulator and writes a report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use meshward_simulations::{Scenario, compare, emulate, farm, fencing, simulate};

#[derive(Parser, Debug)]
#[command(
    name = "meshward-sim",
    version,
    about = "Network simulation and emulation for meshward"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs a scenario and writes summary.json and SVG plots.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// sim: real node cores on a virtual clock; emulate: real daemons in network
        /// namespaces (needs root).
        #[arg(long, value_enum, default_value_t = Mode::Sim)]
        mode: Mode,
        /// Directory for the report.
        #[arg(long)]
        report: PathBuf,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
    },
    /// Runs scenarios generated from seeds, checks every oracle on each, shrinks failures to
    /// a minimal scenario (written under --out) and counts coverage.
    Fuzz {
        /// Seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Stop starting runs after this many minutes.
        #[arg(long)]
        minutes: Option<f64>,
        /// Directory for farm.json and the failures (each with its minimal scenario).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fail if a fault kind, network decision or oracle was never reached.
        #[arg(long)]
        coverage: bool,
        /// Runs a shrink may spend.
        #[arg(long, default_value_t = 150)]
        shrink_runs: usize,
        /// One line per run on stderr.
        #[arg(long)]
        verbose: bool,
    },
    /// Prints the figures of two reports side by side (report directories or their
    /// summary.json).
    Compare {
        /// The first report.
        a: PathBuf,
        /// The second report.
        b: PathBuf,
    },
    /// Model-checks the HA rules: every interleaving of elections, endorsements, writes and
    /// delayed chains for a few nodes, exhaustively within the bounds.
    Fencing {
        /// Nodes (2 to 6).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Highest epoch an election may start.
        #[arg(long, default_value_t = 3)]
        max_epoch: u64,
        /// Config records per epoch and branch.
        #[arg(long, default_value_t = 1)]
        writes: u8,
        /// Stop after this many states.
        #[arg(long, default_value_t = 20_000_000)]
        max_states: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sim,
    Emulate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Ok(filter) = std::env::var("MESHWARD_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshward-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Run {
            scenario,
            seed,
            mode,
            report,
            quiet,
        } => run_scenario(scenario, seed, mode, report, quiet),
        Cmd::Fuzz {
            seeds,
            first,
            minutes,
            out,
            coverage,
            shrink_runs,
            verbose,
        } => {
            let batch = farm::fuzz(&farm::Options {
                first,
                seeds,
                minutes,
                out: out.clone(),
                shrink_runs,
                verbose,
                hooks: farm::Hooks::default(),
            })?;
            print_batch(&batch);
            let mut ok = batch.failed.is_empty();
            if coverage && !batch.never.is_empty() {
                eprintln!("FAILED: never reached: {}", batch.never.join(", "));
                ok = false;
            }
            if let Some(out) = out {
                println!("farm.json and failures in {}", out.display());
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Compare { a, b } => {
            let (a, b) = (compare::load(&a)?, compare::load(&b)?);
            print!("{}", compare::compare(&a, &b));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fencing {
            nodes,
            max_epoch,
            writes,
            max_states,
        } => {
            anyhow::ensure!(
                (2..=6).contains(&nodes),
                "--nodes {nodes}: the model checks 2 to 6 nodes"
            );
            let report = fencing::check(&fencing::Bounds {
                writes_per_epoch: writes,
                max_states,
                ..fencing::Bounds::new(nodes, max_epoch)
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.violation.is_none() && !report.cut {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn print_batch(batch: &farm::Batch) {
    println!(
        "{} runs (seeds {}..{}), {} failed; {:.1} CPU s, {:.0} runs per CPU minute, {:.0} virtual s \
         ({:.0}x real time per CPU s)",
        batch.runs,
        batch.first,
        batch.first + batch.runs,
        batch.failed.len(),
        batch.cpu_seconds,
        batch.runs_per_cpu_minute,
        batch.virtual_seconds,
        batch.virtual_seconds / batch.cpu_seconds.max(1e-9),
    );
    for f in &batch.failed {
        eprintln!(
            "FAILED seed {} ({}): {}\n  shrunk from {:?} to {:?} (nodes, faults, writes) in {} runs{}\n  replay: {}",
            f.seed,
            f.class,
            f.failures[0],
            f.shrunk[0],
            f.shrunk[1],
            f.shrink_runs,
            if f.replays {
                ""
            } else {
                " (the minimal run does NOT replay the same)"
            },
            f.replay
        );
    }
    let never = if batch.never.is_empty() {
        "every point reached".to_string()
    } else {
        format!("never reached: {}", batch.never.join(", "))
    };
    println!("coverage: {never}");
}

fn run_scenario(
    path: PathBuf,
    seed: Option<u64>,
    mode: Mode,
    report: PathBuf,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&path)?;
    let seed = seed.unwrap_or(scenario.seed);
    match mode {
        Mode::Sim => {
            let outcome = simulate(&path, scenario, seed, Some(&report), quiet)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&outcome.summary["messages"])?
            );
            let virtual_s = outcome.summary["virtual_seconds"].as_f64().unwrap_or(0.0);
            let wall_s = outcome.summary["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            println!(
                "{virtual_s:.1} virtual s in {wall_s:.2} s: {:.0}x real time",
                virtual_s / wall_s.max(1e-3)
            );
            if outcome.failures.is_empty() {
                println!("passed; report in {}", report.display());
                Ok(ExitCode::SUCCESS)
            } else {
                for f in &outcome.failures {
                    eprintln!("FAILED: {f}");
                }
                eprintln!("seed {seed}; replay with:\n  {}", outcome.replay);
                Ok(ExitCode::FAILURE)
            }
        }
        Mode::Emulate => {
            if let Some(why) = emulate::unavailable() {
                println!("emulation skipped: {why}");
                return Ok(ExitCode::SUCCESS);
            }
            let meshward = meshward_bin()?;
            let (summary, failures) =
                emulate::emulate_and_compare(&path, scenario, seed, &meshward, &report)?;
            println!("{}", serde_json::to_string_pretty(&summary["comparison"])?);
            if failures.is_empty() {
                println!("passed; report in {}", report.display());
                Ok(ExitCode::SUCCESS)
            } else {
                for f in &failures {
                    eprintln!("FAILED: {f}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The `meshward` binary: `$MESHWARD_BIN`, or built now in release with the fault hooks the
/// emulation needs (latency).
fn meshward_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("MESHWARD_BIN") {
        return Ok(PathBuf::from(bin));
    }
    meshward_simulations::emulate::build_meshward(true)
        .context("building the meshward binary; or set MESHWARD_BIN")
}
