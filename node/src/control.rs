//! The local control socket: how `meshward` commands reach a running daemon.
//!
//! The daemon listens on `DATA/meshward.sock` (mode 0600: only the node's own user). A client
//! sends one JSON line `{"args": [...]}` — its own command line — and gets one JSON line back
//! with the command's output or error. The daemon runs the command with the same code as the
//! local backend, but on its live store and core, so writes are announced to the mesh at once.
//! Both lines are size-bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// File name of the socket inside the data directory.
pub const SOCKET: &str = "meshward.sock";
/// Largest request line.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// Largest reply line.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// How long a client waits for the daemon's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A command for the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The command line, without the program name.
    pub args: Vec<String>,
    /// A secret the command reads from stdin (a new password), never on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// What the command printed.
    pub stdout: String,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// Sends a command line to the daemon holding `data`, if one is running. `Ok(None)` means no
/// daemon answers on the socket, and the caller should use the store directly.
pub fn forward(
    data: &Path,
    args: Vec<String>,
    secret: Option<String>,
) -> anyhow::Result<Option<ControlReply>> {
    let Ok(mut stream) = UnixStream::connect(data.join(SOCKET)) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut line = serde_json::to_vec(&ControlRequest { args, secret })?;
    anyhow::ensure!(
        line.len() < MAX_REQUEST,
        "command line too long for the daemon"
    );
    line.push(b'\n');
    stream
        .write_all(&line)
        .context("sending the command to the daemon")?;
    let mut reply = Vec::new();
    BufReader::new(stream.take(MAX_REPLY as u64))
        .read_until(b'\n', &mut reply)
        .context("reading the daemon's answer")?;
    let reply: ControlReply =
        serde_json::from_slice(&reply).context("the daemon's answer is not valid")?;
    Ok(Some(reply))
}
