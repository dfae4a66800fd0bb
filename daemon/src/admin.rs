//! The HTTPS admin API (`meshward run --admin-listen ADDR`).
//!
//! TLS 1.3 (rustls) with a **required** client certificate that must chain to the cluster CA
//! or to one of the node's external CAs ([`meshward_node::certs`]; rustls' `WebPkiClientVerifier`, as
//! the setup endpoint does): a certificate of any other CA is refused during the handshake.
//! The server presents the node's own certificate. After the handshake the certificate's CN is
//! the caller's user name; on **every request** the daemon actor checks the certificate's
//! serial against the mastered revocation list, looks the user up in the users view folded
//! from its verified mastered chain and decides with [`authorize`], so revoking a certificate,
//! deleting a user or taking a grant back cuts access on the next request, also on
//! connections already open.
//!
//! It serves the API's router ([`crate::api`]): every request is decided by the actor with
//! [`check`] and the table of [`meshward_node::ops::access`]. Request bodies are limited to
//! [`crate::api::MAX_BODY`] bytes (413 beyond) and connections to [`MAX_CONNECTIONS`] (more
//! wait).
//!
//! **Connections.** The accept loop never waits: each new connection is checked against its
//! address's rate, then takes a slot (`meshward_transport::slots`): at most
//! [`AdminLimits::connections_per_address`] held by one client address (IPv6: one /64) and
//! [`MAX_CONNECTIONS`] in all, from the accept until the connection ends. A connection over
//! either is closed at once, so one address holding idle connections cannot keep others from
//! being served. A held connection must finish its TLS handshake within [`HANDSHAKE_TIMEOUT`]
//! and send each request's headers within [`IDLE_TIMEOUT`] of the previous answer (or of the
//! handshake), else it is closed and its slot freed.
//!
//! New connections are rate-limited per client address, before the TLS handshake, and requests
//! per user certificate, before anything else (429 beyond): see [`limits`]. Every limit
//! counts when hit ([`AdminMetrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use meshward_transport::setup::TlsIdentity;
use meshward_transport::slots::{SlotRefused, Slots};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::api::{Caller, ClientCert};
use limits::Limiters;
use meshward_node::admin_limits::{AdminLimits, MAX_CONNECTIONS};
use meshward_node::authority::Access;
use meshward_node::certs::Serial;
use meshward_node::grants::{Action, Decision, UserName, authorize};

mod limits;

pub use limits::{RATE_KEYS, address_key};
/// How long a new connection may take to finish its TLS handshake: a few round trips, with
/// room for a slow link; a silent connection frees its slot after this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may wait before it sends a request's headers, after the handshake
/// or the previous answer (an idle keep-alive connection is closed after this).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the admin API (in `status --json` under `mesh.admin_metrics`, and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdminMetrics {
    /// Connections accepted (given a slot).
    pub connections: u64,
    /// Connections closed at once because [`MAX_CONNECTIONS`] were held.
    pub refused_full: u64,
    /// Connections closed at once because their address held
    /// [`AdminLimits::connections_per_address`].
    pub refused_address_full: u64,
    /// Connections closed because their TLS handshake took longer than [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeouts: u64,
    /// Connections closed because no request's headers came within [`IDLE_TIMEOUT`].
    pub idle_timeouts: u64,
    /// Connections held now (a gauge).
    pub open: u64,
    /// Requests refused with 413: a body over [`MAX_BODY`].
    pub body_too_large: u64,
    /// Requests refused with 429: over their user's rate ([`AdminLimits::per_user`]).
    pub rate_limited: u64,
    /// Connections closed before the TLS handshake: over their address's rate
    /// ([`AdminLimits::per_address`]).
    pub address_rate_limited: u64,
    /// Users forgotten by the per-user limit while short of a full burst, because it tracked
    /// [`limits::RATE_KEYS`] users.
    pub rate_forgotten: u64,
    /// Addresses forgotten likewise by the per-address limit.
    pub address_rate_forgotten: u64,
    /// Users the per-user limit tracks now (at most [`limits::RATE_KEYS`]).
    pub rate_tracked_users: u64,
    /// Addresses the per-address limit tracks now (at most [`limits::RATE_KEYS`]).
    pub rate_tracked_addresses: u64,
}

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    local: SocketAddr,
    counters: Arc<Counters>,
    limiters: Arc<Limiters>,
    slots: Arc<Slots>,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused_full: AtomicU64,
    refused_address_full: AtomicU64,
    handshake_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    body_too_large: AtomicU64,
}

