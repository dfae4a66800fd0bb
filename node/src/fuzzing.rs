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
    Chain, Endorsement, Handover, Member, RecordKind, Roster, SignedRecord, TrustAnchor,
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
/// holding a genesis record; its payload read as a roster and a hand-over.
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

/// One request on the setup endpoint, as [`join_setup`] reads it from the fuzz bytes.
#[derive(Clone, Debug)]
struct JoinStep {
    /// The op byte's bits other than the request's ([`STEP_WRONG_CERT`], [`STEP_SUPERSEDE`]).
    flags: u8,
    connection: u8,
    delay_ms: u16,
    request: JoinRequest,
}

/// The request of a [`JoinStep`]: the fields of the setup protocol's `JoinHello` or
/// `JoinAnswer`.
#[derive(Clone, Debug)]
enum JoinRequest {
    Hello {
        node_key: [u8; 32],
        address: Vec<u8>,
        tls_key: Vec<u8>,
    },
    Answer {
        answer: [u8; 32],
        signature: Vec<u8>,
    },
}

/// [`JoinStep`] flags: the op byte's low bit is the request (0: hello, 1: answer); these are
/// its other bits.
const STEP_WRONG_CERT: u8 = 0b10;
const STEP_SUPERSEDE: u8 = 0b100;
/// A hello whose bundle names another cluster id, genesis leader key or CA certificate.
const STEP_FOREIGN_CLUSTER: u8 = 0b1000;
const STEP_FOREIGN_GENESIS: u8 = 0b1_0000;
const STEP_FOREIGN_CA: u8 = 0b10_0000;
const STEP_FOREIGN: u8 = STEP_FOREIGN_CLUSTER | STEP_FOREIGN_GENESIS | STEP_FOREIGN_CA;

/// The [`join_setup`] leader's cluster.
fn join_cluster() -> ClusterClaim {
    ClusterClaim::new(
        CLUSTER.0,
        key(1).verifying_key().to_bytes(),
        b"the cluster CA",
    )
}

/// What a hello with `flags` claims: the leader's cluster, with the fields the flags name
/// altered.
fn join_claim(flags: u8) -> ClusterClaim {
    let mut claim = join_cluster();
    if flags & STEP_FOREIGN_CLUSTER != 0 {
        claim.cluster[0] ^= 1;
    }
    if flags & STEP_FOREIGN_GENESIS != 0 {
        claim.genesis_leader[0] ^= 1;
    }
    if flags & STEP_FOREIGN_CA != 0 {
        claim.ca_cert[0] ^= 1;
    }
    claim
}

impl JoinStep {
    /// Reads the steps, stopping at the first that the bytes do not hold entirely.
    fn parse(mut data: &[u8]) -> Vec<JoinStep> {
        fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = data.split_at_checked(n)?;
            *data = rest;
            Some(head)
        }
        fn array<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
            take(data, N)?.try_into().ok()
        }
        fn bytes(data: &mut &[u8]) -> Option<Vec<u8>> {
            let [n] = array(data)?;
            Some(take(data, n.into())?.to_vec())
        }
        let step = |data: &mut &[u8]| -> Option<JoinStep> {
            let [op, connection, d0, d1] = array(data)?;
            let request = if op & 1 == 0 {
                JoinRequest::Hello {
                    node_key: array(data)?,
                    address: bytes(data)?,
                    tls_key: bytes(data)?,
                }
            } else {
                JoinRequest::Answer {
                    answer: array(data)?,
                    signature: bytes(data)?,
                }
            };
            Some(JoinStep {
                flags: op & !1,
                connection,
                delay_ms: u16::from_be_bytes([d0, d1]),
                request,
            })
        };
        std::iter::from_fn(|| step(&mut data))
            .take(MAX_JOIN_STEPS)
            .collect()
    }

    /// The bytes [`JoinStep::parse`] reads back as this step (fields longer than 255 bytes
    /// are cut).
    fn encode(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            let b = &b[..b.len().min(255)];
            out.push(b.len() as u8);
            out.extend(b);
        }
        let answer = matches!(self.request, JoinRequest::Answer { .. });
        let mut out = vec![(self.flags & !1) | u8::from(answer), self.connection];
        out.extend(self.delay_ms.to_be_bytes());
        match &self.request {
            JoinRequest::Hello {
                node_key,
                address,
                tls_key,
            } => {
                out.extend(node_key);
                bytes(&mut out, address);
                bytes(&mut out, tls_key);
            }
            JoinRequest::Answer { answer, signature } => {
                out.extend(answer);
                bytes(&mut out, signature);
            }
        }
        out
    }
}

