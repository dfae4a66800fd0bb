//! Credential secrets at rest: sealed under a key derived from the cluster's MEK, bound to
//! the rotation they belong to, and generated from a stated alphabet.
//!
//! A rotation's secret is sealed with [`Mek::seal`] under the purpose [`SEAL_PURPOSE`] (the
//! HKDF-SHA256 label `seal/credential`, its own key, independent of the backup's), with the
//! associated data [`aad`]: the cluster id, the account address, the writer and the HLC. So a
//! sealed blob opens only as the rotation it was made for: copied into another account's
//! row, another version or another writer's row, it is refused. Every node of a cluster holds
//! the same MEK, so any node opens any rotation; the MEK never leaves the node.
//!
//! Plain secrets live in [`Zeroizing`] buffers, wiped when dropped, and are never logged.

use meshward_crdt::rotation::{self, Hlc, MAX_SECRET, Rotation};
use meshward_crdt::{ClusterId, MAX_OPS_PER_COMMIT, Op, WriterId};
use rand::Rng;
use zeroize::Zeroizing;

use crate::mek::{Mek, OpenError};

/// The HKDF purpose of the credential sealing key.
pub const SEAL_PURPOSE: &[u8] = b"credential";

/// The characters of a generated secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    /// `A-Z a-z 0-9`.
    Alnum,
    /// `0-9 a-f`.
    Hex,
    /// ASCII `!` to `~` (no space).
    Printable,
}

impl Alphabet {
    /// Every name, for messages.
    pub const NAMES: &'static str = "alnum, hex, printable";

    /// Parses `alnum`, `hex` or `printable`.
    pub fn parse(name: &str) -> Option<Alphabet> {
        match name {
            "alnum" => Some(Alphabet::Alnum),
            "hex" => Some(Alphabet::Hex),
            "printable" => Some(Alphabet::Printable),
            _ => None,
        }
    }

    fn chars(self) -> Vec<u8> {
        match self {
            Alphabet::Alnum => (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .collect(),
            Alphabet::Hex => (b'0'..=b'9').chain(b'a'..=b'f').collect(),
            Alphabet::Printable => (b'!'..=b'~').collect(),
        }
    }
}

/// A random secret of `length` characters of `alphabet`, each drawn uniformly from `rng`.
pub fn generate(rng: &mut impl Rng, length: usize, alphabet: Alphabet) -> Zeroizing<String> {
    let chars = alphabet.chars();
    let mut out = Zeroizing::new(String::with_capacity(length));
    for _ in 0..length {
        out.push(char::from(chars[rng.gen_range(0..chars.len())]));
    }
    out
}

/// What a new rotation of an account by a node is made from, given every rotation the node
/// holds (of every account) and its wall clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    /// Its version: past every HLC the node holds, at least the wall clock.
    pub hlc: Hlc,
    /// What the node has seen of the account.
    pub seen: Vec<(WriterId, Hlc)>,
    /// The node's own rotations of the account to delete with it (retention).
    pub expired: Vec<Hlc>,
}

impl Draft {
    /// The draft of a rotation of `address` by `me` at `now_ms`, over the rotations `held`.
    pub fn new(
        held: Vec<(WriterId, Rotation)>,
        address: &str,
        me: &WriterId,
        now_ms: i64,
    ) -> Draft {
        let all = rotation::accounts(held);
        let newest = all.values().filter_map(rotation::Account::newest).max();
        let account = all.get(address).cloned().unwrap_or_default();
        Draft {
            hlc: Hlc::next(now_ms, newest),
            seen: account.seen_by(me),
            expired: account.expired(me),
        }
    }

    /// The commit's ops: the new row, then the deletions (within one commit's bound).
    pub fn ops(&self, row: Rotation) -> Vec<Op> {
        let address = row.address.clone();
        let mut ops = vec![Op::PutRotation(row)];
        ops.extend(
            self.expired
                .iter()
                .take(MAX_OPS_PER_COMMIT - 1)
                .map(|&hlc| Op::DeleteRotation {
                    address: address.clone(),
                    hlc,
                }),
        );
        ops
    }
}

