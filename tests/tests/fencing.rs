//! Fencing end to end: two leaders' chains meeting after a cut, forged and rolled-back
//! records, a former leader restarted from an old copy of its data. Real `meshward run`
//! processes on 127.0.0.1, each killed by its own pid when its test ends.

use std::path::Path;
use std::time::Duration;

use meshward_tests::{Daemon, all_led_by, cli, cluster, connected_peers, start_all, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);

/// These tests start several daemons each; run them one at a time on small machines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_forced_failover_in_a_pair_wins_when_the_pair_meets_and_the_losers_writes_are_superseded() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2).unwrap();
    let daemons = start_all(&nodes);
    for args in [
        &["user", "create", "alice"][..],
        &["user", "create", "bob"],
        &["user", "grant", "bob", "guest:*"],
    ] {
        cli(&daemons[0].data, args).unwrap();
    }
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[1].data, &["user", "list"])?.contains("guest:*"))
    })
    .unwrap();
    cli(&daemons[0].data, &["fault", "block", "--peer", &nodes[1].1]).unwrap();
    cli(&daemons[1].data, &["fault", "block", "--peer", &nodes[0].1]).unwrap();
    let err = cli(&daemons[1].data, &["ha", "failover"]).unwrap_err();
    assert!(format!("{err:#}").contains("majority"), "{err:#}");
    cli(&daemons[1].data, &["ha", "failover", "--force"]).unwrap();
    cli(
        &daemons[0].data,
        &["config", "set", "managed.site", "old-primary"],
    )
    .unwrap();
    // The losing side takes access away: those changes must survive its defeat.
    for args in [
        &["cert", "revoke", "0a:0b:0c"][..],
        &["user", "revoke", "alice"],
        &["user", "revoke", "bob", "guest:*"],
    ] {
        cli(&daemons[0].data, args).unwrap();
    }
    cli(
        &daemons[1].data,
        &["config", "set", "managed.site", "new-leader"],
    )
    .unwrap();
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 2, "node1.test")
    })
    .unwrap_or_else(|e| {
        panic!(
            "the higher epoch did not win: {e:#}\nnode 0: {}\n{}\nnode 1: {}\n{}",
            daemons[0]
                .status()
                .map(|s| s["ha"].clone())
                .unwrap_or_default(),
            daemons[0].log_tail(40),
            daemons[1]
                .status()
                .map(|s| s["ha"].clone())
                .unwrap_or_default(),
            daemons[1].log_tail(40)
        )
    });
    let get = |d: &Daemon| cli(&d.data, &["config", "get", "managed.site"]).unwrap();
    assert!(get(&daemons[0]).contains("new-leader"));
    let superseded = cli(&daemons[0].data, &["ha", "superseded", "--json"]).unwrap();
    let superseded: serde_json::Value = serde_json::from_str(&superseded).unwrap();
    assert_eq!(superseded.as_array().map(Vec::len), Some(4), "{superseded}");
    assert_eq!(superseded[0]["kind"], "config");
    assert_eq!(superseded[0]["subject"], "config managed.site");
    assert_eq!(superseded[0]["restrictive"], false);
    assert_eq!(superseded[1]["subject"], "certificate 0a0b0c");
    assert_eq!(superseded[1]["restrictive"], true);
    // The winner signed the loser's revocations again, once each; they hold on both nodes.
    for d in &daemons {
        wait_for(CONVERGE, || {
            let revoked = cli(&d.data, &["cert", "revoked"])?;
            let users = cli(&d.data, &["user", "list"])?;
            Ok(
                revoked.contains("0a0b0c")
                    && !users.contains("alice")
                    && !users.contains("guest:*"),
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "a restrictive change was lost: {e:#}\nrevoked: {:?}\nusers: {:?}\n{}",
                cli(&d.data, &["cert", "revoked"]),
                cli(&d.data, &["user", "list"]),
                d.log_tail(30)
            )
        });
    }
    let status = daemons[1].status().unwrap();
    let version = status["mastered"]["version"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        daemons[1].status().unwrap()["mastered"]["version"].as_u64(),
        Some(version),
        "re-applied once, not once per node that handed them off"
    );
    let listed = cli(&daemons[0].data, &["ha", "superseded"]).unwrap();
    assert!(
        listed.contains("config managed.site: \"new-leader\" → \"old-primary\"  [superseded]"),
        "{listed}"
    );
    assert!(
        listed.contains("user alice: exists → deleted  [in force]"),
        "{listed}"
    );
    // The loser's config change is adopted by hand, from the follower that holds it: it
    // travels to the leader with the request.
    let hash = superseded[0]["hash"].as_str().unwrap();
    cli(&daemons[0].data, &["ha", "adopt", &hash[..12]]).unwrap();
    for d in &daemons {
        wait_for(CONVERGE, || Ok(get(d).contains("old-primary"))).unwrap();
    }
    // What the chain already holds is not written again; garbage is refused by name.
    let revocation = superseded[1]["hash"].as_str().unwrap();
    let err = cli(&daemons[0].data, &["ha", "adopt", revocation]).unwrap_err();
    assert!(format!("{err:#}").contains("already holds"), "{err:#}");
    let err = cli(&daemons[0].data, &["ha", "adopt", "xyz"]).unwrap_err();
    assert!(format!("{err:#}").contains("hash"), "{err:#}");
    let err = cli(&daemons[0].data, &["ha", "adopt", "00000000"]).unwrap_err();
    assert!(
        format!("{err:#}").contains("no superseded record"),
        "{err:#}"
    );
    let log = std::fs::read_to_string(daemons[1].data.join("ha-commands.log")).unwrap();
    assert!(log.contains("FORCED FAILOVER"), "{log}");
}

