//! Checkpoints end to end: the leader's executor writing them, the store checking their
//! digest against its folded view and keeping the restart point, and restarting from it.

use std::collections::VecDeque;

use meshward_crdt::mastered::{
    CHECKPOINT_EVERY, Chain, ManagedChange, Member, RecordKind, SignedRecord, StateDigest,
};
use meshward_crdt::{ClusterId, Effects, ReplicaConfig};
use proptest::prelude::*;

use crate::core::{Core, CoreConfig, Input, Output};
use crate::roster::{self, MasteredBundle};
use crate::store::{ManagedRow, Next, Store, StoreError};

/// A store holding the genesis of a one-member cluster it leads; its chain.
fn led() -> (Store, Chain) {
    let store = Store::in_memory().unwrap();
    let key = store.identity().unwrap().key;
    let member = Member {
        key: key.verifying_key().to_bytes(),
        address: "127.0.0.1:1".into(),
    };
    let bundle = MasteredBundle::genesis(&key, ClusterId([3; 16]), vec![member], None);
    roster::import(&store, &bundle.encode()).unwrap();
    let chain = roster::chain(&store).unwrap().unwrap();
    (store, chain)
}

fn put(key: u8, doc: Option<u32>) -> Vec<u8> {
    ManagedChange {
        namespace: "ns".into(),
        table: "t".into(),
        key: format!("k{key}"),
        document: doc.map(|d| d.to_string()),
    }
    .encode()
}

/// Signs, verifies, stores (one transaction) and applies the next record.
fn write(store: &Store, chain: &mut Chain, kind: RecordKind, payload: Vec<u8>) -> SignedRecord {
    let key = store.identity().unwrap().key;
    let record = chain.sign_next(&key, kind, payload);
    let verified = chain.verify(&record).unwrap();
    store.append_mastered(&verified).unwrap();
    chain.apply(verified).unwrap();
    record
}

/// A checkpoint of the store's view, written as the next record.
fn checkpoint(store: &Store, chain: &mut Chain) -> SignedRecord {
    let payload = chain.checkpoint(store.state_digest().unwrap()).encode();
    write(store, chain, RecordKind::Checkpoint, payload)
}

fn view(store: &Store) -> Vec<ManagedRow> {
    store.managed_rows("ns", "t", None, usize::MAX).unwrap()
}

#[test]
fn a_checkpoint_whose_digest_is_not_the_view_is_refused_and_changes_nothing() {
    let (store, mut chain) = led();
    for k in 0..3 {
        write(&store, &mut chain, RecordKind::Managed, put(k, Some(1)));
    }
    let high = store.mastered_high_water().unwrap();
    let key = store.identity().unwrap().key;
    let forged = chain.checkpoint(StateDigest([0; 32]));
    let record = chain.sign_next(&key, RecordKind::Checkpoint, forged.encode());
    let verified = chain
        .verify(&record)
        .expect("the chain cannot see the view");
    let err = store.append_mastered(&verified).unwrap_err();
    assert!(matches!(err, StoreError::CheckpointMismatch { version: 5 }));
    assert!(err.to_string().contains("upgrade"));
    assert_eq!(store.mastered_high_water().unwrap(), high);
    assert!(store.mastered_checkpoint().unwrap().is_none());
    assert_eq!(store.mastered_checkpoint_version().unwrap(), 0);
    // Refused in a batch too, the records before it with it.
    let put3 = chain.sign_next(&key, RecordKind::Managed, put(3, Some(1)));
    let mut ahead = chain.clone();
    let first = ahead.verify(&put3).unwrap();
    ahead.apply(first.duplicate()).unwrap();
    let stale = ahead.checkpoint(store.state_digest().unwrap());
    let record = ahead.sign_next(&key, RecordKind::Checkpoint, stale.encode());
    let second = ahead.verify(&record).unwrap();
    assert!(store.append_mastered_all(&[first, second]).is_err());
    assert_eq!(store.mastered_high_water().unwrap(), high);
    assert_eq!(view(&store).len(), 3);
    // The right digest is kept, and becomes the restart point.
    let record = checkpoint(&store, &mut chain);
    let (state, stored) = store.mastered_checkpoint().unwrap().unwrap();
    assert_eq!((state.version(), state.hash()), (5, record.hash()));
    assert_eq!(stored, record);
    // Forgetting the cluster forgets its restart point too.
    store.forget_cluster(Next::Join).unwrap();
    assert!(store.mastered_checkpoint().unwrap().is_none());
    assert_eq!(store.mastered_checkpoint_version().unwrap(), 0);
}

