//! A simulated node as the shared executor's [`Driver`] ([`meshward_node::drive`]): the order
//! of its effects is the daemon's; its clock, disk and network are the simulator's, and the
//! oracles watch each chain write.

use std::collections::VecDeque;

use meshward_crdt::Effects;
use meshward_node::core::{Core, Input, Output};
use meshward_node::drive::Driver;
use meshward_node::store::Store;

use super::{Sim, Via};
use crate::oracle;

/// One node of `sim` while its outputs run.
pub(super) struct SimDriver<'a> {
    pub(super) sim: &'a mut Sim,
    pub(super) node: u32,
    pub(super) via: Via,
    /// Whether the node's chain moved (a record stored or a chain adopted): the caller then
    /// checks that every node still follows a leader it may.
    pub(super) chain_moved: bool,
}

impl Driver for SimDriver<'_> {
    fn core(&mut self) -> Option<&mut Core> {
        self.sim.nodes[self.node as usize].core.as_mut()
    }

    fn store(&self) -> &Store {
        &self.sim.nodes[self.node as usize].store
    }

    fn now_ms(&mut self) -> u64 {
        self.sim.clock_ms(self.node)
    }

    fn persisted(&mut self, effects: &[Effects]) -> anyhow::Result<()> {
        self.sim.wrote(self.node)?;
        for e in effects {
            self.sim.track(self.node, e, self.via);
        }
        Ok(())
    }

    /// A chain about to be replaced, or a losing branch kept: the oracles compare what it
    /// held with what wins, and note the revocations given up.
    fn writing(&mut self, output: &Output) -> anyhow::Result<()> {
        if let Output::Superseded(lost) = output {
            self.sim
                .superseded_revocations
                .extend(oracle::revocations(lost));
        }
        let Output::AdoptChain {
            from,
            records,
            superseded,
        } = output
        else {
            return Ok(());
        };
        // A replaced chain may be shorter: once this write starts, a power loss may leave
        // either chain, so only the shorter count is certain until it returns.
        let n = &mut self.sim.nodes[self.node as usize];
        n.acked.mastered = n.acked.mastered.min(*from as usize - 1 + records.len());
        self.sim
            .superseded_revocations
            .extend(oracle::revocations(superseded));
        let store = &self.sim.nodes[self.node as usize].store;
        if let Some(anchor) = store.anchor()? {
            let mut kept = store.mastered_records()?;
            kept.truncate(from.saturating_sub(1) as usize);
            if let Some(failure) = oracle::rolled_back(anchor, &kept, superseded) {
                self.sim.metrics.oracles.rollbacks += 1;
                let at = self.sim.now;
                self.sim
                    .metrics
                    .errors
                    .push(format!("node {} at {at} µs: {failure}", self.node));
            }
        }
        Ok(())
    }

    /// What the store acknowledged, for the acknowledged-write oracle.
    fn wrote(&mut self, output: &Output) -> anyhow::Result<()> {
        let n = &mut self.sim.nodes[self.node as usize];
        match output {
            Output::PersistMastered(_) => {
                n.acked.mastered += 1;
                self.chain_moved = true;
            }
            Output::PersistVote { epoch, candidate } => n.acked.vote = Some((*epoch, *candidate)),
            Output::AdoptChain { from, records, .. } => {
                n.acked.mastered = *from as usize - 1 + records.len();
                self.chain_moved = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn send(&mut self, output: Output, inputs: &mut VecDeque<Input>) -> anyhow::Result<()> {
        self.sim.execute(self.node, output, inputs)
    }
}
