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
mod offline;
mod render;
mod unseal;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("MESHWARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let out = &mut std::io::stdout().lock();
    let g = &cli.global;
    let result = match cli.command {
        Command::Run(ref args) => meshward_daemon::run(&g.data, &args.options()),
        Command::Init(ref args) => meshward_node::lifecycle::init(&g.data, &args.options(), out),
        Command::Join(ref args) => meshward_daemon::setup::join(&g.data, &args.options(), out),
        Command::Demo(ref args) => demo::run(args),
        Command::Restore(args) => {
            offline::restore(g, args, &mut LocalBackend::new(g.data.clone()), out)
        }
        Command::Unseal(args) => unseal::unseal_command(g, &args, out),
        Command::Backup(args) => files::backup(g, args, out),
        Command::Openapi => {
            use std::io::Write as _;
            writeln!(out, "{}", meshward_daemon::api::openapi()).map_err(Into::into)
        }
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
