//! The transport over real QUIC on 127.0.0.1: gossip with validation, sync requests,
//! admission and the fault hook. Every wait is bounded by [`DEADLINE`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use meshward_transport::{
    CommandError, Config, Event, GossipConfig, Handle, MAX_GOSSIP_BYTES, Metrics, Transport,
    Verdict, WriterId,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, timeout_at};

/// Upper bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    handle: Handle,
    events: Receiver<Event>,
    addr: SocketAddr,
    id: WriterId,
}

fn secret(n: u8) -> [u8; 32] {
    [n; 32]
}

fn writer(n: u8) -> WriterId {
    WriterId::from_key(&ed25519_dalek::SigningKey::from_bytes(&secret(n)).verifying_key())
}

fn roster(members: &[u8]) -> BTreeSet<WriterId> {
    members.iter().map(|&n| writer(n)).collect()
}

async fn start(n: u8, members: &[u8], config: Config) -> Node {
    let (handle, mut events) =
        Transport::spawn(secret(n), roster(members), config).expect("transport starts");
    assert_eq!(handle.local_id(), writer(n));
    let addr = next(&mut events, |event| match event {
        Event::Listening { addr } => Some(*addr),
        _ => None,
    })
    .await;
    Node {
        handle,
        events,
        addr,
        id: writer(n),
    }
}

/// Waits for the first event `pick` accepts, skipping others.
async fn next<T>(events: &mut Receiver<Event>, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let event = timeout_at(deadline, events.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("transport stopped");
        if let Some(found) = pick(&event) {
            return found;
        }
    }
}

