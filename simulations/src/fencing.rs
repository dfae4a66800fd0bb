//! Fencing, model-checked: every interleaving of the HA rules for a few nodes, explored
//! exhaustively (breadth first) within bounds.
//!
//! # What is explored
//! `n` nodes share a genesis roster of all of them, signed by node 0 (the leader of epoch 1).
//! Each node holds a mastered chain (its tip), its durable vote, and at most one election it
//! runs. From every state, every enabled action is taken:
//!
//! - **write:** the leader of a node's chain signs a config record (at most
//!   [`Bounds::writes_per_epoch`] per epoch and branch);
//! - **failover:** a node that may stand ([`election::may_fail_over`], the leader counted as
//!   gone) and whose vote allows it ([`election::vote_allows`]) starts an election for itself;
//! - **demote:** the leader of its chain ([`election::may_hand_over`]) starts a planned
//!   hand-over to another member;
//! - **endorse:** a member answers a running election's request with
//!   [`election::decide_endorsement`] (the leader always counted as gone: the most permissive
//!   case); on a yes its vote moves and, once [`election::elected`] holds, the election's runner
//!   signs the hand-over record, which must pass [`Chain::verify`] on its current chain;
//! - **abandon:** an election times out (its votes stay);
//! - **sync:** a node is offered any chain that ever existed (a message delayed arbitrarily):
//!   it takes one that extends its own, ignores one its own extends, and otherwise keeps what
//!   [`fork::choose`] picks.
//!
//! Restarts are covered: chains and votes are durable, so a restart only drops an election,
//! which **abandon** does. Not covered: a node restored from an old copy of its store (it
//! forgets its vote, which breaks fencing by design; see [`Bounds::forgetful_voters`]), roster
//! changes, and forced failovers beyond a two-node pair.
//!
//! # What is checked
//! In every reachable state: **no epoch has two leaders** among the chains the nodes hold
//! (each verified), and no two hand-over records that exist anywhere elect different leaders
//! for one epoch. On every chain a node gives up for another: **no majority-endorsed
//! hand-over is superseded** ([`oracle::rolled_back`]). The first violation stops the search
//! and comes with the shortest trace that reaches it.
//!
//! **Known finding** ([`SAME_CANDIDACY`]): the leader hands over to node 1 with a majority
//! but its record does not get out (it crashes, or is cut off); node 1, which endorsed that
//! hand-over, later fails over with another majority at the same chain position and leads.
//! Both records elect node 1 for the same epoch, so no epoch has two leaders; but when the
//! two meet, [`fork::choose`] keeps the one more members endorsed, and node 1's branch, with
//! whatever node 1 wrote as leader, is superseded although it was majority-endorsed. The
//! checker counts these adoptions and shows the shortest trace instead of stopping; any other
//! superseded majority hand-over is a violation. (A fix belongs in the fork choice: between two
//! exits of one candidacy, prefer the one its next leader built on.)
//!
//! The real functions run, on real signed records: records are interned (ed25519 signatures
//! are deterministic, so one record reached by two paths is one record), and the outcome of
//! verifying a record on its parent and of choosing between two chains is computed once per
//! pair.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use ed25519_dalek::SigningKey;
use meshward_crdt::fork::{self, Keep};
use meshward_crdt::mastered::{
    Candidacy, Chain, Endorsement, Handover, Member, RecordKind, Roster, SignedRecord, TrustAnchor,
};
use meshward_crdt::{ClusterId, WriterId};
use meshward_node::core::election::{self, EndorseRequest};
use serde::Serialize;

use crate::oracle;

mod world;
use world::*;

/// How far the search goes.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Nodes (2..=6).
    pub nodes: usize,
    /// No election for an epoch above this.
    pub max_epoch: u64,
    /// Config records a leader writes per epoch on one branch.
    pub writes_per_epoch: u8,
    /// Stop after this many states (the report says the search was cut).
    pub max_states: usize,
    /// A deliberately broken rule, for the test that shows a violation is found: a member
    /// forgets its vote right after giving it (as a node restored from an old copy of its
    /// store would).
    pub forgetful_voters: bool,
}

impl Bounds {
    /// `nodes` nodes, elections up to `max_epoch`, one write per epoch and branch.
    pub fn new(nodes: usize, max_epoch: u64) -> Bounds {
        Bounds {
            nodes,
            max_epoch,
            writes_per_epoch: 1,
            max_states: 20_000_000,
            forgetful_voters: false,
        }
    }
}

