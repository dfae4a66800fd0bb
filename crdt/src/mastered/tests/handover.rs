//! Leadership changes: planned hand-overs, majority and forced failovers, and the
//! endorsements they carry.

use super::*;

#[test]
fn refuses_malformed_handover_payloads() {
    let (chain, _) = started();
    let garbage = chain.sign_next(&key(1), RecordKind::Handover, vec![1, 2, 3]);
    assert!(matches!(
        refuse(&chain, &garbage),
        VerifyError::BadPayload {
            kind: RecordKind::Handover,
            source: PayloadError::Malformed(_)
        }
    ));
    let many = Handover {
        next_epoch: 2,
        next_leader: pk(2),
        endorsements: vec![
            Endorsement::sign(&key(1), &chain.candidacy(pk(2)));
            MAX_ROSTER_MEMBERS + 1
        ],
        forced: false,
    };
    let record = chain.sign_next(&key(1), RecordKind::Handover, many.encode());
    assert_eq!(
        refuse(&chain, &record),
        VerifyError::BadPayload {
            kind: RecordKind::Handover,
            source: PayloadError::TooManyEndorsements {
                got: MAX_ROSTER_MEMBERS + 1,
                max: MAX_ROSTER_MEMBERS
            }
        }
    );
}

#[test]
fn refuses_handover_that_does_not_name_the_next_epoch() {
    let (chain, _) = started();
    for next_epoch in [0, 1, 3, u64::MAX] {
        let record = chain.sign_next(
            &key(1),
            RecordKind::Handover,
            handover_payload(next_epoch, 2, vec![]),
        );
        assert_eq!(
            refuse(&chain, &record),
            VerifyError::WrongNextEpoch {
                got: next_epoch,
                current: 1
            }
        );
    }
}

#[test]
fn refuses_handover_to_a_node_outside_the_roster() {
    let (chain, _) = started();
    let record = chain.sign_next(
        &key(1),
        RecordKind::Handover,
        handover_payload(2, 9, vec![]),
    );
    assert_eq!(
        refuse(&chain, &record),
        VerifyError::NextLeaderNotMember { next_leader: pk(9) }
    );
}

#[test]
fn planned_handover_moves_leadership_to_the_named_node() {
    let (mut chain, _) = started();
    let handover = chain.sign_next(
        &key(1),
        RecordKind::Handover,
        handover_payload(2, 3, endorse(&chain, 3, [1, 3, 4])),
    );
    accept(&mut chain, &handover);
    assert_eq!(
        (chain.epoch(), chain.leader(), chain.last_version()),
        (2, pk(3), 3)
    );
    let next = chain.sign_next(&key(3), RecordKind::Licence, b"nodes=5".to_vec());
    assert_eq!(next.record.epoch, 2);
    accept(&mut chain, &next);
}

#[test]
fn a_planned_handover_needs_a_majority_with_the_next_leaders_consent_and_names_another_node() {
    let (chain, _) = started();
    let planned = |endorsements| {
        chain.sign_next(
            &key(1),
            RecordKind::Handover,
            handover_payload(2, 3, endorsements),
        )
    };
    // The old rule: the leader alone could hand over, with no endorsement at all.
    assert_eq!(
        refuse(&chain, &planned(vec![])),
        VerifyError::NotAccepted { next_leader: pk(3) }
    );
    // A majority that leaves out the next leader: it never agreed to lead.
    assert_eq!(
        refuse(&chain, &planned(endorse(&chain, 3, [1, 2, 4]))),
        VerifyError::NotAccepted { next_leader: pk(3) }
    );
    // The next leader and the leader, 2 of 5: no majority.
    assert_eq!(
        refuse(&chain, &planned(endorse(&chain, 3, [1, 3]))),
        VerifyError::NoMajority { got: 2, need: 3 }
    );
    // To itself, even with a majority: leadership can only move to another member.
    let to_self = chain.sign_next(
        &key(1),
        RecordKind::Handover,
        handover_payload(2, 1, endorse(&chain, 1, [1, 2, 3])),
    );
    assert_eq!(
        refuse(&chain, &to_self),
        VerifyError::HandoverToSelf { leader: pk(1) }
    );
    // Nor can a follower "fail over" to the current leader.
    let follower = chain.sign_next(
        &key(2),
        RecordKind::Handover,
        handover_payload(2, 1, endorse(&chain, 1, [1, 2, 3])),
    );
    assert_eq!(
        refuse(&chain, &follower),
        VerifyError::HandoverToSelf { leader: pk(1) }
    );
    assert!(
        chain
            .verify(&planned(endorse(&chain, 3, [1, 3, 5])))
            .is_ok()
    );
}

