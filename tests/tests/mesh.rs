//! The mesh end to end: real `meshward run` processes replicating over real QUIC on
//! 127.0.0.1. Every daemon is killed by its own pid when its test ends.

use std::path::Path;
use std::time::Duration;

use meshward_tests::{Daemon, cli, cluster, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);

/// These tests start up to seven daemons each; run them one at a time on small machines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn count(data: &Path, what: &str) -> anyhow::Result<usize> {
    let out = cli(data, &[what, "list", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array().map_or(0, Vec::len))
}

fn digest(d: &Daemon) -> anyhow::Result<String> {
    Ok(d.status()?["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn append(data: &Path, user: &str, n: usize) {
    for i in 0..n {
        let target = format!("host-{i}");
        cli(
            data,
            &[
                "event", "append", "--kind", "login", "--user", user, "--target", &target,
            ],
        )
        .expect("append");
    }
}

/// Starts daemons for `nodes`; each dials every daemon started before it.
fn start(nodes: &[(std::path::PathBuf, String)]) -> Vec<Daemon> {
    let mut daemons: Vec<Daemon> = Vec::new();
    for (data, _) in nodes {
        let peers: Vec<_> = daemons
            .iter()
            .map(|d| d.listen_addr().expect("status").expect("listening"))
            .collect();
        daemons.push(Daemon::start(data, &peers).expect("start daemon"));
    }
    daemons
}

fn all_converged(daemons: &[Daemon], events: usize) -> anyhow::Result<bool> {
    let first = digest(&daemons[0])?;
    for d in daemons {
        if count(&d.data, "event")? != events || digest(d)? != first {
            return Ok(false);
        }
    }
    Ok(true)
}

#[test]
fn events_and_fingerprints_written_on_every_node_converge_on_three_and_seven_nodes() {
    let _serial = serial();
    for n in [3, 7] {
        let root = tempfile::tempdir().unwrap();
        let nodes = cluster(root.path(), n).unwrap();
        let daemons = start(&nodes);
        for (i, d) in daemons.iter().enumerate() {
            append(&d.data, &format!("user{i}"), 5);
            let host = format!("db-{i}");
            cli(
                &d.data,
                &[
                    "fingerprint",
                    "add",
                    "--host",
                    &host,
                    "--key-type",
                    "ssh-ed25519",
                    "--fingerprint",
                    "SHA256:x",
                ],
            )
            .unwrap();
        }
        wait_for(CONVERGE, || {
            Ok(all_converged(&daemons, 5 * n)?
                && daemons
                    .iter()
                    .all(|d| count(&d.data, "fingerprint").unwrap_or(0) == n))
        })
        .unwrap_or_else(|e| panic!("{n} nodes did not converge: {e:#}"));
    }
}

#[test]
fn a_partitioned_cluster_keeps_writing_on_both_sides_and_heals_without_restart() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 7).unwrap();
    let daemons = start(&nodes);
    let writers: Vec<&str> = nodes.iter().map(|(_, w)| w.as_str()).collect();
    let (left, right) = (0..4, 4..7);
    for (i, daemon) in daemons.iter().enumerate() {
        let other: Vec<&str> = if left.contains(&i) {
            writers[right.clone()].to_vec()
        } else {
            writers[left.clone()].to_vec()
        };
        let mut args = vec!["fault", "block"];
        for w in &other {
            args.extend(["--peer", w]);
        }
        cli(&daemon.data, &args).unwrap();
    }
    for (i, d) in daemons.iter().enumerate() {
        append(&d.data, &format!("user{i}"), 10);
    }
    // During the cut each side sees only its own writes.
    wait_for(CONVERGE, || {
        Ok(left
            .clone()
            .all(|i| count(&daemons[i].data, "event").unwrap_or(0) == 40)
            && right
                .clone()
                .all(|i| count(&daemons[i].data, "event").unwrap_or(0) == 30))
    })
    .expect("each side converges on its own writes");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&daemons[0].data, "event").unwrap(),
        40,
        "the cut leaked"
    );
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    wait_for(CONVERGE, || all_converged(&daemons, 70))
        .expect("all 7 hold all 70 events after the heal");
}

