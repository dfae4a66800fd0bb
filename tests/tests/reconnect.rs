//! A node killed with SIGKILL and started again at once is back in the gossip mesh.
//!
//! Its peers still hold their connections to the dead process (QUIC notices the death only at
//! its idle timeout), so the restarted node's first connection is, for each peer, a second
//! one. libp2p-gossipsub greets a peer (sends its subscriptions) only on the first connection:
//! without care the restarted node never learns that its peers subscribe, publishes to no one
//! and is heard only through anti-entropy. Real `meshward run` processes on 127.0.0.1.

use std::time::Duration;

use anyhow::Context as _;

use meshward_tests::{Daemon, cli, cluster, start_all, wait_for};

const CONVERGE: Duration = Duration::from_secs(90);
/// Gossip from the restarted node must reach its peers well before a stale QUIC connection
/// could time out on its own (the transport keeps quiet connections for an hour).
const BACK_IN_THE_MESH: Duration = Duration::from_secs(30);

fn transport(d: &Daemon, counter: &str) -> anyhow::Result<u64> {
    Ok(d.status()?["mesh"]["transport"][counter]
        .as_u64()
        .unwrap_or(0))
}

/// Kills the last daemon with SIGKILL, starts it again on the same address and waits until
/// it is connected to every other and one of its pushes left by gossip.
fn restart_and_gossip(daemons: &mut Vec<Daemon>) -> anyhow::Result<()> {
    let addr = |d: &Daemon| -> anyhow::Result<String> {
        Ok(d.listen_addr()?.context("not listening")?.to_string())
    };
    let (last, others) = daemons.split_last().context("no daemon")?;
    let peers = others
        .iter()
        .map(addr)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut args = vec!["--listen".to_string(), addr(last)?];
    for p in &peers {
        args.extend(["--peer".to_string(), p.clone()]);
    }
    let data = daemons.pop().context("no daemon")?.kill(libc::SIGKILL);
    daemons.push(Daemon::start_with(&data, &args)?);
    let node = daemons.last().context("no daemon")?;
    wait_for(CONVERGE, || {
        Ok(transport(node, "connected_peers")? == peers.len() as u64)
    })
    .context("the restarted node connects to every peer")?;
    // Each write is pushed by gossip. Write until a push leaves for a subscribed peer, within
    // a bound far below the connections' idle timeout.
    let mut writes = 0;
    wait_for(BACK_IN_THE_MESH, || {
        writes += 1;
        cli(
            &node.data,
            &[
                "event", "append", "--kind", "login", "--user", "back", "--target", "host",
            ],
        )?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(transport(node, "gossip_published")? > 0)
    })
    .with_context(|| {
        format!(
            "the restarted node's pushes found no subscribed peer in {writes} writes\n\
             its transport: {:?}\nnode 0: {:?}\n{}",
            node.status().map(|s| s["mesh"]["transport"].clone()),
            daemons[0].status().map(|s| s["mesh"]["transport"].clone()),
            node.log_tail(30)
        )
    })
}

#[test]
fn a_node_killed_and_restarted_at_once_gossips_to_its_peers_again() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3).unwrap();
    let mut daemons = start_all(&nodes);
    // Killed right after connecting: its peers' connections to it are young, so they take the
    // new one beside the dead one; the restarted node notices it was never greeted.
    restart_and_gossip(&mut daemons).unwrap();
    // Killed after its connections aged: its peers close the old ones at the new one.
    std::thread::sleep(Duration::from_secs(3));
    let resets: u64 = daemons[..2]
        .iter()
        .map(|d| transport(d, "reconnect_resets").unwrap())
        .sum();
    restart_and_gossip(&mut daemons).unwrap();
    let after: u64 = daemons[..2]
        .iter()
        .map(|d| transport(d, "reconnect_resets").unwrap())
        .sum();
    assert!(after > resets, "the peers reset: {resets} then {after}");
}
