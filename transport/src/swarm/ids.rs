//! Writer ids and libp2p peer ids, socket addresses and multiaddrs, each way.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};

use libp2p::identity;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tracing::warn;

use crate::WriterId;

/// The libp2p peer id of a writer; `None` if the bytes are not an ed25519 public key.
pub(crate) fn peer_id(writer: &WriterId) -> Option<PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(&writer.0).ok()?;
    Some(identity::PublicKey::from(key).to_peer_id())
}

/// The writer id of a peer: an ed25519 peer id is the identity multihash of its protobuf
/// public key, so the key is read back from the peer id itself.
pub(crate) fn writer_id(peer: &PeerId) -> Option<WriterId> {
    /// Multihash code of the identity "hash" (the bytes themselves).
    const IDENTITY: u64 = 0x00;
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY {
        return None;
    }
    let key = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(WriterId(key.try_into_ed25519().ok()?.to_bytes()))
}

pub(crate) fn peer_ids(writers: &BTreeSet<WriterId>) -> HashSet<PeerId> {
    writers
        .iter()
        .filter_map(|writer| {
            let peer = peer_id(writer);
            if peer.is_none() {
                warn!(writer = %writer, "roster entry is not an ed25519 public key; skipped");
            }
            peer
        })
        .collect()
}

pub(crate) fn to_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::from(addr.ip()))
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

pub(crate) fn to_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
            Protocol::Udp(p) => port = Some(p),
            _ => {}
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn writer_and_peer_ids_map_both_ways() {
        let keypair = Keypair::ed25519_from_bytes([7u8; 32]).expect("valid secret");
        let peer = keypair.public().to_peer_id();
        let writer = writer_id(&peer).expect("ed25519 peer");
        assert_eq!(peer_id(&writer), Some(peer));
    }

    #[test]
    fn socket_addresses_round_trip_through_multiaddrs() {
        for addr in ["127.0.0.1:7946", "[::1]:9"] {
            let addr: SocketAddr = addr.parse().expect("valid");
            assert_eq!(to_socket_addr(&to_multiaddr(addr)), Some(addr));
        }
    }
}
