//! The setup endpoint: where strangers holding a joining bundle join, and (later) where
//! followers delegate requests to the leader.
//!
//! # Protocol
//!
//! - **Transport.** QUIC (quinn) on its own UDP port, TLS 1.3 only, ALPN `meshward-setup/1`.
//!   The server presents its node certificate, issued by the cluster CA. Client certificates
//!   are **required** and must chain to the cluster CA (rustls' `WebPkiClientVerifier`, which
//!   also checks their validity period); the client trusts the cluster CA only (pinned from
//!   the joining bundle), never the system roots. The node learns the SHA-256 fingerprint of
//!   the client's certificate with every request ([`Incoming::client_cert`]), to tell a
//!   one-time bundle certificate from a node certificate.
//! - **Framing.** One bidirectional stream per request: a 4-byte big-endian length and that
//!   many bytes of postcard, one [`Request`] up and one [`Response`] down, then the stream
//!   ends. Frames are bounded ([`MAX_REQUEST_FRAME`], [`MAX_RESPONSE_FRAME`]); an oversize
//!   length is refused before anything is allocated, and undecodable bytes get
//!   [`Response::Refused`].
//! - **Limits.** At most [`MAX_CONNECTIONS`] connections at once (more are refused and
//!   counted), streams of one connection are served one at a time, every handshake and request
//!   has a timeout, idle connections close after [`IDLE_TIMEOUT`].
//! - **Hand-off.** Decoded requests go to the node through a bounded channel
//!   ([`REQUEST_QUEUE`]); when it is full the client is told the node is busy (counted). The
//!   node answers through the [`Incoming::reply`] oneshot.
//!
//! The [`Request`] and [`Response`] enums only grow at the end, so older peers keep decoding
//! the variants they know (postcard encodes the variant index).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

/// ALPN protocol id of the setup endpoint.
pub const ALPN: &[u8] = b"meshward-setup/1";
/// Largest request frame.
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;
/// Largest response frame (a join answer carries the whole mastered chain).
pub const MAX_RESPONSE_FRAME: usize = 16 * 1024 * 1024;
/// Connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 32;
/// Requests waiting for the node.
pub const REQUEST_QUEUE: usize = 16;
/// How long a TLS handshake, or one request and its answer, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections with no traffic for this long are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A request to a node's setup endpoint. `Debug` never shows a challenge answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A joiner of an older meshward introduces itself. It does not say which cluster its
    /// bundle is for, so a leader refuses it (asking for an upgrade): use
    /// [`Request::JoinHelloV2`].
    JoinHello {
        /// The joiner's ed25519 node key (its mesh identity).
        node_key: [u8; 32],
        /// The joiner's node address (FQDN or IP, optionally with the mesh port).
        address: String,
        /// The raw public key (uncompressed P-256 point) its node certificate should carry.
        tls_key: Vec<u8>,
    },
    /// The joiner's answer to the challenge of this connection.
    JoinAnswer {
        /// HMAC of the nonce under the MEK's challenge key (see `Mek::challenge_answer`).
        answer: [u8; 32],
        /// ed25519 signature by the node key over the join transcript (proof of possession).
        signature: Vec<u8>,
    },
    /// A joiner (connected with the bundle's client certificate) introduces itself, says which
    /// cluster its bundle is for, and asks for a MEK challenge. The leader refuses a bundle of
    /// another cluster (an altered one) here, before it commits anything.
    JoinHelloV2 {
        /// The joiner's ed25519 node key (its mesh identity).
        node_key: [u8; 32],
        /// The joiner's node address (FQDN or IP, optionally with the mesh port).
        address: String,
        /// The raw public key (uncompressed P-256 point) its node certificate should carry.
        tls_key: Vec<u8>,
        /// The cluster id the bundle names.
        cluster: [u8; 16],
        /// The genesis leader key the bundle names.
        genesis_leader: [u8; 32],
        /// SHA-256 of the cluster CA certificate (DER) the bundle pins.
        ca_cert: [u8; 32],
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::JoinHello {
                node_key, address, ..
            } => f
                .debug_struct("JoinHello")
                .field("node_key", &hex(node_key))
                .field("address", address)
                .finish_non_exhaustive(),
            // The answer proves the MEK for one nonce: never shown.
            Request::JoinAnswer { .. } => f.debug_struct("JoinAnswer").finish_non_exhaustive(),
            Request::JoinHelloV2 {
                node_key,
                address,
                cluster,
                ..
            } => f
                .debug_struct("JoinHelloV2")
                .field("node_key", &hex(node_key))
                .field("address", address)
                .field("cluster", &hex(cluster))
                .finish_non_exhaustive(),
        }
    }
}

