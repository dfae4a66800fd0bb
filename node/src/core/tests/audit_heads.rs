//! Asking peers for this node's audit head: every member answers with the row it holds, none,
//! or is reported unreachable; an older node's refusal reads as "cannot answer".

use meshward_crdt::AuditHead;

use super::*;

fn put_head(net: &mut Net, at: usize, count: u64) -> AuditHead {
    let head = AuditHead {
        count,
        hash: [count as u8; 32],
        at_ms: 1,
    };
    net.input(
        at,
        Input::Commit {
            ops: vec![Op::PutAuditHead(head.clone())],
            token: 0,
            at_us: 0,
        },
    );
    head
}

fn answers(net: &Net, token: u64) -> PeerAnswers {
    let found: Vec<_> = net
        .audit_heads
        .iter()
        .filter(|(_, t, _)| *t == token)
        .collect();
    assert_eq!(found.len(), 1, "one answer per question");
    found[0].2.clone()
}

#[test]
fn every_member_answers_with_the_row_it_holds_of_the_asker() {
    let mut net = Net::new(3);
    let (b, c) = (net.cores[1].me(), net.cores[2].me());
    // No row yet anywhere.
    net.input(0, Input::AuditHeads { token: 1 });
    assert_eq!(
        answers(&net, 1),
        vec![(b, PeerHead::Nothing), (c, PeerHead::Nothing)]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    // The row replicates; a newer one overwrites it.
    put_head(&mut net, 0, 2);
    let head = put_head(&mut net, 0, 5);
    assert_eq!(
        net.cores[1].audit_head_of(net.cores[0].me()),
        Some(head.clone())
    );
    net.input(0, Input::AuditHeads { token: 2 });
    let got = answers(&net, 2);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|(_, a)| *a == PeerHead::Holds(head.clone())),
        "{got:?}"
    );
    // A member cut off is reported unreachable, the other still answers.
    net.isolate(2);
    net.input(0, Input::AuditHeads { token: 3 });
    let got: BTreeMap<_, _> = answers(&net, 3).into_iter().collect();
    assert_eq!(got[&b], PeerHead::Holds(head));
    assert!(matches!(&got[&c], PeerHead::Unreachable { why } if why.contains("not connected")));
}

#[test]
fn a_member_that_does_not_answer_in_time_or_cannot_answer_is_reported_so() {
    let mut net = Net::new(3);
    let (a, b, c) = (net.cores[0].me(), net.cores[1].me(), net.cores[2].me());
    let now = net.now;
    net.cores[0].handle(now, Input::AuditHeads { token: 7 });
    let mut asked = Vec::new();
    for out in net.cores[0].drain() {
        if let Output::Request {
            peer,
            request,
            data,
        } = out
        {
            assert_eq!(
                Ask::decode(&data),
                Some(Ask::AuditHead {
                    writer: net.cores[0].me()
                })
            );
            asked.push((peer, request));
        }
    }
    assert_eq!(asked.len(), 2);
    // An older member does not know the request: it refuses it as malformed with an empty
    // sync answer (as this node does with a request variant it does not know).
    let unknown = vec![wire::MAJOR, wire::MINOR, 99];
    net.cores[1].handle(
        now,
        Input::SyncRequest {
            peer: a,
            channel: 1,
            data: unknown,
        },
    );
    let refusal = net.cores[1]
        .drain()
        .into_iter()
        .find_map(|o| match o {
            Output::Respond { data, .. } => Some(data),
            _ => None,
        })
        .expect("a refusal");
    let (to_b, request) = asked
        .iter()
        .copied()
        .find(|(p, _)| *p == b)
        .expect("b asked");
    net.input(
        0,
        Input::SyncResponse {
            peer: to_b,
            request,
            data: refusal,
        },
    );
    assert!(net.audit_heads.is_empty(), "c has not answered yet");
    // c never answers: at the deadline it is reported unreachable.
    net.tick_all(CoreConfig::default().ask_timeout.as_millis() as u64 + 1);
    let got: BTreeMap<_, _> = answers(&net, 7).into_iter().collect();
    assert_eq!(got[&b], PeerHead::CannotAnswer);
    assert!(matches!(&got[&c], PeerHead::Unreachable { why } if why.contains("no answer")));
}

#[test]
fn audit_heads_wait_until_every_member_was_heard_on_a_wire_that_knows_them() {
    let mut net = Net::new(3);
    // The connections' syncs went both ways: every member was heard at this minor.
    assert!((0..3).all(|i| net.cores[i].members_read_audit_heads()));
    // A request of an older minor from b: a does not publish until b speaks a newer one.
    let b = net.cores[1].me();
    let mut older = Ask::Chain.encode();
    older[1] = AUDIT_HEADS_MINOR - 1;
    let now = net.now;
    net.cores[0].handle(
        now,
        Input::SyncRequest {
            peer: b,
            channel: 99,
            data: older,
        },
    );
    let _ = net.cores[0].drain();
    assert!(!net.cores[0].members_read_audit_heads());
    let status = net.cores[0]
        .peers()
        .find(|(w, _)| **w == b)
        .map(|(_, s)| s.wire_minor);
    assert_eq!(status, Some(Some(AUDIT_HEADS_MINOR - 1)));
    net.tick_all(CoreConfig::default().sync_interval.as_millis() as u64 * 4);
    assert!(net.cores[0].members_read_audit_heads());
    // A member never heard from (no connection yet) holds it back too.
    let lone = Net::new(1);
    assert!(lone.cores[0].members_read_audit_heads(), "no other member");
}

#[test]
fn questions_in_flight_are_bounded() {
    let mut net = Net::new(2);
    let now = net.now;
    for token in 1..=(crate::core::audit_heads::MAX_QUERIES as u64 + 1) {
        net.cores[0].handle(now, Input::AuditHeads { token });
    }
    let outs = net.cores[0].drain();
    let answered: Vec<u64> = outs
        .iter()
        .filter_map(|o| match o {
            Output::AuditHeads { token, answers } => {
                assert!(matches!(&answers[0].1, PeerHead::Unreachable { why } if why.contains("too many")));
                Some(*token)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        answered,
        vec![1],
        "the oldest question is answered to make room"
    );
}
