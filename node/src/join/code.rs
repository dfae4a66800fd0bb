//! Joining codes: seed 002's `ha-create-joining-code` and `ha-initialise`, where the primary
//! hands its MEK to a secondary that has none. Pure: no socket, no clock; randomness is an
//! argument.
//!
//! 1. The secondary (`meshward ha create-joining-code`) makes a one-time X25519 key pair and a
//!    16-byte secret, and shows a [`JoiningCode`]: its pairing address, the public key and the
//!    secret, with a checksum against typing errors. It then waits at the pairing address.
//! 2. The operator gives the code to the primary (`meshward ha initialise --joining-code`),
//!    which creates a joining bundle and [`seal_offer`]s the bundle and the MEK to the code: an
//!    ephemeral X25519 key agreement with the code's key, HKDF-SHA256 salted with the code's
//!    secret, XChaCha20-Poly1305. Only the holder of the code's private key can open the
//!    offer (the MEK is safe from whoever sees the code or the traffic but not both the code
//!    and the secondary's memory), and only who knows the code's secret can make one the
//!    secondary accepts (nobody else can push a bundle and MEK of their choosing).
//! 3. The secondary [`CodeKeys::open`]s it and joins as `meshward join` does, with the
//!    bundle's one-time certificate and a proof of the MEK to the leader's setup endpoint.
//!
//! The code's private key lives in the waiting process's memory only, and both it and the
//! opened MEK are zeroized on drop.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize as _, Zeroizing};

use super::{JoiningBundle, MAX_JOINING_BUNDLE};
use crate::mek::Mek;

/// First characters of a joining code (the 1 is the format).
pub const CODE_PREFIX: &str = "mwjc1-";
/// Longest joining code accepted, in characters.
pub const MAX_CODE: usize = 1024;
/// Largest sealed offer accepted, in bytes.
pub const MAX_OFFER: usize = MAX_JOINING_BUNDLE + 1024;
/// Domain of the key derivation and the offer's associated data.
const DOMAIN: &[u8] = b"meshward/joining-code/v1\0";
/// Bytes of the checksum at the end of a code.
const CHECKSUM: usize = 4;

/// Why a joining code or an offer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// The text is not a joining code.
    #[error("not a joining code: {0}")]
    NotACode(&'static str),
    /// Its checksum does not match: a typing error.
    #[error("the joining code is mistyped (its checksum does not match); copy it again")]
    Checksum,
    /// The offer does not open with this code: another code's, altered, or forged.
    #[error("the offer does not open with this joining code")]
    Offer,
}

/// What a secondary shows: where to reach it and how to seal to it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoiningCode {
    /// The TCP address the secondary waits at (HOST:PORT).
    pub pairing: String,
    /// Its one-time X25519 public key.
    pub public: [u8; 32],
    /// Its one-time secret: who knows it may send an offer.
    secret: [u8; 16],
}

impl std::fmt::Debug for JoiningCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoiningCode")
            .field("pairing", &self.pairing)
            .finish_non_exhaustive()
    }
}

impl Drop for JoiningCode {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl JoiningCode {
    /// The code as text: [`CODE_PREFIX`], then hex of the encoded fields and a checksum.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(postcard::to_allocvec(self).unwrap_or_default());
        let sum = Sha256::digest(bytes.as_slice());
        bytes.extend_from_slice(&sum[..CHECKSUM]);
        Zeroizing::new(format!("{CODE_PREFIX}{}", hex::encode(bytes.as_slice())))
    }

    /// Reads a code as [`JoiningCode::encode`] writes it (surrounding white space ignored).
    pub fn decode(text: &str) -> Result<JoiningCode, CodeError> {
        let text = text.trim();
        if text.len() > MAX_CODE {
            return Err(CodeError::NotACode("it is too long"));
        }
        let hex_part = text
            .strip_prefix(CODE_PREFIX)
            .ok_or(CodeError::NotACode("it does not start with mwjc1-"))?;
        let bytes = Zeroizing::new(
            hex::decode(hex_part).map_err(|_| CodeError::NotACode("it is not hexadecimal"))?,
        );
        let (body, sum) = bytes
            .split_last_chunk::<CHECKSUM>()
            .ok_or(CodeError::NotACode("it is too short"))?;
        if Sha256::digest(body)[..CHECKSUM] != sum[..] {
            return Err(CodeError::Checksum);
        }
        let code: JoiningCode = postcard::from_bytes(body)
            .map_err(|_| CodeError::NotACode("its fields do not decode"))?;
        if code.pairing.is_empty() || code.pairing.len() > 255 {
            return Err(CodeError::NotACode("its pairing address is not an address"));
        }
        Ok(code)
    }
}

