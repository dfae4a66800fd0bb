use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

mod checkpoint;
mod handover;

const CLUSTER: ClusterId = ClusterId([7; 16]);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn pk(n: u8) -> [u8; 32] {
    key(n).verifying_key().to_bytes()
}

fn anchor() -> TrustAnchor {
    TrustAnchor {
        cluster: CLUSTER,
        genesis_leader: pk(1),
    }
}

/// Roster of the nodes with key seeds `seeds`.
fn roster(seeds: impl IntoIterator<Item = u8>) -> Roster {
    Roster {
        members: seeds
            .into_iter()
            .map(|n| Member {
                key: pk(n),
                address: format!("pam{n}.example"),
            })
            .collect(),
    }
}

fn accept(chain: &mut Chain, record: &SignedRecord) {
    let verified = chain.verify(record).expect("record verifies");
    chain
        .apply(verified)
        .expect("verified against the current state");
}

/// Verifies a record that must be refused and checks the chain did not change.
fn refuse(chain: &Chain, record: &SignedRecord) -> VerifyError {
    let before = chain.clone();
    let err = chain.verify(record).expect_err("record is refused");
    assert_eq!(chain, &before, "a refusal leaves the chain unchanged");
    err
}

/// Chain after genesis (leader 1, roster 1..=5) and one config record.
fn started() -> (Chain, Vec<SignedRecord>) {
    let mut chain = Chain::new(anchor());
    let genesis = chain.sign_next(&key(1), RecordKind::Genesis, roster(1..=5).encode());
    accept(&mut chain, &genesis);
    let config = chain.sign_next(&key(1), RecordKind::Config, b"retention=30d".to_vec());
    accept(&mut chain, &config);
    (chain, vec![genesis, config])
}

fn handover_payload(next_epoch: u64, next_leader: u8, endorsements: Vec<Endorsement>) -> Vec<u8> {
    Handover {
        next_epoch,
        next_leader: pk(next_leader),
        endorsements,
        forced: false,
    }
    .encode()
}

fn endorse(
    chain: &Chain,
    candidate: u8,
    endorsers: impl IntoIterator<Item = u8>,
) -> Vec<Endorsement> {
    let candidacy = chain.candidacy(pk(candidate));
    endorsers
        .into_iter()
        .map(|n| Endorsement::sign(&key(n), &candidacy))
        .collect()
}

/// Re-signs `record` with `signer` after `change` edited it.
fn resigned(
    record: &SignedRecord,
    signer: u8,
    change: impl FnOnce(&mut MasteredRecord),
) -> SignedRecord {
    let mut inner = record.record.clone();
    change(&mut inner);
    inner.sign(&key(signer))
}

#[test]
fn genesis_and_later_records_advance_the_chain() {
    let (chain, records) = started();
    assert_eq!(chain.cluster(), CLUSTER);
    assert_eq!(chain.epoch(), 1);
    assert_eq!(chain.leader(), pk(1));
    assert_eq!(chain.last_version(), 2);
    assert_eq!(chain.last_hash(), records[1].hash());
    assert_eq!(chain.roster(), &roster(1..=5));
    assert_eq!(records[1].record.prev, records[0].hash());
}

#[test]
fn rebuild_from_stored_records_reaches_the_same_state() {
    let (mut chain, mut records) = started();
    let handover = chain.sign_next(
        &key(1),
        RecordKind::Handover,
        handover_payload(2, 2, endorse(&chain, 2, [1, 2, 3])),
    );
    accept(&mut chain, &handover);
    records.push(handover);
    let user = chain.sign_next(&key(2), RecordKind::User, b"alice".to_vec());
    accept(&mut chain, &user);
    records.push(user);
    let rebuilt = Chain::rebuild(anchor(), &records).expect("stored records verify");
    assert_eq!(rebuilt, chain);
    let (replayed, verified) = Chain::replay(anchor(), &records).expect("stored records verify");
    assert_eq!(replayed, chain);
    let verified: Vec<SignedRecord> = verified.into_iter().map(Verified::into_inner).collect();
    assert_eq!(verified, records);
}

