//! Under flood: a legitimate join and a legitimate admin request are served while an attacker
//! on other loopback addresses (127.0.0.2 and up, still 127.0.0.0/8) holds as many connections
//! as one address can open and floods the endpoints. Real `meshward run` daemons, real QUIC and
//! TLS on 127.0.0.0/8; the attackers are quinn, rustls and TCP clients in this process. Every
//! daemon is killed by its own pid when its test ends.
//!
//! The figures in BENCHMARKS.md ("Under flood") are what these tests print:
//! `cargo test -p meshward-tests --test flood -- --nocapture --test-threads 1`.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshward_node::admin_limits::ADDRESS_CONNECTIONS;
use meshward_node::join::JoiningBundle;
use meshward_node::join::wire::SetupRequest;
use meshward_tests::{
    ClientIdentity as Identity, Daemon, cli, cli_fails, free_port_pair, init_with_issuer,
    install_licence, meshward_bin, wait_for, wait_or_kill,
};
use meshward_transport::setup::ALPN;
use rustls::pki_types::ServerName;

/// Stalled handshakes the attacker keeps open from one address at first (the old endpoint
/// served 32 connections in all, the admin API 64), then more every [`HOLD_EVERY`].
const HOLD: usize = 64;
/// How often the holder opens [`HOLD_MORE`] more stalled handshakes.
const HOLD_EVERY: Duration = Duration::from_millis(250);
/// Stalled handshakes opened each [`HOLD_EVERY`].
const HOLD_MORE: usize = 8;
/// Most sockets the holder keeps (each stalled handshake has its own).
const HOLD_MAX: usize = 400;
/// Concurrent clients of each join flood.
const FLOODERS: usize = 10;
/// Connections each flood client keeps open without closing them (a client that exits
/// without closing).
const KEEP: usize = 10;
/// Idle TCP connections held against the admin API from one address.
const IDLE_TCP: usize = 200;
/// The legitimate join must not wait this long (the join's own connect timeout; the old
/// endpoint's stalls were 10–15 s).
const JOIN_BOUND: Duration = Duration::from_secs(10);
/// The legitimate admin request must be answered sooner than this (the old API freed a slot
/// only after a 10 s handshake timeout).
const REQUEST_BOUND: Duration = Duration::from_secs(8);

/// These tests load the machine; run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A leader made by `init` on 127.0.0.1, with a licence for three nodes. Returns its data
/// directory.
fn licensed_leader(root: &Path) -> PathBuf {
    let data = root.join("leader");
    let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
    init_with_issuer(&data, &addr, [0x22; 32]).expect("init");
    install_licence(&data, [0x22; 32], 3).expect("licence install");
    data
}

/// `meshward join` arguments for a node at `addr`.
fn join_args<'a>(bundle: &'a Path, mek: &'a Path, addr: &'a str) -> [&'a str; 9] {
    [
        "join",
        "--bundle",
        p(bundle),
        "--mek",
        p(mek),
        "--address",
        addr,
        "--listen",
        addr,
    ]
}

/// A joining bundle's one-time certificate, as a client identity.
fn bundle_identity(file: &Path) -> Identity {
    let bundle =
        JoiningBundle::decode(&std::fs::read(file).expect("bundle file")).expect("a bundle");
    Identity {
        ca: bundle.ca_cert,
        cert: bundle.client_cert,
        key: bundle.client_key,
    }
}

/// A QUIC client configuration of the setup endpoint that presents `identity`.
fn quic(identity: &Identity) -> quinn::ClientConfig {
    let tls = identity.rustls(Some(ALPN)).expect("a TLS configuration");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("a QUIC client configuration");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// The address `status --json` gives under `mesh.KEY` (`setup`, `admin`).
fn listening(daemon: &Daemon, key: &str) -> SocketAddr {
    let status = daemon.status().expect("status");
    status["mesh"][key]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key} address in {status}"))
}

/// A UDP socket that hears nothing after the server's first packet that is not a Retry: the
/// client answers address validation, then goes silent mid-handshake, so the server waits for
/// a handshake that never completes.
#[derive(Debug)]
struct Deaf {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    deaf: AtomicBool,
}

