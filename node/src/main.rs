//! The `meshward` command.

use std::process::ExitCode;

use clap::Parser as _;
use meshward_node::cli::{Cli, Command, LocalBackend, run};
use meshward_node::core::Secret;
use meshward_node::{cluster, control, daemon, demo};

/// The new password of `password change`, read from stdin (one line, bounded).
fn read_secret(command: &Command) -> anyhow::Result<Option<Secret>> {
    use std::io::{BufRead as _, Read as _};
    if !matches!(
        command,
        Command::Password(meshward_node::ha::PasswordCmd::Change { .. })
    ) {
        return Ok(None);
    }
    // Wiped when dropped, whatever happens below.
    let mut line = Secret(String::new());
    std::io::stdin()
        .lock()
        .take(meshward_node::core::MAX_PASSWORD as u64 + 2)
        .read_line(&mut line.0)?;
    let password = Secret(line.0.trim_end_matches(['\r', '\n']).to_string());
    anyhow::ensure!(
        !password.0.is_empty(),
        "give the new password on stdin (one line)"
    );
    Ok(Some(password))
}

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
        _ => match read_secret(&cli.command).and_then(|secret| {
            control::forward(&cli.global.data, std::env::args().skip(1).collect(), secret)
        }) {
            // A daemon holds the store: it ran the command.
            Ok(Some(reply)) => {
                print!("{}", reply.stdout);
                match reply.error {
                    None => Ok(()),
                    Some(e) => Err(anyhow::anyhow!(e)),
                }
            }
            Ok(None) => {
                let mut backend = LocalBackend::for_command(cli.global.data.clone(), &cli.command);
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
