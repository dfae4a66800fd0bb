//! The `meshward` command.

use std::process::ExitCode;

use clap::Parser as _;
use meshward_node::cli::{Cli, Command, LocalBackend, run};
use meshward_node::{cluster, control, daemon, demo};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("MESHWARD_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => daemon::run(&cli.global.data, args),
        Command::Init(args) => cluster::init(&cli.global.data, args, &mut std::io::stdout().lock()),
        Command::Join(args) => cluster::join(&cli.global.data, args, &mut std::io::stdout().lock()),
        Command::Demo(args) => demo::run(args),
        _ => match control::forward(&cli.global.data, std::env::args().skip(1).collect()) {
            // A daemon holds the store: it ran the command.
            Ok(Some(reply)) => {
                print!("{}", reply.stdout);
                match reply.error {
                    None => Ok(()),
                    Some(e) => Err(anyhow::anyhow!(e)),
                }
            }
            Ok(None) => {
                let mut backend = LocalBackend::new(cli.global.data.clone());
                run(cli, &mut backend, &mut std::io::stdout().lock())
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
