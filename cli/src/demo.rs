//! `meshward demo`: a local 3-node cluster on 127.0.0.1 for a first look.
//!
//! Runs the same commands an operator would, as child processes of this binary: `init` on
//! node 1 (with a licence issuer key made on the fly and written to node 1's `meshward.toml`),
//! `licence install` of a 3-node licence signed with it, `run`, then for nodes 2 and 3
//! `bundle create` on node 1, `join`, and `run`. It prints how to talk to each node and stops
//! all three (by their pids) on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use meshward_node::licence::{IssuerKey, LicenceTerms};
use meshward_node::mek::MEK_FILE;

/// How long a node may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped node may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// `meshward demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the nodes' data (default: a new directory in the system's temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Mesh port of node 1; nodes 2 and 3 use +10 and +20, each setup endpoint the next port.
    #[arg(long, default_value_t = 7400)]
    pub base_port: u16,
}

/// The demo's child processes, stopped by pid when dropped.
#[derive(Debug, Default)]
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Our own child's pid: the signal cannot reach another process.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for child in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs the demo until Ctrl-C.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the meshward executable")?;
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("meshward-demo-{}", std::process::id()))
    });
    let ports: Vec<u16> = (0..3u16)
        .map(|i| args.base_port.checked_add(10 * i + 1).map(|p| p - 1))
        .collect::<Option<_>>()
        .context("--base-port is too high")?;
    let nodes: Vec<(PathBuf, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (dir.join(format!("node{}", i + 1)), format!("127.0.0.1:{p}")))
        .collect();
    if nodes.iter().any(|(d, _)| d.exists()) {
        bail!(
            "{} already holds demo nodes; give another --dir or remove it",
            dir.display()
        );
    }
    meshward_node::disk::private_data_dir(&nodes[0].0)?;
    // The demo is its own licence vendor: an issuer key of its own, named at `init`.
    let issuer = IssuerKey::generate();
    let (leader, leader_addr) = &nodes[0];
    println!("meshward demo in {}", dir.display());
    step(
        &exe,
        leader,
        &[
            "init",
            "--address",
            leader_addr,
            "--listen",
            leader_addr,
            "--licence-issuer",
            &issuer.public_hex(),
        ],
    )?;
    let cluster = meshward_node::store::Store::open(leader)?
        .identity()?
        .cluster;
    let licence = issuer.sign(LicenceTerms {
        customer: "meshward demo".into(),
        cluster: cluster.to_hex(),
        max_nodes: 3,
        expires_at_ms: meshward_node::ops::now_ms() as u64 + 30 * 24 * 3600 * 1000,
    });
    let licence_file = dir.join("licence.json");
    meshward_node::disk::write_new(&licence_file, licence.to_file().as_bytes(), 0o644)?;
    step(&exe, leader, &["licence", "install", path(&licence_file)?])?;
    let mut running = Nodes::default();
    running.0.push(start(&exe, leader, &[])?);
    for (data, address) in &nodes[1..] {
        let bundle = dir.join(format!(
            "bundle-{}",
            data.file_name().and_then(|n| n.to_str()).unwrap_or("node")
        ));
        step(
            &exe,
            leader,
            &["bundle", "create", "--ttl", "10m", "--out", path(&bundle)?],
        )?;
        let mek = leader.join(MEK_FILE);
        step(
            &exe,
            data,
            &[
                "join",
                "--bundle",
                path(&bundle)?,
                "--mek",
                path(&mek)?,
                "--address",
                address,
                "--listen",
                address,
            ],
        )?;
        running.0.push(start(&exe, data, &[leader_addr])?);
    }
    println!("\nthree nodes run on 127.0.0.1 (mesh ports {ports:?}); talk to them with:\n");
    let me = exe.display();
    for (data, address) in &nodes {
        println!(
            "  {me} --data {} event list      # node {address}",
            data.display()
        );
    }
    println!(
        "\ntry: {me} --data {} event append --kind login --user alice --target db-01\n\
         then list the events on another node; `status --json` shows peers and lag.\n\
         The MEK is in {}. Logs: DIR/nodeN/daemon.log. Ctrl-C stops all three.",
        nodes[0].0.display(),
        leader.join(MEK_FILE).display()
    );
    wait_for_signal()?;
    println!("stopping the demo nodes");
    drop(running);
    Ok(())
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("the demo directory path is not UTF-8")
}

/// Runs one meshward command on `data`; its output is shown, except `init`'s MEK line.
fn step(exe: &Path, data: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(exe)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .with_context(|| format!("running meshward {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "meshward {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    println!(
        "$ meshward --data {} {}\n  {first}",
        data.display(),
        args.join(" ")
    );
    Ok(())
}

/// Starts `meshward run` on `data` and waits until its setup endpoint listens.
fn start(exe: &Path, data: &Path, peers: &[&String]) -> anyhow::Result<Child> {
    let log = meshward_node::disk::create_new(&data.join("daemon.log"), 0o600)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data").arg(data).arg("run");
    for p in peers {
        cmd.arg("--peer").arg(p);
    }
    let child = cmd
        .env(
            "MESHWARD_LOG",
            std::env::var("MESHWARD_LOG").unwrap_or("info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting meshward run")?;
    let mut guard = Nodes(vec![child]);
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if data.join(meshward_client::SOCKET).exists()
            && local_status(data).is_some_and(|s| s["mesh"]["setup"].is_string())
        {
            println!("  started {} (pid {})", data.display(), guard.0[0].id());
            return guard.0.pop().context("child");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} did not start within {START_TIMEOUT:?}; see its daemon.log",
        data.display()
    )
}

/// The status of the daemon of `data`, if one answers.
fn local_status(data: &Path) -> Option<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let client = meshward_client::Client::local(data);
    match runtime.block_on(client.send(&meshward_api::Request::Status)) {
        Ok(meshward_api::Reply::Status(status)) => serde_json::to_value(status).ok(),
        _ => None,
    }
}

fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    })
}
