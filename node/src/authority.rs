//! What the leader holds and the operations that need it: the verified chain it leads, the
//! cluster CA opened with the MEK, the licence, and the current joining bundle. Used by the
//! operations ([`crate::ops`]) and by `init`, `join` and the setup endpoint.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use meshward_crdt::mastered::{Chain, RecordKind, SignedRecord};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tracing::info;

use crate::certs::Revoked;
use crate::grants::Users;
use crate::join::{BundleState, JoinRefusal, JoiningBundle};
use crate::licence::Licence;
use crate::mek::{MEK_FILE, Mek};
use crate::pki::{Ca, SealedSecret};
use crate::roster::WriteError;
use crate::store::Store;

/// Longest (and default) joining bundle lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The bundle certificate outlives the bundle a little, so that the leader, not TLS, says
/// "expired" (with a clear message) for a slightly late join.
const CERT_GRACE: Duration = Duration::from_secs(600);
/// Store value: the current joining bundle ([`BundleState`]).
pub const BUNDLE_STATE: &str = "join-bundle";
/// Local setting: the mesh listen address `meshward run` uses when given none.
pub const LISTEN_SETTING: &str = "listen";

/// Where `meshward run` listens when neither `--listen` nor the stored setting says.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
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

/// The setup endpoint's port from the stored listen address (when no daemon runs).
pub fn setup_port_from_settings(store: &Store) -> anyhow::Result<u16> {
    let listen: SocketAddr = store
        .setting(LISTEN_SETTING)?
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(default_listen);
    match setup_listen(listen).port() {
        0 => anyhow::bail!(
            "the setup port is chosen when the node starts; start it with `meshward run` first"
        ),
        p => Ok(p),
    }
}

/// The installed licence: the payload of the last `Licence` record, checked again against the
/// licence issuer and cluster the genesis names (a record that does not verify counts as no
/// licence; only a genesis written before issuers were recorded trusts the record as its
/// leader stored it).
pub fn current_licence(store: &Store) -> anyhow::Result<Option<Licence>> {
    let Some(chain) = crate::roster::chain(store)? else {
        return Ok(None);
    };
    let Some(record) = store
        .mastered_records()?
        .into_iter()
        .rev()
        .find(|r| r.record.kind == RecordKind::Licence)
    else {
        return Ok(None);
    };
    let licence =
        Licence::decode(&record.record.payload).context("the stored licence record is damaged")?;
    match chain.licence_issuer() {
        Some(issuer) if licence.verify_for(&issuer, &chain.cluster()).is_err() => {
            tracing::warn!(
                "the stored licence does not verify against the genesis issuer; ignored"
            );
            Ok(None)
        }
        _ => Ok(Some(licence)),
    }
}

/// The chain, if this node leads it; else an error naming the leader.
pub fn require_leader(store: &Store) -> anyhow::Result<Chain> {
    leader_of(store, crate::roster::chain(store)?)
}

/// `chain`, the verified chain of `store`, if this node leads it.
pub fn leader_of(store: &Store, chain: Option<Chain>) -> anyhow::Result<Chain> {
    let chain = chain.ok_or(WriteError::NoCluster)?;
    let me = store.identity()?.key.verifying_key().to_bytes();
    if chain.leader() != me {
        return Err(WriteError::NotLeader {
            leader: chain.leader_address(),
            epoch: chain.epoch(),
        }
        .into());
    }
    Ok(chain)
}

/// The current joining bundle's state, if any.
pub fn bundle_state(store: &Store) -> anyhow::Result<Option<BundleState>> {
    store
        .blob(BUNDLE_STATE)?
        .map(|b| postcard::from_bytes(&b).context("the stored joining bundle state is damaged"))
        .transpose()
}

/// The node's MEK (`DATA/mek`); the error says where it should be.
pub fn load_mek(data: &Path) -> anyhow::Result<Mek> {
    let path = data.join(MEK_FILE);
    Mek::load(&path).with_context(|| {
        format!(
            "the leader needs the cluster MEK at {}; restore it from your vault",
            path.display()
        )
    })
}

/// The sealed cluster CA secret among encoded mastered records.
pub fn ca_secret(records: &[Vec<u8>]) -> anyhow::Result<SealedSecret> {
    records
        .iter()
        .rev()
        .filter_map(|r| SignedRecord::decode(r).ok())
        .filter(|r| r.record.kind == RecordKind::SealedSecret)
        .filter_map(|r| SealedSecret::decode(&r.record.payload))
        .find(|s| s.name == crate::pki::CA_SECRET)
        .ok_or_else(|| crate::pki::PkiError::NoCa.into())
}

