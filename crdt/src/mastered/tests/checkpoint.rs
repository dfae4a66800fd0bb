//! Checkpoint records, resuming a chain from one, and refusing forged or damaged ones.

use super::*;

fn digest(n: u8) -> StateDigest {
    StateDigest([n; 32])
}

fn checkpoint_payload(chain: &Chain, covers: u64, n: u8) -> Vec<u8> {
    Checkpoint {
        covers,
        state: digest(n),
        chain: chain.own_digest(),
    }
    .encode()
}

/// `started()`, a checkpoint, then one more record; returns the checkpoint's state too.
fn checkpointed() -> (Chain, Vec<SignedRecord>, ChainState) {
    let (mut chain, mut records) = started();
    let record = chain.sign_next(
        &key(1),
        RecordKind::Checkpoint,
        checkpoint_payload(&chain, chain.last_version(), 9),
    );
    let verified = chain.verify(&record).expect("a checkpoint verifies");
    let state = verified
        .checkpoint_state()
        .expect("a checkpoint has a state");
    chain.apply(verified).expect("applied");
    records.push(record);
    let user = chain.sign_next(&key(1), RecordKind::User, b"alice".to_vec());
    accept(&mut chain, &user);
    records.push(user);
    (chain, records, state)
}

#[test]
fn a_checkpoint_covers_the_version_before_it_and_nothing_else() {
    let (chain, _) = started();
    for covers in [0, 1, 3, u64::MAX] {
        let record = chain.sign_next(
            &key(1),
            RecordKind::Checkpoint,
            checkpoint_payload(&chain, covers, 1),
        );
        assert!(matches!(
            refuse(&chain, &record),
            VerifyError::BadPayload {
                kind: RecordKind::Checkpoint,
                ..
            }
        ));
    }
    for payload in [vec![], vec![1; 40], vec![1; 42], {
        let mut p = checkpoint_payload(&chain, 2, 1);
        p[0] = 2;
        p
    }] {
        let record = chain.sign_next(&key(1), RecordKind::Checkpoint, payload);
        assert!(matches!(
            refuse(&chain, &record),
            VerifyError::BadPayload { .. }
        ));
    }
    // Signed by a member that does not lead: refused like any record.
    let record = chain.sign_next(
        &key(2),
        RecordKind::Checkpoint,
        checkpoint_payload(&chain, 2, 1),
    );
    assert!(matches!(
        refuse(&chain, &record),
        VerifyError::UnknownSigner { .. }
    ));
    // Only checkpoints carry a state.
    let config = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
    assert_eq!(chain.verify(&config).unwrap().checkpoint_state(), None);
    // A chain digest other than the chain's own state (another roster, say).
    let mut other = chain.clone();
    other.roster = Arc::new(roster(1..=3));
    let record = chain.sign_next(
        &key(1),
        RecordKind::Checkpoint,
        checkpoint_payload(&other, 2, 1),
    );
    assert!(matches!(
        refuse(&chain, &record),
        VerifyError::BadPayload { .. }
    ));
    assert_eq!(
        chain.checkpoint(digest(3)),
        Checkpoint {
            covers: 2,
            state: digest(3),
            chain: chain.own_digest(),
        }
    );
    assert_eq!(
        Checkpoint::decode(&chain.checkpoint(digest(3)).encode()),
        Ok(chain.checkpoint(digest(3)))
    );
}

#[test]
fn resuming_from_a_checkpoint_reaches_the_state_of_a_full_rebuild() {
    let (chain, records, state) = checkpointed();
    let state = ChainState::decode(&state.encode()).expect("round trip");
    let resumed = Chain::resume(anchor(), state.clone(), &records[2]).expect("resumes");
    assert_eq!(resumed.last_version(), 3);
    let resumed = resumed
        .extended(&records[3..], 3)
        .expect("the rest verifies");
    assert_eq!(resumed, chain);
    assert_eq!(Chain::rebuild(anchor(), &records).unwrap(), chain);
    let (replayed, verified) = Chain::resume_replay(anchor(), state, &records).expect("replays");
    assert_eq!(replayed, chain);
    let verified: Vec<SignedRecord> = verified.into_iter().map(Verified::into_inner).collect();
    assert_eq!(verified, records);
}

#[test]
fn records_covered_by_a_checkpoint_never_advance_a_chain() {
    let (_, records, state) = checkpointed();
    let (_, mut verified) = Chain::resume_replay(anchor(), state, &records).unwrap();
    let mut fresh = Chain::new(anchor());
    let genesis = verified.remove(0);
    assert!(
        fresh.apply(genesis).is_err(),
        "a covered proof applies nowhere"
    );
    assert_eq!(fresh, Chain::new(anchor()));
}

