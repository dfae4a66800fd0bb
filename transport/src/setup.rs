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
//!   many bytes, one request up and one answer down, then the stream ends. The bytes are the
//!   node's (its messages are `meshward_node::join::wire`'s); the endpoint only carries them.
//!   Frames are bounded ([`MAX_REQUEST_FRAME`], [`MAX_RESPONSE_FRAME`]); an oversize length is
//!   refused before anything is allocated.
//! - **Address validation.** A client whose address QUIC has not validated yet gets a
//!   stateless Retry and nothing else, so a spoofed source address takes no slot and no
//!   handshake work.
//! - **Slots per source.** A validated connection takes a slot ([`crate::slots`]) before its
//!   handshake and keeps it until it ends: at most [`SOURCE_CONNECTIONS`] for one source (an
//!   IPv4 address, an IPv6 /64) and [`MAX_CONNECTIONS`] in all. One over either is refused at
//!   once (QUIC `CONNECTION_REFUSED`) and counted; nothing waits for a slot.
//! - **Deadlines.** The handshake must finish within [`HANDSHAKE_TIMEOUT`], each request and
//!   its answer within [`REQUEST_TIMEOUT`]; connections with no traffic close after
//!   [`IDLE_TIMEOUT`]. Streams of one connection are served one at a time.
//! - **Gate.** Once the handshake is done, the node's [`Gate`] decides whether the client's
//!   certificate may hold a connection at all (the node lets only the current, unused,
//!   unexpired joining bundle's certificate through, and no revoked one): any other is closed
//!   at once with [`CLOSE_REFUSED`] and the gate's reason, and counted. So a used or
//!   superseded bundle, or an admin or node certificate of the same CA, holds nothing past
//!   its handshake.
//! - **Closing.** The node says with each [`Answer`] whether the connection goes on
//!   ([`Then`]). An answer that ends it is followed by a moment for the client to read it and
//!   close ([`CLOSE_GRACE`], or [`REQUEST_TIMEOUT`] after a completed exchange), then the
//!   server closes it, a refusal with [`CLOSE_REFUSED`] and its reason, so the client learns it
//!   even if it did not read the answer. The endpoint's own refusals (the node busy or
//!   stopped, a broken frame) close with [`CLOSE_REFUSED`] and the reason, with no answer. [`SetupClient`] closes its connection when dropped, and reports a close with a
//!   reason, or a refused connection, as [`SetupError::Refused`].
//! - **Hand-off.** Requests go to the node through a bounded channel ([`REQUEST_QUEUE`]); when
//!   it is full the client is told the node is busy (counted). The node answers through the
//!   [`Incoming::reply`] oneshot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::slots::{SlotRefused, Slots};

/// ALPN protocol id of the setup endpoint.
pub const ALPN: &[u8] = b"meshward-setup/1";
/// Largest request frame.
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;
/// Largest response frame (a join answer carries the whole mastered chain).
pub const MAX_RESPONSE_FRAME: usize = 16 * 1024 * 1024;
/// Connections held at once, handshakes included; more are refused. A pending handshake costs
/// a task and a few KiB, so this is generous: joins are rare and one at a time.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one source (an IPv4 address, an IPv6 /64) may hold at once; more are refused.
/// A joiner needs one; a few more let two joiners behind one NAT race for a bundle.
pub const SOURCE_CONNECTIONS: usize = 4;
/// Requests waiting for the node.
pub const REQUEST_QUEUE: usize = 16;
/// How long the QUIC and TLS handshake may take once the client's address is validated: a few
/// round trips, with room for lost packets on a slow WAN link.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request and its answer may take (the leader's answer to a join writes to its
/// store), and how long a client waits for the handshake.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections with no traffic for this long are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// After a refusal, how long the server waits for the client to take the answer and close
/// before it closes the connection itself.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// QUIC application close code: the exchange is over.
pub const CLOSE_DONE: u32 = 0;
/// QUIC application close code: refused; the close reason says why.
pub const CLOSE_REFUSED: u32 = 1;
/// Longest close reason sent (a QUIC close must fit in one packet).
const MAX_CLOSE_REASON: usize = 512;

