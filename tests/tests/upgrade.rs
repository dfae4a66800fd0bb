//! Upgrades: a store written by an earlier schema (kept in `tests/fixtures/`) opens with this
//! version after its migration steps, with everything it held.

use std::path::Path;

use meshward_tests::cli;

/// A copy of the fixture store in a fresh data directory.
fn copy_of(fixture: &str, dir: &Path) -> std::path::PathBuf {
    let data = dir.join("node");
    std::fs::create_dir_all(&data).expect("data dir");
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture)
        .join("meshward.redb");
    std::fs::copy(&from, data.join("meshward.redb")).expect("fixture copy");
    data
}

fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = cli(data, args).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn a_schema_1_store_opens_migrated_with_everything_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_of("store-v1", dir.path());
    let events = json(&data, &["event", "list", "--json"]);
    let events = events.as_array().expect("events");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e["user"] == "alice"));
    let fingerprints = json(&data, &["fingerprint", "list", "--json"]);
    assert_eq!(fingerprints.as_array().map(Vec::len), Some(1));
    let verified = cli(&data, &["audit", "verify"]).unwrap();
    assert!(verified.contains("1 record"), "{verified}");
    let setting = cli(&data, &["local", "get", "fingerprint-enforcement"]).unwrap();
    assert!(setting.contains("warn"), "{setting}");
    let users = cli(&data, &["user", "list"]).unwrap();
    assert!(users.contains("alice"), "{users}");
    let config = cli(&data, &["config", "get", "password.min-length"]).unwrap();
    assert!(config.contains("14"), "{config}");
    let status = json(&data, &["status", "--json"]);
    assert_eq!(status["mastered"]["version"], 4, "{status}");
    // Reading changed nothing: still schema 1.
    assert_eq!(schema(&data), 1);
    // The first write migrates it (one transaction), and it holds the same.
    cli(&data, &["local", "set", "label.site", "north"]).unwrap();
    assert_eq!(schema(&data), meshward_node::store::SCHEMA_VERSION);
    let again = json(&data, &["status", "--json"]);
    assert_eq!(again["digest"], status["digest"]);
    assert_eq!(again["mastered"]["version"], 4, "{again}");
    // New writes go on after the migration.
    cli(
        &data,
        &[
            "event", "append", "--kind", "login", "--user", "bob", "--target", "db-9",
        ],
    )
    .unwrap();
    let events = json(&data, &["event", "list", "--json"]);
    assert_eq!(events.as_array().map(Vec::len), Some(4), "{events}");
}

/// The schema version the store of `data` records.
fn schema(data: &Path) -> u32 {
    let db = redb::Database::open(data.join("meshward.redb")).expect("the store");
    let read = redb::ReadableDatabase::begin_read(&db).expect("a read");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let table = read.open_table(meta).expect("meta");
    let bytes = table.get("schema").expect("read").expect("a schema");
    u32::from_be_bytes(bytes.value().try_into().expect("4 bytes"))
}
