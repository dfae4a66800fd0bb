//! The node's mastered chain, and importing leader-signed records into it.
//!
//! Records reach a node through the mesh, a join, or a [`MasteredBundle`] file (`meshward
//! mastered import`; `init` makes the genesis one, and the tests' helper signs whole
//! clusters' first records with real ed25519 keys). Every record is verified against the bundle's trust
//! anchor with [`Chain::verify`] before it is stored; the roster of the verified chain decides
//! which peers the mesh admits.

use std::collections::BTreeSet;

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use meshward_crdt::WriterId;
use meshward_crdt::mastered::{
    Chain, Genesis, Member, RecordKind, Roster, SignedRecord, TrustAnchor, Verified,
};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::store::{HighWater, Store, StoreError};

/// Largest bundle file accepted.
pub const MAX_BUNDLE: usize = 8 * 1024 * 1024;

/// A trust anchor and records signed under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasteredBundle {
    /// The cluster id.
    pub cluster: [u8; 16],
    /// The epoch-1 leader's public key.
    pub genesis_leader: [u8; 32],
    /// Encoded [`SignedRecord`]s in version order.
    pub records: Vec<Vec<u8>>,
}

/// Why an import was refused. Nothing was stored unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is too large or not a bundle.
    #[error("not a mastered bundle: {0}")]
    Malformed(String),
    /// A record failed verification; records before it were stored.
    #[error("record {index} of the bundle refused: {reason}")]
    Refused {
        /// Its position in the bundle.
        index: usize,
        /// The verification error.
        reason: String,
    },
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MasteredBundle {
    /// Encodes the bundle.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a bundle, bounded by [`MAX_BUNDLE`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ImportError> {
        if bytes.len() > MAX_BUNDLE {
            return Err(ImportError::Malformed(format!(
                "{} bytes; the limit is {MAX_BUNDLE}",
                bytes.len()
            )));
        }
        postcard::from_bytes(bytes).map_err(|e| ImportError::Malformed(e.to_string()))
    }

    /// A new cluster's first bundle: its genesis record, carrying `members` as the roster and
    /// the licence issuer the cluster trusts for good, signed by `leader` (the epoch-1 leader
    /// and trust anchor).
    pub fn genesis(
        leader: &SigningKey,
        cluster: meshward_crdt::ClusterId,
        members: Vec<Member>,
        licence_issuer: Option<[u8; 32]>,
    ) -> Self {
        let anchor = TrustAnchor {
            cluster,
            genesis_leader: leader.verifying_key().to_bytes(),
        };
        let payload = Genesis {
            roster: Roster { members },
            licence_issuer,
        }
        .encode();
        let genesis = Chain::new(anchor).sign_next(leader, RecordKind::Genesis, payload);
        MasteredBundle {
            cluster: cluster.0,
            genesis_leader: anchor.genesis_leader,
            records: vec![genesis.encode()],
        }
    }

    /// The bundle's trust anchor.
    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            cluster: meshward_crdt::ClusterId(self.cluster),
            genesis_leader: self.genesis_leader,
        }
    }
}

