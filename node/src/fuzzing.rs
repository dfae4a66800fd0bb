//! Entry points that feed arbitrary bytes to every wire and file decoder, and to what consumes
//! the decoded value. The cargo-fuzz targets in `fuzz/` call them, and so do the stable
//! "garbage never panics" tests below, so both exercise the same paths. Each returns normally
//! whatever the bytes are; a panic is a bug.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use meshward_crdt::fork::{self, Keep};
use meshward_crdt::mastered::{
    Chain, ChainState, Checkpoint, Endorsement, Handover, Member, RecordKind, Roster, SignedRecord,
    StateDigest, TrustAnchor,
};
use meshward_crdt::{
    ClusterId, Digest, Effects, Event, EventKind, KeyType, Op, Replica, ReplicaConfig, SyncMessage,
    UserDataException, WriterId,
};
use rand::SeedableRng as _;
use redb::ReadableTable as _;

use crate::audit::{AuditLog, NewAuditRecord};
use crate::backup::{ArchiveReader, ArchiveWriter, read_snapshot, write_snapshot};
use crate::certs::Serial;
use crate::core::{
    Advert, Ask, Core, CoreConfig, Gossip, Input, Output, Reply, SyncAnswer, SyncAsk,
};
use crate::grants::{Grant, UserChange, UserName};
use crate::join::{
    Admission, Admit, BundleState, ClusterClaim, Facts, Hello, JoinRefusal, JoiningBundle,
};
use crate::licence::{Licence, LicenceTerms};
use crate::mek::Mek;
use crate::pki::Ca;
use crate::roster::MasteredBundle;
use crate::store::Store;

const CLUSTER: ClusterId = ClusterId([7; 16]);

/// Longest seed: `.ci/fuzz` runs with `-max_len=65536`, and libFuzzer cuts longer inputs.
pub const MAX_SEED: usize = 64 * 1024;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn anchor() -> TrustAnchor {
    TrustAnchor {
        cluster: CLUSTER,
        genesis_leader: key(1).verifying_key().to_bytes(),
    }
}

/// The replica the targets feed: key(2)'s, empty, accepting the rows of key(1) to key(3) (the
/// seeds' writers); any other writer's are refused.
fn replica() -> Replica {
    let mut replica = Replica::new(CLUSTER, key(2), ReplicaConfig::default());
    replica.set_writers((1..=3).map(|n| WriterId::from_key(&key(n).verifying_key())));
    replica
}

/// The MEK [`backup_archive`] opens archives with.
fn mek() -> Mek {
    Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1))
}

/// The genesis record the mastered targets start from (signed by key(1), roster: key(1) at
/// "a"), and the chain after it.
fn genesis() -> (Chain, SignedRecord) {
    let mut chain = Chain::new(anchor());
    let genesis = chain.sign_next(&key(1), RecordKind::Genesis, genesis_roster().encode());
    if let Ok(v) = chain.verify(&genesis) {
        let _ = chain.apply(v);
    }
    (chain, genesis)
}

