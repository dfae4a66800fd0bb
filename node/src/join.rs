//! The leader's side of the join protocol, as a pure state machine: no socket, store or clock
//! (time is an argument, randomness a seeded RNG).
//!
//! 1. The joiner connects to the setup endpoint with the bundle's one-time client certificate
//!    and sends `JoinHello` (its node key, address and TLS public key). [`Admission::hello`]
//!    checks the bundle (current, unused, unexpired, and this connection's certificate is the
//!    bundle's) and that the node is admissible (licence, unique address and key), then
//!    returns a fresh random nonce bound to this connection.
//! 2. The joiner answers with `Mek::challenge_answer(nonce, context(bundle id, node key))` and
//!    an ed25519 signature of the [`transcript`] by its node key. [`Admission::answer`]
//!    consumes the connection's pending challenge (single use), refuses an answer it has seen
//!    before (a replay), checks the MEK answer in constant time, the signature, and everything
//!    of step 1 again, and returns an [`Admit`]: the new roster to write.
//! 3. The caller then, in this order: issues the node certificate, marks the bundle used
//!    durably (the arbiter when two joiners race), writes the roster record, and answers.
//!
//! The MEK never crosses the network: only an HMAC of a fresh nonce does.
//!
//! The joiner starts from a [`JoiningBundle`] file, written by the leader's `bundle create`.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use ed25519_dalek::{Signature, VerifyingKey};
use meshward_crdt::mastered::{MAX_ADDRESS_BYTES, Member, Roster};
use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::licence::Licence;
use crate::mek::Mek;
use crate::rate::{Gcra, Rate};

/// Challenges pending at once; the oldest is dropped when more arrive.
pub const MAX_PENDING: usize = 64;
/// Answers remembered to recognise replays.
pub const MAX_SEEN_ANSWERS: usize = 4096;
/// How long a challenge may be answered, ms.
pub const CHALLENGE_TTL_MS: u64 = 30_000;
/// Challenges issued back to back; beyond them, one more per [`CHALLENGE_INTERVAL_MS`].
pub const CHALLENGE_BURST: u64 = 16;
/// Steady rate of challenges once the burst is spent, ms per challenge.
pub const CHALLENGE_INTERVAL_MS: u64 = 1_000;
/// [`CHALLENGE_BURST`] and [`CHALLENGE_INTERVAL_MS`] as a [`Rate`].
const CHALLENGE_RATE: Rate = Rate::new(
    NonZeroU32::new(CHALLENGE_BURST as u32).expect("CHALLENGE_BURST is not zero"),
    Duration::from_millis(CHALLENGE_INTERVAL_MS),
);
/// Domain of the challenge context and transcript.
const DOMAIN: &[u8] = b"meshward/join/v1\0";
/// Largest joining bundle file accepted.
pub const MAX_JOINING_BUNDLE: usize = 64 * 1024;
/// First bytes of a joining bundle file, then one format byte.
const BUNDLE_MAGIC: &[u8] = b"meshward-joining-bundle\n";
/// Format of the joining bundle file.
const BUNDLE_FORMAT: u8 = 1;
/// The subject CN of every joining bundle's one-time certificate starts with this (then the
/// bundle id in hex); user names cannot (they have no spaces).
pub const BUNDLE_CN_PREFIX: &str = "meshward joining bundle ";

/// A one-time joining bundle: everything a joiner needs besides the MEK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoiningBundle {
    /// Random id.
    pub id: [u8; 16],
    /// The cluster (trust anchor).
    pub cluster: [u8; 16],
    /// The genesis leader's key (trust anchor).
    pub genesis_leader: [u8; 32],
    /// The leader's setup endpoint, `HOST:PORT`.
    pub setup_addr: String,
    /// The name the leader's certificate carries (its address without port).
    pub server_name: String,
    /// The cluster CA certificate (DER): the only root the joiner trusts.
    pub ca_cert: Vec<u8>,
    /// The one-time client certificate (DER), signed by the CA.
    pub client_cert: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub client_key: Vec<u8>,
    /// When it expires, unix ms.
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for JoiningBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoiningBundle")
            .field("id", &hex::encode(self.id))
            .field("setup_addr", &self.setup_addr)
            .finish_non_exhaustive()
    }
}

