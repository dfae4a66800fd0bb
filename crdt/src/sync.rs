//! What replicas exchange: signed heads, digests and sync messages, and their bounded
//! encoding.
//!
//! A [`SignedHead`] is the writer's ed25519 signature over the head of one segment document.
//! Because an automerge change hash covers the change's bytes and its dependencies, and a
//! segment has a single author whose changes form a chain, the signature over the last hash
//! authenticates every change before it. Any node may relay a writer's changes; nobody but
//! the writer can produce a head that others accept.
//!
//! A [`Digest`] lists, for every segment a replica holds, how many changes it has (`seq`) and
//! the hash of the last one. Because each segment's history is a chain, that is an exact
//! version vector: [`crate::Replica::missing_for`] turns a peer's digest into exactly the
//! changes the peer lacks, in one step.
//!
//! On the wire a [`SyncMessage`] is postcard, compressed with zstd. Decoding is bounded at
//! both ends: compressed input over [`MAX_WIRE`] is refused, and so is a frame that declares
//! more decompressed bytes than its size justifies ([`decoded_bound`]: [`MAX_RATIO`] times the
//! input, at least [`RATIO_FLOOR`], at most [`MAX_DECODED`]), before anything is allocated or
//! decompressed; a zstd bomb of 64 KiB that declares 128 MiB costs nothing. A message that
//! compresses better than the ratio allows is sent as a stored frame (zstd raw blocks,
//! RFC 8878), so every message a node encodes is one its peers accept.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::id::{ClusterId, SegmentKey, TableId};

/// Largest encoded (compressed) sync message accepted.
pub const MAX_WIRE: usize = 32 * 1024 * 1024;
/// Largest decompressed sync message accepted: a few sealed segments.
pub const MAX_DECODED: usize = 128 * 1024 * 1024;
/// Most decompressed bytes a sync message may declare per byte of input. zstd level 3 packs
/// automerge changes and saved documents 2–10 times; a message that packs better travels as a
/// stored frame instead.
pub const MAX_RATIO: usize = 32;
/// Decompressed bytes any message may declare however small it is (a short push).
pub const RATIO_FLOOR: usize = 256 * 1024;
/// Largest digest accepted (a node holding thousands of segments stays far below it).
pub const MAX_DIGEST: usize = 4 * 1024 * 1024;
/// zstd level for sync messages: level 3 is zstd's default speed/ratio balance.
const ZSTD_LEVEL: i32 = 3;
const HEAD_DOMAIN: &[u8] = b"meshward/head/v1\0";

/// The state of one segment document as its writer last signed it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Head {
    /// The cluster the data belongs to.
    pub cluster: ClusterId,
    /// Which document.
    pub key: SegmentKey,
    /// Number of changes in the document (automerge `seq` of the last change).
    pub seq: u64,
    /// Number of rows in the document (log tables) or live keys (map tables).
    pub rows: u64,
    /// The writer will never add to this segment again.
    pub sealed: bool,
    /// Hash of the last change.
    pub hash: [u8; 32],
}

/// A [`Head`] with its writer's signature.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedHead {
    /// What was signed.
    pub head: Head,
    /// ed25519 signature by `head.key.writer` over the domain-separated encoding of `head`.
    pub signature: Signature,
}

/// Why a signed head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head names another cluster.
    #[error("data is for cluster {got}, this node is in cluster {ours}")]
    WrongCluster {
        /// The head's cluster.
        got: ClusterId,
        /// Ours.
        ours: ClusterId,
    },
    /// The writer id is not an ed25519 key, or the signature does not verify.
    #[error("signature on the head of {key} does not verify against its writer's key")]
    BadSignature {
        /// The segment.
        key: SegmentKey,
    },
}

impl Head {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = HEAD_DOMAIN.to_vec();
        // Encoding a plain struct into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Signs the head. `key` must be the writer's key; the caller guarantees it.
    pub fn sign(self, key: &SigningKey) -> SignedHead {
        let signature = key.sign(&self.signing_bytes());
        SignedHead {
            head: self,
            signature,
        }
    }

    /// This head's entry in a digest.
    pub fn state(&self) -> SegmentState {
        SegmentState {
            key: self.key,
            seq: self.seq,
            hash: self.hash,
        }
    }
}

