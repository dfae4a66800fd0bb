//! Standalone nodes end to end: a node alone in its cluster joins another and leaves it again
//! (`make-standalone`, with and without its leader), and an HA pair made with a joining code
//! (`ha create-joining-code` / `ha initialise`). Real processes on 127.0.0.1, each stopped by
//! its own pid when its test ends.

use std::path::PathBuf;
use std::time::Duration;

use meshward_tests::by_hand::{
    Node, bundle, cluster_id, events, init, join_args, leader, mode, p, roster_size,
};
use meshward_tests::{cli, cli_fails, meshward_bin, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);

/// These tests start several daemons each; run them one at a time on small machines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_standalone_node_joins_a_cluster_and_leaves_it_again_keeping_its_local_data() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let leader = leader(root, 3);
    let mek = leader.data.join("mek");
    let d1 = leader.start();
    // A standalone node of its own: its MEK, a node-only setting, a shared event.
    let solo = Node::new(root, "solo");
    init(root, &solo);
    let solo_mek = std::fs::read(solo.data.join("mek")).unwrap();
    cli(&solo.data, &["local", "set", "label.site", "south"]).unwrap();
    cli(
        &solo.data,
        &[
            "event", "append", "--kind", "login", "--user", "solo", "--target", "db",
        ],
    )
    .unwrap();
    let b1 = bundle(&leader, root, "b1", "1h");
    // A bad bundle changes nothing: still standalone, own MEK.
    let garbage = root.join("garbage");
    std::fs::write(&garbage, b"garbage").unwrap();
    cli_fails(&solo.data, &join_args(&solo, &garbage, &mek)).unwrap();
    assert_eq!(std::fs::read(solo.data.join("mek")).unwrap(), solo_mek);
    let out = cli(&solo.data, &join_args(&solo, &b1, &mek)).unwrap();
    assert!(
        out.contains("left its standalone cluster") && out.contains("joined cluster"),
        "{out}"
    );
    assert_eq!(cluster_id(&solo), cluster_id(&leader));
    assert_eq!(
        std::fs::read(solo.data.join("mek")).unwrap(),
        std::fs::read(&mek).unwrap()
    );
    let kept: Vec<PathBuf> = std::fs::read_dir(solo.data.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        kept.len(),
        2,
        "the old store's backup and its MEK: {kept:?}"
    );
    let old_mek = kept
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "mek"));
    assert_eq!(std::fs::read(old_mek.unwrap()).unwrap(), solo_mek);
    assert_eq!(mode(old_mek.unwrap()), 0o600);
    assert_eq!(
        cli(&solo.data, &["local", "get", "label.site"])
            .unwrap()
            .trim(),
        "label.site = south"
    );
    let d2 = solo.start();
    cli(
        &leader.data,
        &[
            "event", "append", "--kind", "login", "--user", "lead", "--target", "db",
        ],
    )
    .unwrap();
    wait_for(CONVERGE, || {
        Ok(events(&d2.data)? == 1 && events(&d1.data)? == 1)
    })
    .expect("the leader's event reaches the joined node, the old standalone one does not");

    // It leaves again, runs standalone, and joins back with a new bundle.
    cli(&solo.data, &["ha", "make-standalone"]).unwrap();
    let joined = cluster_id(&leader);
    wait_for(CONVERGE, || {
        Ok(!cli(&solo.data, &["status", "--json"])?.contains(&joined))
    })
    .expect("it runs standalone");
    wait_for(CONVERGE, || Ok(roster_size(&d1) == 1)).unwrap();
    let d2 = d2.kill(libc::SIGTERM);
    let b2 = bundle(&leader, root, "b2", "1h");
    let out = cli(&d2, &join_args(&solo, &b2, &mek)).unwrap();
    assert!(out.contains("joined cluster"), "{out}");
    let d2 = solo.start();
    wait_for(CONVERGE, || Ok(roster_size(&d1) == 2)).unwrap();
    wait_for(CONVERGE, || Ok(events(&d2.data)? == 1)).expect("it catches up again");

    // Stopped, it leaves without the leader; the leader then removes it by its address.
    let d2 = d2.kill(libc::SIGTERM);
    let out = cli(&d2, &["ha", "make-standalone"]).unwrap();
    assert!(out.contains("without its leader"), "{out}");
    assert_ne!(cluster_id(&solo), joined);
    assert_eq!(roster_size(&d1), 2);
    cli(
        &leader.data,
        &["ha", "make-standalone", "--node", &solo.addr],
    )
    .unwrap();
    assert_eq!(roster_size(&d1), 1);
    let err = cli_fails(&d2, &["ha", "make-standalone"]).unwrap();
    assert!(err.contains("already runs standalone"), "{err}");
}

