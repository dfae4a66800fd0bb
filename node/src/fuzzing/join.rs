//! The join state machine as a fuzz target: a leader's setup handshakes driven by fuzzer
//! bytes, on a fake clock.

use super::*;

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
pub(super) fn join_cluster() -> ClusterClaim {
    ClusterClaim::new(
        CLUSTER.0,
        key(1).verifying_key().to_bytes(),
        b"the cluster CA",
    )
}

/// What a hello with `flags` claims: the leader's cluster, with the fields the flags name
/// altered.
pub(super) fn join_claim(flags: u8) -> ClusterClaim {
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
pub(super) enum JoinOutcome {
    Challenge(Result<[u8; 32], JoinRefusal>),
    Answer(Result<Admit, JoinRefusal>),
}

/// The licence of the [`join_setup`] cluster: 3 nodes, until long after the run.
pub(super) fn join_licence() -> Licence {
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
pub(super) fn join_bundle_state(n: u8, now_ms: u64) -> BundleState {
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

pub(super) fn run_join_setup(data: &[u8]) -> Vec<JoinOutcome> {
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
pub(super) fn join_seeds() -> Vec<Vec<u8>> {
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