impl quinn::AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => {
                    // A Retry packet: long header, fixed bit, type 3 (RFC 9000 17.2.5).
                    let retry = n > 0 && meta[0].len > 0 && bufs[0][0] & 0xf0 == 0xf0;
                    if retry && !self.deaf.load(Ordering::Relaxed) {
                        return Poll::Ready(Ok(n));
                    }
                    self.deaf.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Keeps stalled handshakes open from `from` against `server` until `stop`: [`HOLD`] at
/// once, then [`HOLD_MORE`] every [`HOLD_EVERY`], up to [`HOLD_MAX`]. Returns how many it
/// opened.
async fn hold(
    from: IpAddr,
    server: SocketAddr,
    name: String,
    config: quinn::ClientConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<usize> {
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let mut kept = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let more = if kept.is_empty() { HOLD } else { HOLD_MORE };
        for _ in 0..more.min(HOLD_MAX - kept.len()) {
            let socket = std::net::UdpSocket::bind((from, 0))?;
            let deaf = Arc::new(Deaf {
                inner: runtime.wrap_udp_socket(socket)?,
                deaf: AtomicBool::new(false),
            });
            let endpoint = quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                None,
                deaf,
                runtime.clone(),
            )?;
            // Kept, never polled: the endpoint's driver sends the packets.
            let connecting = endpoint.connect_with(config.clone(), server, &name)?;
            kept.push((endpoint, connecting));
        }
        tokio::time::sleep(HOLD_EVERY).await;
    }
    Ok(kept.len())
}

/// What one join flood did.
#[derive(Debug, Default)]
struct Flooded {
    attempts: AtomicU64,
    handshakes: AtomicU64,
}

/// [`FLOODERS`] clients from `from` connect with `identity` and send a join hello, again and
/// again until `stop`; each keeps its last [`KEEP`] connections open without closing them.
async fn flood(
    from: IpAddr,
    server: SocketAddr,
    name: String,
    identity: Identity,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Arc<Flooded>> {
    let flooded = Arc::new(Flooded::default());
    let hello = SetupRequest::JoinHello {
        node_key: [7; 32],
        address: "127.0.0.9:7000".into(),
        tls_key: vec![4; 65],
    }
    .encode();
    let mut tasks = Vec::new();
    for _ in 0..FLOODERS {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(from, 0))?;
        endpoint.set_default_client_config(quic(&identity));
        let (stop, flooded, name, hello) =
            (stop.clone(), flooded.clone(), name.clone(), hello.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                flooded.attempts.fetch_add(1, Ordering::Relaxed);
                let attempt = async {
                    let connection = endpoint.connect(server, &name)?.await?;
                    flooded.handshakes.fetch_add(1, Ordering::Relaxed);
                    let (mut send, mut recv) = connection.open_bi().await?;
                    send.write_all(&u32::try_from(hello.len())?.to_be_bytes())
                        .await?;
                    send.write_all(&hello).await?;
                    send.finish()?;
                    let _ = recv.read_to_end(64 * 1024).await;
                    anyhow::Ok(connection)
                };
                if let Ok(Ok(connection)) =
                    tokio::time::timeout(Duration::from_secs(10), attempt).await
                {
                    kept.push_back(connection);
                    if kept.len() > KEEP {
                        kept.pop_front();
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(kept);
            endpoint
        }));
    }
    for task in tasks {
        // The endpoints outlive the flood so that nothing is closed before `stop`.
        std::mem::drop(task.await?);
    }
    Ok(flooded)
}

