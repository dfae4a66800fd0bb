//! Creating and growing a cluster: `meshward init`, `bundle create`, `join`, `licence install`,
//! and the leader's answers on the setup endpoint.
//!
//! - `init` makes this node the leader of epoch 1 of a new cluster: the cluster id (the
//!   store's random id), the cluster CA (its key sealed with the MEK in a mastered
//!   `SealedSecret` record, so a later leader can issue certificates too), this node's TLS
//!   certificate, the MEK (printed once, written 0600 to `DATA/mek`) and the genesis roster
//!   signed with the node key.
//! - `bundle create` (leader only) writes a one-time joining bundle ([`JoiningBundle`], file
//!   0600) and durably records it as the only current bundle (its id, certificate fingerprint
//!   and expiry): creating one supersedes the previous one.
//! - `join` runs the protocol of [`crate::join`] against the leader's setup endpoint, verifies
//!   every mastered record it receives from the bundle's trust anchor before storing any, and
//!   keeps a copy of the MEK (0600).
//!
//! Data directory files: `mek` (the MEK, 0600), `meshward.toml` (node config, optional), the
//! store. The TLS identity (node certificate and key, CA certificate) and the current bundle
//! live in the store's node-local values.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use meshward_crdt::mastered::{Chain, Member, RecordKind, SignedRecord, TrustAnchor};
use meshward_transport::setup::{Request, Response, SetupClient, SetupError, TlsIdentity};
use rand::RngCore as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tracing::info;
use zeroize::Zeroizing;

use crate::cli::{Backend, Global, emit, now_ms, read_bounded};
use crate::config::NodeConfig;
use crate::join::{
    Admission, BundleState, ClusterClaim, Facts, Hello, JoinRefusal, JoiningBundle,
    MAX_JOINING_BUNDLE, utc,
};
use crate::licence::{Licence, MAX_LICENCE_FILE};
use crate::mek::Mek;
use crate::pki::{Ca, SealedSecret};
use crate::roster::{MasteredBundle, WriteError, leader_address};
use crate::store::Store;

