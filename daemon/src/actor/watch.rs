//! Watch streams in the actor ([`crate::api::watch`]): their steps, and the live subscribers
//! the changes are published to.
//!
//! After every step of its loop the actor publishes what the change log gained
//! ([`Node::publish_watch`]): each change is rendered once and offered to every subscriber
//! that watches its table with `try_send` — O(subscribers) per change, never waiting. A
//! subscriber whose buffer is full is dropped (its stream sends `overflow`); one whose stream
//! is gone is dropped too. A subscriber is registered inside a `Follow` step, after the
//! changes up to the head were put in its buffer; as every write goes through the actor, the
//! switch has no gap and no duplicate. When a mastered record is published, the subscribers'
//! grants are checked again, and a subscriber no longer allowed is dropped (`closed`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use meshward_api::Problem;
use meshward_node::cluster_config::ClusterConfig;
use meshward_node::ops::failure;
use meshward_node::ops::watch::{self, Tables};
use meshward_node::store::{Change, HighWater, Page};
use tokio::sync::mpsc;
use tracing::warn;

use super::Node;
use crate::api::Caller;
use crate::api::watch::{Answer, CLOSED_OVERFLOW, CLOSED_REFUSED, Frame, PAGE, Step, WatchJob};

/// A live subscriber.
#[derive(Debug)]
struct Sub {
    caller: Caller,
    tables: Tables,
    /// The last cursor offered to it.
    after: u64,
    tx: mpsc::Sender<Frame>,
    closed: Arc<AtomicU8>,
}

/// The live subscribers, and the approvals fingerprints are shown with.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    subs: Vec<Sub>,
    /// Views lent to streams for their snapshots.
    lent: Vec<std::sync::Weak<std::sync::Mutex<Option<meshward_node::store::ChangeReader>>>>,
    config: Option<(Option<HighWater>, ClusterConfig)>,
}

impl Watchers {
    /// Takes back every lent view (before the store is reopened: a view holds the file).
    pub(super) fn take_views(&mut self) {
        for weak in self.lent.drain(..) {
            if let Some(lent) = weak.upgrade()
                && let Ok(mut view) = lent.lock()
            {
                *view = None;
            }
        }
    }
}

impl Node {
    /// One step of a stream (the caller is authorized already).
    pub(super) fn watch_step(
        &mut self,
        caller: Caller,
        job: WatchJob,
    ) -> Result<meshward_api::Reply, Problem> {
        let WatchJob {
            tables,
            step,
            answer,
        } = job;
        let reply = match step {
            Step::Begin => {
                let config = self.watch_config(true).map_err(failure)?;
                let reader = self.store.change_reader().map_err(|e| failure(e.into()))?;
                let marks = reader.marks().map_err(|e| failure(e.into()))?;
                let lent = Arc::new(std::sync::Mutex::new(Some(reader)));
                self.watchers.lent.retain(|w| w.strong_count() > 0);
                self.watchers.lent.push(Arc::downgrade(&lent));
                Answer::View(lent, Box::new(config), marks)
            }
            Step::Follow { after, buffer } => self.follow(caller, tables, after, buffer)?,
        };
        let _ = answer.send(reply);
        Ok(meshward_api::Reply::Empty)
    }

    fn follow(
        &mut self,
        caller: Caller,
        tables: Tables,
        after: u64,
        buffer: usize,
    ) -> Result<Answer, Problem> {
        let marks = self.store.change_marks().map_err(|e| failure(e.into()))?;
        let near = marks.last.saturating_sub(after) as usize <= buffer.min(PAGE);
        let changes = match self
            .store
            .changes_after(after, PAGE)
            .map_err(|e| failure(e.into()))?
        {
            Page::Compacted { first } => return Ok(Answer::Compacted(first)),
            Page::Changes(changes) => changes,
        };
        let end = changes.last().map_or(after, |(c, _)| *c);
        let frames = self.render(tables, &changes).map_err(failure)?;
        if !near {
            return Ok(Answer::Page(frames, end));
        }
        let (tx, rx) = mpsc::channel(buffer.max(1));
        for frame in frames {
            // Fits: at most `buffer` changes are rendered here.
            let _ = tx.try_send(frame);
        }
        let closed = Arc::new(AtomicU8::new(0));
        self.watchers.subs.push(Sub {
            caller,
            tables,
            after: end,
            tx,
            closed: closed.clone(),
        });
        Ok(Answer::Live(rx, closed))
    }

