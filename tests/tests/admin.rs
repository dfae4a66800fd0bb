//! Admin commands over the real binary: users and grants (leader-only mastered writes), sealed
//! backup and restore (also while a daemon writes), and a store on a full filesystem, for the
//! command line and under a running daemon. The full-disk tests mount a small tmpfs (root only;
//! skipped, saying why, without it) and unmount it when they end, passing or not.

#![allow(clippy::unwrap_used)] // helpers of tests: any failure aborts the test loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use meshward_crdt::ClusterId;
use meshward_crdt::mastered::Member;
use meshward_node::mek::{MEK_FILE, Mek};
use meshward_node::roster::MasteredBundle;
use meshward_node::store::Store;
use meshward_tests::{
    Daemon, Mount, append, cli, cli_fails, cluster, fill, free_port_pair, meshward_bin, run_cli,
    run_cli_in, wait_for,
};

fn meshward(data: &Path, args: &[&str]) -> Output {
    run_cli(data, args).expect("run meshward")
}

/// Runs a command that must fail; returns its stderr.
fn fails(data: &Path, args: &[&str]) -> String {
    let out = meshward(data, args);
    assert!(
        !out.status.success(),
        "meshward {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(data: &Path, args: &[&str]) -> String {
    cli(data, args).unwrap()
}

/// Makes `leader` (and `followers`) members of one cluster whose genesis leader is `leader`'s
/// own key, so that `leader` may write mastered records.
fn cluster_led_by(root: &Path, leader: &Path, followers: &[&Path]) {
    let mut keys = Vec::new();
    for data in std::iter::once(&leader).chain(followers) {
        ok(data, &["status"]); // creates the store and the node key
        let store = Store::open(data).unwrap();
        keys.push(store.identity().unwrap().key);
    }
    let members = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            key: k.verifying_key().to_bytes(),
            address: format!("node{i}.test:7400"),
        })
        .collect();
    let bundle = MasteredBundle::genesis(&keys[0], ClusterId([0x61; 16]), members, None);
    let file = root.join("genesis.bundle");
    std::fs::write(&file, bundle.encode()).unwrap();
    for data in std::iter::once(&leader).chain(followers) {
        ok(data, &["mastered", "import", file.to_str().unwrap()]);
    }
}

fn write_mek(path: &Path) {
    Mek::generate(&mut rand::rngs::OsRng)
        .write_new(path)
        .unwrap();
}