#[test]
fn rebuild_names_the_first_record_that_does_not_verify() {
    let (_, mut records) = started();
    records[1].signature[0] ^= 1;
    let err = Chain::rebuild(anchor(), &records).expect_err("tampered store");
    assert_eq!(err.index, 1);
    assert_eq!(err.source, VerifyError::BadSignature);
}

#[test]
fn refuses_oversize_payload_before_any_other_check() {
    let (chain, _) = started();
    let mut record = chain.sign_next(&key(1), RecordKind::Config, vec![0; MAX_PAYLOAD_BYTES + 1]);
    record.record.cluster = ClusterId([9; 16]);
    record.signature = [0; 64];
    assert_eq!(
        refuse(&chain, &record),
        VerifyError::Oversize {
            len: MAX_PAYLOAD_BYTES + 1,
            max: MAX_PAYLOAD_BYTES
        }
    );
    let at_limit = chain.sign_next(&key(1), RecordKind::Config, vec![0; MAX_PAYLOAD_BYTES]);
    assert!(
        chain.verify(&at_limit).is_ok(),
        "the limit itself is allowed"
    );
}

#[test]
fn refuses_record_for_another_cluster() {
    let (chain, _) = started();
    let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    let other = resigned(&good, 1, |r| r.cluster = ClusterId([8; 16]));
    assert_eq!(
        refuse(&chain, &other),
        VerifyError::WrongCluster {
            expected: CLUSTER,
            got: ClusterId([8; 16])
        }
    );
}

#[test]
fn refuses_record_with_bad_signature() {
    let (chain, _) = started();
    let mut record = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    record.record.payload = b"y".to_vec();
    assert_eq!(refuse(&chain, &record), VerifyError::BadSignature);
    let mut not_a_key = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    not_a_key.signer = [0xff; 32];
    assert_eq!(refuse(&chain, &not_a_key), VerifyError::BadSignature);
}

#[test]
fn refuses_record_signed_by_someone_other_than_the_leader() {
    let (chain, _) = started();
    let record = chain.sign_next(&key(2), RecordKind::Config, b"x".to_vec());
    assert_eq!(
        refuse(&chain, &record),
        VerifyError::UnknownSigner {
            epoch: 1,
            signer: pk(2)
        }
    );
}

#[test]
fn refuses_record_of_the_next_epoch_before_its_handover() {
    let (chain, _) = started();
    let good = chain.sign_next(&key(2), RecordKind::Config, b"x".to_vec());
    let early = resigned(&good, 2, |r| r.epoch = 2);
    assert_eq!(
        refuse(&chain, &early),
        VerifyError::UnknownSigner {
            epoch: 2,
            signer: pk(2)
        }
    );
    // Even the current leader cannot jump epochs without a hand-over.
    let jump = resigned(&good, 1, |r| r.epoch = 2);
    assert_eq!(
        refuse(&chain, &jump),
        VerifyError::UnknownSigner {
            epoch: 2,
            signer: pk(1)
        }
    );
}

#[test]
fn refuses_replay_of_an_applied_record_as_rollback() {
    let (chain, records) = started();
    for (record, got) in records.iter().zip([1, 2]) {
        assert_eq!(
            refuse(&chain, record),
            VerifyError::Rollback { got, have: 2 }
        );
    }
}

#[test]
fn refuses_lower_version_as_rollback() {
    let (chain, _) = started();
    let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    let old = resigned(&good, 1, |r| r.version = 2);
    assert_eq!(
        refuse(&chain, &old),
        VerifyError::Rollback { got: 2, have: 2 }
    );
    let zero = resigned(&good, 1, |r| r.version = 0);
    assert_eq!(
        refuse(&chain, &zero),
        VerifyError::Rollback { got: 0, have: 2 }
    );
}

#[test]
fn refuses_version_gap() {
    let (chain, _) = started();
    let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    let ahead = resigned(&good, 1, |r| r.version = 5);
    assert_eq!(
        refuse(&chain, &ahead),
        VerifyError::VersionGap {
            expected: 3,
            got: 5
        }
    );
    let max = resigned(&good, 1, |r| r.version = u64::MAX);
    assert!(matches!(
        refuse(&chain, &max),
        VerifyError::VersionGap { .. }
    ));
}

