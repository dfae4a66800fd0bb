//! Credentials over real daemons on 127.0.0.1: an account rotated on both sides of a 3|2 cut
//! shows a conflict on every node after the heal, both secrets stay revealable, and a later
//! rotation settles it; over HTTPS a guest may read the history but not reveal, and every
//! reveal is in the revealing node's audit; bad input is refused naming the field with
//! nothing written. Every daemon is stopped by its own pid when a test ends.

use std::path::Path;
use std::time::Duration;

use meshward_client::{Client, Watch, WatchEvent};
use meshward_tests::https::{Api, json, leader_with_users, sample};
use meshward_tests::{ClientIdentity as Identity, cli, cli_fails, cli_stdin, cluster, start_all};
use meshward_tests::{Daemon, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);
const ACCOUNT: &str = "ns1/db-01/root";

fn history(data: &Path) -> anyhow::Result<serde_json::Value> {
    Ok(json(&cli(
        data,
        &["credential", "history", ACCOUNT, "--json"],
    )?))
}

fn conflicts(data: &Path) -> anyhow::Result<serde_json::Value> {
    Ok(json(&cli(data, &["credential", "conflicts", "--json"])?))
}

fn reveal(data: &Path, version: &str) -> String {
    let out = cli(
        data,
        &[
            "credential",
            "reveal",
            ACCOUNT,
            "--version",
            version,
            "--json",
        ],
    )
    .expect("reveal");
    json(&out)["secret"].as_str().expect("a secret").to_string()
}

/// The current version, the same on every node.
fn same_current(daemons: &[Daemon]) -> String {
    let current: Vec<String> = daemons
        .iter()
        .map(|d| {
            history(&d.data).expect("history")["current"]
                .as_str()
                .expect("a current version")
                .to_string()
        })
        .collect();
    assert!(current.windows(2).all(|w| w[0] == w[1]), "{current:?}");
    current[0].clone()
}

/// The next rotation put by `writer` on a watch stream (snapshot rows, deletes skipped).
fn next_put_by(rt: &tokio::runtime::Runtime, watch: &mut Watch, writer: &str) -> serde_json::Value {
    rt.block_on(async {
        loop {
            let event = tokio::time::timeout(CONVERGE, watch.next())
                .await
                .expect("the watch stream went silent")
                .expect("the watch stream failed");
            if let Some(WatchEvent::Change(c)) = event
                && c.op == "put"
                && c.row["writer"] == writer
            {
                assert_eq!(c.table, "rotations");
                assert!(c.row.get("sealed").is_none(), "{}", c.row);
                return c.row;
            }
        }
    })
}

fn cut(daemons: &[Daemon], nodes: &[(std::path::PathBuf, String)], sides: [&[usize]; 2]) {
    for (mine, theirs) in [(sides[0], sides[1]), (sides[1], sides[0])] {
        for &i in mine {
            let mut args = vec!["fault", "block"];
            for &j in theirs {
                args.extend(["--peer", nodes[j].1.as_str()]);
            }
            cli(&daemons[i].data, &args).expect("fault block");
        }
    }
}

