//! End-to-end test package; the tests live in `tests/tests/`. This library holds their shared
//! helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context as _;

/// Path of the `meshward` binary, built once per test process.
///
/// Runs `cargo build -p meshward-node --bin meshward` (with `$CARGO` if set, so the same
/// toolchain, and the inherited `CARGO_TARGET_DIR`) and takes the executable's path from
/// cargo's JSON messages, so it is right for any target directory. Builds in release when the
/// tests themselves are built without debug assertions.
///
/// # Panics
/// If the build fails: no end-to-end test can run without the binary.
pub fn meshward_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match build_meshward() {
        Ok(path) => path,
        Err(e) => panic!("building the meshward binary: {e:#}"),
    })
    .clone()
}

fn build_meshward() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests package has no parent directory")?;
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args([
        "build",
        "--quiet",
        "-p",
        "meshward-node",
        "--bin",
        "meshward",
        "--message-format=json",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let output = cmd.output().context("running cargo build")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo build failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).context("cargo output is not UTF-8")?;
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_meshward = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "meshward"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if let (true, Some(exe)) = (is_meshward, message["executable"].as_str()) {
            return Ok(PathBuf::from(exe));
        }
    }
    anyhow::bail!("cargo build reported no `meshward` executable")
}