/// The known finding of this checker (see the module docs): two hand-overs of one candidacy
/// (the same next leader, epoch and chain position; a planned hand-over its leader signed but
/// could not publish, and the next leader's own failover) both gather a majority, and the fork
/// choice prefers the one more members endorsed, superseding what the new leader wrote on the
/// other.
pub const SAME_CANDIDACY: &str = "same-candidacy";

/// What a search found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Distinct states reached.
    pub states: usize,
    /// Actions taken (edges explored).
    pub transitions: u64,
    /// Length of the longest shortest path to a state.
    pub depth: usize,
    /// Distinct signed records made.
    pub records: usize,
    /// Elections won (hand-over records signed), by epoch.
    pub elected_by_epoch: BTreeMap<u64, u64>,
    /// Distinct (chain, chain) pairs compared by the fork choice.
    pub fork_choices: usize,
    /// Of those, the ones where the node gave up its own branch.
    pub adoptions: usize,
    /// Of those, the ones that proved a double signature.
    pub equivocations: usize,
    /// Whether `max_states` cut the search short.
    pub cut: bool,
    /// Wall-clock time of the search, ms.
    pub wall_ms: u64,
    /// The first violation, with the trace that reaches it.
    pub violation: Option<Violation>,
    /// Known findings (not violations): how often each was reached, and the shortest trace
    /// to it.
    pub findings: BTreeMap<&'static str, (u64, Vec<String>)>,
}

/// A property that failed, and how.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// What failed.
    pub property: String,
    /// The actions from the initial state, in order.
    pub trace: Vec<String>,
}

/// Explores every state within `bounds`.
pub fn check(bounds: &Bounds) -> Report {
    let started = Instant::now();
    let mut world = World::new(bounds);
    let mut report = Report::default();
    let init = world.initial();
    let mut seen: FxMap<State, u32> = FxMap::default();
    // Per state index: (parent, action, depth).
    let mut how: Vec<(u32, Action, u16)> = vec![(u32::MAX, Action::Abandon(0), 0)];
    let mut order: Vec<State> = vec![init.clone()];
    seen.insert(init, 0);
    let mut queue = VecDeque::from([0u32]);
    while let Some(at) = queue.pop_front() {
        let state = order[at as usize].clone();
        let depth = how[at as usize].2;
        for action in world.actions(&state) {
            report.transitions += 1;
            let next = match world.step(&state, action) {
                Step::Same => continue,
                Step::Next(next) => next,
                Step::Violates(property) => {
                    let trace = trace_to(&world, &how, at, action);
                    report.violation = Some(Violation { property, trace });
                    return world.finish(report, seen.len(), started);
                }
            };
            if let Some(finding) = world.finding.take() {
                let entry = report
                    .findings
                    .entry(finding)
                    .or_insert_with(|| (0, trace_to(&world, &how, at, action)));
                entry.0 += 1;
            }
            if seen.contains_key(&next) {
                continue;
            }
            if seen.len() >= bounds.max_states {
                report.cut = true;
                continue;
            }
            let index = order.len() as u32;
            seen.insert(next.clone(), index);
            order.push(next);
            how.push((at, action, depth + 1));
            report.depth = report.depth.max(depth as usize + 1);
            queue.push_back(index);
        }
    }
    world.finish(report, seen.len(), started)
}

/// A `HashMap` with a fast, non-cryptographic hash (the keys are our own states).
type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// The Fx hash (as rustc's): one multiply per word.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The tip a node keeps after a sync (and the known finding it shows, if any), or a
/// violation.
type Chosen = Result<(Rec, Option<&'static str>), String>;

/// The actions from the initial state to state `at`, then `last`.
fn trace_to(world: &World, how: &[(u32, Action, u16)], at: u32, last: Action) -> Vec<String> {
    let mut trace = vec![world.describe(last)];
    let mut k = at;
    while k != 0 {
        trace.push(world.describe(how[k as usize].1));
        k = how[k as usize].0;
    }
    trace.reverse();
    trace
}

/// A record id (index into [`World::records`]).
type Rec = u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_are_checked_to_the_end_without_a_violation() {
        let report = check(&Bounds::new(2, 3));
        assert!(report.violation.is_none(), "{:#?}", report.violation);
        assert!(!report.cut);
        assert!(report.states > 100, "{report:?}");
        assert!(report.findings.is_empty(), "{report:?}");
    }
}