#[test]
fn rotations_on_both_sides_of_a_cut_are_a_conflict_until_a_later_rotation_settles_it() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 5).unwrap();
    let daemons = start_all(&nodes);
    cli_stdin(
        &daemons[0].data,
        &["credential", "set", ACCOUNT, "--reason", "first"],
        "before-the-cut\n",
    )
    .unwrap();
    for d in &daemons {
        wait_for(CONVERGE, || {
            Ok(history(&d.data)?["rotations"].as_array().map(Vec::len) == Some(1))
        })
        .unwrap_or_else(|e| {
            panic!(
                "the first rotation did not spread: {e:#}\n{}",
                d.log_tail(20)
            )
        });
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut watch = rt
        .block_on(Client::local(&daemons[0].data).watch(Some("rotations"), Some("now")))
        .expect("watch");
    cut(&daemons, &nodes, [&[0, 1, 2], &[3, 4]]);
    cli_stdin(
        &daemons[1].data,
        &[
            "credential",
            "rotate",
            ACCOUNT,
            "--stdin",
            "--reason",
            "majority side",
        ],
        "left-secret\n",
    )
    .unwrap();
    cli(
        &daemons[4].data,
        &[
            "credential",
            "rotate",
            ACCOUNT,
            "--length",
            "24",
            "--reason",
            "minority side",
        ],
    )
    .unwrap();
    // During the cut each side knows only its own rotation: no conflict yet.
    assert_eq!(conflicts(&daemons[1].data).unwrap(), serde_json::json!([]));
    assert_eq!(conflicts(&daemons[4].data).unwrap(), serde_json::json!([]));
    let right = reveal(
        &daemons[4].data,
        history(&daemons[4].data).unwrap()["current"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(right.len(), 24);
    assert!(right.chars().all(|c| c.is_ascii_alphanumeric()));

    for d in &daemons {
        cli(&d.data, &["fault", "heal"]).unwrap();
    }
    // The watch shows the minority's rotation arriving as a conflict.
    assert_eq!(next_put_by(&rt, &mut watch, &nodes[1].1)["conflict"], false);
    let arrived = next_put_by(&rt, &mut watch, &nodes[4].1);
    assert_eq!(arrived["conflict"], true, "{arrived}");
    // After the heal: the conflict is listed on every node, with both versions.
    let mut heads = Vec::new();
    for d in &daemons {
        wait_for(CONVERGE, || {
            let c = conflicts(&d.data)?;
            Ok(c[0]["heads"].as_array().map(Vec::len) == Some(2))
        })
        .unwrap_or_else(|e| {
            panic!(
                "no conflict listed: {e:#}\n{:?}\n{}",
                conflicts(&d.data),
                d.log_tail(20)
            )
        });
        let c = conflicts(&d.data).unwrap();
        assert_eq!(c[0]["address"], ACCOUNT);
        let h: Vec<String> = c[0]["heads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["version"].as_str().unwrap().to_string())
            .collect();
        if heads.is_empty() {
            heads = h;
        } else {
            assert_eq!(heads, h, "every node lists the same heads");
        }
        assert_eq!(d.status().unwrap()["credential_conflicts"], 1);
    }
    // No secret lost: both are revealable by version on every node.
    for d in &daemons {
        let mut secrets: Vec<String> = heads.iter().map(|v| reveal(&d.data, v)).collect();
        secrets.sort();
        let mut want = vec!["left-secret".to_string(), right.clone()];
        want.sort();
        assert_eq!(secrets, want);
    }
    // The current secret is the same everywhere.
    let current = same_current(&daemons);

    // A later rotation by a node that holds both settles the conflict everywhere.
    cli(
        &daemons[2].data,
        &["credential", "rotate", ACCOUNT, "--reason", "settle"],
    )
    .unwrap();
    let settling = next_put_by(&rt, &mut watch, &nodes[2].1);
    assert_eq!(settling["conflict"], false, "{settling}");
    for head in &heads {
        let seen = settling["seen"].as_array().expect("seen");
        assert!(
            seen.contains(&head.as_str().into()),
            "the settling rotation saw {head}: {settling}"
        );
    }
    for d in &daemons {
        wait_for(
            CONVERGE,
            || Ok(conflicts(&d.data)? == serde_json::json!([])),
        )
        .unwrap_or_else(|e| panic!("the conflict stayed: {e:#}\n{}", d.log_tail(20)));
        assert_eq!(d.status().unwrap()["credential_conflicts"], 0);
        let h = history(&d.data).unwrap();
        assert_eq!(h["conflict"], false);
        assert_eq!(h["rotations"].as_array().map(Vec::len), Some(4));
    }
    let settled = same_current(&daemons);
    assert!(!heads.contains(&settled) && settled != current);
    // Every reveal is in the revealing node's own audit, never the secret.
    let audit = cli(&daemons[3].data, &["audit", "list", "--json"]).unwrap();
    assert!(audit.contains("credential-reveal"), "{audit}");
    assert!(
        audit.contains(&heads[0]) && audit.contains(&heads[1]),
        "{audit}"
    );
    assert!(
        !audit.contains("left-secret") && !audit.contains(&right),
        "{audit}"
    );
    for d in daemons {
        d.kill(libc::SIGTERM);
    }
}

#[test]
fn over_https_a_guest_reads_history_but_only_an_admin_reveals_and_bad_input_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (data, certs, _) = leader_with_users(
        root.path(),
        &[("ada", Some("admin:ns1")), ("gus", Some("guest:ns1"))],
    );
    let api = Api::start(&data);
    let [ada, gus] = ["ada", "gus"].map(|u| Identity::load(&certs, u));
    let path = format!("/v1/credentials/{ACCOUNT}");
    let (code, body) = api.call(
        &ada,
        "PUT",
        &path,
        br#"{"secret":"s3cret","reason":"initial"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("s3cret"), "{body}");
    assert_eq!(json(&body)["user"], "user ada");

    // A guest of the namespace reads the history and the conflicts, and may not reveal,
    // set or rotate.
    let (code, body) = api.call(&gus, "GET", &path, b"");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("s3cret"));
    assert_eq!(
        api.call(&gus, "GET", "/v1/credentials/conflicts?namespace=ns1", b"")
            .0,
        200
    );
    let (code, body) = api.call(&gus, "POST", &format!("{path}/reveal"), b"{}");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("admin:ns1"), "{body}");
    assert_eq!(
        api.call(&gus, "POST", &format!("{path}/rotate"), b"{}").0,
        403
    );
    // The metric counts accounts in conflict: none here.
    let (code, metrics) = api.call(&ada, "GET", "/metrics", b"");
    assert_eq!(code, 200, "{metrics}");
    assert_eq!(
        sample(&metrics, "meshward_store_credential_conflicts"),
        Some(0.0),
        "{metrics}"
    );
    // Another namespace is closed to both.
    assert_eq!(
        api.call(&ada, "GET", "/v1/credentials/ns2/db-01/root", b"")
            .0,
        403
    );

    let (code, body) = api.call(&ada, "POST", &format!("{path}/reveal"), b"{}");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["secret"], "s3cret");
    let version = json(&body)["version"].as_str().unwrap().to_string();

    // Bad input: refused naming the field, nothing written.
    let before = cli(&data, &["credential", "history", ACCOUNT, "--json"]).unwrap();
    let audit_before = cli(&data, &["audit", "list", "--json"]).unwrap();
    for (method, p, body, field) in [
        (
            "PUT",
            "/v1/credentials/NS1/db-01/root",
            &br#"{"secret":"x"}"#[..],
            "namespace",
        ),
        (
            "PUT",
            "/v1/credentials/ns1/db%2F01/root",
            br#"{"secret":"x"}"#,
            "device",
        ),
        ("PUT", &path, br#"{"secret":""}"#, "secret"),
        ("PUT", &path, br#"{"secret":"x","reason":"a\nb"}"#, "reason"),
        ("PUT", &path, br#"{"secret":7}"#, "secret"),
        (
            "POST",
            &format!("{path}/rotate"),
            br#"{"length":3}"#,
            "length",
        ),
        (
            "POST",
            &format!("{path}/rotate"),
            br#"{"alphabet":"runes"}"#,
            "alphabet",
        ),
        (
            "POST",
            &format!("{path}/reveal"),
            br#"{"version":"nope"}"#,
            "version",
        ),
    ] {
        let (code, answer) = api.call(&ada, method, p, body);
        assert_eq!(code, 400, "{method} {p}: {answer}");
        assert_eq!(json(&answer)["field"], field, "{method} {p}: {answer}");
    }
    let big = format!(r#"{{"secret":"{}"}}"#, "x".repeat(5000));
    let (code, answer) = api.call(&ada, "PUT", &path, big.as_bytes());
    assert_eq!(
        (code, json(&answer)["field"].clone()),
        (400, "secret".into()),
        "{answer}"
    );
    let err = cli_fails(&data, &["credential", "set", "ns1/db-01"]).unwrap();
    assert!(err.contains("address"), "{err}");
    assert_eq!(
        cli(&data, &["credential", "history", ACCOUNT, "--json"]).unwrap(),
        before
    );
    assert_eq!(
        cli(&data, &["audit", "list", "--json"]).unwrap(),
        audit_before
    );

    // The reveal is in the local audit: who, which account, which version; not the secret.
    let audit = json(&audit_before);
    let reveal = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "credential-reveal")
        .unwrap_or_else(|| panic!("no reveal audited: {audit}"));
    assert_eq!(reveal["actor"], "user ada");
    assert_eq!(reveal["target"], ACCOUNT);
    assert!(reveal["detail"].as_str().unwrap().contains(&version));
    assert!(!audit.to_string().contains("s3cret"));
    api.daemon.kill(libc::SIGTERM);
}
