//! Measurements of a run, the JSON summary, and the SVG plots.
//!
//! A **message** is one local commit (one automerge change of one segment). A node is
//! **reached** by it when the change is durable in its store, whether a gossip push or a sync
//! answer brought it; hops count gossip relays (1 = straight from the origin).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use crate::plot::Plot;
use crate::time::Micros;

/// A node reached by a message.
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    /// The node.
    pub node: u32,
    /// When (virtual µs).
    pub at: Micros,
    /// Gossip hops, or `None` when a sync answer brought it.
    pub hops: Option<u32>,
}

/// One message.
#[derive(Clone, Debug)]
pub struct Message {
    /// The node that committed it.
    pub origin: u32,
    /// When.
    pub at: Micros,
    /// Every other node it reached, in time order.
    pub reached: Vec<Reach>,
}

/// A failover the scenario asked for: `ha failover` on one node, retried until it leads.
#[derive(Clone, Debug, Default)]
pub struct Failover {
    /// The candidate.
    pub node: u32,
    /// When the scenario asked for it.
    pub asked_at: Micros,
    /// Interval between attempts.
    pub retry: Micros,
    /// The candidate's epoch when asked.
    pub from_epoch: u64,
    /// When the leader of that epoch crashed, if it was down when asked.
    pub leader_down_at: Option<Micros>,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts refused.
    pub refusals: u32,
    /// The last refusals (at most [`KEPT_REFUSALS`]): when, and why.
    pub last_refusals: VecDeque<(Micros, String)>,
    /// When the candidate's hand-over record was signed and applied (it leads from then).
    pub elected_at: Option<Micros>,
    /// The epoch it leads.
    pub epoch: Option<u64>,
    /// When every live node first held that epoch's hand-over.
    pub all_follow_at: Option<Micros>,
    /// Why it stopped without being elected.
    pub gave_up: Option<String>,
}

/// Refusals kept per failover.
pub const KEPT_REFUSALS: usize = 10;

impl Failover {
    /// Counts a refused attempt, keeping the last few reasons.
    pub fn refuse(&mut self, at: Micros, why: String) {
        self.refusals += 1;
        if self.last_refusals.len() == KEPT_REFUSALS {
            self.last_refusals.pop_front();
        }
        self.last_refusals.push_back((at, why));
    }

    /// The report's JSON for this failover.
    pub fn summary(&self) -> serde_json::Value {
        let ms = |t: Option<Micros>| t.map(|t| t / 1000);
        let since = |from: Option<Micros>, to: Option<Micros>| Some((to? - from?) / 1000);
        json!({
            "node": self.node,
            "asked_at_ms": self.asked_at / 1000,
            "retry_ms": self.retry / 1000,
            "attempts": self.attempts,
            "refusals": self.refusals,
            "last_refusals": self.last_refusals.iter().map(|(at, why)| json!({"at_ms": at / 1000, "why": why})).collect::<Vec<_>>(),
            "leader_down_at_ms": ms(self.leader_down_at),
            "elected_at_ms": ms(self.elected_at),
            "epoch": self.epoch,
            "elected_after_asked_ms": since(Some(self.asked_at), self.elected_at),
            "elected_after_leader_down_ms": since(self.leader_down_at, self.elected_at),
            "all_live_follow_after_leader_down_ms": since(self.leader_down_at, self.all_follow_at),
            "gave_up": self.gave_up,
        })
    }
}