impl SignedHead {
    /// Checks the cluster and the writer's signature.
    pub fn verify(&self, cluster: ClusterId) -> Result<(), HeadError> {
        if self.head.cluster != cluster {
            return Err(HeadError::WrongCluster {
                got: self.head.cluster,
                ours: cluster,
            });
        }
        let bad = HeadError::BadSignature { key: self.head.key };
        let key = self.head.key.writer.verifying_key().ok_or(bad.clone())?;
        key.verify(&self.head.signing_bytes(), &self.signature)
            .map_err(|_| bad)
    }
}

/// One digest entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SegmentState {
    /// Which document.
    pub key: SegmentKey,
    /// Changes held.
    pub seq: u64,
    /// Hash of the last change held.
    pub hash: [u8; 32],
}

/// What a replica holds: one entry per segment document, sorted by key.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Digest {
    /// Entries in key order.
    pub segments: Vec<SegmentState>,
}

impl Digest {
    /// A 32-byte summary to advertise cheaply: equal digests have equal fingerprints.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Total changes held for `table` (all writers, all segments).
    pub fn changes(&self, table: TableId) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.key.table == table)
            .map(|s| s.seq)
            .sum()
    }

    /// Encodes the digest (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a digest, refusing oversize or malformed input and unsorted entries.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_DIGEST {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: MAX_DIGEST,
            });
        }
        let digest: Digest = postcard::from_bytes(bytes).map_err(|_| WireError::Malformed)?;
        if !digest.segments.windows(2).all(|w| w[0].key < w[1].key) {
            return Err(WireError::Malformed);
        }
        Ok(digest)
    }

    /// Looks up one entry.
    pub fn get(&self, key: &SegmentKey) -> Option<&SegmentState> {
        self.segments
            .binary_search_by(|s| s.key.cmp(key))
            .ok()
            .map(|i| &self.segments[i])
    }
}

/// A unit of replication: data of one segment, with the writer's signed head.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SyncItem {
    /// The whole document in automerge's saved (compressed columnar) format; sent when the
    /// receiver holds nothing of the segment.
    Snapshot {
        /// Head of the document.
        head: SignedHead,
        /// `Automerge::save()` output.
        doc: Vec<u8>,
    },
    /// A run of consecutive changes ending at `head`: the first has seq
    /// `head.seq - changes.len() + 1`.
    Changes {
        /// Head after the last change.
        head: SignedHead,
        /// Raw automerge change chunks, in seq order.
        changes: Vec<Vec<u8>>,
    },
}

impl SyncItem {
    /// The signed head the item ends at.
    pub fn head(&self) -> &SignedHead {
        match self {
            SyncItem::Snapshot { head, .. } | SyncItem::Changes { head, .. } => head,
        }
    }

    /// Bytes of document data carried (before message compression).
    pub fn payload_len(&self) -> usize {
        match self {
            SyncItem::Snapshot { doc, .. } => doc.len(),
            SyncItem::Changes { changes, .. } => changes.iter().map(Vec::len).sum(),
        }
    }
}

/// What goes on the wire: a push of fresh changes or an anti-entropy answer.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct SyncMessage {
    /// The items, applied in order.
    pub items: Vec<SyncItem>,
}

/// Bytes from the network that were refused before parsing or during it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Over a size bound, compressed or decompressed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size seen.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not valid zstd, or not a valid encoding.
    #[error("malformed message")]
    Malformed,
}

/// The most decompressed bytes a message of `wire` bytes may declare: [`MAX_RATIO`] times
/// `wire`, at least [`RATIO_FLOOR`], at most [`MAX_DECODED`].
pub fn decoded_bound(wire: usize) -> usize {
    wire.saturating_mul(MAX_RATIO)
        .clamp(RATIO_FLOOR, MAX_DECODED)
}