pub use crate::mek::MEK_FILE;
/// Longest (and default) joining bundle lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The bundle certificate outlives the bundle a little, so that the leader, not TLS, says
/// "expired" (with a clear message) for a slightly late join.
const CERT_GRACE: Duration = Duration::from_secs(600);
/// Store value: the node's TLS certificate (DER).
const TLS_CERT: &str = "tls-cert";
/// Store value: the node's TLS key (PKCS#8 DER).
const TLS_KEY: &str = "tls-key";
/// Store value: the cluster CA certificate (DER).
const CA_CERT: &str = "ca-cert";
/// Store value: the current joining bundle ([`BundleState`]).
const BUNDLE_STATE: &str = "join-bundle";
/// Local setting: the mesh listen address `meshward run` uses when given none.
pub const LISTEN_SETTING: &str = "listen";
/// How long `join` waits to resolve the leader's address.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `meshward init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// This node's address: FQDN or IP, optionally with its mesh port (unique in the cluster;
    /// an FQDN must resolve to a local address).
    #[arg(long)]
    pub address: String,
    /// UDP address `meshward run` listens on for the mesh (the setup endpoint uses the next
    /// port); stored, default 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// `meshward join`
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The joining bundle file from the leader's `meshward bundle create`.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The cluster's MEK file.
    #[arg(long)]
    pub mek: PathBuf,
    /// This node's address (as for `init`).
    #[arg(long)]
    pub address: String,
    /// UDP address `meshward run` listens on for the mesh; stored, default 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// `meshward bundle …`
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Write a one-time joining bundle (leader only); it supersedes any earlier one.
    Create {
        /// How long it is valid: e.g. 30m, 2h, 24h (the default and the longest).
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        ttl: Duration,
        /// The file to write (mode 0600; must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `meshward licence …`
#[derive(Debug, Subcommand)]
pub enum LicenceCmd {
    /// Verify a licence file against the configured issuer and store it (leader only).
    Install {
        /// The licence file.
        file: PathBuf,
    },
    /// Show the installed licence.
    Show,
}

/// Runs `meshward bundle …` and `meshward licence …` on `backend`.
pub fn run_bundle(
    cmd: BundleCmd,
    g: &Global,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let BundleCmd::Create { ttl, out: path } = cmd;
    if ttl > MAX_TTL {
        bail!("a joining bundle is valid for at most 24h; give --ttl 24h or less");
    }
    if ttl.is_zero() {
        bail!("--ttl must be more than zero");
    }
    let setup_port = match backend.setup_addr() {
        Some(addr) => addr.port(),
        None => setup_port_from_settings(backend.store()?)?,
    };
    let store = backend.store()?;
    let chain = require_leader(store)?;
    let now = SystemTime::now();
    match current_licence(store)? {
        None => bail!("{}", JoinRefusal::NoLicence),
        Some(l) if l.check_time(ms(now)).is_err() => bail!(
            "{}",
            JoinRefusal::LicenceExpired {
                at_ms: l.terms.expires_at_ms
            }
        ),
        Some(_) => {}
    }
    let mek = load_mek(&g.data)?;
    let ca = open_ca(store, chain.cluster(), &mek)?;
    let address = leader_address(&chain);
    let host = address_host(&address);
    let setup_addr = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{setup_port}"),
        _ => format!("{host}:{setup_port}"),
    };
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let expires = now + ttl;
    let client = ca.issue_client(
        &format!("{}{}", crate::join::BUNDLE_CN_PREFIX, hex::encode(id)),
        now,
        expires + CERT_GRACE,
    )?;
    let bundle = JoiningBundle {
        id,
        cluster: chain.cluster().0,
        genesis_leader: store
            .anchor()?
            .context("the node has no trust anchor")?
            .genesis_leader,
        setup_addr,
        server_name: host.to_string(),
        ca_cert: ca.cert.clone(),
        client_cert: client.cert.clone(),
        client_key: client.key.to_vec(),
        expires_at_ms: ms(expires),
    };
    crate::disk::write_new(&path, &Zeroizing::new(bundle.encode()), 0o600)?;
    let state = BundleState {
        id,
        cert: Sha256::digest(&client.cert).into(),
        expires_at_ms: ms(expires),
        used_by: None,
    };
    if let Err(e) = store.set_blobs(&[(BUNDLE_STATE, postcard::to_allocvec(&state)?.as_slice())]) {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    info!(bundle = %hex::encode(&id[..4]), "joining bundle created");
    emit(
        g,
        out,
        json!({"bundle": hex::encode(id), "file": path.display().to_string(),
               "setup": bundle.setup_addr, "expires_at_ms": bundle.expires_at_ms}),
        &format!(
            "wrote joining bundle {} to {} (leader setup endpoint {}); valid until {} or until the next \
             `meshward bundle create`; use it once with `meshward join --bundle {} --mek MEK_FILE --address ADDR`",
            hex::encode(&id[..4]),
            path.display(),
            bundle.setup_addr,
            utc(bundle.expires_at_ms),
            path.display()
        ),
    )
}

/// Runs `meshward licence …` on `backend`.
pub fn run_licence(
    cmd: LicenceCmd,
    g: &Global,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        LicenceCmd::Install { file } => {
            require_leader(backend.store()?)?;
            let issuer = NodeConfig::load(&g.data)?.issuer()?;
            let bytes = read_bounded(&file, MAX_LICENCE_FILE)?;
            let licence = Licence::from_file(&bytes, &issuer, now_ms() as u64)
                .with_context(|| format!("licence {}", file.display()))?;
            let version = backend.master(RecordKind::Licence, licence.encode())?;
            let t = &licence.terms;
            emit(
                g,
                out,
                json!({"customer": t.customer, "max_nodes": t.max_nodes, "expires_at_ms": t.expires_at_ms, "version": version}),
                &format!(
                    "licence installed (mastered record {version}): {} may run {} nodes until {}",
                    t.customer,
                    t.max_nodes,
                    utc(t.expires_at_ms)
                ),
            )
        }
        LicenceCmd::Show => match current_licence(backend.store()?)? {
            None => emit(
                g,
                out,
                json!(null),
                "no licence installed: the cluster runs standalone",
            ),
            Some(l) => emit(
                g,
                out,
                json!({"customer": l.terms.customer, "max_nodes": l.terms.max_nodes, "expires_at_ms": l.terms.expires_at_ms}),
                &format!(
                    "{} may run {} nodes until {}",
                    l.terms.customer,
                    l.terms.max_nodes,
                    utc(l.terms.expires_at_ms)
                ),
            ),
        },
    }
}

