//! The node as the shared executor's [`Driver`]: its clock, its store, and the transport
//! and API callers its sends and answers go to. The order of effects is the executor's
//! ([`meshward_node::drive`]), the same the simulator runs.

use std::collections::VecDeque;

use meshward_crdt::Effects;
use meshward_node::core::{Core, Input, Output, Verdict};
use meshward_node::drive::Driver;
use meshward_node::ops::now_ms;
use meshward_node::store::Store;
use meshward_node::tail::Tail;
use tracing::{debug, info};

use super::{Node, now_us};

impl Driver for Node {
    fn core(&mut self) -> Option<&mut Core> {
        Some(&mut self.core)
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn now_ms(&mut self) -> u64 {
        now_ms() as u64
    }

    fn persisted(&mut self, _: &[Effects]) -> anyhow::Result<()> {
        self.wrote();
        Ok(())
    }

    /// Announces go out before their rows are durable while the tail is open and the disk
    /// was not found full ([`meshward_node::tail`]).
    fn pipeline(&self) -> bool {
        self.tail == Tail::Open && !self.disk.full && !no_pipeline()
    }

    fn wrote(&mut self, _: &Output) -> anyhow::Result<()> {
        Node::wrote(self);
        Ok(())
    }

    fn send(&mut self, output: Output, queue: &mut VecDeque<Input>) -> anyhow::Result<()> {
        match output {
            Output::Forwarded { token, result } => self.forwarded(token, result),
            Output::AuditHeads { token, answers } => self.audit_heads_answered(token, answers),
            Output::Serve {
                channel,
                have,
                envelope,
            } => self.queue_serve(channel, have, envelope, queue),
            Output::Done { token, result } => {
                if !self.done(token, result.clone()) {
                    self.done = Some((token, result));
                }
            }
            Output::Roster(roster) => {
                info!(members = roster.len(), "roster changed");
                self.handle.set_roster(roster)?;
            }
            Output::Announce(data) => {
                // (sent by the executor only when pipelined, before the pass's write)
                self.unwritten = true;
                if let Err(e) = self.handle.publish(data) {
                    debug!(error = %e, "gossip publish dropped");
                }
                #[cfg(feature = "fault-injection")]
                announce_delay();
            }
            Output::Publish(data) => {
                if let Err(e) = self.handle.publish(data) {
                    debug!(error = %e, "gossip publish dropped");
                }
            }
            Output::Validate { id, verdict } => {
                if let Some(message) = self.gossip.remove(&id) {
                    let verdict = match verdict {
                        Verdict::Accept => meshward_transport::Verdict::Accept,
                        Verdict::Ignore => meshward_transport::Verdict::Ignore,
                        Verdict::Reject => meshward_transport::Verdict::Reject,
                    };
                    let _ = self.handle.report(message, verdict);
                }
            }
            Output::Request {
                peer,
                request,
                data,
            } => match self.handle.request(peer, data) {
                Ok(id) => self.requests.insert(id, (peer, request)),
                Err(e) => {
                    debug!(peer = %peer, error = %e, "sync request not sent");
                    queue.push_back(Input::SyncFailed { peer, request });
                }
            },
            Output::Respond { channel, data } => {
                if let Some(ch) = self.channels.remove(&channel) {
                    let _ = self.handle.respond(ch, data);
                }
            }
            Output::Dial { peer, addr } => {
                debug!(peer = %peer, %addr, "dialling");
                let _ = self.handle.dial(addr);
            }
            Output::Committed { token, result } => self.committed = Some((token, result)),
            Output::Applied { sent_us, .. } => self.lag.record(now_us().saturating_sub(sent_us)),
            // The executor writes these itself.
            Output::Persist(_)
            | Output::PersistMastered(_)
            | Output::PersistVote { .. }
            | Output::AdoptChain { .. }
            | Output::Superseded(_) => {}
        }
        Ok(())
    }

    /// Outputs left unexecuted because a write before them failed. They were computed from
    /// state that is not durable, so none is sent; only gossip still gets a verdict, so it
    /// does not wait for one: what would have been accepted is ignored (not forwarded, no
    /// penalty), what was invalid stays rejected.
    fn unsent(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            if let Output::Validate { id, verdict } = output
                && let Some(message) = self.gossip.remove(&id)
            {
                let verdict = match verdict {
                    Verdict::Reject => meshward_transport::Verdict::Reject,
                    Verdict::Accept | Verdict::Ignore => meshward_transport::Verdict::Ignore,
                };
                let _ = self.handle.report(message, verdict);
            }
        }
    }
}

/// Fault injection for the kill -9 test: `MESHWARD_FAULT_ANNOUNCE_DELAY_MS` holds the actor
/// that long after a pipelined announce, before the write, so a kill lands between the two.
#[cfg(feature = "fault-injection")]
fn announce_delay() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("MESHWARD_FAULT_ANNOUNCE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
}

/// Fault injection for the benchmarks' comparison: `MESHWARD_FAULT_NO_PIPELINE` makes
/// announces wait for their write, as before pipelining.
fn no_pipeline() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OFF.get_or_init(|| std::env::var_os("MESHWARD_FAULT_NO_PIPELINE").is_some())
    }
    #[cfg(not(feature = "fault-injection"))]
    false
}
