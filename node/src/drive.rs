//! Driving a core: the one output executor the daemon and the simulator share, so the
//! simulator runs the production order of effects, not a copy of it.
//!
//! [`run`] feeds inputs to the [`Core`] and executes what it asks, in this order, pass after
//! pass until no follow-up input is left:
//! 1. every input queued is handled, and the outputs of all of them collected;
//! 2. every [`Output::Persist`] of the pass is written in ONE durable transaction
//!    ([`Store::persist_all`], a group commit), before anything else, except, when the
//!    driver pipelines ([`Driver::pipeline`]), the pushes of local commits
//!    ([`Output::Announce`]), sent just before that write so the network overlaps it
//!    ([`crate::tail`] says why that is safe and what the node does after a crash);
//! 3. the other outputs run in the order the core gave them: the store writes of the mastered
//!    chain ([`Output::PersistMastered`], [`Output::PersistVote`], [`Output::AdoptChain`],
//!    [`Output::Superseded`]) here, everything else (sends, answers, dials) by the
//!    [`Driver`]. Follow-up inputs the driver queues (a request the network could not take)
//!    make the next pass.
//!
//! So nothing is forwarded or answered, and nothing is announced unless pipelined, before what
//! it depends on is durable. When
//! a write fails, the outputs after it are handed to [`Driver::unsent`] (computed from state
//! that is not durable: none may be sent) and the error is returned.

use std::collections::VecDeque;

use anyhow::Context as _;
use meshward_crdt::Effects;

use crate::core::{Core, Input, Output};
use crate::store::Store;

/// The edge a core runs at: its clock, its store, and where its sends go.
pub trait Driver {
    /// The core, while the node runs (`None`: it stopped, e.g. a fault stopped it while its
    /// outputs ran; the rest is dropped).
    fn core(&mut self) -> Option<&mut Core>;
    /// The node's store.
    fn store(&self) -> &Store;
    /// The time to hand the core, unix ms.
    fn now_ms(&mut self) -> u64;
    /// Replicated rows were written durably.
    fn persisted(&mut self, effects: &[Effects]) -> anyhow::Result<()>;
    /// Before a store write of the mastered chain (`output` is one of those): the simulator's
    /// oracles look at what is about to be replaced.
    fn writing(&mut self, output: &Output) -> anyhow::Result<()> {
        let _ = output;
        Ok(())
    }
    /// A store write of the mastered chain (`output`) was durable.
    fn wrote(&mut self, output: &Output) -> anyhow::Result<()>;
    /// Executes an output that does not write the store: a send, an answer, a dial. A
    /// follow-up input goes to `inputs`.
    fn send(&mut self, output: Output, inputs: &mut VecDeque<Input>) -> anyhow::Result<()>;
    /// Outputs left unexecuted because a write before them failed.
    fn unsent(&mut self, outputs: Vec<Output>) {
        drop(outputs);
    }
    /// Whether local commits' pushes ([`Output::Announce`]) go out before their rows are
    /// durable. Only a driver that keeps [`crate::tail`]'s rule may say yes. Default: no,
    /// announces wait for the write like everything else, and reach [`Driver::send`] as
    /// [`Output::Publish`]; pipelined ones reach it as [`Output::Announce`], before
    /// [`Driver::persisted`].
    fn pipeline(&self) -> bool {
        false
    }
}

/// Calls `first` on the core, feeds it `inputs`, and executes the outputs as the module docs
/// say. Returns the first store error (the caller decides whether the node goes on).
pub fn run(
    driver: &mut impl Driver,
    first: impl FnOnce(&mut Core, u64),
    inputs: VecDeque<Input>,
) -> anyhow::Result<()> {
    let mut queue = inputs;
    let mut first = Some(first);
    while first.is_some() || !queue.is_empty() {
        let now = driver.now_ms();
        let pipeline = driver.pipeline();
        let Some(core) = driver.core() else {
            return Ok(());
        };
        if let Some(first) = first.take() {
            first(core, now);
        }
        while let Some(input) = queue.pop_front() {
            core.handle(now, input);
        }
        let mut persist = Vec::new();
        let mut early = Vec::new();
        let mut rest = Vec::new();
        for output in core.drain() {
            match output {
                Output::Persist(effects) => persist.push(effects),
                Output::Announce(push) if pipeline => early.push(Output::Announce(push)),
                Output::Announce(push) => rest.push(Output::Publish(push)),
                other => rest.push(other),
            }
        }
        let mut early = early.into_iter();
        while let Some(push) = early.next() {
            if let Err(e) = driver.send(push, &mut queue) {
                driver.unsent(early.chain(rest).collect());
                return Err(e);
            }
        }
        if !persist.is_empty() {
            if let Err(e) = driver.store().persist_all(&persist) {
                driver.unsent(rest);
                return Err(e).context("persisting replicated data");
            }
            driver.persisted(&persist)?;
        }
        let mut rest = rest.into_iter();
        while let Some(output) = rest.next() {
            if let Err(e) = execute(driver, output, &mut queue) {
                driver.unsent(rest.collect());
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One output after the pass's rows: a chain write here, the rest by the driver.
fn execute(
    driver: &mut impl Driver,
    output: Output,
    queue: &mut VecDeque<Input>,
) -> anyhow::Result<()> {
    let writes = matches!(
        output,
        Output::PersistMastered(_)
            | Output::PersistVote { .. }
            | Output::AdoptChain { .. }
            | Output::Superseded(_)
    );
    if !writes {
        return driver.send(output, queue);
    }
    driver.writing(&output)?;
    let store = driver.store();
    match &output {
        Output::PersistMastered(record) => store
            .append_mastered(record)
            .context("persisting a mastered record")?,
        Output::PersistVote { epoch, candidate } => store
            .set_vote(*epoch, candidate)
            .context("persisting an endorsement")?,
        Output::AdoptChain {
            from,
            records,
            superseded,
        } => store
            .replace_mastered(*from, records, superseded)
            .context("replacing the mastered chain")?,
        Output::Superseded(records) => store
            .add_superseded(records)
            .context("keeping superseded records")?,
        _ => {}
    }
    driver.wrote(&output)
}
