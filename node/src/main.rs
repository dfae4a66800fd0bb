//! The `meshward` command.
//!
//! Temporary hand-parsed entry point for the audit crash test (branch `audit`); the lead wires
//! `audit record` into the clap CLI.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::Context as _;

const USAGE: &str = "usage: meshward audit record --data DIR --stdin";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["audit", "record", rest @ ..] => audit_record(rest),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// `meshward audit record --data DIR --stdin`
fn audit_record(args: &[&str]) -> anyhow::Result<()> {
    let (mut data, mut stdin) = (None, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--data" => data = args.next().copied(),
            "--stdin" => stdin = true,
            other => anyhow::bail!("unexpected argument {other:?}; {USAGE}"),
        }
    }
    let (Some(data), true) = (data, stdin) else {
        anyhow::bail!("{USAGE}");
    };
    let db = open_store(Path::new(data))?;
    meshward_node::audit::run_stdin_writer(
        &db,
        std::io::BufReader::new(std::io::stdin()),
        std::io::stdout().lock(),
    )
}

/// Opens `DIR/meshward.redb`, creating the directory (0700) and the file (0600) if missing.
fn open_store(dir: &Path) -> anyhow::Result<redb::Database> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join("meshward.redb");
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating store {}", path.display()))?;
    redb::Database::create(&path).with_context(|| format!("opening store at {}", path.display()))
}