/// Lowercase hex, for `Debug`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A setup endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A fresh nonce to answer with the MEK; good for this connection and one answer only.
    /// Sent by older leaders; a joiner now expects [`Response::ChallengeV2`].
    Challenge {
        /// The nonce.
        nonce: [u8; 32],
    },
    /// The joiner was admitted.
    Joined {
        /// The cluster id (trust anchor).
        cluster: [u8; 16],
        /// The genesis leader's key (trust anchor).
        genesis_leader: [u8; 32],
        /// Every mastered record, encoded, in version order.
        records: Vec<Vec<u8>>,
        /// The joiner's node certificate (DER), issued by the cluster CA.
        node_cert: Vec<u8>,
    },
    /// The request was refused; the reason is meant for the operator.
    Refused {
        /// Why, and what to do.
        reason: String,
    },
    /// The answer to [`Request::JoinHelloV2`]: a fresh nonce (as [`Response::Challenge`]) and
    /// the leader's own cluster, which the joiner compares with its bundle before it answers.
    ChallengeV2 {
        /// The nonce.
        nonce: [u8; 32],
        /// The leader's cluster id.
        cluster: [u8; 16],
        /// The leader's genesis leader key.
        genesis_leader: [u8; 32],
        /// SHA-256 of the leader's cluster CA certificate (DER).
        ca_cert: [u8; 32],
    },
}

/// A TLS identity: a certificate and its key, and the CA that peers must chain to.
#[derive(Clone)]
pub struct TlsIdentity {
    /// Our certificate (DER).
    pub cert: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub key: Vec<u8>,
    /// The cluster CA's certificate (DER): the only root we trust.
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// A request handed to the node. Answer through `reply`.
#[derive(Debug)]
pub struct Incoming {
    /// Id of the QUIC connection, unique for this server's lifetime.
    pub connection: u64,
    /// SHA-256 of the client's certificate (DER).
    pub client_cert: [u8; 32],
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// The setup endpoint or a client of it failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The certificates or key do not make a TLS configuration.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("binding the setup endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection could not be made or broke.
    #[error("setup connection to {addr}: {reason}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// No answer in time.
    #[error("setup endpoint at {addr} did not answer within {after:?}")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// A frame was oversize or did not decode.
    #[error("malformed setup message: {0}")]
    Frame(String),
}

/// Counters of a setup server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetupMetrics {
    /// Connections accepted (handshake done).
    pub connections: u64,
    /// Connections refused because [`MAX_CONNECTIONS`] were open.
    pub refused_full: u64,
    /// Handshakes that failed (bad or missing client certificate, timeout, ...).
    pub handshakes_failed: u64,
    /// Requests handed to the node.
    pub requests: u64,
    /// Requests refused because the node's queue was full.
    pub refused_busy: u64,
    /// Frames that were oversize or did not decode.
    pub malformed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused_full: AtomicU64,
    handshakes_failed: AtomicU64,
    requests: AtomicU64,
    refused_busy: AtomicU64,
    malformed: AtomicU64,
}

/// A running setup server; dropping it closes the endpoint.
#[derive(Debug)]
pub struct SetupServer {
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    counters: Arc<Counters>,
}

