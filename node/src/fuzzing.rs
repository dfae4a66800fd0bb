//! Entry points that feed arbitrary bytes to every wire and file decoder, and to what consumes
//! the decoded value. The cargo-fuzz targets in `fuzz/` call them, and so do the stable
//! "garbage never panics" tests below, so both exercise the same paths. Each returns normally
//! whatever the bytes are; a panic is a bug.

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use meshward_crdt::mastered::{
    Chain, Handover, Member, RecordKind, Roster, SignedRecord, TrustAnchor,
};
use meshward_crdt::{ClusterId, Digest, Replica, ReplicaConfig, SyncMessage, WriterId};
use redb::{ReadableDatabase, TableDefinition};

use crate::audit::AuditLog;
use crate::backup::{ArchiveReader, read_snapshot};
use crate::certs::Serial;
use crate::core::{Ask, Core, CoreConfig, Gossip, Input, Reply};
use crate::grants::{Grant, UserChange, UserName};
use crate::mek::Mek;
use crate::roster::MasteredBundle;
use crate::store::Store;

const CLUSTER: ClusterId = ClusterId([7; 16]);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn anchor() -> TrustAnchor {
    TrustAnchor {
        cluster: CLUSTER,
        genesis_leader: key(1).verifying_key().to_bytes(),
    }
}

/// A sync message: decoded, then each item applied to a fresh replica; also read as a digest
/// and answered.
pub fn sync_message(data: &[u8]) {
    let mut replica = Replica::new(CLUSTER, key(2), ReplicaConfig::default());
    if let Ok(message) = SyncMessage::decode(data) {
        for item in message.items {
            let _ = replica.apply(item);
        }
    }
    if let Ok(digest) = Digest::decode(data) {
        let _ = replica.missing_for(&digest, 1 << 20);
    }
}

/// A signed mastered record: decoded and verified against an empty chain and against a chain
/// holding a genesis record; its payload read as a roster and a hand-over.
pub fn mastered_record(data: &[u8]) {
    let Ok(record) = SignedRecord::decode(data) else {
        return;
    };
    let empty = Chain::new(anchor());
    let _ = empty.verify(&record);
    let mut chain = Chain::new(anchor());
    let roster = Roster {
        members: vec![Member {
            key: anchor().genesis_leader,
            address: "a".into(),
        }],
    };
    let genesis = chain.sign_next(&key(1), RecordKind::Genesis, roster.encode());
    if let Ok(v) = chain.verify(&genesis) {
        let _ = chain.apply(v);
    }
    if let Ok(v) = chain.verify(&record) {
        let _ = chain.apply(v);
    }
    let _ = Roster::decode(&record.record.payload);
    let _ = Handover::decode(&record.record.payload);
}

/// A mastered bundle file: decoded and imported into an in-memory store.
pub fn mastered_bundle(data: &[u8]) {
    let _ = MasteredBundle::decode(data);
    if let Ok(store) = Store::in_memory() {
        let _ = crate::roster::import(&store, data);
    }
}

/// The node core's wire inputs: a gossip envelope, a request (an ask) and a reply from an
/// admitted peer, decoded and fed to a core.
pub fn core_inputs(data: &[u8]) {
    let _ = Gossip::decode(data);
    let _ = Ask::decode(data);
    let _ = Reply::decode(data);
    let peer = WriterId::from_key(&key(3).verifying_key());
    let replica = Replica::new(CLUSTER, key(2), ReplicaConfig::default());
    let mut core = Core::new(
        replica,
        BTreeSet::from([peer]),
        CoreConfig::default(),
        1,
        [],
        0,
    );
    let addr = "127.0.0.1:1".parse().expect("a literal socket address");
    core.handle(1, Input::Connected { peer, addr });
    core.handle(
        2,
        Input::Gossip {
            source: peer,
            id: 1,
            data: data.to_vec(),
        },
    );
    core.handle(
        3,
        Input::SyncRequest {
            peer,
            channel: 1,
            data: data.to_vec(),
        },
    );
    core.handle(
        4,
        Input::SyncResponse {
            peer,
            request: 1,
            data: data.to_vec(),
        },
    );
    let _ = core.drain();
}

/// Stored audit records: the bytes are split at each `0xff` byte into records 1, 2, … of an audit
/// table (as a damaged store file would hold them), then the chain is verified and listed.
pub fn audit_records(data: &[u8]) {
    const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_records");
    let Ok(store) = Store::in_memory() else {
        return;
    };
    let db = store.db();
    let Ok(txn) = db.begin_write() else {
        return;
    };
    if let Ok(mut table) = txn.open_table(RECORDS) {
        for (i, part) in data.split(|&b| b == 0xff).take(16).enumerate() {
            let _ = table.insert(i as u64 + 1, part);
        }
    }
    let _ = txn.commit();
    let _ = AuditLog::verify(db);
    let _ = AuditLog::list(db, 1, 32);
    let _ = db.begin_read();
}

/// A backup file opened with a fixed MEK; and, since random bytes never pass the AEAD, the
/// same bytes read as the sealed plaintext (the snapshot) into an empty database.
pub fn backup_archive(data: &[u8]) {
    let mek = Mek::generate(&mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1));
    let Ok(db) =
        redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
    else {
        return;
    };
    if let Ok(mut reader) = ArchiveReader::new(data, &mek) {
        let _ = read_snapshot(&db, &mut reader);
    }
    let Ok(db) =
        redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
    else {
        return;
    };
    let mut plain = data;
    let _ = read_snapshot(&db, &mut plain);
}

/// A user, grant or revocation payload (users' and certificates') under every record kind,
/// the bytes as user name, grant and serial text, and as an external CA file.
pub fn grants_payload(data: &[u8]) {
    for kind in RecordKind::ALL {
        let _ = UserChange::decode(kind, data);
        let _ = Serial::decode_revocation(kind, data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Grant>();
        let _ = text.parse::<UserName>();
        let _ = text.parse::<Serial>();
    }
    let _ = crate::certs::parse_ca_pem(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbage_never_panics_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            sync_message(&data);
            mastered_record(&data);
            mastered_bundle(&data);
            core_inputs(&data);
            audit_records(&data);
            backup_archive(&data);
            grants_payload(&data);
        }
    }
}
