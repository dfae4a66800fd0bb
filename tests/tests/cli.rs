//! The `meshward` command over a local store, as an operator uses it: real process, real redb
//! file. Bad input must give a clear error, a non-zero exit and an untouched store.

use std::path::Path;
use std::process::Output;

use meshward_tests::run_cli;

fn meshward(data: &Path, args: &[&str]) -> Output {
    run_cli(data, args).expect("run meshward")
}

/// A fingerprint of a file's bytes, so a failed comparison prints two numbers, not the file.
fn digest(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).expect("read").hash(&mut h);
    h.finish()
}

/// Everything the store holds, as the CLI shows it. (redb rewrites header bytes whenever a
/// file is opened, so "unchanged" is judged on content, not bytes, once the store was opened.)
fn state(data: &Path) -> String {
    [
        &["status", "--json"][..],
        &["event", "list", "--json"],
        &["fingerprint", "list", "--json"],
        &["exception", "list", "--json"],
        &["audit", "list", "--json"],
    ]
    .iter()
    .map(|args| ok(data, args))
    .collect()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = meshward(data, args);
    assert!(
        out.status.success(),
        "meshward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn appended_events_and_fingerprints_are_listed_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for (i, kind) in ["login", "session-start", "logout"].iter().enumerate() {
        let at = (1000 + i).to_string();
        ok(
            data,
            &[
                "event", "append", "--kind", kind, "--user", "alice", "--target", "db-01", "--at",
                &at,
            ],
        );
    }
    let all: serde_json::Value =
        serde_json::from_str(&ok(data, &["event", "list", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[1]["kind"], "session-start");
    let logins: serde_json::Value = serde_json::from_str(&ok(
        data,
        &[
            "event", "list", "--json", "--kind", "login", "--since", "1000", "--until", "1001",
        ],
    ))
    .unwrap();
    assert_eq!(logins.as_array().unwrap().len(), 1);

    for at in ["50", "90"] {
        let args = [
            "fingerprint",
            "add",
            "--host",
            "db-01",
            "--key-type",
            "ssh-ed25519",
        ];
        ok(
            data,
            &[&args[..], &["--fingerprint", "SHA256:aaa", "--at", at]].concat(),
        );
    }
    let fps: serde_json::Value =
        serde_json::from_str(&ok(data, &["fingerprint", "list", "--json"])).unwrap();
    assert_eq!(fps.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            fps[0]["first_seen_ms"].as_i64(),
            fps[0]["last_seen_ms"].as_i64()
        ),
        (Some(50), Some(90))
    );

    ok(
        data,
        &[
            "audit", "record", "--actor", "alice", "--action", "login", "--target", "db-01",
        ],
    );
    let verify: serde_json::Value =
        serde_json::from_str(&ok(data, &["audit", "verify", "--json"])).unwrap();
    assert_eq!(verify["intact"], true);
    assert_eq!(verify["verified"], 1);
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(
        data,
        &[
            "event", "append", "--kind", "login", "--user", "alice", "--target", "db-01",
        ],
    );
    ok(
        data,
        &[
            "audit", "record", "--actor", "alice", "--action", "login", "--target", "db-01",
        ],
    );
    let before = state(data);
    let long = "x".repeat(16 * 1024 + 1);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "event", "append", "--kind", "logon", "--user", "a", "--target", "t",
            ],
            "unknown event kind \"logon\"",
        ),
        (
            &[
                "event", "append", "--kind", "login", "--user", "", "--target", "t",
            ],
            "user must not be empty",
        ),
        (
            &[
                "event", "append", "--kind", "login", "--user", "a", "--target", "t", "--detail",
                &long,
            ],
            "detail is 16385 bytes; the limit is 16384",
        ),
        (&["event", "list", "--writer", "abc"], "writer id"),
        (
            &[
                "fingerprint",
                "add",
                "--host",
                "h",
                "--key-type",
                "dsa",
                "--fingerprint",
                "f",
            ],
            "unknown key type \"dsa\"",
        ),
        (
            &[
                "fingerprint",
                "add",
                "--host",
                "a b",
                "--key-type",
                "ssh-rsa",
                "--fingerprint",
                "f",
            ],
            "host contains whitespace",
        ),
        (
            &["exception", "delete", "--user", "bob", "--field", "mfa"],
            "no exceptions row",
        ),
        (
            &[
                "audit", "record", "--actor", "", "--action", "a", "--target", "t",
            ],
            "actor",
        ),
        (&["local", "set", "bad name", "x"], "no node-only setting"),
    ];
    for (args, expected) in cases {
        let out = meshward(data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} lacks {expected:?}"
        );
        assert_eq!(state(data), before, "{args:?} changed the store");
    }
    let events: serde_json::Value =
        serde_json::from_str(&ok(data, &["event", "list", "--json"])).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1);
}

#[test]
fn a_corrupt_store_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = data.join("meshward.redb");
    std::fs::write(&store, vec![0x5a; 8192]).unwrap();
    let before = digest(&store);
    for args in [&["event", "list"][..], &["audit", "verify"], &["status"]] {
        let out = meshward(data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("corrupt or not a meshward store"),
            "{stderr}"
        );
    }
    assert_eq!(digest(&store), before);
}

