//! Where a command's requests go: the node's API through the client (the local daemon's
//! socket, or `--remote` over HTTPS), or, when no daemon runs, the store directly with
//! [`meshward_node::ops::execute`].

use std::path::Path;

use anyhow::Context as _;
use meshward_api::{Reply, Request};
use meshward_client::{Client, ClientError};
use meshward_node::disk::read_bounded;
use meshward_node::ops::{self, LocalBackend};

use crate::args::Global;

/// Where requests go: a node's API, or the store when no daemon runs.
pub struct Door {
    client: Client,
    runtime: tokio::runtime::Runtime,
    data: std::path::PathBuf,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Door {
    /// The node of `g`: `--remote` over HTTPS, else the local daemon of `--data` (or its
    /// store when no daemon runs).
    pub fn new(g: &Global) -> anyhow::Result<Door> {
        let client = match &g.remote {
            None => Client::local(&g.data),
            Some(url) => {
                let read = |path: &Option<std::path::PathBuf>, what: &str| {
                    let path = path
                        .as_ref()
                        .with_context(|| format!("--remote needs --{what}"))?;
                    read_bounded(path, 64 * 1024)
                };
                Client::remote(
                    url,
                    &read(&g.cert, "cert")?,
                    &zeroize::Zeroizing::new(read(&g.key, "key")?),
                    &read(&g.ca, "ca")?,
                )?
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the client runtime")?;
        Ok(Door {
            client,
            runtime,
            data: g.data.clone(),
        })
    }

    /// Sends `request`; a problem becomes an error carrying its detail (and the leader).
    pub fn send(&mut self, request: Request) -> anyhow::Result<Reply> {
        let sent = self.runtime.block_on(self.client.send(&request));
        let problem = match sent {
            Ok(reply) => return Ok(reply),
            Err(ClientError::NoDaemon(_)) if self.client.is_local() => {
                let mut backend = LocalBackend::for_request(self.data.clone(), &request);
                match ops::execute(&mut backend, request) {
                    Ok(reply) => return Ok(reply),
                    Err(problem) => problem,
                }
            }
            Err(ClientError::Problem(problem)) => *problem,
            Err(e) => return Err(e.into()),
        };
        let mut message = problem.detail.clone();
        if let Some(field) = &problem.field {
            message.push_str(&format!(" (field {field})"));
        }
        if let Some(leader) = &problem.leader {
            message.push_str(&format!(" [leader {leader}]"));
        }
        Err(anyhow::Error::msg(message))
    }

    /// Starts a streamed GET (a backup download); `Ok(None)`: no daemon runs.
    pub fn download(
        &mut self,
        path: &str,
        to: &mut dyn std::io::Write,
    ) -> anyhow::Result<Option<u64>> {
        use http_body_util::BodyExt as _;
        self.runtime.block_on(async {
            let response = match self.client.stream(path).await {
                Err(ClientError::NoDaemon(_)) => return Ok(None),
                Err(e) => return Err(anyhow::Error::from(e)),
                Ok(response) => response,
            };
            let mut body = response.into_body();
            let mut written = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.context("the download was cut")?;
                if let Ok(data) = frame.into_data() {
                    to.write_all(&data)?;
                    written += data.len() as u64;
                }
            }
            Ok(Some(written))
        })
    }

    /// Whether a daemon answers on the local socket (always true for `--remote`).
    pub fn daemon(&mut self) -> bool {
        !matches!(
            self.runtime.block_on(self.client.send(&Request::Ha)),
            Err(ClientError::NoDaemon(_))
        )
    }
}

/// Whether `path` exists or is a (dangling) symlink: output files are never replaced.
pub fn taken(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
