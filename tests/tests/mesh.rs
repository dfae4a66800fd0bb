//! The mesh end to end: real `meshward run` processes replicating over real QUIC on
//! 127.0.0.1. Every daemon is killed by its own pid when its test ends.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use meshward_tests::{
    Daemon, all_led_by, append, cli, cli_stdin, cluster, connected_peers, leadership, start_all,
    wait_for,
};

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
        let daemons = start_all(&nodes);
        for (i, d) in daemons.iter().enumerate() {
            append(&d.data, &format!("user{i}"), 5).expect("append");
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
        if n == 3 {
            mastered_config_flows_from_the_leader_only(&daemons).unwrap();
        }
    }
}

/// Node 0 leads: its mastered writes reach every follower over the mesh; a follower's write
/// is forwarded to it and reaches every node the same way.
fn mastered_config_flows_from_the_leader_only(daemons: &[Daemon]) -> anyhow::Result<()> {
    let get = |d: &Daemon, key: &str| -> anyhow::Result<serde_json::Value> {
        let out = cli(&d.data, &["config", "get", key, "--json"])?;
        Ok(serde_json::from_str::<serde_json::Value>(&out)?["value"].clone())
    };
    cli(
        &daemons[0].data,
        &["config", "set", "password.min-length", "16"],
    )?;
    cli(
        &daemons[0].data,
        &[
            "fingerprint",
            "approve",
            "--host",
            "db-1",
            "--key-type",
            "ssh-ed25519",
            "--fingerprint",
            "SHA256:x",
        ],
    )?;
    wait_for(CONVERGE, || {
        Ok(daemons.iter().all(|d| {
            get(d, "password.min-length").is_ok_and(|v| v == "16")
                && d.status().is_ok_and(|s| s["mastered"]["version"] == 3)
        }))
    })
    .map_err(|e| e.context("followers apply the leader's config"))?;
    let listed = cli(&daemons[2].data, &["fingerprint", "list", "--json"])?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    let approved: Vec<&serde_json::Value> = listed
        .as_array()
        .context("a list")?
        .iter()
        .filter(|f| f["host"] == "db-1")
        .map(|f| &f["approved"])
        .collect();
    anyhow::ensure!(approved == [true], "approvals of db-1: {approved:?}");
    cli(
        &daemons[1].data,
        &["config", "set", "password.min-length", "20"],
    )?;
    wait_for(CONVERGE, || {
        Ok(daemons.iter().all(|d| {
            get(d, "password.min-length").is_ok_and(|v| v == "20")
                && d.status().is_ok_and(|s| s["mastered"]["version"] == 4)
        }))
    })
    .map_err(|e| e.context("a follower's write is made by the leader and reaches everyone"))?;
    anyhow::ensure!(daemons[1].status()?["role"] == "follower");
    anyhow::ensure!(daemons[0].status()?["role"] == "leader");
    Ok(())
}

#[test]
fn a_partitioned_cluster_keeps_writing_on_both_sides_and_heals_without_restart() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 7).unwrap();
    let daemons = start_all(&nodes);
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
        append(&d.data, &format!("user{i}"), 10).expect("append");
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
    let mut daemons = start_all(&nodes);
    append(&daemons[2].data, "before-kill", 3).expect("append");
    wait_for(CONVERGE, || all_converged(&daemons, 3)).unwrap();
    let victim = daemons.pop().unwrap();
    let data = victim.kill(libc::SIGKILL);
    append(&daemons[0].data, "while-down", 4).expect("append");
    append(&daemons[1].data, "while-down", 4).expect("append");
    // Restart it dialling a host name (resolved by the daemon) rather than an address.
    let port = daemons[0].listen_addr().unwrap().unwrap().port();
    daemons.push(Daemon::start_named(&data, &[format!("localhost:{port}")]).unwrap());
    wait_for(CONVERGE, || all_converged(&daemons, 11)).expect("the restarted node catches up");
}