/// Decides, once the TLS handshake is done, whether a client certificate may hold a connection
/// to the setup endpoint. It runs on the endpoint's tasks, not the node's actor, so it must be
/// quick (no I/O).
pub trait Gate: Send + Sync + 'static {
    /// `Ok`: the connection goes on. `Err(reason)`: it is closed at once with
    /// [`CLOSE_REFUSED`] and `reason` (meant for the operator: say what to do). `cert` is the
    /// client's certificate (DER), already verified to chain to the cluster CA.
    fn admit(&self, cert: &[u8]) -> Result<(), String>;
}

impl<F> Gate for F
where
    F: Fn(&[u8]) -> Result<(), String> + Send + Sync + 'static,
{
    fn admit(&self, cert: &[u8]) -> Result<(), String> {
        self(cert)
    }
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
    /// The request's bytes (at most [`MAX_REQUEST_FRAME`]).
    pub request: Vec<u8>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// The node's answer to one request.
#[derive(Debug)]
pub struct Answer {
    /// Its bytes (at most [`MAX_RESPONSE_FRAME`]).
    pub bytes: Vec<u8>,
    /// What becomes of the connection.
    pub then: Then,
}

/// What becomes of a connection after an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Then {
    /// The client may send another request.
    Next,
    /// The exchange is complete: the connection closes ([`CLOSE_DONE`]).
    Done,
    /// The client was refused: the connection closes with [`CLOSE_REFUSED`] and the reason.
    Refused(String),
    /// The request did not decode (counted as malformed); closes as [`Then::Refused`].
    Malformed(String),
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
    /// The endpoint refused the connection or closed it with a reason: its gate refused the
    /// certificate, it refused a request, or it holds as many connections as it allows.
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The peer.
        addr: SocketAddr,
        /// Why, as the endpoint said it.
        reason: String,
    },
}

/// Counters of a setup server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetupMetrics {
    /// Connections accepted (handshake done).
    pub connections: u64,
    /// Connections refused because [`MAX_CONNECTIONS`] were open.
    pub refused_full: u64,
    /// Connections refused because their source held [`SOURCE_CONNECTIONS`].
    pub refused_source: u64,
    /// Handshakes that failed (bad or missing client certificate, ...).
    pub handshakes_failed: u64,
    /// Handshakes closed because they took longer than [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeouts: u64,
    /// Connections closed right after the handshake because the [`Gate`] refused the client's
    /// certificate (used, superseded or expired bundle, revoked or other certificate).
    pub refused_certificate: u64,
    /// Requests handed to the node.
    pub requests: u64,
    /// Requests refused because the node's queue was full.
    pub refused_busy: u64,
    /// Frames that were oversize or did not decode.
    pub malformed: u64,
    /// Connections held now, handshakes included (a gauge).
    pub open: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused_full: AtomicU64,
    refused_source: AtomicU64,
    handshakes_failed: AtomicU64,
    handshake_timeouts: AtomicU64,
    refused_certificate: AtomicU64,
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
    slots: Arc<Slots>,
}

