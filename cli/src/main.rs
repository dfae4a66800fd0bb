//! The `meshward` command: clap arguments ([`args`]) that become API requests sent through
//! the client to the local daemon or a `--remote` node ([`exec`]), or run on the store when
//! no daemon runs; `run` starts the daemon.

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command};
use meshward_node::ops::LocalBackend;

mod args;
mod demo;
mod door;
mod exec;
mod files;
mod manual;
mod offline;
mod render;
mod unseal;
mod vendor;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli);
    let out = &mut std::io::stdout().lock();
    let g = &cli.global;
    let result = match cli.command {
        Command::Run(ref args) => meshward_daemon::run(&g.data, &args.options()),
        Command::Init(ref args) => files::init(g, args, out),
        Command::Join(ref args) => meshward_daemon::setup::join(&g.data, &args.options(), out),
        Command::Ha(args::HaCmd::CreateJoiningCode(ref args)) => {
            meshward_daemon::pairing::create_joining_code(&g.data, &args.options(), out)
        }
        Command::Demo(ref args) => demo::run(args),
        Command::Restore(args) => {
            offline::restore(g, args, &mut LocalBackend::new(g.data.clone()), out)
        }
        Command::Unseal(args) => unseal::unseal_command(g, &args, out),
        Command::Backup(args) => files::backup(g, args, out),
        Command::Licence(args::LicenceCmd::Keygen { out: ref file }) => vendor::keygen(file, out),
        Command::Licence(ref cmd @ args::LicenceCmd::Issue { .. }) => vendor::issue(cmd, out),
        Command::Wait { timeout } => door::wait_for_daemon(&g.data, timeout, out),
        Command::Openapi => {
            use std::io::Write as _;
            writeln!(out, "{}", meshward_daemon::api::openapi()).map_err(Into::into)
        }
        Command::Completions { shell } => manual::completions(shell, out),
        Command::Man => manual::man(out),
        _ => exec::run(cli, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: MESHWARD_LOG's filter (default `info` for the daemon and the demo, `warn`
/// for one-shot commands, so they print only their answer), as text, coloured only on a
/// terminal, or as JSON lines.
fn init_logs(cli: &Cli) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let default = match cli.command {
        Command::Run(_) | Command::Demo(_) => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_env("MESHWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.global.log_format {
        args::LogFormat::Json => logs.json().init(),
        args::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