#[test]
fn refuses_record_that_does_not_extend_our_last_record() {
    let (chain, records) = started();
    let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    let fork = resigned(&good, 1, |r| r.prev = records[0].hash());
    assert_eq!(
        refuse(&chain, &fork),
        VerifyError::BrokenChain {
            version: 3,
            expected: records[1].hash(),
            got: records[0].hash()
        }
    );
}

#[test]
fn refuses_first_record_that_is_not_genesis_and_a_second_genesis() {
    let empty = Chain::new(anchor());
    let config = empty.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    assert_eq!(
        refuse(&empty, &config),
        VerifyError::MisplacedGenesis {
            version: 1,
            kind: RecordKind::Config
        }
    );
    let (chain, _) = started();
    let again = chain.sign_next(&key(1), RecordKind::Genesis, roster(1..=3).encode());
    assert_eq!(
        refuse(&chain, &again),
        VerifyError::MisplacedGenesis {
            version: 3,
            kind: RecordKind::Genesis
        }
    );
}

#[test]
fn refuses_genesis_signed_by_a_key_other_than_the_anchor() {
    let empty = Chain::new(anchor());
    let genesis = empty.sign_next(&key(2), RecordKind::Genesis, roster(1..=3).encode());
    assert!(matches!(
        refuse(&empty, &genesis),
        VerifyError::UnknownSigner { epoch: 1, .. }
    ));
}

#[test]
fn refuses_malformed_roster_payloads() {
    let (chain, _) = started();
    let garbage = chain.sign_next(&key(1), RecordKind::Roster, vec![0xff; 7]);
    assert!(matches!(
        refuse(&chain, &garbage),
        VerifyError::BadPayload {
            kind: RecordKind::Roster,
            source: PayloadError::Malformed(_)
        }
    ));
    let mut trailing = roster(1..=3).encode();
    trailing.push(0);
    let mut twice = roster(1..=3);
    twice.members.push(twice.members[0].clone());
    let mut long = roster(1..=3);
    long.members[1].address = "a".repeat(MAX_ADDRESS_BYTES + 1);
    let mut bad_key = roster(1..=3);
    bad_key.members[2].key = [0xff; 32];
    let cases = [
        (trailing, PayloadError::TrailingBytes { extra: 1 }),
        (Roster::default().encode(), PayloadError::EmptyRoster),
        (twice.encode(), PayloadError::DuplicateMember { key: pk(1) }),
        (
            long.encode(),
            PayloadError::AddressTooLong {
                index: 1,
                len: MAX_ADDRESS_BYTES + 1,
                max: MAX_ADDRESS_BYTES,
            },
        ),
        (
            bad_key.encode(),
            PayloadError::InvalidMemberKey { index: 2 },
        ),
    ];
    for (payload, source) in cases {
        let record = chain.sign_next(&key(1), RecordKind::Roster, payload);
        assert_eq!(
            refuse(&chain, &record),
            VerifyError::BadPayload {
                kind: RecordKind::Roster,
                source
            }
        );
    }
    let big = Roster {
        members: (0..=MAX_ROSTER_MEMBERS)
            .map(|i| Member {
                key: [0; 32],
                address: i.to_string(),
            })
            .collect(),
    };
    assert_eq!(
        Roster::decode(&big.encode()),
        Err(PayloadError::TooManyMembers {
            got: MAX_ROSTER_MEMBERS + 1,
            max: MAX_ROSTER_MEMBERS
        })
    );
}

#[test]
fn roster_record_replaces_the_roster_used_for_majority() {
    let (mut chain, _) = started();
    let shrink = chain.sign_next(&key(1), RecordKind::Roster, roster([1, 2, 3]).encode());
    accept(&mut chain, &shrink);
    assert_eq!(chain.roster(), &roster([1, 2, 3]));
    // Two of three is now a majority, and node 4 is no longer a member.
    let endorsements = endorse(&chain, 2, [2, 4]);
    let outsider = chain.sign_next(
        &key(2),
        RecordKind::Handover,
        handover_payload(2, 2, endorsements),
    );
    assert!(matches!(
        refuse(&chain, &outsider),
        VerifyError::BadEndorsement { .. }
    ));
    let endorsements = endorse(&chain, 2, [2, 3]);
    let handover = chain.sign_next(
        &key(2),
        RecordKind::Handover,
        handover_payload(2, 2, endorsements),
    );
    accept(&mut chain, &handover);
    assert_eq!(chain.leader(), pk(2));
}

