//! The mastered chain in the store: trust anchor, records, high-water mark, superseded
//! records and the HA vote.

use meshward_crdt::mastered::{
    Chain, ChainState, Checkpoint, RecordHash, RecordKind, SignedRecord, TrustAnchor, Verified,
};
use meshward_crdt::{ClusterId, WriterId};
use redb::ReadableTable;

use super::changes::{self, Change};
use super::{HEADS, MASTERED, META, SUPERSEDED, Store, StoreError};

/// The newest mastered record stored: a node never accepts anything older (fencing), and
/// the lifecycle code rebuilds the verified chain from the stored records at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HighWater {
    /// Epoch of the newest record.
    pub epoch: u64,
    /// Its version.
    pub version: u64,
    /// Its hash.
    pub hash: RecordHash,
}

impl Store {
    /// The trust anchor of the node's mastered chain (cluster and genesis leader), if set.
    pub fn anchor(&self) -> Result<Option<TrustAnchor>, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(leader) = meta.get("anchor_leader")? else {
            return Ok(None);
        };
        let genesis_leader = leader.value().try_into().map_err(|_| StoreError::Decode {
            what: "trust anchor",
        })?;
        let cluster = meta
            .get("cluster_id")?
            .and_then(|c| c.value().try_into().ok())
            .ok_or(StoreError::Decode { what: "cluster id" })?;
        Ok(Some(TrustAnchor {
            cluster: ClusterId(cluster),
            genesis_leader,
        }))
    }

    /// Makes the node a member of `anchor`'s cluster: its cluster id becomes the anchor's.
    /// Refused when another anchor is set, or when shared data was already written under a
    /// different cluster id (its signed heads name that cluster).
    pub fn adopt_anchor(&self, anchor: &TrustAnchor) -> Result<(), StoreError> {
        if let Some(current) = self.anchor()? {
            if current == *anchor {
                return Ok(());
            }
            return Err(StoreError::Cluster(format!(
                "this node already belongs to cluster {} (genesis leader {}); \
                 it cannot take records of cluster {}",
                current.cluster.to_hex(),
                hex::encode(current.genesis_leader),
                anchor.cluster.to_hex()
            )));
        }
        let identity = self.identity()?;
        let tx = self.begin_write()?;
        {
            let has_shared = tx.open_table(HEADS)?.first()?.is_some();
            if has_shared && identity.cluster != anchor.cluster {
                return Err(StoreError::Cluster(format!(
                    "this node holds shared data of standalone cluster {}; \
                     start from an empty data directory to join cluster {}",
                    identity.cluster.to_hex(),
                    anchor.cluster.to_hex()
                )));
            }
            let mut meta = tx.open_table(META)?;
            meta.insert("cluster_id", anchor.cluster.0.as_slice())?;
            meta.insert("anchor_leader", anchor.genesis_leader.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends a verified mastered record and advances the high-water mark, in one durable
    /// transaction. Only a record that extends the stored chain (next version, `prev` equal to
    /// the stored hash) is written; verification itself is [`meshward_crdt::mastered::Chain`]'s
    /// job, and only its [`Verified`] type reaches this call.
    pub fn append_mastered(&self, record: &Verified<SignedRecord>) -> Result<(), StoreError> {
        self.append_mastered_all(std::slice::from_ref(record))
    }

    /// [`Store::append_mastered`] for consecutive records, in ONE durable transaction (a
    /// joining node stores a sync answer's records at once): all are stored, or none.
    pub fn append_mastered_all(
        &self,
        records: &[Verified<SignedRecord>],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode()).collect();
        let tx = self.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let mut table = tx.open_table(MASTERED)?;
            let (mut last_version, mut last_hash) =
                read_high_water(&meta)?.map_or((0, RecordHash::ZERO), |h| (h.version, h.hash));
            for (record, bytes) in records.iter().zip(&encoded) {
                let r = &record.record;
                if r.version != last_version + 1 || r.prev != last_hash {
                    return Err(StoreError::MasteredOrder {
                        got: r.version,
                        last: last_version,
                    });
                }
                table.insert(r.version, bytes.as_slice())?;
                (last_version, last_hash) = (r.version, record.hash());
            }
            let epoch = records.last().map_or(0, |r| r.record.epoch);
            let mut hw = Vec::with_capacity(48);
            hw.extend(epoch.to_be_bytes());
            hw.extend(last_version.to_be_bytes());
            hw.extend(last_hash.0);
            meta.insert("mastered_high_water", hw.as_slice())?;
        }
        // The last checkpoint of the batch is checked against the view folded up to it and
        // becomes the restart point; earlier ones are covered by its hash chain.
        let last_checkpoint = records
            .iter()
            .rposition(|r| r.record.kind == RecordKind::Checkpoint);
        for (index, record) in records.iter().enumerate() {
            if Some(index) == last_checkpoint {
                checkpoint(&tx, record)?;
            }
            super::managed::fold(&tx, record)?;
        }
        let logged = encoded
            .into_iter()
            .map(|record| Change::Mastered { record });
        changes::log_changes(&tx, logged, self.keep_changes)?;
        tx.commit()?;
        Ok(())
    }

    /// The stored mastered records in version order, to rebuild the chain from.
    pub fn mastered_records(&self) -> Result<Vec<SignedRecord>, StoreError> {
        self.mastered_after(0)
    }

    /// The stored mastered record of `version`, if any.
    pub fn mastered_record(&self, version: u64) -> Result<Option<SignedRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(MASTERED)?;
        let Some(v) = table.get(version)? else {
            return Ok(None);
        };
        decode_record(v.value()).map(Some)
    }

    /// The stored mastered records after `version`, in version order.
    pub fn mastered_after(&self, version: u64) -> Result<Vec<SignedRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(MASTERED)?;
        let mut out = Vec::new();
        for entry in table.range(version.saturating_add(1)..)? {
            out.push(decode_record(entry?.1.value())?);
        }
        Ok(out)
    }

    /// The high-water mark of the mastered chain, if any record is stored.
    pub fn mastered_high_water(&self) -> Result<Option<HighWater>, StoreError> {
        let tx = self.begin_read()?;
        read_high_water(&tx.open_table(META)?)
    }

    /// Replaces the stored mastered records from version `from` on by `records` (the winning
    /// chain after a fork) and keeps `superseded` (ours from there) for review, in one durable
    /// transaction. The resulting chain is verified from the stored trust anchor first; if it
    /// does not verify, nothing changes.
    pub fn replace_mastered(
        &self,
        from: u64,
        records: &[SignedRecord],
        superseded: &[SignedRecord],
    ) -> Result<(), StoreError> {
        let anchor = self
            .anchor()?
            .ok_or(StoreError::MasteredOrder { got: from, last: 0 })?;
        let mut chain: Vec<SignedRecord> = self
            .mastered_records()?
            .into_iter()
            .take(from.saturating_sub(1) as usize)
            .collect();
        if chain.len() as u64 + 1 != from {
            return Err(StoreError::MasteredOrder {
                got: from,
                last: chain.len() as u64,
            });
        }
        chain.extend(records.iter().cloned());
        let rebuilt = Chain::rebuild(anchor, &chain).map_err(|_| StoreError::Decode {
            what: "replacement mastered chain (it does not verify)",
        })?;
        let tx = self.begin_write()?;
        {
            let mut table = tx.open_table(MASTERED)?;
            let stale: Vec<u64> = table
                .range(from..)?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for version in stale {
                table.remove(version)?;
            }
            for r in records {
                table.insert(r.record.version, r.encode().as_slice())?;
            }
            let mut hw = Vec::with_capacity(48);
            hw.extend(rebuilt.epoch().to_be_bytes());
            hw.extend(rebuilt.last_version().to_be_bytes());
            hw.extend(rebuilt.last_hash().0);
            tx.open_table(META)?
                .insert("mastered_high_water", hw.as_slice())?;
            let mut kept = tx.open_table(SUPERSEDED)?;
            for r in superseded {
                kept.insert(r.hash().0.as_slice(), r.encode().as_slice())?;
            }
            // A restart point in the replaced part is gone with it (the next checkpoint of
            // the winning chain makes a new one).
            let mut meta = tx.open_table(META)?;
            if read_checkpoint_version(&meta)?.is_some_and(|v| v >= from) {
                meta.remove(CHECKPOINT_KEY)?;
            }
        }
        super::managed::rebuild(&tx, &chain)?;
        let logged = records
            .iter()
            .map(|r| Change::Mastered { record: r.encode() });
        changes::log_changes(&tx, logged, self.keep_changes)?;
        tx.commit()?;
        Ok(())
    }

    /// The restart point: the chain state right after the last checkpoint whose digest
    /// matched this node's folded state, and the stored checkpoint record it follows. `None`
    /// before the first checkpoint. [`Chain::resume`] checks the two against each other.
    pub fn mastered_checkpoint(&self) -> Result<Option<(ChainState, SignedRecord)>, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(state) = meta.get(CHECKPOINT_KEY)? else {
            return Ok(None);
        };
        let state = ChainState::decode(state.value()).map_err(|_| StoreError::Decode {
            what: "mastered checkpoint state",
        })?;
        let table = tx.open_table(MASTERED)?;
        let Some(record) = table.get(state.version())? else {
            return Err(StoreError::Decode {
                what: "mastered checkpoint (its record is missing)",
            });
        };
        let record = decode_record(record.value())?;
        Ok(Some((state, record)))
    }

    /// The version of the restart point ([`Store::mastered_checkpoint`]), 0 before any.
    pub fn mastered_checkpoint_version(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        Ok(read_checkpoint_version(&tx.open_table(META)?)?.unwrap_or(0))
    }

    /// The digest of the folded state (the managed view) as it stands, for the leader's next
    /// checkpoint.
    pub fn state_digest(&self) -> Result<meshward_crdt::mastered::StateDigest, StoreError> {
        super::managed::digest(&self.begin_read()?)
    }

    /// Keeps records of a losing competing chain for review.
    pub fn add_superseded(&self, records: &[SignedRecord]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut kept = tx.open_table(SUPERSEDED)?;
            for r in records {
                kept.insert(r.hash().0.as_slice(), r.encode().as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Superseded mastered records, by version.
    pub fn superseded(&self) -> Result<Vec<SignedRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = match tx.open_table(SUPERSEDED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(
                SignedRecord::decode(v.value()).map_err(|_| StoreError::Decode {
                    what: "superseded record",
                })?,
            );
        }
        out.sort_by_key(|r| (r.record.version, r.record.epoch));
        Ok(out)
    }

    /// Records durably that this node endorsed `candidate` for `epoch`.
    pub fn set_vote(&self, epoch: u64, candidate: &WriterId) -> Result<(), StoreError> {
        let mut v = epoch.to_be_bytes().to_vec();
        v.extend(candidate.0);
        let tx = self.begin_write()?;
        tx.open_table(META)?.insert("ha_vote", v.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The last endorsement this node gave, if any.
    pub fn vote(&self) -> Result<Option<(u64, WriterId)>, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(v) = meta.get("ha_vote")? else {
            return Ok(None);
        };
        let v = v.value();
        let bad = || StoreError::Decode { what: "HA vote" };
        if v.len() != 40 {
            return Err(bad());
        }
        let epoch = u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?);
        let key: [u8; 32] = v[8..].try_into().map_err(|_| bad())?;
        Ok(Some((epoch, WriterId(key))))
    }
}

#[cfg(test)]
impl Store {
    /// Test only: overwrites the stored restart point with `bytes`, as damage on disk would.
    pub(crate) fn set_checkpoint_raw(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(META)?.insert(CHECKPOINT_KEY, bytes)?;
        tx.commit()?;
        Ok(())
    }

    /// Test only: overwrites the stored record of `version`, as damage on disk would.
    pub(crate) fn set_mastered_raw(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(MASTERED)?.insert(version, bytes)?;
        tx.commit()?;
        Ok(())
    }
}

/// META key of the restart point: an encoded [`ChainState`].
pub(super) const CHECKPOINT_KEY: &str = "mastered_checkpoint";

fn read_checkpoint_version(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<u64>, StoreError> {
    let Some(v) = meta.get(CHECKPOINT_KEY)? else {
        return Ok(None);
    };
    ChainState::decode(v.value())
        .map(|s| Some(s.version()))
        .map_err(|_| StoreError::Decode {
            what: "mastered checkpoint state",
        })
}

/// Checks a checkpoint record against the view folded up to the version it covers, inside
/// `tx`, and makes its chain state the restart point. A digest that differs refuses the write.
fn checkpoint(
    tx: &redb::WriteTransaction,
    record: &Verified<SignedRecord>,
) -> Result<(), StoreError> {
    let version = record.record.version;
    let (Ok(payload), Some(state)) = (
        Checkpoint::decode(&record.record.payload),
        record.checkpoint_state(),
    ) else {
        // Verification refuses a malformed checkpoint: this is never reached.
        return Err(StoreError::CheckpointMismatch { version });
    };
    if super::managed::digest_in(tx)? != payload.state {
        return Err(StoreError::CheckpointMismatch { version });
    }
    tx.open_table(META)?
        .insert(CHECKPOINT_KEY, state.encode().as_slice())?;
    Ok(())
}

fn read_high_water(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<HighWater>, StoreError> {
    let Some(v) = meta.get("mastered_high_water")? else {
        return Ok(None);
    };
    let v = v.value();
    let bad = || StoreError::Decode {
        what: "mastered high-water mark",
    };
    if v.len() != 48 {
        return Err(bad());
    }
    Ok(Some(HighWater {
        epoch: u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?),
        version: u64::from_be_bytes(v[8..16].try_into().map_err(|_| bad())?),
        hash: RecordHash(v[16..].try_into().map_err(|_| bad())?),
    }))
}

/// A stored mastered record, decoded.
pub(super) fn decode_record(bytes: &[u8]) -> Result<SignedRecord, StoreError> {
    SignedRecord::decode(bytes).map_err(|_| StoreError::Decode {
        what: "mastered record",
    })
}
