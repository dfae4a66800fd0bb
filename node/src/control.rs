//! The local control socket: how `meshward` commands reach a running daemon.
//!
//! The daemon listens on `DATA/meshward.sock` (mode 0600: only the node's own user). A client
//! sends one JSON line `{"args": [...], "cwd": "..."}` — its own command line and working
//! directory — and gets one JSON line back with the command's output or error. The daemon runs
//! the command with the same code as the local backend, but on its live store and core, so
//! writes are announced to the mesh at once. Both lines are size-bounded.
//!
//! Paths mean what they mean to the caller: the daemon resolves every relative path of the
//! command (`--out`, `--mek`, a licence or bundle file) against the caller's `cwd`, and runs it
//! on its own data directory, whatever `--data` or `MESHWARD_DATA` said (they only chose the
//! daemon). A request without `cwd` (the admin API's) must give absolute paths.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::core::Secret;

/// File name of the socket inside the data directory.
pub const SOCKET: &str = "meshward.sock";
/// Largest request line.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// Largest reply line.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// How long a client waits for the daemon's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A command for the daemon. `Debug` never shows the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The command line, without the program name.
    pub args: Vec<String>,
    /// A secret the command reads from stdin (a new password), never on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The caller's working directory (absolute): relative paths of the command are resolved
    /// against it. `None`: the command's paths must be absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// What the command printed.
    pub stdout: String,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// Sends a command line to the daemon holding `data`, if one is running, with this process's
/// working directory. `Ok(None)` means no daemon answers on the socket, and the caller should
/// use the store directly.
pub fn forward(
    data: &Path,
    args: Vec<String>,
    secret: Option<Secret>,
) -> anyhow::Result<Option<ControlReply>> {
    let Ok(mut stream) = UnixStream::connect(data.join(SOCKET)) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let cwd = std::env::current_dir().ok();
    let mut line = serde_json::to_vec(&ControlRequest { args, secret, cwd })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_request_never_shows_its_secret() {
        let line = br#"{"args": ["password", "change", "alice"], "secret": "Correct-horse-9"}"#;
        let request: ControlRequest = serde_json::from_slice(line).unwrap();
        let text = format!("{request:?}");
        assert!(!text.contains("Correct-horse-9"), "{text}");
        assert!(text.contains("alice"), "{text}");
        // The wire format is unchanged: the secret is a plain JSON string.
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["secret"], "Correct-horse-9");
    }
}