impl JoiningBundle {
    /// The file's bytes: magic, format byte, postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BUNDLE_MAGIC.to_vec();
        out.push(BUNDLE_FORMAT);
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes a bundle file, bounded by [`MAX_JOINING_BUNDLE`].
    pub fn decode(bytes: &[u8]) -> anyhow::Result<JoiningBundle> {
        anyhow::ensure!(
            bytes.len() <= MAX_JOINING_BUNDLE,
            "not a joining bundle: {} bytes; the limit is {MAX_JOINING_BUNDLE}",
            bytes.len()
        );
        let rest = bytes
            .strip_prefix(BUNDLE_MAGIC)
            .context("not a joining bundle (create one with `meshward bundle create`)")?;
        match rest.split_first() {
            Some((&BUNDLE_FORMAT, body)) => postcard::from_bytes(body)
                .map_err(|e| anyhow::anyhow!("damaged joining bundle: {e}")),
            Some((v, _)) => {
                anyhow::bail!("joining bundle format {v} is not supported by this meshward")
            }
            None => anyhow::bail!("truncated joining bundle"),
        }
    }
}

/// The leader's durable record of the current joining bundle (only one at a time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleState {
    /// The bundle's random id.
    pub id: [u8; 16],
    /// SHA-256 of its one-time client certificate.
    pub cert: [u8; 32],
    /// When it expires, unix ms.
    pub expires_at_ms: u64,
    /// The node key it admitted, once used.
    pub used_by: Option<[u8; 32]>,
}

/// What the leader knows when it decides.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The current bundle, if any.
    pub bundle: Option<&'a BundleState>,
    /// The current roster.
    pub roster: &'a Roster,
    /// The installed licence, if any.
    pub licence: Option<&'a Licence>,
}

/// A joiner passed every check: write this roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admit {
    /// The bundle used.
    pub bundle: [u8; 16],
    /// The new member.
    pub member: Member,
    /// Its TLS public key, to certify.
    pub tls_key: Vec<u8>,
    /// The roster with the new member.
    pub roster: Roster,
}

/// Why a join was refused. The leader's state is unchanged (a consumed challenge aside).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// No bundle was ever created, or the client certificate is no bundle's.
    #[error(
        "no current joining bundle matches; create one on the leader with `meshward bundle create`"
    )]
    NoBundle,
    /// A newer bundle replaced this one.
    #[error(
        "this joining bundle was superseded by a newer one; use the newest bundle from `meshward bundle create`"
    )]
    Superseded,
    /// The bundle already admitted a node.
    #[error(
        "this joining bundle was already used; each bundle admits one node: create a new one with `meshward bundle create`"
    )]
    Reused,
    /// The bundle expired.
    #[error("joining bundle expired at {} (unix ms {at_ms}); create a new one on the leader with `meshward bundle create`", utc(*.at_ms))]
    Expired {
        /// When, unix ms.
        at_ms: u64,
    },
    /// The answer does not come from the cluster's MEK.
    #[error(
        "wrong MEK: the challenge answer does not match; give the MEK file written by the leader's `meshward init`"
    )]
    WrongMek,
    /// The answer was seen before, or no challenge is pending on this connection.
    #[error(
        "replayed challenge answer (or no challenge pending on this connection); each nonce is answered once: run `meshward join` again"
    )]
    Replayed,
    /// The challenge was answered too late.
    #[error("the challenge expired before it was answered; run `meshward join` again")]
    ChallengeExpired,
    /// The joiner's signature over the transcript does not verify with its node key.
    #[error("the joiner's node key signature does not verify")]
    BadSignature,
    /// No licence: a one-node cluster runs standalone.
    #[error(
        "no licence installed: without one the cluster runs standalone and joins are refused; install one on the leader with `meshward licence install FILE`"
    )]
    NoLicence,
    /// The licence ended.
    #[error("the licence expired at {} ; install a renewed licence with `meshward licence install FILE`", utc(*.at_ms))]
    LicenceExpired {
        /// When, unix ms.
        at_ms: u64,
    },
    /// One more node would exceed the licence.
    #[error(
        "the licence allows {max} nodes and the cluster has {members}; install a licence for more nodes"
    )]
    LicenceExceeded {
        /// Nodes allowed.
        max: u32,
        /// Members now.
        members: usize,
    },
    /// Another member has this address.
    #[error(
        "address {address} is already used by a cluster member; give each node a unique address"
    )]
    AddressTaken {
        /// The address.
        address: String,
    },
    /// The node key is a member already.
    #[error("this node is already a member of the cluster")]
    AlreadyMember,
    /// Too many join attempts in a short time.
    #[error(
        "too many join attempts: the leader answers {CHALLENGE_BURST} at once, then one per \
         second; try again in {retry_after_secs} s"
    )]
    Busy {
        /// When the next attempt will be answered, in whole seconds (at least one).
        retry_after_secs: u64,
    },
    /// The request is malformed.
    #[error("malformed join request: {0}")]
    Malformed(&'static str),
}