#[test]
fn a_node_killed_with_sigkill_catches_up_after_restart() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let mut daemons = start(&nodes);
    append(&daemons[2].data, "before-kill", 3);
    wait_for(CONVERGE, || all_converged(&daemons, 3)).unwrap();
    let victim = daemons.pop().unwrap();
    let data = victim.kill(libc::SIGKILL);
    append(&daemons[0].data, "while-down", 4);
    append(&daemons[1].data, "while-down", 4);
    // Restart it dialling a host name (resolved by the daemon) rather than an address.
    let port = daemons[0].listen_addr().unwrap().unwrap().port();
    daemons.push(Daemon::start_named(&data, &[format!("localhost:{port}")]).unwrap());
    wait_for(CONVERGE, || all_converged(&daemons, 11)).expect("the restarted node catches up");
}

#[test]
fn a_peer_outside_the_roster_is_refused_and_the_node_keeps_serving() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2).unwrap();
    let daemons = start(&nodes);
    let outsider_dir = root.path().join("outsider");
    cli(&outsider_dir, &["status"]).unwrap();
    let addr = daemons[0].listen_addr().unwrap().unwrap();
    let outsider = Daemon::start(&outsider_dir, &[addr]).unwrap();
    append(&daemons[0].data, "member", 3);
    wait_for(CONVERGE, || {
        let refused = daemons[0].status()?["mesh"]["transport"]["refused_connections"]
            .as_u64()
            .unwrap_or(0);
        Ok(refused >= 1 && all_converged(&daemons, 3)?)
    })
    .expect("the outsider is refused and the members converge");
    assert_eq!(
        count(&outsider.data, "event").unwrap(),
        0,
        "no table data reached the outsider"
    );
}

#[test]
fn garbage_oversize_messages_and_rows_of_another_writer_are_refused_and_counted_and_the_peers_keep_serving()
 {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let daemons = start(&nodes);
    for (i, d) in daemons.iter().enumerate() {
        append(&d.data, &format!("user{i}"), 2);
    }
    wait_for(CONVERGE, || all_converged(&daemons, 6)).unwrap();
    let counter = |d: &Daemon, group: &str, field: &str| -> u64 {
        d.status()
            .map_or(0, |s| s["mesh"][group][field].as_u64().unwrap_or(0))
    };
    let total = |group: &str, field: &str| -> u64 {
        daemons[1..].iter().map(|d| counter(d, group, field)).sum()
    };

    // Garbage: a gossip message and a sync request to each peer, then junk answers to the
    // next two sync requests the peers send (they ask a random peer every second).
    cli(
        &daemons[0].data,
        &["fault", "misbehave", "--kind", "garbage"],
    )
    .unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons[1..]
            .iter()
            .all(|d| counter(d, "core", "malformed") >= 2)
            && total("core", "malformed") >= 2 * 2 + 2)
    })
    .expect("both peers refused and counted the garbage gossip, requests and answers");

    // Oversize: one byte over the limits, for gossip, a request to each peer, and the answers
    // to the next two sync requests.
    cli(
        &daemons[0].data,
        &["fault", "misbehave", "--kind", "oversize"],
    )
    .unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons[1..].iter().all(|d| {
            counter(d, "transport", "gossip_oversize") >= 1
                && counter(d, "transport", "requests_oversize") >= 1
        }) && total("transport", "responses_oversize") >= 2)
    })
    .expect("both peers refused and counted the oversize gossip, requests and answers");

    cli(
        &daemons[0].data,
        &["fault", "misbehave", "--kind", "foreign"],
    )
    .unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons[1..]
            .iter()
            .all(|d| counter(d, "core", "pushes_rejected") >= 1))
    })
    .expect("both peers refused and counted the foreign rows");

    // They keep serving and replicating, also with the misbehaving node, and hold no row
    // under its name that it did not write.
    append(&daemons[1].data, "after", 3);
    append(&daemons[0].data, "after", 2);
    wait_for(CONVERGE, || all_converged(&daemons, 11)).expect("the mesh keeps converging");
    for d in &daemons[1..] {
        assert_eq!(
            d.status().unwrap()["segments"].as_u64(),
            Some(3),
            "no forged segment stored"
        );
    }
}
