//! Creating and growing a cluster end to end: `init`, `licence install`, `bundle create` and
//! `join` with real processes on 127.0.0.1, and every refusal with its cause. Every daemon is
//! killed by its own pid when its test ends.

use std::path::Path;
use std::time::Duration;

use meshward_tests::by_hand::{
    Node, bundle, cluster_id, events, init, join_args, leader, licence_file, mode, p, roster_size,
    vendor,
};
use meshward_tests::{Daemon, cli, cli_fails, meshward_bin, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);

/// These tests start several daemons each; run them one at a time on small machines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn init_and_two_joins_make_a_cluster_that_replicates_shared_tables() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let leader = Node::new(root, "leader");
    let out = init(root, &leader);
    let mek = leader.data.join("mek");
    assert_eq!(mode(&mek), 0o600);
    let mek_hex = std::fs::read_to_string(&mek).unwrap();
    let mek_hex = mek_hex.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(out.contains(mek_hex) && out.contains("vault"), "{out}");
    // A second init changes nothing.
    let before = std::fs::read(&mek).unwrap();
    let err = cli_fails(&leader.data, &["init", "--address", &leader.addr]).unwrap();
    assert!(err.contains("initialised"), "{err}");
    assert_eq!(std::fs::read(&mek).unwrap(), before);
    // Without a licence the cluster is standalone: no bundle.
    let err = cli_fails(
        &leader.data,
        &["bundle", "create", "--out", p(&root.join("b0"))],
    )
    .unwrap();
    assert!(err.contains("no licence"), "{err}");
    assert!(!root.join("b0").exists());
    // A licence must verify: the cluster's issuer, this cluster, untouched terms.
    let licence = licence_file(root, &cluster_id(&leader), 3);
    let other = licence_file(root, &"ab".repeat(16), 3);
    let err = cli_fails(&leader.data, &["licence", "install", p(&other)]).unwrap();
    assert!(err.contains("is for cluster abab"), "{err}");
    let garbage = root.join("garbage");
    std::fs::write(&garbage, b"\x00\x01 not a licence").unwrap();
    let err = cli_fails(&leader.data, &["licence", "install", p(&garbage)]).unwrap();
    assert!(err.contains("not a meshward licence"), "{err}");
    let forged = root.join("forged.json");
    std::fs::write(
        &forged,
        std::fs::read_to_string(&licence)
            .unwrap()
            .replace("\"max_nodes\": 3", "\"max_nodes\": 7"),
    )
    .unwrap();
    let err = cli_fails(&leader.data, &["licence", "install", p(&forged)]).unwrap();
    assert!(
        err.contains("not signed by this cluster's licence issuer"),
        "{err}"
    );
    cli(&leader.data, &["licence", "install", p(&licence)]).unwrap();

    let d1 = leader.start();
    let mut daemons = vec![d1];
    let mut nodes = vec![];
    for name in ["node2", "node3"] {
        let node = Node::new(root, name);
        let b = bundle(&leader, root, &format!("bundle-{name}"), "24h");
        assert_eq!(mode(&b), 0o600);
        let out = cli(&node.data, &join_args(&node, &b, &mek)).unwrap();
        assert!(out.contains("joined cluster"), "{out}");
        assert_eq!(mode(&node.data.join("mek")), 0o600);
        daemons.push(node.start());
        nodes.push(node);
    }
    // A follower forwards bundle creation to the leader: the bundle is the leader's.
    let out = cli(
        &nodes[0].data,
        &["bundle", "create", "--out", p(&root.join("bf"))],
    )
    .unwrap();
    assert!(out.contains("wrote joining bundle"), "{out}");
    // A fourth node exceeds the 3-node licence.
    let node4 = Node::new(root, "node4");
    let b4 = bundle(&leader, root, "bundle-node4", "1h");
    let err = cli_fails(&node4.data, &join_args(&node4, &b4, &mek)).unwrap();
    assert!(err.contains("licence allows 3 nodes"), "{err}");
    assert!(!node4.data.join("mek").exists());

    for (i, d) in daemons.iter().enumerate() {
        let user = format!("user{i}");
        cli(
            &d.data,
            &[
                "event", "append", "--kind", "login", "--user", &user, "--target", "db",
            ],
        )
        .unwrap();
    }
    wait_for(CONVERGE, || {
        for d in &daemons {
            if events(&d.data)? != 3 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .expect("events written on each node reach all three");
}

#[test]
fn joining_bundle_refusals_name_their_cause_and_change_nothing() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let leader = leader(root, 3);
    let mek = leader.data.join("mek");
    let _d = leader.start();
    let joiner = Node::new(root, "joiner");
    let b1 = bundle(&leader, root, "b1", "24h");

    // Garbage files.
    let garbage = root.join("garbage");
    std::fs::write(&garbage, b"garbage\xff").unwrap();
    let err = cli_fails(&joiner.data, &join_args(&joiner, &garbage, &mek)).unwrap();
    assert!(err.contains("not a joining bundle"), "{err}");
    let err = cli_fails(&joiner.data, &join_args(&joiner, &b1, &garbage)).unwrap();
    assert!(err.contains("not a meshward MEK"), "{err}");
    let big = root.join("big");
    std::fs::write(&big, vec![0u8; 100_000]).unwrap();
    let err = cli_fails(&joiner.data, &join_args(&joiner, &big, &mek)).unwrap();
    assert!(err.contains("limit"), "{err}");

    // Wrong MEK: refused, and the bundle stays usable.
    let wrong = root.join("wrong-mek");
    std::fs::write(&wrong, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = cli_fails(&joiner.data, &join_args(&joiner, &b1, &wrong)).unwrap();
    assert!(err.contains("wrong MEK"), "{err}");
    assert!(!joiner.data.join("mek").exists());
    // Address taken.
    let mut taken = Node::new(root, "taken");
    taken.addr = leader.addr.clone();
    let err = cli_fails(&taken.data, &join_args(&taken, &b1, &mek)).unwrap();
    assert!(err.contains("already used by a cluster member"), "{err}");
    cli(&joiner.data, &join_args(&joiner, &b1, &mek)).unwrap();

    // Reused.
    let other = Node::new(root, "other");
    let err = cli_fails(&other.data, &join_args(&other, &b1, &mek)).unwrap();
    assert!(err.contains("already used"), "{err}");
    // Superseded.
    let b2 = bundle(&leader, root, "b2", "24h");
    let _b3 = bundle(&leader, root, "b3", "24h");
    let err = cli_fails(&other.data, &join_args(&other, &b2, &mek)).unwrap();
    assert!(err.contains("superseded"), "{err}");
    // Expired.
    let b4 = bundle(&leader, root, "b4", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let err = cli_fails(&other.data, &join_args(&other, &b4, &mek)).unwrap();
    assert!(err.contains("expired at"), "{err}");
    // Longer than 24 h.
    let err = cli_fails(
        &leader.data,
        &[
            "bundle",
            "create",
            "--ttl",
            "25h",
            "--out",
            p(&root.join("b5")),
        ],
    )
    .unwrap();
    assert!(err.contains("at most 24h"), "{err}");
    // None of the refused joiners holds anything of the cluster.
    for dir in [&other.data, &taken.data] {
        assert!(!dir.join("mek").exists());
    }
    // Joining twice is refused locally.
    let err = cli_fails(&joiner.data, &join_args(&joiner, &b4, &mek)).unwrap();
    assert!(err.contains("leave it first"), "{err}");
}

#[test]
fn two_joiners_racing_for_one_bundle_exactly_one_succeeds() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let leader = leader(root, 5);
    let mek = leader.data.join("mek");
    let _d = leader.start();
    let b = bundle(&leader, root, "b", "24h");
    let racers: Vec<Node> = ["racer-a", "racer-b"]
        .iter()
        .map(|n| Node::new(root, n))
        .collect();
    // Both start before either finishes; each is reaped (join has its own timeouts).
    let children: Vec<_> = racers
        .iter()
        .map(|node| {
            std::process::Command::new(meshward_bin())
                .arg("--data")
                .arg(&node.data)
                .args(join_args(node, &b, &mek))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("meshward join")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("meshward join"))
        .collect();
    let won = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{outputs:?}");
    let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("already used"), "{err}");
    assert_eq!(
        racers
            .iter()
            .filter(|n| n.data.join("mek").exists())
            .count(),
        1
    );
}

#[test]
fn a_bundle_naming_another_cluster_is_refused_before_the_leader_commits_anything() {
    use meshward_node::join::JoiningBundle;
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let leader = leader(root, 3);
    let mek = leader.data.join("mek");
    let d = leader.start();
    let file = bundle(&leader, root, "b", "24h");
    let original = JoiningBundle::decode(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(roster_size(&d), 1);
    let mut other_cluster = original.clone();
    other_cluster.cluster[0] ^= 1;
    let mut other_genesis = original.clone();
    other_genesis.genesis_leader[0] ^= 1;
    // A CA certificate with its signature altered still pins the same key for TLS, but is not
    // the certificate of the cluster's mastered chain.
    let mut other_ca = original.clone();
    *other_ca.ca_cert.last_mut().unwrap() ^= 1;
    for (name, altered, field) in [
        ("cluster", other_cluster, "cluster id"),
        ("genesis", other_genesis, "genesis leader key"),
        ("ca", other_ca, "cluster CA certificate"),
    ] {
        let path = root.join(format!("altered-{name}"));
        std::fs::write(&path, altered.encode()).unwrap();
        let joiner = Node::new(root, &format!("joiner-{name}"));
        let err = cli_fails(&joiner.data, &join_args(&joiner, &path, &mek)).unwrap();
        // No ghost member: the roster did not grow, and the bundle was not burnt.
        assert_eq!(roster_size(&d), 1, "{name}: {err}");
        assert!(err.contains(field), "{name}: {err}");
        assert!(!joiner.data.join("mek").exists(), "{name}");
    }
    let joiner = Node::new(root, "joiner");
    let out = cli(&joiner.data, &join_args(&joiner, &file, &mek)).unwrap();
    assert!(out.contains("joined cluster"), "{out}");
    assert_eq!(roster_size(&d), 2);
}

/// Runs `meshward --data DATA ARGS` in the working directory `cwd`; must succeed.
fn cli_in(cwd: &Path, data: &str, args: &[&str]) -> String {
    let out = meshward_tests::run_cli_in(cwd, Path::new(data), args).expect("run meshward");
    assert!(
        out.status.success(),
        "meshward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn relative_paths_are_the_callers_with_a_daemon_running_and_links_are_never_followed() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let node = Node::new(root, "leader");
    init(root, &node);
    cli(&node.data, &["user", "create", "alice"]).unwrap();
    cli(&node.data, &["user", "create", "bob"]).unwrap();

    // Links planted in the --out directory are refused, not followed; nothing is written.
    let certs = root.join("planted");
    std::fs::create_dir(&certs).unwrap();
    let elsewhere = root.join("elsewhere");
    std::fs::write(&elsewhere, b"precious").unwrap();
    std::os::unix::fs::symlink(&elsewhere, certs.join("ca.crt")).unwrap();
    let through = root.join("created-through-a-link");
    std::os::unix::fs::symlink(&through, certs.join("alice.crt")).unwrap();
    let err = cli_fails(&node.data, &["user", "cert", "alice", "--out", p(&certs)]).unwrap();
    assert!(err.contains("link"), "{err}");
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"precious");
    assert!(!through.exists());
    assert!(!certs.join("alice.key").exists());
    std::fs::remove_file(certs.join("ca.crt")).unwrap();
    let err = cli_fails(&node.data, &["user", "cert", "alice", "--out", p(&certs)]).unwrap();
    assert!(err.contains("alice.crt") && err.contains("link"), "{err}");
    assert!(!through.exists() && !certs.join("alice.key").exists());

    // With a daemon running, commands given relative paths (and a relative --data) mean the
    // caller's directory, though the daemon reads and writes the files.
    let licence = licence_file(root, &cluster_id(&node), 3);
    let licence_name = licence
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a name");
    let _d = node.start();
    cli_in(root, "leader", &["licence", "install", licence_name]);
    cli_in(root, "leader", &["bundle", "create", "--out", "bundle-rel"]);
    assert_eq!(mode(&root.join("bundle-rel")), 0o600);
    for user in ["alice", "bob"] {
        cli_in(root, "leader", &["user", "cert", user, "--out", "./certs"]);
        assert_eq!(mode(&root.join("certs").join(format!("{user}.key"))), 0o600);
    }
    assert!(root.join("certs/ca.crt").is_file());
    // The HA log is the daemon's, private.
    let out = meshward_tests::run_cli_in(
        root,
        Path::new("leader"),
        &["ha", "demote", "--to", "nobody"],
    )
    .unwrap();
    assert!(!out.status.success());
    assert_eq!(mode(&node.data.join("ha-commands.log")), 0o600);
}

#[test]
fn the_licence_issuer_is_fixed_at_init_and_nothing_else_names_one() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // A cluster created without an issuer takes no licence, ever.
    let node = Node::new(root, "alone");
    let out = cli(
        &node.data,
        &["init", "--address", &node.addr, "--listen", &node.addr],
    )
    .unwrap();
    assert!(out.contains("names no licence issuer"), "{out}");
    let licence = licence_file(root, &cluster_id(&node), 3);
    let err = cli_fails(&node.data, &["licence", "install", p(&licence)]).unwrap();
    assert!(err.contains("created without a licence issuer"), "{err}");
    // The retired config key is refused, naming what to do, not silently ignored.
    let (_, issuer) = vendor(root);
    std::fs::write(
        node.data.join("meshward.toml"),
        format!("licence-issuer = \"{issuer}\"\n"),
    )
    .unwrap();
    let log = root.join("run.log");
    let mut run = std::process::Command::new(meshward_bin())
        .args(["--data", p(&node.data), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = meshward_tests::wait_or_kill(&mut run, Duration::from_secs(60)).unwrap();
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("init --licence-issuer"), "{err}");
    // A bad issuer key is refused at init, before anything is created.
    let other = Node::new(root, "other");
    let err = cli_fails(
        &other.data,
        &["init", "--address", &other.addr, "--licence-issuer", "00ff"],
    )
    .unwrap();
    assert!(err.contains("not 64 hex digits"), "{err}");
    assert!(!other.data.join("mek").exists());
}

/// The events a node holds, and its replica digest.
fn events_and_digest(d: &Daemon) -> anyhow::Result<(usize, String)> {
    let events: serde_json::Value =
        serde_json::from_str(&cli(&d.data, &["event", "list", "--json"])?)?;
    let digest = d.status()?["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((events.as_array().map_or(0, Vec::len), digest))
}

#[test]
fn seven_nodes_made_with_init_licence_and_joins_write_through_a_partition_and_heal() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // The seeds' largest cluster, made only as an operator makes one.
    let leader = leader(root, 7);
    let mek = leader.data.join("mek");
    let mut daemons = vec![leader.start()];
    for i in 1..7 {
        let node = Node::new(root, &format!("node{i}"));
        let b = bundle(&leader, root, &format!("bundle-{i}"), "1h");
        cli(&node.data, &join_args(&node, &b, &mek)).unwrap();
        daemons.push(node.start());
    }
    let writers: Vec<String> = daemons
        .iter()
        .map(|d| d.status().unwrap()["writer"].as_str().unwrap().to_string())
        .collect();
    wait_for(CONVERGE, || {
        Ok(daemons
            .iter()
            .all(|d| d.status().is_ok_and(|s| s["mastered"]["members"] == 7)))
    })
    .expect("every node holds the 7-member roster");

    // A 4|3 cut: the leader's side (0..4) keeps its leader; both sides keep writing.
    let (left, right) = (0..4, 4..7);
    for (i, daemon) in daemons.iter().enumerate() {
        let other = if left.contains(&i) {
            &writers[right.clone()]
        } else {
            &writers[left.clone()]
        };
        let mut args = vec!["fault", "block"];
        for w in other {
            args.extend(["--peer", w.as_str()]);
        }
        cli(&daemon.data, &args).unwrap();
    }
    for (i, d) in daemons.iter().enumerate() {
        let user = format!("user{i}");
        for n in 0..3 {
            let target = format!("host-{n}");
            cli(
                &d.data,
                &[
                    "event", "append", "--kind", "login", "--user", &user, "--target", &target,
                ],
            )
            .unwrap();
        }
    }
    cli(&daemons[1].data, &["config", "set", "managed.site", "cut"]).unwrap();
    wait_for(CONVERGE, || {
        Ok(daemons[left.clone()]
            .iter()
            .all(|d| events_and_digest(d).is_ok_and(|(n, _)| n == 12))
            && daemons[right.clone()]
                .iter()
                .all(|d| events_and_digest(d).is_ok_and(|(n, _)| n == 9)))
    })
    .expect("each side holds its own writes during the cut");

    // The heal: every node holds all 21 events, the same digest, and the cut's config write.
    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    wait_for(CONVERGE, || {
        let first = events_and_digest(&daemons[0])?;
        Ok(first.0 == 21
            && daemons
                .iter()
                .all(|d| events_and_digest(d).is_ok_and(|e| e == first))
            && daemons.iter().all(|d| {
                cli(&d.data, &["config", "get", "managed.site"]).is_ok_and(|v| v.contains("cut"))
            }))
    })
    .expect("all 7 converge after the heal");
}