/// The secondary's side: the code's private key and the code.
pub struct CodeKeys {
    private: StaticSecret,
    code: JoiningCode,
}

impl std::fmt::Debug for CodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeKeys")
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

/// What an opened offer holds.
#[derive(Serialize, Deserialize)]
struct Offer {
    bundle: Vec<u8>,
    mek_hex: String,
}

impl Drop for Offer {
    fn drop(&mut self) {
        self.bundle.zeroize();
        self.mek_hex.zeroize();
    }
}

impl CodeKeys {
    /// A fresh key pair and secret for a secondary waiting at `pairing` (HOST:PORT).
    pub fn generate(pairing: String, rng: &mut (impl RngCore + CryptoRng)) -> CodeKeys {
        let private = StaticSecret::random_from_rng(&mut *rng);
        let mut secret = [0u8; 16];
        rng.fill_bytes(&mut secret);
        let code = JoiningCode {
            pairing,
            public: PublicKey::from(&private).to_bytes(),
            secret,
        };
        CodeKeys { private, code }
    }

    /// The code to show.
    pub fn code(&self) -> &JoiningCode {
        &self.code
    }

    /// Opens an offer sealed to this code: the joining bundle and the MEK. Any failure is
    /// [`CodeError::Offer`] (nothing tells a forger which part failed).
    pub fn open(&self, offer: &[u8]) -> Result<(JoiningBundle, Mek), CodeError> {
        if offer.len() > MAX_OFFER || offer.len() < 32 + 24 {
            return Err(CodeError::Offer);
        }
        let (ephemeral, rest) = offer.split_at(32);
        let (nonce, sealed) = rest.split_at(24);
        let ephemeral: [u8; 32] = ephemeral.try_into().map_err(|_| CodeError::Offer)?;
        let shared = self.private.diffie_hellman(&PublicKey::from(ephemeral));
        if !shared.was_contributory() {
            return Err(CodeError::Offer);
        }
        let cipher = cipher(&self.code, &ephemeral, shared.as_bytes());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad(&ephemeral),
                    },
                )
                .map_err(|_| CodeError::Offer)?,
        );
        let offer: Offer = postcard::from_bytes(&plain).map_err(|_| CodeError::Offer)?;
        let bundle = JoiningBundle::decode(&offer.bundle).map_err(|_| CodeError::Offer)?;
        let mek = Mek::parse(&offer.mek_hex, "the offer").map_err(|_| CodeError::Offer)?;
        Ok((bundle, mek))
    }
}

/// The primary's side: `bundle` (a joining bundle file's bytes) and `mek` sealed to `code`.
pub fn seal_offer(
    code: &JoiningCode,
    bundle: &[u8],
    mek: &Mek,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<u8> {
    let ephemeral = StaticSecret::random_from_rng(&mut *rng);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(code.public));
    let cipher = cipher(code, &ephemeral_public, shared.as_bytes());
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let offer = Offer {
        bundle: bundle.to_vec(),
        mek_hex: mek.to_hex().to_string(),
    };
    let plain = Zeroizing::new(postcard::to_allocvec(&offer).unwrap_or_default());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad(&ephemeral_public),
            },
        )
        .unwrap_or_default();
    [&ephemeral_public[..], &nonce, &sealed].concat()
}

/// The offer's cipher: HKDF-SHA256 over the key agreement, salted with the code's secret,
/// bound to both public keys and the pairing address.
fn cipher(code: &JoiningCode, ephemeral: &[u8; 32], shared: &[u8; 32]) -> XChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(&code.secret), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    let info = [DOMAIN, ephemeral, &code.public, code.pairing.as_bytes()].concat();
    // 32 bytes is far below HKDF-SHA256's limit.
    let _ = hk.expand(&info, key.as_mut_slice());
    XChaCha20Poly1305::new(key.as_slice().into())
}

fn aad(ephemeral: &[u8; 32]) -> Vec<u8> {
    [DOMAIN, ephemeral].concat()
}

#[cfg(test)]
mod tests;
