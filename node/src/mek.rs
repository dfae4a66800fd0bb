//! The Master Encryption Key (MEK): the cluster secret that proves membership at join time and
//! seals secrets at rest.
//!
//! `init` generates 32 random bytes, shows them once and writes them to a 0600 file that the
//! operator moves to a vault. The MEK never crosses the network and is never logged: a joiner
//! proves it holds the MEK by answering a fresh challenge ([`Mek::challenge_answer`]), and
//! everything else uses keys derived from it with HKDF-SHA256 under a purpose label
//! ([`Mek::derive`]), never the MEK itself. Secrets at rest (mastered secrets, backups) are
//! sealed with XChaCha20-Poly1305 under such a key ([`Mek::seal`], [`Mek::open`]).
//!
//! # File format
//! UTF-8 text of at most [`MAX_MEK_FILE`] bytes: lines starting with `#` are comments, and
//! exactly one other non-empty line holds the 64 hexadecimal digits of the key.

use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, OsRng, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// File name of a node's MEK inside its data directory (`DATA/mek`, mode 0600). A node
/// without it starts sealed.
pub const MEK_FILE: &str = "mek";

/// Largest MEK file accepted.
pub const MAX_MEK_FILE: u64 = 4096;

/// HKDF salt: fixes the derivation to this protocol version.
const SALT: &[u8] = b"meshward/mek/v1";

/// HKDF label of the key that answers join challenges.
const CHALLENGE_LABEL: &[u8] = b"join-challenge";

/// First byte of a sealed blob: the sealing format.
const SEAL_FORMAT: u8 = 1;

/// Bytes a sealed blob adds to its plaintext: format byte, 24-byte nonce, 16-byte tag.
pub const SEAL_OVERHEAD: usize = 1 + 24 + 16;

/// The Master Encryption Key. Zeroed on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Mek([u8; 32]);

/// Why a MEK file could not be read or written. Nothing was written unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum MekError {
    /// The file could not be opened, read or created.
    #[error("MEK file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but does not hold one MEK.
    #[error("MEK file {path} is not a meshward MEK: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What was wrong (never the file's contents).
        reason: &'static str,
    },
}

/// A sealed blob was refused: wrong MEK, wrong purpose or context, or altered bytes. The
/// causes are deliberately not told apart.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sealed data could not be opened: wrong MEK, or the data was altered")]
pub struct OpenError;

impl fmt::Debug for Mek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mek(..)")
    }
}

impl Mek {
    /// A fresh random MEK.
    pub fn generate(rng: &mut impl RngCore) -> Mek {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Mek(key)
    }

    /// Reads a MEK file (see the module docs for its format).
    pub fn load(path: &Path) -> Result<Mek, MekError> {
        let io = |source| MekError::Io {
            path: path.display().to_string(),
            source,
        };
        let bad = |reason| MekError::Malformed {
            path: path.display().to_string(),
            reason,
        };
        let bytes = Zeroizing::new(
            crate::disk::read_at_most(path, MAX_MEK_FILE)
                .map_err(io)?
                .ok_or_else(|| bad("larger than 4 KiB"))?,
        );
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8 text"))?;
        Mek::parse(text, &path.display().to_string())
    }