/// `meshward init`: creates a cluster with this node as the leader of epoch 1.
pub fn init(data: &Path, args: &InitArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check_address(&args.address)?;
    let mek_path = data.join(MEK_FILE);
    refuse_initialised(data)?;
    let store =
        Store::open(data).with_context(|| format!("opening the store in {}", data.display()))?;
    refuse_member(&store, data)?;
    let identity = store.identity()?;
    let cluster = identity.cluster;
    let now = SystemTime::now();
    let ca = Ca::create(cluster, now)?;
    let (tls_key, tls_public) = crate::pki::node_key()?;
    let tls_cert = ca.issue_node(&tls_public, address_host(&args.address), now)?;
    let mek = Mek::generate(&mut rand::rngs::OsRng);
    let genesis = MasteredBundle::genesis(
        &identity.key,
        cluster,
        vec![Member {
            key: identity.key.verifying_key().to_bytes(),
            address: args.address.clone(),
        }],
    );
    // The MEK file first: it refuses to overwrite, and without it the cluster is useless.
    mek.write_new(&mek_path)?;
    let stored = (|| -> anyhow::Result<()> {
        crate::roster::import(&store, &genesis.encode())?;
        crate::roster::write(&store, RecordKind::SealedSecret, ca.seal(&mek).encode())?;
        store_credentials(&store, &tls_cert, &tls_key, &ca.cert, args.listen)
    })();
    if let Err(e) = stored {
        let _ = std::fs::remove_file(&mek_path);
        return Err(e.context("initialising the cluster"));
    }
    info!(cluster = %cluster.to_hex(), "cluster initialised; this node leads epoch 1");
    writeln!(
        out,
        "initialised cluster {} with this node ({}) as leader of epoch 1\n\
         \n\
         Master Encryption Key (shown once; also written to {}):\n\
         \n    {}\n\n\
         Store it in your vault now: joining nodes and restores need it.\n\
         Next: install a licence (`meshward licence install FILE`), start the node (`meshward run`),\n\
         then create a joining bundle for each new node (`meshward bundle create --out FILE`).",
        cluster.to_hex(),
        args.address,
        mek_path.display(),
        mek.to_hex().as_str(),
    )?;
    Ok(())
}

