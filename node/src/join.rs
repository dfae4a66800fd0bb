//! The leader's side of the join protocol, as a pure state machine: no socket, store or clock
//! (time is an argument, randomness a seeded RNG).
//!
//! 1. The joiner connects to the setup endpoint with the bundle's one-time client certificate
//!    and sends a [`Hello`]: its node key, address and TLS public key, and what its bundle says
//!    about the cluster (a [`ClusterClaim`]: cluster id, genesis leader key, CA certificate
//!    hash). [`Admission::hello`] checks that the claim is this leader's cluster, the bundle
//!    (current, unused, unexpired, and this connection's certificate is the bundle's) and that
//!    the node is admissible (licence, unique address and key), then returns a fresh random
//!    nonce bound to this connection. The leader's answer names its own claim, and the joiner
//!    compares it with its bundle before it answers.
//! 2. The joiner answers with `Mek::challenge_answer(nonce, context(bundle id, node key))` and
//!    an ed25519 signature of the [`transcript`] (which covers the claim) by its node key.
//!    [`Admission::answer`] consumes the connection's pending challenge (single use), refuses an
//!    answer it has seen before (a replay), checks the MEK answer in constant time, the
//!    signature, and everything of step 1 again, and returns an [`Admit`]: the new roster to
//!    write.
//! 3. The caller then, in this order: issues the node certificate, marks the bundle used
//!    durably (the arbiter when two joiners race), writes the roster record, and answers.
//!
//! Everything the joiner checks in the leader's final answer that depends on its bundle (the
//! cluster id and genesis key the chain is verified from, the CA certificate) is checked by the
//! leader at step 1, before anything is committed: a bundle with one of those fields altered is
//! refused at hello, the bundle stays usable, and the leader never admits a member whose joiner
//! would then refuse the answer (a ghost member that would count toward the majority and the
//! licence).
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
use sha2::{Digest as _, Sha256};

pub mod code;
pub mod wire;

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
    /// This leader's cluster, as a joiner's bundle must name it.
    pub cluster: ClusterClaim,
}

/// What a joining bundle says about the cluster it joins: everything of the bundle the joiner
/// later checks the leader's answer against. A joiner sends it in its hello; the leader
/// refuses a claim that is not its own before it commits anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterClaim {
    /// The cluster id (the trust anchor's).
    pub cluster: [u8; 16],
    /// The genesis leader's key (the trust anchor's).
    pub genesis_leader: [u8; 32],
    /// SHA-256 of the cluster CA certificate (DER).
    pub ca_cert: [u8; 32],
}

impl ClusterClaim {
    /// The claim of a cluster with this anchor and CA certificate (DER).
    pub fn new(cluster: [u8; 16], genesis_leader: [u8; 32], ca_cert: &[u8]) -> ClusterClaim {
        ClusterClaim {
            cluster,
            genesis_leader,
            ca_cert: Sha256::digest(ca_cert).into(),
        }
    }

    /// What `bundle` claims.
    pub fn of_bundle(bundle: &JoiningBundle) -> ClusterClaim {
        ClusterClaim::new(bundle.cluster, bundle.genesis_leader, &bundle.ca_cert)
    }

    /// The first field in which `self` (a joiner's claim) differs from `ours`, named for the
    /// operator; `None` when they agree.
    pub fn differs_from(&self, ours: &ClusterClaim) -> Option<&'static str> {
        if self.cluster != ours.cluster {
            Some("cluster id")
        } else if self.genesis_leader != ours.genesis_leader {
            Some("genesis leader key")
        } else if self.ca_cert != ours.ca_cert {
            Some("cluster CA certificate")
        } else {
            None
        }
    }
}