#[derive(Debug)]
struct Pending {
    nonce: [u8; 32],
    bundle: [u8; 16],
    client_cert: [u8; 32],
    member: Member,
    tls_key: Vec<u8>,
    issued_ms: u64,
}

/// Pending challenges and recently seen answers.
#[derive(Debug)]
pub struct Admission {
    rng: ChaCha20Rng,
    pending: BTreeMap<u64, Pending>,
    order: VecDeque<u64>,
    seen: VecDeque<[u8; 32]>,
    /// Rate limit of challenges, for the whole setup endpoint ([`CHALLENGE_RATE`]).
    rate: Gcra,
    counters: AdmissionCounters,
}

/// How often the bounds of [`Admission`] were hit (in `status --json` under `mesh.join`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdmissionCounters {
    /// Pending challenges dropped, oldest first, because [`MAX_PENDING`] were pending.
    pub pending_dropped: u64,
    /// Seen answers forgotten, oldest first, because [`MAX_SEEN_ANSWERS`] were remembered.
    pub seen_forgotten: u64,
    /// Hellos refused because challenges came faster than [`CHALLENGE_BURST`] and
    /// [`CHALLENGE_INTERVAL_MS`] allow.
    pub rate_limited: u64,
}

impl Admission {
    /// An empty state; nonces come from an RNG seeded with `seed` (give it OS randomness).
    pub fn new(seed: [u8; 32]) -> Admission {
        Admission {
            rng: ChaCha20Rng::from_seed(seed),
            pending: BTreeMap::new(),
            order: VecDeque::new(),
            seen: VecDeque::new(),
            rate: Gcra::new(),
            counters: AdmissionCounters::default(),
        }
    }

    /// How often the bounds were hit.
    pub fn counters(&self) -> AdmissionCounters {
        self.counters
    }