    /// Reads the text of a MEK file (see the module docs for its format); `origin` names it
    /// in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Mek, MekError> {
        let bad = |reason| MekError::Malformed {
            path: origin.to_string(),
            reason,
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(|| bad("no key line"))?;
        if lines.next().is_some() {
            return Err(bad("more than one key line"));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(line, &mut key).map_err(|_| bad("key line is not 64 hex digits"))?;
        Ok(Mek(key))
    }

    /// Writes the MEK to a new file created with mode 0600; refuses to overwrite anything or
    /// to follow a link ([`crate::disk::write_new`]).
    pub fn write_new(&self, path: &Path) -> Result<(), MekError> {
        let text = Zeroizing::new(format!(
            "# meshward Master Encryption Key. Store it in a vault; joins and restores need it.\n{}\n",
            self.to_hex().as_str()
        ));
        crate::disk::write_new(path, text.as_bytes(), 0o600).map_err(|source| MekError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// The key as 64 hex digits, for showing once at `init`.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// A 32-byte key for one purpose, derived with HKDF-SHA256 (salt `meshward/mek/v1`,
    /// info `label`). Different labels give independent keys.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(SALT), &self.0)
            .expand(label, out.as_mut())
            // Invariant: 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
            .expect("32-byte HKDF output");
        out
    }

    /// The answer to a join challenge: HMAC-SHA256 under the derived challenge key over the
    /// leader's fresh `nonce` and the `context` (what the answer is bound to, e.g. the bundle
    /// id and the joiner's key), so an answer is good for one nonce and one joiner only.
    pub fn challenge_answer(&self, nonce: &[u8; 32], context: &[u8]) -> [u8; 32] {
        self.challenge_mac(nonce, context)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `answer` answers the challenge, compared in constant time.
    pub fn check_answer(&self, nonce: &[u8; 32], context: &[u8], answer: &[u8]) -> bool {
        self.challenge_mac(nonce, context)
            .verify_slice(answer)
            .is_ok()
    }

    /// Seals `plaintext` for one `purpose` (an HKDF label, e.g. `b"backup"`), bound to `aad`
    /// (authenticated, not secret, e.g. a cluster id): format byte, random 24-byte nonce,
    /// XChaCha20-Poly1305 ciphertext and tag.
    pub fn seal(&self, purpose: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = self.cipher(purpose);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encrypted in place in the output: one copy of the plaintext, one allocation.
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.push(SEAL_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, aad, &mut out[1 + nonce.len()..])
            // Invariant: XChaCha20-Poly1305 fails only for messages over 256 GiB.
            .expect("plaintext within the AEAD's limit");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens what [`Mek::seal`] sealed with the same MEK, `purpose` and `aad`.
    pub fn open(
        &self,
        purpose: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD || sealed[0] != SEAL_FORMAT {
            return Err(OpenError);
        }
        let nonce = XNonce::from_slice(&sealed[1..25]);
        self.cipher(purpose)
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[25..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError)
    }

    fn cipher(&self, purpose: &[u8]) -> XChaCha20Poly1305 {
        let mut label = b"seal/".to_vec();
        label.extend_from_slice(purpose);
        XChaCha20Poly1305::new(self.derive(&label).as_ref().into())
    }

    fn challenge_mac(&self, nonce: &[u8; 32], context: &[u8]) -> Hmac<Sha256> {
        let key = self.derive(CHALLENGE_LABEL);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref())
            // Invariant: HMAC accepts keys of any length.
            .expect("HMAC key of any length");
        mac.update(nonce);
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context);
        mac
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn mek(seed: u64) -> Mek {
        Mek::generate(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn written_file_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mek");
        let key = mek(1);
        key.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Mek::load(&path).unwrap().0, key.0);
        let err = key.write_new(&path).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
    }

    #[test]
    fn refuses_files_that_do_not_hold_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mek");
        let cases: [&[u8]; 6] = [
            b"",
            b"# only a comment\n",
            b"abcd\n",
            &[0xff, 0xfe, 0x00],
            b"00000000000000000000000000000000000000000000000000000000000000zz\n",
            b"0000000000000000000000000000000000000000000000000000000000000000\n\
              1111111111111111111111111111111111111111111111111111111111111111\n",
        ];
        for case in cases {
            std::fs::write(&path, case).unwrap();
            let err = Mek::load(&path).unwrap_err();
            assert!(matches!(err, MekError::Malformed { .. }), "{case:?}: {err}");
        }
        std::fs::write(&path, vec![b'0'; 5000]).unwrap();
        assert!(Mek::load(&path).unwrap_err().to_string().contains("4 KiB"));
        // A device that never ends (its size reads as 0) is read only past the limit.
        let endless = Mek::load(Path::new("/dev/zero")).unwrap_err();
        assert!(endless.to_string().contains("4 KiB"), "{endless}");
        let missing = Mek::load(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(missing, MekError::Io { .. }));
    }

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let key = mek(2);
        assert_eq!(format!("{key:?}"), "Mek(..)");
        let hex = key.to_hex();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mek");
        std::fs::write(&path, format!("{}\n{}\n", hex.as_str(), hex.as_str())).unwrap();
        let err = Mek::load(&path).unwrap_err().to_string();
        assert!(!err.contains(&hex[..16]), "{err}");
    }

    #[test]
    fn challenge_answer_binds_key_nonce_and_context() {
        let key = mek(3);
        let nonce = [7u8; 32];
        let answer = key.challenge_answer(&nonce, b"bundle-1/joiner-a");
        assert!(key.check_answer(&nonce, b"bundle-1/joiner-a", &answer));
        assert!(!key.check_answer(&[8u8; 32], b"bundle-1/joiner-a", &answer));
        assert!(!key.check_answer(&nonce, b"bundle-1/joiner-b", &answer));
        assert!(!mek(4).check_answer(&nonce, b"bundle-1/joiner-a", &answer));
        assert!(!key.check_answer(&nonce, b"bundle-1/joiner-a", &answer[..31]));
    }

    #[test]
    fn sealed_data_opens_only_with_the_same_key_purpose_and_context() {
        let key = mek(6);
        let sealed = key.seal(b"backup", b"cluster-a", b"the store");
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 9);
        assert_eq!(
            key.open(b"backup", b"cluster-a", &sealed)
                .unwrap()
                .as_slice(),
            b"the store"
        );
        assert_eq!(
            mek(7).open(b"backup", b"cluster-a", &sealed),
            Err(OpenError)
        );
        assert_eq!(key.open(b"ca-key", b"cluster-a", &sealed), Err(OpenError));
        assert_eq!(key.open(b"backup", b"cluster-b", &sealed), Err(OpenError));
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(
                key.open(b"backup", b"cluster-a", &altered),
                Err(OpenError),
                "byte {i}"
            );
        }
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(
                key.open(b"backup", b"cluster-a", &sealed[..len]),
                Err(OpenError)
            );
        }
        assert_ne!(
            sealed,
            key.seal(b"backup", b"cluster-a", b"the store"),
            "fresh nonce"
        );
    }

    #[test]
    fn derived_keys_differ_by_label_and_never_equal_the_mek() {
        let key = mek(5);
        let a = key.derive(b"backup");
        let b = key.derive(b"join-challenge");
        assert_ne!(*a, *b);
        assert_ne!(*a, key.0);
        assert_eq!(*a, *key.derive(b"backup"));
    }
}
