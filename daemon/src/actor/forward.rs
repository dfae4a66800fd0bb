//! Writes only the leader makes, sent to a follower: the follower's actor forwards them to the
//! leader through its core ([`meshward_node::core::Input::Forward`]) as an [`Envelope`] (the
//! request and who called), and answers its caller with the leader's [`Answer`]. The leader's
//! actor runs a forwarded request like its own API's, authorizing the named caller against its
//! own view of users, grants and revocations, and hands the answer back to its core
//! ([`meshward_node::core::Input::Served`]). Only [`ops::leader_only`] requests are forwarded
//! or served. With the leader unreachable the caller gets 503 naming the leader and why.

use std::collections::VecDeque;

use meshward_api::{Problem, ProblemKind, Reply, Request};
use meshward_node::core::{Input, Opaque};
use meshward_node::ops;
use serde::{Deserialize, Serialize};

use super::Node;
use super::jobs::{Sink, Waiter};
use crate::api::{Caller, ClientCert, Job};

/// Forwarded requests the leader holds before running them; beyond, it answers busy.
const MAX_SERVE_QUEUE: usize = 256;

/// What a follower forwards: the request and who called it.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    caller: Forwarder,
    request: Request,
}

/// The caller of a forwarded request, as the follower authenticated it.
#[derive(Debug, Serialize, Deserialize)]
enum Forwarder {
    /// The follower's local operator (root).
    Local,
    /// An HTTPS client certificate's CN and serial (hex).
    Cert { cn: Option<String>, serial: String },
}

/// The leader's answer: the reply's JSON, or a problem.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Reply(serde_json::Value),
    Problem(Problem),
}

/// A forwarded request waiting to run on the leader.
#[derive(Debug)]
pub(super) struct Serve {
    channel: u64,
    have: u64,
    envelope: Opaque,
}

/// Forwarded requests the leader runs after the current step, and their answers for the core.
#[derive(Debug, Default)]
pub(super) struct ServeQueue {
    todo: VecDeque<Serve>,
    answers: Vec<Input>,
}

impl Node {
    /// Whether this node leads its cluster's current epoch.
    pub(super) fn leads(&self) -> bool {
        self.core
            .chain()
            .is_some_and(|c| c.leader() == self.core.me().0)
    }

    /// Forwards `request` from `caller` to the leader; `sink` gets the answer.
    pub(super) fn forward(&mut self, caller: &Caller, request: Request, sink: Sink) {
        let who = caller.who();
        let caller = match caller {
            Caller::Local => Forwarder::Local,
            Caller::Cert(Some(cert)) => Forwarder::Cert {
                cn: cert.cn.clone(),
                serial: cert.serial.to_string(),
            },
            // Authorization refused these before.
            Caller::Cert(None) => {
                let problem = Problem::new(ProblemKind::Unauthenticated, "no usable certificate");
                return self.answer(sink, Err(problem));
            }
        };
        let envelope = Envelope { caller, request };
        let bytes = match serde_json::to_vec(&envelope) {
            Ok(bytes) => bytes,
            Err(e) => {
                let problem = Problem::new(ProblemKind::Internal, e.to_string());
                return self.answer(sink, Err(problem));
            }
        };
        self.next_token += 1;
        let token = self.next_token;
        self.forwards.insert(
            token,
            Waiter {
                sink,
                request: envelope.request,
                who,
            },
        );
        if let Err(e) = self.feed(Input::Forward {
            token,
            envelope: Opaque(bytes),
        }) {
            tracing::warn!(error = %e, "a forwarded request failed");
        }
    }

    /// The leader's answer for `token` (or why there is none): to the waiting caller.
    pub(super) fn forwarded(&mut self, token: u64, result: Result<Opaque, String>) {
        let Some(waiter) = self.forwards.remove(&token) else {
            return;
        };
        let answer = match result {
            Ok(bytes) => match serde_json::from_slice::<Answer>(&bytes.0) {
                Ok(Answer::Reply(value)) => serde_json::to_vec(&value)
                    .ok()
                    .and_then(|body| waiter.request.reply_from(&body).ok())
                    .ok_or_else(|| {
                        Problem::new(ProblemKind::Internal, "the leader's answer does not parse")
                    }),
                Ok(Answer::Problem(problem)) => Err(problem),
                Err(_) => Err(Problem::new(
                    ProblemKind::Internal,
                    "the leader's answer does not parse; is it running another meshward version?",
                )),
            },
            Err(why) => {
                let leader = self
                    .core
                    .chain()
                    .map(meshward_crdt::mastered::Chain::leader_address)
                    .unwrap_or_default();
                Err(Problem::new(ProblemKind::Unavailable, why).with_leader(leader))
            }
        };
        self.answer(waiter.sink, answer);
    }

    /// As the leader: queues a forwarded request to run after the current step (a full
    /// queue answers busy at once, through `inputs`).
    pub(super) fn queue_serve(
        &mut self,
        channel: u64,
        have: u64,
        envelope: Opaque,
        inputs: &mut VecDeque<Input>,
    ) {
        if self.serving.todo.len() >= MAX_SERVE_QUEUE {
            let answer = encode(Err(Problem::new(
                ProblemKind::Unavailable,
                "the leader is busy with forwarded requests; try again",
            )));
            inputs.push_back(Input::Served {
                channel,
                have,
                answer,
            });
            return;
        }
        self.serving.todo.push_back(Serve {
            channel,
            have,
            envelope,
        });
    }

    /// Runs the forwarded requests queued during the last step, then gives the core every
    /// answer ready (also those of forwarded hand-overs the core just finished). Called by the
    /// actor's loop between steps, never while the core's outputs run.
    pub(super) fn run_served(&mut self) -> anyhow::Result<()> {
        while let Some(Serve {
            channel,
            have,
            envelope,
        }) = self.serving.todo.pop_front()
        {
            let sink = Sink::Peer { channel, have };
            let envelope = match serde_json::from_slice::<Envelope>(&envelope.0) {
                Ok(envelope) => envelope,
                Err(e) => {
                    let problem = Problem::bad_input("request", format!("forwarded: {e}"));
                    self.answer(sink, Err(problem));
                    continue;
                }
            };
            if !ops::leader_only(&envelope.request) {
                let problem = Problem::new(
                    ProblemKind::Forbidden,
                    "only writes the leader makes are forwarded to it",
                );
                self.answer(sink, Err(problem));
                continue;
            }
            let caller = match envelope.caller {
                Forwarder::Local => Caller::Local,
                Forwarder::Cert { cn, serial } => match serial.parse() {
                    Ok(serial) => Caller::Cert(Some(ClientCert { cn, serial })),
                    Err(_) => Caller::Cert(None),
                },
            };
            self.run_job(caller, Job::Run(envelope.request), sink);
        }
        let answers = std::mem::take(&mut self.serving.answers);
        if answers.is_empty() {
            return Ok(());
        }
        self.feed_batch(answers)
    }

    /// Queues a forwarded request's answer for the core, which replies to the follower (fed
    /// by [`Node::run_served`]).
    pub(super) fn serve_answer(&mut self, channel: u64, have: u64, answer: Result<Reply, Problem>) {
        self.serving.answers.push(Input::Served {
            channel,
            have,
            answer: encode(answer),
        });
    }
}

/// The [`Answer`] of a result, encoded.
fn encode(result: Result<Reply, Problem>) -> Opaque {
    let answer = match result {
        Ok(reply) => Answer::Reply(serde_json::to_value(reply).unwrap_or_default()),
        Err(problem) => Answer::Problem(problem),
    };
    Opaque(serde_json::to_vec(&answer).unwrap_or_default())
}