#[test]
fn a_forged_or_damaged_checkpoint_is_refused() {
    let (_, records, state) = checkpointed();
    // The checkpoint re-signed by another key (even one whose state claims it leads).
    let forged = resigned(&records[2], 2, |_| {});
    assert!(Chain::resume(anchor(), state.clone(), &forged).is_err());
    // Its digest changed and re-signed by the leader: another record, another hash.
    let (before, _) = started();
    let altered = resigned(&records[2], 1, |r| {
        r.payload = checkpoint_payload(&before, 2, 8)
    });
    assert!(Chain::resume(anchor(), state.clone(), &altered).is_err());
    // A flipped signature bit.
    let mut bad = records[2].clone();
    bad.signature[3] ^= 1;
    assert!(Chain::resume(anchor(), state.clone(), &bad).is_err());
    // Not the record the state follows.
    assert!(Chain::resume(anchor(), state.clone(), &records[1]).is_err());
    assert!(Chain::resume(anchor(), state.clone(), &records[3]).is_err());
    // Another cluster's anchor, or another genesis leader for epoch 1.
    let other = TrustAnchor {
        cluster: ClusterId([8; 16]),
        ..anchor()
    };
    assert!(Chain::resume(other, state.clone(), &records[2]).is_err());
    let other = TrustAnchor {
        genesis_leader: pk(2),
        ..anchor()
    };
    assert!(Chain::resume(other, state.clone(), &records[2]).is_err());
    // An earlier record altered: the hashes no longer link up to the checkpoint.
    let mut tampered = records.clone();
    tampered[1] = resigned(&records[1], 1, |r| r.payload = b"retention=1d".to_vec());
    assert!(Chain::resume_replay(anchor(), state.clone(), &tampered).is_err());
    // A record after it with a bad signature.
    let mut tampered = records.clone();
    tampered[3].signature[0] ^= 1;
    assert!(Chain::resume_replay(anchor(), state.clone(), &tampered).is_err());
    // Fewer records than the checkpoint's version.
    assert!(Chain::resume_replay(anchor(), state.clone(), &records[..2]).is_err());
    // A damaged state encoding: every truncation and every flipped byte either fails to
    // decode or is refused by the resume checks (the checkpoint states the chain's state).
    let encoded = state.encode();
    for len in 0..encoded.len() {
        assert!(ChainState::decode(&encoded[..len]).is_err());
    }
    for at in 0..encoded.len() {
        let mut damaged = encoded.clone();
        damaged[at] ^= 0x40;
        if let Ok(s) = ChainState::decode(&damaged)
            && s != state
        {
            assert!(
                Chain::resume(anchor(), s, &records[2]).is_err(),
                "a damaged state at byte {at} is refused"
            );
        }
    }
    assert!(ChainState::decode(&vec![1; MAX_CHAIN_STATE_BYTES + 1]).is_err());
}

#[test]
fn the_state_digest_is_the_canonical_encoding_of_the_rows() {
    let rows: [(&[u8], u64, &[u8]); 2] = [(b"a\0t\0k", 3, b"1"), (b"a\0t\0l", 4, b"{}")];
    let whole = StateDigest::of_rows(rows);
    let mut hasher = StateHasher::new();
    hasher.row(b"a\0t\0k", 3, b"1");
    hasher.row(b"a\0t\0l", 4, b"{}");
    assert_eq!(hasher.finish(), whole);
    // Any change of key, version, document or boundaries changes the digest.
    for changed in [
        [
            (b"a\0t\0k" as &[u8], 3, b"1" as &[u8]),
            (b"a\0t\0l", 5, b"{}"),
        ],
        [(b"a\0t\0k", 3, b"1{"), (b"a\0t\0l", 4, b"}")],
        [(b"a\0t\0k", 3, b"1"), (b"a\0t\0m", 4, b"{}")],
    ] {
        assert_ne!(StateDigest::of_rows(changed), whole);
    }
    assert_ne!(StateDigest::of_rows([]), whole);
}

/// `started()` then a hand-over to 2, a user record by 2, a checkpoint by 2, and a config
/// record after it: the records after genesis and config, and the chain before them.
fn covered_batch() -> (Chain, Vec<SignedRecord>, Chain) {
    let (mut chain, _) = started();
    let before = chain.clone();
    let mut records = Vec::new();
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
    let payload = checkpoint_payload(&chain, chain.last_version(), 4);
    let checkpoint = chain.sign_next(&key(2), RecordKind::Checkpoint, payload);
    accept(&mut chain, &checkpoint);
    records.push(checkpoint);
    let config = chain.sign_next(&key(2), RecordKind::Config, b"k=v".to_vec());
    accept(&mut chain, &config);
    records.push(config);
    (before, records, chain)
}

#[test]
fn records_up_to_a_checkpoint_verify_with_its_signature_and_those_that_pick_signers() {
    let (before, records, after) = covered_batch();
    let verified = before.verify_covered(&records).expect("verifies");
    assert_eq!(
        verified.len(),
        3,
        "up to the checkpoint; the rest one by one"
    );
    let mut chain = before.clone();
    for v in verified {
        chain.apply(v).expect("in order");
    }
    let chain = chain.extended(&records[3..], 3).unwrap();
    assert_eq!(chain, after);
    // No checkpoint: nothing taken this way.
    assert!(before.verify_covered(&records[..2]).unwrap().is_empty());
    // A plain record's signature is vouched for by the checkpoint's hash chain...
    let mut plain = records.clone();
    plain[1].signature[5] ^= 1;
    // (its hash changed, so the checkpoint no longer follows it)
    assert!(before.verify_covered(&plain).is_err());
    // ...so a forged one needs a forged checkpoint, whose signature is checked.
    let mut forged = records.clone();
    forged[2].signature[5] ^= 1;
    let err = before.verify_covered(&forged).unwrap_err();
    assert_eq!((err.index, err.source), (2, VerifyError::BadSignature));
    // The hand-over decides who signs: its signature and endorsements are checked.
    let mut handover = records.clone();
    handover[0].signature[5] ^= 1;
    let err = before.verify_covered(&handover).unwrap_err();
    assert_eq!((err.index, err.source), (0, VerifyError::BadSignature));
    // Every other check still runs: a record signed by a non-leader, a gap, another cluster.
    let mut stranger = records.clone();
    stranger[1] = resigned(&records[1], 3, |_| {});
    assert!(before.verify_covered(&stranger).is_err());
    assert!(before.verify_covered(&records[1..]).is_err());
    let (_, mut all) = started();
    all.extend(records.iter().cloned());
    assert!(Chain::new(anchor()).verify_covered(&all[1..]).is_err());
}