impl SetupServer {
    /// Binds `bind` (UDP) and serves setup requests, handing them to the returned channel.
    /// Must be called inside a tokio runtime.
    pub fn listen(
        bind: SocketAddr,
        identity: &TlsIdentity,
    ) -> Result<(SetupServer, mpsc::Receiver<Incoming>), SetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&identity.ca)?),
            provider.clone(),
        )
        .build()
        .map_err(tls)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(identity.cert.clone())],
                key(&identity.key),
            )
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(config).map_err(tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport_config());
        let endpoint = quinn::Endpoint::server(server, bind)
            .map_err(|source| SetupError::Bind { addr: bind, source })?;
        let local = endpoint
            .local_addr()
            .map_err(|source| SetupError::Bind { addr: bind, source })?;
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(accept(endpoint.clone(), tx, counters.clone()));
        Ok((
            SetupServer {
                endpoint,
                local,
                counters,
            },
            rx,
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A snapshot of its counters.
    pub fn metrics(&self) -> SetupMetrics {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SetupMetrics {
            connections: get(&c.connections),
            refused_full: get(&c.refused_full),
            handshakes_failed: get(&c.handshakes_failed),
            requests: get(&c.requests),
            refused_busy: get(&c.refused_busy),
            malformed: get(&c.malformed),
        }
    }
}

impl Drop for SetupServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }
}

/// A connection to a setup endpoint.
#[derive(Debug)]
pub struct SetupClient {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    addr: SocketAddr,
}

impl SetupClient {
    /// Connects to `addr`, verifying its certificate against `identity.ca` only, for the name
    /// `server_name` (a DNS name or IP the certificate names), and presenting `identity`'s
    /// certificate. Cancel-safe (dropping the future abandons the attempt).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        identity: &TlsIdentity,
    ) -> Result<SetupClient, SetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots(&identity.ca)?)
            .with_client_auth_cert(
                vec![CertificateDer::from(identity.cert.clone())],
                key(&identity.key),
            )
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(config).map_err(tls)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config());
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| SetupError::Bind { addr: bind, source })?;
        endpoint.set_default_client_config(client);
        let broke = |e: &dyn std::fmt::Display| SetupError::Connection {
            addr,
            reason: e.to_string(),
        };
        let connecting = endpoint.connect(addr, server_name).map_err(|e| broke(&e))?;
        let connection = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| SetupError::Timeout {
                addr,
                after: REQUEST_TIMEOUT,
            })?
            .map_err(|e| broke(&e))?;
        Ok(SetupClient {
            endpoint,
            connection,
            addr,
        })
    }

    /// Sends one request on a new stream and waits (at most [`REQUEST_TIMEOUT`]) for its
    /// answer. Not cancel-safe: a dropped call leaves the server's answer unread.
    pub async fn request(&self, request: &Request) -> Result<Response, SetupError> {
        let addr = self.addr;
        let exchange = async {
            let broke = |e: &dyn std::fmt::Display| SetupError::Connection {
                addr,
                reason: e.to_string(),
            };
            let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| broke(&e))?;
            let bytes =
                postcard::to_allocvec(request).map_err(|e| SetupError::Frame(e.to_string()))?;
            write_frame(&mut send, &bytes)
                .await
                .map_err(|e| broke(&e))?;
            send.finish().map_err(|e| broke(&e))?;
            let reply = read_frame(&mut recv, MAX_RESPONSE_FRAME).await?;
            postcard::from_bytes(&reply).map_err(|e| SetupError::Frame(e.to_string()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SetupError::Timeout {
                addr,
                after: REQUEST_TIMEOUT,
            })?
    }

    /// Closes the connection and waits briefly for the close to reach the server.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

fn tls(e: impl std::fmt::Display) -> SetupError {
    SetupError::Tls(e.to_string())
}

fn roots(ca: &[u8]) -> Result<rustls::RootCertStore, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).map_err(tls)?;
    Ok(roots)
}