/// `meshward join`: joins the cluster of a joining bundle.
pub fn join(data: &Path, args: &JoinArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = read_bounded(&args.bundle, MAX_JOINING_BUNDLE)?;
    let bundle = JoiningBundle::decode(&bytes)
        .with_context(|| format!("joining bundle {}", args.bundle.display()))?;
    let mek = Mek::load(&args.mek)?;
    check_address(&args.address)?;
    refuse_initialised(data)?;
    let store =
        Store::open(data).with_context(|| format!("opening the store in {}", data.display()))?;
    refuse_member(&store, data)?;
    let identity = store.identity()?;
    let member = Member {
        key: identity.key.verifying_key().to_bytes(),
        address: args.address.clone(),
    };
    let (tls_key, tls_public) = crate::pki::node_key()?;
    let claim = ClusterClaim::of_bundle(&bundle);
    let hello = Hello {
        member: member.clone(),
        tls_key: tls_public.clone(),
        claim,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let joined = runtime.block_on(async {
        let addr = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&bundle.setup_addr))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|mut a| a.next())
            .with_context(|| format!("the leader's setup address {} does not resolve", bundle.setup_addr))?;
        let tls = TlsIdentity {
            cert: bundle.client_cert.clone(),
            key: bundle.client_key.clone(),
            ca: bundle.ca_cert.clone(),
        };
        let client = match SetupClient::connect(addr, &bundle.server_name, &tls).await {
            Ok(client) => client,
            Err(SetupError::Refused { reason, .. }) => {
                bail!("the leader refused the join: {reason}")
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach the leader's setup endpoint at {}; is `meshward run` running on the leader?",
                        bundle.setup_addr
                    )
                });
            }
        };
        let exchange = async {
            let request = Request::JoinHelloV2 {
                node_key: member.key,
                address: member.address.clone(),
                tls_key: tls_public.clone(),
                cluster: claim.cluster,
                genesis_leader: claim.genesis_leader,
                ca_cert: claim.ca_cert,
            };
            let nonce = leader_challenge(client.request(&request).await?, &claim)?;
            let (answer, signature) =
                crate::join::respond(&mek, &identity.key, &nonce, &bundle.id, &hello);
            Ok(client
                .request(&Request::JoinAnswer { answer, signature })
                .await?)
        };
        let reply: anyhow::Result<Response> = exchange.await;
        // On every path, so the leader's endpoint frees the slot at once.
        client.close().await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => match e.downcast_ref::<SetupError>() {
                Some(SetupError::Refused { reason, .. }) => {
                    bail!("the leader refused the join: {reason}")
                }
                _ => return Err(e),
            },
        };
        match reply {
            Response::Joined {
                cluster,
                genesis_leader,
                records,
                node_cert,
            } => anyhow::Ok((cluster, genesis_leader, records, node_cert)),
            Response::Refused { reason } => bail!("the leader refused the join: {reason}"),
            other => bail!("unexpected answer from the leader: {other:?}"),
        }
    })?;
    let (cluster, genesis_leader, records, node_cert) = joined;
    anyhow::ensure!(
        cluster == bundle.cluster && genesis_leader == bundle.genesis_leader,
        "the leader answered for another cluster than the bundle's; nothing was stored"
    );
    let anchor = TrustAnchor {
        cluster: meshward_crdt::ClusterId(cluster),
        genesis_leader,
    };
    // Verify every record from the anchor before storing anything.
    let mut chain = Chain::new(anchor);
    for (i, raw) in records.iter().enumerate() {
        let record = SignedRecord::decode(raw)
            .with_context(|| format!("mastered record {i} from the leader"))?;
        let verified = chain
            .verify(&record)
            .with_context(|| format!("mastered record {i} from the leader does not verify"))?;
        chain
            .apply(verified)
            .map_err(|_| anyhow::anyhow!("mastered record {i} did not apply"))?;
    }
    anyhow::ensure!(
        chain.roster().members.contains(&member),
        "the leader's roster does not list this node; nothing was stored"
    );
    let ca = ca_secret(&records)?;
    anyhow::ensure!(
        ca.public == bundle.ca_cert,
        "the cluster CA in the mastered chain differs from the bundle's; nothing was stored"
    );
    let encoded = MasteredBundle {
        cluster,
        genesis_leader,
        records,
    }
    .encode();
    mek.write_new(&data.join(MEK_FILE))?;
    let stored = (|| -> anyhow::Result<()> {
        crate::roster::import(&store, &encoded)?;
        store_credentials(&store, &node_cert, &tls_key, &bundle.ca_cert, args.listen)
    })();
    if let Err(e) = stored {
        let _ = std::fs::remove_file(data.join(MEK_FILE));
        return Err(e.context("storing the cluster's records"));
    }
    info!(cluster = %anchor.cluster.to_hex(), "joined the cluster");
    writeln!(
        out,
        "joined cluster {} as {} ({} members); the MEK copy is in {}.\nStart the node with `meshward --data {} run`.",
        anchor.cluster.to_hex(),
        args.address,
        chain.roster().members.len(),
        data.join(MEK_FILE).display(),
        data.display()
    )?;
    Ok(())
}

