//! Tamper evidence of the local audit across nodes: the audit head each node signs into the
//! shared table `audit-heads`, and the comparison of the local chain with what peers hold.
//!
//! The chain alone cannot show a rewrite by someone who recomputed every hash after the
//! record they changed (see the parent module). So every node publishes its head (count,
//! hash of record `count`, when) as its one row of `audit-heads`, every
//! [`PUBLISH_INTERVAL_MS`] when the head moved and at shutdown. The row is signed by the node
//! like every shared row and replicated to every member.
//!
//! - [`to_publish`]: a node publishes a new head only if its chain still holds the head it
//!   published before (same hash at that count): a chain rewritten offline is never
//!   published over the evidence; the node refuses and says so in its log.
//! - [`judge`]: `audit verify --against-mesh` asks every peer what it holds of this node's
//!   row ([`crate::core::PeerHead`]) and compares: the local chain must have at least `count`
//!   records and the hash of record `count` must be the peer's. A chain recomputed after a
//!   rewritten record has another hash at that count, so the peer disagrees.

use meshward_crdt::AuditHead;
use redb::ReadableDatabase;

use super::{AuditError, Head, RECORDS, decode_record};
use crate::core::PeerHead;

/// How often the daemon publishes its audit head when it moved, ms.
pub const PUBLISH_INTERVAL_MS: u64 = 5_000;

/// What to do with this node's row of `audit-heads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// Nothing: no record yet, or the published head is current.
    Nothing,
    /// Write this row.
    Put(AuditHead),
    /// Do not write: the chain no longer holds the head published before.
    Refuse {
        /// For the operator's log.
        why: String,
    },
}

/// Decides the row to publish: `local` is the chain's head, `published` the row this node
/// holds of its own, `local_at_published` the local hash of record `published.count` (`None`:
/// no such record).
pub fn to_publish(
    local: Option<Head>,
    published: Option<&AuditHead>,
    local_at_published: Option<[u8; 32]>,
    now_ms: i64,
) -> Publish {
    let Some(local) = local.filter(|h| h.seq > 0) else {
        return Publish::Nothing;
    };
    if let Some(p) = published {
        if local_at_published != Some(p.hash) {
            return Publish::Refuse {
                why: format!(
                    "the local audit does not hold the head this node published (record {} \
                     hashed {}): it was rewritten or cut; run `meshward audit verify \
                     --against-mesh`",
                    p.count,
                    hex::encode(p.hash)
                ),
            };
        }
        if p.count == local.seq {
            return Publish::Nothing;
        }
    }
    Publish::Put(AuditHead {
        count: local.seq,
        hash: local.hash,
        at_ms: now_ms.max(0),
    })
}

/// What one peer's row says of the local chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The local chain has the peer's hash at the peer's count.
    Agrees {
        /// The peer's count.
        count: u64,
    },
    /// The local chain is shorter than the peer's count, or has another hash there.
    Disagrees {
        /// The peer's count.
        count: u64,
        /// The peer's hash.
        peer_hash: [u8; 32],
        /// The local hash of record `count` (`None`: the local chain is shorter).
        local_hash: Option<[u8; 32]>,
    },
    /// The peer holds no row for this node yet.
    NoRow,
    /// The peer could not be asked or did not answer.
    Unreachable {
        /// Why.
        why: String,
    },
    /// The peer runs a version that cannot answer.
    CannotAnswer,
}

impl Verdict {
    /// The verdict's name in reports: agrees, disagrees, no-row, unreachable, cannot-answer.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Agrees { .. } => "agrees",
            Verdict::Disagrees { .. } => "disagrees",
            Verdict::NoRow => "no-row",
            Verdict::Unreachable { .. } => "unreachable",
            Verdict::CannotAnswer => "cannot-answer",
        }
    }
}

/// Compares a peer's answer with the local chain; `local_hash_at(count)` is the local hash
/// of record `count`, `None` when the chain has no such record.
pub fn judge(peer: &PeerHead, local_hash_at: impl FnOnce(u64) -> Option<[u8; 32]>) -> Verdict {
    match peer {
        PeerHead::Holds(h) => {
            let local_hash = local_hash_at(h.count);
            if local_hash == Some(h.hash) {
                Verdict::Agrees { count: h.count }
            } else {
                Verdict::Disagrees {
                    count: h.count,
                    peer_hash: h.hash,
                    local_hash,
                }
            }
        }
        PeerHead::Nothing => Verdict::NoRow,
        PeerHead::Unreachable { why } => Verdict::Unreachable { why: why.clone() },
        PeerHead::CannotAnswer => Verdict::CannotAnswer,
    }
}

