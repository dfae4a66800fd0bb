//! Serde for byte vectors as bytes: `#[serde(with = "meshward_crdt::bytes")]` on a `Vec<u8>`,
//! `#[serde(with = "meshward_crdt::bytes::list")]` on a `Vec<Vec<u8>>`.
//!
//! Serde derives a `Vec<u8>` as a sequence of `u8`, written and read one element at a time.
//! Postcard encodes a sequence of `u8` and a byte string the same way (a varint length, then
//! the bytes), so these write and read the very same encoding, only in one copy: a field may
//! switch to them without changing its wire or stored format. Deserializers that hand a
//! sequence (JSON's arrays of numbers) are read as before.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serialize, Serializer};

/// Writes `bytes` as a byte string.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Reads a byte string, or a sequence of `u8`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The hint comes from the input: bounded, not trusted for a large allocation.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// The same for a list of byte vectors.
pub mod list {
    use super::*;

    struct AsBytes<'a>(&'a [u8]);

    impl Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    struct Item(Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Item, D::Error> {
            super::deserialize(deserializer).map(Item)
        }
    }

    /// Writes each item as a byte string.
    pub fn serialize<S: Serializer>(items: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|b| AsBytes(b)))
    }

    /// Reads a sequence of byte strings (or of sequences of `u8`).
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Vec<Vec<u8>>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Vec<u8>>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(Item(b)) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        one: Vec<u8>,
        many: Vec<Vec<u8>>,
        after: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast {
        #[serde(with = "crate::bytes")]
        one: Vec<u8>,
        #[serde(with = "crate::bytes::list")]
        many: Vec<Vec<u8>>,
        after: u32,
    }

    proptest! {
        /// The same postcard encoding either way, and each reads the other's.
        #[test]
        fn bytes_encode_exactly_as_a_sequence_of_u8(
            one in proptest::collection::vec(any::<u8>(), 0..300),
            many in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..5),
            after in any::<u32>(),
        ) {
            let plain = Plain { one: one.clone(), many: many.clone(), after };
            let fast = Fast { one, many, after };
            let a = postcard::to_stdvec(&plain).unwrap();
            let b = postcard::to_stdvec(&fast).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(postcard::from_bytes::<Fast>(&a).unwrap(), fast);
            prop_assert_eq!(postcard::from_bytes::<Plain>(&b).unwrap(), plain);
        }

        /// Garbage is an error, never a panic or a large allocation.
        #[test]
        fn garbage_is_refused_or_read_within_its_length(
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(fast) = postcard::from_bytes::<Fast>(&data) {
                prop_assert!(fast.one.len() + fast.many.iter().map(Vec::len).sum::<usize>() <= data.len());
            }
        }
    }
}