/// The nonce of the leader's answer to our hello, once the leader's cluster is the one our
/// bundle names (`claim`); nothing is answered otherwise.
fn leader_challenge(reply: Response, claim: &ClusterClaim) -> anyhow::Result<[u8; 32]> {
    match reply {
        Response::ChallengeV2 {
            nonce,
            cluster,
            genesis_leader,
            ca_cert,
        } => {
            let theirs = ClusterClaim {
                cluster,
                genesis_leader,
                ca_cert,
            };
            if let Some(field) = claim.differs_from(&theirs) {
                bail!(
                    "the leader's {field} is not the joining bundle's: the bundle was altered or \
                     belongs to another cluster; nothing was sent or stored: use the file exactly \
                     as `meshward bundle create` wrote it"
                );
            }
            Ok(nonce)
        }
        Response::Challenge { .. } => bail!(
            "the leader runs an older meshward that does not confirm its cluster; upgrade \
             meshward on the leader first"
        ),
        Response::Refused { reason } => bail!("the leader refused the join: {reason}"),
        other => bail!("unexpected answer from the leader: {other:?}"),
    }
}

/// The leader's answer to one setup request (never an error: a refusal is an answer).
pub fn serve_setup(
    backend: &mut dyn Backend,
    admission: &mut Admission,
    data: &Path,
    connection: u64,
    client_cert: [u8; 32],
    request: Request,
) -> Response {
    match answer_setup(backend, admission, data, connection, client_cert, request) {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(connection, error = %format!("{e:#}"), "setup request refused");
            Response::Refused {
                reason: format!("{e:#}"),
            }
        }
    }
}

fn answer_setup(
    backend: &mut dyn Backend,
    admission: &mut Admission,
    data: &Path,
    connection: u64,
    client_cert: [u8; 32],
    request: Request,
) -> anyhow::Result<Response> {
    let now = now_ms() as u64;
    let chain = backend.chain()?;
    let store = backend.store()?;
    let chain = leader_of(store, chain)?;
    let bundle = bundle_state(store)?;
    let licence = current_licence(store)?;
    let records: Vec<Vec<u8>> = store
        .mastered_records()?
        .iter()
        .map(SignedRecord::encode)
        .collect();
    // What the joiner checks our final answer against, so that it is checked before anything
    // is committed: the trust anchor and the CA of the mastered chain.
    let ours = ClusterClaim::new(
        chain.cluster().0,
        store.anchor()?.context("no trust anchor")?.genesis_leader,
        &ca_secret(&records)?.public,
    );
    let facts = Facts {
        bundle: bundle.as_ref(),
        roster: chain.roster(),
        licence: licence.as_ref(),
        cluster: ours,
    };
    match request {
        Request::JoinHello { .. } => bail!(
            "this joiner runs an older meshward whose hello does not say which cluster its \
             bundle is for; upgrade meshward on the joining node"
        ),
        Request::JoinHelloV2 {
            node_key,
            address,
            tls_key,
            cluster,
            genesis_leader,
            ca_cert,
        } => {
            let hello = Hello {
                member: Member {
                    key: node_key,
                    address,
                },
                tls_key,
                claim: ClusterClaim {
                    cluster,
                    genesis_leader,
                    ca_cert,
                },
            };
            let nonce = admission.hello(now, connection, client_cert, hello, facts)?;
            Ok(Response::ChallengeV2 {
                nonce,
                cluster: ours.cluster,
                genesis_leader: ours.genesis_leader,
                ca_cert: ours.ca_cert,
            })
        }
        Request::JoinAnswer { answer, signature } => {
            let mek = load_mek(data)?;
            let admit = admission.answer(now, connection, answer, &signature, &mek, facts)?;
            let ca = open_ca(store, chain.cluster(), &mek)?;
            let node_cert = ca.issue_node(
                &admit.tls_key,
                address_host(&admit.member.address),
                SystemTime::now(),
            )?;
            // The durable "used" mark is the arbiter between racing joiners: only one
            // compare-and-set from the unused state succeeds.
            let before = bundle.context("no bundle")?;
            let after = BundleState {
                used_by: Some(admit.member.key),
                ..before.clone()
            };
            if !store.swap_blob(
                BUNDLE_STATE,
                &postcard::to_allocvec(&before)?,
                &postcard::to_allocvec(&after)?,
            )? {
                return Err(JoinRefusal::Reused.into());
            }
            backend.master(RecordKind::Roster, admit.roster.encode())?;
            info!(
                node = %hex::encode(&admit.member.key[..8]),
                address = %admit.member.address,
                "node joined the cluster"
            );
            let store = backend.store()?;
            Ok(Response::Joined {
                cluster: chain.cluster().0,
                genesis_leader: store.anchor()?.context("no trust anchor")?.genesis_leader,
                records: store
                    .mastered_records()?
                    .iter()
                    .map(SignedRecord::encode)
                    .collect(),
                node_cert,
            })
        }
    }
}