#[test]
fn users_and_grants_are_written_on_the_leader_only_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = (dir.path().join("leader"), dir.path().join("follower"));
    cluster_led_by(dir.path(), &leader, &[&follower]);

    ok(&leader, &["user", "create", "alice"]);
    ok(&leader, &["user", "grant", "alice", "admin:ns1"]);
    ok(&leader, &["user", "grant", "alice", "guest:*"]);
    ok(&leader, &["user", "create", "bob"]);
    ok(&leader, &["user", "grant", "bob", "root"]);
    let before = ok(&leader, &["user", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        users,
        serde_json::json!([
            {"name": "alice", "grants": ["admin:ns1", "guest:*"]},
            {"name": "bob", "grants": ["root"]},
        ])
    );

    // Bad input: a clear error, and the mastered chain unchanged.
    let records = ok(&leader, &["status", "--json"]);
    for (args, says) in [
        (
            &["user", "grant", "alice", "squatter"][..],
            "write root, admin:NAMESPACE",
        ),
        (
            &["user", "grant", "alice", "admin:nS1"],
            "'S' is not allowed",
        ),
        (&["user", "grant", "carol", "root"], "no user carol"),
        (
            &["user", "grant", "alice", "guest:*"],
            "already holds guest:*",
        ),
        (&["user", "create", "alice"], "already exists"),
        (
            &["user", "create", "Alice"],
            "user name \"Alice\" is not valid",
        ),
        (&["user", "revoke", "alice", "root"], "does not hold root"),
    ] {
        let err = fails(&leader, args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(ok(&leader, &["user", "list", "--json"]), before);
    assert_eq!(ok(&leader, &["status", "--json"]), records);

    // A follower refuses writes and names the leader.
    let err = fails(&follower, &["user", "create", "carol"]);
    assert!(err.contains("node0.test:7400"), "{err}");
    assert_eq!(ok(&follower, &["user", "list"]), "");

    ok(&leader, &["user", "revoke", "alice", "guest:*"]);
    ok(&leader, &["user", "revoke", "bob"]);
    assert_eq!(ok(&leader, &["user", "list"]), "alice admin:ns1\n");

    // Certificate revocations, likewise: bad serials change nothing, a follower names the
    // leader, a serial is revoked once.
    let records = ok(&leader, &["status", "--json"]);
    for (serial, says) in [
        ("0x1f", "'x' is not a hex digit"),
        ("", "it is empty"),
        ("1f 2e", "' ' is not a hex digit"),
    ] {
        let err = fails(&leader, &["cert", "revoke", serial]);
        assert!(err.contains(says), "{serial:?}: {err}");
    }
    assert_eq!(ok(&leader, &["status", "--json"]), records);
    let err = fails(&follower, &["cert", "revoke", "1f"]);
    assert!(err.contains("node0.test:7400"), "{err}");
    ok(&leader, &["cert", "revoke", "00:1F:2e"]);
    let err = fails(&leader, &["cert", "revoke", "1f2e"]);
    assert!(err.contains("already revoked"), "{err}");
    assert_eq!(
        ok(&leader, &["cert", "revoked"]),
        "1f2e (mastered version 9)\n"
    );
    assert_eq!(ok(&leader, &["user", "list"]), "alice admin:ns1\n");
}

/// Everything a restored store must show identically.
fn contents(data: &Path) -> String {
    [
        &["event", "list", "--json"][..],
        &["audit", "list", "--json"],
        &["user", "list", "--json"],
        &["fingerprint", "list", "--json"],
    ]
    .iter()
    .map(|args| ok(data, args))
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn a_backup_taken_while_the_daemon_writes_restores_and_bad_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    cluster_led_by(dir.path(), &node, &[]);
    ok(&node, &["user", "create", "alice"]);
    ok(
        &node,
        &[
            "audit", "record", "--actor", "a", "--action", "b", "--target", "c",
        ],
    );
    write_mek(&node.join(MEK_FILE));
    ok(
        &node,
        &[
            "event", "append", "--kind", "login", "--user", "u", "--target", "t", "--count", "5000",
        ],
    );

    let daemon = Daemon::start(&node, &[]).unwrap();
    let archive = dir.path().join("node.backup");
    // A writer keeps committing while the backup runs in the daemon.
    let writer = {
        let node = node.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                cli(
                    &node,
                    &[
                        "event", "append", "--kind", "login", "--user", "w", "--target", "t",
                    ],
                )
                .unwrap();
            }
        })
    };
    // A relative --out is the caller's, though the daemon writes the file.
    let out = run_cli_in(dir.path(), &node, &["backup", "--out", "relative.backup"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("relative.backup").is_file());
    // A link at --out is neither followed nor replaced.
    let elsewhere = dir.path().join("elsewhere");
    let link = dir.path().join("link.backup");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let err = fails(&node, &["backup", "--out", link.to_str().unwrap()]);
    assert!(err.contains("link"), "{err}");
    assert!(!elsewhere.exists());
    ok(&node, &["backup", "--out", archive.to_str().unwrap()]);
    writer.join().unwrap();
    drop(daemon);
    let err = fails(&node, &["backup", "--out", archive.to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");

    // Restore into a new directory: the same data, and the node's identity.
    let restored = dir.path().join("restored");
    let mek = node.join(MEK_FILE);
    let (a, m) = (archive.to_str().unwrap(), mek.to_str().unwrap());
    ok(&restored, &["restore", a, "--mek", m]);
    assert!(restored.join(MEK_FILE).exists(), "the MEK is installed");
    let shown = contents(&restored);
    let events: serde_json::Value = serde_json::from_str(shown.lines().next().unwrap()).unwrap();
    let n = events.as_array().unwrap().len();
    assert!((5000..=5020).contains(&n), "{n} events");
    let status = |d: &Path| {
        let s: serde_json::Value = serde_json::from_str(&ok(d, &["status", "--json"])).unwrap();
        (s["writer"].clone(), s["cluster"].clone())
    };
    assert_eq!(status(&restored), status(&node));
    ok(&restored, &["audit", "verify"]);

    // Refusals leave the target as it was.
    let before = contents(&restored);
    let err = fails(&restored, &["restore", a, "--mek", m]);
    assert!(err.contains("--force"), "{err}");
    let wrong = dir.path().join("wrong.key");
    write_mek(&wrong);
    let fresh = dir.path().join("fresh");
    let bytes = std::fs::read(&archive).unwrap();
    let mut tampered = bytes.clone();
    tampered[100] ^= 0x20; // inside the first chunk's ciphertext
    let bad_files = [
        (
            "tampered",
            tampered,
            "wrong MEK, or the archive was altered",
        ),
        (
            "truncated",
            bytes[..bytes.len() - 100].to_vec(),
            "truncated",
        ),
        ("short", bytes[..bytes.len() / 3].to_vec(), "truncated"),
        (
            "trailing",
            [&bytes[..], b"x"].concat(),
            "after its last chunk",
        ),
        ("garbage", vec![0x5a; 4096], "not a meshward backup"),
        ("empty", Vec::new(), "not a meshward backup"),
    ];
    for (name, content, says) in &bad_files {
        let file = dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        for target in [&restored, &fresh] {
            let err = fails(
                target,
                &["restore", file.to_str().unwrap(), "--mek", m, "--force"],
            );
            assert!(err.contains(says), "{name}: {err}");
        }
    }
    let err = fails(&fresh, &["restore", a, "--mek", wrong.to_str().unwrap()]);
    assert!(err.contains("wrong MEK"), "{err}");
    assert_eq!(contents(&restored), before);
    let left: Vec<PathBuf> = std::fs::read_dir(&fresh)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused restore left {left:?}");

    // With --force a good archive replaces a store.
    ok(
        &restored,
        &[
            "event", "append", "--kind", "login", "--user", "x", "--target", "t",
        ],
    );
    assert_ne!(contents(&restored), before);
    ok(&restored, &["restore", a, "--mek", m, "--force"]);
    assert_eq!(contents(&restored), before);
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let Some(_mount) = Mount::tmpfs(&mnt, "6m") else {
        return;
    };
    let data = mnt.join("node");
    ok(
        &data,
        &[
            "audit", "record", "--actor", "a", "--action", "b", "--target", "c",
        ],
    );
    // Ballast to free later.
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 << 20]).unwrap();

    let detail = "x".repeat(900);
    let mut refused = None;
    for _ in 0..200 {
        let out = meshward(
            &data,
            &[
                "event", "append", "--kind", "login", "--user", "u", "--target", "t", "--detail",
                &detail, "--count", "200",
            ],
        );
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let err = refused.expect("a 6 MiB filesystem filled up");
    let says = format!(
        "disk full: {} has no space left; the write was refused and nothing was changed",
        data.display()
    );
    assert!(err.contains(&says), "the error names the full disk: {err}");

    // A restore onto the full filesystem is refused the same way and leaves nothing behind.
    let source = dir.path().join("source");
    ok(
        &source,
        &[
            "event", "append", "--kind", "login", "--user", "u", "--target", "t", "--detail",
            &detail, "--count", "1000",
        ],
    );
    write_mek(&source.join(MEK_FILE));
    let archive = dir.path().join("source.mwb");
    ok(&source, &["backup", "--out", archive.to_str().unwrap()]);
    let restored = mnt.join("restored");
    let err = fails(
        &restored,
        &[
            "restore",
            archive.to_str().unwrap(),
            "--mek",
            source.join(MEK_FILE).to_str().unwrap(),
        ],
    );
    let says = format!("disk full: {} has no space left", restored.display());
    assert!(err.contains(&says), "the error names the full disk: {err}");
    let left: Vec<PathBuf> = std::fs::read_dir(&restored)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused restore left {left:?}");

    std::fs::remove_file(&ballast).unwrap();
    ok(&data, &["audit", "verify"]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&data, &["event", "list", "--json"])).unwrap();
    let before = listed.as_array().unwrap().len();
    assert_eq!(before % 200, 0, "whole commits only: {before}");
    ok(
        &data,
        &[
            "event", "append", "--kind", "login", "--user", "after", "--target", "t",
        ],
    );
    ok(
        &data,
        &[
            "audit", "record", "--actor", "after", "--action", "b", "--target", "c",
        ],
    );
    ok(&data, &["audit", "verify"]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&data, &["event", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), before + 1);
}