/// Verifies and stores a bundle's records; records already held are skipped. Every record is
/// verified before anything is written, so a refused bundle changes nothing. Returns how many
/// records were added.
pub fn import(store: &Store, bytes: &[u8]) -> Result<usize, ImportError> {
    let bundle = MasteredBundle::decode(bytes)?;
    let anchor = bundle.anchor();
    let mut chain = match store.anchor()? {
        Some(current) if current == anchor => chain(store)?.unwrap_or_else(|| Chain::new(anchor)),
        Some(current) => {
            return Err(StoreError::Cluster(format!(
                "this node already belongs to cluster {}; it cannot take records of cluster {}",
                current.cluster.to_hex(),
                anchor.cluster.to_hex()
            ))
            .into());
        }
        None => Chain::new(anchor),
    };
    let held = store.mastered_records()?;
    let mut verified = Vec::new();
    for (index, raw) in bundle.records.iter().enumerate() {
        let refused = |reason: String| ImportError::Refused { index, reason };
        let record = SignedRecord::decode(raw).map_err(|e| refused(e.to_string()))?;
        // Version 0 is never held: the verifier refuses it below.
        if (1..=chain.last_version()).contains(&record.record.version) {
            // Already held: the same record is skipped; a different one is a rollback.
            if held.get(record.record.version as usize - 1) != Some(&record) {
                return Err(refused(format!(
                    "version {} is already held with different contents; a rollback or a \
                     competing chain is never imported",
                    record.record.version
                )));
            }
            continue;
        }
        let v = chain.verify(&record).map_err(|e| refused(e.to_string()))?;
        chain
            .apply(v)
            .map_err(|_| refused("the chain moved while importing".into()))?;
        verified.push(record);
    }
    if verified.is_empty() {
        return Ok(0);
    }
    store.adopt_anchor(&anchor)?;
    // Everything verified; now store, verifying each record again against the stored chain
    // so that only `Verified` records reach the store.
    let mut stored = self::chain(store)?.unwrap_or_else(|| Chain::new(anchor));
    for (index, record) in verified.iter().enumerate() {
        let v = stored.verify(record).map_err(|e| ImportError::Refused {
            index,
            reason: e.to_string(),
        })?;
        store.append_mastered(&v)?;
        stored.apply(v).map_err(|_| ImportError::Refused {
            index,
            reason: "the chain moved while importing".into(),
        })?;
    }
    Ok(verified.len())
}

/// The node's verified mastered chain from the store; `None` before any import. From the
/// restart point when the store has one ([`Store::mastered_checkpoint`]: the checkpoint's
/// signature and place checked by [`Chain::resume`], then only the records after it verified),
/// else every record verified again from the trust anchor.
pub fn chain(store: &Store) -> Result<Option<Chain>, ImportError> {
    let Some(anchor) = store.anchor()? else {
        return Ok(None);
    };
    if let Some(resumed) = resume_point(store, anchor)? {
        let version = resumed.last_version();
        let after = store.mastered_after(version)?;
        return extend(resumed, &after, version).map(Some);
    }
    let records = store.mastered_records()?;
    extend(Chain::new(anchor), &records, 0).map(Some)
}

/// The verified chain of exactly `records`, the store's whole chain, resumed from the store's
/// restart point when it has one.
pub fn verified_chain(
    store: &Store,
    anchor: TrustAnchor,
    records: &[SignedRecord],
) -> Result<Chain, ImportError> {
    match resume_point(store, anchor)? {
        Some(resumed) => {
            let version = resumed.last_version();
            let after = records.get(version as usize..).unwrap_or_default();
            extend(resumed, after, version)
        }
        None => extend(Chain::new(anchor), records, 0),
    }
}

/// Every stored record as verified (for the views folded from them: users, revocations) and
/// the chain they make: records up to the restart point by their chain of hashes, the rest
/// by signature ([`Chain::resume_replay`]); all by signature without a restart point.
pub fn replay(
    store: &Store,
    anchor: TrustAnchor,
) -> Result<(Chain, Vec<Verified<SignedRecord>>), ImportError> {
    let records = store.mastered_records()?;
    if let Ok(Some((state, _))) = store.mastered_checkpoint() {
        match Chain::resume_replay(anchor, state, &records) {
            Ok(replayed) => return Ok(replayed),
            Err(e) => tracing::warn!(error = %e, "replaying the mastered chain from genesis"),
        }
    }
    Chain::replay(anchor, &records).map_err(|e| ImportError::Refused {
        index: e.index,
        reason: format!("stored record no longer verifies: {}", e.source),
    })
}

