//! Clusters made by hand, as an operator makes them: `init` with the vendor's licence issuer,
//! `licence issue`/`install`, `bundle create`, `join` (the lifecycle and standalone tests).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub use crate::https::p;
use crate::{Daemon, cli, free_port_pair};

#[derive(Debug)]
pub struct Node {
    /// Its data directory.
    pub data: PathBuf,
    /// Its node address (and mesh listen address), 127.0.0.1 with a free port.
    pub addr: String,
}

impl Node {
    /// A node in ROOT/NAME with a free port pair of 127.0.0.1.
    pub fn new(root: &Path, name: &str) -> Node {
        let port = free_port_pair().expect("free ports");
        Node {
            data: root.join(name),
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// Starts its daemon.
    ///
    /// # Panics
    /// If it does not start.
    pub fn start(&self) -> Daemon {
        Daemon::start_with(&self.data, &[]).expect("start daemon")
    }
}

/// The vendor's licence issuer key, made with `licence keygen` once per test root: the key
/// file and the public key.
pub fn vendor(root: &Path) -> (PathBuf, String) {
    let key = root.join("issuer.key");
    if !key.exists() {
        let out = cli(
            &root.join("vendor"),
            &["licence", "keygen", "--out", p(&key)],
        )
        .expect("test setup");
        assert_eq!(mode(&key), 0o600);
        assert!(out.contains("init --licence-issuer"), "{out}");
    }
    let public = std::fs::read_to_string(root.join("issuer.key.pub")).expect("test setup");
    (key, public.trim().to_string())
}

/// `init` of `node` naming the vendor's issuer; prints what init printed.
pub fn init(root: &Path, node: &Node) -> String {
    let (_, issuer) = vendor(root);
    cli(
        &node.data,
        &[
            "init",
            "--address",
            &node.addr,
            "--listen",
            &node.addr,
            "--licence-issuer",
            &issuer,
        ],
    )
    .expect("test setup")
}

/// The cluster id `status` shows.
pub fn cluster_id(node: &Node) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&cli(&node.data, &["status", "--json"]).expect("status"))
            .expect("status JSON");
    status["cluster"]
        .as_str()
        .expect("a cluster id")
        .to_string()
}

/// `init` on a new leader naming the vendor's issuer, and a licence for `max` nodes.
pub fn leader(root: &Path, max: u32) -> Node {
    let node = Node::new(root, "leader");
    init(root, &node);
    let licence = licence_file(root, &cluster_id(&node), max);
    cli(&node.data, &["licence", "install", p(&licence)]).expect("test setup");
    node
}

/// A licence for `max` nodes of `cluster`, issued by the vendor with `licence issue`.
pub fn licence_file(root: &Path, cluster: &str, max: u32) -> PathBuf {
    let (key, _) = vendor(root);
    let file = root.join(format!("licence-{}-{max}.json", &cluster[..8]));
    if !file.exists() {
        let nodes = max.to_string();
        let issue = [
            "licence",
            "issue",
            "--issuer-key",
            p(&key),
            "--cluster",
            cluster,
            "--nodes",
            &nodes,
            "--expires",
            "2100-01-01",
            "--customer",
            "acme",
            "--out",
            p(&file),
        ];
        cli(&root.join("vendor"), &issue).expect("test setup");
    }
    file
}

/// `bundle create` on the leader, written to ROOT/NAME.
pub fn bundle(leader: &Node, root: &Path, name: &str, ttl: &str) -> PathBuf {
    let file = root.join(name);
    cli(
        &leader.data,
        &["bundle", "create", "--ttl", ttl, "--out", p(&file)],
    )
    .expect("test setup");
    file
}

/// The arguments of `join` for `node` with `bundle` and `mek`.
pub fn join_args<'a>(node: &'a Node, bundle: &'a Path, mek: &'a Path) -> Vec<&'a str> {
    vec![
        "join",
        "--bundle",
        p(bundle),
        "--mek",
        p(mek),
        "--address",
        &node.addr,
        "--listen",
        &node.addr,
    ]
}

/// How many events the node of `data` lists.
pub fn events(data: &Path) -> anyhow::Result<usize> {
    let out = cli(data, &["event", "list", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array().map_or(0, Vec::len))
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("test setup")
        .permissions()
        .mode()
        & 0o777
}

/// Members of the leader's verified roster, read through its daemon.
pub fn roster_size(leader: &Daemon) -> u64 {
    leader.status().expect("status")["mastered"]["members"]
        .as_u64()
        .expect("a cluster")
}