/// Decides an HTTPS request against the revocation list and the users view: `Err((status,
/// message))` when refused (401: the certificate is revoked; 403: no such user, or `need` is
/// not allowed by its grants). `need` `None`: only that the CN names a user. Pure; bad input
/// never panics.
pub fn check(
    access: &Access,
    cert: Option<&ClientCert>,
    need: Option<&Action>,
) -> Result<(), (u16, String)> {
    let forbidden = |m: String| Err((403, m));
    let Some(cert) = cert else {
        return forbidden("the client certificate could not be read".into());
    };
    if let Some(version) = access.revoked.revoked_at(&cert.serial) {
        return Err((
            401,
            format!(
                "the client certificate (serial {}) was revoked at mastered version {version}; \
                 ask an administrator for a new one (`meshward user cert`)",
                cert.serial
            ),
        ));
    }
    let Some(cn) = cert.cn.as_deref() else {
        return forbidden("the client certificate has no CN naming a user".into());
    };
    let grants = match cn
        .parse::<UserName>()
        .ok()
        .and_then(|u| access.users.grants(&u).cloned())
    {
        Some(grants) => grants,
        None => {
            return forbidden(format!(
                "the client certificate names {:?}, which is not a user of this cluster (deleted?)",
                cn.chars().take(80).collect::<String>()
            ));
        }
    };
    let Some(action) = need else {
        return Ok(());
    };
    match authorize(&grants, action) {
        Decision::Allow => Ok(()),
        Decision::Deny(why) => forbidden(format!("user {cn} may not do this: {why}")),
    }
}

/// The rustls server configuration: the node's certificate, TLS 1.3, client certificates
/// required and verified against the cluster CA and the `external` CA certificates (DER) only.
pub fn tls_config(
    identity: &TlsIdentity,
    external: &[Vec<u8>],
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(identity.ca.clone()))
        .context("the cluster CA certificate")?;
    for (i, ca) in external.iter().enumerate() {
        roots
            .add(CertificateDer::from(ca.clone()))
            .with_context(|| format!("external CA certificate {}", i + 1))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(identity.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone())),
        )
        .context("the node's TLS certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `bind` and serves the admin API in the background, trusting client certificates of
/// the cluster CA and of the `external` CAs (DER), under the rate limits `limits`. Must be
/// called inside a tokio runtime.
pub async fn spawn(
    bind: SocketAddr,
    identity: &TlsIdentity,
    external: &[Vec<u8>],
    limits: AdminLimits,
    router: Router,
) -> anyhow::Result<AdminServer> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(identity, external)?));
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the admin API on {bind}; give another --admin-listen"))?;
    let local = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let limiters = Arc::new(Limiters::new(limits));
    let slots = Slots::new(MAX_CONNECTIONS, limits.connections_per_address.get());
    let router = router
        .layer(DefaultBodyLimit::max(crate::api::MAX_BODY))
        .layer(from_fn_with_state(limiters.clone(), limit_user))
        .layer(from_fn_with_state(counters.clone(), count_too_large));
    info!(addr = %local, external_cas = external.len(), ?limits, "admin API listening");
    tokio::spawn(accept(
        listener,
        Serve {
            acceptor,
            router,
            counters: counters.clone(),
        },
        limiters.clone(),
        slots.clone(),
    ));
    Ok(AdminServer {
        local,
        counters,
        limiters,
        slots,
    })
}

impl AdminServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A snapshot of its counters.
    pub fn metrics(&self) -> AdminMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metrics = AdminMetrics {
            connections: get(&self.counters.connections),
            refused_full: get(&self.counters.refused_full),
            refused_address_full: get(&self.counters.refused_address_full),
            handshake_timeouts: get(&self.counters.handshake_timeouts),
            idle_timeouts: get(&self.counters.idle_timeouts),
            open: self.slots.taken() as u64,
            body_too_large: get(&self.counters.body_too_large),
            ..AdminMetrics::default()
        };
        self.limiters.fill(&mut metrics);
        metrics
    }
}

/// The per-user rate limit, before anything else looks at the request (the connection's
/// [`Caller`] is set outside the router).
async fn limit_user(
    State(limiters): State<Arc<Limiters>>,
    Extension(caller): Extension<Caller>,
    request: Request,
    next: Next,
) -> Response {
    let cert = match &caller {
        Caller::Cert(cert) => cert.as_ref(),
        Caller::Local => return next.run(request).await,
    };
    match limiters.user(cert) {
        None => next.run(request).await,
        Some(too_many) => too_many,
    }
}