/// The chain at the store's restart point, its checkpoint checked; `None` (verify from
/// genesis) without one, or when it does not check out (logged).
fn resume_point(store: &Store, anchor: TrustAnchor) -> Result<Option<Chain>, ImportError> {
    let (state, record) = match store.mastered_checkpoint() {
        Ok(Some(point)) => point,
        Ok(None) => return Ok(None),
        Err(StoreError::Decode { what }) => {
            tracing::warn!(
                what,
                "damaged checkpoint; verifying the mastered chain from genesis"
            );
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    match Chain::resume(anchor, state, &record) {
        Ok(chain) => Ok(Some(chain)),
        Err(e) => {
            tracing::warn!(error = %e, "stored checkpoint refused");
            Ok(None)
        }
    }
}

/// `chain` advanced by `records`, the stored records after its version `at`.
fn extend(chain: Chain, records: &[SignedRecord], at: u64) -> Result<Chain, ImportError> {
    chain
        .extended(records, at as usize)
        .map_err(|e| ImportError::Refused {
            index: e.index,
            reason: format!("stored record no longer verifies: {}", e.source),
        })
}

/// The verified chain of a store, rebuilt ([`chain`]: from the restart point, or every record
/// verified again from the trust anchor) only when the stored chain changed: its key is the trust anchor and the high-water mark
/// (the newest record's epoch, version and hash), two small reads. The daemon answers every
/// setup request and every mastered write from it instead of verifying the whole chain each
/// time. When the stored chain only grew (the record at the cached version still has the
/// cached hash), only the new records are verified: a write costs one verification, not one
/// per record of the chain (managed tables make long chains).
#[derive(Debug, Default)]
pub struct ChainCache {
    cached: Option<(ChainKey, Option<Chain>)>,
    rebuilds: u64,
    extensions: u64,
}

type ChainKey = (Option<TrustAnchor>, Option<HighWater>);

impl ChainCache {
    /// The store's verified chain (`None` before any import), rebuilt if the stored chain
    /// moved since the last call.
    pub fn get(&mut self, store: &Store) -> Result<Option<Chain>, ImportError> {
        let key = (store.anchor()?, store.mastered_high_water()?);
        if let Some((cached, chain)) = &self.cached
            && *cached == key
        {
            return Ok(chain.clone());
        }
        if let Some(chain) = self.extended(store, &key)? {
            self.extensions += 1;
            self.cached = Some((key, Some(chain.clone())));
            return Ok(Some(chain));
        }
        self.cached = None;
        let chain = chain(store)?;
        self.rebuilds += 1;
        self.cached = Some((key, chain.clone()));
        Ok(chain)
    }

    /// How many times the chain was rebuilt from the trust anchor.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// How many times the cached chain was extended by the records stored after it.
    pub fn extensions(&self) -> u64 {
        self.extensions
    }

    /// The cached chain extended to the stored high-water mark `key`, when the stored chain
    /// only grew since it was cached; `None`: rebuild it.
    fn extended(&self, store: &Store, key: &ChainKey) -> Result<Option<Chain>, ImportError> {
        let Some(((anchor, Some(old)), Some(cached))) = &self.cached else {
            return Ok(None);
        };
        let (new_anchor, Some(new)) = key else {
            return Ok(None);
        };
        if anchor != new_anchor || new.version <= old.version {
            return Ok(None);
        }
        let Some(at) = store.mastered_record(old.version)? else {
            return Ok(None);
        };
        if at.hash() != old.hash || cached.last_hash() != old.hash {
            return Ok(None);
        }
        let after = store.mastered_after(old.version)?;
        Ok(cached
            .clone()
            .extended(&after, old.version as usize)
            .ok()
            .filter(|chain| chain.last_hash() == new.hash))
    }
}

/// Why a mastered write was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The node belongs to no cluster yet.
    #[error("this node is not part of a cluster; run `meshward init` or `meshward join` first")]
    NoCluster,
    /// Only the leader writes mastered records.
    #[error(
        "only the leader writes mastered config; the leader is {leader} (epoch {epoch}): run this on it"
    )]
    NotLeader {
        /// The leader's address from the roster, or its key when it has none.
        leader: String,
        /// The current epoch.
        epoch: u64,
    },
    /// The stored chain does not verify or the store refused.
    #[error(transparent)]
    Store(#[from] ImportError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e.into())
    }
}

