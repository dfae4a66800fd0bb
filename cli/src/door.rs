//! Where a command's requests go: the node's API through the client (the local daemon's
//! socket, or `--remote` over HTTPS), or, when no daemon runs, the store directly with
//! [`meshward_node::ops::execute`].

use std::path::Path;

use anyhow::Context as _;
use meshward_api::{Reply, Request};
use meshward_client::{Client, ClientError, WatchEvent};
use meshward_node::disk::read_bounded;
use meshward_node::ops::{self, LocalBackend};

use crate::args::Global;

/// How long a command waits for a starting daemon's socket when the store is held.
const DAEMON_START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// What the store says when another process holds it ([`meshward_node::store::StoreError::Busy`]).
const STORE_BUSY: &str = "is in use by another meshward process";

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
    ///
    /// With no daemon answering, the store is used directly. A daemon that is starting holds
    /// the store before its socket answers: then the command waits for the socket (at most
    /// [`DAEMON_START_WAIT`]) instead of failing with "in use".
    pub fn send(&mut self, request: Request) -> anyhow::Result<Reply> {
        let deadline = std::time::Instant::now() + DAEMON_START_WAIT;
        let problem = loop {
            match self.runtime.block_on(self.client.send(&request)) {
                Ok(reply) => return Ok(reply),
                Err(ClientError::NoDaemon(_)) if self.client.is_local() => {
                    let mut backend = LocalBackend::for_request(self.data.clone(), &request);
                    match ops::execute(&mut backend, request.clone()) {
                        Ok(reply) => return Ok(reply),
                        Err(problem)
                            if problem.detail.contains(STORE_BUSY)
                                && std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        Err(problem) => break problem,
                    }
                }
                Err(ClientError::Problem(problem)) => break *problem,
                Err(e) => return Err(e.into()),
            }
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

    /// Follows the watch stream, handing each event to `each`; after an `overflow` it
    /// resumes from the cursor given. Ends when the node ends the stream.
    pub fn watch(
        &mut self,
        tables: Option<&str>,
        from: Option<&str>,
        mut each: impl FnMut(WatchEvent) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let client = self.client.clone();
        self.runtime.block_on(async {
            let mut from = from.map(str::to_string);
            loop {
                let mut watch = match client.watch(tables, from.as_deref()).await {
                    Err(ClientError::NoDaemon(path)) => anyhow::bail!(
                        "watch needs a running daemon: none answers on {}",
                        path.display()
                    ),
                    Err(ClientError::Problem(p)) => {
                        let field = p.field.map(|f| format!(" (field {f})")).unwrap_or_default();
                        anyhow::bail!("{}{field}", p.detail)
                    }
                    other => other?,
                };
                let mut resume = None;
                while let Some(event) = watch.next().await? {
                    match event {
                        WatchEvent::Overflow { resume_from } => resume = Some(resume_from),
                        WatchEvent::Compacted { first_kept } => anyhow::bail!(
                            "this node dropped changes before cursor {first_kept}: \
                             run `meshward watch` without --from to start from the current state"
                        ),
                        WatchEvent::Closed(why) => {
                            anyhow::bail!("the node closed the stream: {why}")
                        }
                        other => each(other)?,
                    }
                }
                match resume {
                    Some(cursor) => from = Some(cursor.to_string()),
                    None => {
                        let last = watch
                            .last_id()
                            .map(|c| format!(" (resume with --from {c})"))
                            .unwrap_or_default();
                        anyhow::bail!("the node ended the stream{last}")
                    }
                }
            }
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

/// `meshward wait`: polls the local socket until the daemon answers `status`, or `timeout`.
pub fn wait_for_daemon(
    data: &Path,
    timeout: std::time::Duration,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::local(data);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match runtime.block_on(client.send(&Request::Status)) {
            Ok(_) => {
                writeln!(out, "the daemon of {} answers", data.display())?;
                return Ok(());
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                anyhow::bail!(
                    "no daemon answered on {} within {}: {e}",
                    data.display(),
                    humantime::format_duration(timeout)
                );
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}