impl SyncMessage {
    /// Encodes and compresses the message; one that would compress past [`MAX_RATIO`] is
    /// written as a stored frame, which any zstd decoder reads. The zstd context is the
    /// thread's, reused from message to message: creating one per message cost more than
    /// compressing a push of a few events.
    pub fn encode(&self) -> Vec<u8> {
        let plain = postcard::to_allocvec(self).unwrap_or_default();
        thread_local! {
            static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        // Compressing into a Vec only fails on allocation failure; a failure leaves an empty
        // result, which is then too small for the ratio: the plain bytes go as a stored frame.
        let packed = COMPRESSOR.with_borrow_mut(|c| {
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            }
            c.as_mut()
                .and_then(|c| c.compress(&plain).ok())
                .unwrap_or_default()
        });
        if !packed.is_empty() && plain.len() <= decoded_bound(packed.len()) {
            packed
        } else {
            stored_frame(&plain)
        }
    }

    /// Decompresses and decodes a message, bounded by [`MAX_WIRE`] and [`decoded_bound`].
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_WIRE {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: MAX_WIRE,
            });
        }
        // Our frames always state their decompressed size; it sizes the buffer exactly (a
        // buffer of MAX_DECODED per message would cost a 128 MiB map and unmap per push), and
        // a frame that understates it fails to decompress.
        let size = zstd::zstd_safe::get_frame_content_size(bytes)
            .ok()
            .flatten()
            .ok_or(WireError::Malformed)?;
        let max = decoded_bound(bytes.len());
        let size = usize::try_from(size)
            .ok()
            .filter(|&n| n <= max)
            .ok_or(WireError::TooLarge {
                len: usize::try_from(size).unwrap_or(usize::MAX),
                max,
            })?;
        thread_local! {
            static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        // The thread's context, reused: creating one per message was a visible share of a
        // receiver's CPU at 1 000 pushes a second.
        let plain = DECOMPRESSOR
            .with_borrow_mut(|d| {
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                d.as_mut()?.decompress(bytes, size).ok()
            })
            .ok_or(WireError::Malformed)?;
        postcard::from_bytes(&plain).map_err(|_| WireError::Malformed)
    }
}

