//! Forgetting the cluster: what leaving one (`make-standalone`) and a standalone node joining
//! another do to the store.

use ed25519_dalek::SigningKey;
use meshward_crdt::ClusterId;
use redb::TableHandle as _;

use super::{
    BLOBS, Identity, META, SETTINGS, Store, StoreError, changes, changes::CHANGE_LOG, create_tables,
};

/// `meta` entries that belong to the cluster and go with it.
const CLUSTER_META: [&str; 4] = [
    "anchor_leader",
    "mastered_high_water",
    super::mastered::CHECKPOINT_KEY,
    "ha_vote",
];
/// `meta` entry of a node that forgot its cluster and has not founded its own yet: 0, or 1 and
/// the 32-byte licence issuer of the cluster it left; then its address.
const FOUNDING: &str = "founding";

/// What a node does once it forgot its cluster ([`Store::forget_cluster`]).
#[derive(Clone, Copy, Debug)]
pub enum Next<'a> {
    /// Founds its own cluster, at `address`, naming `licence_issuer`.
    Found {
        /// The node's address.
        address: &'a str,
        /// The licence issuer its cluster names.
        licence_issuer: Option<[u8; 32]>,
    },
    /// Joins another cluster, with the key it presented to that cluster's leader.
    Join,
}

impl Store {
    /// Forgets the node's cluster in one durable transaction and returns the new identity:
    /// every table of replicated data (shared and mastered, also those a later version adds),
    /// the peer book, the superseded records, the node's TLS credentials and joining bundle,
    /// the trust anchor, the high-water mark, the chain's restart point and the HA vote go; the node gets a fresh
    /// standalone cluster id and, to found its own cluster, a fresh key (its old key's rows and
    /// positions stay the old cluster's, so it can never sign a second change at a position it
    /// used there, even if it comes back). Local data stays:
    /// the settings, the session audit, and the change log's cursor (the log's entries go, so a
    /// watcher resuming from before is told to start from a snapshot).
    ///
    /// With [`Next::Found`], the node's address and the licence issuer its own cluster will
    /// name are kept until [`Store::founded`] says that cluster exists ([`Store::founding`]),
    /// so a crash between the two is finished on restart. With [`Next::Join`] the node keeps
    /// its key (the one the leader it joins admitted). A crash before the commit leaves the
    /// store as it was.
    pub fn forget_cluster(&self, next: Next<'_>) -> Result<Identity, StoreError> {
        let kept = |name: &str| {
            name == META.name()
                || name == SETTINGS.name()
                || name == CHANGE_LOG.name()
                || name.starts_with("audit_")
        };
        let tx = self.begin_write()?;
        let doomed: Vec<_> = tx.list_tables()?.filter(|t| !kept(t.name())).collect();
        for table in doomed {
            tx.delete_table(table)?;
        }
        let mut rng = rand::rngs::OsRng;
        let mut cluster = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rng, &mut cluster);
        let key = match next {
            Next::Found { .. } => SigningKey::generate(&mut rng),
            Next::Join => self.identity()?.key,
        };
        let identity = Identity {
            key,
            cluster: ClusterId(cluster),
        };
        {
            let mut meta = tx.open_table(META)?;
            for name in CLUSTER_META {
                meta.remove(name)?;
            }
            meta.insert("node_key", identity.key.to_bytes().as_slice())?;
            meta.insert("cluster_id", identity.cluster.0.as_slice())?;
            if let Next::Found {
                address,
                licence_issuer,
            } = next
            {
                let mut founding = match licence_issuer {
                    Some(key) => [&[1u8][..], &key].concat(),
                    None => vec![0],
                };
                founding.extend(address.as_bytes());
                meta.insert(FOUNDING, founding.as_slice())?;
            }
        }
        changes::drop_all(&tx)?;
        create_tables(&tx)?;
        tx.open_table(BLOBS)?;
        tx.commit()?;
        Ok(identity)
    }
}

impl Store {
    /// The address and licence issuer of a node that forgot its cluster
    /// ([`Store::forget_cluster`]) and has not founded its own yet.
    #[allow(clippy::type_complexity)]
    pub fn founding(&self) -> Result<Option<(String, Option<[u8; 32]>)>, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(v) = meta.get(FOUNDING)? else {
            return Ok(None);
        };
        let bad = || StoreError::Decode {
            what: "founding mark",
        };
        let (issuer, address) = match v.value() {
            [0, address @ ..] => (None, address),
            [1, rest @ ..] if rest.len() >= 32 => {
                let (key, address) = rest.split_at(32);
                (Some(key.try_into().map_err(|_| bad())?), address)
            }
            _ => return Err(bad()),
        };
        let address = String::from_utf8(address.to_vec()).map_err(|_| bad())?;
        Ok(Some((address, issuer)))
    }

    /// Notes that the node's own cluster exists: [`Store::founding`] is `None` again.
    pub fn founded(&self) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(META)?.remove(FOUNDING)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
impl Store {
    /// Overwrites the founding mark with `bytes` (tests of garbled marks).
    pub(crate) fn set_founding_raw(&self, bytes: &[u8]) {
        let tx = self.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(FOUNDING, bytes)
            .unwrap();
        tx.commit().unwrap();
    }
}