#[test]
fn a_damaged_restart_point_falls_back_to_verifying_from_genesis() {
    let (store, mut chain) = led();
    write(&store, &mut chain, RecordKind::Managed, put(1, Some(1)));
    checkpoint(&store, &mut chain);
    write(&store, &mut chain, RecordKind::Managed, put(2, Some(2)));
    assert_eq!(roster::chain(&store).unwrap().unwrap(), chain);
    store.set_checkpoint_raw(&[1, 2, 3]).unwrap();
    assert!(store.mastered_checkpoint().is_err());
    assert_eq!(roster::chain(&store).unwrap().unwrap(), chain);
    let (replayed, _) = roster::replay(&store, store.anchor().unwrap().unwrap()).unwrap();
    assert_eq!(replayed, chain);
}

#[test]
fn a_record_before_the_restart_point_is_not_verified_again_but_a_replay_sees_it_altered() {
    let (store, mut chain) = led();
    write(&store, &mut chain, RecordKind::Managed, put(1, Some(1)));
    checkpoint(&store, &mut chain);
    // Version 2 altered on disk (its signature no longer verifies, its hash changed).
    let mut altered = store.mastered_record(2).unwrap().unwrap();
    altered.signature[0] ^= 1;
    store.set_mastered_raw(2, &altered.encode()).unwrap();
    // A restart resumes from the checkpoint: its signature and the records after it.
    assert_eq!(roster::chain(&store).unwrap().unwrap(), chain);
    // The replay of every record checks the hashes up to the checkpoint, then falls back to
    // signatures from genesis: both refuse the altered record.
    let anchor = store.anchor().unwrap().unwrap();
    assert!(roster::replay(&store, anchor).is_err());
}

#[test]
fn a_fork_that_replaces_the_checkpoint_drops_the_restart_point() {
    let (store, mut chain) = led();
    let base = chain.clone();
    write(&store, &mut chain, RecordKind::Managed, put(1, Some(1)));
    checkpoint(&store, &mut chain);
    assert_eq!(store.mastered_checkpoint_version().unwrap(), 3);
    // Another continuation from version 2, as a winning chain would be.
    let mut theirs = base;
    let key = store.identity().unwrap().key;
    let record = theirs.sign_next(&key, RecordKind::Managed, put(9, Some(9)));
    theirs.apply(theirs.verify(&record).unwrap()).unwrap();
    let ours = store.mastered_after(1).unwrap();
    store.replace_mastered(2, &[record], &ours).unwrap();
    assert_eq!(store.mastered_checkpoint_version().unwrap(), 0);
    assert_eq!(roster::chain(&store).unwrap().unwrap(), theirs);
    assert_eq!(view(&store)[0].key, "k9");
}

/// One step of a generated history: a managed put or delete, or a checkpoint.
#[derive(Clone, Debug)]
enum Step {
    Put(u8, Option<u32>),
    Checkpoint,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..6, proptest::option::of(0u32..100)).prop_map(|(k, d)| Step::Put(k, d)),
        1 => Just(Step::Checkpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A restart from the last checkpoint (the chain, the replayed records, the core) gives
    /// what a full replay from genesis gives; a joining node storing the same records in
    /// batches reaches the same view and restart point.
    #[test]
    fn restarting_from_a_checkpoint_gives_the_state_of_a_full_replay(
        steps in proptest::collection::vec(step(), 1..40),
        cut in 1usize..8,
    ) {
        let (store, mut chain) = led();
        for step in &steps {
            match step {
                Step::Put(k, d) => {
                    write(&store, &mut chain, RecordKind::Managed, put(*k, *d));
                }
                Step::Checkpoint => {
                    checkpoint(&store, &mut chain);
                }
            }
        }
        let records = store.mastered_records().unwrap();
        let anchor = store.anchor().unwrap().unwrap();
        let full = Chain::rebuild(anchor, &records).unwrap();
        prop_assert_eq!(&full, &chain);
        prop_assert_eq!(roster::chain(&store).unwrap().unwrap(), full.clone());
        let (replayed, verified) = roster::replay(&store, anchor).unwrap();
        let (_, expected) = Chain::replay(anchor, &records).unwrap();
        prop_assert_eq!(&replayed, &full);
        let same = verified.iter().map(|v| &**v).eq(expected.iter().map(|v| &**v));
        prop_assert!(same);
        let last = records
            .iter()
            .rev()
            .find(|r| r.record.kind == RecordKind::Checkpoint)
            .map_or(0, |r| r.record.version);
        prop_assert_eq!(store.mastered_checkpoint_version().unwrap(), last);
        // A joiner storing the records after genesis in batches of `cut`.
        let (joiner, mut theirs) = led_like(&store);
        for batch in records[1..].chunks(cut) {
            let mut verified = Vec::new();
            for record in batch {
                let v = theirs.verify(record).unwrap();
                verified.push(v.duplicate());
                theirs.apply(v).unwrap();
            }
            joiner.append_mastered_all(&verified).unwrap();
        }
        prop_assert_eq!(view(&joiner), view(&store));
        prop_assert_eq!(joiner.state_digest().unwrap(), store.state_digest().unwrap());
        prop_assert_eq!(joiner.mastered_checkpoint_version().unwrap(), last);
        prop_assert_eq!(roster::chain(&joiner).unwrap().unwrap(), full);
    }
}