/// A zstd frame holding `plain` uncompressed (RFC 8878, section 3.1.1): the magic number, a
/// single-segment header with the 8-byte content size, and raw blocks of at most 128 KiB.
fn stored_frame(plain: &[u8]) -> Vec<u8> {
    const MAGIC: u32 = 0xFD2F_B528;
    /// Frame header descriptor: 8-byte content size field, single segment, no checksum, no
    /// dictionary.
    const DESCRIPTOR: u8 = 0b1110_0000;
    const MAX_BLOCK: usize = 128 * 1024;
    let mut out = Vec::with_capacity(plain.len() + 16 + 3 * plain.len().div_ceil(MAX_BLOCK));
    out.extend(MAGIC.to_le_bytes());
    out.push(DESCRIPTOR);
    out.extend((plain.len() as u64).to_le_bytes());
    let mut blocks = plain.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        // An empty frame still has one (empty, last) block.
        out.extend([1, 0, 0]);
    }
    while let Some(block) = blocks.next() {
        let last = u32::from(blocks.peek().is_none());
        // Block header: last-block bit, type 0 (raw) in bits 1-2, size in bits 3-23.
        let header = last | ((block.len() as u32) << 3);
        out.extend(&header.to_le_bytes()[..3]);
        out.extend(block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::WriterId;

    fn head() -> Head {
        Head {
            cluster: ClusterId([1; 16]),
            key: SegmentKey {
                table: TableId::Events,
                writer: WriterId::from_key(&SigningKey::from_bytes(&[3; 32]).verifying_key()),
                segment: 0,
            },
            seq: 4,
            rows: 10,
            sealed: false,
            hash: [5; 32],
        }
    }

    #[test]
    fn a_head_signed_by_its_writer_verifies() {
        let signed = head().sign(&SigningKey::from_bytes(&[3; 32]));
        assert_eq!(signed.verify(ClusterId([1; 16])), Ok(()));
        assert!(matches!(
            signed.verify(ClusterId([2; 16])),
            Err(HeadError::WrongCluster { .. })
        ));
    }

    #[test]
    fn a_head_signed_by_anyone_else_or_altered_is_refused() {
        let forged = head().sign(&SigningKey::from_bytes(&[4; 32]));
        assert!(matches!(
            forged.verify(ClusterId([1; 16])),
            Err(HeadError::BadSignature { .. })
        ));
        let mut altered = head().sign(&SigningKey::from_bytes(&[3; 32]));
        altered.head.seq += 1;
        assert!(altered.verify(ClusterId([1; 16])).is_err());
    }

    #[test]
    fn garbage_and_oversize_messages_are_refused() {
        assert_eq!(SyncMessage::decode(b"hello"), Err(WireError::Malformed));
        assert!(matches!(
            SyncMessage::decode(&vec![0; MAX_WIRE + 1]),
            Err(WireError::TooLarge { .. })
        ));
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_DECODED + 1], 3).unwrap_or_default();
        assert!(matches!(
            SyncMessage::decode(&bomb),
            Err(WireError::TooLarge { .. })
        ));
        // Within the absolute bound but far past what its size justifies.
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap_or_default();
        assert!(
            bomb.len() * MAX_RATIO < 8 << 20,
            "a bomb: {} bytes",
            bomb.len()
        );
        assert_eq!(
            SyncMessage::decode(&bomb),
            Err(WireError::TooLarge {
                len: 8 << 20,
                max: RATIO_FLOOR
            })
        );
        // A frame that does not state its decompressed size is refused.
        let unsized_frame = {
            let mut c = zstd::bulk::Compressor::new(3).expect("zstd");
            c.include_contentsize(false).expect("zstd");
            c.compress(&postcard::to_allocvec(&SyncMessage::default()).expect("encode"))
                .expect("zstd")
        };
        assert_eq!(
            SyncMessage::decode(&unsized_frame),
            Err(WireError::Malformed)
        );
        assert!(Digest::decode(&[0xff; 10]).is_err());
    }

    #[test]
    fn a_message_that_packs_past_the_ratio_is_stored_and_still_decodes() {
        for len in [0, 1, 300_000, 128 * 1024 * 3, 1 << 20] {
            let msg = SyncMessage {
                items: vec![SyncItem::Changes {
                    head: head().sign(&SigningKey::from_bytes(&[3; 32])),
                    changes: vec![vec![7; len]],
                }],
            };
            let wire = msg.encode();
            let plain = postcard::to_allocvec(&msg).expect("encode").len();
            assert!(
                plain <= decoded_bound(wire.len()),
                "{len}: within the ratio"
            );
            if len >= 300_000 {
                assert!(wire.len() >= plain, "{len}: a stored frame");
            }
            assert_eq!(
                zstd::bulk::decompress(&wire, plain).map(|d| d.len()).ok(),
                Some(plain),
                "{len}: zstd reads it"
            );
            assert_eq!(SyncMessage::decode(&wire), Ok(msg), "{len}");
        }
        assert_eq!(
            zstd::bulk::decompress(&stored_frame(&[]), 0).ok(),
            Some(Vec::new())
        );
    }

    #[test]
    fn the_threads_zstd_contexts_are_reused_with_the_same_results() {
        let message = |len: usize| SyncMessage {
            items: vec![SyncItem::Changes {
                head: head().sign(&SigningKey::from_bytes(&[3; 32])),
                changes: vec![b"session-start user042 srv-0042.corp.example ".repeat(len)],
            }],
        };
        for len in [1, 4, 100, 1000] {
            let m = message(len);
            let plain = postcard::to_allocvec(&m).expect("encode");
            let wire = m.encode();
            assert_eq!(
                wire,
                zstd::bulk::compress(&plain, ZSTD_LEVEL).expect("zstd"),
                "{len}: what a fresh context writes"
            );
            assert_eq!(m.encode(), wire, "{len}: again, on the reused context");
            assert_eq!(SyncMessage::decode(&wire), Ok(m.clone()));
            assert_eq!(SyncMessage::decode(&wire), Ok(m), "{len}: decoded twice");
        }
        // A refused message leaves the reused decoder fit for the next one.
        assert!(SyncMessage::decode(&[0x28, 0xb5, 0x2f, 0xfd, 0xff]).is_err());
        assert!(SyncMessage::decode(&message(3).encode()).is_ok());
    }

    #[test]
    fn messages_round_trip() {
        let msg = SyncMessage {
            items: vec![SyncItem::Changes {
                head: head().sign(&SigningKey::from_bytes(&[3; 32])),
                changes: vec![vec![1, 2, 3]],
            }],
        };
        assert_eq!(SyncMessage::decode(&msg.encode()), Ok(msg));
    }
}