    /// Step 1: a joiner on `connection`, presenting the certificate `client_cert`, asks for a
    /// challenge. Returns the nonce to send.
    pub fn hello(
        &mut self,
        now_ms: u64,
        connection: u64,
        client_cert: [u8; 32],
        member: Member,
        tls_key: Vec<u8>,
        facts: Facts<'_>,
    ) -> Result<[u8; 32], JoinRefusal> {
        if member.address.is_empty()
            || member.address.len() > MAX_ADDRESS_BYTES
            || member
                .address
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(JoinRefusal::Malformed("bad address"));
        }
        if tls_key.len() != 65 {
            return Err(JoinRefusal::Malformed("bad TLS public key"));
        }
        let bundle = check_bundle(now_ms, client_cert, facts.bundle)?;
        admissible(now_ms, &member, facts)?;
        if let Err(limited) = self.rate.check(CHALLENGE_RATE, now_ms) {
            self.counters.rate_limited += 1;
            return Err(JoinRefusal::Busy {
                retry_after_secs: limited.retry_after_secs(),
            });
        }
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        if self.pending.len() >= MAX_PENDING
            && let Some(old) = self.order.pop_front()
        {
            self.pending.remove(&old);
            self.counters.pending_dropped += 1;
        }
        self.order.retain(|c| *c != connection);
        self.order.push_back(connection);
        self.pending.insert(
            connection,
            Pending {
                nonce,
                bundle: bundle.id,
                client_cert,
                member,
                tls_key,
                issued_ms: now_ms,
            },
        );
        Ok(nonce)
    }

    /// Step 2: the answer on `connection`. Consumes the pending challenge whatever the outcome.
    pub fn answer(
        &mut self,
        now_ms: u64,
        connection: u64,
        answer: [u8; 32],
        signature: &[u8],
        mek: &Mek,
        facts: Facts<'_>,
    ) -> Result<Admit, JoinRefusal> {
        let pending = self
            .pending
            .remove(&connection)
            .ok_or(JoinRefusal::Replayed)?;
        self.order.retain(|c| *c != connection);
        if self.seen.contains(&answer) {
            return Err(JoinRefusal::Replayed);
        }
        if self.seen.len() >= MAX_SEEN_ANSWERS {
            self.seen.pop_front();
            self.counters.seen_forgotten += 1;
        }
        self.seen.push_back(answer);
        let bundle = check_bundle(now_ms, pending.client_cert, facts.bundle)?;
        if bundle.id != pending.bundle {
            return Err(JoinRefusal::Superseded);
        }
        if now_ms.saturating_sub(pending.issued_ms) > CHALLENGE_TTL_MS {
            return Err(JoinRefusal::ChallengeExpired);
        }
        let context = context(&pending.bundle, &pending.member.key);
        if !mek.check_answer(&pending.nonce, &context, &answer) {
            return Err(JoinRefusal::WrongMek);
        }
        let key =
            VerifyingKey::from_bytes(&pending.member.key).map_err(|_| JoinRefusal::BadSignature)?;
        let signature = Signature::from_slice(signature).map_err(|_| JoinRefusal::BadSignature)?;
        key.verify_strict(
            &transcript(
                &pending.nonce,
                &pending.bundle,
                &pending.member,
                &pending.tls_key,
            ),
            &signature,
        )
        .map_err(|_| JoinRefusal::BadSignature)?;
        admissible(now_ms, &pending.member, facts)?;
        let mut roster = facts.roster.clone();
        roster.members.push(pending.member.clone());
        Ok(Admit {
            bundle: pending.bundle,
            member: pending.member,
            tls_key: pending.tls_key,
            roster,
        })
    }
}

/// What a challenge answer is bound to: the bundle and the joiner's node key.
pub fn context(bundle: &[u8; 16], node_key: &[u8; 32]) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    out.extend(bundle);
    out.extend(node_key);
    out
}

/// What the joiner signs with its node key: the nonce, bundle, key, address and TLS key.
pub fn transcript(nonce: &[u8; 32], bundle: &[u8; 16], member: &Member, tls_key: &[u8]) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    out.extend(b"transcript");
    out.extend(nonce);
    out.extend(bundle);
    out.extend(member.key);
    out.extend((member.address.len() as u64).to_be_bytes());
    out.extend(member.address.as_bytes());
    out.extend(tls_key);
    out
}

/// The joiner's side of the handshake: the answer to the leader's `nonce` with the MEK, and the
/// node key's signature over the transcript (the nonce, `bundle` id, `member` and `tls_key`).
pub fn respond(
    mek: &Mek,
    node_key: &ed25519_dalek::SigningKey,
    nonce: &[u8; 32],
    bundle: &[u8; 16],
    member: &Member,
    tls_key: &[u8],
) -> ([u8; 32], Vec<u8>) {
    use ed25519_dalek::Signer as _;
    let answer = mek.challenge_answer(nonce, &context(bundle, &member.key));
    let signature = node_key.sign(&transcript(nonce, bundle, member, tls_key));
    (answer, signature.to_bytes().to_vec())
}