/// Counts answers of 413 (a body over [`crate::api::MAX_BODY`]).
async fn count_too_large(
    State(counters): State<Arc<Counters>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        counters.body_too_large.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// What serving one connection needs.
#[derive(Clone)]
struct Serve {
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    counters: Arc<Counters>,
}

/// Accepts connections; never waits for anything but the listener, so no address can stall it.
async fn accept(listener: TcpListener, serve: Serve, limiters: Arc<Limiters>, slots: Arc<Slots>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(limited) = limiters.address(peer.ip()) {
            debug!(%peer, retry_after_ms = limited.retry_after.as_millis(), "admin API connection over the address's rate; closed before the handshake");
            drop(tcp);
            continue;
        }
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                let counter = match refused {
                    SlotRefused::Full => &serve.counters.refused_full,
                    SlotRefused::SourceFull => &serve.counters.refused_address_full,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %refused, "admin API connection closed before the handshake");
                drop(tcp);
                continue;
            }
        };
        serve.counters.connections.fetch_add(1, Ordering::Relaxed);
        let serve = serve.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve.connection(tcp, peer).await;
        });
    }
}

impl Serve {
    /// The TLS handshake (at most [`HANDSHAKE_TIMEOUT`]), then HTTP/1.1 requests until the
    /// client closes or is silent for [`IDLE_TIMEOUT`].
    async fn connection(self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "admin API handshake refused");
                return;
            }
            Err(_) => {
                self.counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "admin API handshake timed out");
                return;
            }
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| client_cert(cert));
        let service = TowerToHyperService::new(self.router.layer(Extension(Caller::Cert(cert))));
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(IDLE_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(e) = served {
            if e.is_timeout() {
                self.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            debug!(%peer, error = %e, "admin API connection ended");
        }
    }
}