#[test]
fn a_peer_given_by_address_that_is_down_at_start_is_dialled_again_until_it_answers() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2).unwrap();
    // Node 0 runs once to learn a free port, then stops: node 1 starts dialling a dead port.
    let first = Daemon::start(&nodes[0].0, &[]).unwrap();
    let addr0 = first.listen_addr().unwrap().unwrap();
    first.kill(libc::SIGTERM);
    let node1 = Daemon::start(&nodes[1].0, &[addr0]).unwrap();
    // Past QUIC's 5 s handshake deadline, so that first dial has given up for good.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(connected_peers(&node1).unwrap(), 0);
    // Node 0 comes back on that port knowing no address of node 1 (the roster's are names,
    // and they never met): only node 1 dialling again can bring them together.
    let node0 = Daemon::start_with(&nodes[0].0, &["--listen".into(), addr0.to_string()]).unwrap();
    wait_for(CONVERGE, || {
        Ok(connected_peers(&node0)? == 1 && connected_peers(&node1)? == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\nnode 1:\n{}", node1.log_tail(30)));
}

#[test]
fn a_peer_outside_the_roster_is_refused_and_the_node_keeps_serving() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2).unwrap();
    let daemons = start_all(&nodes);
    let outsider_dir = root.path().join("outsider");
    cli(&outsider_dir, &["status"]).unwrap();
    let addr = daemons[0].listen_addr().unwrap().unwrap();
    let outsider = Daemon::start(&outsider_dir, &[addr]).unwrap();
    append(&daemons[0].data, "member", 3).expect("append");
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
fn garbage_oversize_foreign_and_made_up_writers_rows_and_forged_adverts_are_refused_and_counted_and_the_peers_keep_serving()
 {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let daemons = start_all(&nodes);
    for (i, d) in daemons.iter().enumerate() {
        append(&d.data, &format!("user{i}"), 2).expect("append");
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

    // Each kind, and the core counter both peers must show for it.
    for (kind, field, what) in [
        // Another writer's rows re-signed as its own.
        ("foreign", "pushes_rejected", "the foreign rows"),
        // Rows under a made-up writer (a fresh key outside the roster, signing its own
        // rows): refused as of a writer not in the roster, not stored, the sender not blamed.
        ("phantom", "unknown_writer", "the made-up writer's rows"),
        // Adverts "from" each peer, signed by the misbehaving node.
        ("advert", "forged_gossip", "the forged adverts"),
    ] {
        cli(&daemons[0].data, &["fault", "misbehave", "--kind", kind]).unwrap();
        wait_for(CONVERGE, || {
            Ok(daemons[1..].iter().all(|d| counter(d, "core", field) >= 1))
        })
        .unwrap_or_else(|e| panic!("both peers refused and counted {what}: {e:#}"));
    }

    // They keep serving and replicating, also with the misbehaving node, and hold no row
    // under its name that it did not write.
    append(&daemons[1].data, "after", 3).expect("append");
    append(&daemons[0].data, "after", 2).expect("append");
    wait_for(CONVERGE, || all_converged(&daemons, 11)).expect("the mesh keeps converging");
    for d in &daemons[1..] {
        assert_eq!(
            d.status().unwrap()["segments"].as_u64(),
            Some(3),
            "no forged or made-up writer's segment stored"
        );
    }
}

/// (epoch, leader address) as a node's status shows them.
#[test]
fn leadership_moves_by_hand_over_and_majority_failover_never_on_a_minority_and_a_node_can_leave() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let mut daemons = start_all(&nodes);
    let writer = |i: usize| nodes[i].1.as_str();

    // Planned hand-over, then failback to the primary (once the next leader is connected: it
    // endorses the hand-over itself).
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[0].data, &["ha", "demote", "--to", "node1.test"]).is_ok())
    })
    .expect("the hand-over is made once node 1 is connected");
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 2, "node1.test")
    })
    .expect("every node follows the planned hand-over");
    assert_eq!(daemons[0].status().unwrap()["ha"]["state"], "demoted");
    // The demoted primary forwards its writes to the new leader.
    cli(&daemons[0].data, &["config", "set", "managed.x", "1"]).unwrap();
    let on_leader = cli(&daemons[1].data, &["config", "get", "managed.x"]).unwrap();
    assert!(on_leader.contains("1"), "{on_leader}");
    cli(&daemons[1].data, &["ha", "failback"]).unwrap();
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 3, "node0.test")
    })
    .expect("every node follows the failback");

    // A password change needs an existing user; a follower's is decided by the leader's policy.
    let err = cli_stdin(
        &daemons[2].data,
        &["password", "change", "alice"],
        "Correct-horse-battery-9\n",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("no user \"alice\""), "{err:#}");
    cli(&daemons[2].data, &["user", "create", "alice"]).unwrap();
    let err = cli_stdin(
        &daemons[2].data,
        &["password", "change", "alice"],
        "short\n",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("at least 12"), "{err:#}");
    cli_stdin(
        &daemons[2].data,
        &["password", "change", "alice"],
        "Correct-horse-battery-9\n",
    )
    .unwrap();
    let listed = cli(&daemons[0].data, &["password", "list", "--json"]).unwrap();
    assert!(listed.contains("alice"), "{listed}");

    // The leader dies: a follower gathers a majority (itself and node 2) for epoch 4.
    daemons.remove(0).kill(libc::SIGKILL);
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[0].data, &["ha", "failover"]).is_ok())
    })
    .expect("failover with a majority");
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 4, "node1.test")
    })
    .expect("node 2 follows the new leader");

    // Cut node 2 off: alone it is a minority and cannot lead. It still checks passwords.
    cli(&daemons[1].data, &["fault", "block", "--peer", writer(1)]).unwrap();
    cli(&daemons[0].data, &["fault", "block", "--peer", writer(2)]).unwrap();
    let verify = |password: &str| {
        cli_stdin(
            &daemons[1].data,
            &["password", "verify", "alice", "--json"],
            &format!("{password}\n"),
        )
    };
    let checked: serde_json::Value =
        serde_json::from_str(&verify("Correct-horse-battery-9").unwrap()).unwrap();
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["expired"], false, "{checked}");
    assert!(
        checked["set_at_ms"].as_u64().is_some_and(|t| t > 0),
        "{checked}"
    );
    let err = verify("Correct-horse-battery-8").unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    wait_for(CONVERGE, || {
        let err = cli(&daemons[1].data, &["ha", "failover"]).unwrap_err();
        Ok(format!("{err:#}").contains("minority"))
    })
    .expect("a minority failover is refused");
    assert_eq!(leadership(&daemons[1]).unwrap(), (4, "node1.test".into()));
    cli(&daemons[1].data, &["fault", "heal"]).unwrap();
    cli(&daemons[0].data, &["fault", "heal"]).unwrap();

    // Node 2 leaves the cluster: the leader removes it and no longer admits it; node 2
    // starts again (same process) as the leader of its own one-node cluster, with a new key,
    // the MEK and its settings kept, the old cluster's data in a sealed backup.
    let old = daemons[1].status().unwrap();
    cli(&daemons[1].data, &["local", "set", "label.site", "north"]).unwrap();
    wait_for(CONVERGE, || {
        cli(&daemons[1].data, &["ha", "make-standalone"]).map(|_| true)
    })
    .expect("node 2 leaves");
    wait_for(CONVERGE, || {
        Ok(daemons[0].status()?["mastered"]["members"] == 2)
    })
    .unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons[1].status()?["cluster"] != old["cluster"])
    })
    .expect("node 2 runs standalone");
    let standalone = daemons[1].status().unwrap();
    assert_ne!(standalone["writer"], old["writer"], "{standalone}");
    assert_eq!(standalone["ha"]["state"], "active", "{standalone}");
    assert_eq!(standalone["mastered"]["members"], 1, "{standalone}");
    assert_eq!(
        cli(&daemons[1].data, &["local", "get", "label.site"])
            .unwrap()
            .trim(),
        "label.site = north"
    );
    let backups: Vec<_> = std::fs::read_dir(daemons[1].data.join("backups"))
        .unwrap()
        .collect();
    assert_eq!(backups.len(), 1, "one sealed backup of the old cluster");
    // Administrable: it leads its own cluster and writes its own mastered records.
    cli(
        &daemons[1].data,
        &["config", "set", "managed.site", "alone"],
    )
    .unwrap();
    let leaver = daemons.pop().unwrap().kill(libc::SIGTERM);
    let addr = daemons[0].listen_addr().unwrap().unwrap();
    let refused = |d: &Daemon| -> anyhow::Result<u64> {
        Ok(d.status()?["mesh"]["transport"]["refused_connections"]
            .as_u64()
            .unwrap_or(0))
    };
    let refused_before = refused(&daemons[0]).unwrap();
    let leaver = Daemon::start(&leaver, &[addr]).unwrap();
    append(&daemons[0].data, "after-leave", 2).expect("append");
    // The connection is refused at set-up, on whichever side decides first.
    wait_for(CONVERGE, || {
        Ok(refused(&daemons[0])? > refused_before || refused(&leaver)? > 0)
    })
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(leaver.data.join("daemon.log")).unwrap_or_default();
        let leader_log =
            std::fs::read_to_string(daemons[0].data.join("daemon.log")).unwrap_or_default();
        panic!(
            "the removed node is not refused: {e:#}\nleaver status {}\nleaver log:\n{log}\nleader log tail:\n{}",
            leaver.status().unwrap(),
            leader_log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let events: String = cli(&leaver.data, &["event", "list"]).unwrap();
    assert!(
        !events.contains("after-leave"),
        "the removed node got new data"
    );

    let log = std::fs::read_to_string(daemons[0].data.join("ha-commands.log")).unwrap();
    assert!(log.contains("ha failover\tok"), "{log}");
}

