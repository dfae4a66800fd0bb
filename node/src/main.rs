//! The `meshward` command.

use std::process::ExitCode;

use clap::Parser as _;
use meshward_node::cli::{Cli, Command, LocalBackend};
use meshward_node::{cli, cli_admin, cluster, daemon, demo, sealed};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("MESHWARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let out = &mut std::io::stdout().lock();
    let g = &cli.global;
    let result = match cli.command {
        Command::Run(ref args) => daemon::run(&g.data, args),
        Command::Init(ref args) => cluster::init(&g.data, args, out),
        Command::Join(ref args) => cluster::join(&g.data, args, out),
        Command::Demo(ref args) => demo::run(args),
        Command::Restore(args) => {
            cli_admin::restore(g, args, &mut LocalBackend::new(g.data.clone()), out)
        }
        Command::Unseal(args) => sealed::unseal_command(g, &args, out),
        Command::Backup(args) => cli::backup(g, args, out),
        Command::Openapi => {
            use std::io::Write as _;
            writeln!(out, "{}", meshward_node::api::openapi()).map_err(Into::into)
        }
        _ => cli::run(cli, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