/// What a sealed secret is bound to: `meshward/credential/v1`, the cluster, the address's
/// length and bytes, the writer and the HLC.
pub fn aad(cluster: ClusterId, address: &str, writer: &WriterId, hlc: Hlc) -> Vec<u8> {
    let mut out = b"meshward/credential/v1".to_vec();
    out.extend(cluster.0);
    out.extend((address.len() as u64).to_be_bytes());
    out.extend(address.as_bytes());
    out.extend(writer.0);
    out.extend(hlc.ms.to_be_bytes());
    out.extend(hlc.counter.to_be_bytes());
    out
}

/// Seals `secret` for the rotation `(address, writer, hlc)` of `cluster`.
pub fn seal(
    mek: &Mek,
    cluster: ClusterId,
    address: &str,
    writer: &WriterId,
    hlc: Hlc,
    secret: &[u8],
) -> Vec<u8> {
    debug_assert!(secret.len() <= MAX_SECRET);
    mek.seal(SEAL_PURPOSE, &aad(cluster, address, writer, hlc), secret)
}

/// Opens what [`seal`] sealed for exactly this rotation.
pub fn open(
    mek: &Mek,
    cluster: ClusterId,
    address: &str,
    writer: &WriterId,
    hlc: Hlc,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    mek.open(SEAL_PURPOSE, &aad(cluster, address, writer, hlc), sealed)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const CLUSTER: ClusterId = ClusterId([4; 16]);
    const W: WriterId = WriterId([1; 32]);
    const ADDRESS: &str = "ns1/db-01/root";

    fn mek(seed: u64) -> Mek {
        Mek::generate(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    fn hlc(ms: i64, counter: u32) -> Hlc {
        Hlc { ms, counter }
    }

    #[test]
    fn a_sealed_secret_opens_only_as_its_own_rotation() {
        let m = mek(1);
        let sealed = seal(&m, CLUSTER, ADDRESS, &W, hlc(5, 1), b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "never plain");
        let opened = open(&m, CLUSTER, ADDRESS, &W, hlc(5, 1), &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"hunter2");
        // Replayed under another account, version, writer or cluster: refused.
        for (address, writer, h, cluster) in [
            ("ns1/db-01/admin", W, hlc(5, 1), CLUSTER),
            (ADDRESS, W, hlc(5, 2), CLUSTER),
            (ADDRESS, W, hlc(6, 1), CLUSTER),
            (ADDRESS, WriterId([2; 32]), hlc(5, 1), CLUSTER),
            (ADDRESS, W, hlc(5, 1), ClusterId([5; 16])),
        ] {
            assert_eq!(
                open(&m, cluster, address, &writer, h, &sealed),
                Err(OpenError)
            );
        }
        // Another MEK: refused.
        assert_eq!(
            open(&mek(2), CLUSTER, ADDRESS, &W, hlc(5, 1), &sealed),
            Err(OpenError)
        );
    }

    #[test]
    fn a_tampered_blob_is_refused() {
        let m = mek(1);
        let sealed = seal(&m, CLUSTER, ADDRESS, &W, hlc(5, 1), b"hunter2");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                open(&m, CLUSTER, ADDRESS, &W, hlc(5, 1), &bad).is_err(),
                "byte {i}"
            );
        }
        assert!(open(&m, CLUSTER, ADDRESS, &W, hlc(5, 1), &sealed[..20]).is_err());
        assert!(open(&m, CLUSTER, ADDRESS, &W, hlc(5, 1), &[]).is_err());
    }

    #[test]
    fn generated_secrets_have_the_length_and_alphabet_asked() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (alphabet, ok) in [
            (
                Alphabet::Alnum,
                (|c: char| c.is_ascii_alphanumeric()) as fn(char) -> bool,
            ),
            (Alphabet::Hex, |c: char| {
                c.is_ascii_digit() || ('a'..='f').contains(&c)
            }),
            (Alphabet::Printable, |c: char| c.is_ascii_graphic()),
        ] {
            let s = generate(&mut rng, 40, alphabet);
            assert_eq!(s.len(), 40);
            assert!(s.chars().all(ok), "{alphabet:?}");
        }
        let a = generate(&mut rng, 32, Alphabet::Alnum);
        let b = generate(&mut rng, 32, Alphabet::Alnum);
        assert_ne!(a, b);
        assert_eq!(Alphabet::parse("hex"), Some(Alphabet::Hex));
        assert_eq!(Alphabet::parse("base64"), None);
    }
}
