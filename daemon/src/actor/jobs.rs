//! API requests in the actor: the caller is authorized against the verified users view, then
//! the request runs on the live node ([`meshward_node::ops::execute`]), or, when it waits for other
//! nodes (failover, hand-over, leaving, a delegated password change), goes to the core and is
//! answered when the core is done. Every HA operation and its outcome is appended to the HA
//! command log.

use base64::Engine as _;
use meshward_api::cluster::Written;
use meshward_api::node::HaDone;
use meshward_api::{Problem, ProblemKind, Reply, Request};
use meshward_crdt::WriterId;
use tokio::sync::oneshot;

use super::Node;
use super::backend::DaemonBackend;
use crate::api::{ApiJob, Caller, Job};
use meshward_node::core::{Input, Secret};
use meshward_node::ops::{self, failure};

/// Where an answer goes: an API caller, or a follower that forwarded the request.
#[derive(Debug)]
pub(super) enum Sink {
    /// A caller of this node's API.
    Client(oneshot::Sender<Result<Reply, Problem>>),
    /// A follower's forwarded request ([`super::forward`]): answered through the core.
    Peer {
        /// The core's channel of the request.
        channel: u64,
        /// The follower's last mastered version.
        have: u64,
    },
}

/// A caller waiting for the core ([`meshward_node::core::Output::Done`] or
/// [`meshward_node::core::Output::Forwarded`]).
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) sink: Sink,
    pub(super) request: Request,
    /// Who asked ([`Caller::who`]), for the HA command log.
    pub(super) who: String,
}

impl Node {
    /// Decides and runs one API request.
    pub(super) fn api_job(&mut self, job: ApiJob) {
        let ApiJob { caller, job, reply } = job;
        self.run_job(caller, job, Sink::Client(reply));
    }

    /// Authorizes and runs `job` for `caller`; `sink` gets the answer, now or once the core is
    /// done. A write only the leader makes is forwarded to it when this node does not lead.
    pub(super) fn run_job(&mut self, caller: Caller, job: Job, sink: Sink) {
        if let Err(problem) = self.authorize(&caller, &job) {
            return self.answer(sink, Err(problem));
        }
        let request = match job {
            Job::CheckUser => return self.answer(sink, Ok(Reply::Empty)),
            Job::Backup(source) => {
                let result = self.backup_source().map(|s| {
                    let _ = source.send(s);
                    Reply::Empty
                });
                return self.answer(sink, result);
            }
            Job::Run(request) => request,
            Job::Watch(w) => {
                let result = self.watch_step(caller, w);
                return self.answer(sink, result);
            }
        };
        // A forwarded request is not forwarded again: if leadership moved meanwhile, the
        // operation refuses with the new leader's name.
        if ops::leader_only(&request) && !self.leads() && matches!(sink, Sink::Client(_)) {
            // The leader may not hold the superseded record to adopt: send ours along.
            let mut request = request;
            if let Request::Adopt(a) = &mut request
                && a.record_base64.is_none()
            {
                match ops::superseded::held(&mut DaemonBackend::local(self), &a.hash) {
                    Ok(record) => {
                        a.record_base64 =
                            Some(base64::engine::general_purpose::STANDARD.encode(record.encode()));
                    }
                    Err(problem) => return self.answer(sink, Err(problem)),
                }
            }
            return self.forward(&caller, request, sink);
        }
        if !ops::deferred(&request) {
            let caller = caller.who();
            let result = ops::execute(&mut DaemonBackend { node: self, caller }, request);
            // Before the answer: a bundle just created is let through at once.
            if let Err(e) = self.refresh_gate() {
                tracing::warn!(error = %format!("{e:#}"), "the setup endpoint's gate keeps its last state");
            }
            return self.answer(sink, result);
        }
        self.next_token += 1;
        let token = self.next_token;
        let who = caller.who();
        match self.deferred_input(token, &request) {
            // Not an HA operation: nothing for the HA command log.
            Err(problem) if matches!(request, Request::VerifyAuditAgainstMesh) => {
                self.answer(sink, Err(problem));
            }
            Err(problem) => {
                let waiter = Waiter { sink, request, who };
                self.finish(waiter, Err(problem.detail.clone()));
            }
            Ok(input) => {
                self.waiters.insert(token, Waiter { sink, request, who });
                if let Err(e) = self.feed(input) {
                    tracing::warn!(error = %e, "an API request failed");
                }
            }
        }
    }