#[test]
fn forged_rolled_back_and_older_epoch_mastered_records_are_refused_by_a_running_node() {
    use meshward_crdt::mastered::{Chain, MasteredRecord, RecordKind, Roster};
    use meshward_node::roster::MasteredBundle;
    use meshward_node::store::Store;

    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 2).unwrap();
    // Node 0 hands leadership to node 1 (epoch 2), endorsed by both.
    let daemons = start_all(&nodes);
    cli(&daemons[0].data, &["ha", "demote", "--to", "node1.test"]).unwrap();
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 2, "node1.test")
    })
    .unwrap();
    drop(daemons);
    let (key0, anchor, records) = {
        let store = Store::open(&nodes[0].0).unwrap();
        let records = store.mastered_records().unwrap();
        (
            store.identity().unwrap().key,
            store.anchor().unwrap().unwrap(),
            records,
        )
    };
    let chain = Chain::rebuild(anchor, &records).unwrap();
    assert_eq!((chain.epoch(), chain.last_version()), (2, 2));
    let daemons = start_all(&nodes);
    wait_for(CONVERGE, || {
        Ok(daemons[1].status()?["mastered"]["version"] == 2)
    })
    .unwrap();
    let outsider = ed25519_dalek::SigningKey::from_bytes(&[0x77; 32]);
    let config = meshward_node::cluster_config::ConfigChange::Set {
        key: "managed.x".into(),
        value: "1".into(),
    }
    .encode();
    let cases = [
        (
            "forged",
            chain.sign_next(&outsider, RecordKind::Config, config.clone()),
            "not that epoch's leader",
        ),
        (
            "rolled back",
            Chain::new(anchor).sign_next(&key0, RecordKind::Genesis, Roster::default().encode()),
            "already held with different contents",
        ),
        (
            "older epoch",
            MasteredRecord {
                cluster: anchor.cluster,
                epoch: 1,
                version: 3,
                prev: chain.last_hash(),
                kind: RecordKind::Config,
                payload: config.clone(),
            }
            .sign(&key0),
            "epoch",
        ),
    ];
    for (what, record, expected) in cases {
        let bundle = MasteredBundle {
            cluster: anchor.cluster.0,
            genesis_leader: anchor.genesis_leader,
            records: vec![record.encode()],
        };
        let file = root.path().join("bad.bundle");
        std::fs::write(&file, bundle.encode()).unwrap();
        let err = cli(
            &daemons[1].data,
            &["mastered", "import", file.to_str().unwrap()],
        )
        .expect_err(what);
        let err = format!("{err:#}");
        assert!(err.contains(expected), "{what}: {err}");
        let status = daemons[1].status().unwrap();
        assert_eq!(status["mastered"]["version"], 2, "{what}");
        assert_eq!(status["ha"]["epoch"], 2, "{what}");
    }
}

/// Whether `user` holds `grant` on the node at `data`.
fn has_grant(data: &Path, user: &str, grant: &str) -> anyhow::Result<bool> {
    let users: serde_json::Value = serde_json::from_str(&cli(data, &["user", "list", "--json"])?)?;
    Ok(users
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["name"] == user)
        .flat_map(|u| u["grants"].as_array().cloned().unwrap_or_default())
        .any(|g| g == grant))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Issue 12's two attacks by a former leader: restarted from an old copy of its own data
