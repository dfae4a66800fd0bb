//! Shrinking a failing scenario: fewer faults, fewer writes, fewer nodes, a plainer network, a
//! shorter run; each step kept only if the same oracle still fails with the same seed.

use std::time::Duration;

use crate::scenario::{FaultKind, Latency, Nodes, Scenario};

/// The kind of oracle a failure message comes from: shrinking keeps a candidate only if it
/// fails the same way.
pub fn class(failure: &str) -> &'static str {
    const CLASSES: [(&str, &str); 12] = [
        ("store failed with no disk fault", "store-untrusted"),
        ("did not converge", "convergence"),
        ("had not converged", "convergence"),
        ("commits of live nodes are missing", "event-lost"),
        (" leaders: ", "two-leaders"),
        ("rolled back", "rollback"),
        ("lost acknowledged writes", "acknowledged-lost"),
        ("differ from its replica", "corrupt-data"),
        ("does not serve its events", "corrupt-data"),
        ("does not open after a power loss", "store-unrecoverable"),
        ("tracked heads differ", "durable-heads"),
        ("does not verify", "chain-verify"),
    ];
    CLASSES
        .iter()
        .find(|(needle, _)| failure.contains(needle))
        .map_or("other", |(_, class)| class)
}

/// Smaller variants of `sc`, most promising first; each one reads back from its TOML.
pub fn candidates(sc: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    // Fewer nodes: half, then one less.
    for k in [sc.nodes / 2, sc.nodes.saturating_sub(1)] {
        if k >= 1 && k < sc.nodes {
            out.push(with_nodes(sc, k));
        }
    }
    // Each fault dropped, the last first (later faults depend on earlier ones less often).
    for i in (0..sc.faults.len()).rev() {
        let mut c = sc.clone();
        c.faults.remove(i);
        out.push(c);
    }
    // Each write series dropped, or halved.
    for i in 0..sc.writes.len() {
        let mut c = sc.clone();
        c.writes.remove(i);
        out.push(c);
        if sc.writes[i].count > 1 {
            let mut c = sc.clone();
            c.writes[i].count = sc.writes[i].count.div_ceil(2);
            out.push(c);
        }
        if sc.writes[i].rows > 1 {
            let mut c = sc.clone();
            c.writes[i].rows = 1;
            out.push(c);
        }
    }
    // A plainer network.
    let net = &sc.network;
    if net.loss > 0.0 || net.duplicate > 0.0 || net.reorder > 0.0 || net.bandwidth.is_some() {
        let mut c = sc.clone();
        c.network.loss = 0.0;
        c.network.duplicate = 0.0;
        c.network.reorder = 0.0;
        c.network.bandwidth = None;
        out.push(c);
    }
    if net.latency != Latency::Fixed(Duration::from_millis(1)) || !net.sites.is_empty() {
        let mut c = sc.clone();
        c.network.latency = Latency::Fixed(Duration::from_millis(1));
        c.network.sites.clear();
        c.network.wans.clear();
        out.push(c);
    }
    if sc.topology.degree != 0 {
        let mut c = sc.clone();
        c.topology.degree = 0;
        out.push(c);
    }
    // Shorter: half the duration, dropping what falls after it.
    if sc.duration > Duration::from_secs(2) {
        out.push(shorter(sc, sc.duration / 2));
    }
    out.into_iter()
        .filter_map(|c| Scenario::parse(&c.to_toml().ok()?).ok())
        .collect()
}

/// `sc` cut to nodes `0..k`: node sets clipped, what names a node beyond dropped.
fn with_nodes(sc: &Scenario, k: usize) -> Scenario {
    let mut c = sc.clone();
    c.nodes = k;
    let clip = |nodes: &Nodes| -> Option<Nodes> {
        let kept: Vec<usize> = nodes
            .resolve(sc.nodes)
            .ok()?
            .into_iter()
            .filter(|&i| i < k)
            .collect();
        match nodes {
            Nodes::Named(s) if s == "all" => Some(nodes.clone()),
            _ if kept.is_empty() => None,
            _ => Some(Nodes::List(kept)),
        }
    };
    c.network.sites.retain_mut(|s| match clip(&s.nodes) {
        Some(n) => {
            s.nodes = n;
            true
        }
        None => false,
    });
    let sites: Vec<String> = c.network.sites.iter().map(|s| s.name.clone()).collect();
    c.network
        .wans
        .retain(|w| w.between.iter().all(|s| sites.contains(s)));
    c.writes.retain_mut(|w| match clip(&w.nodes) {
        Some(n) => {
            w.nodes = n;
            true
        }
        None => false,
    });
    c.faults.retain_mut(|f| match &mut f.kind {
        FaultKind::Partition { groups } => {
            *groups = groups.iter().filter_map(clip).collect();
            !groups.is_empty()
        }
        FaultKind::Heal {} => true,
        FaultKind::Flap { a, b, .. } => match (clip(a), clip(b)) {
            (Some(x), Some(y)) => {
                *a = x;
                *b = y;
                true
            }
            _ => false,
        },
        FaultKind::Failover { node, .. }
        | FaultKind::Master { node, .. }
        | FaultKind::Rotate { node, .. } => *node < k,
        FaultKind::Demote { node, to } => *node < k && *to < k,
        FaultKind::Remove { node, target } => *node < k && *target < k,
        other => match other.nodes_mut() {
            Some(nodes) => match clip(nodes) {
                Some(n) => {
                    *nodes = n;
                    true
                }
                None => false,
            },
            None => true,
        },
    });
    c
}

/// `sc` cut to `duration`: faults after it dropped, write series ending by it.
fn shorter(sc: &Scenario, duration: Duration) -> Scenario {
    let mut c = sc.clone();
    c.duration = duration;
    c.faults.retain(|f| f.at <= duration);
    c.writes.retain_mut(|w| {
        if w.at > duration {
            return false;
        }
        let fit = ((duration - w.at).as_micros() / w.every.as_micros().max(1)) as u64 + 1;
        w.count = w.count.min(fit);
        true
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farm::generate;

    #[test]
    fn every_candidate_is_a_valid_smaller_scenario() {
        for seed in 0..20 {
            let sc = generate(seed);
            for c in candidates(&sc) {
                assert!(c.nodes <= sc.nodes);
                assert!(c.faults.len() <= sc.faults.len());
                assert!(c.duration <= sc.duration);
                let smaller = c.nodes < sc.nodes
                    || c.faults.len() < sc.faults.len()
                    || c.writes.len() < sc.writes.len()
                    || c.to_toml().unwrap() != sc.to_toml().unwrap();
                assert!(smaller, "seed {seed}: a candidate equal to its scenario");
            }
        }
    }

    #[test]
    fn failures_are_classed_by_their_oracle() {
        assert_eq!(
            class("live nodes did not converge: 2 distinct digests"),
            "convergence"
        );
        assert_eq!(
            class("epoch 2 has 2 leaders: a (per nodes {1})"),
            "two-leaders"
        );
        assert_eq!(
            class("node 1 lost acknowledged writes after a power loss: x"),
            "acknowledged-lost"
        );
        assert_eq!(class("something new"), "other");
    }
}
