//! The lab: network namespaces, veth links, tc and iptables for latency, loss and cuts, and
//! the daemons in them; removed when dropped.

use super::*;

/// The namespaces, the daemons and their data; torn down on drop.
#[derive(Debug)]
pub(super) struct Lab {
    meshward: PathBuf,
    work: PathBuf,
    namespaces: Vec<String>,
    daemons: Vec<Option<Child>>,
    /// Writer id (hex) of each node.
    writers: Vec<String>,
    /// One-way latency range from node a to node b.
    pub(super) latency: Vec<Vec<(Duration, Duration)>>,
}

impl Lab {
    pub(super) fn new(n: usize, meshward: &Path, work: &Path) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(work)?;
        Ok(Lab {
            meshward: meshward.to_path_buf(),
            work: work.to_path_buf(),
            namespaces: Vec::new(),
            daemons: (0..n).map(|_| None).collect(),
            writers: Vec::new(),
            latency: Vec::new(),
        })
    }

    pub(super) fn ns(&self, i: usize) -> String {
        format!("{}{i}", namespace_prefix())
    }

    pub(super) fn hub(&self) -> String {
        format!("{}hub", namespace_prefix())
    }

    pub(super) fn addr(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    pub(super) fn data(&self, i: usize) -> PathBuf {
        self.work.join(format!("node{i}"))
    }

    pub(super) fn setup_network(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        let hub = self.hub();
        run("ip", &["netns", "add", &hub])?;
        self.namespaces.push(hub.clone());
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..self.daemons.len() {
            let ns = self.ns(i);
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let port = format!("p{i}");
            run(
                "ip",
                &[
                    "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &hub,
                ],
            )?;
            run("ip", &["-n", &hub, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", &hub, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", Lab::addr(i));
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            for chain in ["MWCUT", "MWFLAP"] {
                ipt(&ns, &["-N", chain])?;
                ipt(&ns, &["-A", "INPUT", "-j", chain])?;
            }
            let loss = scenario.network.loss;
            if loss > 0.0 {
                ipt(
                    &ns,
                    &[
                        "-A",
                        "INPUT",
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &loss.to_string(),
                        "-j",
                        "DROP",
                    ],
                )?;
            }
            if let Some(bw) = scenario.network.bandwidth {
                let rate = format!("{}bit", bw * 8);
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                        "rate", &rate, "burst", "32kbit", "latency", "400ms",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Creates the stores and gives them, as the simulator does, one genesis roster signed by
    /// node 0 (the leader of epoch 1), and one MEK (a member without it starts sealed).
    pub(super) fn init_cluster(&mut self) -> anyhow::Result<()> {
        use meshward_crdt::mastered::Member;
        let mut members = Vec::new();
        for i in 0..self.daemons.len() {
            let out = self.cli(i, &["status", "--json"])?;
            let status: serde_json::Value = serde_json::from_str(&out)?;
            let writer: meshward_crdt::WriterId = status["writer"]
                .as_str()
                .context("status without writer")?
                .parse()
                .map_err(anyhow::Error::msg)?;
            members.push(Member {
                key: writer.0,
                address: Lab::addr(i),
            });
            self.writers.push(writer.to_hex());
        }
        let leader = meshward_node::store::Store::open(&self.data(0))
            .context("opening node 0's store")?
            .identity()?
            .key;
        let bundle = meshward_node::roster::MasteredBundle::genesis(
            &leader,
            meshward_crdt::ClusterId([0x6d; 16]),
            members,
            None,
        );
        let file = self.work.join("roster.bundle");
        std::fs::write(&file, bundle.encode())?;
        let file = file.to_str().context("non-UTF-8 path")?.to_string();
        let mek = meshward_node::mek::Mek::generate(&mut rand::rngs::OsRng);
        for i in 0..self.daemons.len() {
            self.cli(i, &["mastered", "import", &file])?;
            mek.write_new(&self.data(i).join(meshward_node::mek::MEK_FILE))?;
        }
        Ok(())
    }

    pub(super) fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.meshward)
            .arg("--data")
            .arg(self.data(i))
            .args(args)
            .output()
            .context("running meshward")?;
        ensure!(
            out.status.success(),
            "meshward {args:?} on node {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    pub(super) fn start(&mut self, i: usize, peers: &[usize]) -> anyhow::Result<()> {
        if self.daemons[i].is_some() {
            return Ok(());
        }
        let data = self.data(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("daemon.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i)])
            .arg(&self.meshward)
            .arg("--data")
            .arg(&data)
            .args(["run", "--listen", &format!("{}:{PORT}", Lab::addr(i))]);
        for p in peers {
            cmd.arg("--peer").arg(format!("{}:{PORT}", Lab::addr(*p)));
        }
        cmd.env("MESHWARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        // `ip netns exec` execs the daemon, so the child's pid is the daemon's.
        self.daemons[i] = Some(cmd.spawn().context("starting meshward run")?);
        let socket = data.join("meshward.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "node {i} did not open its control socket; see {}",
                    data.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.delay(i)
    }

    /// Tells node `i` to hold what each peer sends for the scenario's one-way latency from
    /// that peer (the daemon forgets it when it stops, so this follows every start).
    pub(super) fn delay(&self, i: usize) -> anyhow::Result<()> {
        let mut by_range: std::collections::BTreeMap<(Duration, Duration), Vec<&str>> =
            std::collections::BTreeMap::new();
        for (j, writer) in self.writers.iter().enumerate().filter(|(j, _)| *j != i) {
            by_range.entry(self.latency[j][i]).or_default().push(writer);
        }
        for ((min, max), peers) in by_range {
            let ms = format!("{}..{}", min.as_millis(), max.as_millis());
            let mut args = vec!["fault", "delay", "--ms", &ms];
            for p in peers {
                args.extend(["--peer", p]);
            }
            self.cli(i, &args)
                .with_context(|| format!("setting node {i}'s latency (needs a meshward built with --features fault-injection)"))?;
        }
        Ok(())
    }

    pub(super) fn crash(&mut self, i: usize) -> bool {
        match self.daemons[i].take() {
            Some(mut child) => {
                // Our own child's pid.
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(self.data(i).join("meshward.sock"));
                true
            }
            None => false,
        }
    }

    pub(super) fn live(&self) -> usize {
        self.daemons.iter().filter(|d| d.is_some()).count()
    }

    pub(super) fn write(&self, i: usize, tag: &str, rows: u64) -> anyhow::Result<()> {
        ensure!(self.daemons[i].is_some(), "node {i} is down");
        let count = rows.to_string();
        self.cli(
            i,
            &[
                "event", "append", "--kind", "login", "--user", "sim", "--target", tag, "--count",
                &count,
            ],
        )?;
        Ok(())
    }

    /// Drops, in every node's namespace, packets from the nodes `cut(a, b)` separates it from.
    pub(super) fn cut(
        &self,
        chain: &str,
        cut: impl Fn(usize, usize) -> bool,
    ) -> anyhow::Result<()> {
        self.flush(chain)?;
        let n = self.daemons.len();
        for a in 0..n {
            for b in (0..n).filter(|&b| b != a && cut(a, b)) {
                ipt(
                    &self.ns(a),
                    &["-A", chain, "-s", &Lab::addr(b), "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn flush(&self, chain: &str) -> anyhow::Result<()> {
        for a in 0..self.daemons.len() {
            ipt(&self.ns(a), &["-F", chain])?;
        }
        Ok(())
    }

    /// `status --json` of every live node that answers.
    pub(super) fn statuses(&self) -> Vec<serde_json::Value> {
        (0..self.daemons.len())
            .filter(|&i| self.daemons[i].is_some())
            .filter_map(|i| {
                let out = self.cli(i, &["status", "--json"]).ok()?;
                serde_json::from_str(&out).ok()
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.daemons.len() {
            self.crash(i);
        }
        // Deleting a namespace removes its veth end and, for the hub, the bridge.
        for ns in self.namespaces.drain(..).rev() {
            let _ = run("ip", &["netns", "del", &ns]);
        }
    }
}

pub(super) fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A time since the run started, as the simulator's reports count it.
pub(super) fn micros(d: Duration) -> Micros {
    d.as_micros() as Micros
}

pub(super) fn ipt(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["netns", "exec", ns, "iptables", "-w"];
    full.extend_from_slice(args);
    run("ip", &full)
}
