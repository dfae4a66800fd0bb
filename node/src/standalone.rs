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
//! there the node can grow a cluster of its own (`bundle create`, `ha initialise`) or join
//! another with a bundle or a joining code ([`Membership::Alone`] nodes may join).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use meshward_crdt::ClusterId;

use crate::lifecycle::{InitOptions, found};
use crate::mek::{MEK_FILE, Mek};
use crate::store::{Store, create_private_dir};

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
    let dir = data.join(BACKUPS_DIR);
    create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let backup = dir.join(format!("left-{}-{now_ms}.backup", old.to_hex()));
    if let Err(e) = crate::backup::seal_to_file(store, &mek, &backup, &mut |_| {}) {
        let _ = std::fs::remove_file(&backup);
        return Err(e).with_context(|| {
            format!(
                "writing the backup {} before leaving; nothing was changed",
                backup.display()
            )
        });
    }
    store.forget_cluster(address, chain.licence_issuer())?;
    let new = finish(store, &mek, address, chain.licence_issuer())?;
    tracing::info!(old = %old.to_hex(), new = %new.to_hex(), backup = %backup.display(),
        "left the cluster; this node runs standalone");
    Ok(Left { old, new, backup })
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