/// Whether the bundle presented with `client_cert` may be used at `now_ms`.
pub fn check_bundle(
    now_ms: u64,
    client_cert: [u8; 32],
    bundle: Option<&BundleState>,
) -> Result<&BundleState, JoinRefusal> {
    let bundle = bundle.ok_or(JoinRefusal::NoBundle)?;
    if bundle.cert != client_cert {
        // Any certificate the CA issued for a bundle but that is not the current one's
        // belongs to an older bundle.
        return Err(JoinRefusal::Superseded);
    }
    if bundle.used_by.is_some() {
        return Err(JoinRefusal::Reused);
    }
    if now_ms >= bundle.expires_at_ms {
        return Err(JoinRefusal::Expired {
            at_ms: bundle.expires_at_ms,
        });
    }
    Ok(bundle)
}

/// Whether `member` may join `facts.roster` under the licence.
pub fn admissible(now_ms: u64, member: &Member, facts: Facts<'_>) -> Result<(), JoinRefusal> {
    let licence = facts.licence.ok_or(JoinRefusal::NoLicence)?;
    if licence.check_time(now_ms).is_err() {
        return Err(JoinRefusal::LicenceExpired {
            at_ms: licence.terms.expires_at_ms,
        });
    }
    let members = facts.roster.members.len();
    if members >= licence.terms.max_nodes as usize {
        return Err(JoinRefusal::LicenceExceeded {
            max: licence.terms.max_nodes,
            members,
        });
    }
    if facts.roster.contains(&member.key) {
        return Err(JoinRefusal::AlreadyMember);
    }
    if facts
        .roster
        .members
        .iter()
        .any(|m| m.address.eq_ignore_ascii_case(&member.address))
    {
        return Err(JoinRefusal::AddressTaken {
            address: member.address.clone(),
        });
    }
    Ok(())
}