/// Kills a child process of this test (by its own pid) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ha_initialise_with_a_joining_code_makes_a_pair_and_hands_the_secondary_the_mek() {
    use std::io::BufRead as _;
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let primary = leader(root, 2);
    let d1 = primary.start();
    let secondary = Node::new(root, "secondary");
    // A code that names nobody waiting, garbage, and a typo: clear errors.
    for (bad, says) in [
        ("hello", "not a joining code"),
        ("mwjc1-00112233", "mistyped"),
    ] {
        let err = cli_fails(&primary.data, &["ha", "initialise", "--joining-code", bad]).unwrap();
        assert!(err.contains(says), "{err}");
    }
    let mut waiting = Child(
        std::process::Command::new(meshward_bin())
            .args(["--data", p(&secondary.data), "ha", "create-joining-code"])
            .args(["--address", &secondary.addr, "--listen", &secondary.addr])
            .args(["--wait", "2m"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(waiting.0.stdout.take().unwrap()).lines();
    let code = lines
        .by_ref()
        .take(10)
        .map(|l| l.unwrap())
        .find_map(|l| l.trim().starts_with("mwjc1-").then(|| l.trim().to_string()))
        .expect("the secondary shows a code");
    assert!(
        !secondary.data.join("mek").exists(),
        "no MEK before the pair"
    );
    let mut typo = code.clone().into_bytes();
    let i = typo.len() - 12;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let err = cli_fails(
        &primary.data,
        &[
            "ha",
            "initialise",
            "--joining-code",
            std::str::from_utf8(&typo).unwrap(),
        ],
    )
    .unwrap();
    assert!(err.contains("mistyped"), "{err}");

    let out = cli(
        &primary.data,
        &["ha", "initialise", "--joining-code", &code],
    )
    .unwrap();
    assert!(out.contains("joined cluster"), "{out}");
    let status = (0..600)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            waiting.0.try_wait().unwrap()
        })
        .expect("the secondary stops waiting once joined");
    assert!(status.success());
    assert_eq!(
        std::fs::read(secondary.data.join("mek")).unwrap(),
        std::fs::read(primary.data.join("mek")).unwrap(),
        "the primary's MEK was handed over"
    );
    assert_eq!(mode(&secondary.data.join("mek")), 0o600);
    assert_eq!(roster_size(&d1), 2);
    let d2 = secondary.start();
    cli(
        &primary.data,
        &[
            "event", "append", "--kind", "login", "--user", "a", "--target", "db",
        ],
    )
    .unwrap();
    wait_for(CONVERGE, || Ok(events(&d2.data)? == 1)).expect("the pair replicates");
    let ha: serde_json::Value =
        serde_json::from_str(&cli(&d2.data, &["ha", "status", "--json"]).unwrap()).unwrap();
    assert_eq!(ha["state"], "standby", "{ha}");
    // The code was for one pairing: nobody waits there any more.
    let err = cli_fails(
        &primary.data,
        &["ha", "initialise", "--joining-code", &code],
    )
    .unwrap();
    assert!(err.contains("cannot reach the secondary"), "{err}");
}