#[test]
fn verified_record_cannot_be_applied_after_the_chain_moved() {
    let (mut chain, _) = started();
    let a = chain.sign_next(&key(1), RecordKind::Config, b"a".to_vec());
    let b = chain.sign_next(&key(1), RecordKind::Config, b"b".to_vec());
    let verified_a = chain.verify(&a).expect("a verifies");
    let verified_b = chain.verify(&b).expect("b verifies");
    assert_eq!(verified_a.hash(), a.hash());
    chain.apply(verified_a).expect("a applies");
    let before = chain.clone();
    let err = chain
        .apply(verified_b)
        .expect_err("b was verified against the old state");
    assert_eq!(*err.record, b);
    assert_eq!(chain, before);
    // A record verified by another chain cannot advance this one either.
    let other = Chain::new(TrustAnchor {
        cluster: CLUSTER,
        genesis_leader: pk(2),
    });
    let genesis = other.sign_next(&key(2), RecordKind::Genesis, roster([2]).encode());
    let verified = other.verify(&genesis).expect("other genesis verifies");
    let mut fresh = Chain::new(anchor());
    assert!(fresh.apply(verified).is_err());
    assert_eq!(fresh, Chain::new(anchor()));
}

#[test]
fn encoding_round_trips_and_refuses_malformed_bytes() {
    let (chain, _) = started();
    let record = chain.sign_next(&key(1), RecordKind::Grant, b"alice:admin:prod".to_vec());
    let bytes = record.encode();
    assert_eq!(bytes.len(), MIN_ENCODED_BYTES + 16);
    assert_eq!(SignedRecord::decode(&bytes), Ok(record.clone()));

    let mut format = bytes.clone();
    format[0] = 2;
    assert_eq!(
        SignedRecord::decode(&format),
        Err(DecodeError::UnknownFormat { got: 2 })
    );
    let mut kind = bytes.clone();
    let unknown = RecordKind::ALL.len() as u8;
    kind[1 + 64] = unknown;
    assert_eq!(
        SignedRecord::decode(&kind),
        Err(DecodeError::UnknownKind { code: unknown })
    );
    let mut long = bytes.clone();
    long[1 + 65..1 + 69].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        SignedRecord::decode(&long),
        Err(DecodeError::PayloadTooLarge { .. })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        SignedRecord::decode(&trailing),
        Err(DecodeError::LengthMismatch { .. })
    ));
    assert_eq!(
        SignedRecord::decode(&bytes[..10]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(SignedRecord::decode(&[]), Err(DecodeError::Truncated));
    assert!(matches!(
        SignedRecord::decode(&vec![1; MAX_ENCODED_BYTES + 1]),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn record_hash_covers_signed_bytes_signer_and_signature() {
    let (chain, _) = started();
    let record = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    let signed = record.record.signing_bytes();
    assert!(signed.starts_with(b"meshward/mastered/v1\0"));
    assert_eq!(signed.len(), RECORD_DOMAIN.len() + HEADER_BYTES + 1);
    assert_eq!(
        &signed[RECORD_DOMAIN.len() + 16..][..8],
        &1u64.to_be_bytes()
    );
    assert_eq!(
        &signed[RECORD_DOMAIN.len() + 24..][..8],
        &3u64.to_be_bytes()
    );
    let mut hasher = Sha256::new();
    hasher.update(&signed);
    hasher.update(record.signer);
    hasher.update(record.signature);
    assert_eq!(record.hash(), RecordHash(hasher.finalize().into()));
    // The wire encoding is the format byte, the signed bytes minus the domain, the signer
    // and the signature.
    let wire = record.encode();
    assert_eq!(wire[0], WIRE_FORMAT);
    assert_eq!(&wire[1..wire.len() - 96], &signed[RECORD_DOMAIN.len()..]);
    assert_eq!(&wire[wire.len() - 96..][..32], &record.signer);
}

#[test]
fn record_kind_names_and_codes_are_stable() {
    for (code, kind) in RecordKind::ALL.into_iter().enumerate() {
        assert_eq!(kind.code() as usize, code);
        assert_eq!(RecordKind::from_code(kind.code()), Some(kind));
        assert_eq!(kind.as_str().parse::<RecordKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(RecordKind::from_code(RecordKind::ALL.len() as u8), None);
    assert_eq!(RecordKind::SealedSecret.code(), 11);
    assert!("Genesis".parse::<RecordKind>().is_err());
    assert_eq!(RecordKind::PasswordPolicy.as_str(), "password-policy");
}

#[test]
fn ids_display_as_short_hex() {
    let id = ClusterId([0xab; 16]);
    assert_eq!(id.to_string(), "abababab");
    assert_eq!(id.to_hex().len(), 32);
    assert_eq!(RecordHash([1; 32]).to_string(), "01010101");
    assert_eq!(RecordHash::ZERO.to_hex(), "0".repeat(64));
}

#[test]
fn error_messages_are_lowercase_and_say_what_to_do() {
    let err = VerifyError::StaleEpoch {
        got: 1,
        high_water: 2,
    };
    let text = err.to_string();
    assert!(
        text.starts_with("mastered record is from epoch 1"),
        "{text}"
    );
    assert!(text.contains("drop it"));
}

/// A valid next record for the chain from `started()`, chosen by `(shape, pick, payload)`.
fn candidate(chain: &Chain, shape: u8, pick: u8, payload: Vec<u8>) -> SignedRecord {
    let member = 1 + pick % 5;
    match shape % 4 {
        0 => {
            let opaque = &RecordKind::ALL[2..9];
            let kind = opaque[usize::from(pick) % opaque.len()];
            chain.sign_next(&key(1), kind, payload)
        }
        1 => chain.sign_next(&key(1), RecordKind::Roster, roster(1..=member).encode()),
        2 => {
            let next = 2 + pick % 4;
            let third = if next == 5 { 2 } else { next + 1 };
            let endorsements = endorse(chain, next, [1, next, third]);
            chain.sign_next(
                &key(1),
                RecordKind::Handover,
                handover_payload(2, next, endorsements),
            )
        }
        _ => {
            let member = 2 + pick % 4;
            let endorsers = (0..3u8).map(|i| 1 + (member - 1 + i) % 5);
            let endorsements = endorse(chain, member, endorsers);
            chain.sign_next(
                &key(member),
                RecordKind::Handover,
                handover_payload(2, member, endorsements),
            )
        }
    }
}

fn candidate_parts() -> impl Strategy<Value = (u8, u8, Vec<u8>)> {
    (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..48),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn verification_never_accepts_a_bit_flipped_record(
        (shape, pick, payload) in candidate_parts(),
        flips in prop::collection::vec((any::<Index>(), 0u8..8), 1..=8),
    ) {
        let (chain, _) = started();
        let record = candidate(&chain, shape, pick, payload);
        prop_assert!(chain.verify(&record).is_ok(), "the unmutated record is accepted");
        let original = record.encode();
        // Distinct (byte, bit) pairs, so the flips never cancel out.
        let flips: BTreeSet<(usize, u8)> =
            flips.iter().map(|(at, bit)| (at.index(original.len()), *bit)).collect();
        let mut bytes = original.clone();
        for (at, bit) in flips {
            bytes[at] ^= 1 << bit;
        }
        prop_assert_ne!(&bytes, &original);
        if let Ok(mutated) = SignedRecord::decode(&bytes) {
            prop_assert_ne!(&mutated, &record);
            prop_assert!(
                chain.verify(&mutated).is_err(),
                "mutated record accepted: {:?}",
                mutated
            );
        }
    }

    #[test]
    fn verification_never_accepts_a_record_with_swapped_fields(
        (shape, pick, payload) in candidate_parts(),
        other_payload in prop::collection::vec(any::<u8>(), 0..48),
        other_signer in 2u8..=9,
        kind_shift in 1usize..10,
    ) {
        let (chain, _) = started();
        let record = candidate(&chain, shape, pick, payload);
        prop_assert!(chain.verify(&record).is_ok(), "the unmutated record is accepted");

        let mut swapped = record.clone();
        std::mem::swap(&mut swapped.record.epoch, &mut swapped.record.version);
        prop_assert!(chain.verify(&swapped).is_err(), "epoch/version swap accepted");

        let mut signer = record.clone();
        signer.signer = pk(other_signer);
        if signer.signer != record.signer {
            prop_assert!(chain.verify(&signer).is_err(), "signer swap accepted");
        }
        let resigned_by_other = resigned(&record, other_signer, |_| {});
        // A hand-over endorsed by a majority, its next leader included, is valid signed by
        // the leader (planned) or by that next leader (failover): both may sign it.
        let next_leader_may_sign = record.record.kind == RecordKind::Handover
            && Handover::decode(&record.record.payload)
                .is_ok_and(|h| h.next_leader == pk(other_signer));
        if resigned_by_other.signer != record.signer && !next_leader_may_sign {
            prop_assert!(
                chain.verify(&resigned_by_other).is_err(),
                "re-signed by a non-leader accepted"
            );
        }

        let other = chain.sign_next(&key(1), RecordKind::Config, other_payload);
        if other.record.payload != record.record.payload {
            let mut a = record.clone();
            let mut b = other.clone();
            std::mem::swap(&mut a.record.payload, &mut b.record.payload);
            prop_assert!(chain.verify(&a).is_err(), "payload swap accepted");
            prop_assert!(chain.verify(&b).is_err(), "payload swap accepted");
        }

        let mut kind = record.clone();
        let code =
            (usize::from(record.record.kind.code()) + kind_shift) % RecordKind::ALL.len();
        kind.record.kind = RecordKind::ALL[code];
        prop_assert!(chain.verify(&kind).is_err(), "kind swap accepted");
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (chain, _) = started();
        if let Ok(record) = SignedRecord::decode(&bytes) {
            let _ = chain.verify(&record);
        }
        let _ = Roster::decode(&bytes);
        let _ = Handover::decode(&bytes);
    }

    #[test]
    fn decoding_a_cut_or_extended_record_fails(
        (shape, pick, payload) in candidate_parts(),
        cut in any::<Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let (chain, _) = started();
        let bytes = candidate(&chain, shape, pick, payload).encode();
        prop_assert!(SignedRecord::decode(&bytes[..cut.index(bytes.len())]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(SignedRecord::decode(&longer).is_err());
    }
}

#[test]
fn the_genesis_names_the_licence_issuer_for_good_and_old_geneses_have_none() {
    let issuer = pk(42);
    let genesis = Genesis {
        roster: roster([1, 2]),
        licence_issuer: Some(issuer),
    };
    let mut chain = Chain::new(anchor());
    assert_eq!(chain.licence_issuer(), None);
    let record = chain.sign_next(&key(1), RecordKind::Genesis, genesis.encode());
    accept(&mut chain, &record);
    assert_eq!(chain.licence_issuer(), Some(issuer));
    assert_eq!(Genesis::decode(&genesis.encode()), Ok(genesis.clone()));
    // Later rosters keep it: nothing but the genesis sets it.
    let next = chain.sign_next(&key(1), RecordKind::Roster, roster([1, 2, 3]).encode());
    accept(&mut chain, &next);
    assert_eq!(chain.licence_issuer(), Some(issuer));

    // A genesis written before the issuer was recorded: the roster alone, no issuer.
    let mut old = Chain::new(anchor());
    let record = old.sign_next(&key(1), RecordKind::Genesis, roster([1, 2]).encode());
    accept(&mut old, &record);
    assert_eq!(old.licence_issuer(), None);
    assert_eq!(old.roster(), &roster([1, 2]));

    // An issuer key that is no usable ed25519 key, trailing bytes, garbage: refused.
    let bad = Genesis {
        licence_issuer: Some([0; 32]),
        ..genesis.clone()
    };
    assert_eq!(
        Genesis::decode(&bad.encode()),
        Err(PayloadError::InvalidIssuerKey)
    );
    let mut long = genesis.encode();
    long.push(0);
    assert!(Genesis::decode(&long).is_err());
    for garbage in [&[][..], &[1], &[0xff; 40]] {
        assert!(Genesis::decode(garbage).is_err(), "{garbage:?}");
    }
}