#[test]
fn a_join_is_served_while_one_address_holds_the_setup_endpoint_and_others_flood_it() {
    let _serial = serial();
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let leader = licensed_leader(root);
    // A revoked admin certificate, an old (superseded) bundle and the current one.
    cli(&leader, &["user", "create", "mallory"]).expect("user create");
    let certs = root.join("certs");
    let out = cli(
        &leader,
        &["user", "cert", "mallory", "--out", p(&certs), "--json"],
    )
    .expect("user cert");
    let serial: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let serial = serial["serial"].as_str().expect("a serial");
    cli(&leader, &["cert", "revoke", serial]).expect("cert revoke");
    let daemon = Daemon::start_with(&leader, &[]).expect("daemon");
    let old = root.join("old-bundle");
    let new = root.join("new-bundle");
    for file in [&old, &new] {
        cli(&leader, &["bundle", "create", "--out", p(file)]).expect("bundle create");
    }
    let server = listening(&daemon, "setup");
    let name = server.ip().to_string();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let holder = runtime.spawn(hold(
        loopback(2),
        server,
        name.clone(),
        quic(&bundle_identity(&new)),
        stop.clone(),
    ));
    let old_bundle = runtime.spawn(flood(
        loopback(3),
        server,
        name.clone(),
        bundle_identity(&old),
        stop.clone(),
    ));
    let revoked = runtime.spawn(flood(
        loopback(4),
        server,
        name,
        Identity::load(&certs, "mallory"),
        stop.clone(),
    ));
    // Let the flood fill what it can.
    std::thread::sleep(Duration::from_secs(2));

    let joiner = root.join("joiner");
    let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
    let mek = leader.join("mek");
    let start = Instant::now();
    let mut join = std::process::Command::new(meshward_bin())
        .arg("--data")
        .arg(&joiner)
        .args(join_args(&new, &mek, &addr))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("meshward join");
    let status = wait_or_kill(&mut join, Duration::from_secs(60)).expect("join ends");
    let took = start.elapsed();
    let mut stderr = String::new();
    if let Some(mut err) = join.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let metrics = daemon.status().expect("status")["mesh"]["setup_metrics"].clone();
    // The stalled handshakes are cut at their deadline, and counted, while the flood goes on.
    let timed_out = wait_for(Duration::from_secs(30), || {
        let setup = &daemon.status()?["mesh"]["setup_metrics"];
        Ok(setup["handshake_timeouts"].as_u64() >= Some(1))
    });

    stop.store(true, Ordering::Relaxed);
    let held = runtime
        .block_on(holder)
        .expect("holder task")
        .expect("holder");
    let [old_bundle, revoked] = [old_bundle, revoked]
        .map(|task| runtime.block_on(task).expect("flood task").expect("flood"));
    runtime.shutdown_timeout(Duration::from_secs(2));
    eprintln!(
        "under flood: join {} in {:.2} s; stalled handshakes opened from 127.0.0.2: {held}; \
         old bundle from 127.0.0.3: {:?}; revoked certificate from 127.0.0.4: {:?}; \
         setup endpoint: {metrics}",
        if status.success() {
            "succeeded"
        } else {
            "failed"
        },
        took.as_secs_f64(),
        old_bundle,
        revoked
    );
    assert!(status.success(), "the join failed after {took:?}: {stderr}");
    assert!(took < JOIN_BOUND, "the join took {took:?}");
    assert!(held >= HOLD, "the holder opened {held}");
    for flooded in [&old_bundle, &revoked] {
        assert!(
            flooded.attempts.load(Ordering::Relaxed) >= FLOODERS as u64,
            "{flooded:?}"
        );
    }
    // Every refusal is counted: sources over their share, certificates the gate closed, and
    // the stalled handshakes once their deadline passed.
    let counted = |key: &str| metrics[key].as_u64().unwrap_or(0);
    assert!(counted("refused_source") >= 1, "{metrics}");
    assert!(counted("refused_certificate") >= 1, "{metrics}");
    timed_out.expect("stalled handshakes time out");
    wait_for(Duration::from_secs(30), || {
        Ok(daemon.status()?["mesh"]["setup_metrics"]["open"] == 0)
    })
    .expect("every slot is given back once the flood stops");
    eprintln!(
        "after the flood: setup endpoint: {}",
        daemon.status().expect("status")["mesh"]["setup_metrics"]
    );
    // A joiner with a superseded or a used bundle learns why from the endpoint's close, at once.
    for (file, why) in [(&old, "superseded"), (&new, "already used")] {
        let other = root.join(format!("other-{why}"));
        let err = cli_fails(&other, &join_args(file, &mek, &addr)).expect("join refused");
        assert!(
            err.contains("the leader refused the join") && err.contains(why),
            "{err}"
        );
    }
}

/// A TLS 1.3 connection to `addr` from the address `from`, presenting `id`'s certificate.
fn connect_from(
    runtime: &tokio::runtime::Runtime,
    from: IpAddr,
    addr: SocketAddr,
    id: &Identity,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        socket.connect(addr).await?.into_std()
    })?;
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
    let conn = rustls::ClientConnection::new(
        Arc::new(id.rustls(Some(b"http/1.1"))?),
        ServerName::try_from("127.0.0.1")?,
    )?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// `GET path` on a new connection from `from`; the status code and the body.
