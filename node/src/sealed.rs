//! A sealed node: one that belongs to a cluster but whose MEK file (`DATA/mek`, see
//! [`crate::mek::MEK_FILE`]) is missing, e.g. after the operator moved it to a vault.
//!
//! `meshward run` on a sealed node does not open the mesh. It serves the control socket with
//! two commands only: `status` (which says the node is sealed) and `unseal --mek FILE`, which
//! checks that FILE holds the cluster's MEK, installs it as `DATA/mek` (0600) and lets the
//! daemon go on starting. Every other command is refused with a message saying how to unseal.
//! A standalone node (no cluster yet) has no MEK and is not sealed.
//!
//! The check: the key must open the cluster CA's key, sealed with the MEK in the node's
//! verified mastered chain (the `SealedSecret` record `init` writes). A key that does not, a
//! file that holds no key, or a node whose chain holds nothing sealed to check against, is
//! refused, and nothing is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser as _};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::cli::{Cli, Command};
use crate::control::{ControlReply, ControlRequest, MAX_REQUEST, SOCKET};
use crate::mek::{MEK_FILE, Mek};
use crate::pki::PkiError;
use crate::store::Store;

/// How long a control connection may take to send its request while sealed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `meshward unseal`
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The MEK file to install as the node's (absolute when a sealed daemon runs).
    #[arg(long)]
    pub mek: PathBuf,
}

/// Whether the node in `data` is sealed: it belongs to a cluster and has no MEK file.
pub fn is_sealed(data: &Path, store: &Store) -> anyhow::Result<bool> {
    Ok(store.anchor()?.is_some() && !data.join(MEK_FILE).exists())
}

/// Installs the MEK in `file` as the node's (in `data`, whose store is `store`), once it has
/// opened the cluster CA's key sealed in the node's mastered chain. Refuses to replace an
/// existing MEK file; a refused key writes nothing.
pub fn unseal(data: &Path, store: &Store, file: &Path) -> anyhow::Result<()> {
    let target = data.join(MEK_FILE);
    if std::fs::symlink_metadata(&target).is_ok() {
        anyhow::bail!("the node is not sealed: {} exists", target.display());
    }
    let mek = Mek::load(file)?;
    check_mek(store, &mek, file)?;
    mek.write_new(&target)?;
    Ok(())
}

/// Whether `mek` is the cluster's: it must open the CA key sealed in the verified chain.
fn check_mek(store: &Store, mek: &Mek, file: &Path) -> anyhow::Result<()> {
    let chain = crate::roster::chain(store)?.context("this node belongs to no cluster")?;
    match crate::cluster::open_ca(store, chain.cluster(), mek) {
        Ok(_) => Ok(()),
        Err(e) => match e.downcast_ref::<PkiError>() {
            Some(PkiError::WrongMek) => anyhow::bail!(
                "the key in {} is not this cluster's MEK: it does not open the cluster CA sealed \
                 in the mastered chain; nothing was written: give the MEK file `meshward init` \
                 wrote (from your vault)",
                file.display()
            ),
            Some(PkiError::NoCa) => anyhow::bail!(
                "this node's mastered chain holds no cluster CA sealed with the MEK, so the key \
                 in {} cannot be checked; nothing was written",
                file.display()
            ),
            _ => Err(e.context("checking the key against the sealed cluster CA")),
        },
    }
}

/// Serves `status` and `unseal` on the control socket until the node is unsealed (`Ok`) or a
/// signal stops it (`Err`). Cancel-safe only at its end: the socket is removed on both paths.
pub async fn serve(data: &Path) -> anyhow::Result<()> {
    let socket = data.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    set_private(&socket)?;
    warn!(
        mek = %data.join(MEK_FILE).display(),
        "the node is sealed: its MEK file is missing; run `meshward unseal --mek FILE`"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let result = loop {
        let stream = tokio::select! {
            _ = term.recv() => break Err(anyhow::anyhow!("stopped while sealed")),
            _ = int.recv() => break Err(anyhow::anyhow!("stopped while sealed")),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (read, mut write) = stream.into_split();
        let mut line = Vec::new();
        let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
        let Ok(Ok(_)) =
            tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await
        else {
            continue;
        };
        let (reply, unsealed) = answer(data, &line);
        let mut bytes = serde_json::to_vec(&reply)?;
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
        if unsealed {
            info!("unsealed: the MEK file is installed");
            break Ok(());
        }
    };
    let _ = std::fs::remove_file(&socket);
    result
}

/// Answers one request while sealed; `true` once unsealed.
fn answer(data: &Path, line: &[u8]) -> (ControlReply, bool) {
    let fail = |e: String| {
        (
            ControlReply {
                stdout: String::new(),
                error: Some(e),
            },
            false,
        )
    };
    let request: ControlRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return fail(format!("malformed control request: {e}")),
    };
    let mut cli =
        match Cli::try_parse_from(std::iter::once("meshward".to_string()).chain(request.args)) {
            Ok(cli) => cli,
            Err(e) => return fail(e.to_string()),
        };
    if let Err(e) = cli.command.resolve_paths(request.cwd.as_deref()) {
        return fail(e);
    }
    let mek = data.join(MEK_FILE);
    match cli.command {
        Command::Status => {
            let text = if cli.global.json {
                json!({"sealed": true, "mek_file": mek.display().to_string()}).to_string()
            } else {
                format!(
                    "sealed: the MEK file {} is missing; run `meshward unseal --mek FILE`",
                    mek.display()
                )
            };
            (
                ControlReply {
                    stdout: text + "\n",
                    error: None,
                },
                false,
            )
        }
        Command::Unseal(args) => match Store::open_read_only(data)
            .with_context(|| format!("opening the store in {}", data.display()))
            .and_then(|store| unseal(data, &store, &args.mek))
        {
            Ok(()) => (
                ControlReply {
                    stdout: "unsealed\n".into(),
                    error: None,
                },
                true,
            ),
            Err(e) => fail(format!("{e:#}")),
        },
        _ => fail(
            "the node is sealed (its MEK file is missing): only `status` and `unseal --mek FILE` work"
                .into(),
        ),
    }
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}