/// The node's TLS identity for the setup endpoint, if it was initialised or joined.
pub fn tls_identity(store: &Store) -> anyhow::Result<Option<TlsIdentity>> {
    let (Some(cert), Some(key), Some(ca)) = (
        store.blob(TLS_CERT)?,
        store.blob(TLS_KEY)?,
        store.blob(CA_CERT)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(TlsIdentity { cert, key, ca }))
}

/// The setup endpoint's address: the mesh listen address with the next port (port 0 stays 0:
/// any free port).
pub fn setup_listen(mesh: SocketAddr) -> SocketAddr {
    let port = match mesh.port() {
        0 => 0,
        p => p.checked_add(1).unwrap_or(0),
    };
    SocketAddr::new(mesh.ip(), port)
}

/// The host part of a node address (`HOST`, `HOST:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`).
pub fn address_host(address: &str) -> &str {
    if address.parse::<SocketAddr>().is_ok() {
        let ip = &address[..address.rfind(':').unwrap_or(address.len())];
        return ip.trim_start_matches('[').trim_end_matches(']');
    }
    if address.parse::<IpAddr>().is_ok() {
        return address;
    }
    match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    }
}

/// Checks a node address: its form, and that its host is (or resolves to) a local address.
pub fn check_address(address: &str) -> anyhow::Result<()> {
    if address.is_empty()
        || address.len() > meshward_crdt::mastered::MAX_ADDRESS_BYTES
        || address.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "address {address:?} is not a node address: give an FQDN or IP, optionally with :PORT"
        );
    }
    let host = address_host(address);
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            if !host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                bail!(
                    "address {address:?} is not a node address: give an FQDN or IP, optionally with :PORT"
                );
            }
            std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
                .with_context(|| {
                    format!("address {host} does not resolve; fix DNS or /etc/hosts, or give an IP")
                })?
                .map(|a| a.ip())
                .collect()
        }
    };
    // Binding succeeds only for an address of this machine.
    if !ips.iter().any(|ip| UdpSocket::bind((*ip, 0)).is_ok()) {
        bail!(
            "address {host} resolves to {ips:?}, none of which is an address of this machine; \
             a node's address must resolve to a local address"
        );
    }
    Ok(())
}

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m or 24h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// The installed licence: the payload of the last `Licence` record.
pub fn current_licence(store: &Store) -> anyhow::Result<Option<Licence>> {
    let Some(record) = store
        .mastered_records()?
        .into_iter()
        .rev()
        .find(|r| r.record.kind == RecordKind::Licence)
    else {
        return Ok(None);
    };
    Licence::decode(&record.record.payload)
        .map(Some)
        .context("the stored licence record is damaged")
}

fn setup_port_from_settings(store: &Store) -> anyhow::Result<u16> {
    let listen: SocketAddr = store
        .setting(LISTEN_SETTING)?
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(default_listen);
    match setup_listen(listen).port() {
        0 => bail!(
            "the setup port is chosen when the node starts; start it with `meshward run` first"
        ),
        p => Ok(p),
    }
}

