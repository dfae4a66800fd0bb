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
use meshward_crdt::mastered::{CHECKPOINT_EVERY, RecordKind, SignedRecord, Verified};

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
        let mut rest = rest.into_iter().peekable();
        while let Some(output) = rest.next() {
            let done = match output {
                Output::PersistMastered(first) => {
                    let mut records = vec![*first];
                    while let Some(Output::PersistMastered(_)) = rest.peek() {
                        if let Some(Output::PersistMastered(next)) = rest.next() {
                            records.push(*next);
                        }
                    }
                    persist_mastered(driver, records, &mut queue)
                }
                output => execute(driver, output, &mut queue),
            };
            if let Err(e) = done {
                driver.unsent(rest.collect());
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The token of the checkpoints the executor asks the leader's core for ([`Input::Master`]);
/// their [`Output::Done`] stays here. Drivers number their own tokens from 0.
pub const CHECKPOINT_TOKEN: u64 = u64::MAX;

/// Consecutive mastered records of a pass (a sync answer's, on a joining node), stored in
/// ONE durable transaction ([`Store::append_mastered_all`]); then, on the leader, the next
/// checkpoint if [`CHECKPOINT_EVERY`] records were written since the last one: the digest of
/// the folded state it just stored, signed by the core as the next record (one pass later,
/// nothing in between; should the chain have moved, the core refuses it and the next write
/// asks again).
fn persist_mastered(
    driver: &mut impl Driver,
    records: Vec<Verified<SignedRecord>>,
    queue: &mut VecDeque<Input>,
) -> anyhow::Result<()> {
    let outputs: Vec<Output> = records
        .into_iter()
        .map(|r| Output::PersistMastered(Box::new(r)))
        .collect();
    for output in &outputs {
        driver.writing(output)?;
    }
    let records: Vec<Verified<SignedRecord>> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::PersistMastered(r) => Some(*r),
            _ => None,
        })
        .collect();
    driver
        .store()
        .append_mastered_all(&records)
        .context("persisting mastered records")?;
    for record in records {
        driver.wrote(&Output::PersistMastered(Box::new(record)))?;
    }
    let store = driver.store();
    let Some(high) = store.mastered_high_water()? else {
        return Ok(());
    };
    if high.version - store.mastered_checkpoint_version()?.min(high.version) < CHECKPOINT_EVERY {
        return Ok(());
    }
    let Some(core) = driver.core() else {
        return Ok(());
    };
    let me = core.me().0;
    let Some(chain) = core
        .chain()
        .filter(|c| c.leader() == me && c.last_version() == high.version)
        .cloned()
    else {
        return Ok(());
    };
    let state = driver.store().state_digest()?;
    queue.push_back(Input::Master {
        token: CHECKPOINT_TOKEN,
        kind: RecordKind::Checkpoint,
        payload: chain.checkpoint(state).encode(),
    });
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
    if let Output::Done {
        token: CHECKPOINT_TOKEN,
        result,
    } = &output
    {
        if let Err(e) = result {
            tracing::debug!(error = %e, "checkpoint not written; the next write asks again");
        }
        return Ok(());
    }
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

#[cfg(test)]
mod tests;