impl SetupServer {
    /// Binds `bind` (UDP) and serves setup requests, handing them to the returned channel;
    /// `gate` decides which client certificates may hold a connection past the handshake.
    /// Must be called inside a tokio runtime.
    pub fn listen(
        bind: SocketAddr,
        identity: &TlsIdentity,
        gate: Arc<dyn Gate>,
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
        let slots = Slots::new(MAX_CONNECTIONS, SOURCE_CONNECTIONS);
        let server = Server {
            tx,
            counters: counters.clone(),
            gate,
        };
        tokio::spawn(accept(endpoint.clone(), Arc::new(server), slots.clone()));
        Ok((
            SetupServer {
                endpoint,
                local,
                counters,
                slots,
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
            refused_source: get(&c.refused_source),
            handshakes_failed: get(&c.handshakes_failed),
            handshake_timeouts: get(&c.handshake_timeouts),
            refused_certificate: get(&c.refused_certificate),
            requests: get(&c.requests),
            refused_busy: get(&c.refused_busy),
            malformed: get(&c.malformed),
            open: self.slots.taken() as u64,
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
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        SetupClient::connect_from(bind, addr, server_name, identity).await
    }

    /// Like [`SetupClient::connect`], from the local address `bind` (port 0: any).
    /// Cancel-safe.
    pub async fn connect_from(
        bind: SocketAddr,
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
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| SetupError::Bind { addr: bind, source })?;
        endpoint.set_default_client_config(client);
        let connecting =
            endpoint
                .connect(addr, server_name)
                .map_err(|e| SetupError::Connection {
                    addr,
                    reason: e.to_string(),
                })?;
        let connection = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| SetupError::Timeout {
                addr,
                after: REQUEST_TIMEOUT,
            })?
            .map_err(|e| closed(addr, &e))?;
        Ok(SetupClient {
            endpoint,
            connection,
            addr,
        })
    }

    /// Sends one request on a new stream and waits (at most [`REQUEST_TIMEOUT`]) for its
    /// answer. Not cancel-safe: a dropped call leaves the server's answer unread. When the
    /// server closed the connection with a reason (it refused the certificate or an earlier
    /// request), the error is [`SetupError::Refused`] with that reason.
    pub async fn request(&self, request: &[u8]) -> Result<Vec<u8>, SetupError> {
        let addr = self.addr;
        let exchange = async {
            let broke = |e: &dyn std::fmt::Display| SetupError::Connection {
                addr,
                reason: e.to_string(),
            };
            let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| broke(&e))?;
            write_frame(&mut send, request)
                .await
                .map_err(|e| broke(&e))?;
            send.finish().map_err(|e| broke(&e))?;
            read_frame(&mut recv, MAX_RESPONSE_FRAME).await
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SetupError::Timeout {
                addr,
                after: REQUEST_TIMEOUT,
            })?;
        match (result, self.connection.close_reason()) {
            (Err(_), Some(e)) => Err(closed(addr, &e)),
            (result, _) => result,
        }
    }