/// What the oracles found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Oracles {
    /// Distinct replica digests among live nodes at the end (1 = converged).
    pub distinct_digests: u64,
    /// Event rows every live node holds at the end.
    pub event_rows: u64,
    /// Commits of live nodes that some live node lacks at the end.
    pub commits_missing_on_live_nodes: u64,
    /// Commits held only by nodes that are down at the end (durable in their stores).
    pub commits_only_on_down_nodes: u64,
    /// Chains a node gave up although a majority-endorsed hand-over left an epoch on them.
    pub rollbacks: u64,
    /// Acknowledged writes (changes, mastered records, votes) a node's store lost.
    pub acknowledged_lost: u64,
    /// Nodes whose store served rows that differ from its replica's (corrupt data).
    pub corrupt_stores: u64,
    /// Revocations some node gave up with a losing branch that a live node's chain does not
    /// carry at the end, summed over live nodes (a failure when the chain's leader is live:
    /// the winning leader signs them again).
    pub revocations_undone: u64,
    /// Rows of a removed writer beyond the frontier its removal fixed that a node took from a
    /// peer although its chain held the removal (a failure each).
    pub rows_beyond_frontier: u64,
    /// Rows of removed writers beyond their frontiers that the live nodes refused (the
    /// cores' `beyond_frontier` counters, summed).
    pub refused_beyond_frontier: u64,
    /// Credential rotations acknowledged (durable on their node) by nodes that kept their
    /// disk.
    pub rotations_acknowledged: u64,
    /// Acknowledged rotations a live node lacks at the end (and its writer's retention did
    /// not delete), summed over live nodes: a failure.
    pub rotations_lost: u64,
    /// Accounts whose current rotation differs between live nodes at the end: a failure.
    pub rotation_currents_differ: u64,
    /// Accounts in conflict at the end (concurrent rotations no later one settled).
    pub credential_conflicts: u64,
    /// Times a live node replaced its mastered chain by a competing one that won.
    pub chain_switches: u64,
    /// Double signatures live nodes proved when chains met (the core's counter).
    pub equivocations: u64,
    /// Leader epochs seen in the nodes' verified mastered chains.
    pub epochs_seen: u64,
    /// The leaders (node indices) of each epoch, over every node's verified chain: one per
    /// epoch, or the oracle fails.
    pub leaders_by_epoch: BTreeMap<u64, Vec<u32>>,
    /// How many nodes' chains end in each epoch (down nodes included).
    pub nodes_by_last_epoch: BTreeMap<u64, u64>,
    /// Everything that failed; empty on success.
    pub failures: Vec<String>,
}

/// What the disk faults did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiskCounts {
    /// Power losses (nodes).
    pub power_losses: u64,
    /// Unsynced writes a power loss dropped or tore.
    pub writes_torn_or_lost: u64,
    /// Store writes refused for a full disk (each one rebuilt the node and held replication).
    pub full_refusals: u64,
    /// Holds on replication released (the disk had space again, or the hold ran out).
    pub holds_released: u64,
    /// Nodes that stopped because their store failed: when (ms), which, and why.
    pub store_stops: Vec<(u64, u32, String)>,
    /// Restarts checked for acknowledged writes and for rows that match the replica.
    pub stores_checked: u64,
}

/// A `master` or `demote` fault: what was asked, and the core's answer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LeaderOp {
    /// `master` or `demote`.
    pub kind: String,
    /// The node it ran on.
    pub node: u32,
    /// When it was asked.
    pub at: Micros,
    /// The mastered version written, or why not (None: no answer, e.g. the node crashed).
    pub result: Option<Result<u64, String>>,
}

