//! Tamper evidence of the local audit across nodes, over real processes: a node's audit is
//! rewritten offline with a recomputed chain; the chain alone still verifies, but
//! `audit verify --against-mesh` shows that its peers hold another head.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use meshward_node::audit::{AuditLog, AuditRecord, Head};
use meshward_tests::{Daemon, cli, cli_fails, cluster, run_cli, start_all, wait_for};
use redb::{ReadableTable as _, TableDefinition};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");

/// A debug build on a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(90);

fn record(data: &Path, target: &str) -> anyhow::Result<()> {
    cli(
        data,
        &[
            "audit", "record", "--actor", "alice", "--action", "login", "--target", target,
        ],
    )?;
    Ok(())
}

/// `audit verify --against-mesh --json`: whether it succeeded, and its report.
fn against_mesh(data: &Path) -> anyhow::Result<(bool, serde_json::Value)> {
    let out = run_cli(data, &["audit", "verify", "--against-mesh", "--json"])?;
    let report = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.success(), report))
}

/// Whether every peer in `report` is in `state` at record `count`.
fn all_peers(report: &serde_json::Value, state: &str, count: u64) -> bool {
    report["peers"].as_array().is_some_and(|peers| {
        peers.len() == 2
            && peers
                .iter()
                .all(|p| p["state"] == state && p["count"].as_u64() == Some(count))
    })
}

/// Changes record `seq`'s target and recomputes the hashes after it and the head, in the
/// stopped node's store, as someone with its disk could.
fn rewrite(data: &Path, seq: u64) -> anyhow::Result<()> {
    let store = meshward_node::store::Store::open(data)?;
    let db = store.db()?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(RECORDS)?;
        let mut records: Vec<AuditRecord> = Vec::new();
        for entry in table.range(seq..)? {
            records.push(postcard::from_bytes(entry?.1.value())?);
        }
        ensure!(!records.is_empty(), "no record {seq} to rewrite");
        let mut prev = records[0].prev;
        records[0].target = "db-elsewhere".into();
        for r in &mut records {
            r.prev = prev;
            r.hash = r.compute_hash();
            prev = r.hash;
        }
        for r in &records {
            table.insert(r.seq, postcard::to_stdvec(r)?.as_slice())?;
        }
        let last = records.last().context("records")?;
        let head = postcard::to_stdvec(&Head {
            seq: last.seq,
            hash: last.hash,
        })?;
        txn.open_table(META)?.insert("head", head.as_slice())?;
    }
    txn.commit()?;
    let report = AuditLog::verify(store.reader())?;
    ensure!(report.is_intact(), "the rewritten chain must be consistent");
    Ok(())
}

#[test]
fn a_rewritten_audit_with_a_recomputed_chain_is_caught_by_its_peers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nodes = cluster(dir.path(), 3)?;
    let mut daemons = start_all(&nodes);
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    for i in 1..=3 {
        record(a, &format!("db-0{i}"))?;
    }
    record(b, "db-b")?;
    // Within the publish interval, every peer holds A's head and B's.
    wait_for(LIMIT, || Ok(all_peers(&against_mesh(a)?.1, "agrees", 3)))
        .context("peers hold A's head")?;
    wait_for(LIMIT, || Ok(all_peers(&against_mesh(b)?.1, "agrees", 1)))
        .context("peers hold B's head")?;
    // Two more records, and A stops at once: its graceful stop publishes the head.
    record(a, "db-04")?;
    record(a, "db-05")?;
    let daemon_a = daemons.remove(0);
    let a_data = daemon_a.kill(libc::SIGTERM);
    rewrite(&a_data, 4)?;
    // Without its daemon, the mesh cannot be asked: a clear error.
    let err = cli_fails(a, &["audit", "verify", "--against-mesh"])?;
    ensure!(err.contains("meshward run"), "{err}");
    // The chain alone verifies.
    let alone: serde_json::Value = serde_json::from_str(&cli(a, &["audit", "verify", "--json"])?)?;
    ensure!(alone["intact"] == true && alone["verified"] == 5, "{alone}");
    // A starts again; its peers still hold the head it signed before the rewrite.
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    for d in &daemons {
        let addr = d.listen_addr()?.context("listening")?;
        args.extend(["--peer".to_string(), addr.to_string()]);
    }
    let daemon_a = Daemon::start_with(a, &args)?;
    wait_for(LIMIT, || {
        Ok(daemon_a.status()?["mesh"]["transport"]["connected_peers"].as_u64() == Some(2))
    })?;
    let alone: serde_json::Value = serde_json::from_str(&cli(a, &["audit", "verify", "--json"])?)?;
    ensure!(alone["intact"] == true, "{alone}");
    let (ok, report) = against_mesh(a)?;
    ensure!(!ok, "a disagreeing peer must fail the command: {report}");
    ensure!(all_peers(&report, "disagrees", 5), "{report}");
    for p in report["peers"].as_array().context("peers")? {
        ensure!(
            p["peer_hash"] != p["local_hash"] && p["local_hash"].is_string(),
            "both hashes shown: {p}"
        );
    }
    ensure!(
        report["agreed"] == false && report["count"] == 5,
        "{report}"
    );
    // A publishes nothing over the evidence, however long it runs and whatever it records.
    record(a, "db-06")?;
    std::thread::sleep(Duration::from_millis(
        meshward_node::audit::mesh::PUBLISH_INTERVAL_MS + 2_000,
    ));
    let (ok, report) = against_mesh(a)?;
    ensure!(
        !ok && report["count"] == 6 && all_peers(&report, "disagrees", 5),
        "{report}"
    );
    ensure!(
        daemon_a.log_tail(400).contains("audit head not published"),
        "the refusal is logged:\n{}",
        daemon_a.log_tail(40)
    );
    // The human form names the peers that disagree.
    let out = run_cli(a, &["audit", "verify", "--against-mesh"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.matches("DISAGREES at record 5").count() == 2 && text.contains("node1.test"),
        "{text}"
    );
    // B, untouched, agrees with every peer (A restarted holds B's head too).
    let (ok, report) = against_mesh(b)?;
    ensure!(ok && all_peers(&report, "agrees", 1), "{report}");
    daemon_a.kill(libc::SIGTERM);
    for d in daemons {
        d.kill(libc::SIGTERM);
    }
    Ok(())
}
