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
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use meshward_crdt::mastered::{Chain, Member, RecordKind, SignedRecord, TrustAnchor};
use meshward_transport::setup::{Request, Response, SetupClient, SetupError, TlsIdentity};
use tracing::info;

use crate::authority::{BUNDLE_STATE, bundle_state, ca_secret, current_licence, load_mek, open_ca};
use crate::cli::{Backend, now_ms, read_bounded};
use crate::join::{
    Admission, BundleState, ClusterClaim, Facts, Hello, JoinRefusal, JoiningBundle,
    MAX_JOINING_BUNDLE,
};
use crate::mek::Mek;
use crate::pki::Ca;
use crate::roster::MasteredBundle;
use crate::store::Store;

pub use crate::authority::{
    LISTEN_SETTING, MAX_TTL, address_host, default_listen, setup_listen, setup_port_from_settings,
};
pub use crate::mek::MEK_FILE;
/// Store value: the node's TLS certificate (DER).
const TLS_CERT: &str = "tls-cert";
/// Store value: the node's TLS key (PKCS#8 DER).
const TLS_KEY: &str = "tls-key";
/// Store value: the cluster CA certificate (DER).
const CA_CERT: &str = "ca-cert";
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
    let chain = crate::authority::leader_of(store, chain)?;
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
