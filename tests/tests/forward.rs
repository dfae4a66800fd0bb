//! Any node accepts any write: a write only the leader makes, sent to a follower, is forwarded
//! to the leader over the mesh and answered once the leader made it; with the leader gone, 503
//! naming the leader. Real daemons on 127.0.0.1, each killed by its own pid when a test ends.

use std::time::Duration;

use meshward_api::{ProblemKind, Reply, Request};
use meshward_client::{Client, ClientError};
use meshward_tests::{all_led_by, cli, cluster, start_all, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);

/// Each test starts three daemons; one test at a time on small machines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn send(data: &std::path::Path, request: Request) -> Result<Reply, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(Client::local(data).send(&request))
}

#[test]
fn a_follower_forwards_leader_writes_and_holds_them_when_it_answers() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let daemons = start_all(&nodes);
    // Node 1 follows node 0. A config write sent to it is made by the leader, and the
    // follower holds the record once it answers (read your writes).
    let reply = send(
        &daemons[1].data,
        Request::SetConfig {
            key: "managed.site".into(),
            value: "from-a-follower".into(),
        },
    )
    .unwrap();
    let Reply::Written(written) = reply else {
        panic!("{reply:?}")
    };
    assert!(written.version >= 2, "{written:?}");
    let get = |i: usize| cli(&daemons[i].data, &["config", "get", "managed.site"]).unwrap();
    assert!(get(1).contains("from-a-follower"), "{}", get(1));
    let leader_version = daemons[0].status().unwrap()["mastered"]["version"].clone();
    assert_eq!(leader_version.as_u64(), Some(written.version));
    wait_for(CONVERGE, || Ok(get(2).contains("from-a-follower"))).unwrap();

    // Users too, and their refusals come back as the leader's problem (400 naming the field).
    cli(&daemons[2].data, &["user", "create", "alice"]).unwrap();
    assert!(
        cli(&daemons[2].data, &["user", "list"])
            .unwrap()
            .contains("alice")
    );
    let err = send(
        &daemons[1].data,
        Request::SetConfig {
            key: "no-such-key".into(),
            value: "x".into(),
        },
    )
    .unwrap_err();
    let ClientError::Problem(problem) = err else {
        panic!("{err:?}")
    };
    assert_eq!(problem.status, 400, "{problem:?}");
    assert_eq!(problem.field.as_deref(), Some("key"), "{problem:?}");

    // A planned hand-over asked of a follower runs on the leader: node 0 hands over to node 2.
    cli(&daemons[1].data, &["ha", "demote", "--to", "node2.test"]).unwrap();
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 2, "node2.test")
    })
    .unwrap();
    // The leader that ran it logged who asked, where, and the result; `ha log` shows it.
    let log = cli(&daemons[0].data, &["ha", "log", "--json"]).unwrap();
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let entry = &log[0];
    assert_eq!(entry["command"], "ha demote --to node2.test", "{log}");
    assert_eq!(entry["ok"], true, "{log}");
    assert_eq!(entry["who"], "local operator", "{log}");
    assert_eq!(entry["node"], "node0.test", "{log}");
    let text = cli(&daemons[0].data, &["ha", "log"]).unwrap();
    assert!(text.contains("ha demote --to node2.test  ok"), "{text}");
}

#[test]
fn with_the_leader_gone_a_forwarded_write_is_503_naming_the_leader_and_nothing_changes() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let mut daemons = start_all(&nodes);
    let before = daemons[1].status().unwrap()["mastered"]["version"].clone();
    let leader = daemons.remove(0);
    leader.kill(libc::SIGKILL);
    let err = send(
        &daemons[0].data,
        Request::SetConfig {
            key: "managed.site".into(),
            value: "while-the-leader-is-gone".into(),
        },
    )
    .unwrap_err();
    let ClientError::Problem(problem) = err else {
        panic!("{err:?}")
    };
    assert_eq!(problem.status, 503, "{problem:?}");
    assert_eq!(
        problem.kind_uri,
        ProblemKind::Unavailable.uri(),
        "{problem:?}"
    );
    assert_eq!(problem.leader.as_deref(), Some("node0.test"), "{problem:?}");
    assert!(problem.detail.contains("leader"), "{problem:?}");
    assert_eq!(
        daemons[0].status().unwrap()["mastered"]["version"],
        before,
        "nothing was written"
    );
}