fn key(pkcs8: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Invariant: 15 s is far below QUIC's idle-timeout limit (2^62 ms).
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().expect("idle timeout in range"),
    ));
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

async fn accept(endpoint: quinn::Endpoint, tx: mpsc::Sender<Incoming>, counters: Arc<Counters>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut next = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            counters.refused_full.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        };
        next += 1;
        let (id, tx, counters) = (next, tx.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(incoming, id, tx, &counters).await {
                debug!(connection = id, error = %e, "setup connection ended");
            }
        });
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    id: u64,
    tx: mpsc::Sender<Incoming>,
    counters: &Counters,
) -> Result<(), String> {
    let handshake = tokio::time::timeout(REQUEST_TIMEOUT, incoming).await;
    let connection = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            return Err(format!("handshake failed: {e}"));
        }
        Err(_) => {
            counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            return Err("handshake timed out".into());
        }
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    // The verifier required a client certificate, so the chain is there.
    let client_cert: [u8; 32] = connection
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|c| Sha256::digest(c.as_ref()).into()))
        .ok_or("no client certificate")?;
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let exchange = async {
            let bytes = match read_frame(&mut recv, MAX_REQUEST_FRAME).await {
                Ok(b) => b,
                Err(e) => {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    return Err(e.to_string());
                }
            };
            let response = match postcard::from_bytes::<Request>(&bytes) {
                Err(_) => {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    Response::Refused {
                        reason: "malformed setup request".into(),
                    }
                }
                Ok(request) => {
                    let (reply, answer) = oneshot::channel();
                    let incoming = Incoming {
                        connection: id,
                        client_cert,
                        request,
                        reply,
                    };
                    match tx.try_send(incoming) {
                        Ok(()) => {
                            counters.requests.fetch_add(1, Ordering::Relaxed);
                            answer.await.unwrap_or(Response::Refused {
                                reason: "the node stopped".into(),
                            })
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            counters.refused_busy.fetch_add(1, Ordering::Relaxed);
                            Response::Refused {
                                reason: "the node is busy; try again in a moment".into(),
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Err("the node stopped".to_string());
                        }
                    }
                }
            };
            let bytes = postcard::to_allocvec(&response).map_err(|e| e.to_string())?;
            write_frame(&mut send, &bytes)
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("request timed out".into()),
        }
    }
    Ok(())
}

async fn write_frame(send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), quinn::WriteError> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(bytes).await
}

