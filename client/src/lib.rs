//! A client of the meshward API (the CLI uses it, and so can any Rust program beside a node).
//!
//! A [`Client`] talks to one node, either through its local socket (`DATA/meshward.sock`; the
//! caller is the node's local operator, `root`) or over HTTPS with a client certificate (the
//! certificate's CN is the user whose grants decide). [`Client::send`] takes any
//! [`meshward_api::Request`] to its route and returns the typed [`meshward_api::Reply`], or the
//! node's [`meshward_api::Problem`]. One connection per request; answers are size-bounded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshward_client::ClientError> {
//! use meshward_api::Request;
//! let client = meshward_client::Client::local(std::path::Path::new("./node-a"));
//! let status = client.send(&Request::Status).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod tables;
mod watch;

pub use watch::{MAX_EVENT, Watch, WatchEvent};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST};
use meshward_api::{Method, PROBLEM_JSON, Problem, Reply, Request};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// File name of the local socket in a node's data directory.
pub const SOCKET: &str = "meshward.sock";
/// Largest answer body read, in bytes.
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// How long a request may take, answer included (a failover waits for endorsements).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the local socket (the caller may use the store directly).
    #[error("no meshward daemon runs on {0}")]
    NoDaemon(PathBuf),
    /// The node answered with a problem.
    #[error("{0}")]
    Problem(Box<Problem>),
    /// The connection failed (refused, reset, TLS handshake, timeout).
    #[error("cannot reach the node: {0}")]
    Transport(String),
    /// The answer is not what the API promises.
    #[error("the node's answer is not valid: {0}")]
    Protocol(String),
    /// A client certificate, key or CA file is unusable.
    #[error("{0}")]
    Credentials(String),
}

/// A node to talk to.
#[derive(Clone, Debug)]
pub struct Client {
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
    Local(PathBuf),
    Remote {
        host: String,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
    },
}

/// An answer as it came: status, content type and body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

impl Client {
    /// The node whose data directory is `data`, through its local socket.
    pub fn local(data: &Path) -> Client {
        Client {
            target: Target::Local(data.join(SOCKET)),
        }
    }

    /// A node at `url` (`https://HOST:PORT`), presenting the client certificate `cert_pem`
    /// with its PKCS#8 key `key_pem`, and trusting only the CA certificates in `ca_pem`.
    pub fn remote(
        url: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Client, ClientError> {
        let bad = |m: String| ClientError::Credentials(m);
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad(format!("{url:?}: give the node as https://HOST:PORT")))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| bad(format!("{url:?}: give the node as https://HOST:PORT")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let pems = |bytes: &[u8], what: &str| {
            pem::parse_many(bytes).map_err(|e| bad(format!("the {what} file is not PEM: {e}")))
        };
        let mut roots = rustls::RootCertStore::empty();
        for p in pems(ca_pem, "CA")?
            .iter()
            .filter(|p| p.tag() == "CERTIFICATE")
        {
            roots
                .add(CertificateDer::from(p.contents().to_vec()))
                .map_err(|e| bad(format!("a CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("the CA file holds no certificate".into()));
        }
        let certs: Vec<CertificateDer<'static>> = pems(cert_pem, "certificate")?
            .iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| CertificateDer::from(p.contents().to_vec()))
            .collect();
        let key = pems(key_pem, "key")?
            .into_iter()
            .find(|p| p.tag() == "PRIVATE KEY")
            .ok_or_else(|| bad("the key file holds no PKCS#8 PRIVATE KEY".into()))?;
        let key = PrivateKeyDer::Pkcs8(key.into_contents().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad(format!("the client certificate or key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            target: Target::Remote {
                host,
                port,
                tls: Arc::new(config),
            },
        })
    }

    /// Whether this client talks through a local socket.
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }

    /// Sends `request` and returns its reply, or the node's problem. Cancel-safe: dropping
    /// the future closes the connection (a write the node already took may still happen).
    pub async fn send(&self, request: &Request) -> Result<Reply, ClientError> {
        let route = request.route();
        let mut path = route.path.clone();
        if !route.query.is_empty() {
            let query: Vec<String> = route
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", meshward_api::segment(k), meshward_api::segment(v)))
                .collect();
            path = format!("{path}?{}", query.join("&"));
        }
        let body = route
            .body
            .map(|b| serde_json::to_vec(&b))
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let answer = self.call(route.method, &path, body).await?;
        if answer.status >= 400 {
            return Err(problem_of(&answer));
        }
        let body: &[u8] = if answer.status == 204 {
            &[]
        } else {
            &answer.body
        };
        request
            .reply_from(body)
            .map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    /// Sends one HTTP request (`path` with its query) and returns the whole answer, whatever
    /// its status (for `/metrics`, `/openapi.json`, `/v1/health`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let response = self.open(method, path, body).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = tokio::time::timeout(
            TIMEOUT,
            Limited::new(response.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| ClientError::Transport("the answer took too long".into()))?
        .map_err(|e| ClientError::Transport(format!("reading the answer: {e}")))?
        .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    /// Sends one HTTP request and returns the response with its body still streaming (the
    /// watch stream, a backup download). A status over 399 is turned into its problem.
    pub async fn stream(&self, path: &str) -> Result<hyper::Response<Incoming>, ClientError> {
        let response = self.open(Method::Get, path, None).await?;
        if response.status().as_u16() >= 400 {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(problem_of(&Answer {
                status,
                content_type,
                body,
            }));
        }
        Ok(response)
    }

    async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let transport = |e: std::io::Error| ClientError::Transport(e.to_string());
        match &self.target {
            Target::Local(socket) => {
                let stream = match UnixStream::connect(socket).await {
                    Ok(s) => s,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        return Err(ClientError::NoDaemon(socket.clone()));
                    }
                    Err(e) => return Err(transport(e)),
                };
                exchange(stream, "localhost".into(), method, path, body).await
            }
            Target::Remote { host, port, tls } => {
                let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((host.as_str(), *port)))
                    .await
                    .map_err(|_| ClientError::Transport("connecting timed out".into()))?
                    .map_err(transport)?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| ClientError::Credentials(format!("{host}: {e}")))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ClientError::Transport(format!("TLS handshake: {e}")))?;
                exchange(stream, format!("{host}:{port}"), method, path, body).await
            }
        }
    }
}

/// Sends one request on a fresh connection and returns the response head.
async fn exchange<S>(
    stream: S,
    authority: String,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<hyper::Response<Incoming>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let method = match method {
        Method::Get => hyper::Method::GET,
        Method::Post => hyper::Method::POST,
        Method::Put => hyper::Method::PUT,
        Method::Delete => hyper::Method::DELETE,
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority);
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| ClientError::Transport("the node did not answer in time".into()))?
        .map_err(|e| ClientError::Transport(e.to_string()))
}

/// The problem of an error answer; one that carries none is described by its status.
fn problem_of(answer: &Answer) -> ClientError {
    if answer.content_type.starts_with(PROBLEM_JSON)
        && let Ok(problem) = serde_json::from_slice::<Problem>(&answer.body)
    {
        return ClientError::Problem(Box::new(problem));
    }
    ClientError::Protocol(format!(
        "status {} without a problem document: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
    ))
}
