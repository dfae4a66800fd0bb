//! Measurements during the run and the oracles at its end.

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::Context as _;
use meshward_crdt::{Head, SegmentKey, TableId, WriterId};

use super::{Sim, humantime_fmt};
use crate::frontier::Frontiers;
use crate::oracle;

impl Sim {
    /// Whether node `i` runs and is a member by its own chain: a node removed from the roster
    /// goes on running, but is no longer one of the live nodes that must converge.
    pub(super) fn counted(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.core.as_ref().is_some_and(|core| {
            core.chain()
                .is_none_or(|c| c.roster().contains(&self.ids[i].0))
        })
    }

    /// The removal oracle on a row `node` took from a peer: not beyond a removed writer's
    /// frontier that its chain holds ([`crate::frontier`]).
    pub(super) fn check_frontier(&mut self, node: u32, head: &Head) {
        self.refresh_frontiers(node);
        let Some((_, f)) = self.frontiers.get(&node) else {
            return;
        };
        if f.beyond(&head.key, head.seq, &head.hash) {
            let o = &mut self.metrics.oracles;
            o.rows_beyond_frontier += 1;
            o.failures.push(format!(
                "node {node} took change {} of {} beyond the frontier its removal fixed",
                head.seq, head.key
            ));
        }
    }

    /// Folds the frontiers of `node`'s chain again when the chain moved since last time.
    fn refresh_frontiers(&mut self, node: u32) {
        let n = &self.nodes[node as usize];
        let Some((last, version)) = n
            .core
            .as_ref()
            .and_then(|c| c.chain())
            .map(|c| (c.last_hash().0, c.last_version()))
        else {
            return;
        };
        if self.frontiers.get(&node).is_none_or(|(h, _)| *h != last) {
            // A store that does not read is reported by the other oracles.
            let Ok(records) = n.store.mastered_records() else {
                return;
            };
            // The chain applies a record before the store persists it (an output the driver
            // runs after): folded now, the frontiers would be one record late for good.
            if records.last().map(|r| r.record.version) != Some(version) {
                return;
            }
            self.frontiers.insert(node, (last, Frontiers::of(&records)));
        }
    }

    /// [`Sim::refresh_frontiers`] of every counted node: what a node holds counts by the
    /// frontiers its chain holds now, also when it took no row since its chain moved.
    fn refresh_all_frontiers(&mut self) {
        for i in 0..self.nodes.len() {
            if self.counted(i) {
                self.refresh_frontiers(i as u32);
            }
        }
    }

    /// Whether every live node's mastered chain ends in the same record. The run does not
    /// stop before they do (or `settle` runs out): the oracles on chains (revocations a merge
    /// must sign again) judge the chains the cluster agreed on, not one still on its way.
    pub(super) fn chains_agree(&self) -> bool {
        let mut lasts = (0..self.nodes.len())
            .filter(|&i| self.counted(i))
            .filter_map(|i| self.nodes[i].core.as_ref()?.chain().map(|c| c.last_hash()));
        let first = lasts.next();
        lasts.all(|h| Some(h) == first)
    }

    /// What every live node holds between them.
    pub(super) fn live_union(&self) -> BTreeMap<SegmentKey, u64> {
        let mut union: BTreeMap<SegmentKey, u64> = BTreeMap::new();
        for i in (0..self.nodes.len()).filter(|&i| self.counted(i)) {
            for (k, &s) in held_counted(&self.nodes[i].held, self.frontiers.get(&(i as u32))).iter()
            {
                let e = union.entry(*k).or_insert(0);
                *e = (*e).max(s);
            }
        }
        union
    }

    /// Starts timing a heal: done when every live node holds what the live nodes held now
    /// (well defined while writes go on).
    pub(super) fn await_convergence(&mut self) {
        self.refresh_all_frontiers();
        let target = self.live_union();
        self.awaiting_convergence.push((self.now, target));
    }