/// Everything measured during a run.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Messages in commit order.
    pub messages: Vec<Message>,
    /// Bytes sent per node (gossip, sync requests and answers; payload only).
    pub bytes_sent: Vec<u64>,
    /// Bytes received per node.
    pub bytes_received: Vec<u64>,
    /// Events processed.
    pub events: u64,
    /// Wall-clock run time, ms (not part of the deterministic trace).
    pub wall_ms: u64,
    /// Virtual time at the end.
    pub end_us: Micros,
    /// Commits made.
    pub writes: u64,
    /// Writes scheduled on a node that was down.
    pub writes_skipped: u64,
    /// Writes a node's store refused (a disk fault): not acknowledged.
    pub writes_refused: u64,
    /// Disk faults and what they did.
    pub disk: DiskCounts,
    /// Pushes published.
    pub pushes: u64,
    /// Adverts published.
    pub adverts: u64,
    /// Push copies received again after the first (dropped by the seen-cache).
    pub push_duplicates: u64,
    /// Advert copies received again.
    pub advert_duplicates: u64,
    /// Mean gossip mesh size of the live nodes at the end.
    pub mesh_mean: f64,
    /// IDONTWANT control messages sent.
    pub idontwant_sent: u64,
    /// Copies not sent because the peer had said IDONTWANT.
    pub idontwant_spared: u64,
    /// Publishes dropped because the same bytes were published within the seen TTL.
    pub publish_duplicates: u64,
    /// Publishes refused because the node had no peer to send to.
    pub publish_no_peers: u64,
    /// Pushes the core ignored (a gap).
    pub gossip_ignored: u64,
    /// Adverts (and mastered records) taken but not relayed: a follower's adverts go to its
    /// neighbours only.
    pub not_relayed: u64,
    /// Gossip messages the core rejected.
    pub gossip_rejected: u64,
    /// Sync requests sent.
    pub sync_requests: u64,
    /// Gossip messages lost by the network model.
    pub lost: u64,
    /// Messages on a reliable stream that needed a retransmission.
    pub retransmitted: u64,
    /// Gossip messages the network delivered twice.
    pub network_duplicated: u64,
    /// Messages delayed to reorder them.
    pub reordered: u64,
    /// Messages that waited on a cut link.
    pub held_by_cut: u64,
    /// Messages dropped because their connection closed.
    pub dropped_closed: u64,
    /// Connections set up.
    pub connections: u64,
    /// Connections closed (idle timeout on a cut link or a dead peer).
    pub disconnects: u64,
    /// Dials that could not reach their peer.
    pub dials_failed: u64,
    /// Faults asked for, by kind.
    pub faults_requested: BTreeMap<String, u64>,
    /// Faults fired, by kind (crash and restart count nodes; flap counts finished series,
    /// flap-cut and flap-heal each step).
    pub faults_fired: BTreeMap<String, u64>,
    /// (time, share of live nodes holding everything any live node holds).
    pub convergence: Vec<(Micros, f64)>,
    /// When the live nodes last became converged (None while they are not).
    pub converged_at: Option<Micros>,
    /// Heal times (partition heal, end of each flap cut).
    pub heals: Vec<Micros>,
    /// (heal or restart time, time until every live node held what the live nodes held at
    /// that time), at the 100 ms resolution of the convergence sample.
    pub heal_convergence: Vec<(Micros, Micros)>,
    /// Live nodes at the end.
    pub live_nodes: u64,
    /// Failovers asked for, in order.
    pub failovers: Vec<Failover>,
    /// Mastered writes and planned hand-overs asked for (`master`, `demote` faults), in order.
    pub leader_ops: Vec<LeaderOp>,
    /// Oracle results.
    pub oracles: Oracles,
    /// Errors from inside the run.
    pub errors: Vec<String>,
}

impl Metrics {
    /// Metrics for `n` nodes.
    pub fn new(n: usize) -> Metrics {
        Metrics {
            bytes_sent: vec![0; n],
            bytes_received: vec![0; n],
            ..Metrics::default()
        }
    }

    /// Registers a commit; returns its index.
    pub fn new_message(&mut self, origin: u32, at: Micros) -> usize {
        self.messages.push(Message {
            origin,
            at,
            reached: Vec::new(),
        });
        self.messages.len() - 1
    }

    /// Records that a message reached a node.
    pub fn reached(&mut self, m: usize, r: Reach) {
        self.messages[m].reached.push(r);
    }