    /// Sends an answer where it goes.
    pub(super) fn answer(&mut self, sink: Sink, result: Result<Reply, Problem>) {
        match sink {
            Sink::Client(reply) => {
                let _ = reply.send(result);
            }
            Sink::Peer { channel, have } => self.serve_answer(channel, have, result),
        }
    }

    /// Whether `caller` may do `job`: the local socket's caller is root; a certificate must
    /// not be revoked (401), must name a user, and that user's grants must allow the request
    /// (403). Operations of the local socket only are refused to every certificate, after
    /// it was authenticated.
    fn authorize(&mut self, caller: &Caller, job: &Job) -> Result<(), Problem> {
        if !matches!(caller, Caller::Cert(_)) {
            return Ok(());
        }
        let mut local_only = false;
        let needs = match job {
            Job::CheckUser => vec![None],
            Job::Backup(_) => vec![Some(meshward_node::grants::Action::Backup)],
            Job::Run(request) => {
                let need = ops::access::required(request);
                local_only = need.is_none();
                vec![need]
            }
            Job::Watch(w) => w.tables.required().into_iter().map(Some).collect(),
        };
        self.check_caller(caller, &needs)?;
        if local_only {
            return Err(Problem::new(
                ProblemKind::Forbidden,
                "this operation is served on the node's local socket only",
            ));
        }
        Ok(())
    }

    /// Whether `caller` holds every one of `needs` (`None`: only that it is a user).
    pub(super) fn check_caller(
        &mut self,
        caller: &Caller,
        needs: &[Option<meshward_node::grants::Action>],
    ) -> Result<(), Problem> {
        let Caller::Cert(cert) = caller else {
            return Ok(());
        };
        let access = self.admin_access().map_err(failure)?;
        for need in needs {
            crate::admin::check(access, cert.as_ref(), need.as_ref()).map_err(
                |(status, detail)| {
                    let kind = if status == 401 {
                        ProblemKind::Unauthenticated
                    } else {
                        ProblemKind::Forbidden
                    };
                    Problem::new(kind, detail)
                },
            )?;
        }
        Ok(())
    }

    /// What a backup is written from: the store's database and the node's MEK.
    fn backup_source(&mut self) -> Result<crate::api::BackupSource, Problem> {
        let mek = meshward_node::authority::load_mek(&self.data)
            .map_err(|e| Problem::new(ProblemKind::Unavailable, format!("{e:#}")))?;
        let cluster = self
            .store
            .identity()
            .map_err(|e| failure(e.into()))?
            .cluster
            .0;
        Ok(crate::api::BackupSource {
            db: self.store.shared_db().map_err(|e| failure(e.into()))?,
            mek,
            cluster,
        })
    }

