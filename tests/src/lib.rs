//! End-to-end test package; the tests live in `tests/tests/`. This library holds their shared
//! helpers.

pub mod by_hand;
pub mod etcd;
pub mod https;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Path of the `meshward` binary, built once per test process, with the `fault-injection`
/// feature (the `meshward fault` hooks the partition tests use; production builds lack it).
///
/// Runs `cargo build -p meshward --bin meshward` (with `$CARGO` if set, so the same
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
    meshward_simulations::emulate::build_meshward(!cfg!(debug_assertions))
}

/// A `meshward` daemon started by a test, killed (by its own pid) and reaped when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// Its data directory.
    pub data: PathBuf,
    child: std::process::Child,
}

impl Daemon {
    /// Starts `meshward run` on `data`, listening on a free UDP port of 127.0.0.1, dialling
    /// `peers`, and waits until its control socket answers and it listens.
    pub fn start(data: &Path, peers: &[std::net::SocketAddr]) -> anyhow::Result<Daemon> {
        let names: Vec<String> = peers.iter().map(ToString::to_string).collect();
        Daemon::start_named(data, &names)
    }

    /// Like [`Daemon::start`], with peers given as `HOST:PORT` or `IP:PORT`.
    pub fn start_named(data: &Path, peers: &[String]) -> anyhow::Result<Daemon> {
        let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        for p in peers {
            args.push("--peer".into());
            args.push(p.clone());
        }
        Daemon::start_with(data, &args)
    }

    /// Starts `meshward run ARGS` on `data` (e.g. no args: the listen address stored by
    /// `init`/`join`) and waits until its control socket answers and it listens.
    pub fn start_with(data: &Path, args: &[String]) -> anyhow::Result<Daemon> {
        Daemon::start_with_env(data, args, &[])
    }