#[test]
fn commands_that_only_read_open_the_store_read_only_and_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(
        data,
        &[
            "event", "append", "--kind", "login", "--user", "alice", "--target", "db-01",
        ],
    );
    ok(
        data,
        &[
            "audit", "record", "--actor", "a", "--action", "b", "--target", "c",
        ],
    );
    ok(data, &["local", "set", "fingerprint-enforcement", "warn"]);
    let file = data.join("meshward.redb");
    let before = digest(&file);
    let shown = state(data);
    for args in [
        &["audit", "verify"][..],
        &["local", "get", "fingerprint-enforcement"],
        &["config", "list"],
        &["user", "list"],
        &["password", "list"],
    ] {
        ok(data, args);
    }
    assert_eq!(
        digest(&file),
        before,
        "a command that only reads changed the store file"
    );
    // Another process holding the store read-only (here, redb in this test) does not stop
    // them.
    let held = redb::ReadOnlyDatabase::open(&file).unwrap();
    assert_eq!(state(data), shown);
    ok(data, &["audit", "verify"]);
    // A write still needs the store to itself, and says so.
    let out = meshward(
        data,
        &["local", "set", "fingerprint-enforcement", "enforce"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    drop(held);
    ok(
        data,
        &["local", "set", "fingerprint-enforcement", "enforce"],
    );
}

#[test]
fn a_data_directory_open_to_others_is_tightened_to_0700_and_said_so() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = meshward(&data, &["local", "set", "fingerprint-enforcement", "warn"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0755") && err.contains("0700"), "{err}");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
}

/// Runs `meshward [ARGS] run` on `data` with no MESHWARD_LOG until it listens, stops it with
/// SIGTERM (by its pid) and returns what it wrote on stderr.
fn daemon_stderr(data: &Path, args: &[&str]) -> String {
    let log = data.with_extension("log");
    let mut child = std::process::Command::new(meshward_tests::meshward_bin())
        .arg("--data")
        .arg(data)
        .args(args)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env_remove("MESHWARD_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start meshward run");
    let socket = data.join("meshward.sock");
    let started =
        meshward_tests::wait_for(std::time::Duration::from_secs(30), || Ok(socket.exists()));
    // Our own child: signalling its pid cannot reach another process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    meshward_tests::wait_or_kill(&mut child, std::time::Duration::from_secs(30))
        .expect("the daemon stops on SIGTERM");
    started.expect("the daemon started");
    std::fs::read_to_string(&log).expect("read the log")
}

#[test]
fn the_daemon_logs_info_without_colour_into_a_file_and_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = daemon_stderr(&dir.path().join("text"), &[]);
    assert!(text.contains("node running"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file: {text:?}"
    );
    let json = daemon_stderr(&dir.path().join("json"), &["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "node running" && l["level"] == "INFO"),
        "{json}"
    );
    // A one-shot command prints its answer and no info lines.
    let out = meshward(&dir.path().join("text"), &["status"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("INFO"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fingerprint_check_gives_the_leaders_approval_and_this_nodes_enforcement() {
    let dir = tempfile::tempdir().unwrap();
    let data = &dir.path().join("node");
    let addr = format!("127.0.0.1:{}", meshward_tests::free_port_pair().unwrap());
    ok(data, &["init", "--address", &addr]);
    let key = |fp: &str| {
        [
            "--host",
            "db-01",
            "--key-type",
            "ssh-ed25519",
            "--fingerprint",
        ]
        .into_iter()
        .map(str::to_string)
        .chain([fp.to_string()])
        .collect::<Vec<_>>()
    };
    let check = |fp: &str| {
        let args: Vec<String> = ["fingerprint", "check"]
            .into_iter()
            .map(str::to_string)
            .chain(key(fp))
            .chain(["--json".into()])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        meshward(data, &args)
    };
    let json =
        |out: &Output| -> serde_json::Value { serde_json::from_slice(&out.stdout).expect("JSON") };
    // Nothing approved, default enforcement: unknown, warn.
    let out = check("SHA256:aaa");
    assert!(out.status.success());
    assert_eq!(json(&out)["status"], "unknown");
    assert_eq!(json(&out)["decision"], "warn");
    let approve: Vec<String> = ["fingerprint", "approve"]
        .into_iter()
        .map(str::to_string)
        .chain(key("SHA256:aaa"))
        .collect();
    ok(
        data,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(json(&check("SHA256:aaa"))["decision"], "allow");
    let out = check("SHA256:bbb");
    assert_eq!(json(&out)["status"], "mismatch");
    assert_eq!(json(&out)["approved"][0], "SHA256:aaa");
    // This node enforces: a key not approved is denied, and the command fails.
    ok(
        data,
        &["local", "set", "fingerprint-enforcement", "enforce"],
    );
    let out = check("SHA256:bbb");
    assert!(!out.status.success());
    assert_eq!(json(&out)["decision"], "deny");
    let listed = ok(data, &["local", "list"]);
    assert!(
        listed.contains("fingerprint-enforcement = enforce"),
        "{listed}"
    );
    // Bad input names the field.
    let out = meshward(
        data,
        &[
            "fingerprint",
            "check",
            "--host",
            "db-01",
            "--key-type",
            "dsa",
            "--fingerprint",
            "x",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_type"));
    let out = meshward(data, &["local", "set", "fingerprint-enforcement", "strict"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("off, warn or enforce"));
}

#[test]
fn local_list_shows_every_known_setting_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(data, &["local", "set", "label.rack", "r12"]);
    let listed = ok(data, &["local", "list"]);
    assert!(
        listed.contains("fingerprint-enforcement = warn (default)"),
        "{listed}"
    );
    assert!(listed.contains("label.rack = r12"), "{listed}");
}