    /// Share of live nodes holding everything any live node holds; heals that completed.
    pub(super) fn sample(&mut self) {
        self.refresh_all_frontiers();
        let union = self.live_union();
        let counted: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.counted(i)).collect();
        let live = counted.len();
        let held: Vec<Cow<'_, BTreeMap<SegmentKey, u64>>> = counted
            .iter()
            .map(|&i| held_counted(&self.nodes[i].held, self.frontiers.get(&(i as u32))))
            .collect();
        let converged = held.iter().filter(|h| ***h == union).count();
        let frac = if live == 0 {
            1.0
        } else {
            converged as f64 / live as f64
        };
        self.metrics.convergence.push((self.now, frac));
        if converged == live {
            if self.metrics.converged_at.is_none() {
                self.metrics.converged_at = Some(self.now);
            }
        } else {
            self.metrics.converged_at = None;
        }
        let now = self.now;
        let done = &mut self.metrics.heal_convergence;
        self.awaiting_convergence.retain(|(since, target)| {
            let all = held
                .iter()
                .all(|h| target.iter().all(|(k, s)| h.get(k).is_some_and(|h| h >= s)));
            if all {
                done.push((*since, now - since));
            }
            !all
        });
    }

    /// The oracles: identical tables on every live node (real digests and rows), no
    /// committed event lost, at most one leader per epoch, every fault fired.
    pub(super) fn final_checks(&mut self) -> anyhow::Result<()> {
        // Nodes removed from the roster run on, but are not among the live nodes that must
        // converge (see `counted`).
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.counted(i)).collect();
        // A removed writer's commits beyond its frontier are refused by design.
        let frontiers = match live.first() {
            Some(&i) => Frontiers::of(&self.nodes[i].store.mastered_records()?),
            None => Frontiers::default(),
        };
        let o = &mut self.metrics.oracles;
        let mut digests = BTreeMap::new();
        let mut rows = BTreeMap::new();
        for &i in &live {
            let core = self.nodes[i].core.as_ref().context("live node")?;
            let d = core.replica().digest();
            let tracked: BTreeMap<SegmentKey, u64> =
                d.segments.iter().map(|s| (s.key, s.seq)).collect();
            if tracked != self.nodes[i].held {
                o.failures.push(format!(
                    "node {i}: the tracked heads differ from the replica's digest (simulator bug)"
                ));
            }
            o.chain_switches += core.counters().chain_switches;
            o.refused_beyond_frontier += core.counters().beyond_frontier;
            o.equivocations += core.counters().equivocations;
            // What it advertises: a removed writer's rows it holds beyond the frontier are
            // history (see `held_counted`).
            let advertised = core.replica().accepted_digest();
            *digests.entry(advertised.fingerprint()).or_insert(0u64) += 1;
            let r = core.replica().rows(TableId::Events)?.len() as u64;
            *rows.entry(r).or_insert(0u64) += 1;
        }
        o.distinct_digests = digests.len() as u64;
        // No node serves corrupt data: the rows its store serves are its replica's.
        for &i in &live {
            if let Some(corrupt) = self.corrupt(i as u32) {
                self.metrics.oracles.corrupt_stores += 1;
                self.metrics
                    .oracles
                    .failures
                    .push(format!("node {i} at the end: {corrupt}"));
            }
        }
        let o = &mut self.metrics.oracles;
        o.event_rows = rows.keys().next_back().copied().unwrap_or(0);
        if digests.len() > 1 {
            o.failures.push(format!(
                "live nodes did not converge: {} distinct digests, row counts {:?}",
                digests.len(),
                rows
            ));
        }
        // No event lost: every commit is held by every live node, unless its origin is down
        // (then it is in the origin's store and comes back with it).
        let mut lost = 0;
        let mut stranded = 0;
        let mut first_lost = None;
        for ((key, seq), &m) in &self.by_head {
            if !frontiers.counts(key, *seq) {
                continue;
            }
            let origin = self.metrics.messages[m].origin as usize;
            let missing = live
                .iter()
                .filter(|&&i| self.nodes[i].held.get(key).is_none_or(|s| s < seq))
                .count();
            if missing > 0 {
                if self.nodes[origin].core.is_some() {
                    lost += 1;
                    if first_lost.is_none() {
                        let on: Vec<usize> = live
                            .iter()
                            .copied()
                            .filter(|&i| self.nodes[i].held.get(key).is_none_or(|s| s < seq))
                            .collect();
                        first_lost = Some(format!(
                            "change {seq} of {key} by node {origin}, missing on nodes {on:?}"
                        ));
                    }
                } else {
                    stranded += 1;
                }
            }
        }
        let o = &mut self.metrics.oracles;
        o.commits_missing_on_live_nodes = lost;
        o.commits_only_on_down_nodes = stranded;
        if lost > 0 {
            o.failures.push(format!(
                "{lost} commits of live nodes are missing on live nodes (first: {})",
                first_lost.unwrap_or_default()
            ));
        }
        // Never two leaders in one epoch, over every node's stored chain (a down node's
        // store is kept, so it counts too), replayed with the real verification.
        // One node's records at a time: a 1 000-node run holds 1 000 copies of its genesis.
        let mut unreadable = Vec::new();
        let chains = self.nodes.iter().enumerate().filter_map(|(i, n)| {
            let read = || -> anyhow::Result<_> {
                Ok(match n.store.anchor()? {
                    Some(anchor) => Some((i as u32, anchor, n.store.mastered_records()?)),
                    None => None,
                })
            };
            read().unwrap_or_else(|e| {
                unreadable.push(format!("node {i}: its mastered chain does not read: {e:#}"));
                None
            })
        });
        let (leaders, mut unverified) = oracle::leaders_per_epoch(chains);
        unverified.append(&mut unreadable);
        let mut last_epoch = BTreeMap::new();
        for (epoch, l) in &leaders {
            for node in l.values().flatten() {
                last_epoch.insert(*node, *epoch);
            }
        }
        let o = &mut self.metrics.oracles;
        o.epochs_seen = leaders.len() as u64;
        for epoch in last_epoch.into_values() {
            *o.nodes_by_last_epoch.entry(epoch).or_default() += 1;
        }
        o.leaders_by_epoch = leaders
            .iter()
            .map(|(epoch, l)| {
                let nodes = l
                    .keys()
                    .map(|k| self.index.get(&WriterId(*k)).copied().unwrap_or(u32::MAX))
                    .collect();
                (*epoch, nodes)
            })
            .collect();
        o.failures.extend(unverified);
        o.failures.extend(oracle::two_leaders(&leaders));
        // Restrictive changes are never undone: every revocation a losing branch held is in
        // every live node's chain, once the cluster has a live leader to sign it again.
        for &i in &live {
            let node = &self.nodes[i];
            let Some(chain) = node.core.as_ref().and_then(|c| c.chain()) else {
                continue;
            };
            let leader_live = self
                .index
                .get(&WriterId(chain.leader()))
                .is_some_and(|&l| self.nodes[l as usize].core.is_some());
            let missing = oracle::revocations_missing(
                &self.superseded_revocations,
                &node.store.mastered_records()?,
            );
            let o = &mut self.metrics.oracles;
            o.revocations_undone += missing;
            if missing > 0 && leader_live {
                o.failures.push(format!(
                    "node {i}: {missing} revocations of a losing branch are not in its chain: \
                     access a merge gave back"
                ));
            }
        }
        // No credential rotation lost, and one current secret everywhere.
        let r = self.check_rotations(&live, &frontiers)?;
        let o = &mut self.metrics.oracles;
        o.rotations_acknowledged = r.acknowledged;
        o.rotations_lost = r.lost;
        o.rotation_currents_differ = r.current_differs;
        o.credential_conflicts = r.conflicts;
        if r.lost > 0 {
            o.failures.push(format!(
                "{} acknowledged credential rotations are missing on live nodes",
                r.lost
            ));
        }
        if r.current_differs > 0 {
            o.failures.push(format!(
                "{} credential accounts have different current secrets on live nodes",
                r.current_differs
            ));
        }
        // Every fault asked for fired.
        for (kind, &asked) in &self.metrics.faults_requested.clone() {
            if !self.require_fired {
                break;
            }
            let fired = self.metrics.faults_fired.get(kind).copied().unwrap_or(0);
            if fired < asked {
                self.metrics
                    .oracles
                    .failures
                    .push(format!("fault {kind}: asked for {asked}, fired {fired}"));
            }
        }
        if self.metrics.converged_at.is_none() {
            self.metrics.oracles.failures.push(format!(
                "the live nodes had not converged {} after the scenario's end",
                humantime_fmt(self.sc.settle)
            ));
        }
        self.metrics
            .oracles
            .failures
            .append(&mut self.metrics.errors);
        self.metrics.live_nodes = live.len() as u64;
        Ok(())
    }
}

/// What a node holds (`held`) that counts for convergence, by the frontiers its chain held
/// when last looked at: a removed writer's segment it took beyond the frontier before it learnt
/// of the removal counts at the frontier (the rest is history it does not advertise, as the
/// replica does).
fn held_counted<'a>(
    held: &'a BTreeMap<SegmentKey, u64>,
    frontiers: Option<&([u8; 32], Frontiers)>,
) -> Cow<'a, BTreeMap<SegmentKey, u64>> {
    match frontiers {
        Some((_, f)) if !f.is_empty() => Cow::Owned(
            held.iter()
                .map(|(k, &s)| (*k, f.clamp(k, s)))
                .filter(|(_, s)| *s > 0)
                .collect(),
        ),
        _ => Cow::Borrowed(held),
    }
}
