//! Deliberate bugs the simulator's tests must catch (feature `bugs`): a core patched in a test
//! build, never in a release build (the feature is only ever enabled by
//! `meshward-simulations`' own dev-dependency on itself).

use meshward_crdt::Effects;

use super::Core;

/// A bug to inject into a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Every `every`-th local commit is announced and acknowledged but never persisted: the
    /// node's store lacks a change it gave to its peers.
    UnpersistedCommit {
        /// Which commits (1: every one).
        every: u64,
    },
    /// Removed writers stay accepted: their rows beyond the frontier their removal fixed
    /// are taken.
    IgnoreFrontiers,
}

/// The injected bug and its state.
#[derive(Debug, Default)]
pub(super) struct Bugs {
    bug: Option<Bug>,
    commits: u64,
}

impl Core {
    /// Injects `bug` into this core.
    pub fn inject(&mut self, bug: Bug) {
        self.bugs.bug = Some(bug);
    }

    /// Whether removed writers stay accepted ([`Bug::IgnoreFrontiers`]).
    pub(super) fn bugged_frontiers(&self) -> bool {
        self.bugs.bug == Some(Bug::IgnoreFrontiers)
    }

    /// What a local commit asks to persist, once the bug had its way.
    pub(super) fn bugged_commit(&mut self, effects: Effects) -> Effects {
        let Some(Bug::UnpersistedCommit { every }) = self.bugs.bug else {
            return effects;
        };
        self.bugs.commits += 1;
        if self.bugs.commits.is_multiple_of(every.max(1)) {
            Effects::default()
        } else {
            effects
        }
    }
}