/// What one [`JoinStep`] got from the leader.
#[derive(Debug)]
enum JoinOutcome {
    Challenge(Result<[u8; 32], JoinRefusal>),
    Answer(Result<Admit, JoinRefusal>),
}

/// The licence of the [`join_setup`] cluster: 3 nodes, until long after the run.
fn join_licence() -> Licence {
    LicenceTerms {
        customer: "acme".into(),
        cluster: CLUSTER.to_hex(),
        max_nodes: 3,
        expires_at_ms: JOIN_T0 * 10,
    }
    .sign(&key(7))
}

/// The bundle state the [`join_setup`] leader starts with: the `n`th bundle, created at `now`
/// for a minute.
fn join_bundle_state(n: u8, now_ms: u64) -> BundleState {
    BundleState {
        id: [n; 16],
        cert: [n.wrapping_add(1); 32],
        expires_at_ms: now_ms + 60_000,
        used_by: None,
    }
}

/// The leader's side of the join handshake ([`crate::join::Admission`]) fed the setup
/// protocol's `JoinHello` and `JoinAnswer` requests read from the bytes (their fields, so that
/// the fuzzer steers the protocol; [`setup_message`] fuzzes their wire form).
///
/// The leader: an admission with a fixed seed, the MEK of [`mek`], a licence for 3 nodes, the
/// roster of [`genesis`] (key(1) at "a") and bundle 1 (id `[1; 16]`, certificate hash
/// `[2; 32]`, expiring a minute after the clock starts at 1 000 000 ms). After an admission
/// it does what the daemon does: marks the bundle used by the new member and takes the new
/// roster.
///
/// The bytes are a sequence of at most 16 steps, each read as:
/// - op (1 byte): bit 0 is the request, 0 `JoinHello` and 1 `JoinAnswer`; bit 1: the
///   connection presents a certificate that is no bundle's (`[0; 32]`) instead of the current
///   bundle's; bit 2: before the step, a new bundle (the next id) supersedes the current one;
///   bits 3, 4 and 5 (a hello): its bundle names another cluster id, genesis leader key or CA
///   certificate than the leader's ([`join_cluster`]);
/// - connection id (1 byte), then a delay (u16, big-endian, ms) the clock moves on by first;
/// - a hello: node key (32 bytes), address (1 length byte, then bytes; UTF-8, lossily), TLS
///   public key (1 length byte, then bytes);
/// - an answer: the MEK challenge answer (32 bytes), the signature (1 length byte, then bytes).
///
/// Reading stops at the first step the bytes do not hold entirely. Each refusal is formatted
/// as the joiner would read it. An admission that does not grow the roster by one new member,
/// a second one from the same bundle, or one whose hello named another cluster, panics.
pub fn join_setup(data: &[u8]) {
    // The refusals as the joiner reads them.
    for outcome in run_join_setup(data) {
        let refusal = match outcome {
            JoinOutcome::Challenge(r) => r.err(),
            JoinOutcome::Answer(r) => r.err(),
        };
        let _ = refusal.map(|r| r.to_string());
    }
}