/// The certificate's subject CN and serial; `None` if it does not parse.
fn client_cert(der: &CertificateDer<'_>) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(ClientCert {
        cn,
        serial: Serial::from_der_integer(cert.raw_serial()),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use meshward_api::Request;

    use super::*;
    use meshward_node::certs::Revoked;
    use meshward_node::grants::{Grant, UserChange, Users};

    fn users() -> Access {
        let mut users = Users::default();
        for (name, grant) in [
            ("boss", Some("root")),
            ("reader", Some("guest:*")),
            ("writer", Some("admin:default")),
            ("other", Some("admin:ns1")),
            ("nobody", None),
        ] {
            let name: UserName = name.parse().unwrap();
            users.apply(&UserChange::Create(name.clone())).unwrap();
            if let Some(grant) = grant {
                users
                    .apply(&UserChange::AddGrant(name, grant.parse::<Grant>().unwrap()))
                    .unwrap();
            }
        }
        Access {
            users,
            revoked: Revoked::default(),
        }
    }

    /// A certificate naming `cn`, with a serial derived from it.
    fn cert(cn: &str) -> ClientCert {
        ClientCert {
            cn: Some(cn.to_string()),
            serial: Serial::from_der_integer(cn.as_bytes()),
        }
    }

    /// A sample of every kind of request.
    fn requests() -> Vec<Request> {
        use meshward_api::shared::{AppendEvents, EventQuery};
        vec![
            Request::ListEvents(EventQuery::default()),
            Request::ListFingerprints,
            Request::AppendEvents(AppendEvents { events: Vec::new() }),
            Request::SetException {
                user: "u".into(),
                field: "f".into(),
                value: "v".into(),
            },
            Request::Status,
            Request::ListConfig,
            Request::SetConfig {
                key: "password.min-length".into(),
                value: "12".into(),
            },
            Request::CreateBundle(Default::default()),
            Request::CreateUser { name: "bob".into() },
            Request::ListUsers,
            Request::Failback,
            Request::Fault(meshward_api::FaultRequest::Heal),
            Request::Unseal(meshward_api::node::Unseal { mek: String::new() }),
        ]
    }

    fn decide(user: &str, request: &Request) -> Result<(), (u16, String)> {
        match meshward_node::ops::access::required(request) {
            None => Err((403, "local socket only".into())),
            Some(action) => check(&users(), Some(&cert(user)), Some(&action)),
        }
    }

    #[test]
    fn requests_are_decided_by_the_grants_of_the_certificate_user() {
        let [
            events,
            _,
            append,
            exception,
            status,
            _,
            set,
            bundle,
            user,
            _,
            failback,
            fault,
            unseal,
        ] = requests().try_into().unwrap();
        assert_eq!(decide("boss", &set), Ok(()));
        assert_eq!(decide("boss", &bundle), Ok(()));
        assert_eq!(decide("boss", &user), Ok(()));
        assert_eq!(decide("boss", &failback), Ok(()));
        assert_eq!(decide("boss", &unseal), Ok(()));
        assert_eq!(decide("reader", &status), Ok(()));
        assert_eq!(decide("reader", &events), Ok(()));
        assert_eq!(decide("reader", &set).unwrap_err().0, 403);
        assert_eq!(decide("reader", &append).unwrap_err().0, 403);
        assert_eq!(decide("writer", &append), Ok(()));
        assert_eq!(decide("writer", &exception), Ok(()));
        assert_eq!(decide("writer", &status).unwrap_err().0, 403);
        assert_eq!(decide("other", &events).unwrap_err().0, 403);
        assert_eq!(decide("nobody", &status).unwrap_err().0, 403);
        assert_eq!(decide("ghost", &status).unwrap_err().0, 403);
        assert_eq!(decide("boss", &fault).unwrap_err().0, 403);
        assert_eq!(check(&users(), None, None).unwrap_err().0, 403);
        assert_eq!(check(&users(), Some(&cert("nobody")), None), Ok(()));
        assert_eq!(
            check(&users(), Some(&cert("Bad CN!")), None).unwrap_err().0,
            403
        );
        let no_cn = ClientCert {
            cn: None,
            ..cert("boss")
        };
        assert_eq!(check(&users(), Some(&no_cn), None).unwrap_err().0, 403);
    }

    /// A genesis and `records`, signed by a test leader and verified.
    fn verified(
        records: Vec<(meshward_crdt::mastered::RecordKind, Vec<u8>)>,
    ) -> Vec<meshward_crdt::mastered::Verified<meshward_crdt::mastered::SignedRecord>> {
        use meshward_crdt::mastered::{Chain, Member, RecordKind, Roster, TrustAnchor};
        let leader = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let mut chain = Chain::new(TrustAnchor {
            cluster: meshward_crdt::ClusterId([2; 16]),
            genesis_leader: leader.verifying_key().to_bytes(),
        });
        let roster = Roster {
            members: vec![Member {
                key: leader.verifying_key().to_bytes(),
                address: "a".into(),
            }],
        };
        let genesis = (RecordKind::Genesis, roster.encode());
        let mut verified = Vec::new();
        for (kind, payload) in std::iter::once(genesis).chain(records) {
            let record = chain.sign_next(&leader, kind, payload);
            verified.push(chain.verify(&record).unwrap());
            chain.apply(chain.verify(&record).unwrap()).unwrap();
        }
        verified
    }

    #[test]
    fn a_revoked_certificate_is_refused_whoever_it_names() {
        let mut access = users();
        let revoked = cert("boss");
        let records = verified(vec![revoked.serial.revocation()]);
        access.revoked = Revoked::fold(&records).unwrap();
        let (code, message) = check(&access, Some(&revoked), None).unwrap_err();
        assert_eq!(code, 401);
        assert!(
            message.contains(&format!("(serial {}) was revoked", revoked.serial)),
            "{message}"
        );
        // Another certificate of the same user, and other users, still pass.
        let other = ClientCert {
            serial: "01".parse().unwrap(),
            ..cert("boss")
        };
        assert_eq!(check(&access, Some(&other), None), Ok(()));
        assert_eq!(check(&access, Some(&cert("reader")), None), Ok(()));
    }

    proptest! {
        /// Whatever the request and the user, the decision agrees with the authorizer applied
        /// to the request's action, and nothing panics.
        #[test]
        fn decisions_follow_the_authorizer(
            pick in 0usize..13,
            user in prop_oneof![Just("boss"), Just("reader"), Just("writer"), Just("other"),
                Just("nobody"), Just("ghost")],
        ) {
            let request = requests().swap_remove(pick);
            let got = decide(user, &request);
            let users = users().users;
            let grants = users.grants(&user.parse().unwrap());
            match (grants, meshward_node::ops::access::required(&request)) {
                (None, _) | (_, None) => prop_assert_eq!(got.unwrap_err().0, 403),
                (Some(grants), Some(action)) => prop_assert_eq!(
                    got.is_ok(),
                    authorize(grants, &action) == Decision::Allow
                ),
            }
        }
    }
}