/// A unix-ms time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use rand::SeedableRng as _;

    use super::*;
    use crate::licence::LicenceTerms;

    const T0: u64 = 1_000_000;

    struct World {
        mek: Mek,
        bundle: BundleState,
        roster: Roster,
        licence: Licence,
        admission: Admission,
    }

    impl World {
        fn new() -> World {
            let mek = Mek::generate(&mut ChaCha20Rng::seed_from_u64(1));
            World {
                mek,
                bundle: BundleState {
                    id: [1; 16],
                    cert: [2; 32],
                    expires_at_ms: T0 + 60_000,
                    used_by: None,
                },
                roster: Roster {
                    members: vec![Member {
                        key: SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes(),
                        address: "leader.example".into(),
                    }],
                },
                licence: LicenceTerms {
                    customer: "acme".into(),
                    max_nodes: 3,
                    expires_at_ms: T0 * 10,
                }
                .sign(&SigningKey::from_bytes(&[7; 32])),
                admission: Admission::new([3; 32]),
            }
        }

        fn facts(&self) -> Facts<'_> {
            Facts {
                bundle: Some(&self.bundle),
                roster: &self.roster,
                licence: Some(&self.licence),
            }
        }

        fn hello(
            &mut self,
            now: u64,
            conn: u64,
            joiner: &SigningKey,
            address: &str,
        ) -> Result<[u8; 32], JoinRefusal> {
            let facts = Facts {
                bundle: Some(&self.bundle),
                roster: &self.roster,
                licence: Some(&self.licence),
            };
            self.admission.hello(
                now,
                conn,
                self.bundle.cert,
                member(joiner, address),
                vec![4; 65],
                facts,
            )
        }

        fn answer_with(
            &mut self,
            now: u64,
            conn: u64,
            answer: [u8; 32],
            signature: &[u8],
        ) -> Result<Admit, JoinRefusal> {
            let facts = Facts {
                bundle: Some(&self.bundle),
                roster: &self.roster,
                licence: Some(&self.licence),
            };
            self.admission
                .answer(now, conn, answer, signature, &self.mek, facts)
        }
    }

    fn member(key: &SigningKey, address: &str) -> Member {
        Member {
            key: key.verifying_key().to_bytes(),
            address: address.into(),
        }
    }

    /// The joiner's side: the MEK answer and the transcript signature.
    fn respond(
        mek: &Mek,
        joiner: &SigningKey,
        address: &str,
        nonce: &[u8; 32],
    ) -> ([u8; 32], Vec<u8>) {
        super::respond(
            mek,
            joiner,
            nonce,
            &[1; 16],
            &member(joiner, address),
            &[4; 65],
        )
    }

    #[test]
    fn a_joiner_with_the_mek_is_admitted_with_a_new_roster() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
        let admit = w.answer_with(T0 + 10, 1, answer, &sig).unwrap();
        assert_eq!(admit.roster.members.len(), 2);
        assert_eq!(admit.member, member(&joiner, "node2.example"));
        assert_eq!(admit.bundle, [1; 16]);
    }

    #[test]
    fn rejects_a_wrong_mek_and_leaves_the_bundle_usable() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let wrong = Mek::generate(&mut ChaCha20Rng::seed_from_u64(99));
        let (answer, sig) = respond(&wrong, &joiner, "node2.example", &nonce);
        assert_eq!(
            w.answer_with(T0, 1, answer, &sig),
            Err(JoinRefusal::WrongMek)
        );
        let nonce = w.hello(T0, 2, &joiner, "node2.example").unwrap();
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
        assert!(w.answer_with(T0, 2, answer, &sig).is_ok());
    }

    #[test]
    fn rejects_a_replayed_answer_on_a_new_connection_and_a_second_answer_on_the_same() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
        // The eavesdropper records the answer; the honest join fails for another reason
        // (say the connection dropped) and the attacker replays on its own connection.
        let fresh = w.hello(T0, 2, &joiner, "node2.example").unwrap();
        assert_ne!(fresh, nonce, "nonces are fresh");
        assert!(w.answer_with(T0, 1, answer, &sig).is_ok());
        assert_eq!(
            w.answer_with(T0, 2, answer, &sig),
            Err(JoinRefusal::Replayed)
        );
        // Answering again on a connection whose challenge was consumed.
        let (answer2, sig2) = respond(&w.mek, &joiner, "node2.example", &fresh);
        assert_eq!(
            w.answer_with(T0, 2, answer2, &sig2),
            Err(JoinRefusal::Replayed)
        );
        // An answer for one nonce is wrong for another.
        let third = w.hello(T0, 3, &joiner, "node2.example").unwrap();
        let (old, sig3) = respond(&w.mek, &joiner, "node2.example", &nonce);
        let _ = third;
        assert_eq!(w.answer_with(T0, 3, old, &sig3), Err(JoinRefusal::Replayed));
    }

    #[test]
    fn an_answer_for_another_nonce_is_a_wrong_mek_answer() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &[0; 32]);
        assert_eq!(
            w.answer_with(T0, 1, answer, &sig),
            Err(JoinRefusal::WrongMek)
        );
    }

    #[test]
    fn rejects_expired_used_and_superseded_bundles_with_a_fake_clock() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
        let late = w.bundle.expires_at_ms;
        assert_eq!(
            w.answer_with(late, 1, answer, &sig),
            Err(JoinRefusal::Expired { at_ms: late })
        );
        let text = JoinRefusal::Expired { at_ms: late }.to_string();
        assert!(text.contains("1970-01-01T00:17:40Z"), "{text}");
        assert_eq!(
            w.hello(late + 1, 2, &joiner, "node2.example"),
            Err(JoinRefusal::Expired { at_ms: late })
        );
        w.bundle.used_by = Some([8; 32]);
        assert_eq!(
            w.hello(T0, 3, &joiner, "node2.example"),
            Err(JoinRefusal::Reused)
        );
        w.bundle.used_by = None;
        let nonce = w.hello(T0, 4, &joiner, "node2.example").unwrap();
        w.bundle = BundleState {
            id: [2; 16],
            cert: [3; 32],
            ..w.bundle.clone()
        };
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
        assert_eq!(
            w.answer_with(T0, 4, answer, &sig),
            Err(JoinRefusal::Superseded)
        );
        let facts = w.facts();
        assert_eq!(
            check_bundle(T0, [2; 32], facts.bundle),
            Err(JoinRefusal::Superseded)
        );
        assert_eq!(check_bundle(T0, [2; 32], None), Err(JoinRefusal::NoBundle));
    }

    #[test]
    fn a_challenge_answered_too_late_is_refused() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
        assert_eq!(
            w.answer_with(T0 + CHALLENGE_TTL_MS + 1, 1, answer, &sig),
            Err(JoinRefusal::ChallengeExpired)
        );
    }

    #[test]
    fn rejects_a_forged_key_signature() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
        let (answer, _) = respond(&w.mek, &joiner, "node2.example", &nonce);
        let (_, other) = respond(
            &w.mek,
            &SigningKey::from_bytes(&[6; 32]),
            "node2.example",
            &nonce,
        );
        assert_eq!(
            w.answer_with(T0, 1, answer, &other),
            Err(JoinRefusal::BadSignature)
        );
    }

    #[test]
    fn licence_address_and_membership_bound_who_may_join() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        assert_eq!(
            w.hello(T0, 1, &joiner, "LEADER.example"),
            Err(JoinRefusal::AddressTaken {
                address: "LEADER.example".into()
            })
        );
        assert_eq!(
            w.hello(T0, 1, &SigningKey::from_bytes(&[9; 32]), "x.example"),
            Err(JoinRefusal::AlreadyMember)
        );
        w.licence.terms.max_nodes = 1;
        assert_eq!(
            w.hello(T0, 1, &joiner, "node2.example"),
            Err(JoinRefusal::LicenceExceeded { max: 1, members: 1 })
        );
        w.licence.terms.max_nodes = 3;
        w.licence.terms.expires_at_ms = T0;
        assert!(matches!(
            w.hello(T0, 1, &joiner, "node2.example"),
            Err(JoinRefusal::LicenceExpired { .. })
        ));
        let roster = w.roster.clone();
        let facts = Facts {
            bundle: Some(&w.bundle),
            roster: &roster,
            licence: None,
        };
        assert_eq!(
            w.admission.hello(
                T0,
                1,
                w.bundle.cert,
                member(&joiner, "n"),
                vec![4; 65],
                facts
            ),
            Err(JoinRefusal::NoLicence)
        );
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        for address in ["", "a b", &"x".repeat(300)] {
            assert!(matches!(
                w.hello(T0, 1, &joiner, address),
                Err(JoinRefusal::Malformed(_))
            ));
        }
        let facts = Facts {
            bundle: Some(&w.bundle),
            roster: &w.roster,
            licence: Some(&w.licence),
        };
        assert!(matches!(
            w.admission.hello(
                T0,
                1,
                w.bundle.cert,
                member(&joiner, "n"),
                vec![4; 3],
                facts
            ),
            Err(JoinRefusal::Malformed(_))
        ));
    }

    #[test]
    fn pending_challenges_are_bounded() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        // The burst, then one per interval: within the rate limit and the bundle's minute.
        for conn in 0..(MAX_PENDING as u64 + 10) {
            let at = T0 + conn.saturating_sub(CHALLENGE_BURST - 1) * CHALLENGE_INTERVAL_MS;
            w.hello(at, conn, &joiner, "node2.example").unwrap();
        }
        assert_eq!(w.admission.pending.len(), MAX_PENDING);
        assert_eq!(w.admission.counters().pending_dropped, 10);
        // The oldest was dropped: its answer finds no challenge.
        assert_eq!(
            w.answer_with(T0, 0, [0; 32], &[]),
            Err(JoinRefusal::Replayed)
        );
    }

    #[test]
    fn challenges_beyond_the_burst_are_refused_until_the_rate_allows_more() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        for conn in 0..CHALLENGE_BURST {
            w.hello(T0, conn, &joiner, "node2.example").unwrap();
        }
        assert_eq!(
            w.hello(T0, 100, &joiner, "node2.example"),
            Err(JoinRefusal::Busy {
                retry_after_secs: 1
            })
        );
        assert_eq!(
            w.hello(
                T0 + CHALLENGE_INTERVAL_MS - 1,
                101,
                &joiner,
                "node2.example"
            ),
            Err(JoinRefusal::Busy {
                retry_after_secs: 1
            })
        );
        assert_eq!(w.admission.counters().rate_limited, 2);
        assert_eq!(w.admission.pending.len(), CHALLENGE_BURST as usize);
        // One more per interval; after a quiet spell the whole burst again.
        w.hello(T0 + CHALLENGE_INTERVAL_MS, 102, &joiner, "node2.example")
            .unwrap();
        assert_eq!(
            w.hello(T0 + CHALLENGE_INTERVAL_MS, 103, &joiner, "node2.example"),
            Err(JoinRefusal::Busy {
                retry_after_secs: 1
            })
        );
        let later = T0 + (CHALLENGE_BURST + 2) * CHALLENGE_INTERVAL_MS;
        for conn in 200..200 + CHALLENGE_BURST {
            w.hello(later, conn, &joiner, "node2.example").unwrap();
        }
        assert_eq!(w.admission.counters().rate_limited, 3);
    }

    #[test]
    fn remembered_answers_are_bounded_and_forgetting_is_counted() {
        let mut w = World::new();
        let joiner = SigningKey::from_bytes(&[5; 32]);
        // One hello per interval (the rate limit), for longer than a bundle normally lives.
        w.bundle.expires_at_ms = T0 * 10;
        for conn in 0..=(MAX_SEEN_ANSWERS as u64) {
            let at = T0 + conn * CHALLENGE_INTERVAL_MS;
            w.hello(at, conn, &joiner, "node2.example").unwrap();
            let mut answer = [0; 32];
            answer[..8].copy_from_slice(&conn.to_be_bytes());
            assert_eq!(
                w.answer_with(at, conn, answer, &[]),
                Err(JoinRefusal::WrongMek)
            );
        }
        assert_eq!(w.admission.seen.len(), MAX_SEEN_ANSWERS);
        assert_eq!(w.admission.counters().seen_forgotten, 1);
        assert_eq!(w.admission.counters().pending_dropped, 0);
    }

    #[test]
    fn garbage_bundle_files_are_refused() {
        let bundle = JoiningBundle {
            id: [1; 16],
            cluster: [2; 16],
            genesis_leader: [3; 32],
            setup_addr: "127.0.0.1:7401".into(),
            server_name: "127.0.0.1".into(),
            ca_cert: vec![1],
            client_cert: vec![2],
            client_key: vec![3],
            expires_at_ms: 9,
        };
        let bytes = bundle.encode();
        assert_eq!(JoiningBundle::decode(&bytes).unwrap(), bundle);
        assert!(!format!("{bundle:?}").contains("client_key"));
        for bad in [
            &b""[..],
            b"garbage",
            &bytes[..bytes.len() - 3],
            &bytes[..BUNDLE_MAGIC.len()],
        ] {
            assert!(JoiningBundle::decode(bad).is_err());
        }
        let mut future = bytes.clone();
        future[BUNDLE_MAGIC.len()] = 2;
        assert!(
            JoiningBundle::decode(&future)
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
        assert!(JoiningBundle::decode(&vec![0; MAX_JOINING_BUNDLE + 1]).is_err());
    }
}