/// Signs the next mastered record with this node's key, if it is the current leader, verifies
/// it against the stored chain and stores it durably. Returns the stored record, to announce.
pub fn write(
    store: &Store,
    kind: RecordKind,
    payload: Vec<u8>,
) -> Result<SignedRecord, WriteError> {
    let chain = chain(store)?.ok_or(WriteError::NoCluster)?;
    let key = store.identity()?.key;
    if key.verifying_key().to_bytes() != chain.leader() {
        return Err(WriteError::NotLeader {
            leader: chain.leader_address(),
            epoch: chain.epoch(),
        });
    }
    let record = chain.sign_next(&key, kind, payload);
    let verified = chain.verify(&record).map_err(|e| ImportError::Refused {
        index: 0,
        reason: e.to_string(),
    })?;
    store.append_mastered(&verified)?;
    Ok(record)
}

/// Loads the node's durable HA state into `core`, as `meshward run` does at start and after
/// an import: the last endorsement it gave, its stored mastered chain verified again from its
/// restart point or the trust anchor ([`verified_chain`]; it admits the chain's roster), and a
/// hand-off of restrictive superseded records a restart cut short. Used by the daemon and the
/// simulator.
pub fn load_into(store: &Store, core: &mut Core, now_ms: u64) -> anyhow::Result<()> {
    core.set_vote(store.vote()?);
    if let Some(anchor) = store.anchor()? {
        let records = store.mastered_records()?;
        let chain = verified_chain(store, anchor, &records)
            .context("the stored mastered chain no longer verifies")?;
        core.load_verified(now_ms, anchor, chain, records);
        core.resume_handoff(now_ms, &store.superseded()?);
    }
    Ok(())
}