#[test]
fn refuses_older_epoch_record_after_a_handover() {
    let (mut chain, _) = started();
    let handover = chain.sign_next(
        &key(1),
        RecordKind::Handover,
        handover_payload(2, 3, endorse(&chain, 3, [1, 3, 4])),
    );
    accept(&mut chain, &handover);
    // The old leader keeps writing in its epoch, correctly chained.
    let stale = MasteredRecord {
        cluster: CLUSTER,
        epoch: 1,
        version: 4,
        prev: handover.hash(),
        kind: RecordKind::Config,
        payload: b"x".to_vec(),
    }
    .sign(&key(1));
    assert_eq!(
        refuse(&chain, &stale),
        VerifyError::StaleEpoch {
            got: 1,
            high_water: 2
        }
    );
    // The old leader claiming the new epoch is not its leader.
    let usurper = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    assert_eq!(
        refuse(&chain, &usurper),
        VerifyError::UnknownSigner {
            epoch: 2,
            signer: pk(1)
        }
    );
}

#[test]
fn majority_failover_moves_leadership_to_the_endorsed_candidate() {
    let (mut chain, _) = started();
    let endorsements = endorse(&chain, 3, [2, 3, 4]);
    let handover = chain.sign_next(
        &key(3),
        RecordKind::Handover,
        handover_payload(2, 3, endorsements),
    );
    accept(&mut chain, &handover);
    assert_eq!((chain.epoch(), chain.leader()), (2, pk(3)));
    let next = chain.sign_next(&key(3), RecordKind::Revocation, pk(1).to_vec());
    accept(&mut chain, &next);
    let old = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    assert!(matches!(
        refuse(&chain, &old),
        VerifyError::UnknownSigner { .. }
    ));
}

#[test]
fn minority_failover_is_refused() {
    let (chain, _) = started();
    let endorsements = endorse(&chain, 3, [3, 4]);
    let handover = chain.sign_next(
        &key(3),
        RecordKind::Handover,
        handover_payload(2, 3, endorsements),
    );
    assert_eq!(
        refuse(&chain, &handover),
        VerifyError::NoMajority { got: 2, need: 3 }
    );
    // Signing the record does not count as an endorsement by itself.
    let bare = chain.sign_next(
        &key(3),
        RecordKind::Handover,
        handover_payload(2, 3, vec![]),
    );
    assert_eq!(
        refuse(&chain, &bare),
        VerifyError::NotAccepted { next_leader: pk(3) }
    );
}

#[test]
fn a_forced_failover_is_accepted_only_in_a_two_node_pair() {
    let forced = |chain: &Chain, candidate: u8| {
        let payload = Handover {
            next_epoch: chain.epoch() + 1,
            next_leader: pk(candidate),
            endorsements: endorse(chain, candidate, [candidate]),
            forced: true,
        }
        .encode();
        chain.sign_next(&key(candidate), RecordKind::Handover, payload)
    };
    // Five members: forcing is no way around the majority.
    let (five, _) = started();
    assert_eq!(
        refuse(&five, &forced(&five, 3)),
        VerifyError::NoMajority { got: 1, need: 3 }
    );
    // A pair whose leader is gone: the other node may take over alone.
    let mut pair = Chain::new(anchor());
    let genesis = pair.sign_next(&key(1), RecordKind::Genesis, roster(1..=2).encode());
    accept(&mut pair, &genesis);
    let takeover = forced(&pair, 2);
    accept(&mut pair, &takeover);
    assert_eq!((pair.epoch(), pair.leader()), (2, pk(2)));
}

#[test]
fn refuses_handover_signed_by_neither_the_leader_nor_the_candidate() {
    let (chain, _) = started();
    let endorsements = endorse(&chain, 3, [2, 3, 4]);
    let handover = chain.sign_next(
        &key(4),
        RecordKind::Handover,
        handover_payload(2, 3, endorsements),
    );
    assert_eq!(
        refuse(&chain, &handover),
        VerifyError::UnknownSigner {
            epoch: 1,
            signer: pk(4)
        }
    );
}

#[test]
fn refuses_failover_with_a_forged_or_misplaced_endorsement() {
    let (chain, records) = started();
    let mut forged = endorse(&chain, 3, [2, 3, 4]);
    forged[2].signature[5] ^= 0x10;
    let outsider = endorse(&chain, 3, [2, 3, 9]);
    let repeated = endorse(&chain, 3, [2, 3, 3, 4]);
    let mut wrong_candidate = endorse(&chain, 3, [2, 3]);
    wrong_candidate.extend(endorse(&chain, 5, [4]));
    // Endorsements collected at an earlier chain position cannot be reused.
    let earlier = Chain::rebuild(anchor(), &records[..1]).expect("genesis verifies");
    let mut stale = endorse(&chain, 3, [2, 3]);
    stale.extend(endorse(&earlier, 3, [4]));
    for (endorsements, bad) in [
        (forged, pk(4)),
        (outsider, pk(9)),
        (repeated, pk(3)),
        (wrong_candidate, pk(4)),
        (stale, pk(4)),
    ] {
        let handover = chain.sign_next(
            &key(3),
            RecordKind::Handover,
            handover_payload(2, 3, endorsements),
        );
        let err = refuse(&chain, &handover);
        assert!(
            matches!(err, VerifyError::BadEndorsement { endorser, .. } if endorser == bad),
            "{err:?}"
        );
    }
}