/// A joiner's hello: who it is and which cluster its bundle is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Its node key and address.
    pub member: Member,
    /// The raw P-256 public key its node certificate should carry.
    pub tls_key: Vec<u8>,
    /// What its bundle says about the cluster.
    pub claim: ClusterClaim,
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
    /// The bundle names another cluster than this leader's (its cluster id, genesis leader key
    /// or CA certificate differs): it was altered, or belongs to another cluster. Refused at
    /// hello; the bundle stays usable.
    #[error(
        "the joining bundle's {field} is not this leader's: the bundle file was altered or \
         belongs to another cluster; nothing was changed and the bundle stays usable: join with \
         the file exactly as `meshward bundle create` wrote it"
    )]
    ForeignBundle {
        /// Which field differs.
        field: &'static str,
    },
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
    hello: Hello,
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
        hello: Hello,
        facts: Facts<'_>,
    ) -> Result<[u8; 32], JoinRefusal> {
        let member = &hello.member;
        if member.address.is_empty()
            || member.address.len() > MAX_ADDRESS_BYTES
            || member
                .address
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(JoinRefusal::Malformed("bad address"));
        }
        if hello.tls_key.len() != 65 {
            return Err(JoinRefusal::Malformed("bad TLS public key"));
        }
        check_claim(&hello.claim, facts)?;
        let bundle = check_bundle(now_ms, client_cert, facts.bundle)?;
        admissible(now_ms, member, facts)?;
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
                hello,
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
        let hello = pending.hello;
        let context = context(&pending.bundle, &hello.member.key);
        if !mek.check_answer(&pending.nonce, &context, &answer) {
            return Err(JoinRefusal::WrongMek);
        }
        let key =
            VerifyingKey::from_bytes(&hello.member.key).map_err(|_| JoinRefusal::BadSignature)?;
        let signature = Signature::from_slice(signature).map_err(|_| JoinRefusal::BadSignature)?;
        key.verify_strict(
            &transcript(&pending.nonce, &pending.bundle, &hello),
            &signature,
        )
        .map_err(|_| JoinRefusal::BadSignature)?;
        check_claim(&hello.claim, facts)?;
        admissible(now_ms, &hello.member, facts)?;
        let mut roster = facts.roster.clone();
        roster.members.push(hello.member.clone());
        Ok(Admit {
            bundle: pending.bundle,
            member: hello.member,
            tls_key: hello.tls_key,
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

/// What the joiner signs with its node key: the nonce, bundle, key, address, TLS key and the
/// cluster its bundle names.
pub fn transcript(nonce: &[u8; 32], bundle: &[u8; 16], hello: &Hello) -> Vec<u8> {
    let member = &hello.member;
    let mut out = DOMAIN.to_vec();
    out.extend(b"transcript");
    out.extend(nonce);
    out.extend(bundle);
    out.extend(member.key);
    out.extend((member.address.len() as u64).to_be_bytes());
    out.extend(member.address.as_bytes());
    out.extend((hello.tls_key.len() as u64).to_be_bytes());
    out.extend(&hello.tls_key);
    out.extend(hello.claim.cluster);
    out.extend(hello.claim.genesis_leader);
    out.extend(hello.claim.ca_cert);
    out
}

/// The joiner's side of the handshake: the answer to the leader's `nonce` with the MEK, and the
/// node key's signature over the transcript (the nonce, `bundle` id and the `hello`).
pub fn respond(
    mek: &Mek,
    node_key: &ed25519_dalek::SigningKey,
    nonce: &[u8; 32],
    bundle: &[u8; 16],
    hello: &Hello,
) -> ([u8; 32], Vec<u8>) {
    use ed25519_dalek::Signer as _;
    let answer = mek.challenge_answer(nonce, &context(bundle, &hello.member.key));
    let signature = node_key.sign(&transcript(nonce, bundle, hello));
    (answer, signature.to_bytes().to_vec())
}

/// Whether a joiner's `claim` names this leader's cluster (`facts.cluster`).
pub fn check_claim(claim: &ClusterClaim, facts: Facts<'_>) -> Result<(), JoinRefusal> {
    match claim.differs_from(&facts.cluster) {
        Some(field) => Err(JoinRefusal::ForeignBundle { field }),
        None => Ok(()),
    }
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
mod tests;