    /// The wanted changes of `changes`, rendered.
    fn render(&mut self, tables: Tables, changes: &[(u64, Change)]) -> anyhow::Result<Vec<Frame>> {
        let config = self.watch_config(holds_rotations(changes))?;
        let mut out = Vec::new();
        for (cursor, change) in changes {
            if tables.wants(change) {
                out.push((
                    *cursor,
                    watch::change_frame(*cursor, change, &config)?.into(),
                ));
            }
        }
        Ok(out)
    }

    /// The approvals view, rebuilt only when the stored chain moved, and the accounts in
    /// conflict when `rotations` (only rotation rows show them: other changes skip the read).
    fn watch_config(&mut self, rotations: bool) -> anyhow::Result<watch::RowView> {
        let key = self.store.mastered_high_water()?;
        let config = match &self.watchers.config {
            Some((k, config)) if *k == key => config.clone(),
            _ => {
                let config = ClusterConfig::from_records(&self.store.mastered_records()?);
                self.watchers.config = Some((key, config.clone()));
                config
            }
        };
        // Read fresh: rotations arrive without the chain moving.
        let conflicts = if rotations {
            meshward_node::ops::credentials::in_conflict(&self.store)
                .map_err(|p| anyhow::anyhow!(p.detail))?
                .into_iter()
                .map(|(address, _)| address)
                .collect()
        } else {
            Default::default()
        };
        Ok(watch::RowView { config, conflicts })
    }

    /// Offers what the change log gained to the live subscribers (see the module docs).
    pub(super) fn publish_watch(&mut self) {
        if self.watchers.subs.is_empty() {
            return;
        }
        if let Err(e) = self.try_publish() {
            // The streams end; their clients resume from their last cursor.
            warn!(error = %format!("{e:#}"), "watch streams closed: the change log could not be read");
            self.watchers.subs.clear();
        }
    }

    fn try_publish(&mut self) -> anyhow::Result<()> {
        let last = self.store.change_marks()?.last;
        let mut mastered = false;
        loop {
            let Some(from) = self.watchers.subs.iter().map(|s| s.after).min() else {
                return Ok(());
            };
            if from >= last {
                break;
            }
            let changes = match self.store.changes_after(from, PAGE)? {
                Page::Changes(c) if !c.is_empty() => c,
                // Dropped before it was published: only when retention is far below the
                // changes of one step; those streams end with `overflow` and resume (and get
                // `compacted`).
                _ => {
                    for sub in self.watchers.subs.drain(..) {
                        sub.closed.store(CLOSED_OVERFLOW, Ordering::Release);
                    }
                    return Ok(());
                }
            };
            let config = self.watch_config(holds_rotations(&changes))?;
            for (cursor, change) in &changes {
                mastered |= matches!(change, Change::Mastered { .. });
                let mut frame: Option<Arc<str>> = None;
                self.watchers.subs.retain_mut(|sub| {
                    if *cursor <= sub.after {
                        return true;
                    }
                    sub.after = *cursor;
                    if !sub.tables.wants(change) {
                        return true;
                    }
                    let text = match &frame {
                        Some(t) => t.clone(),
                        None => {
                            let t: Arc<str> = match watch::change_frame(*cursor, change, &config) {
                                Ok(t) => t.into(),
                                Err(_) => return false,
                            };
                            frame = Some(t.clone());
                            t
                        }
                    };
                    match sub.tx.try_send((*cursor, text)) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            sub.closed.store(CLOSED_OVERFLOW, Ordering::Release);
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }
                });
            }
        }
        if mastered {
            self.recheck_watchers();
        }
        Ok(())
    }

    /// Drops the subscribers whose grants no longer allow their stream.
    fn recheck_watchers(&mut self) {
        let subs = std::mem::take(&mut self.watchers.subs);
        for sub in subs {
            let needs: Vec<_> = sub.tables.required().into_iter().map(Some).collect();
            if self.check_caller(&sub.caller, &needs).is_ok() {
                self.watchers.subs.push(sub);
            } else {
                sub.closed.store(CLOSED_REFUSED, Ordering::Release);
            }
        }
    }
}

/// Whether `changes` hold a credential rotation row (whose frame says if it is in conflict).
fn holds_rotations(changes: &[(u64, Change)]) -> bool {
    changes
        .iter()
        .any(|(_, c)| c.table() == Some(meshward_crdt::TableId::Rotations))
}
