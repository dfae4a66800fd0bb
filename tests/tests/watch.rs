//! The watch stream (`GET /v1/watch`) over real daemons: resuming after a restart, a
//! partition's rows after the heal, overflow, compacted, bad input, and grants.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_api::{ProblemKind, Request};
use meshward_client::{Client, ClientError, Watch, WatchEvent};
use meshward_tests::{Daemon, api, cli, cluster, start_all};

/// How long a stream may stay silent before a test gives up on the next event.
const SILENCE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Appends `n` events of `user` through the API, targets `PREFIX-0`, `PREFIX-1`, …, each
/// with `pad` bytes of detail, in batches of up to 500.
fn append_events(data: &Path, user: &str, prefix: &str, n: usize, pad: usize) {
    let mut i = 0;
    while i < n {
        let batch: Vec<NewEvent> = (i..n.min(i + 500))
            .map(|k| NewEvent {
                kind: "login".into(),
                user: user.into(),
                target: format!("{prefix}-{k}"),
                detail: "x".repeat(pad),
                at_ms: None,
            })
            .collect();
        i += batch.len();
        api(data, Request::AppendEvents(AppendEvents { events: batch })).expect("append");
    }
}

/// The next event, failing the test after [`SILENCE`].
async fn next(watch: &mut Watch) -> Option<WatchEvent> {
    tokio::time::timeout(SILENCE, watch.next())
        .await
        .expect("the watch stream went silent")
        .expect("the watch stream failed")
}

/// Reads `n` changes; returns (cursor, target) of each.
async fn changes(watch: &mut Watch, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(watch).await {
            Some(WatchEvent::Change(c)) => out.push((
                c.cursor.parse().expect("a cursor"),
                c.row["target"].as_str().unwrap_or_default().to_string(),
            )),
            Some(WatchEvent::Snapshot(_)) => {}
            other => panic!("expected a change, got {other:?} after {}", out.len()),
        }
    }
    out
}

fn assert_increasing(cursors: &[(u64, String)]) {
    assert!(
        cursors.windows(2).all(|w| w[0].0 < w[1].0),
        "cursors not strictly increasing: {cursors:?}"
    );
}

#[test]
fn watch_resumes_after_a_daemon_restart_with_no_gap_and_no_duplicate() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1).unwrap();
    let data = nodes[0].0.clone();
    let daemon = Daemon::start(&data, &[]).unwrap();
    let rt = runtime();
    let client = Client::local(&data);
    let mut watch = rt
        .block_on(client.watch(Some("events"), Some("now")))
        .unwrap();
    append_events(&data, "alice", "a", 5, 0);
    let first = rt.block_on(changes(&mut watch, 5));
    assert_eq!(
        first.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["a-0", "a-1", "a-2", "a-3", "a-4"]
    );
    let resume = watch.last_id().expect("an id");
    assert_eq!(resume, first[4].0);
    drop(watch);
    // Stopped: the stream ends. Written while it is down (the CLI writes the store itself),
    // then after it is back.
    let data = daemon.kill(libc::SIGTERM);
    cli(
        &data,
        &[
            "event", "append", "--kind", "login", "--user", "bob", "--target", "b-0",
        ],
    )
    .unwrap();
    let _daemon = Daemon::start(&data, &[]).unwrap();
    append_events(&data, "carol", "c", 3, 0);
    let mut watch = rt
        .block_on(client.watch(Some("events"), Some(&resume.to_string())))
        .unwrap();
    let after = rt.block_on(changes(&mut watch, 4));
    assert_eq!(
        after.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["b-0", "c-0", "c-1", "c-2"]
    );
    assert!(after[0].0 > resume);
    // From the start: every change once, in order, none missing.
    let mut all = rt
        .block_on(client.watch(Some("events"), Some("0")))
        .unwrap();
    let every = rt.block_on(changes(&mut all, 9));
    assert_increasing(&every);
    let mut targets: Vec<&str> = every.iter().map(|(_, t)| t.as_str()).collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "a-0", "a-1", "a-2", "a-3", "a-4", "b-0", "c-0", "c-1", "c-2"
        ]
    );
    // A stream without `from` starts with the state (the 9 events), then goes on live.
    let mut fresh = rt.block_on(client.watch(Some("events"), None)).unwrap();
    let mut snapshot = 0;
    while snapshot < 9 {
        match rt.block_on(next(&mut fresh)) {
            Some(WatchEvent::Snapshot(c)) => {
                assert_eq!(c.cursor, every[8].0.to_string());
                snapshot += 1;
            }
            other => panic!("expected the snapshot, got {other:?}"),
        }
    }
    match rt.block_on(next(&mut fresh)) {
        Some(WatchEvent::Ready(at)) => assert_eq!(at, every[8].0),
        other => panic!("expected ready, got {other:?}"),
    }
    assert_eq!(fresh.last_id(), Some(every[8].0));
    append_events(&data, "dave", "d", 1, 0);
    let live = rt.block_on(changes(&mut fresh, 1));
    assert_eq!(live[0].1, "d-0");
    assert!(live[0].0 > every[8].0);
}

