//! Managed tables over real daemons on 127.0.0.1: a row written on a follower is made by the
//! leader, read and watched on a third node, deleted from anywhere; bad input is refused
//! naming the field with nothing written; and over HTTPS each user's grants decide per
//! namespace. Every daemon is stopped by its own pid when a test ends.

use std::time::Duration;

use meshward_api::{Reply, Request};
use meshward_client::{Client, ClientError, Watch, WatchEvent};
use meshward_tests::https::{Api, json, leader_with_users};
use meshward_tests::{ClientIdentity as Identity, cli, cli_fails, cluster, start_all, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);
const SILENCE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The next change of a stream (snapshot rows and `ready` skipped).
async fn next_change(watch: &mut Watch) -> meshward_api::node::Change {
    loop {
        let event = tokio::time::timeout(SILENCE, watch.next())
            .await
            .expect("the watch stream went silent")
            .expect("the watch stream failed");
        match event {
            Some(WatchEvent::Change(c)) => return c,
            Some(WatchEvent::Snapshot(_) | WatchEvent::Ready(_)) => {}
            other => panic!("expected a change, got {other:?}"),
        }
    }
}

fn problem(err: ClientError) -> meshward_api::Problem {
    match err {
        ClientError::Problem(p) => *p,
        other => panic!("expected a problem, got {other:?}"),
    }
}

#[test]
fn a_row_written_on_a_follower_lands_on_the_leader_and_is_read_and_watched_on_a_third_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let daemons = start_all(&nodes);
    let rt = runtime();
    let third = Client::local(&daemons[2].data);
    let mut watch = rt
        .block_on(third.watch(Some("managed"), Some("now")))
        .unwrap();

    // Node 1 follows node 0: the write is forwarded, the leader signs it.
    let out = cli(
        &daemons[1].data,
        &[
            "table",
            "put",
            "ns1",
            "hosts",
            "db-01",
            r#"{"port":22,"tags":["a"]}"#,
        ],
    )
    .unwrap();
    assert!(out.contains("wrote ns1/hosts/db-01"), "{out}");
    let on_leader = cli(
        &daemons[0].data,
        &["table", "get", "ns1", "hosts", "db-01", "--json"],
    );
    let on_leader = json(&on_leader.unwrap());
    assert_eq!(on_leader["document"]["port"], 22, "{on_leader}");
    let version = on_leader["version"].as_u64().unwrap();
    assert_eq!(
        daemons[0].status().unwrap()["mastered"]["version"].as_u64(),
        Some(version)
    );

    // The third node reads it and its watch stream shows it as a managed-table change.
    wait_for(CONVERGE, || {
        Ok(cli(&daemons[2].data, &["table", "get", "ns1", "hosts", "db-01"]).is_ok())
    })
    .unwrap();
    let change = rt.block_on(next_change(&mut watch));
    assert_eq!(
        (change.table.as_str(), change.op.as_str()),
        ("managed", "put")
    );
    assert_eq!(change.row["namespace"], "ns1");
    assert_eq!(change.row["table"], "hosts");
    assert_eq!(change.row["key"], "db-01");
    assert_eq!(change.row["document"]["tags"][0], "a");
    assert_eq!(change.row["version"].as_u64(), Some(version));
    let tables = cli(&daemons[2].data, &["table", "list", "ns1"]).unwrap();
    assert_eq!(tables.trim(), "hosts");
    let rows = json(
        &cli(
            &daemons[2].data,
            &["table", "list", "ns1", "hosts", "--json"],
        )
        .unwrap(),
    );
    assert_eq!(rows["rows"].as_array().map(Vec::len), Some(1), "{rows}");

    // Bad input, sent to a follower: refused naming the field, nothing written anywhere.
    let before = daemons[0].status().unwrap()["mastered"]["version"].clone();
    let send = |request| rt.block_on(Client::local(&daemons[1].data).send(&request));
    let put = |ns: &str, table: &str, key: &str, document| Request::PutRow {
        namespace: ns.into(),
        table: table.into(),
        key: key.into(),
        document,
    };
    for (request, status, field) in [
        (
            put("NS1", "hosts", "k", serde_json::json!(1)),
            400,
            "namespace",
        ),
        (
            put("ns1", "ho/sts", "k", serde_json::json!(1)),
            400,
            "table",
        ),
        (
            put("ns1", "hosts", &"k".repeat(256), serde_json::json!(1)),
            400,
            "key",
        ),
        (
            put(
                "ns1",
                "hosts",
                "big",
                serde_json::json!("x".repeat(17 * 1024)),
            ),
            413,
            "document",
        ),
        // Over what a follower forwards: refused before forwarding, the same way.
        (
            put(
                "ns1",
                "hosts",
                "big",
                serde_json::json!("x".repeat(100 * 1024)),
            ),
            413,
            "document",
        ),
    ] {
        let p = problem(send(request).unwrap_err());
        assert_eq!(
            (p.status, p.field.as_deref()),
            (status, Some(field)),
            "{p:?}"
        );
    }
    let err = cli_fails(
        &daemons[1].data,
        &["table", "put", "ns1", "hosts", "k", "{nope"],
    )
    .unwrap();
    assert!(err.contains("not JSON"), "{err}");
    let p = problem(
        send(Request::DeleteRow {
            namespace: "ns1".into(),
            table: "hosts".into(),
            key: "missing".into(),
        })
        .unwrap_err(),
    );
    assert_eq!(p.status, 404, "{p:?}");
    assert_eq!(daemons[0].status().unwrap()["mastered"]["version"], before);

    // A delete is a record too: made from the third node, gone everywhere, watched.
    let reply = rt
        .block_on(third.delete_row("ns1", "hosts", "db-01"))
        .unwrap();
    assert!(reply > version);
    let change = rt.block_on(next_change(&mut watch));
    assert_eq!(
        (change.table.as_str(), change.op.as_str()),
        ("managed", "delete")
    );
    assert_eq!(change.row["key"], "db-01");
    assert!(change.row["document"].is_null());
    for d in &daemons {
        wait_for(CONVERGE, || {
            Ok(cli_fails(&d.data, &["table", "get", "ns1", "hosts", "db-01"]).is_ok())
        })
        .unwrap();
    }
    let Reply::Tables(t) = rt
        .block_on(Client::local(&daemons[0].data).send(&Request::ListTables {
            namespace: "ns1".into(),
        }))
        .unwrap()
    else {
        panic!("not a table list")
    };
    assert!(t.tables.is_empty(), "{t:?}");
}