fn run_join_setup(data: &[u8]) -> Vec<JoinOutcome> {
    // Made once: a MEK derivation and a licence signature per input would slow every run.
    static MEK: LazyLock<Mek> = LazyLock::new(mek);
    static LICENCE: LazyLock<Licence> = LazyLock::new(join_licence);
    let mut roster = genesis_roster();
    let mut now = JOIN_T0;
    let mut bundle = join_bundle_state(1, now);
    let mut admission = Admission::new(JOIN_SEED);
    let mut outcomes = Vec::new();
    // Per connection, whether its last hello named another cluster.
    let mut foreign = std::collections::BTreeMap::new();
    for JoinStep {
        flags,
        connection,
        delay_ms,
        request,
    } in JoinStep::parse(data)
    {
        now += u64::from(delay_ms);
        if flags & STEP_SUPERSEDE != 0 {
            bundle = join_bundle_state(bundle.id[0].wrapping_add(1), now);
        }
        let cert = if flags & STEP_WRONG_CERT != 0 {
            [0; 32]
        } else {
            bundle.cert
        };
        let facts = Facts {
            bundle: Some(&bundle),
            roster: &roster,
            licence: Some(&LICENCE),
            cluster: join_cluster(),
        };
        let connection = u64::from(connection);
        outcomes.push(match request {
            JoinRequest::Hello {
                node_key,
                address,
                tls_key,
            } => {
                let hello = Hello {
                    member: Member {
                        key: node_key,
                        address: String::from_utf8_lossy(&address).into_owned(),
                    },
                    tls_key,
                    claim: join_claim(flags),
                };
                foreign.insert(connection, flags & STEP_FOREIGN != 0);
                JoinOutcome::Challenge(admission.hello(now, connection, cert, hello, facts))
            }
            JoinRequest::Answer { answer, signature } => {
                let admitted = admission.answer(now, connection, answer, &signature, &MEK, facts);
                if let Ok(admit) = &admitted {
                    assert!(bundle.used_by.is_none(), "a used bundle admitted {admit:?}");
                    assert_eq!(
                        foreign.get(&connection),
                        Some(&false),
                        "a bundle of another cluster admitted {admit:?}"
                    );
                    assert!(
                        !roster.contains(&admit.member.key),
                        "a member admitted again"
                    );
                    assert_eq!(admit.roster.members.len(), roster.members.len() + 1);
                    assert_eq!(admit.bundle, bundle.id);
                    bundle.used_by = Some(admit.member.key);
                    roster = admit.roster.clone();
                }
                JoinOutcome::Answer(admitted)
            }
        });
    }
    outcomes
}

/// Inputs of [`join_setup`]: a hello from key(5) at "node2.example" on connection 1, then an
/// answer; with the real MEK answer and signature (admitted) or with another MEK's answer
/// (refused).
fn join_seeds() -> Vec<Vec<u8>> {
    let joiner = key(5);
    let member = Member {
        key: joiner.verifying_key().to_bytes(),
        address: "node2.example".into(),
    };
    let tls_key = [4; 65];
    let hello = JoinStep {
        flags: 0,
        connection: 1,
        delay_ms: 0,
        request: JoinRequest::Hello {
            node_key: member.key,
            address: member.address.clone().into_bytes(),
            tls_key: tls_key.to_vec(),
        },
    }
    .encode();
    let Some(JoinOutcome::Challenge(Ok(nonce))) = run_join_setup(&hello).pop() else {
        panic!("the seed's hello gets no challenge");
    };
    let bundle = join_bundle_state(1, JOIN_T0).id;
    let hello_of = Hello {
        member: member.clone(),
        tls_key: tls_key.to_vec(),
        claim: join_cluster(),
    };
    let answer = |mek: &Mek| {
        let (answer, signature) = crate::join::respond(mek, &joiner, &nonce, &bundle, &hello_of);
        JoinStep {
            flags: 0,
            connection: 1,
            delay_ms: 10,
            request: JoinRequest::Answer { answer, signature },
        }
        .encode()
    };
    let wrong = Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(99));
    // The same hello on connection 2, from a bundle whose genesis key was altered.
    let mut foreign = hello.clone();
    foreign[0] |= STEP_FOREIGN_GENESIS;
    foreign[1] = 2;
    vec![
        [hello.clone(), answer(&mek())].concat(),
        [hello.clone(), answer(&wrong)].concat(),
        [hello, foreign, answer(&mek())].concat(),
    ]
}

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

