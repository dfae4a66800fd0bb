//! Standalone nodes: a node alone in its own single-node cluster, and how a member of a larger
//! cluster becomes one (`meshward ha make-standalone`, seed 002's `ha-make-standalone`).
//!
//! A node that `init` created is standalone until it admits another. A member leaves with
//! `make-standalone`: the leader removes it from the roster (the daemon asks it over the mesh
//! and waits for its answer), then [`become_standalone`] here:
//!
//! 1. writes a backup of the whole store, sealed with the MEK, to `DATA/backups/`
//!    (`left-CLUSTER-UNIXMS.backup`): the replicated data of the cluster it leaves is not lost;
//! 2. forgets the cluster in one durable transaction ([`Store::forget_cluster`]): replicated
//!    data, trust anchor, TLS credentials, peer book go; the node takes a fresh key (its old
//!    key's positions stay the old cluster's: it can never sign a second change at one) and
//!    a fresh cluster id; the settings and the session audit stay, and so does the MEK file
//!    (seed 002: "it will keep the MEK replicated from the Primary");
//! 3. founds its own cluster as `init` does ([`crate::lifecycle::found`]): genesis with itself as
//!    leader, keeping the licence issuer of the cluster it left, a new CA sealed with the MEK,
//!    new TLS credentials. The node is administrable again at once (local socket as root;
//!    HTTPS with certificates of its new CA: `meshward user cert`).
//!
//! A crash between 2 and 3 is finished when the node starts again ([`finish_founding`]). From
//! there the node can grow a cluster of its own (`bundle create`) or join another with a
//! bundle and that cluster's MEK ([`may_join`]): once the leader admitted it, its store is
//! backed up and its MEK moved beside the backup under `DATA/backups/`, then its cluster is
//! forgotten, keeping the key the leader admitted ([`leave_for_join`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use meshward_crdt::ClusterId;

use crate::lifecycle::{InitOptions, found};
use crate::mek::{MEK_FILE, Mek};
use crate::store::{Next, Store, create_private_dir};

/// Folder of `DATA` holding the backups written when the node leaves a cluster.
pub const BACKUPS_DIR: &str = "backups";

/// Where a node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Never initialised nor joined.
    Fresh,
    /// Alone in its own cluster, which it leads.
    Alone(ClusterId),
    /// A member of a cluster of several nodes.
    Member(ClusterId),
}

/// Where the node of `store` stands.
pub fn membership(store: &Store) -> anyhow::Result<Membership> {
    let Some(chain) = crate::roster::chain(store)? else {
        return Ok(Membership::Fresh);
    };
    let me = store.identity()?.key.verifying_key().to_bytes();
    let members = &chain.roster().members;
    let cluster = chain.cluster();
    Ok(if members.len() == 1 && members[0].key == me {
        Membership::Alone(cluster)
    } else {
        Membership::Member(cluster)
    })
}

/// What [`become_standalone`] did.
#[derive(Clone, Debug)]
pub struct Left {
    /// The cluster the node left.
    pub old: ClusterId,
    /// Its own new cluster.
    pub new: ClusterId,
    /// The backup of the store as it was, sealed with the MEK.
    pub backup: PathBuf,
}

/// Makes the node of `data` standalone (see the module docs); `address` is its node address
/// (the roster's). The caller has made sure the cluster's leader removed it, and holds the
/// store: `store` is the open store of `data`.
pub fn become_standalone(data: &Path, store: &Store, address: &str) -> anyhow::Result<Left> {
    let mek = load_mek(data)?;
    let chain = crate::roster::chain(store)?
        .context("this node belongs to no cluster: it already runs standalone")?;
    let old = chain.cluster();
    let backup = write_backup(data, store, &mek, old)?;
    store.forget_cluster(Next::Found {
        address,
        licence_issuer: chain.licence_issuer(),
    })?;
    let new = finish(store, &mek, address, chain.licence_issuer())?;
    tracing::info!(old = %old.to_hex(), new = %new.to_hex(), backup = %backup.display(),
        "left the cluster; this node runs standalone");
    Ok(Left { old, new, backup })
}