/// Waits until `check` holds on the node's metrics.
async fn metrics_until(handle: &Handle, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = handle.metrics();
        if check(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never matched: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(a: &mut Node, b: &mut Node) {
    a.handle.dial(b.addr).expect("dial queued");
    let b_id = b.id;
    let a_id = a.id;
    next(&mut a.events, |e| {
        matches!(e, Event::Connected { peer, .. } if *peer == b_id).then_some(())
    })
    .await;
    next(&mut b.events, |e| {
        matches!(e, Event::Connected { peer, .. } if *peer == a_id).then_some(())
    })
    .await;
}

/// Publishes probes on `from` until `to` receives one, every node in `relays` accepting all
/// gossip meanwhile: the subscriptions are known and the mesh has formed.
async fn warm_up(from: &Node, relays: &mut [&mut Node], to: &mut Node) {
    let deadline = Instant::now() + DEADLINE;
    for round in 0.. {
        assert!(Instant::now() < deadline, "gossip mesh did not form");
        from.handle
            .publish(format!("probe {round}").into_bytes())
            .expect("publish queued");
        let tick = Instant::now() + Duration::from_millis(100);
        for relay in relays.iter_mut() {
            while let Ok(Some(event)) = timeout_at(tick, relay.events.recv()).await {
                if let Event::Gossip { id, .. } = event {
                    relay
                        .handle
                        .report(id, Verdict::Accept)
                        .expect("report queued");
                }
            }
        }
        let mut arrived = false;
        let tick = Instant::now() + Duration::from_millis(100);
        while let Ok(Some(event)) = timeout_at(tick, to.events.recv()).await {
            if let Event::Gossip { id, .. } = event {
                to.handle
                    .report(id, Verdict::Accept)
                    .expect("report queued");
                arrived = true;
                break;
            }
        }
        if arrived {
            return;
        }
    }
}

/// Waits for the gossip carrying `data`, accepting probes that arrive first; returns its id
/// without reporting it. Panics if a payload in `never` arrives first.
async fn gossip(node: &mut Node, data: &[u8], never: &[&[u8]]) -> meshward_transport::MessageId {
    let handle = node.handle.clone();
    next(&mut node.events, |event| match event {
        Event::Gossip { id, data: got, .. } => {
            assert!(
                !never.contains(&got.as_slice()),
                "{:?} arrived before {:?}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(data)
            );
            if got == data {
                Some(*id)
            } else {
                handle.report(*id, Verdict::Accept).expect("report queued");
                None
            }
        }
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_forwarded_only_after_the_relay_accepts_it() {
    let all = [1, 2, 3];
    let mut a = start(1, &all, Config::localhost()).await;
    let mut b = start(2, &all, Config::localhost()).await;
    let mut c = start(3, &all, Config::localhost()).await;
    connect(&mut a, &mut b).await;
    connect(&mut b, &mut c).await;
    warm_up(&a, &mut [&mut b], &mut c).await;

    // B holds "held" unreported; "marker" overtakes it: B -> C is one ordered stream, so C
    // seeing "marker" first means "held" was not forwarded on receipt.
    a.handle.publish(b"held".to_vec()).expect("publish queued");
    let held = gossip(&mut b, b"held", &[]).await;
    a.handle
        .publish(b"marker".to_vec())
        .expect("publish queued");
    let marker = gossip(&mut b, b"marker", &[]).await;
    b.handle
        .report(marker, Verdict::Accept)
        .expect("report queued");
    gossip(&mut c, b"marker", &[b"held"]).await;
    b.handle
        .report(held, Verdict::Accept)
        .expect("report queued");
    let held_at_c = gossip(&mut c, b"held", &[]).await;
    assert_eq!(held_at_c.hash(), held.hash(), "ids are content hashes");

    // Rejected at B: never reaches C ("after" follows it on the same stream).
    a.handle.publish(b"bad".to_vec()).expect("publish queued");
    let bad = gossip(&mut b, b"bad", &[]).await;
    b.handle
        .report(bad, Verdict::Reject)
        .expect("report queued");
    a.handle.publish(b"after".to_vec()).expect("publish queued");
    let after = gossip(&mut b, b"after", &[]).await;
    b.handle
        .report(after, Verdict::Accept)
        .expect("report queued");
    gossip(&mut c, b"after", &[b"bad"]).await;

    assert!(b.handle.metrics().gossip_received >= 4);
    assert_eq!(c.handle.metrics().connected_peers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_round_trip_and_oversize_responses_fail_the_request() {
    let requester_config = Config {
        max_response_bytes: 64 * 1024,
        ..Config::localhost()
    };
    let responder_config = Config {
        max_response_bytes: 256 * 1024,
        ..Config::localhost()
    };
    let mut a = start(1, &[1, 2], requester_config).await;
    let mut b = start(2, &[1, 2], responder_config).await;
    connect(&mut a, &mut b).await;

    let ping = a
        .handle
        .request(b.id, b"ping".to_vec())
        .expect("request queued");
    let channel = next(&mut b.events, |e| match e {
        Event::Request {
            peer,
            channel,
            data,
        } if *peer == a.id && data == b"ping" => Some(*channel),
        _ => None,
    })
    .await;
    b.handle
        .respond(channel, b"pong".to_vec())
        .expect("respond queued");
    let pong = next(&mut a.events, |e| match e {
        Event::Response { request, data, .. } if *request == ping => Some(data.clone()),
        _ => None,
    })
    .await;
    assert_eq!(pong, b"pong");
    assert_eq!(
        b.handle.respond(channel, b"again".to_vec()),
        Err(CommandError::UnknownResponse(channel)),
        "a channel answers once"
    );

    // 128 KiB: within the responder's limit, over the requester's.
    let big = a
        .handle
        .request(b.id, b"big".to_vec())
        .expect("request queued");
    let channel = next(&mut b.events, |e| match e {
        Event::Request { channel, data, .. } if data == b"big" => Some(*channel),
        _ => None,
    })
    .await;
    b.handle
        .respond(channel, vec![7; 128 * 1024])
        .expect("respond queued");
    next(&mut a.events, |e| match e {
        Event::RequestFailed { request, .. } if *request == big => Some(()),
        Event::Response { request, .. } if *request == big => panic!("oversize response accepted"),
        _ => None,
    })
    .await;

    // The responder keeps serving; its own limit is checked before sending.
    let again = a
        .handle
        .request(b.id, b"again".to_vec())
        .expect("request queued");
    let channel = next(&mut b.events, |e| match e {
        Event::Request { channel, data, .. } if data == b"again" => Some(*channel),
        _ => None,
    })
    .await;
    assert!(matches!(
        b.handle.respond(channel, vec![0; 256 * 1024 + 1]),
        Err(CommandError::TooLarge { .. })
    ));
    b.handle
        .respond(channel, b"still here".to_vec())
        .expect("respond queued");
    let data = next(&mut a.events, |e| match e {
        Event::Response { request, data, .. } if *request == again => Some(data.clone()),
        _ => None,
    })
    .await;
    assert_eq!(data, b"still here");
    let metrics = a.handle.metrics();
    assert_eq!((metrics.requests_sent, metrics.requests_failed), (3, 1));
    assert_eq!(metrics.responses_received, 2);
    assert_eq!(
        metrics.responses_oversize, 1,
        "the refused response is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holds_at_most_two_connections_and_more_are_refused_and_counted() {
    let mut t = start(1, &[1, 2], Config::localhost()).await;
    let mut a = start(2, &[1, 2], Config::localhost()).await;
    connect(&mut a, &mut t).await;
    // Every dial of an address opens a new connection; the third and later are refused, by
    // whichever side sees it established while the peer holds two (both enforce the limit).
    for _ in 0..4 {
        a.handle.dial(t.addr).expect("dial queued");
    }
    metrics_until(&a.handle, |m| {
        m.refused_peer_limit + t.handle.metrics().refused_peer_limit >= 1
    })
    .await;
    for m in [a.handle.metrics(), t.handle.metrics()] {
        assert_eq!(m.refused_connections, m.refused_peer_limit);
        assert_eq!(m.connected_peers, 1);
    }
    // The peer is still served over the connections it holds.
    warm_up(&a, &mut [], &mut t).await;
    a.handle
        .publish(b"still here".to_vec())
        .expect("publish queued");
    gossip(&mut t, b"still here", &[]).await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_gossip_and_requests_from_a_misbehaving_peer_are_refused_and_counted() {
    use meshward_transport::Misbehaviour;

    let mut a = start(1, &[1, 2], Config::localhost()).await;
    let mut b = start(2, &[1, 2], Config::localhost()).await;
    connect(&mut a, &mut b).await;
    warm_up(&a, &mut [], &mut b).await;

    a.handle
        .misbehave(Misbehaviour::OversizeGossip)
        .expect("queued");
    a.handle
        .misbehave(Misbehaviour::OversizeRequest(b.id))
        .expect("queued");
    let metrics = metrics_until(&b.handle, |m| {
        m.gossip_oversize == 1 && m.requests_oversize == 1
    })
    .await;
    assert_eq!(
        metrics.requests_received, 0,
        "the oversize request never reached the node"
    );

    // b keeps serving: a normal request and a normal gossip still go through, and nothing
    // oversize was handed to the node.
    let ping = a.handle.request(b.id, b"ping".to_vec()).expect("queued");
    let channel = next(&mut b.events, |e| match e {
        Event::Gossip { data, .. } => {
            assert!(
                data.len() <= MAX_GOSSIP_BYTES,
                "oversize gossip reached the node"
            );
            None
        }
        Event::Request { channel, data, .. } if data == b"ping" => Some(*channel),
        _ => None,
    })
    .await;
    b.handle.respond(channel, b"pong".to_vec()).expect("queued");
    next(&mut a.events, |e| match e {
        Event::Response { request, .. } if *request == ping => Some(()),
        _ => None,
    })
    .await;

    // Answers replaced by oversize ones fail the requester's request, counted there.
    b.handle
        .misbehave(Misbehaviour::OversizeResponses(1))
        .expect("queued");
    let big = a.handle.request(b.id, b"big".to_vec()).expect("queued");
    let channel = next(&mut b.events, |e| match e {
        Event::Request { channel, data, .. } if data == b"big" => Some(*channel),
        _ => None,
    })
    .await;
    b.handle.respond(channel, b"fine".to_vec()).expect("queued");
    next(&mut a.events, |e| match e {
        Event::RequestFailed { request, .. } if *request == big => Some(()),
        Event::Response { request, .. } if *request == big => panic!("oversize answer accepted"),
        _ => None,
    })
    .await;
    assert_eq!(a.handle.metrics().responses_oversize, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_roster_is_refused_until_admitted() {
    let mut t = start(1, &[1, 2], Config::localhost()).await;
    let mut a = start(2, &[1, 2], Config::localhost()).await;
    let mut stranger = start(3, &[1, 3], Config::localhost()).await;
    connect(&mut a, &mut t).await;

    stranger.handle.dial(t.addr).expect("dial queued");
    let stranger_id = stranger.id;
    let refused = next(&mut t.events, |e| match e {
        Event::Refused { peer, .. } => Some(*peer),
        Event::Connected { peer, .. } if *peer == stranger_id => panic!("stranger admitted"),
        _ => None,
    })
    .await;
    assert_eq!(refused, Some(stranger_id));
    assert!(t.handle.metrics().refused_connections >= 1);

    // Gossip flows A -> T, and none of it reaches the stranger.
    warm_up(&a, &mut [], &mut t).await;
    a.handle
        .publish(b"secret".to_vec())
        .expect("publish queued");
    gossip(&mut t, b"secret", &[]).await;
    while let Ok(event) = stranger.events.try_recv() {
        assert!(
            !matches!(event, Event::Gossip { .. }),
            "stranger got {event:?}"
        );
    }
    assert_eq!(stranger.handle.metrics().gossip_received, 0);

    t.handle
        .set_roster(roster(&[1, 2, 3]))
        .expect("roster queued");
    stranger.handle.dial(t.addr).expect("dial queued");
    next(&mut t.events, |e| {
        matches!(e, Event::Connected { peer, .. } if *peer == stranger_id).then_some(())
    })
    .await;
    metrics_until(&t.handle, |m| m.connected_peers == 2).await;
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_a_peer_disconnects_and_refuses_it_until_healed() {
    let mut a = start(1, &[1, 2], Config::localhost()).await;
    let mut b = start(2, &[1, 2], Config::localhost()).await;
    connect(&mut a, &mut b).await;
    let (a_id, b_id) = (a.id, b.id);

    a.handle.set_blocked([b_id].into()).expect("block queued");
    next(&mut a.events, |e| {
        matches!(e, Event::Refused { peer: Some(p), .. } if *p == b_id).then_some(())
    })
    .await;
    next(&mut a.events, |e| {
        matches!(e, Event::Disconnected { peer } if *peer == b_id).then_some(())
    })
    .await;
    next(&mut b.events, |e| {
        matches!(e, Event::Disconnected { peer } if *peer == a_id).then_some(())
    })
    .await;

    b.handle.dial(a.addr).expect("dial queued");
    next(&mut a.events, |e| match e {
        Event::Refused { peer: Some(p), .. } if *p == b_id => Some(()),
        Event::Connected { peer, .. } if *peer == b_id => panic!("blocked peer admitted"),
        _ => None,
    })
    .await;
    assert!(a.handle.metrics().refused_connections >= 2);

    a.handle.set_blocked(BTreeSet::new()).expect("heal queued");
    b.handle.dial(a.addr).expect("dial queued");
    next(&mut a.events, |e| {
        matches!(e, Event::Connected { peer, .. } if *peer == b_id).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_pitfalls_are_counted_not_errors() {
    let mut a = start(1, &[1, 2], Config::localhost()).await;

    // Nobody subscribed yet: accepted, counted, nothing sent.
    a.handle
        .publish(b"lonely".to_vec())
        .expect("publish queued");
    metrics_until(&a.handle, |m| m.publish_no_peers == 1).await;

    // Oversize: refused synchronously.
    let err = a
        .handle
        .publish(vec![0; MAX_GOSSIP_BYTES + 1])
        .expect_err("too large");
    assert_eq!(
        err,
        CommandError::TooLarge {
            len: MAX_GOSSIP_BYTES + 1,
            max: MAX_GOSSIP_BYTES
        }
    );
    assert_eq!(a.handle.metrics().publish_too_large, 1);

    // A payload at the limit still travels; republishing it is a counted duplicate.
    let mut b = start(2, &[1, 2], Config::localhost()).await;
    connect(&mut a, &mut b).await;
    warm_up(&a, &mut [], &mut b).await;
    let full = vec![42; MAX_GOSSIP_BYTES];
    a.handle.publish(full.clone()).expect("publish queued");
    gossip(&mut b, &full, &[]).await;
    a.handle.publish(full).expect("publish queued");
    metrics_until(&a.handle, |m| m.publish_duplicate == 1).await;
    assert_eq!(a.handle.metrics().publish_too_large, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_outlive_the_idle_timeout() {
    // 100 ms idle timeout and a gossip mesh that never grafts (n_low = 0): a quiet connection
    // outside the mesh stays up. (Gossipsub's long-lived streams already count as activity for
    // the swarm; the transport's keep-alive handler guarantees it independently of them.)
    let quick = || Config {
        idle_timeout: Duration::from_millis(100),
        gossip: GossipConfig {
            mesh_n: 1,
            mesh_n_low: 0,
            mesh_n_high: 1,
            mesh_outbound_min: 0,
            ..GossipConfig::small_cluster()
        },
        ..Config::localhost()
    };
    let mut a = start(1, &[1, 2], quick()).await;
    let mut b = start(2, &[1, 2], quick()).await;
    connect(&mut a, &mut b).await;
    // Ten idle timeouts of silence; the check is that nothing happened meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(event) = a.events.try_recv() {
        assert!(
            !matches!(event, Event::Disconnected { .. }),
            "idle connection closed"
        );
    }
    assert_eq!(a.handle.metrics().connected_peers, 1);
    assert_eq!(b.handle.metrics().connected_peers, 1);
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_gossip_requests_and_answers_from_that_peer_at_least_that_long() {
    const DELAY: Duration = Duration::from_millis(300);
    let mut a = start(1, &[1, 2], Config::localhost()).await;
    let mut b = start(2, &[1, 2], Config::localhost()).await;
    connect(&mut a, &mut b).await;
    warm_up(&a, &mut [], &mut b).await;
    // b holds what a sends; a holds what b sends.
    b.handle
        .set_delay([a.id].into(), DELAY, DELAY)
        .expect("queued");
    a.handle
        .set_delay([b.id].into(), DELAY, DELAY)
        .expect("queued");
    // Let the commands reach the swarm tasks before anything is sent.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let sent = Instant::now();
    a.handle.publish(b"late".to_vec()).expect("queued");
    gossip(&mut b, b"late", &[]).await;
    assert!(sent.elapsed() >= DELAY, "gossip after {:?}", sent.elapsed());

    // A request waits the delay at b, its answer the delay at a.
    let sent = Instant::now();
    let ping = a.handle.request(b.id, b"ping".to_vec()).expect("queued");
    let channel = next(&mut b.events, |e| match e {
        Event::Request { channel, .. } => Some(*channel),
        _ => None,
    })
    .await;
    assert!(
        sent.elapsed() >= DELAY,
        "request after {:?}",
        sent.elapsed()
    );
    b.handle.respond(channel, b"pong".to_vec()).expect("queued");
    next(&mut a.events, |e| match e {
        Event::Response { request, .. } if *request == ping => Some(()),
        _ => None,
    })
    .await;
    assert!(
        sent.elapsed() >= 2 * DELAY,
        "answer after {:?}",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_major_version_is_disconnected_and_counted() {
    let all = [1, 2];
    let mut a = start(1, &all, Config::localhost()).await;
    let newer = Config {
        protocol_version: "/meshward/2".into(),
        ..Config::localhost()
    };
    let b = start(2, &all, newer).await;
    assert_eq!(meshward_transport::IDENTIFY_VERSION, "/meshward/1");
    a.handle.dial(b.addr).expect("dial queued");
    // A side that sees the other's version at identify hangs up; the other may lose the
    // connection before it saw the first's identify, so at least one of them counts it.
    let deadline = Instant::now() + DEADLINE;
    while a.handle.metrics().refused_version + b.handle.metrics().refused_version == 0 {
        assert!(
            Instant::now() < deadline,
            "neither side refused the other's version"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    metrics_until(&a.handle, |m| m.connected_peers == 0).await;
    metrics_until(&b.handle, |m| m.connected_peers == 0).await;
    // Nothing from b reaches a's node as gossip.
    while let Ok(event) = a.events.try_recv() {
        assert!(!matches!(event, Event::Gossip { .. }), "{event:?}");
    }
}
