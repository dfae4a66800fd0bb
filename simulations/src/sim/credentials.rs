//! Credential rotations in the simulator: the `rotate` fault writes a rotation row on a node
//! the way `meshward credential rotate` does (the next HLC past what the node holds, what it
//! has seen of the account, its own old rotations past the retention deleted), and the oracle
//! "no credential rotation lost" checks the end state.
//!
//! The simulator runs no MEK: a rotation's `sealed` bytes are a label naming the rotation, so
//! runs stay reproducible; sealing is tested in the node crate.
//!
//! The oracle: every rotation acknowledged (durable on its node) by a node that did not lose
//! its disk (a restore from an old snapshot) is held by every live node at the end, unless
//! its writer deleted it under the retention (a later [`RETAIN_PER_WRITER`] of its own
//! rotations of the account are held); and every live node names the same current rotation
//! of every account.

use std::collections::BTreeMap;

use meshward_crdt::rotation::{self, Hlc, RETAIN_PER_WRITER, Rotation, RotationKind};
use meshward_crdt::{Row, SegmentKey, TableId, WriterId};
use meshward_node::credentials::Draft;

use super::Sim;
use crate::frontier::Frontiers;

/// A rotation a node acknowledged.
#[derive(Clone, Debug)]
pub(super) struct Acked {
    /// Its node.
    node: u32,
    /// Its writer.
    writer: WriterId,
    /// The account.
    address: String,
    /// Its version.
    hlc: Hlc,
    /// The writer's rotations segment's change count once it was committed: a rotation of a
    /// node removed later is owed only within the frontier its removal fixed.
    seq: u64,
}

/// What the oracle found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RotationCheck {
    /// Rotations acknowledged.
    pub acknowledged: u64,
    /// Acknowledged rotations some live node lacks (each counted once per node).
    pub lost: u64,
    /// Accounts whose live nodes name different current rotations.
    pub current_differs: u64,
    /// Accounts in conflict on the first live node at the end.
    pub conflicts: u64,
}

impl Sim {
    /// The `rotate` fault: a rotation of `address` on `node`, if it is up.
    pub(super) fn rotate(&mut self, node: u32, address: &str) -> anyhow::Result<()> {
        let Some(core) = self.nodes[node as usize].core.as_ref() else {
            return Ok(());
        };
        let me = core.replica().writer();
        let now = self.clock_ms(node) as i64;
        let held = rotations(core.replica().rows(TableId::Rotations)?);
        let draft = Draft::new(held, address, &me, now);
        let hlc = draft.hlc;
        let row = Rotation {
            address: address.to_string(),
            hlc,
            seen: draft.seen.clone(),
            sealed: format!("sim secret of node {node} at {hlc}").into_bytes(),
            at_ms: now,
            reason: "simulated rotation".into(),
            user: "sim".into(),
            how: RotationKind::Generated,
        };
        self.fired("rotate");
        if self.commit_local(node, draft.ops(row), now)? {
            let seq = self.nodes[node as usize]
                .held
                .get(&rotations_segment(me))
                .copied()
                .unwrap_or(0);
            self.rotations.push(Acked {
                node,
                writer: me,
                address: address.to_string(),
                hlc,
                seq,
            });
        }
        Ok(())
    }

    /// A restore from a snapshot loses what the node wrote since: its rotations are no
    /// longer owed.
    pub(super) fn forget_rotations_of(&mut self, node: u32) {
        self.rotations.retain(|r| r.node != node);
    }

    /// The oracle (module docs), over the live nodes. A rotation a removed node made beyond
    /// the frontier its removal fixed is refused by design and not owed.
    pub(super) fn check_rotations(
        &self,
        live: &[usize],
        frontiers: &Frontiers,
    ) -> anyhow::Result<RotationCheck> {
        let owed: Vec<&Acked> = self
            .rotations
            .iter()
            .filter(|r| frontiers.counts(&rotations_segment(r.writer), r.seq))
            .collect();
        let mut out = RotationCheck {
            acknowledged: owed.len() as u64,
            ..RotationCheck::default()
        };
        let mut currents: BTreeMap<String, Vec<Option<(WriterId, Hlc)>>> = BTreeMap::new();
        for (k, &i) in live.iter().enumerate() {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            let accounts = rotation::accounts(rotations(core.replica().rows(TableId::Rotations)?));
            for r in &owed {
                let account = accounts.get(&r.address);
                let held = account.is_some_and(|a| {
                    a.rotations
                        .iter()
                        .any(|(w, x)| *w == r.writer && x.hlc == r.hlc)
                });
                let newer = account.map_or(0, |a| {
                    a.rotations
                        .iter()
                        .filter(|(w, x)| *w == r.writer && x.hlc > r.hlc)
                        .count()
                });
                if !held && newer < RETAIN_PER_WRITER {
                    out.lost += 1;
                }
            }
            for (address, a) in &accounts {
                currents
                    .entry(address.clone())
                    .or_default()
                    .push(a.current().map(|(w, x)| (*w, x.hlc)));
                if k == 0 && a.in_conflict() {
                    out.conflicts += 1;
                }
            }
        }
        out.current_differs = currents
            .values()
            .filter(|c| c.len() != live.len() || c.windows(2).any(|w| w[0] != w[1]))
            .count() as u64;
        Ok(out)
    }
}

/// The one segment of `writer`'s rotations (a map table).
fn rotations_segment(writer: WriterId) -> SegmentKey {
    SegmentKey {
        table: TableId::Rotations,
        writer,
        segment: 0,
    }
}

fn rotations(rows: Vec<(SegmentKey, Row)>) -> Vec<(WriterId, Rotation)> {
    rows.into_iter()
        .filter_map(|(k, row)| match row {
            Row::Rotation(r) => Some((k.writer, r)),
            _ => None,
        })
        .collect()
}
