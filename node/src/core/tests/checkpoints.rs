//! A node far behind catching up over a chain with checkpoints: in pages, each page's records
//! up to its last checkpoint taken with one signature check; a forged checkpoint refused.

use meshward_crdt::mastered::StateDigest;

use super::*;

/// `n` config records after `chain`'s last one, a checkpoint after every `every`.
fn grow(chain: &mut Chain, records: &mut Vec<SignedRecord>, n: usize, every: usize) {
    for i in 0..n {
        let payload = format!("k{i}=v").into_bytes();
        let record = chain.sign_next(&leader_key(), RecordKind::Config, payload);
        chain.apply(chain.verify(&record).unwrap()).unwrap();
        records.push(record);
        if (i + 1) % every == 0 {
            let payload = chain.checkpoint(StateDigest([0; 32])).encode();
            let record = chain.sign_next(&leader_key(), RecordKind::Checkpoint, payload);
            chain.apply(chain.verify(&record).unwrap()).unwrap();
            records.push(record);
        }
    }
}

/// A two-node net whose leader (core 0) holds `records`, the follower the genesis only, cut
/// apart; the leader answers in pages of about `budget` bytes.
fn behind(records: &[SignedRecord], budget: usize) -> Net {
    let mut net = Net::new(2);
    let (chain, _) = with_chain(&mut net);
    net.isolate(1);
    net.cores[0]
        .load_mastered(0, chain_anchor(&chain), records.to_vec())
        .unwrap();
    net.cores[0].drain();
    net.cores[0].config.mastered_budget = budget;
    net
}

fn chain_anchor(chain: &Chain) -> TrustAnchor {
    TrustAnchor {
        cluster: chain.cluster(),
        genesis_leader: leader_key().verifying_key().to_bytes(),
    }
}

#[test]
fn a_node_far_behind_catches_up_a_page_at_a_time_through_checkpoints() {
    let mut probe = Net::new(2);
    let (mut chain, mut records) = with_chain(&mut probe);
    grow(&mut chain, &mut records, 200, 30);
    // Pages without a checkpoint, pages with one and more after it, one page for all.
    for budget in [2_000, 8_000, usize::MAX] {
        let mut net = behind(&records, budget);
        net.rejoin(1);
        for _ in 0..50 {
            if versions(&net)[1] == chain.last_version() {
                break;
            }
            net.tick_all(1000);
        }
        assert_eq!(net.cores[1].chain(), Some(&chain), "budget {budget}");
        let held = &net.cores[1].mastered.as_ref().unwrap().records;
        assert_eq!(held, &records);
        // Every record applied once, whatever was sent twice.
        assert_eq!(
            net.cores[1].counters().mastered_applied,
            records.len() as u64 - 1
        );
        assert_eq!(net.cores[1].counters().mastered_rejected, 0);
    }
}

#[test]
fn a_forged_checkpoint_is_refused_and_the_records_before_it_verify_one_by_one() {
    let mut probe = Net::new(2);
    let (mut chain, mut records) = with_chain(&mut probe);
    grow(&mut chain, &mut records, 20, 1_000);
    // A checkpoint after the 20 records, its signature broken.
    let payload = chain.checkpoint(StateDigest([0; 32])).encode();
    let mut forged = chain.sign_next(&leader_key(), RecordKind::Checkpoint, payload);
    forged.signature[7] ^= 1;
    let mut served = records.clone();
    served.push(forged);
    // The leader serves the forged record as if it were its own (a tampered relay).
    let mut net = Net::new(2);
    let (_, _) = with_chain(&mut net);
    net.isolate(1);
    let m = net.cores[0].mastered.as_mut().unwrap();
    m.records = served;
    m.chain = chain.clone();
    net.rejoin(1);
    net.tick_all(1000);
    assert_eq!(
        net.cores[1].chain(),
        Some(&chain),
        "the 20 records, not the forgery"
    );
    assert!(net.cores[1].counters().mastered_rejected >= 1);
}