/// Where `meshward run` listens when neither `--listen` nor the stored setting says.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

pub(crate) fn require_leader(store: &Store) -> anyhow::Result<Chain> {
    leader_of(store, crate::roster::chain(store)?)
}

/// `chain`, the verified chain of `store`, if this node leads it.
fn leader_of(store: &Store, chain: Option<Chain>) -> anyhow::Result<Chain> {
    let chain = chain.ok_or(WriteError::NoCluster)?;
    let me = store.identity()?.key.verifying_key().to_bytes();
    if chain.leader() != me {
        return Err(WriteError::NotLeader {
            leader: leader_address(&chain),
            epoch: chain.epoch(),
        }
        .into());
    }
    Ok(chain)
}

/// The current joining bundle's state, if one was created.
pub(crate) fn bundle_state(store: &Store) -> anyhow::Result<Option<BundleState>> {
    store
        .blob(BUNDLE_STATE)?
        .map(|b| postcard::from_bytes(&b).context("the stored joining bundle state is damaged"))
        .transpose()
}

pub(crate) fn load_mek(data: &Path) -> anyhow::Result<Mek> {
    let path = data.join(MEK_FILE);
    Mek::load(&path).with_context(|| {
        format!(
            "the leader needs the cluster MEK at {}; restore it from your vault",
            path.display()
        )
    })
}

fn ca_secret(records: &[Vec<u8>]) -> anyhow::Result<SealedSecret> {
    records
        .iter()
        .rev()
        .filter_map(|r| SignedRecord::decode(r).ok())
        .filter(|r| r.record.kind == RecordKind::SealedSecret)
        .filter_map(|r| SealedSecret::decode(&r.record.payload))
        .find(|s| s.name == crate::pki::CA_SECRET)
        .ok_or_else(|| crate::pki::PkiError::NoCa.into())
}

pub(crate) fn open_ca(
    store: &Store,
    cluster: meshward_crdt::ClusterId,
    mek: &Mek,
) -> anyhow::Result<Ca> {
    let records: Vec<Vec<u8>> = store
        .mastered_records()?
        .iter()
        .map(SignedRecord::encode)
        .collect();
    Ok(Ca::open(cluster, &ca_secret(&records)?, mek)?)
}

fn refuse_initialised(data: &Path) -> anyhow::Result<()> {
    if data.join(MEK_FILE).exists() {
        bail!(
            "{} already holds a cluster MEK: this data directory is initialised; \
             use an empty data directory to create or join a cluster",
            data.display()
        );
    }
    Ok(())
}

fn refuse_member(store: &Store, data: &Path) -> anyhow::Result<()> {
    if let Some(anchor) = store.anchor()? {
        bail!(
            "{} already belongs to cluster {}; use an empty data directory to create or join a cluster",
            data.display(),
            anchor.cluster.to_hex()
        );
    }
    Ok(())
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stores a new member's TLS certificate and key, the cluster CA certificate and its mesh
/// listen address (`init` and `join`).
fn store_credentials(
    store: &Store,
    tls_cert: &[u8],
    tls_key: &[u8],
    ca_cert: &[u8],
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    store.set_blobs(&[(TLS_CERT, tls_cert), (TLS_KEY, tls_key), (CA_CERT, ca_cert)])?;
    if let Some(listen) = listen {
        store.set_setting(LISTEN_SETTING, &listen.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(address_host("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(address_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(address_host("[::1]:7400"), "::1");
        assert_eq!(address_host("::1"), "::1");
        assert_eq!(address_host("node1.example:7400"), "node1.example");
        assert_eq!(address_host("node1.example"), "node1.example");
    }

    #[test]
    fn only_local_well_formed_addresses_pass() {
        check_address("127.0.0.1:7400").unwrap();
        check_address("localhost").unwrap();
        for bad in ["", "a b", "bad_name!", "192.0.2.1"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        let err = check_address("192.0.2.1").unwrap_err().to_string();
        assert!(err.contains("local address"), "{err}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("24h"), Ok(MAX_TTL));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