    /// [`Daemon::start_with`], with these environment variables set for the daemon (e.g. a
    /// fault-injection switch).
    pub fn start_with_env(
        data: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        let mut cmd = Command::new(meshward_bin());
        cmd.arg("--data").arg(data).arg("run").args(args);
        cmd.envs(env.iter().copied());
        let log = std::fs::File::create(data.join("daemon.log"))?;
        cmd.stdout(std::process::Stdio::null()).stderr(log);
        // MESHWARD_TEST_LOG sets the daemons' log filter (e.g. `debug` to chase a failure).
        let filter = std::env::var("MESHWARD_TEST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("MESHWARD_LOG", filter);
        let child = cmd.spawn().context("starting meshward run")?;
        let daemon = Daemon {
            data: data.to_path_buf(),
            child,
        };
        // Poll the control socket only: a command run before it exists would open the store
        // itself and hold it while the daemon starts.
        let socket = data.join("meshward.sock");
        let started = wait_for(std::time::Duration::from_secs(30), || {
            Ok(socket.exists() && daemon.listen_addr()?.is_some())
        });
        if let Err(e) = started {
            let log = std::fs::read_to_string(data.join("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow::bail!(
                "the daemon did not start listening: {e:#}\nlast log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(daemon)
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.data.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `meshward status --json`, through the daemon.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = cli(&self.data, &["status", "--json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The mesh address it listens on, once known.
    pub fn listen_addr(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        let status = self.status()?;
        Ok(status["mesh"]["listen"]
            .as_str()
            .and_then(|a| a.parse().ok()))
    }

    /// Kills the daemon with `signal` and reaps it.
    pub fn kill(mut self, signal: i32) -> PathBuf {
        self.stop(signal);
        self.data.clone()
    }

    fn stop(&mut self, signal: i32) {
        // The pid is our own child's, so signalling it cannot reach another process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(libc::SIGKILL);
        }
    }
}

/// Runs a `meshward` command on `data` and returns its whole output, success or not.
pub fn run_cli(data: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(meshward_bin())
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .context("running meshward")
}

/// Like [`run_cli`], in the working directory `cwd` (for relative paths in `args`).
pub fn run_cli_in(cwd: &Path, data: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(meshward_bin())
        .current_dir(cwd)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .context("running meshward")
}

/// Runs a `meshward` command on `data` that must fail, and returns its stderr.
pub fn cli_fails(data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = run_cli(data, args)?;
    anyhow::ensure!(
        !out.status.success(),
        "meshward {args:?} succeeded but should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stderr)?)
}

/// A UDP port `p` of 127.0.0.1 such that `p` and `p + 1` (mesh and setup endpoint) were both
/// free when probed. Bounded: gives up after 200 tries.
pub fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let first = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no two consecutive free UDP ports found on 127.0.0.1")
}

/// Runs a `meshward` command on `data` and returns its stdout; an error carries its stderr.
pub fn cli(data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = run_cli(data, args)?;
    anyhow::ensure!(
        out.status.success(),
        "meshward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Like [`cli`], writing `input` to the command's stdin.
pub fn cli_stdin(data: &Path, args: &[&str], input: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(meshward_bin())
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running meshward")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "meshward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Waits for `child` to exit, at most `limit` (polling every 50 ms); past that, kills it by
/// its own pid, reaps it and returns an error.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    anyhow::bail!("process {} still ran after {limit:?}; killed", child.id())
}

/// Polls `check` every 100 ms until it returns true or `limit` passes (bounded loop).
pub fn wait_for(
    limit: std::time::Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => last = None,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    match last {
        Some(e) => Err(e.context(format!("condition not met within {limit:?}"))),
        None => anyhow::bail!("condition not met within {limit:?}"),
    }
}

/// Creates `n` node stores under `root` and gives each the same roster, signed with node 0's
/// key, so node 0 leads epoch 1 (real ed25519 signatures, verified by each node on import).
/// Returns the data directories and the nodes' writer ids (hex).
pub fn cluster(root: &Path, n: usize) -> anyhow::Result<Vec<(PathBuf, String)>> {
    use meshward_crdt::mastered::Member;
    let mut nodes = Vec::new();
    for i in 0..n {
        let data = root.join(format!("node{i}"));
        let status: serde_json::Value = serde_json::from_str(&cli(&data, &["status", "--json"])?)?;
        let writer = status["writer"].as_str().context("no writer")?.to_string();
        nodes.push((data, writer));
    }
    let leader = meshward_node::store::Store::open(&nodes[0].0)?
        .identity()?
        .key;
    let members = nodes
        .iter()
        .enumerate()
        .map(|(i, (_, w))| -> anyhow::Result<Member> {
            let key = w
                .parse::<meshward_crdt::WriterId>()
                .map_err(anyhow::Error::msg)?
                .0;
            Ok(Member {
                key,
                address: format!("node{i}.test"),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let bundle = meshward_node::roster::MasteredBundle::genesis(
        &leader,
        meshward_crdt::ClusterId([0x6d; 16]),
        members,
        Some(
            ed25519_dalek::SigningKey::from_bytes(&ISSUER_SEED)
                .verifying_key()
                .to_bytes(),
        ),
    );
    let file = root.join("roster.bundle");
    std::fs::write(&file, bundle.encode())?;
    // Every member holds the cluster's MEK (a member without one starts sealed).
    let mek = meshward_node::mek::Mek::generate(&mut rand::rngs::OsRng);
    for (data, _) in &nodes {
        cli(
            data,
            &["mastered", "import", file.to_str().context("path")?],
        )?;
        mek.write_new(&data.join(meshward_node::mek::MEK_FILE))?;
    }
    Ok(nodes)
}

/// Starts daemons for `nodes` (each dials every daemon started before it) and waits until
/// each is connected to every other.
pub fn start_all(nodes: &[(PathBuf, String)]) -> Vec<Daemon> {
    start_all_with_env(nodes, &[])
}

/// [`start_all`], with these environment variables set for every daemon.
pub fn start_all_with_env(nodes: &[(PathBuf, String)], env: &[(&str, &str)]) -> Vec<Daemon> {
    let mut daemons: Vec<Daemon> = Vec::new();
    for (data, _) in nodes {
        let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        for d in &daemons {
            let addr = d.listen_addr().expect("status").expect("listening");
            args.extend(["--peer".to_string(), addr.to_string()]);
        }
        daemons.push(Daemon::start_with_env(data, &args, env).expect("start daemon"));
    }
    // Every node connected to every other, so a test's first step (a hand-over that the next
    // leader must endorse, a write that must reach everyone) does not race the dials.
    let want = daemons.len() as u64 - 1;
    wait_for(std::time::Duration::from_secs(90), || {
        Ok(daemons.iter().all(|d| {
            d.status()
                .is_ok_and(|s| s["mesh"]["transport"]["connected_peers"].as_u64() == Some(want))
        }))
    })
    .expect("every node connects to every other");
    daemons
}

/// A daemon's view of leadership: its epoch and the leader's address.
pub fn leadership(d: &Daemon) -> anyhow::Result<(u64, String)> {
    let ha = d.status()?["ha"].clone();
    Ok((
        ha["epoch"].as_u64().unwrap_or(0),
        ha["leader"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Whether every daemon sees epoch `epoch` led by `leader`.
pub fn all_led_by(daemons: &[&Daemon], epoch: u64, leader: &str) -> anyhow::Result<bool> {
    for d in daemons {
        if leadership(d)? != (epoch, leader.to_string()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Appends `n` login events of `user` (targets host-0, host-1, …) through the CLI.
pub fn append(data: &Path, user: &str, n: usize) -> anyhow::Result<()> {
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

/// A tmpfs mounted for a test, unmounted when dropped (also when the test fails).
#[derive(Debug)]
pub struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` (e.g. "8m") on `dir` (created if missing); `None`, after
    /// printing why, when that is not possible here.
    pub fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
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
pub fn fill(path: &Path) {
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

/// Sends one API request to the daemon of `data` through its local socket (the caller is
/// root), with the client crate.
pub fn api(data: &Path, request: meshward_api::Request) -> anyhow::Result<meshward_api::Reply> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = meshward_client::Client::local(data);
    Ok(runtime.block_on(client.send(&request))?)
}

/// A TLS client identity: the CA the server must chain to, a certificate and its key (DER).
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// The CA certificate the server's must chain to.
    pub ca: Vec<u8>,
    /// The client certificate.
    pub cert: Vec<u8>,
    /// Its private key (PKCS#8).
    pub key: Vec<u8>,
}

impl ClientIdentity {
    /// The files `meshward user cert USER --out DIR` wrote (`ca.crt`, `USER.crt`, `USER.key`).
    ///
    /// # Panics
    /// If a file is missing or not PEM: the test cannot go on.
    pub fn load(dir: &Path, user: &str) -> ClientIdentity {
        let der = |name: String| {
            CertificateDer::from_pem_file(dir.join(name))
                .expect("PEM certificate")
                .to_vec()
        };
        let key = PrivateKeyDer::from_pem_file(dir.join(format!("{user}.key"))).expect("PEM key");
        ClientIdentity {
            ca: der("ca.crt".into()),
            cert: der(format!("{user}.crt")),
            key: key.secret_der().to_vec(),
        }
    }

    /// A TLS 1.3 client configuration that trusts only its CA, presents its certificate and
    /// offers `alpn` (none: no ALPN).
    pub fn rustls(&self, alpn: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca.clone()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(self.cert.clone())],
                PrivateKeyDer::try_from(self.key.clone()).map_err(anyhow::Error::msg)?,
            )?;
        config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
        Ok(config)
    }
}

/// The seed of the test licence issuer that [`cluster`] and [`https::leader_with_users`]
/// name in their genesis.
pub const ISSUER_SEED: [u8; 32] = [0x11; 32];

/// The public key (hex) of the test licence issuer made from `seed`, as `init
/// --licence-issuer` takes it.
pub fn issuer_hex(seed: [u8; 32]) -> String {
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    )
}

/// `meshward init` of `data` at `addr` (also its listen address), naming the test licence
/// issuer of `seed`; what init printed.
pub fn init_with_issuer(data: &Path, addr: &str, seed: [u8; 32]) -> anyhow::Result<String> {
    let issuer = issuer_hex(seed);
    let init = [
        "init",
        "--address",
        addr,
        "--listen",
        addr,
        "--licence-issuer",
        &issuer,
    ];
    cli(data, &init)
}

/// Installs on the leader of `data` a licence for `max_nodes` nodes of its cluster, signed by
/// the test issuer of `seed` (the cluster must have been created naming that issuer). The
/// licence file is written next to `data`.
pub fn install_licence(data: &Path, seed: [u8; 32], max_nodes: u32) -> anyhow::Result<()> {
    let status: serde_json::Value = serde_json::from_str(&cli(data, &["status", "--json"])?)?;
    let cluster = status["cluster"]
        .as_str()
        .context("no cluster id in status")?
        .to_string();
    let terms = meshward_node::licence::LicenceTerms {
        customer: "acme".into(),
        cluster,
        max_nodes,
        expires_at_ms: 4_000_000_000_000,
    };
    let issuer = ed25519_dalek::SigningKey::from_bytes(&seed);
    let licence = data.with_extension("licence.json");
    std::fs::write(&licence, terms.sign(&issuer).to_file())?;
    cli(
        data,
        &["licence", "install", licence.to_str().context("path")?],
    )?;
    Ok(())
}

/// How many peers `d` reports connected.
pub fn connected_peers(d: &Daemon) -> anyhow::Result<usize> {
    let status = d.status()?;
    let peers = status["mesh"]["peers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    Ok(peers.values().filter(|p| p["connected"] == true).count())
}

/// A small seeded generator (SplitMix64), so a failing run of a test that picks random
/// moments (kill delays) can be replayed from its seed.
#[derive(Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next number.
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Sleeps until the `i`-th tick of a load that started at `start`, one tick per `interval`
/// (at once when it is late): the benches' constant-rate pacing.
pub fn pace(start: std::time::Instant, interval: std::time::Duration, i: u64) {
    let due = start + interval * i as u32;
    if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(wait);
    }
}
