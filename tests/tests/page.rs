//! The status page in a real browser: a 3-node cluster made as an operator makes one, and
//! headless Chromium rendering the leader's page through a plain-HTTP proxy that presents a
//! guest's client certificate. Skips, saying so, where Chromium is not installed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meshward_tests::https::{Api, leader_with_users, p, raw_request};
use meshward_tests::{ClientIdentity as Identity, Daemon, cli, free_port_pair, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A 3-node cluster made as an operator makes one: `init` (a leader with users and
/// certificates, see [`leader_with_users`]), a licence from a test issuer, then `bundle
/// create` and `join` for two more nodes. Every daemon runs; the leader serves the admin API.
/// Returns the leader's API and the followers' daemons.
fn three_nodes(root: &Path, users: &[(&str, Option<&str>)]) -> (Api, Vec<Daemon>) {
    let (leader, _, _) = leader_with_users(root, users);
    meshward_tests::install_licence(&leader, [0x11; 32], 3).expect("licence install");
    let api = Api::start(&leader);
    let mut followers = Vec::new();
    for name in ["node2", "node3"] {
        let data = root.join(name);
        let bundle = root.join(format!("bundle-{name}"));
        cli(&leader, &["bundle", "create", "--out", p(&bundle)]).expect("bundle");
        let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
        let mek = leader.join("mek");
        let join = [
            "join",
            "--bundle",
            p(&bundle),
            "--mek",
            p(&mek),
            "--address",
            &addr,
            "--listen",
            &addr,
        ];
        cli(&data, &join).expect("join");
        followers.push(Daemon::start_with(&data, &[]).expect("daemon"));
    }
    (api, followers)
}

/// Serves plain HTTP on 127.0.0.1 for a browser, which cannot present the client
/// certificate, and forwards each GET to the admin API over mutual TLS as `id` (one
/// connection each, closed after the reply). Accepts for `limit`, then stops.
fn forwarding_proxy(api: SocketAddr, id: Identity, limit: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    let id = Arc::new(id);
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((browser, _)) => {
                    let id = id.clone();
                    std::thread::spawn(move || forward(browser, api, &id));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return,
            }
        }
    });
    addr
}

/// Reads one request from the browser and answers with the admin API's reply to its GET.
fn forward(mut browser: TcpStream, api: SocketAddr, id: &Identity) -> anyhow::Result<()> {
    browser.set_nonblocking(false)?;
    browser.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 64 * 1024, "request head too long");
        browser.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    let mut line = head.split_whitespace();
    let (method, path) = (line.next(), line.next().context("no path")?);
    anyhow::ensure!(method == Some("GET"), "only GET is forwarded");
    browser.write_all(&raw_request(api, id, "GET", path, b"")?)?;
    Ok(())
}

#[test]
fn the_status_page_renders_the_cluster_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("skipped: {CHROMIUM} is not installed (apt-get install -y chromium)");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let (api, followers) = three_nodes(root.path(), &[("gus", Some("guest:*"))]);
    let gus = Identity::load(&root.path().join("certs"), "gus");
    // Wait until the leader sees both followers as connected standbys.
    let leader = &api.daemon;
    wait_for(Duration::from_secs(90), || {
        let status = leader.status()?;
        let states: Vec<_> = status["ha"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["state"].as_str().unwrap_or("").to_string())
            .collect();
        Ok(states.iter().filter(|s| *s == "standby").count() == 2)
    })
    .unwrap_or_else(|e| panic!("followers not standby: {e:#}\n{}", leader.log_tail(20)));
    let members = leader.status().expect("status")["ha"]["members"].clone();

    let proxy = forwarding_proxy(api.addr, gus, Duration::from_secs(180));
    let profile = tempfile::tempdir().expect("profile dir");
    let dom_file = root.path().join("dom.html");
    let log_file = root.path().join("chromium.log");
    let mut browser = std::process::Command::new(CHROMIUM);
    browser
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{proxy}/"))
        .stdout(std::fs::File::create(&dom_file).expect("dom file"))
        .stderr(std::fs::File::create(&log_file).expect("log file"));
    // Its own process group, so that its helper processes go with it.
    std::os::unix::process::CommandExt::process_group(&mut browser, 0);
    let mut child = browser.spawn().expect("chromium");
    let pid = child.id() as i32;
    let waited = meshward_tests::wait_or_kill(&mut child, Duration::from_secs(120));
    // The group is chromium's own (made above): this reaches its helpers, nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let status = waited.unwrap_or_else(|e| panic!("chromium: {e:#}\n{log}"));
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    let dom = std::fs::read_to_string(&dom_file).expect("dom");

    // The DOM is the browser's (it adds <tbody>), with one row per member, leader first.
    assert!(dom.contains("<h1>meshward node</h1>"), "{dom}");
    let table = dom
        .split("<table id=\"members\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no members table: {dom}"));
    assert!(table.contains("<tbody>"), "not a browser DOM: {dom}");
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for member in members.as_array().expect("members") {
        let address = member["address"].as_str().expect("address");
        let row = rows
            .iter()
            .find(|r| r.contains(&format!("<td>{address}</td>")))
            .unwrap_or_else(|| panic!("no row for {address}: {table}"));
        let want = if member["leader"] == true {
            "<td>leader, primary</td><td>active</td>"
        } else {
            "<td></td><td>standby</td>"
        };
        assert!(row.contains(want), "{address}: {row}");
    }
    assert!(dom.contains("<td id=\"role\">leader</td>"), "{dom}");
    assert!(dom.contains("<td id=\"ha-state\">active</td>"), "{dom}");
    for daemon in followers {
        daemon.kill(libc::SIGTERM);
    }
    api.daemon.kill(libc::SIGTERM);
}