    /// The JSON summary.
    pub fn summary(
        &self,
        scenario: &str,
        mode: &str,
        seed: u64,
        nodes: usize,
        replay: &str,
    ) -> serde_json::Value {
        let live = self.live_nodes.max(1) as usize;
        let mut t99 = Vec::new();
        let mut t999 = Vec::new();
        let mut t100 = Vec::new();
        let mut hops: BTreeMap<u32, u64> = BTreeMap::new();
        // Commit to durable at each node a gossip push reached (what the daemon's lag
        // metric measures), in µs.
        let mut push_lag: Vec<Micros> = Vec::new();
        let mut via_sync = 0u64;
        let mut delivered = 0u64;
        for m in &self.messages {
            // The origin holds it at once.
            let mut times: Vec<Micros> = vec![0];
            times.extend(m.reached.iter().map(|r| r.at - m.at));
            delivered += times.len().min(live) as u64;
            for r in &m.reached {
                match r.hops {
                    Some(h) => {
                        *hops.entry(h).or_default() += 1;
                        push_lag.push(r.at - m.at);
                    }
                    None => via_sync += 1,
                }
            }
            let at = |f: f64| {
                let k = ((f * live as f64).ceil() as usize).max(1);
                times.get(k - 1).copied()
            };
            t99.push(at(0.99));
            t999.push(at(0.999));
            t100.push(at(1.0));
        }
        let by_gossip: u64 = hops.values().sum();
        let reached_total = by_gossip + via_sync;
        let mean_hops = if by_gossip == 0 {
            0.0
        } else {
            hops.iter().map(|(h, c)| *h as f64 * *c as f64).sum::<f64>() / by_gossip as f64
        };
        let n_msgs = self.messages.len().max(1) as f64;
        let bytes: Vec<u64> = self
            .bytes_sent
            .iter()
            .zip(&self.bytes_received)
            .map(|(s, r)| s + r)
            .collect();
        let secs = self.end_us.max(1) as f64 / 1e6;
        json!({
            "scenario": scenario,
            "mode": mode,
            "seed": seed,
            "nodes": nodes,
            "live_nodes_at_end": self.live_nodes,
            "replay": replay,
            "passed": self.oracles.failures.is_empty(),
            "virtual_seconds": secs,
            "wall_ms": self.wall_ms,
            "events": self.events,
            "messages": {
                "count": self.messages.len(),
                "delivery_percent": 100.0 * delivered as f64 / (n_msgs * live as f64),
                "reached_by_gossip_percent": if reached_total == 0 { 100.0 } else { 100.0 * by_gossip as f64 / reached_total as f64 },
                // Copies of a push a node received beyond its first, per node per commit.
                "push_duplicates_per_node_per_message": self.push_duplicates as f64 / n_msgs / live as f64,
                "hops_mean": mean_hops,
                "hops_max": hops.keys().next_back(),
                "hops_histogram": hops,
                "time_to_99_percent_ms": stats_ms(&t99),
                "time_to_99_9_percent_ms": stats_ms(&t999),
                "time_to_100_percent_ms": stats_ms(&t100),
                "push_lag_ms": percentiles_ms(push_lag),
            },
            "convergence": {
                "after_heals_ms": self.heal_convergence.iter().map(|(at, d)| json!({"at_ms": at / 1000, "took_ms": d / 1000})).collect::<Vec<_>>(),
                "converged_at_ms": self.converged_at.map(|t| t / 1000),
            },
            "bytes_per_node": {
                "mean": bytes.iter().sum::<u64>() as f64 / bytes.len().max(1) as f64,
                "max": bytes.iter().max(),
                "mean_per_second": bytes.iter().sum::<u64>() as f64 / bytes.len().max(1) as f64 / secs,
            },
            "gossip": {
                "pushes": self.pushes,
                "adverts": self.adverts,
                "push_duplicates": self.push_duplicates,
                "advert_duplicates": self.advert_duplicates,
                "mesh_mean": self.mesh_mean,
                "idontwant_sent": self.idontwant_sent,
                "spared_by_idontwant": self.idontwant_spared,
                "publish_duplicates_dropped": self.publish_duplicates,
                "publish_without_peers": self.publish_no_peers,
                "ignored": self.gossip_ignored,
                "not_relayed": self.not_relayed,
                "rejected": self.gossip_rejected,
            },
            "sync_requests": self.sync_requests,
            "writes": { "committed": self.writes, "skipped_on_down_nodes": self.writes_skipped, "refused_by_store": self.writes_refused },
            "disk": self.disk,
            "network": {
                "lost": self.lost, "retransmitted": self.retransmitted,
                "duplicated": self.network_duplicated, "reordered": self.reordered,
                "held_by_cut": self.held_by_cut, "dropped_on_closed_connection": self.dropped_closed,
                "connections": self.connections, "disconnects": self.disconnects,
                "dials_failed": self.dials_failed,
            },
            "faults": { "requested": self.faults_requested, "fired": self.faults_fired },
            "failovers": self.failovers.iter().map(Failover::summary).collect::<Vec<_>>(),
            "leader_ops": self.leader_ops,
            "oracles": self.oracles,
        })
    }