/// key(3)'s replica after two commits (events, fingerprints, a user data exception), and the
/// effects of each commit.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::audit::ChainBreak;

    fn target(name: &str) -> fn(&[u8]) {
        match name {
            "sync_message" => sync_message,
            "mastered_record" => mastered_record,
            "mastered_bundle" => mastered_bundle,
            "fork_choice" => fork_choice,
            "core_inputs" => core_inputs,
            "audit_record" => audit_records,
            "backup_archive" => backup_archive,
            "grants_payload" => grants_payload,
            "joining_bundle" => joining_bundle,
            "join_setup" => join_setup,
            "setup_message" => setup_message,
            other => panic!("no fuzzing function for target {other}"),
        }
    }

    /// Whether `seed` passes the first decode, verify or open `target` does, and what the
    /// target does with it next.
    fn reaches_deep(target: &str, seed: &[u8]) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
        match target {
            "sync_message" => match SyncMessage::decode(seed) {
                Ok(message) => {
                    check(!message.items.is_empty(), "no items")?;
                    let mut replica = replica();
                    for item in message.items {
                        replica.apply(item).map_err(|e| format!("apply: {e}"))?;
                    }
                    Ok(())
                }
                Err(_) => {
                    let digest = Digest::decode(seed).map_err(|e| format!("digest: {e}"))?;
                    check(!digest.segments.is_empty(), "an empty digest")
                }
            },
            "mastered_record" => {
                let record = SignedRecord::decode(seed).map_err(|e| e.to_string())?;
                let (chain, _) = genesis();
                let on_empty = Chain::new(anchor()).verify(&record);
                let on_genesis = chain.verify(&record);
                check(
                    on_empty.is_ok() || on_genesis.is_ok(),
                    &format!("verifies on no chain: {on_empty:?}, {on_genesis:?}"),
                )
            }
            "fork_choice" => {
                let (ours, theirs) = fork_chains(seed).ok_or("records do not decode")?;
                let choice = fork::choose(anchor(), &ours, &theirs).map_err(|e| e.to_string())?;
                check(choice.common > 0, "no common genesis")
            }
            "mastered_bundle" => {
                let records = MasteredBundle::decode(seed)
                    .map_err(|e| e.to_string())?
                    .records
                    .len();
                let store = Store::in_memory().map_err(|e| e.to_string())?;
                let imported = crate::roster::import(&store, seed).map_err(|e| e.to_string())?;
                check(imported == records, "not every record imported")
            }
            "core_inputs" => {
                let (core, outputs) = fed_core(seed);
                let counters = core.counters();
                let accepted = outputs.iter().any(|o| {
                    matches!(
                        o,
                        Output::Validate {
                            id: 1,
                            verdict: crate::core::Verdict::Accept
                        }
                    )
                });
                check(
                    match Gossip::decode(seed) {
                        Some(Gossip::Push { .. }) => accepted && counters.pushes_applied == 1,
                        // A follower's advert is taken (its figures noted) but not relayed.
                        Some(Gossip::Advert(advert)) => core
                            .peers()
                            .any(|(k, p)| *k == advert.origin && p.changes == Some(advert.changes)),
                        Some(_) => accepted,
                        None => counters.sync_served == 1 || counters.sync_rounds == 1,
                    },
                    &format!("not taken: {counters:?}"),
                )
            }
            "audit_record" => {
                let records = seed.split(|&b| b == 0xff).count() as u64;
                let store = audit_store(seed).ok_or("no store")?;
                let report = AuditLog::verify(store.reader()).map_err(|e| e.to_string())?;
                // Every record verifies; the target writes no head, so the chain ends there.
                check(
                    report.verified == records
                        && report.first_break == Some(ChainBreak::HeadMismatch { seq: records }),
                    &format!("{report:?}"),
                )?;
                let listed = AuditLog::list(store.reader(), 1, 32).map_err(|e| e.to_string())?;
                check(listed.len() as u64 == records, "not every record listed")
            }
            "backup_archive" => {
                let db = redb::Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| e.to_string())?;
                let stats = if seed.starts_with(crate::backup::MAGIC) {
                    let mek = mek();
                    let mut reader = ArchiveReader::new(seed, &mek).map_err(|e| e.to_string())?;
                    read_snapshot(&db, &mut reader)
                } else {
                    read_snapshot(&db, &mut &seed[..])
                }
                .map_err(|e| e.to_string())?;
                check(stats.rows > 0, "an empty snapshot")
            }
            "grants_payload" => {
                let payload = RecordKind::ALL.iter().any(|&kind| {
                    matches!(UserChange::decode(kind, seed), Ok(Some(_)))
                        || matches!(Serial::decode_revocation(kind, seed), Ok(Some(_)))
                });
                let text = std::str::from_utf8(seed).is_ok_and(|t| {
                    t.parse::<Grant>().is_ok()
                        || t.parse::<UserName>().is_ok()
                        || t.parse::<Serial>().is_ok()
                });
                let ca = crate::certs::parse_ca_pem(seed).is_ok();
                check(payload || text || ca, "neither a payload, a text nor a CA")
            }
            "joining_bundle" => {
                let bundle = JoiningBundle::decode(seed).map_err(|e| e.to_string())?;
                check(bundle.cluster == CLUSTER.0, "another cluster's bundle")
            }
            "setup_message" => {
                use crate::join::wire::{SetupRequest, SetupResponse};
                check(
                    SetupRequest::decode(seed).is_some() || SetupResponse::decode(seed).is_some(),
                    "neither a request nor an answer",
                )
            }
            "join_setup" => {
                let outcomes = run_join_setup(seed);
                check(
                    matches!(outcomes.first(), Some(JoinOutcome::Challenge(Ok(_)))),
                    &format!("the first hello gets no challenge: {outcomes:?}"),
                )?;
                check(
                    outcomes.iter().any(|o| matches!(o, JoinOutcome::Answer(_))),
                    "no answer",
                )
            }
            other => Err(format!("no check for target {other}")),
        }
    }

    #[test]
    fn every_fuzz_target_has_seeds_that_reach_deep() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/Cargo.toml");
        let manifest: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
        let bins: BTreeSet<&str> = manifest["bin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|bin| bin["name"].as_str().unwrap())
            .collect();
        let seeds: BTreeMap<&str, Vec<Vec<u8>>> = seeds().into_iter().collect();
        assert_eq!(seeds.keys().copied().collect::<BTreeSet<_>>(), bins);
        for (name, seeds) in &seeds {
            assert!(seeds.len() >= 2, "{name}: {} seeds", seeds.len());
            for (n, seed) in seeds.iter().enumerate() {
                assert!(
                    seed.len() <= MAX_SEED,
                    "{name} seed {n}: {} bytes",
                    seed.len()
                );
                if let Err(e) = reaches_deep(name, seed) {
                    panic!("{name} seed {n} stops early: {e}");
                }
                target(name)(seed);
            }
        }
        assert!(
            seeds["join_setup"].iter().any(|seed| matches!(
                run_join_setup(seed).last(),
                Some(JoinOutcome::Answer(Ok(_)))
            )),
            "no join_setup seed is admitted"
        );
    }

    #[test]
    fn the_join_setup_seeds_admit_the_joiner_or_refuse_its_mek() {
        let seeds = join_seeds();
        let admitted = run_join_setup(&seeds[0]);
        let Some(JoinOutcome::Answer(Ok(admit))) = admitted.last() else {
            panic!("the valid seed is not admitted: {admitted:?}");
        };
        assert_eq!(admit.member.key, key(5).verifying_key().to_bytes());
        assert_eq!(admit.member.address, "node2.example");
        assert_eq!(admit.roster.members.len(), 2);
        let refused = run_join_setup(&seeds[1]);
        assert!(
            matches!(
                refused.last(),
                Some(JoinOutcome::Answer(Err(JoinRefusal::WrongMek)))
            ),
            "{refused:?}"
        );
        // A bundle of another cluster is refused at hello, and the bundle stays usable.
        let foreign = run_join_setup(&seeds[2]);
        assert!(
            matches!(
                foreign.as_slice(),
                [
                    JoinOutcome::Challenge(Ok(_)),
                    JoinOutcome::Challenge(Err(JoinRefusal::ForeignBundle {
                        field: "genesis leader key"
                    })),
                    JoinOutcome::Answer(Ok(_)),
                ]
            ),
            "{foreign:?}"
        );
        // Answering again on the same connection after the admission: no challenge pending.
        let again = run_join_setup(&[seeds[0].clone(), seeds[0].clone()].concat());
        assert!(
            matches!(
                again.as_slice(),
                [
                    JoinOutcome::Challenge(Ok(_)),
                    JoinOutcome::Answer(Ok(_)),
                    JoinOutcome::Challenge(Err(JoinRefusal::Reused)),
                    JoinOutcome::Answer(Err(JoinRefusal::Replayed)),
                ]
            ),
            "{again:?}"
        );
    }

    #[test]
    fn the_real_joining_bundle_seed_holds_parseable_certificates_and_key() {
        let bundle = JoiningBundle::decode(&joining_bundles()[0]).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&bundle.ca_cert).unwrap();
        let (_, client) = x509_parser::parse_x509_certificate(&bundle.client_cert).unwrap();
        assert_eq!(client.issuer(), ca.subject());
        rcgen::KeyPair::try_from(bundle.client_key.as_slice()).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbage_never_panics_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            sync_message(&data);
            mastered_record(&data);
            mastered_bundle(&data);
            fork_choice(&data);
            core_inputs(&data);
            audit_records(&data);
            backup_archive(&data);
            grants_payload(&data);
            joining_bundle(&data);
            join_setup(&data);
            setup_message(&data);
        }
    }
}
