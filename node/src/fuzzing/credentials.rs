//! Credential rotation rows as a fuzz target.

use meshward_crdt::rotation::{Hlc, Rotation, RotationKind};
use meshward_crdt::{Row, TableId};

use super::*;

/// A credential rotation row ([`meshward_crdt::rotation`]) as a peer's `rotations` row: one
/// that decodes has its sealed secret opened (with the targets' MEK, as its writer's rotation)
/// and a rotation drafted over it; the bytes as text are read as a version and an address.
pub fn credential_row(data: &[u8]) {
    if let Ok(Row::Rotation(r)) = Row::decode(TableId::Rotations, data) {
        let writer = WriterId::from_key(&key(3).verifying_key());
        let _ = crate::credentials::open(&mek(), CLUSTER, &r.address, &writer, r.hlc, &r.sealed);
        let me = WriterId::from_key(&key(1).verifying_key());
        let address = r.address.clone();
        let _ = crate::credentials::Draft::new(vec![(writer, r.clone())], &address, &me, 0).ops(r);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Hlc>();
        let _ = meshward_crdt::rotation::check_address(text);
    }
}

/// Rotation rows of the credential target: one sealed by its MEK, one with another's.
pub(super) fn credential_rows() -> Vec<Vec<u8>> {
    let writer = WriterId::from_key(&key(3).verifying_key());
    let hlc = Hlc { ms: 5, counter: 1 };
    let address = "ns1/db-01/root";
    [
        mek(),
        Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2)),
    ]
    .iter()
    .map(|m| {
        Row::Rotation(Rotation {
            address: address.into(),
            hlc,
            seen: vec![(WriterId::from_key(&key(1).verifying_key()), Hlc::default())],
            sealed: crate::credentials::seal(m, CLUSTER, address, &writer, hlc, b"s3cret"),
            at_ms: 5,
            reason: "scheduled".into(),
            user: "user ada".into(),
            how: RotationKind::Generated,
        })
        .encode()
    })
    .collect()
}
