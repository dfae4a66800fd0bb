//! Unit tests of the join state machine, on a fake clock.

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
    cluster: ClusterClaim,
    admission: Admission,
}

/// The leader's cluster in [`World`].
fn our_cluster() -> ClusterClaim {
    ClusterClaim::new(
        [6; 16],
        SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes(),
        b"the CA certificate",
    )
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
                cluster: "00".repeat(16),
                max_nodes: 3,
                expires_at_ms: T0 * 10,
            }
            .sign(&SigningKey::from_bytes(&[7; 32])),
            cluster: our_cluster(),
            admission: Admission::new([3; 32]),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            bundle: Some(&self.bundle),
            roster: &self.roster,
            licence: Some(&self.licence),
            cluster: self.cluster,
        }
    }

    fn hello(
        &mut self,
        now: u64,
        conn: u64,
        joiner: &SigningKey,
        address: &str,
    ) -> Result<[u8; 32], JoinRefusal> {
        self.hello_claiming(now, conn, hello(joiner, address, our_cluster()))
    }

    fn hello_claiming(
        &mut self,
        now: u64,
        conn: u64,
        hello: Hello,
    ) -> Result<[u8; 32], JoinRefusal> {
        let facts = Facts {
            bundle: Some(&self.bundle),
            roster: &self.roster,
            licence: Some(&self.licence),
            cluster: self.cluster,
        };
        self.admission
            .hello(now, conn, self.bundle.cert, hello, facts)
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
            cluster: self.cluster,
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

fn hello(key: &SigningKey, address: &str, claim: ClusterClaim) -> Hello {
    Hello {
        member: member(key, address),
        tls_key: vec![4; 65],
        claim,
    }
}

/// The joiner's side: the MEK answer and the transcript signature.
fn respond(mek: &Mek, joiner: &SigningKey, address: &str, nonce: &[u8; 32]) -> ([u8; 32], Vec<u8>) {
    super::respond(
        mek,
        joiner,
        nonce,
        &[1; 16],
        &hello(joiner, address, our_cluster()),
    )
}

#[test]
fn a_bundle_naming_another_cluster_is_refused_at_hello_and_stays_usable() {
    let mut w = World::new();
    let joiner = SigningKey::from_bytes(&[5; 32]);
    let ours = our_cluster();
    let altered = [
        (
            "cluster id",
            ClusterClaim {
                cluster: [7; 16],
                ..ours
            },
        ),
        (
            "genesis leader key",
            ClusterClaim {
                genesis_leader: [8; 32],
                ..ours
            },
        ),
        (
            "cluster CA certificate",
            ClusterClaim::new(ours.cluster, ours.genesis_leader, b"another CA"),
        ),
    ];
    for (conn, (field, claim)) in (1..).zip(altered) {
        assert_eq!(
            w.hello_claiming(T0, conn, hello(&joiner, "node2.example", claim)),
            Err(JoinRefusal::ForeignBundle { field })
        );
        let text = JoinRefusal::ForeignBundle { field }.to_string();
        assert!(
            text.contains(field) && text.contains("stays usable"),
            "{text}"
        );
    }
    // Nothing is pending for a refused hello, and the bundle still admits its joiner.
    assert!(w.admission.pending.is_empty());
    let nonce = w.hello(T0, 9, &joiner, "node2.example").unwrap();
    let (answer, sig) = respond(&w.mek, &joiner, "node2.example", &nonce);
    assert!(w.answer_with(T0, 9, answer, &sig).is_ok());
}

#[test]
fn the_transcript_signature_covers_the_claim() {
    let mut w = World::new();
    let joiner = SigningKey::from_bytes(&[5; 32]);
    let nonce = w.hello(T0, 1, &joiner, "node2.example").unwrap();
    // Signed for another cluster's CA: the signature does not verify for ours.
    let other = ClusterClaim::new([6; 16], our_cluster().genesis_leader, b"another CA");
    let (answer, sig) = super::respond(
        &w.mek,
        &joiner,
        &nonce,
        &[1; 16],
        &hello(&joiner, "node2.example", other),
    );
    assert_eq!(
        w.answer_with(T0, 1, answer, &sig),
        Err(JoinRefusal::BadSignature)
    );
}

#[test]
fn a_claim_names_the_first_field_that_differs() {
    let ours = our_cluster();
    assert_eq!(ours.differs_from(&ours), None);
    let bundle = JoiningBundle {
        id: [1; 16],
        cluster: ours.cluster,
        genesis_leader: ours.genesis_leader,
        setup_addr: "127.0.0.1:7401".into(),
        server_name: "127.0.0.1".into(),
        ca_cert: b"the CA certificate".to_vec(),
        client_cert: vec![2],
        client_key: vec![3],
        expires_at_ms: 9,
    };
    assert_eq!(ClusterClaim::of_bundle(&bundle), ours);
    let everything = ClusterClaim {
        cluster: [0; 16],
        genesis_leader: [0; 32],
        ca_cert: [0; 32],
    };
    assert_eq!(everything.differs_from(&ours), Some("cluster id"));
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
        cluster: w.cluster,
    };
    assert_eq!(
        w.admission.hello(
            T0,
            1,
            w.bundle.cert,
            hello(&joiner, "n", our_cluster()),
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
        cluster: w.cluster,
    };
    let short_key = Hello {
        tls_key: vec![4; 3],
        ..hello(&joiner, "n", our_cluster())
    };
    assert!(matches!(
        w.admission.hello(T0, 1, w.bundle.cert, short_key, facts),
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

/// A joining bundle of made-up fields (also the joining codes' tests').
pub(super) fn sample_bundle() -> JoiningBundle {
    JoiningBundle {
        id: [1; 16],
        cluster: [2; 16],
        genesis_leader: [3; 32],
        setup_addr: "127.0.0.1:7401".into(),
        server_name: "127.0.0.1".into(),
        ca_cert: vec![1],
        client_cert: vec![2],
        client_key: vec![3],
        expires_at_ms: 9,
    }
}

#[test]
fn garbage_bundle_files_are_refused() {
    let bundle = sample_bundle();
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
