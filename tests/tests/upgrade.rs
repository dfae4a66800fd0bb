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
    // Opened again, it is the same: the migration ran once.
    let again = json(&data, &["status", "--json"]);
    assert_eq!(again["digest"], status["digest"]);
}