#[test]
fn watch_on_one_side_of_a_partition_gets_the_other_sides_rows_once_after_the_heal() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let daemons = start_all(&nodes);
    // Node 2 is cut from nodes 0 and 1.
    cli(
        &daemons[2].data,
        &[
            "fault",
            "block",
            "--peer",
            &nodes[0].1,
            "--peer",
            &nodes[1].1,
        ],
    )
    .unwrap();
    for d in &daemons[..2] {
        cli(&d.data, &["fault", "block", "--peer", &nodes[2].1]).unwrap();
    }
    let rt = runtime();
    let client = Client::local(&daemons[0].data);
    let mut watch = rt
        .block_on(client.watch(Some("events"), Some("now")))
        .unwrap();
    append_events(&daemons[1].data, "left", "l", 5, 0);
    append_events(&daemons[2].data, "right", "r", 5, 0);
    let during = rt.block_on(changes(&mut watch, 5));
    assert!(
        during.iter().all(|(_, t)| t.starts_with("l-")),
        "{during:?}"
    );
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    let healed = rt.block_on(changes(&mut watch, 5));
    let mut targets: Vec<&str> = healed.iter().map(|(_, t)| t.as_str()).collect();
    targets.sort();
    assert_eq!(targets, ["r-0", "r-1", "r-2", "r-3", "r-4"]);
    assert_increasing(&[during.clone(), healed.clone()].concat());
    // Nothing more comes (no duplicate): a fresh write is the very next change.
    append_events(&daemons[0].data, "after", "z", 1, 0);
    let next_one = rt.block_on(changes(&mut watch, 1));
    assert_eq!(next_one[0].1, "z-0");
}

#[test]
fn a_consumer_that_does_not_read_gets_overflow_with_the_cursor_to_resume_from() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1).unwrap();
    let data = nodes[0].0.clone();
    std::fs::write(data.join("meshward.toml"), "watch-buffer = 4\n").unwrap();
    let _daemon = Daemon::start(&data, &[]).unwrap();
    let rt = runtime();
    let client = Client::local(&data);
    let mut watch = rt
        .block_on(client.watch(Some("events"), Some("now")))
        .unwrap();
    // Far more than the socket buffers and the 4-change buffer hold, while nobody reads.
    let total = 6000;
    append_events(&data, "alice", "a", total, 2000);
    let mut seen: Vec<(u64, String)> = Vec::new();
    let resume = loop {
        match rt.block_on(next(&mut watch)) {
            Some(WatchEvent::Change(c)) => seen.push((
                c.cursor.parse().unwrap(),
                c.row["target"].as_str().unwrap_or_default().to_string(),
            )),
            Some(WatchEvent::Overflow { resume_from }) => break resume_from,
            other => panic!("expected changes then overflow, got {other:?}"),
        }
    };
    assert!(seen.len() < total, "no overflow happened");
    assert_eq!(resume, seen.last().map_or(resume, |(c, _)| *c));
    assert_eq!(
        rt.block_on(watch.next()).unwrap(),
        None,
        "the stream closes"
    );
    // Resuming from the cursor gets the rest, each once.
    let mut rest = rt
        .block_on(client.watch(Some("events"), Some(&resume.to_string())))
        .unwrap();
    let more = rt.block_on(changes(&mut rest, total - seen.len()));
    let all = [seen, more].concat();
    assert_increasing(&all);
    let expected: Vec<String> = (0..total).map(|k| format!("a-{k}")).collect();
    assert_eq!(
        all.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
        expected
    );
}

fn problem(result: Result<Watch, ClientError>) -> meshward_api::Problem {
    match result {
        Err(ClientError::Problem(p)) => *p,
        other => panic!("expected a problem, got {other:?}"),
    }
}

/// A raw request on the local socket with extra header lines; returns (status, body).
fn raw(data: &Path, path: &str, headers: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(data.join("meshward.sock"))?;
    s.set_read_timeout(Some(SILENCE))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Ok((status, body))
}