    /// Closes the connection and waits briefly for the close to reach the server.
    pub async fn close(self) {
        self.connection.close(CLOSE_DONE.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl Drop for SetupClient {
    /// Closes the connection (without waiting), so that no path leaves it open on the server
    /// until its idle timeout; [`SetupClient::close`] also waits for the close to be sent.
    fn drop(&mut self) {
        self.connection.close(CLOSE_DONE.into(), b"done");
    }
}

/// A connection error as the client reports it: a close with a reason, or a refused
/// connection, is [`SetupError::Refused`].
fn closed(addr: SocketAddr, error: &quinn::ConnectionError) -> SetupError {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) if !close.reason.is_empty() => {
            SetupError::Refused {
                addr,
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            SetupError::Refused {
                addr,
                reason: "it holds as many connections as it allows, from this address or in \
                         all; try again in a few seconds"
                    .into(),
            }
        }
        other => SetupError::Connection {
            addr,
            reason: other.to_string(),
        },
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

/// What every connection of a setup server shares.
struct Server {
    tx: mpsc::Sender<Incoming>,
    counters: Arc<Counters>,
    gate: Arc<dyn Gate>,
}

/// How a served connection goes on after an answer.
enum After {
    /// It may send another request.
    Next,
    /// It is over: close it with this code and reason once the client had a moment.
    End(u32, String, Duration),
}

async fn accept(endpoint: quinn::Endpoint, server: Arc<Server>, slots: Arc<Slots>) {
    let mut next = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        if !incoming.remote_address_validated() {
            // A stateless Retry: the client must show it receives at its address before it
            // costs a slot or a handshake. (If quinn cannot retry, dropping refuses.)
            let _ = incoming.retry();
            continue;
        }
        let slot = match slots.try_acquire(incoming.remote_address().ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                let counter = match refused {
                    SlotRefused::Full => &server.counters.refused_full,
                    SlotRefused::SourceFull => &server.counters.refused_source,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %incoming.remote_address(), %refused, "setup connection refused");
                incoming.refuse();
                continue;
            }
        };
        next += 1;
        let (id, server) = (next, server.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve_connection(incoming, id, &server).await {
                debug!(connection = id, error = %e, "setup connection ended");
            }
        });
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    id: u64,
    server: &Server,
) -> Result<(), String> {
    let counters = &server.counters;
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            return Err(format!("handshake failed: {e}"));
        }
        Err(_) => {
            counters.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err("handshake timed out".into());
        }
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    // The verifier required a client certificate, so the chain is there.
    let cert = connection
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.into_iter().next());
    let admitted = match &cert {
        None => Err("no client certificate".to_string()),
        Some(cert) => server.gate.admit(cert.as_ref()),
    };
    let (Some(cert), Ok(())) = (cert, admitted.as_ref()) else {
        let reason = admitted.err().unwrap_or_default();
        counters.refused_certificate.fetch_add(1, Ordering::Relaxed);
        close(&connection, CLOSE_REFUSED, &reason);
        return Err(format!("certificate refused: {reason}"));
    };
    let client_cert: [u8; 32] = Sha256::digest(cert.as_ref()).into();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let exchange = answer(&mut send, &mut recv, id, client_cert, server);
        let after = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(after)) => after,
            Ok(Err(e)) => {
                close(&connection, CLOSE_REFUSED, &e);
                return Err(e);
            }
            Err(_) => {
                close(&connection, CLOSE_REFUSED, "the request timed out");
                return Err("request timed out".into());
            }
        };
        if let After::End(code, reason, grace) = after {
            // Let the client read the answer and close first; then close it ourselves.
            let _ = tokio::time::timeout(grace, async {
                let _ = send.stopped().await;
                connection.closed().await
            })
            .await;
            close(&connection, code, &reason);
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one request, hands it to the node, writes the node's answer; says whether the
/// connection goes on.
async fn answer(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    id: u64,
    client_cert: [u8; 32],
    server: &Server,
) -> Result<After, String> {
    let counters = &server.counters;
    let bytes = match read_frame(recv, MAX_REQUEST_FRAME).await {
        Ok(b) => b,
        Err(e) => {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return Err(e.to_string());
        }
    };
    let (reply, answer) = oneshot::channel();
    let incoming = Incoming {
        connection: id,
        client_cert,
        request: bytes,
        reply,
    };
    let answer = match server.tx.try_send(incoming) {
        Ok(()) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            answer.await.map_err(|_| "the node stopped".to_string())?
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            counters.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err("the node is busy; try again in a moment".into());
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err("the node stopped".to_string());
        }
    };
    if matches!(answer.then, Then::Malformed(_)) {
        counters.malformed.fetch_add(1, Ordering::Relaxed);
    }
    write_frame(send, &answer.bytes)
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    Ok(match answer.then {
        Then::Next => After::Next,
        Then::Done => After::End(CLOSE_DONE, "done".into(), REQUEST_TIMEOUT),
        Then::Refused(reason) | Then::Malformed(reason) => {
            After::End(CLOSE_REFUSED, reason, CLOSE_GRACE)
        }
    })
}

/// Closes `connection` with `code` and `reason` (cut to [`MAX_CLOSE_REASON`] bytes, on a
/// character boundary).
fn close(connection: &quinn::Connection, code: u32, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    connection.close(code.into(), &reason.as_bytes()[..end]);
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
mod tests;
