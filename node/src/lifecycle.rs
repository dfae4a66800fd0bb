//! Creating a cluster (`meshward init`) and what creating and joining share: checking a node's
//! address, refusing a data directory that already holds a cluster, storing the node's TLS
//! credentials.
//!
//! `init` makes this node the leader of epoch 1 of a new cluster: the cluster id (the store's
//! random id), the cluster CA (its key sealed with the MEK in a mastered `SealedSecret` record,
//! so a later leader can issue certificates too), this node's TLS certificate, the MEK (printed
//! once, written 0600 to `DATA/mek`) and the genesis roster signed with the node key. Joining
//! talks to the leader's setup endpoint and is the daemon crate's (`meshward_daemon::setup`).
//!
//! Data directory files: `mek` (the MEK, 0600), `meshward.toml` (node config, optional), the
//! store. The TLS identity (node certificate and key, CA certificate) and the current bundle
//! live in the store's node-local values.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use meshward_crdt::mastered::{Member, RecordKind};
use tracing::info;

use crate::authority::{LISTEN_SETTING, address_host};
use crate::mek::{MEK_FILE, Mek};
use crate::pki::Ca;
use crate::roster::MasteredBundle;
use crate::store::Store;

/// Store value: the node's TLS certificate (DER).
pub const TLS_CERT: &str = "tls-cert";
/// Store value: the node's TLS key (PKCS#8 DER).
pub const TLS_KEY: &str = "tls-key";
/// Store value: the cluster CA certificate (DER).
pub const CA_CERT: &str = "ca-cert";

/// What `init` needs.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// This node's address: FQDN or IP, optionally with its mesh port.
    pub address: String,
    /// The mesh address `meshward run` listens on, stored (default 127.0.0.1:7400).
    pub listen: Option<SocketAddr>,
    /// The licence issuer's public key, recorded in the genesis for the cluster's life
    /// (`None`: licences can never be installed, and the cluster stays one node).
    pub licence_issuer: Option<[u8; 32]>,
}

/// The node's TLS credentials (DER), as `init` and `join` stored them.
#[derive(Clone)]
pub struct TlsBlobs {
    /// The node's certificate.
    pub cert: Vec<u8>,
    /// Its private key (PKCS#8).
    pub key: Vec<u8>,
    /// The cluster CA's certificate.
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for TlsBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBlobs").finish_non_exhaustive()
    }
}

/// The node's TLS credentials, if it was initialised or joined.
pub fn tls_blobs(store: &Store) -> anyhow::Result<Option<TlsBlobs>> {
    let (Some(cert), Some(key), Some(ca)) = (
        store.blob(TLS_CERT)?,
        store.blob(TLS_KEY)?,
        store.blob(CA_CERT)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(TlsBlobs { cert, key, ca }))
}

/// `meshward init`: creates a cluster with this node as the leader of epoch 1.
pub fn init(data: &Path, args: &InitOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    check_address(&args.address)?;
    let mek_path = data.join(MEK_FILE);
    refuse_initialised(data)?;
    let store =
        Store::open(data).with_context(|| format!("opening the store in {}", data.display()))?;
    refuse_member(&store, data)?;
    let cluster = store.identity()?.cluster;
    let mek = Mek::generate(&mut rand::rngs::OsRng);
    // The MEK file first: it refuses to overwrite, and without it the cluster is useless.
    mek.write_new(&mek_path)?;
    if let Err(e) = found(&store, &mek, args) {
        let _ = std::fs::remove_file(&mek_path);
        return Err(e.context("initialising the cluster"));
    }
    info!(cluster = %cluster.to_hex(), "cluster initialised; this node leads epoch 1");
    let licence_step = if args.licence_issuer.is_some() {
        format!(
            "Next: install a licence for cluster {} (`meshward licence install FILE`), start the node (`meshward run`),",
            cluster.to_hex()
        )
    } else {
        "This cluster names no licence issuer (`init --licence-issuer`), so it stays one node.\n\
         Next: start the node (`meshward run`),"
            .to_string()
    };
    writeln!(
        out,
        "initialised cluster {} with this node ({}) as leader of epoch 1\n\
         \n\
         Master Encryption Key (shown once; also written to {}):\n\
         \n    {}\n\n\
         Store it in your vault now: joining nodes and restores need it.\n\
         {licence_step}\n\
         then create a joining bundle for each new node (`meshward bundle create --out FILE`).",
        cluster.to_hex(),
        args.address,
        mek_path.display(),
        mek.to_hex().as_str(),
    )?;
    Ok(())
}

/// Writes the genesis of a new cluster led by this node (the store's identity: its key and
/// standalone cluster id), its CA sealed with `mek`, and the node's TLS credentials (`init`,
/// and a node that leaves its cluster with `make-standalone`).
pub fn found(store: &Store, mek: &Mek, args: &InitOptions) -> anyhow::Result<()> {
    let identity = store.identity()?;
    let now = SystemTime::now();
    let ca = Ca::create(identity.cluster, now)?;
    let (tls_key, tls_public) = crate::pki::node_key()?;
    let tls_cert = ca.issue_node(&tls_public, address_host(&args.address), now)?;
    let genesis = MasteredBundle::genesis(
        &identity.key,
        identity.cluster,
        vec![Member {
            key: identity.key.verifying_key().to_bytes(),
            address: args.address.clone(),
        }],
        args.licence_issuer,
    );
    crate::roster::import(store, &genesis.encode())?;
    crate::roster::write(store, RecordKind::SealedSecret, ca.seal(mek).encode())?;
    store_credentials(store, &tls_cert, &tls_key, &ca.cert, args.listen)
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

/// Refuses a data directory that holds a MEK already (`init` and `join`).
pub fn refuse_initialised(data: &Path) -> anyhow::Result<()> {
    if data.join(MEK_FILE).exists() {
        bail!(
            "{} already holds a cluster MEK: this data directory is initialised; \
             use an empty data directory to create or join a cluster",
            data.display()
        );
    }
    Ok(())
}

/// Refuses a store that belongs to a cluster already (`init` and `join`).
pub fn refuse_member(store: &Store, data: &Path) -> anyhow::Result<()> {
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
pub fn store_credentials(
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
}