#[test]
fn old_cursors_get_compacted_and_bad_input_names_the_field() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1).unwrap();
    let data = nodes[0].0.clone();
    std::fs::write(data.join("meshward.toml"), "watch-keep-changes = 5\n").unwrap();
    let _daemon = Daemon::start(&data, &[]).unwrap();
    append_events(&data, "alice", "a", 20, 0);
    let rt = runtime();
    let client = Client::local(&data);
    let p = problem(rt.block_on(client.watch(None, Some("1"))));
    assert_eq!((p.status, p.field.as_deref()), (410, Some("from")), "{p:?}");
    assert_eq!(p.kind_uri, ProblemKind::Compacted.uri());
    assert!(p.detail.contains("without `from`"), "{}", p.detail);
    // The kept changes still stream, and a snapshot has every row.
    let mut watch = rt.block_on(client.watch(Some("events"), None)).unwrap();
    let mut rows = 0;
    while rows < 20 {
        match rt.block_on(next(&mut watch)) {
            Some(WatchEvent::Snapshot(_)) => rows += 1,
            other => panic!("expected the snapshot, got {other:?}"),
        }
    }
    for (tables, from, field) in [
        (Some("events,users"), None, "tables"),
        (None, Some("abc"), "from"),
        (None, Some("-3"), "from"),
        (None, Some("999999"), "from"),
    ] {
        let p = problem(rt.block_on(client.watch(tables, from)));
        assert_eq!((p.status, p.field.as_deref()), (400, Some(field)), "{p:?}");
    }
    let (status, body) = raw(&data, "/v1/watch", "Last-Event-ID: junk\r\n").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"Last-Event-ID\""), "{body}");
    // Last-Event-ID resumes like `from`.
    let (status, body) = raw(&data, "/v1/watch", "Last-Event-ID: 1\r\n").unwrap();
    assert_eq!(status, 410, "{body}");
}

#[test]
fn a_guest_without_the_grant_is_refused_and_one_with_it_watches() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("leader");
    let addr = format!(
        "127.0.0.1:{}",
        meshward_tests::free_port_pair().expect("free ports")
    );
    cli(&data, &["init", "--address", &addr, "--listen", &addr]).unwrap();
    let certs = root.path().join("certs");
    for (user, grant) in [("gus", "guest:*"), ("nina", "guest:other")] {
        cli(&data, &["user", "create", user]).unwrap();
        cli(&data, &["user", "grant", user, grant]).unwrap();
        cli(
            &data,
            &["user", "cert", user, "--out", certs.to_str().unwrap()],
        )
        .unwrap();
    }
    let daemon =
        Daemon::start_with(&data, &["--admin-listen".into(), "127.0.0.1:0".into()]).unwrap();
    let admin = daemon.status().unwrap()["mesh"]["admin"]
        .as_str()
        .expect("admin address")
        .to_string();
    let remote = |user: &str| {
        let read = |f: String| std::fs::read(certs.join(f)).unwrap();
        Client::remote(
            &format!("https://{admin}"),
            &read(format!("{user}.crt")),
            &read(format!("{user}.key")),
            &read("ca.crt".into()),
        )
        .unwrap()
    };
    append_events(&data, "alice", "a", 2, 0);
    let rt = runtime();
    let nina = remote("nina");
    let p = problem(rt.block_on(nina.watch(Some("events"), None)));
    assert_eq!(p.status, 403, "{p:?}");
    let p = problem(rt.block_on(nina.watch(Some("mastered"), None)));
    assert_eq!(p.status, 403, "{p:?}");
    let gus = remote("gus");
    let mut watch = rt.block_on(gus.watch(Some("events"), Some("0"))).unwrap();
    let got = rt.block_on(changes(&mut watch, 2));
    assert_eq!(got[1].1, "a-1");
    // Taking the grant back ends the open stream (the revocation is a mastered record).
    cli(&data, &["user", "revoke", "gus", "guest:*"]).unwrap();
    append_events(&data, "alice", "after", 1, 0);
    match rt.block_on(next(&mut watch)) {
        Some(WatchEvent::Closed(why)) => assert!(why.contains("grants"), "{why}"),
        other => panic!("expected the stream closed, got {other:?}"),
    }
    assert_eq!(rt.block_on(watch.next()).unwrap(), None);
    let p = problem(rt.block_on(gus.watch(Some("events"), None)));
    assert_eq!(p.status, 403, "{p:?}");
}