#[test]
fn a_removed_nodes_rows_stop_at_its_removal_also_with_its_stolen_key_and_reach_a_node_cut_off_then()
{
    use std::os::unix::fs::OpenOptionsExt as _;
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 4).unwrap();
    let writer = |i: usize| nodes[i].1.as_str();
    // Node 1 holds node 3's key, as a thief would once node 3 is removed.
    let stolen = meshward_node::store::Store::open(&nodes[3].0)
        .unwrap()
        .identity()
        .unwrap()
        .key;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(nodes[1].0.join("stolen.key"))
        .unwrap();
    std::io::Write::write_all(&mut file, &stolen.to_bytes()).unwrap();
    drop(file);
    let mut daemons = start_all(&nodes);
    let counter = |d: &Daemon, field: &str| -> u64 {
        d.status()
            .map_or(0, |s| s["mesh"]["core"][field].as_u64().unwrap_or(0))
    };
    let members =
        |d: &Daemon| -> anyhow::Result<bool> { Ok(d.status()?["mastered"]["members"] == 3) };

    // Node 2 is cut off; node 3 writes, which reaches the leader and node 1 only.
    cli(
        &daemons[2].data,
        &[
            "fault",
            "block",
            "--peer",
            writer(0),
            "--peer",
            writer(1),
            "--peer",
            writer(3),
        ],
    )
    .unwrap();
    for i in [0, 1, 3] {
        cli(&daemons[i].data, &["fault", "block", "--peer", writer(2)]).unwrap();
    }
    append(&daemons[3].data, "before-removal", 3).expect("append");
    wait_for(CONVERGE, || {
        Ok(count(&daemons[0].data, "event")? == 3 && count(&daemons[1].data, "event")? == 3)
    })
    .expect("node 3's rows reach the leader and node 1");

    // The leader removes node 3: the roster record fixes node 3's frontier as it holds it.
    cli(
        &daemons[0].data,
        &["ha", "make-standalone", "--node", writer(3)],
    )
    .unwrap();
    wait_for(CONVERGE, || {
        Ok(members(&daemons[0])? && members(&daemons[1])?)
    })
    .expect("the removal reaches node 1");
    daemons.pop().unwrap().kill(libc::SIGTERM);

    // Node 3's key goes on writing (node 1 signs with it, continuing node 3's log): refused
    // by the leader, not stored.
    cli(
        &daemons[1].data,
        &["fault", "misbehave", "--kind", "stolen"],
    )
    .unwrap();
    wait_for(
        CONVERGE,
        || Ok(counter(&daemons[0], "beyond_frontier") >= 1),
    )
    .expect("the leader refuses and counts rows beyond the frontier");

    // Node 2 comes back: it gets the removal and node 3's rows up to the frontier.
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    wait_for(CONVERGE, || {
        Ok(members(&daemons[2])? && count(&daemons[2].data, "event")? == 3)
    })
    .expect("node 2, cut off during the removal, gets node 3's rows written before it");
    // The stolen key's rows relayed to node 2: refused too.
    let before = counter(&daemons[2], "beyond_frontier");
    wait_for(CONVERGE, || {
        cli(
            &daemons[1].data,
            &["fault", "misbehave", "--kind", "stolen"],
        )?;
        Ok(counter(&daemons[2], "beyond_frontier") > before)
    })
    .expect("node 2 refuses and counts rows beyond the frontier");
    std::thread::sleep(Duration::from_secs(2));
    for d in &daemons {
        let events = cli(&d.data, &["event", "list"]).unwrap();
        assert!(
            !events.contains("stolen"),
            "a row beyond the frontier was stored: {events}"
        );
        assert_eq!(count(&d.data, "event").unwrap(), 3);
    }
}
