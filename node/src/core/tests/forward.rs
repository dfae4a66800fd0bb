//! Writes only the leader makes, forwarded from a follower: served by the leader's driver,
//! answered with the records the follower lacks; refused at once when they cannot be.

use super::*;

fn forward(token: u64, bytes: &[u8]) -> Input {
    Input::Forward {
        token,
        envelope: Opaque(bytes.to_vec()),
    }
}

fn config(token: u64, value: &str) -> Input {
    Input::Master {
        token,
        kind: RecordKind::Config,
        payload: crate::cluster_config::ConfigChange::Set {
            key: "managed.site".into(),
            value: value.into(),
        }
        .encode(),
    }
}

fn last_forwarded(net: &Net, core: usize) -> Result<Opaque, String> {
    net.forwarded
        .iter()
        .rev()
        .find(|(c, _, _)| *c == core)
        .map(|(_, _, r)| r.clone())
        .expect("an answer")
}

#[test]
fn a_forwarded_write_is_served_by_the_leader_and_the_follower_holds_it_when_answered() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    // No gossip: the follower can only learn the record from the leader's reply.
    net.drop_gossip = true;
    net.input(2, forward(7, b"set managed.site"));
    assert!(
        net.forwarded.is_empty(),
        "answered before the leader served it"
    );
    let (core, channel, have, envelope) = net.serves.pop().expect("the leader serves it");
    assert_eq!((core, have), (0, 1));
    assert_eq!(envelope, Opaque(b"set managed.site".to_vec()));
    // The leader's driver makes the write, then answers.
    net.input(0, config(1, "forwarded"));
    assert_eq!(net.last_done(0), Ok(2));
    net.input(
        0,
        Input::Served {
            channel,
            have,
            answer: Opaque(b"written".to_vec()),
        },
    );
    assert_eq!(last_forwarded(&net, 2), Ok(Opaque(b"written".to_vec())));
    assert_eq!(
        versions(&net)[2],
        2,
        "the follower holds the write when answered"
    );
}

#[test]
fn with_the_leader_unreachable_a_forward_fails_at_once_naming_it() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.isolate(0);
    net.input(2, forward(1, b"x"));
    let err = last_forwarded(&net, 2).unwrap_err();
    assert!(
        err.contains(&addr(0).to_string()) && err.contains("not connected"),
        "{err}"
    );
    assert!(net.serves.is_empty());
}

#[test]
fn a_leader_that_does_not_answer_fails_the_forward_after_the_ask_timeout() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.input(2, forward(1, b"x"));
    assert_eq!(net.serves.len(), 1, "sent, and the driver never answers");
    net.tick_all(4_000);
    assert!(net.forwarded.is_empty());
    net.tick_all(2_000);
    let err = last_forwarded(&net, 2).unwrap_err();
    assert!(err.contains("did not answer within 5 s"), "{err}");
}

#[test]
fn oversize_envelopes_held_leaders_and_the_leader_itself_refuse_a_forward() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.input(2, forward(1, &vec![0; MAX_FORWARD + 1]));
    let err = last_forwarded(&net, 2).unwrap_err();
    assert!(err.contains("at most"), "{err}");
    net.input(0, forward(2, b"x"));
    let err = last_forwarded(&net, 0).unwrap_err();
    assert!(err.contains("this node leads"), "{err}");
    net.hold(0, true);
    net.input(1, forward(3, b"x"));
    let err = last_forwarded(&net, 1).unwrap_err();
    assert!(
        err.contains("leader refused") && err.contains("disk is full"),
        "{err}"
    );
    assert!(net.serves.is_empty(), "nothing reached a driver");
}

#[test]
fn an_envelope_never_shows_in_debug_output() {
    let input = forward(1, b"password=hunter2hunter2");
    let shown = format!("{input:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("104, 117"),
        "{shown}"
    );
}
