//! `meshward-sim`: runs a scenario in the simulator or the emulator and writes a report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use meshward_simulations::{Scenario, emulate, fencing, simulate};

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
