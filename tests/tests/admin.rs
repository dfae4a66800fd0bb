//! Admin commands over the real binary: users and grants (leader-only mastered writes), sealed
//! backup and restore (also while a daemon writes), and a store on a full filesystem.

#![allow(clippy::unwrap_used)] // helpers of tests: any failure aborts the test loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meshward_crdt::ClusterId;
use meshward_crdt::mastered::Member;
use meshward_node::mek::{MEK_FILE, Mek};
use meshward_node::roster::MasteredBundle;
use meshward_node::store::Store;
use meshward_tests::{Daemon, cli, meshward_bin, run_cli};

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
    let bundle = MasteredBundle::genesis(&keys[0], ClusterId([0x61; 16]), members);
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
    let err = fails(&node, &["backup", "--out", "relative.backup"]);
    assert!(err.contains("absolute"), "{err}");
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

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "skipped: cannot mount a small tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run mount: {e}");
            return;
        }
    }
    let _mount = Mount(mnt.clone());
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
fn a_member_without_its_mek_runs_sealed_until_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    cluster_led_by(dir.path(), &node, &[]);
    let vault = dir.path().join("vault.key");
    write_mek(&vault);
    let mut child = Command::new(meshward_bin())
        .arg("--data")
        .arg(&node)
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
    let err = fails(&node, &["unseal", "--mek", "vault.key"]);
    assert!(err.contains("absolute"), "{err}");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let err = fails(&node, &["unseal", "--mek", garbage.to_str().unwrap()]);
    assert!(err.contains("not a meshward MEK"), "{err}");
    assert!(!node.join(MEK_FILE).exists());

    ok(&node, &["unseal", "--mek", vault.to_str().unwrap()]);
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
    child.kill().unwrap(); // our own child, by its handle
    child.wait().unwrap();
}