#[test]
fn over_https_grants_decide_per_namespace() {
    let root = tempfile::tempdir().unwrap();
    let (data, certs, _) = leader_with_users(
        root.path(),
        &[
            ("ada", Some("admin:ns1")),
            ("gus", Some("guest:ns1")),
            ("gail", Some("guest:*")),
            ("otto", Some("admin:ns2")),
            ("rita", Some("root")),
        ],
    );
    let api = Api::start(&data);
    let [ada, gus, gail, otto, rita] =
        ["ada", "gus", "gail", "otto", "rita"].map(|u| Identity::load(&certs, u));
    let row = |ns: &str| format!("/v1/tables/{ns}/hosts/db-01");
    let doc = br#"{"port":22}"#;
    let call =
        |id: &Identity, method: &str, path: &str, body: &[u8]| api.call(id, method, path, body);

    // Writes: admin:NS writes NS only; guests never; root everywhere.
    assert_eq!(call(&ada, "PUT", &row("ns1"), doc).0, 200);
    let (code, body) = call(&ada, "PUT", &row("ns2"), doc);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("needs admin:ns2 or root"), "{body}");
    assert_eq!(call(&gus, "PUT", &row("ns1"), doc).0, 403);
    assert_eq!(call(&gail, "PUT", &row("ns1"), doc).0, 403);
    assert_eq!(call(&otto, "PUT", &row("ns2"), doc).0, 200);
    assert_eq!(call(&rita, "PUT", &row("ns3"), doc).0, 200);

    // Reads: guest:NS reads NS only, guest:* reads all, admin:NS reads its own.
    let (code, body) = call(&gus, "GET", &row("ns1"), b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["document"]["port"], 22);
    assert_eq!(call(&gus, "GET", &row("ns2"), b"").0, 403);
    assert_eq!(call(&gus, "GET", "/v1/tables/ns2/hosts", b"").0, 403);
    assert_eq!(call(&gus, "GET", "/v1/tables/ns2", b"").0, 403);
    for ns in ["ns1", "ns2", "ns3"] {
        assert_eq!(call(&gail, "GET", &row(ns), b"").0, 200, "{ns}");
    }
    let (code, body) = call(&gail, "GET", "/v1/tables/ns1/hosts?limit=5", b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["rows"][0]["key"], "db-01");
    assert_eq!(call(&ada, "GET", &row("ns2"), b"").0, 403);
    assert_eq!(call(&otto, "GET", &row("ns1"), b"").0, 403);

    // A bad name is a 400 naming the field for every caller, before any grant is checked.
    let (code, body) = call(&gus, "GET", "/v1/tables/NS2/hosts/db-01", b"");
    assert_eq!(code, 400, "{body}");
    assert_eq!(json(&body)["field"], "namespace", "{body}");
    let (code, body) = call(&gail, "GET", "/v1/tables/ns1/hosts?limit=0", b"");
    assert_eq!(
        (code, json(&body)["field"].clone()),
        (400, "limit".into()),
        "{body}"
    );

    // Deletes: admin of the namespace or root only.
    assert_eq!(call(&gus, "DELETE", &row("ns1"), b"").0, 403);
    assert_eq!(call(&otto, "DELETE", &row("ns1"), b"").0, 403);
    assert_eq!(call(&ada, "DELETE", &row("ns1"), b"").0, 200);
    assert_eq!(call(&rita, "DELETE", &row("ns2"), b"").0, 200);
    assert_eq!(call(&gail, "GET", &row("ns1"), b"").0, 404);
    api.daemon.kill(libc::SIGTERM);
}