    /// Writes `summary.json` and the plots into `dir`.
    pub fn write(&self, dir: &Path, summary: &serde_json::Value) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut text = serde_json::to_string_pretty(summary)?;
        text.push('\n');
        std::fs::write(dir.join("summary.json"), text)?;
        let plots = [
            ("reach.svg", self.reach_svg()),
            ("convergence.svg", self.convergence_svg()),
            ("lag.svg", self.lag_svg()),
        ];
        for (name, svg) in &plots {
            std::fs::write(dir.join(name), svg)?;
        }
        std::fs::write(dir.join("index.html"), crate::html::page(summary, &plots))?;
        Ok(())
    }

    /// Nodes reached over time since commit, one line per message (at most 50).
    fn reach_svg(&self) -> String {
        let live = self.live_nodes.max(1) as f64;
        let step = self.messages.len().div_ceil(50).max(1);
        let series: Vec<Vec<(f64, f64)>> = self
            .messages
            .iter()
            .step_by(step)
            .map(|m| {
                // At most ~200 points per line, always the last.
                let every = m.reached.len().div_ceil(200).max(1);
                let mut pts = vec![(0.0, 1.0 / live)];
                for (k, r) in m.reached.iter().enumerate() {
                    if k % every == 0 || k + 1 == m.reached.len() {
                        pts.push(((r.at - m.at) as f64 / 1000.0, (k + 2) as f64 / live));
                    }
                }
                pts
            })
            .collect();
        let shown = series.len();
        Plot {
            title: "nodes reached after a commit",
            x_label: "ms since the commit",
            y_label: "share of live nodes holding it",
            y_max: Some(1.0),
            marks: Vec::new(),
            legend: vec![format!(
                "one line per commit ({shown} of {} shown)",
                self.messages.len()
            )],
            marks_label: "",
            one_color: true,
        }
        .svg(&series)
    }

    /// Share of converged live nodes over the run, heals marked.
    fn convergence_svg(&self) -> String {
        let pts: Vec<(f64, f64)> = self
            .convergence
            .iter()
            .map(|(t, f)| (*t as f64 / 1e6, *f))
            .collect();
        Plot {
            title: "live nodes holding everything any live node holds",
            x_label: "virtual time (s)",
            y_label: "share of live nodes",
            y_max: Some(1.0),
            marks: self.heals.iter().map(|t| *t as f64 / 1e6).collect(),
            legend: vec!["converged share, every 100 ms".into()],
            marks_label: "heal (partition, flap or restart)",
            one_color: false,
        }
        .svg(&[pts])
    }

    /// Mean lag (commit → durable) per node, sorted.
    fn lag_svg(&self) -> String {
        let n = self.bytes_sent.len();
        let mut sum = vec![0f64; n];
        let mut count = vec![0u64; n];
        for m in &self.messages {
            for r in &m.reached {
                sum[r.node as usize] += (r.at - m.at) as f64 / 1000.0;
                count[r.node as usize] += 1;
            }
        }
        let mut lags: Vec<f64> = sum
            .iter()
            .zip(&count)
            .filter(|(_, c)| **c > 0)
            .map(|(s, c)| s / *c as f64)
            .collect();
        lags.sort_by(f64::total_cmp);
        let pts = lags
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64, *l))
            .collect();
        Plot {
            title: "mean replication lag per node (commit to durable), sorted",
            x_label: "nodes, by lag",
            y_label: "mean lag (ms)",
            y_max: None,
            marks: Vec::new(),
            legend: vec!["one point per node".into()],
            marks_label: "",
            one_color: false,
        }
        .svg(&[pts])
    }
}

/// The `p` quantile (0..=1) of sorted durations, in ms.
fn quantile_ms(sorted: &[Micros], p: f64) -> Option<f64> {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .map(|u| *u as f64 / 1000.0)
}

/// Count, p50, p99 and max of durations, in ms.
fn percentiles_ms(mut v: Vec<Micros>) -> serde_json::Value {
    v.sort_unstable();
    json!({
        "count": v.len(),
        "p50": quantile_ms(&v, 0.5),
        "p99": quantile_ms(&v, 0.99),
        "max": quantile_ms(&v, 1.0),
    })
}

fn stats_ms(v: &[Option<Micros>]) -> serde_json::Value {
    let mut sorted: Vec<u64> = v.iter().flatten().copied().collect();
    sorted.sort_unstable();
    json!({
        "messages_that_got_there": sorted.len(),
        "of": v.len(),
        "p50": quantile_ms(&sorted, 0.5),
        "max": quantile_ms(&sorted, 1.0),
    })
}