/// The stored hash of record `seq`, if the chain has it. The hash is checked against the
/// record's content, so a record changed without its hash reads as absent.
pub fn hash_at(
    db: &(impl ReadableDatabase + ?Sized),
    seq: u64,
) -> Result<Option<[u8; 32]>, AuditError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let table = match txn.open_table(RECORDS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(redb::Error::from(e).into()),
    };
    let Some(value) = table.get(seq).map_err(redb::Error::from)? else {
        return Ok(None);
    };
    Ok(decode_record(value.value())
        .ok()
        .filter(|r| r.seq == seq && r.compute_hash() == r.hash)
        .map(|r| r.hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(count: u64, byte: u8) -> AuditHead {
        AuditHead {
            count,
            hash: [byte; 32],
            at_ms: 5,
        }
    }

    #[test]
    fn a_peer_agrees_only_with_its_hash_at_its_count() {
        let peer = PeerHead::Holds(head(3, 7));
        // The local chain is longer and holds the peer's hash at record 3.
        let asked = std::cell::Cell::new(0);
        let v = judge(&peer, |n| {
            asked.set(n);
            Some([7; 32])
        });
        assert_eq!(v, Verdict::Agrees { count: 3 });
        assert_eq!(asked.get(), 3);
        // The local chain is shorter than the peer's count (records cut).
        assert_eq!(
            judge(&peer, |_| None),
            Verdict::Disagrees {
                count: 3,
                peer_hash: [7; 32],
                local_hash: None
            }
        );
        // Rewritten and recomputed: another hash at the same count.
        let v = judge(&peer, |_| Some([8; 32]));
        assert_eq!(v.as_str(), "disagrees");
        assert!(matches!(
            v,
            Verdict::Disagrees {
                local_hash: Some(h),
                ..
            } if h == [8; 32]
        ));
        assert_eq!(judge(&PeerHead::Nothing, |_| None), Verdict::NoRow);
        assert_eq!(
            judge(&PeerHead::CannotAnswer, |_| None).as_str(),
            "cannot-answer"
        );
        let why = "not connected".to_string();
        assert_eq!(
            judge(&PeerHead::Unreachable { why: why.clone() }, |_| None),
            Verdict::Unreachable { why }
        );
    }

    #[test]
    fn a_rewritten_and_recomputed_chain_has_another_hash_at_the_published_count() {
        use redb::ReadableTable as _;
        use redb::backends::InMemoryBackend;

        use crate::audit::{AuditLog, HEAD_KEY, META, NewAuditRecord, RECORDS, seal};

        let db = redb::Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("db");
        let new = |n: i64| NewAuditRecord {
            at_ms: n,
            actor: "alice".into(),
            action: "session.open".into(),
            target: format!("srv-{n}"),
            detail: String::new(),
        };
        let records: Vec<_> = (1..=3).map(new).collect();
        AuditLog::append_batch(&db, &records).expect("append");
        let published = AuditLog::head(&db).expect("head").expect("some");
        let peer = PeerHead::Holds(AuditHead {
            count: published.seq,
            hash: published.hash,
            at_ms: 1,
        });
        let local = |db: &redb::Database, n| hash_at(db, n).expect("read");
        assert_eq!(
            judge(&peer, |n| local(&db, n)),
            Verdict::Agrees { count: 3 }
        );
        assert_eq!(local(&db, 4), None);
        // Rewrite record 2 and recompute 2 and 3 (and the head, as `append_batch` would).
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(RECORDS).expect("table");
            let first = decode_record(table.get(1).expect("get").expect("1").value()).expect("r");
            let mut prev = first.hash;
            for seq in 2..=3 {
                let mut changed = new(seq as i64);
                if seq == 2 {
                    changed.target = "srv-elsewhere".into();
                }
                let record = seal(seq, changed, prev);
                prev = record.hash;
                let bytes = postcard::to_stdvec(&record).expect("encode");
                table.insert(seq, bytes.as_slice()).expect("insert");
            }
            let head = postcard::to_stdvec(&Head { seq: 3, hash: prev }).expect("encode");
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(HEAD_KEY, head.as_slice()).expect("head");
        }
        txn.commit().expect("commit");
        // The chain is consistent again, but not with what the peer holds.
        assert!(AuditLog::verify(&db).expect("verify").is_intact());
        let v = judge(&peer, |n| local(&db, n));
        assert!(
            matches!(v, Verdict::Disagrees { count: 3, local_hash: Some(h), .. } if h != published.hash),
            "{v:?}"
        );
    }

    #[test]
    fn publishes_a_moved_head_and_never_over_a_rewritten_chain() {
        let local = |seq, byte| {
            Some(Head {
                seq,
                hash: [byte; 32],
            })
        };
        assert_eq!(to_publish(None, None, None, 9), Publish::Nothing);
        assert_eq!(
            to_publish(local(2, 1), None, None, 9),
            Publish::Put(AuditHead {
                count: 2,
                hash: [1; 32],
                at_ms: 9
            })
        );
        let published = head(2, 1);
        // Not moved: nothing.
        assert_eq!(
            to_publish(local(2, 1), Some(&published), Some([1; 32]), 9),
            Publish::Nothing
        );
        // Moved on from the published head: the new one.
        assert_eq!(
            to_publish(local(4, 3), Some(&published), Some([1; 32]), 9),
            Publish::Put(AuditHead {
                count: 4,
                hash: [3; 32],
                at_ms: 9
            })
        );
        // Rewritten (another hash at the published count) or cut (no such record): refused.
        for at in [Some([2; 32]), None] {
            let Publish::Refuse { why } = to_publish(local(4, 3), Some(&published), at, 9) else {
                panic!("a rewritten chain was published");
            };
            assert!(why.contains("--against-mesh"), "{why}");
        }
    }
}