/// directory, it writes in its old epoch and hands over to another node offline, or imports
/// a chain of hand-overs to itself; neither is accepted, nobody adopts its branch, and the
/// grant the new leader took back stays taken.
#[test]
fn a_former_leader_restarted_from_an_old_copy_of_its_data_cannot_roll_the_chain_back() {
    use meshward_crdt::mastered::{Chain, Endorsement, Handover, RecordKind};
    use meshward_node::roster::MasteredBundle;
    use meshward_node::store::Store;

    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let mut daemons = start_all(&nodes);
    cli(&daemons[0].data, &["user", "create", "alice"]).unwrap();
    cli(&daemons[0].data, &["user", "grant", "alice", "root"]).unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons
            .iter()
            .all(|d| has_grant(&d.data, "alice", "root").unwrap_or(false)))
    })
    .unwrap();
    // The real hand-over goes to the member with the lower key, and the attacker hands over to
    // the higher one: fork choice by the tips' (epoch, leader key), as before this fix, picks
    // the attacker's chain.
    let (real, other) = if nodes[1].1 < nodes[2].1 {
        (1, 2)
    } else {
        (2, 1)
    };
    let real_name = format!("node{real}.test");
    let other_name = format!("node{other}.test");

    // The operator's old copy of node 0's data, taken while it led epoch 1.
    let data0 = daemons.remove(0).kill(libc::SIGTERM);
    let old = root.path().join("old-copy-of-node0");
    copy_dir(&data0, &old).unwrap();
    let peers: Vec<_> = daemons
        .iter()
        .map(|d| d.listen_addr().unwrap().unwrap())
        .collect();
    daemons.insert(0, Daemon::start(&data0, &peers).unwrap());
    wait_for(CONVERGE, || Ok(connected_peers(&daemons[0])? == 2))
        .expect("node 0 reconnects to both members");
    cli(&daemons[0].data, &["ha", "demote", "--to", &real_name]).unwrap();
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 2, &real_name)
    })
    .expect("every node follows the hand-over");
    cli(&daemons[real].data, &["user", "revoke", "alice", "root"]).unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons
            .iter()
            .all(|d| !has_grant(&d.data, "alice", "root").unwrap_or(true)))
    })
    .unwrap();
    let version = daemons[real].status().unwrap()["mastered"]["version"].clone();

    // Node 0 is restarted from the old copy and, offline, writes in its old epoch and tries to
    // hand over to the other node.
    daemons.remove(0).kill(libc::SIGTERM);
    std::fs::remove_dir_all(&data0).unwrap();
    std::fs::rename(&old, &data0).unwrap();
    cli(&data0, &["config", "set", "managed.site", "rolled-back"]).unwrap();
    let err = cli(&data0, &["ha", "demote", "--to", &other_name]).unwrap_err();
    assert!(format!("{err:#}").contains("majority"), "{err:#}");
    // Nor can it import a chain of hand-overs to itself (epochs 2 to 12).
    let (key0, anchor, mut records) = {
        let store = Store::open(&data0).unwrap();
        (
            store.identity().unwrap().key,
            store.anchor().unwrap().unwrap(),
            store.mastered_records().unwrap(),
        )
    };
    let mut chain = Chain::rebuild(anchor, &records).unwrap();
    let held = records.len();
    for _ in 0..11 {
        let me = key0.verifying_key().to_bytes();
        let candidacy = chain.candidacy(me);
        let payload = Handover {
            next_epoch: candidacy.next_epoch,
            next_leader: me,
            endorsements: vec![Endorsement::sign(&key0, &candidacy)],
            forced: false,
        }
        .encode();
        let record = chain.sign_next(&key0, RecordKind::Handover, payload);
        // Advance by hand: the rules this test checks refuse the record.
        chain = Chain::rebuild(anchor, records.iter().chain([&record]))
            .unwrap_or_else(|_| chain.clone());
        records.push(record);
    }
    let bundle = MasteredBundle {
        cluster: anchor.cluster.0,
        genesis_leader: anchor.genesis_leader,
        records: records.iter().map(|r| r.encode()).collect(),
    };
    let file = root.path().join("selfish.bundle");
    std::fs::write(&file, bundle.encode()).unwrap();
    let err = cli(&data0, &["mastered", "import", file.to_str().unwrap()]).unwrap_err();
    assert!(
        format!("{err:#}").contains("names another roster member"),
        "{err:#}"
    );
    let restored = Store::open(&data0).unwrap().mastered_records().unwrap();
    assert_eq!(restored.len(), held, "the import wrote nothing");

    // Back on the mesh: nobody takes its branch; it takes the one the majority followed.
    daemons.insert(0, Daemon::start(&data0, &peers).unwrap());
    wait_for(CONVERGE, || {
        all_led_by(&daemons.iter().collect::<Vec<_>>(), 2, &real_name)
    })
    .unwrap_or_else(|e| {
        panic!(
            "the cluster did not keep the real chain: {e:#}\n{}\n{}",
            daemons[0].log_tail(30),
            daemons[other].log_tail(30)
        )
    });
    wait_for(CONVERGE, || {
        Ok(daemons[0].status()?["mastered"]["version"] == version)
    })
    .expect("the restored node takes the real chain");
    for d in &daemons {
        assert!(
            !has_grant(&d.data, "alice", "root").unwrap(),
            "root came back"
        );
        assert_eq!(d.status().unwrap()["mastered"]["version"], version);
        let site = cli(&d.data, &["config", "get", "managed.site"]).unwrap_or_default();
        assert!(!site.contains("rolled-back"), "{site}");
    }
    let reported: u64 = daemons
        .iter()
        .map(|d| {
            d.status().unwrap()["mesh"]["core"]["equivocations"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(reported >= 1, "the double signature is reported");
    let superseded = cli(&daemons[0].data, &["ha", "superseded", "--json"]).unwrap();
    let superseded: serde_json::Value = serde_json::from_str(&superseded).unwrap();
    assert_eq!(superseded[0]["kind"], "config", "{superseded}");
}

/// Issue 14: "a revocation made by the minority-side leader during a cut still refuses the
/// certificate after the heal". Five nodes cut 3|2 with the leader on the small side: the
/// three elect a new leader (no force: they are a majority), the old leader goes on signing
/// on its side and takes access away there; when the cut heals its chain loses, and what it
/// took away is signed again by the winner, once, on every node.
#[test]
fn revocations_by_the_minority_leader_during_a_3_2_cut_hold_after_the_heal() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 5).unwrap();
    let daemons = start_all(&nodes);
    for args in [
        &["user", "create", "carol"][..],
        &["user", "grant", "carol", "admin:pam"],
    ] {
        cli(&daemons[0].data, args).unwrap();
    }
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[4].data, &["user", "list"])?.contains("admin:pam"))
    })
    .unwrap();
    let (small, large) = ([0, 1], [2, 3, 4]);
    let block = |from: usize, others: &[usize]| {
        let mut args = vec!["fault", "block"];
        for &o in others {
            args.extend(["--peer", nodes[o].1.as_str()]);
        }
        cli(&daemons[from].data, &args).unwrap();
    };
    for i in small {
        block(i, &large);
    }
    for i in large {
        block(i, &small);
    }
    // The old leader's follower still hears it and does not replace it...
    let err = cli(&daemons[1].data, &["ha", "failover"]).unwrap_err();
    assert!(format!("{err:#}").contains("is alive"), "{err:#}");
    // ...while the three may elect a new one.
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[2].data, &["ha", "failover"]).is_ok())
    })
    .expect("a failover with a majority");
    wait_for(CONVERGE, || {
        all_led_by(&[&daemons[2], &daemons[3], &daemons[4]], 2, "node2.test")
    })
    .unwrap();
    // The minority leader takes access away on its side; its follower holds the same chain.
    for args in [
        &["cert", "revoke", "0d:0e:0f"][..],
        &["user", "revoke", "carol", "admin:pam"],
    ] {
        cli(&daemons[0].data, args).unwrap();
    }
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[1].data, &["cert", "revoked"])?.contains("0d0e0f"))
    })
    .unwrap();
    cli(
        &daemons[3].data,
        &["config", "set", "managed.site", "majority"],
    )
    .unwrap();
    let before_heal = daemons[2].status().unwrap()["mastered"]["version"]
        .as_u64()
        .unwrap();
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    let all: Vec<&Daemon> = daemons.iter().collect();
    wait_for(CONVERGE, || all_led_by(&all, 2, "node2.test")).unwrap_or_else(|e| {
        panic!(
            "the majority's epoch did not win: {e:#}\n{}",
            daemons[0].log_tail(40)
        )
    });
    for d in &daemons {
        wait_for(CONVERGE, || {
            let revoked = cli(&d.data, &["cert", "revoked"])?;
            let users = cli(&d.data, &["user", "list"])?;
            let site = cli(&d.data, &["config", "get", "managed.site"])?;
            Ok(revoked.contains("0d0e0f")
                && !users.contains("admin:pam")
                && site.contains("majority"))
        })
        .unwrap_or_else(|e| {
            panic!(
                "{}: a restrictive change was lost or the winner's data missing: {e:#}\n\
                 revoked: {:?}\nusers: {:?}\n{}",
                d.data.display(),
                cli(&d.data, &["cert", "revoked"]),
                cli(&d.data, &["user", "list"]),
                d.log_tail(30)
            )
        });
    }
    // Both nodes of the small side handed the branch over; the winner signed it once: the
    // revocation and the grant revoke, two records after the config change.
    std::thread::sleep(Duration::from_secs(2));
    let version = daemons[2].status().unwrap()["mastered"]["version"]
        .as_u64()
        .unwrap();
    assert_eq!(version, before_heal + 2, "re-applied once each");
    let superseded = cli(&daemons[1].data, &["ha", "superseded", "--json"]).unwrap();
    let superseded: serde_json::Value = serde_json::from_str(&superseded).unwrap();
    assert_eq!(superseded.as_array().map(Vec::len), Some(2), "{superseded}");
    assert!(
        superseded
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["restrictive"] == true),
        "{superseded}"
    );
}