/// A store holding only `leader`'s genesis record, as a joining node starts; its chain.
fn led_like(leader: &Store) -> (Store, Chain) {
    let store = Store::in_memory().unwrap();
    let anchor = leader.anchor().unwrap().unwrap();
    let bundle = MasteredBundle {
        cluster: anchor.cluster.0,
        genesis_leader: anchor.genesis_leader,
        records: vec![leader.mastered_record(1).unwrap().unwrap().encode()],
    };
    roster::import(&store, &bundle.encode()).unwrap();
    let chain = roster::chain(&store).unwrap().unwrap();
    (store, chain)
}

/// A core over a store, run by the production executor.
struct Node {
    core: Core,
    store: Store,
    done: Vec<(u64, Result<u64, String>)>,
}

impl super::Driver for Node {
    fn core(&mut self) -> Option<&mut Core> {
        Some(&mut self.core)
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn now_ms(&mut self) -> u64 {
        1
    }
    fn persisted(&mut self, _: &[Effects]) -> anyhow::Result<()> {
        Ok(())
    }
    fn wrote(&mut self, _: &Output) -> anyhow::Result<()> {
        Ok(())
    }
    fn send(&mut self, output: Output, _: &mut VecDeque<Input>) -> anyhow::Result<()> {
        if let Output::Done { token, result } = output {
            self.done.push((token, result));
        }
        Ok(())
    }
}

#[test]
fn the_leader_signs_a_checkpoint_every_checkpoint_every_records() {
    let (store, _) = led();
    let identity = store.identity().unwrap();
    let replica = store
        .load_replica(&identity, ReplicaConfig::default())
        .unwrap();
    let roster = roster::admitted(&store).unwrap();
    let mut core = Core::new(replica, roster, CoreConfig::default(), 1, [], 0);
    roster::load_into(&store, &mut core, 0).unwrap();
    let mut node = Node {
        core,
        store,
        done: Vec::new(),
    };
    let writes = CHECKPOINT_EVERY + 5;
    for token in 0..writes {
        let input = Input::Master {
            token,
            kind: RecordKind::Managed,
            payload: put((token % 7) as u8, Some(token as u32)),
        };
        super::run(&mut node, |_, _| {}, VecDeque::from([input])).unwrap();
    }
    // Genesis is version 1: the checkpoint follows version CHECKPOINT_EVERY.
    let at = CHECKPOINT_EVERY + 1;
    let record = node.store.mastered_record(at).unwrap().unwrap();
    assert_eq!(record.record.kind, RecordKind::Checkpoint);
    assert_eq!(node.store.mastered_checkpoint_version().unwrap(), at);
    let high = node.store.mastered_high_water().unwrap().unwrap();
    assert_eq!(high.version, writes + 2);
    // The callers saw their own answers only, every write done.
    assert_eq!(node.done.len() as u64, writes);
    assert!(node.done.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(
        roster::chain(&node.store).unwrap().unwrap(),
        *node.core.chain().unwrap()
    );
}