#[test]
fn the_cli_prints_one_json_line_per_change() {
    use std::io::BufRead as _;
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1).unwrap();
    let data = nodes[0].0.clone();
    let _daemon = Daemon::start(&data, &[]).unwrap();
    append_events(&data, "alice", "a", 3, 0);
    let mut child = std::process::Command::new(meshward_tests::meshward_bin())
        .arg("--data")
        .arg(&data)
        .args(["watch", "--tables", "events", "--from", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Stop(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut targets = Vec::new();
    for _ in 0..3 {
        let line = lines.next().expect("a line").unwrap();
        let change: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(change["op"], "append", "{line}");
        targets.push(change["row"]["target"].as_str().unwrap().to_string());
    }
    drop(guard);
    assert_eq!(targets, ["a-0", "a-1", "a-2"]);
}

/// A child process stopped (by its pid) and reaped when dropped, also when the test fails.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // Our own child: signalling its pid cannot reach another process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// `examples/pam-app` against a 3-node cluster: it appends events on node 2, prints the
/// approvals the leader (node 0) makes, and a second run resumes from its saved cursor.
#[test]
fn the_python_pam_app_follows_approvals_and_resumes_from_its_cursor() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: python3 is not installed; the pam-app example was NOT tested");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let daemons = start_all(&nodes);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pam-app/pam_app.py");
    let state = root.path().join("cursor");
    let run = |max: &str, append: &str| {
        std::process::Command::new("python3")
            .arg(&script)
            .args(["--data", daemons[2].data.to_str().unwrap()])
            .args(["--state", state.to_str().unwrap(), "--max", max])
            .args(["--append", append, "--user", "pam"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let approve = |host: &str| {
        cli(
            &daemons[0].data,
            &[
                "fingerprint",
                "approve",
                "--host",
                host,
                "--key-type",
                "ssh-ed25519",
                "--fingerprint",
                &format!("SHA256:{host}"),
            ],
        )
        .unwrap();
    };
    let mut first = run("2", "3");
    approve("db1");
    approve("db2");
    meshward_tests::wait_or_kill(&mut first, SILENCE).expect("the app exits after 2 approvals");
    let mut out = String::new();
    first
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(
        out,
        "appended 3 events\napproved db1 ssh-ed25519 SHA256:db1\n\
         approved db2 ssh-ed25519 SHA256:db2\n"
    );
    // Its events reached the leader.
    meshward_tests::wait_for(SILENCE, || {
        let list = cli(&daemons[0].data, &["event", "list", "--json"])?;
        Ok(list.matches("\"user\":\"pam\"").count() == 3)
    })
    .expect("the app's events replicate");
    // A second run resumes after the cursor it saved: only the new approval.
    let mut second = run("1", "0");
    approve("db3");
    meshward_tests::wait_or_kill(&mut second, SILENCE).expect("the app exits after 1 approval");
    let mut out = String::new();
    second
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "approved db3 ssh-ed25519 SHA256:db3\n");
}

/// Catch-up in pages, then the switch to live while a writer keeps appending: every event
/// once, in order.
#[test]
fn catching_up_under_writes_switches_to_live_with_no_gap_and_no_duplicate() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1).unwrap();
    let data = nodes[0].0.clone();
    let _daemon = Daemon::start(&data, &[]).unwrap();
    append_events(&data, "alice", "a", 600, 0);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            for b in 0..100 {
                let batch: Vec<NewEvent> = (0..10)
                    .map(|k| NewEvent {
                        kind: "login".into(),
                        user: "bob".into(),
                        target: format!("b-{}", b * 10 + k),
                        detail: String::new(),
                        at_ms: None,
                    })
                    .collect();
                api(&data, Request::AppendEvents(AppendEvents { events: batch })).unwrap();
            }
        })
    };
    let rt = runtime();
    let client = Client::local(&data);
    let mut watch = rt
        .block_on(client.watch(Some("events"), Some("0")))
        .unwrap();
    let got = rt.block_on(changes(&mut watch, 1600));
    writer.join().unwrap();
    assert_increasing(&got);
    let a: Vec<&str> = got
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.starts_with("a-"))
        .collect();
    let b: Vec<&str> = got
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.starts_with("b-"))
        .collect();
    let want_a: Vec<String> = (0..600).map(|k| format!("a-{k}")).collect();
    let want_b: Vec<String> = (0..1000).map(|k| format!("b-{k}")).collect();
    assert_eq!(a, want_a);
    assert_eq!(b, want_b);
}