#[test]
fn a_member_without_its_mek_runs_sealed_until_unsealed_with_the_clusters_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let addr = format!("127.0.0.1:{}", free_port_pair().unwrap());
    ok(&node, &["init", "--address", &addr, "--listen", &addr]);
    // The operator moved the MEK to a vault: the node is sealed.
    let vault = dir.path().join("vault.key");
    std::fs::rename(node.join(MEK_FILE), &vault).unwrap();
    let wrong = dir.path().join("wrong.key");
    write_mek(&wrong);
    // Without a daemon: a well-formed key that is not the cluster's is refused, nothing written.
    let err = fails(&node, &["unseal", "--mek", wrong.to_str().unwrap()]);
    assert!(err.contains("not this cluster's MEK"), "{err}");
    assert!(!node.join(MEK_FILE).exists());

    /// Our own child, killed by its handle (its pid) and reaped when the test ends.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Child(
        Command::new(meshward_bin())
            .arg("--data")
            .arg(&node)
            .args(["run", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = node.join("meshward.sock");
    meshward_tests::wait_for(std::time::Duration::from_secs(30), || Ok(socket.exists())).unwrap();

    let status: serde_json::Value =
        serde_json::from_str(&ok(&node, &["status", "--json"])).unwrap();
    assert_eq!(status["sealed"], true, "{status}");
    let err = fails(
        &node,
        &[
            "event", "append", "--kind", "login", "--user", "u", "--target", "t",
        ],
    );
    assert!(err.contains("sealed"), "{err}");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let err = fails(&node, &["unseal", "--mek", garbage.to_str().unwrap()]);
    assert!(err.contains("not a meshward MEK"), "{err}");
    // The sealed daemon refuses a wrong key too, and stays sealed.
    let err = fails(&node, &["unseal", "--mek", wrong.to_str().unwrap()]);
    assert!(err.contains("not this cluster's MEK"), "{err}");
    assert!(!node.join(MEK_FILE).exists());
    let status: serde_json::Value =
        serde_json::from_str(&ok(&node, &["status", "--json"])).unwrap();
    assert_eq!(status["sealed"], true, "{status}");

    // A relative --mek is the caller's.
    let out = run_cli_in(dir.path(), &node, &["unseal", "--mek", "vault.key"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(node.join(MEK_FILE)).unwrap(),
        std::fs::read(&vault).unwrap()
    );
    // The daemon goes on starting: it joins the mesh and takes writes.
    meshward_tests::wait_for(std::time::Duration::from_secs(30), || {
        let status: serde_json::Value = serde_json::from_str(&cli(&node, &["status", "--json"])?)?;
        Ok(status["mesh"]["listen"].is_string())
    })
    .unwrap();
    ok(
        &node,
        &[
            "event", "append", "--kind", "login", "--user", "u", "--target", "t",
        ],
    );
    let err = fails(&node, &["unseal", "--mek", vault.to_str().unwrap()]);
    assert!(err.contains("not sealed"), "{err}");
}

// A full disk under a running node: it must refuse writes with a clear error, keep answering,
// lose nothing the mesh holds, and take writes again once space is freed, without a restart.

/// How long replication may take to catch up (a debug build on a busy 2-core machine).
const CONVERGE: Duration = Duration::from_secs(120);

fn events_of(data: &Path, user: &str) -> anyhow::Result<usize> {
    let out = cli(data, &["event", "list", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .map_or(0, |a| a.iter().filter(|e| e["user"] == user).count()))
}

#[test]
fn a_daemon_whose_disk_fills_up_refuses_writes_keeps_serving_and_catches_up_once_space_is_freed() {
    let root = tempfile::tempdir().unwrap();
    // Node 0's data directory is the tmpfs itself; node 1's is on the ordinary disk.
    let Some(_mount) = Mount::tmpfs(&root.path().join("node0"), "8m") else {
        return;
    };
    let nodes = cluster(root.path(), 2).unwrap();
    let (full_data, other_data) = (nodes[0].0.clone(), nodes[1].0.clone());
    let mut full = Daemon::start(&full_data, &[]).unwrap();
    let other = Daemon::start(&other_data, &[full.listen_addr().unwrap().unwrap()]).unwrap();
    append(&other_data, "before", 3).unwrap();
    wait_for(CONVERGE, || Ok(events_of(&full_data, "before")? == 3))
        .expect("the nodes replicate before the disk fills");

    // Fill the filesystem; then the other node writes until the full node's store needs
    // more room than its file has, and refuses to persist what arrives.
    let filler = full_data.join("filler");
    fill(&filler);
    let detail = "x".repeat(900);
    let refused = |d: &Daemon| -> u64 {
        d.status().map_or(0, |s| {
            s["mesh"]["store"]["writes_refused"]
                .as_u64()
                .unwrap_or_default()
        })
    };
    let mut written = 0;
    for _ in 0..200 {
        cli(
            &other_data,
            &[
                "event", "append", "--kind", "login", "--user", "during", "--target", "t",
                "--detail", &detail, "--count", "100",
            ],
        )
        .unwrap();
        written += 100;
        if wait_for(Duration::from_secs(3), || Ok(refused(&full) >= 1)).is_ok() {
            break;
        }
    }
    assert!(
        refused(&full) >= 1,
        "an 8 MiB filesystem did not fill up:\n{}",
        full.log_tail(20)
    );

    // The daemon is still there, answers, and says what happened.
    assert!(
        full.is_running(),
        "the daemon exited:\n{}",
        full.log_tail(20)
    );
    let status = full.status().expect("status answers on a full disk");
    assert_eq!(status["mesh"]["store"]["disk_full"], true, "{status}");
    let text = cli(&full_data, &["status"]).unwrap();
    assert!(text.contains("disk full:"), "{text}");

    // A local write is refused, clearly; so is a backup onto the full disk, which leaves no
    // partial file.
    let err = cli_fails(
        &full_data,
        &[
            "event", "append", "--kind", "login", "--user", "refused", "--target", "t", "--detail",
            &detail, "--count", "100",
        ],
    )
    .unwrap();
    let says = format!(
        "disk full: {} has no space left; the write was refused and nothing was changed",
        full_data.display()
    );
    assert!(err.contains(&says), "the error names the full disk: {err}");
    let archive = full_data.join("during.mwb");
    let err = cli_fails(&full_data, &["backup", "--out", archive.to_str().unwrap()]).unwrap();
    assert!(
        err.contains(&format!(
            "disk full: the backup {} could not be written",
            archive.display()
        )) && err.contains("has no space left"),
        "{err}"
    );
    let partial: Vec<_> = std::fs::read_dir(&full_data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("during.mwb"))
        .collect();
    assert!(partial.is_empty(), "a refused backup left {partial:?}");

    // The other node keeps writing; the full node drops what it cannot store, and goes on.
    append(&other_data, "meanwhile", 5).unwrap();
    wait_for(CONVERGE, || {
        Ok(full.status()?["mesh"]["core"]["held_dropped"].as_u64() >= Some(1))
    })
    .expect("the full node drops what arrives");
    assert!(
        full.is_running(),
        "the daemon exited:\n{}",
        full.log_tail(20)
    );
    assert_eq!(events_of(&full_data, "meanwhile").unwrap(), 0);

    // Space is freed: writes work again without a restart, and what the other node wrote
    // meanwhile arrives.
    std::fs::remove_file(&filler).unwrap();
    cli(
        &full_data,
        &[
            "event", "append", "--kind", "login", "--user", "after", "--target", "t",
        ],
    )
    .expect("a write once space is freed");
    wait_for(CONVERGE, || {
        Ok(events_of(&full_data, "during")? == written
            && events_of(&full_data, "meanwhile")? == 5
            && events_of(&other_data, "after")? == 1
            && other.status()?["digest"] == full.status()?["digest"])
    })
    .unwrap_or_else(|e| {
        panic!(
            "the nodes did not converge after space was freed: {e:#}\nfull node's log:\n{}",
            full.log_tail(30)
        )
    });
    assert_eq!(events_of(&full_data, "refused").unwrap(), 0);
    let status = full.status().unwrap();
    assert_eq!(status["mesh"]["store"]["disk_full"], false);
    assert!(full.is_running());
    // The nodes must stop before the tmpfs is unmounted.
    drop(full);
    drop(other);
}

#[test]
fn a_backup_onto_a_full_disk_says_so_and_leaves_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("node");
    cli(
        &data,
        &[
            "event", "append", "--kind", "login", "--user", "u", "--target", "t", "--count", "50",
        ],
    )
    .unwrap();
    write_mek(&data.join(MEK_FILE));
    let small = root.path().join("small");
    let Some(_mount) = Mount::tmpfs(&small, "1m") else {
        return;
    };
    fill(&small.join("filler"));
    let out = small.join("node.mwb");
    let err = cli_fails(&data, &["backup", "--out", out.to_str().unwrap()]).unwrap();
    assert!(
        err.contains(&format!(
            "disk full: the backup {} could not be written: {} has no space left",
            out.display(),
            small.display()
        )),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "filler")
        .collect();
    assert!(left.is_empty(), "a refused backup left {left:?}");

    // With room, the same command writes the backup.
    std::fs::remove_file(small.join("filler")).unwrap();
    cli(&data, &["backup", "--out", out.to_str().unwrap()]).unwrap();
    assert!(out.exists());
}