    /// The core input of a request that waits for other nodes.
    fn deferred_input(&mut self, token: u64, request: &Request) -> Result<Input, Problem> {
        let chain = || {
            self.core.chain().ok_or_else(|| {
                Problem::new(
                    ProblemKind::Unavailable,
                    "this node is not part of a cluster; run `meshward init` or `meshward join` first",
                )
            })
        };
        let member = |name: &str, field: &str| -> Result<WriterId, Problem> {
            let chain = self.core.chain().ok_or_else(|| {
                Problem::new(
                    ProblemKind::Unavailable,
                    "this node is not part of a cluster",
                )
            })?;
            meshward_node::ha::resolve_member(chain, name)
                .map(WriterId)
                .map_err(|e| Problem::bad_input(field, format!("{e:#}")))
        };
        Ok(match request {
            Request::Failover(f) => Input::Failover {
                token,
                force: f.force,
            },
            Request::Demote(d) => Input::Handover {
                token,
                next: member(&d.to, "to")?,
            },
            Request::Failback => {
                let primary = self
                    .store
                    .anchor()
                    .map_err(|e| failure(e.into()))?
                    .map(|a| a.genesis_leader);
                let next = meshward_node::ha::failback_target(chain()?, primary)
                    .map_err(|e| Problem::new(ProblemKind::Conflict, format!("{e:#}")))?;
                Input::Handover {
                    token,
                    next: WriterId(next),
                }
            }
            Request::MakeStandalone(m) => Input::Leave {
                token,
                node: m.node.as_deref().map(|n| member(n, "node")).transpose()?,
            },
            Request::VerifyAuditAgainstMesh => {
                chain().map_err(|_| super::audit_heads::no_cluster())?;
                Input::AuditHeads { token }
            }
            Request::ChangePassword { user, body } => Input::Password {
                token,
                user: user.clone(),
                password: Secret(body.password.clone()),
            },
            _ => {
                return Err(Problem::new(
                    ProblemKind::Internal,
                    "not an operation that waits for other nodes",
                ));
            }
        })
    }

    /// Answers a waiting client and logs an HA operation.
    pub(super) fn finish(&mut self, waiter: Waiter, result: Result<u64, String>) {
        let epoch = self.core.chain().map_or(0, |c| c.epoch());
        let leader = self
            .core
            .chain()
            .map(meshward_crdt::mastered::Chain::leader_address)
            .unwrap_or_default();
        let command = waiter.request.describe();
        let is_ha = !matches!(waiter.request, Request::ChangePassword { .. });
        let logged = result
            .as_ref()
            .map(|version| {
                format!("done at mastered version {version}; epoch {epoch}, leader {leader}")
            })
            .map_err(Clone::clone);
        let node = self
            .core
            .chain()
            .and_then(|c| {
                let me = self.core.me().0;
                c.roster()
                    .members
                    .iter()
                    .find(|m| m.key == me)
                    .map(|m| m.address.clone())
            })
            .unwrap_or_else(|| self.core.me().to_hex());
        meshward_node::ha::log(
            &self.data,
            &meshward_node::ha::LogEntry {
                node: &node,
                who: &waiter.who,
                command: &command,
            },
            logged.as_deref().map_err(Clone::clone),
        );
        if let (Request::MakeStandalone(m), Ok(_)) = (&waiter.request, &result)
            && m.node.is_none()
        {
            self.leaving = Some(node.clone());
        }
        let answer = match result {
            Ok(version) if is_ha => Ok(Reply::HaDone(HaDone {
                version,
                epoch,
                leader,
            })),
            Ok(version) => Ok(Reply::Written(Written { version })),
            Err(detail) => Err(core_problem(detail)),
        };
        self.answer(waiter.sink, answer);
    }

    /// Answers every waiting client with `error` (the node recovered from a refused write).
    pub(super) fn fail_waiters(&mut self, error: &str) {
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            self.finish(waiter, Err(error.to_string()));
        }
        for (_, waiter) in std::mem::take(&mut self.forwards) {
            let problem = Problem::new(ProblemKind::Unavailable, error);
            self.answer(waiter.sink, Err(problem));
        }
    }

    /// Answers the client waiting for `token`; `false` if none waits.
    pub(super) fn done(&mut self, token: u64, result: Result<u64, String>) -> bool {
        match self.waiters.remove(&token) {
            Some(waiter) => {
                self.finish(waiter, result);
                true
            }
            None => false,
        }
    }
}

/// The problem of a core's refusal: 503 when other nodes could not be reached, 409 when the
/// cluster's state refused it, 400 when the input was wrong.
fn core_problem(detail: String) -> Problem {
    let unreachable = [
        "not connected",
        "did not answer",
        "minority",
        "disk",
        "not part of a cluster",
    ];
    let kind = if unreachable.iter().any(|w| detail.contains(w)) {
        ProblemKind::Unavailable
    } else if detail.starts_with("bad user name") || detail.contains("longer than") {
        ProblemKind::BadInput
    } else {
        ProblemKind::Conflict
    };
    Problem::new(kind, detail)
}
