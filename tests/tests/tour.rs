//! README's five-minute tour, run as written: its shell blocks, in order, by bash in a fresh
//! directory, with `meshward` being the binary the tests build (a link in a directory put
//! first on PATH). The daemons the tour starts in the background are bash's children, in a
//! process group of the test's own making: the test stops the group when it ends.

use std::path::Path;
use std::time::Duration;

/// The shell blocks of the README section `title`.
fn blocks(readme: &str, title: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(title))
        .unwrap_or_else(|| panic!("no section {title:?} in README.md"));
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_readme_tour_runs_as_written() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: the tour uses curl, which is not installed (apt-get install -y curl)");
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let blocks = blocks(&readme, "A five-minute tour");
    assert!(blocks.len() >= 4, "{blocks:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    std::os::unix::fs::symlink(meshward_tests::meshward_bin(), bin.join("meshward")).expect("link");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    // Each block's output after a marker, so a failure says which block.
    let mut script = String::from("set -euo pipefail\n");
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '=== block {i}'\n{block}\n"));
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = std::process::Command::new("bash");
    bash.args(["-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        .env("MESHWARD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Its own process group, so that the daemons it starts in the background go with it.
    std::os::unix::process::CommandExt::process_group(&mut bash, 0);
    let child = bash.spawn().expect("bash");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx.recv_timeout(Duration::from_secs(240));
    // The group is the tour's own (made above): this reaches its daemons and nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
    let output = output
        .expect("the tour did not finish within 240 s")
        .expect("bash ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = ["n1.log", "n2.log"]
        .iter()
        .map(|f| std::fs::read_to_string(work.join(f)).unwrap_or_default())
        .collect();
    assert!(
        output.status.success(),
        "the tour failed:\n{stdout}\n{stderr}\ndaemon logs:\n{logs}"
    );
    // What the tour shows: the cluster, the replicated event, the forwarded config write, the
    // two members, and the API's answers.
    for want in [
        "initialised cluster",
        "joined cluster",
        "alice",
        "14",
        "standby",
        "\"kind\":\"logout\"",
        "\"healthy\":true",
        "event: ready",
    ] {
        assert!(
            stdout.contains(want),
            "{want:?} not in the tour's output:\n{stdout}\n{stderr}"
        );
    }
    // Give the daemons a moment to exit on SIGTERM, then make sure nothing is left.
    std::thread::sleep(Duration::from_secs(1));
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