/// A sync message: decoded, then each item applied to a fresh replica; also read as a digest
/// and answered.
pub fn sync_message(data: &[u8]) {
    let mut replica = replica();
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
/// holding a genesis record (also as a batch a checkpoint covers); its payload read as a
/// roster, a hand-over and a checkpoint; the input read as a stored chain state and resumed
/// from with the record.
pub fn mastered_record(data: &[u8]) {
    let Ok(record) = SignedRecord::decode(data) else {
        return;
    };
    let empty = Chain::new(anchor());
    let _ = empty.verify(&record);
    let (mut chain, _) = genesis();
    if let Ok(v) = chain.verify(&record) {
        let _ = chain.apply(v);
    }
    let _ = Roster::decode(&record.record.payload);
    let _ = Handover::decode(&record.record.payload);
    let _ = Checkpoint::decode(&record.record.payload);
    let (chain, first) = genesis();
    let _ = chain.verify_covered(std::slice::from_ref(&record));
    // The input as a node's stored restart point, resumed from with the record.
    if let Ok(state) = ChainState::decode(data) {
        let _ = Chain::resume(anchor(), state.clone(), &record);
        let _ = Chain::resume_replay(anchor(), state, &[first, record]);
    }
}

/// A mastered bundle file: decoded and imported into an in-memory store.
pub fn mastered_bundle(data: &[u8]) {
    let _ = MasteredBundle::decode(data);
    if let Ok(store) = Store::in_memory() {
        let _ = crate::roster::import(&store, data);
    }
}

/// Two mastered chains (a postcard pair of lists of encoded records) compared by the fork
/// choice both ways round: the two calls must agree on the common prefix, on each branch's
/// standing and, when the standings differ, on the winner; the kept chain's state must be the
/// one its records rebuild.
pub fn fork_choice(data: &[u8]) {
    let Some((ours, theirs)) = fork_chains(data) else {
        return;
    };
    let (Ok(x), Ok(y)) = (
        fork::choose(anchor(), &ours, &theirs),
        fork::choose(anchor(), &theirs, &ours),
    ) else {
        return;
    };
    assert_eq!(x.common, y.common, "the common prefix depends on the order");
    assert_eq!(
        (x.ours, x.theirs),
        (y.theirs, y.ours),
        "standings depend on the order"
    );
    if x.ours != x.theirs {
        assert_eq!(
            x.keep == Keep::Ours,
            y.keep == Keep::Theirs,
            "the winner depends on the order"
        );
    }
    let kept = match x.keep {
        Keep::Ours => &ours,
        Keep::Theirs => &theirs,
    };
    assert_eq!(
        Chain::rebuild(anchor(), kept).ok().as_ref(),
        Some(&x.chain),
        "the kept state is not the kept chain's"
    );
}

/// The two record lists of a [`fork_choice`] input, if every record decodes.
fn fork_chains(data: &[u8]) -> Option<(Vec<SignedRecord>, Vec<SignedRecord>)> {
    let (a, b): (Vec<Vec<u8>>, Vec<Vec<u8>>) = postcard::from_bytes(data).ok()?;
    let decode = |list: Vec<Vec<u8>>| {
        list.iter()
            .map(|r| SignedRecord::decode(r).ok())
            .collect::<Option<Vec<_>>>()
    };
    Some((decode(a)?, decode(b)?))
}

/// [`fork_choice`] inputs: the history against a branch where key(1) signed another record
/// instead of its hand-over (both ways round), and against a prefix of itself.
fn fork_seeds(history: &[SignedRecord]) -> Vec<Vec<u8>> {
    let before = history.len() - 2;
    let mut chain = Chain::rebuild(anchor(), &history[..before]).expect("the history verifies");
    let mut branch = history[..before].to_vec();
    for payload in [b"x".to_vec(), b"y".to_vec()] {
        let record = chain.sign_next(&key(1), RecordKind::Config, payload);
        if let Ok(v) = chain.verify(&record) {
            let _ = chain.apply(v);
        }
        branch.push(record);
    }
    let encode = |a: &[SignedRecord], b: &[SignedRecord]| {
        let list = |r: &[SignedRecord]| r.iter().map(SignedRecord::encode).collect::<Vec<_>>();
        postcard::to_stdvec(&(list(a), list(b))).expect("postcard encodes into a Vec")
    };
    vec![
        encode(history, &branch),
        encode(&branch, history),
        encode(history, &history[..before]),
    ]
}

/// The node core's wire inputs: a gossip envelope, a request (an ask) and a reply from an
/// admitted peer, decoded and fed to a core.
pub fn core_inputs(data: &[u8]) {
    let _ = Gossip::decode(data);
    let _ = Ask::decode(data);
    let _ = Reply::decode(data);
    let _ = fed_core(data);
}

/// A core (key(2)) with the admitted peer key(3) connected, after `data` came from that peer as
/// a gossip message, as a request, and as the answer to the core's first sync request; and
/// what the core output.
fn fed_core(data: &[u8]) -> (Core, Vec<Output>) {
    let peer = WriterId::from_key(&key(3).verifying_key());
    let mut core = Core::new(
        replica(),
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
    let outputs = core.drain();
    (core, outputs)
}

/// Stored audit records: the bytes are split at each `0xff` byte into records 1, 2, … of an audit
/// table (as a damaged store file would hold them), then the chain is verified and listed.
pub fn audit_records(data: &[u8]) {
    let Some(store) = audit_store(data) else {
        return;
    };
    let db = store.reader();
    let _ = AuditLog::verify(db);
    let _ = AuditLog::list(db, 1, 32);
    let _ = db.begin_read();
}

/// A store whose audit table holds `data` split at each `0xff` byte, as records 1, 2, ….
fn audit_store(data: &[u8]) -> Option<Store> {
    let store = Store::in_memory().ok()?;
    let txn = store.db().ok()?.begin_write().ok()?;
    if let Ok(mut table) = txn.open_table(crate::audit::RECORDS) {
        for (i, part) in data.split(|&b| b == 0xff).take(16).enumerate() {
            let _ = table.insert(i as u64 + 1, part);
        }
    }
    let _ = txn.commit();
    Some(store)
}

/// A backup file opened with a fixed MEK; and, since random bytes never pass the AEAD, the
/// same bytes read as the sealed plaintext (the snapshot) into an empty database.
pub fn backup_archive(data: &[u8]) {
    let mek = mek();
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

/// A setup endpoint message ([`crate::join::wire`]), decoded as the leader's actor decodes a
/// request and a joiner decodes an answer: one that decodes encodes back to itself, its
/// `Debug` shows, and an answer says whether it ends the connection.
pub fn setup_message(data: &[u8]) {
    use crate::join::wire::{SetupRequest, SetupResponse};
    if let Some(request) = SetupRequest::decode(data) {
        let again = SetupRequest::decode(&request.encode());
        assert!(
            again.as_ref() == Some(&request),
            "a decoded request does not survive encoding: {again:?}"
        );
        let _ = format!("{request:?}");
    }
    if let Some(response) = SetupResponse::decode(data) {
        let again = SetupResponse::decode(&response.encode());
        assert!(
            again.as_ref() == Some(&response),
            "a decoded answer does not survive encoding"
        );
        let _ = response.ends();
    }
}

/// Valid setup messages: a hello, an answer, a challenge, a refusal and an admission.
fn setup_seeds() -> Vec<Vec<u8>> {
    use crate::join::wire::{SetupRequest, SetupResponse};
    vec![
        SetupRequest::JoinHelloV2 {
            node_key: key(2).verifying_key().to_bytes(),
            address: "b".into(),
            tls_key: vec![4; 65],
            cluster: CLUSTER.0,
            genesis_leader: anchor().genesis_leader,
            ca_cert: [5; 32],
        }
        .encode(),
        SetupRequest::JoinAnswer {
            answer: [6; 32],
            signature: vec![7; 64],
        }
        .encode(),
        SetupResponse::ChallengeV2 {
            nonce: [8; 32],
            cluster: CLUSTER.0,
            genesis_leader: anchor().genesis_leader,
            ca_cert: [5; 32],
        }
        .encode(),
        SetupResponse::Refused {
            reason: "the licence allows 3 nodes".into(),
        }
        .encode(),
        SetupResponse::Joined {
            cluster: CLUSTER.0,
            genesis_leader: anchor().genesis_leader,
            records: history().iter().map(SignedRecord::encode).collect(),
            node_cert: vec![9; 300],
        }
        .encode(),
    ]
}

/// A joining bundle file, decoded as `meshward join` does before it connects; if it decodes,
/// it encodes back to the same bundle, and the DER items the joiner hands to its TLS stack
/// (the CA certificate, the one-time client certificate and its PKCS#8 key) are parsed with
/// the pure parsers the node has (x509-parser, rcgen), and the client certificate's issuer
/// compared with the CA's subject. (The joiner checks nothing else before connecting: the
/// bundle's expiry is the leader's to check, see [`join_setup`].) The leader's setup gate
/// ([`crate::setup_gate::decide`]) decides on the bytes as a certificate, and on the bundle's
/// certificate with the bundle current.
pub fn joining_bundle(data: &[u8]) {
    let revoked = crate::certs::Revoked::default();
    let _ = crate::setup_gate::decide(0, data, None, &revoked);
    let Ok(bundle) = JoiningBundle::decode(data) else {
        return;
    };
    let again = JoiningBundle::decode(&bundle.encode());
    assert!(
        again.as_ref().is_ok_and(|b| *b == bundle),
        "a decoded bundle does not survive encoding: {again:?}"
    );
    let _ = format!("{bundle:?}");
    let _ = crate::join::utc(bundle.expires_at_ms);
    let ca = x509_parser::parse_x509_certificate(&bundle.ca_cert);
    let client = x509_parser::parse_x509_certificate(&bundle.client_cert);
    if let (Ok((_, ca)), Ok((_, client))) = (&ca, &client) {
        let _ = client.issuer() == ca.subject();
    }
    let _ = rcgen::KeyPair::try_from(bundle.client_key.as_slice());
    // The setup endpoint's gate on the bundle's certificate, with this bundle current.
    let state = crate::join::BundleState {
        id: bundle.id,
        cert: <sha2::Sha256 as sha2::Digest>::digest(&bundle.client_cert).into(),
        expires_at_ms: bundle.expires_at_ms,
        used_by: None,
    };
    let _ = crate::setup_gate::decide(0, &bundle.client_cert, Some(&state), &revoked)
        .map_err(|e| e.to_string());
}

/// When the [`join_setup`] leader's clock starts, unix ms.
const JOIN_T0: u64 = 1_000_000;
/// [`join_setup`]'s admission RNG seed.
const JOIN_SEED: [u8; 32] = [3; 32];
/// Steps [`join_setup`] takes at most.
const MAX_JOIN_STEPS: usize = 16;

/// Valid inputs for every fuzz target, by target name (the `[[bin]]` names of `fuzz/Cargo.toml`),
/// so that even a short fuzzing run starts past the outer decoders: real encodings made by the
/// code's own encoders, signed with the keys and sealed with the MEK the functions above use
/// (random bytes never pass a signature check or the backup's AEAD). `.ci/fuzz` writes them out
/// with the `fuzz_seeds` example. Keys, records and replicated data are fixed; the backup
/// archive's id and nonces, the backed-up store's node key and the CA's key come from the OS, so
/// those seeds differ from call to call (and stay valid).
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let peer = WriterId::from_key(&key(3).verifying_key());
    let (writer, writes) = peer_writes();
    let digest = writer.digest();
    let first_push = SyncMessage {
        items: writes[0].push.clone(),
    }
    .encode();
    let every_push = SyncMessage {
        items: writes.iter().flat_map(|e| e.push.clone()).collect(),
    }
    .encode();
    let snapshots = SyncMessage {
        items: writer
            .missing_for(&Digest::default(), usize::MAX)
            .expect("the writer reads its own segments")
            .0,
    }
    .encode();
    let (chain, genesis) = genesis();
    let next = |kind, payload| chain.sign_next(&key(1), kind, payload).encode();
    let leader = anchor().genesis_leader;
    let history = history();
    let bundle = MasteredBundle {
        cluster: CLUSTER.0,
        genesis_leader: leader,
        records: history.iter().map(SignedRecord::encode).collect(),
    }
    .encode();
    let texts = ["root", "admin:ns", "guest:ns", "guest:*", "alice", SERIAL];
    vec![
        (
            "sync_message",
            vec![every_push, snapshots.clone(), digest.encode()],
        ),
        (
            "mastered_record",
            vec![
                genesis.encode(),
                next(RecordKind::Roster, second_roster().encode()),
                next(RecordKind::User, user_changes()[0].encode().1),
                next(
                    RecordKind::Checkpoint,
                    chain.checkpoint(StateDigest([0; 32])).encode(),
                ),
            ],
        ),
        (
            "mastered_bundle",
            vec![
                MasteredBundle::genesis(&key(1), CLUSTER, genesis_roster().members, None).encode(),
                bundle.clone(),
            ],
        ),
        ("fork_choice", fork_seeds(&history)),
        (
            "core_inputs",
            vec![
                Gossip::Push {
                    origin: peer,
                    sent_us: 1,
                    message: first_push,
                }
                .encode(),
                Gossip::Advert(
                    Advert {
                        origin: peer,
                        fingerprint: digest.fingerprint(),
                        changes: digest.segments.iter().map(|s| s.seq).sum(),
                        mastered: 0,
                        mastered_hash: [0; 32],
                        at_ms: 1,
                        signature: ed25519_dalek::Signature::from_bytes(&[0; 64]),
                    }
                    .sign(&key(3), CLUSTER),
                )
                .encode(),
                Ask::Sync(SyncAsk {
                    mastered: 0,
                    digest: digest.encode(),
                })
                .encode(),
                Reply::Sync(SyncAnswer {
                    more: false,
                    message: snapshots,
                    records: Vec::new(),
                })
                .encode(),
            ],
        ),
        (
            "audit_record",
            vec![audit_chain(3).join(&0xff), audit_chain(1).concat()],
        ),
        ("backup_archive", backups(&writes, &bundle)),
        ("joining_bundle", joining_bundles()),
        ("join_setup", join_seeds()),
        ("setup_message", setup_seeds()),
        ("credential_row", credentials::credential_rows()),
        (
            "grants_payload",
            user_changes()
                .iter()
                .map(|c| c.encode().1)
                .chain([serial().revocation().1, ca_pem()])
                .chain(texts.map(|t| t.as_bytes().to_vec()))
                .collect(),
        ),
    ]
}

/// A certificate serial in the form `openssl x509 -serial` shows.
const SERIAL: &str = "01:23:45:67:89:AB:CD:EF";

fn serial() -> Serial {
    SERIAL.parse().expect("a valid serial")
}

/// The roster of [`genesis`].
fn genesis_roster() -> Roster {
    Roster {
        members: vec![Member {
            key: anchor().genesis_leader,
            address: "a".into(),
        }],
    }
}

/// The genesis roster with key(3) added.
fn second_roster() -> Roster {
    let mut roster = genesis_roster();
    roster.members.push(Member {
        key: key(3).verifying_key().to_bytes(),
        address: "127.0.0.1:7003".into(),
    });
    roster
}

/// Every kind of user change, about the user "alice".
fn user_changes() -> Vec<UserChange> {
    let alice: UserName = "alice".parse().expect("a valid user name");
    let grant = |text: &str| text.parse::<Grant>().expect("a valid grant");
    vec![
        UserChange::Create(alice.clone()),
        UserChange::AddGrant(alice.clone(), grant("admin:ns")),
        UserChange::AddGrant(alice.clone(), grant("guest:*")),
        UserChange::RevokeGrant(alice.clone(), grant("admin:ns")),
        UserChange::Delete(alice),
    ]
}

/// A whole mastered chain from [`genesis`]: user changes, a roster change adding key(3), a
/// certificate revocation, a hand-over to key(3) endorsed by both members, and a record of
/// key(3) as the
/// epoch-2 leader.
fn history() -> Vec<SignedRecord> {
    let (mut chain, genesis) = genesis();
    let mut records = vec![genesis];
    let mut append = |chain: &mut Chain, key: &SigningKey, (kind, payload)| {
        let record = chain.sign_next(key, kind, payload);
        if let Ok(v) = chain.verify(&record) {
            let _ = chain.apply(v);
        }
        records.push(record);
    };
    for change in user_changes() {
        append(&mut chain, &key(1), change.encode());
    }
    append(
        &mut chain,
        &key(1),
        (RecordKind::Roster, second_roster().encode()),
    );
    append(&mut chain, &key(1), serial().revocation());
    let next_leader = key(3).verifying_key().to_bytes();
    let candidacy = chain.candidacy(next_leader);
    let handover = Handover {
        next_epoch: 2,
        next_leader,
        endorsements: vec![
            Endorsement::sign(&key(1), &candidacy),
            Endorsement::sign(&key(3), &candidacy),
        ],
        forced: false,
    };
    append(
        &mut chain,
        &key(1),
        (RecordKind::Handover, handover.encode()),
    );
    append(&mut chain, &key(3), user_changes()[0].encode());
    records
}

/// key(3)'s replica after two commits (events, fingerprints, a user data exception, an audit
/// head), and the effects of each commit.
fn peer_writes() -> (Replica, Vec<Effects>) {
    let mut replica = Replica::new(CLUSTER, key(3), ReplicaConfig::default());
    let at = 1_700_000_000_000;
    let event = |n: i64, kind| {
        Op::Append(Event {
            at_ms: at + n,
            kind,
            user: "alice".into(),
            target: "db-1".into(),
            detail: format!("session {n}\tvia ssh"),
        })
    };
    let fingerprint = |n: i64| Op::ObserveFingerprint {
        host: "db-1".into(),
        key_type: KeyType::SshEd25519,
        fingerprint: "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".into(),
        at_ms: at + n,
    };
    let exception = Op::PutException(UserDataException {
        user: "alice".into(),
        field: "shell".into(),
        value: "/bin/zsh".into(),
        at_ms: at,
    });
    let commits = [
        vec![
            event(0, EventKind::Login),
            event(1, EventKind::SessionStart),
            fingerprint(1),
            exception,
        ],
        vec![
            event(2, EventKind::SessionEnd),
            event(3, EventKind::Logout),
            fingerprint(3),
            Op::PutAuditHead(meshward_crdt::AuditHead {
                count: 4,
                hash: [9; 32],
                at_ms: at + 3,
            }),
        ],
    ];
    let effects = commits
        .into_iter()
        .zip(0..)
        .map(|(ops, n)| replica.commit(at + n, ops).expect("valid rows"))
        .collect();
    (replica, effects)
}

fn audit_input(at_ms: i64) -> NewAuditRecord {
    NewAuditRecord {
        at_ms,
        actor: "alice".into(),
        action: "session-start".into(),
        target: "db-1".into(),
        detail: "via ssh\ttty pts/1".into(),
    }
}

/// `count` audit records as the audit log stores them (the values of its table), in seq order.
/// [`audit_records`] splits its input at `0xff` bytes, so a chain whose records hold none is
/// picked: the first, over a few start times (the hashes change with them), that has none.
fn audit_chain(count: i64) -> Vec<Vec<u8>> {
    (0..256)
        .find_map(|attempt| {
            let store = Store::in_memory().ok()?;
            let start = 1_700_000_000_000 + attempt * 1000;
            let inputs: Vec<_> = (0..count).map(|n| audit_input(start + n)).collect();
            AuditLog::append_batch(store.db().ok()?, &inputs).ok()?;
            let txn = store.reader().begin_read().ok()?;
            let table = txn.open_table(crate::audit::RECORDS).ok()?;
            let records = table
                .iter()
                .ok()?
                .map(|entry| entry.map(|(_, v)| v.value().to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            records
                .iter()
                .all(|r| !r.contains(&0xff))
                .then_some(records)
        })
        .expect("an audit chain without 0xff bytes among 256 start times")
}

/// A backup of a small store (the mastered `bundle` imported, `writes` persisted, two audit
/// records) sealed with [`mek`], and its plaintext snapshot.
fn backups(writes: &[Effects], bundle: &[u8]) -> Vec<Vec<u8>> {
    let store = Store::in_memory().expect("an in-memory store");
    crate::roster::import(&store, bundle).expect("a valid bundle");
    for effects in writes {
        store.persist(effects).expect("persisted");
    }
    // Invariant: an in-memory store is writable.
    let db = store.db().expect("a writable store");
    AuditLog::append_batch(db, &[audit_input(1), audit_input(2)]).expect("audited");
    let mut snapshot = Vec::new();
    write_snapshot(store.reader(), &mut snapshot, &mut |_| {}).expect("a snapshot");
    let mek = mek();
    let mut archive = ArchiveWriter::new(Vec::new(), &mek, CLUSTER.0).expect("writes to a Vec");
    archive.write_all(&snapshot).expect("writes to a Vec");
    vec![archive.finish().expect("writes to a Vec"), snapshot]
}

/// Joining bundle files: one as `bundle create` writes it (a real CA, client certificate and
/// key), and one with placeholder DER items.
fn joining_bundles() -> Vec<Vec<u8>> {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ca = Ca::create(CLUSTER, now).expect("a CA");
    let client = ca
        .issue_client(
            "meshward joining bundle",
            now,
            now + Duration::from_secs(3600),
        )
        .expect("a client certificate");
    let bundle = JoiningBundle {
        id: [1; 16],
        cluster: CLUSTER.0,
        genesis_leader: anchor().genesis_leader,
        setup_addr: "127.0.0.1:7401".into(),
        server_name: "127.0.0.1".into(),
        ca_cert: ca.cert.clone(),
        client_cert: client.cert.clone(),
        client_key: client.key.to_vec(),
        expires_at_ms: 1_700_003_600_000,
    };
    let placeholder = JoiningBundle {
        setup_addr: "[::1]:7401".into(),
        server_name: "::1".into(),
        ca_cert: vec![1],
        client_cert: vec![2],
        client_key: vec![3],
        ..bundle.clone()
    };
    vec![bundle.encode(), placeholder.encode()]
}

/// A cluster CA certificate, PEM.
fn ca_pem() -> Vec<u8> {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ca = Ca::create(CLUSTER, now).expect("a CA");
    pem::encode(&pem::Pem::new("CERTIFICATE", ca.cert)).into_bytes()
}

mod credentials;
mod join;
pub use credentials::credential_row;
use join::join_seeds;
pub use join::join_setup;
#[cfg(test)]
use join::{JoinOutcome, run_join_setup};

#[cfg(test)]
mod tests;