async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Vec<u8>, SetupError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| SetupError::Frame(format!("reading the length: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(SetupError::Frame(format!(
            "{len} bytes; the limit is {max}"
        )));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf)
        .await
        .map_err(|e| SetupError::Frame(format!("reading {len} bytes: {e}")))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        ca: rcgen::Certificate,
        ca_key: rcgen::KeyPair,
    }

    impl Pki {
        fn new(name: &str) -> Pki {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let ca = params.self_signed(&ca_key).unwrap();
            Pki { ca, ca_key }
        }

        fn issue(&self, san: &str) -> TlsIdentity {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
            let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            TlsIdentity {
                cert: cert.der().to_vec(),
                key: key.serialize_der(),
                ca: self.ca.der().to_vec(),
            }
        }
    }

    async fn echo_server(pki: &Pki) -> SetupServer {
        let (server, mut rx) =
            SetupServer::listen("127.0.0.1:0".parse().unwrap(), &pki.issue("127.0.0.1")).unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = rx.recv().await {
                let _ = incoming.reply.send(Response::Refused {
                    reason: format!("seen {}", incoming.connection),
                });
            }
        });
        server
    }

    #[tokio::test]
    async fn a_client_of_the_cluster_ca_gets_answers() {
        let pki = Pki::new("cluster");
        let server = echo_server(&pki).await;
        let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
            .await
            .unwrap();
        let hello = Request::JoinAnswer {
            answer: [1; 32],
            signature: vec![2; 64],
        };
        for _ in 0..2 {
            let reply = client.request(&hello).await.unwrap();
            assert_eq!(
                reply,
                Response::Refused {
                    reason: "seen 1".into()
                }
            );
        }
        client.close().await;
        assert_eq!(server.metrics().requests, 2);
    }

    #[tokio::test]
    async fn a_client_certificate_of_another_ca_is_refused_at_the_handshake() {
        let pki = Pki::new("cluster");
        let server = echo_server(&pki).await;
        let mut stranger = Pki::new("other").issue("joiner");
        stranger.ca = pki.ca.der().to_vec(); // trusts the server, but its cert is foreign
        let result = match SetupClient::connect(server.local_addr(), "127.0.0.1", &stranger).await {
            Ok(client) => client
                .request(&Request::JoinAnswer {
                    answer: [0; 32],
                    signature: vec![],
                })
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(result.is_err(), "a foreign client certificate was served");
        assert_eq!(server.metrics().requests, 0);
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_is_refused_and_counted() {
        let pki = Pki::new("cluster");
        let server = echo_server(&pki).await;
        let identity = pki.issue("joiner");
        let mut open = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            open.push(
                SetupClient::connect(server.local_addr(), "127.0.0.1", &identity)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(server.metrics().refused_full, 0);
        let over = SetupClient::connect(server.local_addr(), "127.0.0.1", &identity).await;
        assert!(
            over.is_err(),
            "connection {} was served",
            MAX_CONNECTIONS + 1
        );
        assert_eq!(server.metrics().refused_full, 1);
    }

    #[tokio::test]
    async fn a_server_of_another_ca_is_not_trusted() {
        let pki = Pki::new("cluster");
        let server = echo_server(&Pki::new("impostor")).await;
        let err = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
            .await
            .unwrap_err();
        assert!(matches!(err, SetupError::Connection { .. }), "{err}");
    }

    #[tokio::test]
    async fn garbage_and_oversize_frames_are_refused_without_reaching_the_node() {
        let pki = Pki::new("cluster");
        let server = echo_server(&pki).await;
        let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
            .await
            .unwrap();
        let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
        write_frame(&mut send, &[0xff; 100]).await.unwrap();
        send.finish().unwrap();
        let reply: Response =
            postcard::from_bytes(&read_frame(&mut recv, MAX_RESPONSE_FRAME).await.unwrap())
                .unwrap();
        assert!(matches!(reply, Response::Refused { reason } if reason.contains("malformed")));
        let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let _ = send.finish();
        assert!(read_frame(&mut recv, MAX_RESPONSE_FRAME).await.is_err());
        assert_eq!(server.metrics().requests, 0);
        assert_eq!(server.metrics().malformed, 2);
    }

    #[test]
    fn debug_never_shows_a_challenge_answer_and_old_variants_keep_their_place() {
        let answer = Request::JoinAnswer {
            answer: [0xab; 32],
            signature: vec![0xcd; 64],
        };
        let text = format!("{answer:?}");
        assert!(!text.contains("171") && !text.contains("ab"), "{text}");
        // Older peers decode the variants they know: new ones only grow at the end.
        assert_eq!(postcard::to_allocvec(&answer).unwrap()[0], 1);
        let hello = Request::JoinHelloV2 {
            node_key: [1; 32],
            address: "n".into(),
            tls_key: vec![],
            cluster: [2; 16],
            genesis_leader: [3; 32],
            ca_cert: [4; 32],
        };
        assert_eq!(postcard::to_allocvec(&hello).unwrap()[0], 2);
        let challenge = Response::ChallengeV2 {
            nonce: [0; 32],
            cluster: [0; 16],
            genesis_leader: [0; 32],
            ca_cert: [0; 32],
        };
        assert_eq!(postcard::to_allocvec(&challenge).unwrap()[0], 3);
    }
}