/// The peers the mesh admits: the members of the verified roster; none when this node is
/// standalone (no cluster, or removed from the roster).
pub fn admitted(store: &Store) -> Result<BTreeSet<WriterId>, ImportError> {
    let me = store.identity()?.writer();
    let members: BTreeSet<WriterId> = chain(store)?
        .map(|c| c.roster().members.iter().map(|m| WriterId(m.key)).collect())
        .unwrap_or_default();
    Ok(if members.contains(&me) {
        members
    } else {
        BTreeSet::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(leader: &SigningKey, members: &[[u8; 32]]) -> MasteredBundle {
        let members = members
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                key: *k,
                address: format!("127.0.0.1:{}", 5000 + i),
            })
            .collect();
        MasteredBundle::genesis(leader, meshward_crdt::ClusterId([3; 16]), members, None)
    }

    fn key(n: u8) -> [u8; 32] {
        SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes()
    }

    #[test]
    fn an_imported_roster_decides_admission_and_survives_reimport() {
        let store = Store::in_memory().unwrap();
        let me = store.identity().unwrap().writer();
        let leader = SigningKey::from_bytes(&[1; 32]);
        let b = bundle(&leader, &[key(1), me.0]);
        assert_eq!(import(&store, &b.encode()).unwrap(), 1);
        assert_eq!(import(&store, &b.encode()).unwrap(), 0, "idempotent");
        let admitted = admitted(&store).unwrap();
        assert_eq!(admitted, [WriterId(key(1)), me].into());
        assert_eq!(store.identity().unwrap().cluster.0, [3; 16]);
        // A node outside the roster admits no one.
        let outsider = Store::in_memory().unwrap();
        import(&outsider, &b.encode()).unwrap();
        assert!(super::admitted(&outsider).unwrap().is_empty());
    }

    #[test]
    fn only_the_leader_writes_and_a_follower_is_told_who_leads() {
        let leader_store = Store::in_memory().unwrap();
        let leader = leader_store.identity().unwrap().key;
        let follower_store = Store::in_memory().unwrap();
        let follower = follower_store.identity().unwrap().key;
        assert!(matches!(
            write(&leader_store, RecordKind::Config, vec![1]),
            Err(WriteError::NoCluster)
        ));
        let b = bundle(
            &leader,
            &[
                leader.verifying_key().to_bytes(),
                follower.verifying_key().to_bytes(),
            ],
        );
        import(&leader_store, &b.encode()).unwrap();
        import(&follower_store, &b.encode()).unwrap();
        let record = write(&leader_store, RecordKind::Config, vec![1]).unwrap();
        assert_eq!(record.record.version, 2);
        assert_eq!(leader_store.mastered_records().unwrap().len(), 2);
        let err = write(&follower_store, RecordKind::Config, vec![1]).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:5000"), "{err}");
        assert_eq!(follower_store.mastered_records().unwrap().len(), 1);
    }

    #[test]
    fn the_chain_cache_verifies_once_per_stored_chain_and_follows_every_write() {
        let store = Store::in_memory().unwrap();
        let leader = store.identity().unwrap().key;
        let mut cache = ChainCache::default();
        assert_eq!(cache.get(&store).unwrap(), None);
        let me = leader.verifying_key().to_bytes();
        import(&store, &bundle(&leader, &[me]).encode()).unwrap();
        let first = cache.get(&store).unwrap().expect("a chain");
        for _ in 0..10 {
            assert_eq!(cache.get(&store).unwrap().as_ref(), Some(&first));
        }
        assert_eq!(cache.rebuilds(), 2, "one rebuild per stored chain");
        write(&store, RecordKind::Config, vec![1]).unwrap();
        let second = cache.get(&store).unwrap().expect("a chain");
        assert_eq!(second.last_version(), 2, "a write invalidates the cache");
        assert_eq!(Some(second), chain(&store).unwrap());
        assert_eq!(cache.rebuilds(), 2, "a write only extends the cached chain");
        assert_eq!(cache.extensions(), 1);
        for _ in 0..3 {
            write(&store, RecordKind::Config, vec![2]).unwrap();
        }
        let fifth = cache.get(&store).unwrap().expect("a chain");
        assert_eq!(fifth.last_version(), 5);
        assert_eq!(Some(fifth), chain(&store).unwrap());
        assert_eq!((cache.rebuilds(), cache.extensions()), (2, 2));
    }

    #[test]
    fn a_forged_or_foreign_bundle_is_refused_and_nothing_is_stored() {
        let store = Store::in_memory().unwrap();
        let leader = SigningKey::from_bytes(&[1; 32]);
        let mut forged = bundle(&leader, &[key(1)]);
        forged.genesis_leader = key(9); // signed by 1, claims 9 as genesis leader
        assert!(matches!(
            import(&store, &forged.encode()),
            Err(ImportError::Refused { index: 0, .. })
        ));
        assert!(store.mastered_records().unwrap().is_empty());
        let store = Store::in_memory().unwrap();
        import(&store, &bundle(&leader, &[key(1)]).encode()).unwrap();
        let mut other = bundle(&leader, &[key(1)]);
        other.cluster = [4; 16];
        assert!(matches!(
            import(&store, &other.encode()),
            Err(ImportError::Store(StoreError::Cluster(_)))
        ));
        assert!(matches!(
            import(&store, b"garbage"),
            Err(ImportError::Malformed(_))
        ));
    }

    #[test]
    fn a_record_of_version_0_is_refused() {
        // Found by fuzzing: version 0 was looked up as held record number -1 (an overflow).
        let leader = SigningKey::from_bytes(&[1; 32]);
        let genesis = bundle(&leader, &[key(1)]);
        let mut record = SignedRecord::decode(&genesis.records[0]).unwrap().record;
        record.version = 0;
        let zero = record.sign(&leader).encode();
        for (records, index) in [
            (vec![zero.clone()], 0),
            (vec![genesis.records[0].clone(), zero], 1),
        ] {
            let b = MasteredBundle {
                records,
                ..genesis.clone()
            };
            let store = Store::in_memory().unwrap();
            let err = import(&store, &b.encode()).unwrap_err();
            assert!(
                matches!(err, ImportError::Refused { index: i, .. } if i == index),
                "{err}"
            );
            assert!(store.mastered_records().unwrap().is_empty());
        }
    }
}
