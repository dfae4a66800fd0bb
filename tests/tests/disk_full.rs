//! A full disk under a running node, end to end: real `meshward run` processes on 127.0.0.1,
//! one of them with its data directory on a small tmpfs that the test fills up. The daemon
//! must refuse writes with a clear error, keep answering, lose nothing the mesh holds, and
//! take writes again once space is freed, without a restart. Needs root (for `mount`);
//! skipped, saying why, without it. Every tmpfs is unmounted when its test ends, passing or
//! not, and every daemon is killed by its own pid.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshward_tests::{Daemon, cli, cli_fails, cluster, wait_for};

/// How long replication may take to catch up (a debug build on a busy 2-core machine).
const CONVERGE: Duration = Duration::from_secs(120);

/// A tmpfs mounted for a test, unmounted when dropped (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` (e.g. "8m") on `dir` (created if missing); `None`, after
    /// printing why, when that is not possible here.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).expect("creating the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs on {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes `path` until its filesystem has no space left (bounded: the filesystem is small).
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("creating the filler file");
    for size in [64 * 1024, 4096, 512, 1] {
        let chunk = vec![0xa5u8; size];
        for _ in 0..1_000_000 {
            match file.write(&chunk) {
                Ok(n) if n == size => {}
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
}

fn events_of(data: &Path, user: &str) -> anyhow::Result<usize> {
    let out = cli(data, &["event", "list", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .map_or(0, |a| a.iter().filter(|e| e["user"] == user).count()))
}

fn append(data: &Path, user: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let target = format!("host-{i}");
        cli(
            data,
            &[
                "event", "append", "--kind", "login", "--user", user, "--target", &target,
            ],
        )?;
    }
    Ok(())
}

#[test]
fn a_daemon_whose_disk_fills_up_refuses_writes_keeps_serving_and_catches_up_once_space_is_freed() {
    let root = tempfile::tempdir().unwrap();
    // Node 0's data directory is the tmpfs itself; node 1's is on the ordinary disk.
    let Some(_mount) = Mount::tmpfs(&root.path().join("node0"), "8m") else {
        return;
    };
    let nodes = cluster(root.path(), 2).unwrap();
    let (full_data, other_data) = (nodes[0].0.clone(), nodes[1].0.clone());
    let mut full = Daemon::start(&full_data, &[]).unwrap();
    let other = Daemon::start(&other_data, &[full.listen_addr().unwrap().unwrap()]).unwrap();
    append(&other_data, "before", 3).unwrap();
    wait_for(CONVERGE, || Ok(events_of(&full_data, "before")? == 3))
        .expect("the nodes replicate before the disk fills");

    // Fill the filesystem; then the other node writes until the full node's store needs
    // more room than its file has, and refuses to persist what arrives.
    let filler = full_data.join("filler");
    fill(&filler);
    let detail = "x".repeat(900);
    let refused = |d: &Daemon| -> u64 {
        d.status().map_or(0, |s| {
            s["mesh"]["store"]["writes_refused"]
                .as_u64()
                .unwrap_or_default()
        })
    };
    let mut written = 0;
    for _ in 0..200 {
        cli(
            &other_data,
            &[
                "event", "append", "--kind", "login", "--user", "during", "--target", "t",
                "--detail", &detail, "--count", "100",
            ],
        )
        .unwrap();
        written += 100;
        if wait_for(Duration::from_secs(3), || Ok(refused(&full) >= 1)).is_ok() {
            break;
        }
    }
    assert!(
        refused(&full) >= 1,
        "an 8 MiB filesystem did not fill up:\n{}",
        full.log_tail(20)
    );

    // The daemon is still there, answers, and says what happened.
    assert!(
        full.is_running(),
        "the daemon exited:\n{}",
        full.log_tail(20)
    );
    let status = full.status().expect("status answers on a full disk");
    assert_eq!(status["mesh"]["store"]["disk_full"], true, "{status}");
    let text = cli(&full_data, &["status"]).unwrap();
    assert!(text.contains("disk full:"), "{text}");

    // A local write is refused, clearly; so is a backup onto the full disk, which leaves no
    // partial file.
    let err = cli_fails(
        &full_data,
        &[
            "event", "append", "--kind", "login", "--user", "refused", "--target", "t", "--detail",
            &detail, "--count", "100",
        ],
    )
    .unwrap();
    let says = format!(
        "disk full: {} has no space left; the write was refused and nothing was changed",
        full_data.display()
    );
    assert!(err.contains(&says), "the error names the full disk: {err}");
    let archive = full_data.join("during.mwb");
    let err = cli_fails(&full_data, &["backup", "--out", archive.to_str().unwrap()]).unwrap();
    assert!(
        err.contains(&format!(
            "disk full: the backup {} could not be written",
            archive.display()
        )) && err.contains("has no space left"),
        "{err}"
    );
    let partial: Vec<_> = std::fs::read_dir(&full_data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("during.mwb"))
        .collect();
    assert!(partial.is_empty(), "a refused backup left {partial:?}");

    // The other node keeps writing; the full node drops what it cannot store, and goes on.
    append(&other_data, "meanwhile", 5).unwrap();
    wait_for(CONVERGE, || {
        Ok(full.status()?["mesh"]["core"]["held_dropped"].as_u64() >= Some(1))
    })
    .expect("the full node drops what arrives");
    assert!(
        full.is_running(),
        "the daemon exited:\n{}",
        full.log_tail(20)
    );
    assert_eq!(events_of(&full_data, "meanwhile").unwrap(), 0);

    // Space is freed: writes work again without a restart, and what the other node wrote
    // meanwhile arrives.
    std::fs::remove_file(&filler).unwrap();
    cli(
        &full_data,
        &[
            "event", "append", "--kind", "login", "--user", "after", "--target", "t",
        ],
    )
    .expect("a write once space is freed");
    wait_for(CONVERGE, || {
        Ok(events_of(&full_data, "during")? == written
            && events_of(&full_data, "meanwhile")? == 5
            && events_of(&other_data, "after")? == 1
            && other.status()?["digest"] == full.status()?["digest"])
    })
    .unwrap_or_else(|e| {
        panic!(
            "the nodes did not converge after space was freed: {e:#}\nfull node's log:\n{}",
            full.log_tail(30)
        )
    });
    assert_eq!(events_of(&full_data, "refused").unwrap(), 0);
    let status = full.status().unwrap();
    assert_eq!(status["mesh"]["store"]["disk_full"], false);
    assert!(full.is_running());
    // The nodes must stop before the tmpfs is unmounted.
    drop(full);
    drop(other);
}

#[test]
fn a_backup_onto_a_full_disk_says_so_and_leaves_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("node");
    cli(
        &data,
        &[
            "event", "append", "--kind", "login", "--user", "u", "--target", "t", "--count", "50",
        ],
    )
    .unwrap();
    meshward_node::mek::Mek::generate(&mut rand::rngs::OsRng)
        .write_new(&data.join(meshward_node::mek::MEK_FILE))
        .unwrap();
    let small = root.path().join("small");
    let Some(_mount) = Mount::tmpfs(&small, "1m") else {
        return;
    };
    fill(&small.join("filler"));
    let out = small.join("node.mwb");
    let err = cli_fails(&data, &["backup", "--out", out.to_str().unwrap()]).unwrap();
    assert!(
        err.contains(&format!(
            "disk full: the backup {} could not be written: {} has no space left",
            out.display(),
            small.display()
        )),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "filler")
        .collect();
    assert!(left.is_empty(), "a refused backup left {left:?}");

    // With room, the same command writes the backup.
    std::fs::remove_file(small.join("filler")).unwrap();
    cli(&data, &["backup", "--out", out.to_str().unwrap()]).unwrap();
    assert!(out.exists());
}
