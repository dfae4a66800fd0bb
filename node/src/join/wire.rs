//! The setup protocol's messages: what a joiner and the leader's setup endpoint say to each
//! other (`meshward_transport::setup` carries them as opaque frames).
//!
//! Each is postcard, one [`SetupRequest`] up and one [`SetupResponse`] down per stream. The
//! enums only grow at the end, so older peers keep decoding the variants they know (postcard
//! encodes the variant index). [`SetupResponse::Refused`] and [`SetupResponse::Joined`] end
//! the connection ([`SetupResponse::ends`]).

use serde::{Deserialize, Serialize};

/// Largest setup request accepted for decoding.
pub const MAX_SETUP_REQUEST: usize = 64 * 1024;
/// Largest setup response accepted for decoding (it carries the whole mastered chain).
pub const MAX_SETUP_RESPONSE: usize = 16 * 1024 * 1024;

/// A request to a node's setup endpoint. `Debug` never shows a challenge answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetupRequest {
    /// A joiner of an older meshward introduces itself. It does not say which cluster its
    /// bundle is for, so a leader refuses it (asking for an upgrade): use
    /// [`SetupRequest::JoinHelloV2`].
    JoinHello {
        /// The joiner's ed25519 node key (its mesh identity).
        node_key: [u8; 32],
        /// The joiner's node address (FQDN or IP, optionally with the mesh port).
        address: String,
        /// The raw public key (uncompressed P-256 point) its node certificate should carry.
        tls_key: Vec<u8>,
    },
    /// The joiner's answer to the challenge of this connection.
    JoinAnswer {
        /// HMAC of the nonce under the MEK's challenge key (see [`crate::mek::Mek::challenge_answer`]).
        answer: [u8; 32],
        /// ed25519 signature by the node key over the join transcript (proof of possession).
        signature: Vec<u8>,
    },
    /// A joiner (connected with the bundle's client certificate) introduces itself, says which
    /// cluster its bundle is for, and asks for a MEK challenge. The leader refuses a bundle of
    /// another cluster (an altered one) here, before it commits anything.
    JoinHelloV2 {
        /// The joiner's ed25519 node key (its mesh identity).
        node_key: [u8; 32],
        /// The joiner's node address (FQDN or IP, optionally with the mesh port).
        address: String,
        /// The raw public key (uncompressed P-256 point) its node certificate should carry.
        tls_key: Vec<u8>,
        /// The cluster id the bundle names.
        cluster: [u8; 16],
        /// The genesis leader key the bundle names.
        genesis_leader: [u8; 32],
        /// SHA-256 of the cluster CA certificate (DER) the bundle pins.
        ca_cert: [u8; 32],
    },
}

impl std::fmt::Debug for SetupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupRequest::JoinHello {
                node_key, address, ..
            } => f
                .debug_struct("JoinHello")
                .field("node_key", &hex(node_key))
                .field("address", address)
                .finish_non_exhaustive(),
            // The answer proves the MEK for one nonce: never shown.
            SetupRequest::JoinAnswer { .. } => f.debug_struct("JoinAnswer").finish_non_exhaustive(),
            SetupRequest::JoinHelloV2 {
                node_key,
                address,
                cluster,
                ..
            } => f
                .debug_struct("JoinHelloV2")
                .field("node_key", &hex(node_key))
                .field("address", address)
                .field("cluster", &hex(cluster))
                .finish_non_exhaustive(),
        }
    }
}

/// Lowercase hex, for `Debug`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A setup endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetupResponse {
    /// A fresh nonce to answer with the MEK; good for this connection and one answer only.
    /// Sent by older leaders; a joiner now expects [`SetupResponse::ChallengeV2`].
    Challenge {
        /// The nonce.
        nonce: [u8; 32],
    },
    /// The joiner was admitted.
    Joined {
        /// The cluster id (trust anchor).
        cluster: [u8; 16],
        /// The genesis leader's key (trust anchor).
        genesis_leader: [u8; 32],
        /// Every mastered record, encoded, in version order.
        records: Vec<Vec<u8>>,
        /// The joiner's node certificate (DER), issued by the cluster CA.
        node_cert: Vec<u8>,
    },
    /// The request was refused; the reason is meant for the operator.
    Refused {
        /// Why, and what to do.
        reason: String,
    },
    /// The answer to [`SetupRequest::JoinHelloV2`]: a fresh nonce (as [`SetupResponse::Challenge`]) and
    /// the leader's own cluster, which the joiner compares with its bundle before it answers.
    ChallengeV2 {
        /// The nonce.
        nonce: [u8; 32],
        /// The leader's cluster id.
        cluster: [u8; 16],
        /// The leader's genesis leader key.
        genesis_leader: [u8; 32],
        /// SHA-256 of the leader's cluster CA certificate (DER).
        ca_cert: [u8; 32],
    },
}

impl SetupRequest {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a request, refusing oversize or malformed bytes.
    pub fn decode(bytes: &[u8]) -> Option<SetupRequest> {
        if bytes.len() > MAX_SETUP_REQUEST {
            return None;
        }
        postcard::from_bytes(bytes).ok()
    }
}

impl SetupResponse {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a response, refusing oversize or malformed bytes.
    pub fn decode(bytes: &[u8]) -> Option<SetupResponse> {
        if bytes.len() > MAX_SETUP_RESPONSE {
            return None;
        }
        postcard::from_bytes(bytes).ok()
    }

    /// Whether the connection ends with this answer: `Some(Ok(()))` when the joiner was
    /// admitted, `Some(Err(reason))` when it was refused, `None` when it goes on.
    pub fn ends(&self) -> Option<Result<(), &str>> {
        match self {
            SetupResponse::Challenge { .. } | SetupResponse::ChallengeV2 { .. } => None,
            SetupResponse::Joined { .. } => Some(Ok(())),
            SetupResponse::Refused { reason } => Some(Err(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_or_oversize_bytes_do_not_decode() {
        let request = SetupRequest::JoinAnswer {
            answer: [7; 32],
            signature: vec![1; 64],
        };
        assert_eq!(SetupRequest::decode(&request.encode()), Some(request));
        let response = SetupResponse::Refused {
            reason: "no".into(),
        };
        assert_eq!(SetupResponse::decode(&response.encode()), Some(response));
        assert_eq!(SetupRequest::decode(&[0xff; 40]), None);
        assert_eq!(SetupResponse::decode(&[0xff; 40]), None);
        assert_eq!(SetupRequest::decode(&vec![0; MAX_SETUP_REQUEST + 1]), None);
    }

    #[test]
    fn old_variants_keep_their_place() {
        // Older peers decode the variants they know: new ones only grow at the end.
        let answer = SetupRequest::JoinAnswer {
            answer: [0; 32],
            signature: vec![],
        };
        assert_eq!(answer.encode()[0], 1);
        let hello = SetupRequest::JoinHelloV2 {
            node_key: [1; 32],
            address: "n".into(),
            tls_key: vec![],
            cluster: [2; 16],
            genesis_leader: [3; 32],
            ca_cert: [4; 32],
        };
        assert_eq!(hello.encode()[0], 2);
        let challenge = SetupResponse::ChallengeV2 {
            nonce: [0; 32],
            cluster: [0; 16],
            genesis_leader: [0; 32],
            ca_cert: [0; 32],
        };
        assert_eq!(challenge.encode()[0], 3);
    }

    #[test]
    fn debug_never_shows_a_challenge_answer() {
        let shown = format!(
            "{:?}",
            SetupRequest::JoinAnswer {
                answer: [0xab; 32],
                signature: vec![0xcd; 64],
            }
        );
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
    }
}