/// The cluster CA, its key opened with the MEK.
pub fn open_ca(store: &Store, cluster: meshward_crdt::ClusterId, mek: &Mek) -> anyhow::Result<Ca> {
    let records: Vec<Vec<u8>> = store
        .mastered_records()?
        .iter()
        .map(SignedRecord::encode)
        .collect();
    Ok(Ca::open(cluster, &ca_secret(&records)?, mek)?)
}

/// Unix ms of a time.
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// Makes a one-time joining bundle on the leader, valid for `ttl` (at most [`MAX_TTL`]) from
/// `now`, for a setup endpoint on `setup_port`, and durably records it as the only current
/// one (superseding any earlier bundle). The bundle holds a one-time secret (its client key).
pub fn create_bundle(
    store: &Store,
    data: &Path,
    setup_port: u16,
    ttl: Duration,
    now: SystemTime,
) -> anyhow::Result<JoiningBundle> {
    anyhow::ensure!(
        !ttl.is_zero() && ttl <= MAX_TTL,
        "a joining bundle is valid for more than zero and at most 24h"
    );
    let chain = require_leader(store)?;
    match current_licence(store)? {
        None => anyhow::bail!("{}", JoinRefusal::NoLicence),
        Some(l) if l.check_time(ms(now)).is_err() => anyhow::bail!(
            "{}",
            JoinRefusal::LicenceExpired {
                at_ms: l.terms.expires_at_ms
            }
        ),
        Some(_) => {}
    }
    let mek = load_mek(data)?;
    let ca = open_ca(store, chain.cluster(), &mek)?;
    let address = chain.leader_address();
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
    let state = BundleState {
        id,
        cert: Sha256::digest(&client.cert).into(),
        expires_at_ms: ms(expires),
        used_by: None,
    };
    store.set_blobs(&[(BUNDLE_STATE, postcard::to_allocvec(&state)?.as_slice())])?;
    info!(bundle = %hex::encode(&id[..4]), "joining bundle created");
    Ok(bundle)
}

/// What the admin API decides on: the users and the revoked certificate serials of the
/// node's verified mastered chain.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Users and their grants.
    pub users: Users,
    /// Revoked client certificates.
    pub revoked: Revoked,
}

/// The users view of the node's verified mastered chain (empty before any cluster).
pub fn users(store: &Store) -> anyhow::Result<Users> {
    Ok(access(store)?.users)
}

/// The users and revoked serials of the node's verified mastered chain (empty before any
/// cluster).
pub fn access(store: &Store) -> anyhow::Result<Access> {
    let Some(anchor) = store.anchor()? else {
        return Ok(Access::default());
    };
    let (_, verified) = crate::roster::replay(store, anchor)?;
    Ok(Access {
        users: Users::fold(&verified)?,
        revoked: Revoked::fold(&verified)?,
    })
}

/// Whether the node in `data` is sealed: it belongs to a cluster and has no MEK file.
pub fn is_sealed(data: &Path, store: &Store) -> anyhow::Result<bool> {
    Ok(store.anchor()?.is_some() && !data.join(MEK_FILE).exists())
}

/// Installs `mek` as the node's MEK file, once it proved to be the cluster's: it must open
/// the sealed cluster CA. Refuses to replace an existing MEK file; a wrong key writes nothing.
pub fn unseal(data: &Path, store: &Store, mek: &Mek) -> anyhow::Result<()> {
    let target = data.join(MEK_FILE);
    if target.exists() {
        anyhow::bail!("the node is not sealed: {} exists", target.display());
    }
    let anchor = store
        .anchor()?
        .context("the node is not sealed: it belongs to no cluster")?;
    if let Err(e) = open_ca(store, anchor.cluster, mek) {
        return Err(match e.downcast_ref::<crate::pki::PkiError>() {
            Some(crate::pki::PkiError::WrongMek) => anyhow::anyhow!(
                "this key is not this cluster's MEK: it does not open the cluster CA sealed in \
                 the mastered chain; nothing was written: give the MEK file `meshward init` \
                 wrote (from your vault)"
            ),
            Some(crate::pki::PkiError::NoCa) => anyhow::anyhow!(
                "this node's mastered chain holds no cluster CA sealed with the MEK, so the key \
                 cannot be checked; nothing was written"
            ),
            _ => e.context("checking the key against the sealed cluster CA"),
        });
    }
    mek.write_new(&target)?;
    Ok(())
}