fn get_from(
    runtime: &tokio::runtime::Runtime,
    from: IpAddr,
    addr: SocketAddr,
    id: &Identity,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let mut tls = connect_from(runtime, from, addr, id)?;
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    if let Err(e) = tls.read_to_end(&mut reply)
        && reply.is_empty()
    {
        return Err(e).context("reading the reply");
    }
    let reply = String::from_utf8(reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").context("no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((code, body.to_string()))
}

#[test]
fn an_admin_request_is_served_while_one_address_holds_200_idle_connections() {
    let _serial = serial();
    let root = tempfile::tempdir().expect("tempdir");
    let leader = licensed_leader(root.path());
    cli(&leader, &["user", "create", "alice"]).expect("user create");
    cli(&leader, &["user", "grant", "alice", "root"]).expect("user grant");
    let certs = root.path().join("certs");
    cli(&leader, &["user", "cert", "alice", "--out", p(&certs)]).expect("user cert");
    let alice = Identity::load(&certs, "alice");
    let daemon = Daemon::start_with(
        &leader,
        &["--admin-listen".to_string(), "127.0.0.1:0".to_string()],
    )
    .expect("daemon");
    let api = listening(&daemon, "admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // A client that finishes its handshake, then says nothing.
    let mut silent = connect_from(&runtime, loopback(3), api, &alice).expect("a connection");
    silent
        .conn
        .complete_io(&mut silent.sock)
        .expect("the handshake");
    let silent_since = Instant::now();
    // 127.0.0.1 opens 200 connections and says nothing on them.
    let idle: Vec<TcpStream> = (0..IDLE_TCP)
        .filter_map(|_| TcpStream::connect(api).ok())
        .collect();
    // 127.0.0.1 holds its whole share; the rest was closed at once, and counted.
    let mut held = serde_json::Value::Null;
    wait_for(Duration::from_secs(30), || {
        held = daemon.status()?["mesh"]["admin_metrics"].clone();
        Ok(held["open"].as_u64() >= Some(ADDRESS_CONNECTIONS as u64)
            && held["refused_address_full"].as_u64() >= Some(1))
    })
    .unwrap_or_else(|e| panic!("127.0.0.1 does not hold its share: {e:#}: {held}"));
    let start = Instant::now();
    let served = get_from(&runtime, loopback(2), api, &alice, "/v1/status");
    let took = start.elapsed();
    let metrics = daemon.status().expect("status")["mesh"]["admin_metrics"].clone();
    eprintln!(
        "under flood: admin request from 127.0.0.2 {} in {:.3} s after 127.0.0.1 opened {} idle \
         connections and held its share; admin API: {metrics}",
        if matches!(served, Ok((200, _))) {
            "served"
        } else {
            "not served"
        },
        took.as_secs_f64(),
        idle.len()
    );
    let (code, body) = served.unwrap_or_else(|e| panic!("after {took:?}: {e:#}"));
    assert_eq!(code, 200, "{body}");
    assert!(took < REQUEST_BOUND, "the request took {took:?}");
    // The refusals are in /metrics too.
    let (code, text) = get_from(&runtime, loopback(2), api, &alice, "/metrics").expect("metrics");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.lines().any(|l| l
            .strip_prefix("meshward_admin_refused_address_full ")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)),
        "{text}"
    );
    // The silent connections free their slots: those of 127.0.0.1 after the handshake
    // deadline, the authenticated one after the idle deadline.
    wait_for(Duration::from_secs(30), || {
        let admin = &daemon.status()?["mesh"]["admin_metrics"];
        Ok(
            admin["handshake_timeouts"].as_u64() >= Some(ADDRESS_CONNECTIONS as u64)
                && admin["idle_timeouts"].as_u64() >= Some(1)
                && admin["open"] == 0,
        )
    })
    .expect("silent connections are closed");
    let mut rest = Vec::new();
    let closed = silent.sock.read_to_end(&mut rest);
    assert!(
        !matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the silent connection is open {:?} after its handshake: {closed:?}",
        silent_since.elapsed()
    );
    drop(idle);
}