/// `make-standalone` with no daemon running (the leader unreachable, or a node the leader
/// already removed): the node becomes standalone at once; the cluster's roster still lists it
/// until the leader removes it. Returns what it did and the node's address there. Refused on
/// the leader of a larger cluster (it hands over first) and on a node already standalone.
pub fn leave_offline(data: &Path, store: &Store) -> anyhow::Result<(Left, String)> {
    let chain = crate::roster::chain(store)?
        .context("this node belongs to no cluster: it already runs standalone")?;
    let me = store.identity()?.key.verifying_key().to_bytes();
    match membership(store)? {
        Membership::Alone(_) => {
            anyhow::bail!("this node is alone in its cluster: it already runs standalone")
        }
        _ if chain.leader() == me => anyhow::bail!(
            "the leader cannot leave while it leads: hand over first with \
             `meshward ha demote --to NODE`, then run make-standalone on this node"
        ),
        _ => {}
    }
    let address = chain
        .roster()
        .members
        .iter()
        .find(|m| m.key == me)
        .map(|m| m.address.clone())
        .or(store.setting(crate::authority::LISTEN_SETTING)?)
        .context("this node's address is neither in the roster nor in its settings")?;
    let left = become_standalone(data, store, &address)?;
    Ok((left, address))
}

/// Founds the node's own cluster if it forgot its old one and crashed before founding
/// (`None`: nothing to finish).
pub fn finish_founding(data: &Path, store: &Store) -> anyhow::Result<Option<ClusterId>> {
    let Some((address, licence_issuer)) = store.founding()? else {
        return Ok(None);
    };
    let mek = load_mek(data)?;
    finish(store, &mek, &address, licence_issuer).map(Some)
}

/// Whether the node of `data` may join a cluster: a fresh one (`false`), or one alone in its
/// own cluster (`true`: [`leave_for_join`] before storing what the leader sent). A member of a
/// cluster of several is refused: it leaves with `make-standalone` first.
pub fn may_join(data: &Path, store: &Store) -> anyhow::Result<bool> {
    match membership(store)? {
        Membership::Fresh => {
            crate::lifecycle::refuse_initialised(data)?;
            Ok(false)
        }
        Membership::Alone(_) => Ok(true),
        Membership::Member(cluster) => anyhow::bail!(
            "{} belongs to cluster {} with other members; leave it first              (`meshward ha make-standalone`), or use an empty data directory",
            data.display(),
            cluster.to_hex()
        ),
    }
}

/// A standalone node about to store another cluster's records: its store is backed up
/// (sealed with its own MEK) and its MEK moved beside the backup, both under
/// `DATA/backups/`, then its cluster forgotten, keeping its key. Returns the backup's path.
pub fn leave_for_join(data: &Path, store: &Store) -> anyhow::Result<PathBuf> {
    let mek = load_mek(data)?;
    let old = store.identity()?.cluster;
    let backup = write_backup(data, store, &mek, old)?;
    let kept_mek = backup.with_extension("mek");
    std::fs::rename(data.join(MEK_FILE), &kept_mek)
        .with_context(|| format!("moving the MEK to {}", kept_mek.display()))?;
    store.forget_cluster(Next::Join)?;
    Ok(backup)
}

/// Writes `DATA/backups/left-CLUSTER-UNIXMS.backup`, sealed with `mek`.
fn write_backup(data: &Path, store: &Store, mek: &Mek, old: ClusterId) -> anyhow::Result<PathBuf> {
    let dir = data.join(BACKUPS_DIR);
    create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let backup = dir.join(format!("left-{}-{now_ms}.backup", old.to_hex()));
    if let Err(e) = crate::backup::seal_to_file(store, mek, &backup, &mut |_| {}) {
        let _ = std::fs::remove_file(&backup);
        return Err(e).with_context(|| {
            format!(
                "writing the backup {} before leaving; nothing was changed",
                backup.display()
            )
        });
    }
    Ok(backup)
}

fn finish(
    store: &Store,
    mek: &Mek,
    address: &str,
    licence_issuer: Option<[u8; 32]>,
) -> anyhow::Result<ClusterId> {
    let options = InitOptions {
        address: address.to_owned(),
        listen: None,
        licence_issuer,
    };
    found(store, mek, &options).context("founding this node's own cluster")?;
    store.founded()?;
    Ok(store.identity()?.cluster)
}

fn load_mek(data: &Path) -> anyhow::Result<Mek> {
    let path = data.join(MEK_FILE);
    Mek::load(&path).with_context(|| {
        format!(
            "a standalone node keeps the cluster's MEK; {} is missing or unreadable",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests;
