//! The model the checker explores: nodes, their chains and votes, the messages in flight, and
//! every step the HA rules allow from a state.

use super::*;

/// One node's part of a state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct NodeState {
    tip: Rec,
    /// Durable vote: (epoch, candidate index).
    vote: Option<(u8, u8)>,
    election: Option<Running>,
}

/// An election a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Running {
    /// The chain position its candidacy names.
    at: Rec,
    next: u8,
    planned: bool,
    /// Endorsers so far, as a bit set of node indices.
    endorsers: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    nodes: Vec<NodeState>,
    /// Every record that exists (a bit set of record ids): what a delayed message may carry.
    known: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Write(u8),
    Failover(u8),
    Demote(u8, u8),
    Endorse { voter: u8, runner: u8 },
    Abandon(u8),
    Sync { node: u8, tip: Rec },
}

pub(super) enum Step {
    Same,
    Next(State),
    Violates(String),
}

/// A record and the verified chain state after it.
#[derive(Debug)]
pub(super) struct Record {
    signed: SignedRecord,
    parent: Option<Rec>,
    chain: Chain,
    /// Config records in this record's epoch on its branch, up to and including it.
    writes_in_epoch: u8,
    /// (epoch, leader index) along the chain from genesis, one entry per epoch.
    leaders: Vec<(u64, u8)>,
    /// For a hand-over record: the epoch it starts and its leader's index.
    elects: Option<(u64, u8)>,
}

/// The interned records and memoised outcomes every state shares.
pub(super) struct World {
    bounds: Bounds,
    keys: Vec<SigningKey>,
    ids: Vec<WriterId>,
    anchor: TrustAnchor,
    records: Vec<Record>,
    by_hash: HashMap<[u8; 32], Rec>,
    /// (our tip, their tip) → the tip a node holding ours keeps (and the known finding it
    /// shows, if any), or a violation.
    choices: FxMap<(Rec, Rec), Chosen>,
    /// The known finding the last step showed.
    pub(super) finding: Option<&'static str>,
    /// Records signed, by what made them: (parent, signer, what) → the record, or `None` when
    /// it did not verify. `what`: 0 for a config write, else the hand-over's endorsers and
    /// next leader. Signing is deterministic, so this only saves the signatures.
    made: FxMap<(Rec, u8, u32), Option<Rec>>,
    /// The first hand-over record signed per (epoch, next leader index).
    elected: BTreeMap<(u64, u8), Rec>,
    adoptions: usize,
    equivocations: usize,
    elected_count: BTreeMap<u64, u64>,
}

impl World {
    pub(super) fn new(bounds: &Bounds) -> World {
        let keys: Vec<SigningKey> = (0..bounds.nodes)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let ids: Vec<WriterId> = keys
            .iter()
            .map(|k| WriterId::from_key(&k.verifying_key()))
            .collect();
        let anchor = TrustAnchor {
            cluster: ClusterId([9; 16]),
            genesis_leader: ids[0].0,
        };
        let roster = Roster {
            members: ids
                .iter()
                .enumerate()
                .map(|(i, id)| Member {
                    key: id.0,
                    address: format!("node-{i}.model"),
                })
                .collect(),
        };
        let empty = Chain::new(anchor);
        let genesis = empty.sign_next(&keys[0], RecordKind::Genesis, roster.encode());
        let mut chain = empty.clone();
        let verified = empty
            .verify(&genesis)
            .expect("the genesis record of the model verifies");
        chain
            .apply(verified)
            .expect("a record verified on a chain applies to it");
        let mut world = World {
            bounds: bounds.clone(),
            keys,
            ids,
            anchor,
            records: Vec::new(),
            by_hash: HashMap::new(),
            choices: FxMap::default(),
            finding: None,
            made: FxMap::default(),
            elected: BTreeMap::new(),
            adoptions: 0,
            equivocations: 0,
            elected_count: BTreeMap::new(),
        };
        world.by_hash.insert(genesis.hash().0, 0);
        world.records.push(Record {
            signed: genesis,
            parent: None,
            chain,
            writes_in_epoch: 0,
            leaders: vec![(1, 0)],
            elects: None,
        });
        world
    }

    pub(super) fn initial(&self) -> State {
        State {
            nodes: vec![
                NodeState {
                    tip: 0,
                    vote: None,
                    election: None,
                };
                self.bounds.nodes
            ],
            known: vec![1],
        }
    }

    pub(super) fn index_of(&self, key: &[u8; 32]) -> u8 {
        self.ids
            .iter()
            .position(|w| &w.0 == key)
            .unwrap_or(u8::MAX as usize) as u8
    }

    pub(super) fn chain(&self, rec: Rec) -> &Chain {
        &self.records[rec as usize].chain
    }

    /// Every action enabled in `s` (some of them may change nothing).
    pub(super) fn actions(&self, s: &State) -> Vec<Action> {
        let n = self.bounds.nodes as u8;
        let mut out = Vec::new();
        for i in 0..n {
            let node = &s.nodes[i as usize];
            let chain = self.chain(node.tip);
            let leads = chain.leader() == self.ids[i as usize].0;
            if leads
                && self.records[node.tip as usize].writes_in_epoch < self.bounds.writes_per_epoch
                && !node.election.is_some_and(|e| e.planned)
            {
                out.push(Action::Write(i));
            }
            if node.election.is_none() && chain.epoch() < self.bounds.max_epoch {
                if leads {
                    out.extend((0..n).filter(|&j| j != i).map(|j| Action::Demote(i, j)));
                } else {
                    out.push(Action::Failover(i));
                }
            }
            if let Some(e) = node.election {
                out.push(Action::Abandon(i));
                for j in 0..n {
                    if j != i && e.endorsers & (1 << j) == 0 {
                        out.push(Action::Endorse {
                            voter: j,
                            runner: i,
                        });
                    }
                }
            }
            out.extend(
                records_in(&s.known)
                    .filter(|&tip| tip != node.tip)
                    .map(|tip| Action::Sync { node: i, tip }),
            );
        }
        out
    }

    pub(super) fn step(&mut self, s: &State, action: Action) -> Step {
        let mut next = s.clone();
        match action {
            Action::Write(i) => {
                let tip = s.nodes[i as usize].tip;
                let made = self.make(tip, i, 0, |world| {
                    let chain = world.chain(tip);
                    let payload = format!(
                        "config {} of epoch {}",
                        chain.last_version() + 1,
                        chain.epoch()
                    );
                    chain.sign_next(
                        &world.keys[i as usize],
                        RecordKind::Config,
                        payload.into_bytes(),
                    )
                });
                let Some(rec) = made else {
                    return Step::Violates("a leader's own write does not verify".into());
                };
                next.nodes[i as usize].tip = rec;
                know(&mut next.known, rec);
            }
            Action::Failover(i) => {
                let tip = s.nodes[i as usize].tip;
                let me = self.ids[i as usize];
                let Ok(candidacy) = election::may_fail_over(me, self.chain(tip), None) else {
                    return Step::Same;
                };
                if !self.stand(&mut next, i, candidacy, i, false) {
                    return Step::Same;
                }
            }
            Action::Demote(i, to) => {
                let tip = s.nodes[i as usize].tip;
                let (me, next_leader) = (self.ids[i as usize], self.ids[to as usize]);
                let Ok(candidacy) = election::may_hand_over(me, self.chain(tip), next_leader, true)
                else {
                    return Step::Same;
                };
                if !self.stand(&mut next, i, candidacy, to, true) {
                    return Step::Same;
                }
            }
            Action::Endorse { voter, runner } => {
                let Some(e) = s.nodes[runner as usize].election else {
                    return Step::Same;
                };
                let candidacy = self.candidacy(&e);
                let ask = EndorseRequest {
                    asker: self.ids[runner as usize],
                    next_leader: self.ids[e.next as usize],
                    next_epoch: candidacy.next_epoch,
                    prev_version: candidacy.prev_version,
                    prev_hash: candidacy.prev_hash.0,
                };
                let v = &s.nodes[voter as usize];
                let decided = election::decide_endorsement(
                    self.ids[voter as usize],
                    self.chain(v.tip),
                    self.vote(v.vote),
                    None,
                    &ask,
                );
                if decided.is_err() {
                    return Step::Same;
                }
                if !self.bounds.forgetful_voters {
                    next.nodes[voter as usize].vote = Some((candidacy.next_epoch as u8, e.next));
                }
                let endorsers = e.endorsers | 1 << voter;
                let keys: Vec<&[u8; 32]> =
                    self.members(endorsers).map(|k| &self.ids[k].0).collect();
                let need = self.chain(e.at).roster().majority();
                if !election::elected(need, &candidacy, keys) {
                    next.nodes[runner as usize].election = Some(Running { endorsers, ..e });
                    return Step::Next(next);
                }
                // Won: the runner signs on its chain as it is now (`check_election`).
                next.nodes[runner as usize].election = None;
                let tip = s.nodes[runner as usize].tip;
                let what = (e.at << 12) | (u32::from(e.next) << 8) | u32::from(endorsers);
                let made = self.make(tip, runner, what, |world| {
                    let handover = Handover {
                        next_epoch: candidacy.next_epoch,
                        next_leader: candidacy.next_leader,
                        endorsements: world
                            .members(endorsers)
                            .map(|k| Endorsement::sign(&world.keys[k], &candidacy))
                            .collect(),
                        forced: false,
                    };
                    world.chain(tip).sign_next(
                        &world.keys[runner as usize],
                        RecordKind::Handover,
                        handover.encode(),
                    )
                });
                // A record that does not verify on the runner's chain (it moved since the
                // election started) is refused (`commit_own`): the election just ends.
                if let Some(rec) = made {
                    next.nodes[runner as usize].tip = rec;
                    know(&mut next.known, rec);
                    if let Some(v) = self.record_election(&next.known, rec) {
                        return Step::Violates(v);
                    }
                }
            }
            Action::Abandon(i) => next.nodes[i as usize].election = None,
            Action::Sync { node, tip } => {
                let ours = s.nodes[node as usize].tip;
                match self.choose(ours, tip) {
                    Ok((kept, _)) if kept == ours => return Step::Same,
                    Ok((kept, finding)) => {
                        self.finding = finding;
                        next.nodes[node as usize].tip = kept;
                    }
                    Err(v) => return Step::Violates(v),
                }
            }
        }
        if let Some(v) = self.two_leaders(&next) {
            return Step::Violates(v);
        }
        Step::Next(next)
    }

    /// Node `i` starts an election for `candidacy` (naming node `next`) if its vote allows:
    /// it votes for `next` and endorses it itself (`start_election`).
    pub(super) fn stand(
        &self,
        s: &mut State,
        i: u8,
        candidacy: Candidacy,
        next: u8,
        planned: bool,
    ) -> bool {
        let node = &mut s.nodes[i as usize];
        let next_leader = self.ids[next as usize];
        if election::vote_allows(self.vote(node.vote), candidacy.next_epoch, next_leader).is_err() {
            return false;
        }
        node.vote = (!self.bounds.forgetful_voters).then_some((candidacy.next_epoch as u8, next));
        node.election = Some(Running {
            at: node.tip,
            next,
            planned,
            endorsers: 1 << i,
        });
        true
    }

    pub(super) fn vote(&self, vote: Option<(u8, u8)>) -> Option<(u64, WriterId)> {
        vote.map(|(epoch, who)| (epoch as u64, self.ids[who as usize]))
    }

    pub(super) fn candidacy(&self, e: &Running) -> Candidacy {
        self.chain(e.at).candidacy(self.ids[e.next as usize].0)
    }

    pub(super) fn members(&self, set: u8) -> impl Iterator<Item = usize> + '_ {
        (0..self.bounds.nodes).filter(move |k| set & (1 << k) != 0)
    }

    /// The record `sign` makes on `parent`, once per (parent, signer, what).
    pub(super) fn make(
        &mut self,
        parent: Rec,
        signer: u8,
        what: u32,
        sign: impl FnOnce(&World) -> SignedRecord,
    ) -> Option<Rec> {
        if let Some(&made) = self.made.get(&(parent, signer, what)) {
            return made;
        }
        let record = sign(self);
        let made = self.intern(parent, record).ok();
        self.made.insert((parent, signer, what), made);
        made
    }

    /// The record `signed` on `parent`: verified there with [`Chain::verify`], and interned.
    pub(super) fn intern(&mut self, parent: Rec, signed: SignedRecord) -> Result<Rec, String> {
        let hash = signed.hash().0;
        if let Some(&rec) = self.by_hash.get(&hash) {
            return Ok(rec);
        }
        let base = &self.records[parent as usize];
        let verified = base.chain.verify(&signed).map_err(|e| e.to_string())?;
        let mut chain = base.chain.clone();
        chain.apply(verified).map_err(|e| e.to_string())?;
        let same_epoch = chain.epoch() == base.chain.epoch();
        let writes_in_epoch = match (same_epoch, signed.record.kind) {
            (true, RecordKind::Config) => base.writes_in_epoch + 1,
            (true, _) => base.writes_in_epoch,
            (false, _) => 0,
        };
        let mut leaders = base.leaders.clone();
        let elects = (!same_epoch).then(|| (chain.epoch(), self.index_of(&chain.leader())));
        leaders.extend(elects);
        let rec = self.records.len() as Rec;
        self.records.push(Record {
            signed,
            parent: Some(parent),
            chain,
            writes_in_epoch,
            leaders,
            elects,
        });
        self.by_hash.insert(hash, rec);
        Ok(rec)
    }

    /// Counts a signed hand-over; another record among `known` that elects a different leader
    /// for the same epoch is a violation.
    pub(super) fn record_election(&mut self, known: &[u64], rec: Rec) -> Option<String> {
        let elect = self.records[rec as usize].elects?;
        let entry = self.elected.entry(elect).or_insert(rec);
        if *entry == rec {
            *self.elected_count.entry(elect.0).or_default() += 1;
        }
        let other = records_in(known).find(|&k| {
            self.records[k as usize]
                .elects
                .is_some_and(|(epoch, leader)| epoch == elect.0 && leader != elect.1)
        })?;
        Some(format!(
            "two hand-over records elect different leaders for epoch {}: {} and {}",
            elect.0,
            self.name(other),
            self.name(rec)
        ))
    }

    pub(super) fn records_to(&self, tip: Rec) -> Vec<SignedRecord> {
        let mut out = Vec::new();
        let mut at = Some(tip);
        while let Some(rec) = at {
            out.push(self.records[rec as usize].signed.clone());
            at = self.records[rec as usize].parent;
        }
        out.reverse();
        out
    }

    pub(super) fn is_ancestor(&self, a: Rec, mut b: Rec) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.records[b as usize].parent {
                Some(p) => b = p,
                None => return false,
            }
        }
    }

    /// What a node holding `ours` keeps when offered `theirs`: as the core does, the longer of
    /// two chains where one extends the other, else what [`fork::choose`] picks; giving up a
    /// majority-endorsed hand-over is a violation, unless the kept branch left the epoch by a
    /// majority-endorsed hand-over of the same candidacy (the same leader at the same
    /// position): then it is the known finding [`SAME_CANDIDACY`] (see the module docs).
    pub(super) fn choose(&mut self, ours: Rec, theirs: Rec) -> Chosen {
        if self.is_ancestor(theirs, ours) {
            return Ok((ours, None));
        }
        if self.is_ancestor(ours, theirs) {
            return Ok((theirs, None));
        }
        if let Some(done) = self.choices.get(&(ours, theirs)) {
            return done.clone();
        }
        let a = self.records_to(ours);
        let b = self.records_to(theirs);
        let outcome = match fork::choose(self.anchor, &a, &b) {
            Err(e) => Err(format!(
                "the fork choice failed on two verified chains: {e}"
            )),
            Ok(choice) => {
                if !choice.equivocations.is_empty() {
                    self.equivocations += 1;
                }
                match choice.keep {
                    Keep::Ours => Ok((ours, None)),
                    Keep::Theirs => {
                        self.adoptions += 1;
                        let common = choice.common;
                        match oracle::rolled_back(self.anchor, &a[..common], &a[common..]) {
                            None => Ok((theirs, None)),
                            Some(_)
                                if self.same_candidacy(
                                    &a[..common],
                                    &a[common..],
                                    &b[common..],
                                ) =>
                            {
                                Ok((theirs, Some(SAME_CANDIDACY)))
                            }
                            Some(failure) => Err(format!(
                                "a node holding chain {} adopted {}: {failure}",
                                self.name(ours),
                                self.name(theirs)
                            )),
                        }
                    }
                }
            }
        };
        self.choices.insert((ours, theirs), outcome.clone());
        outcome
    }

    /// Whether the two branches after the common records `kept` both leave the fork point's
    /// epoch by a majority-endorsed hand-over electing the same leader: [`SAME_CANDIDACY`].
    pub(super) fn same_candidacy(
        &self,
        kept: &[SignedRecord],
        a: &[SignedRecord],
        b: &[SignedRecord],
    ) -> bool {
        let Ok(base) = Chain::rebuild(self.anchor, kept) else {
            return false;
        };
        let exit = |branch: &[SignedRecord]| {
            let record = branch.iter().find(|r| {
                r.record.kind == RecordKind::Handover && r.record.epoch == base.epoch()
            })?;
            let handover = Handover::decode(&record.record.payload).ok()?;
            Some((handover.next_epoch, handover.next_leader))
        };
        fork::standing(&base, b) == fork::Standing::Majority
            && exit(a).is_some()
            && exit(a) == exit(b)
    }

    /// Two leaders for one epoch among the chains the nodes hold.
    pub(super) fn two_leaders(&self, s: &State) -> Option<String> {
        let mut seen: BTreeMap<u64, (u8, usize)> = BTreeMap::new();
        for (i, node) in s.nodes.iter().enumerate() {
            for &(epoch, leader) in &self.records[node.tip as usize].leaders {
                match seen.get(&epoch) {
                    Some(&(other, j)) if other != leader => {
                        return Some(format!(
                            "epoch {epoch} has two leaders: node {other} in node {j}'s chain, \
                             node {leader} in node {i}'s"
                        ));
                    }
                    _ => {
                        seen.insert(epoch, (leader, i));
                    }
                }
            }
        }
        None
    }

    pub(super) fn name(&self, rec: Rec) -> String {
        let r = &self.records[rec as usize];
        format!(
            "r{rec} (v{} {} epoch {}, led by node {})",
            r.signed.record.version,
            r.signed.record.kind.as_str(),
            r.chain.epoch(),
            self.index_of(&r.chain.leader())
        )
    }

    pub(super) fn describe(&self, action: Action) -> String {
        match action {
            Action::Write(i) => format!("node {i} writes a config record"),
            Action::Failover(i) => format!("node {i} starts a failover"),
            Action::Demote(i, to) => format!("node {i} starts a hand-over to node {to}"),
            Action::Endorse { voter, runner } => {
                format!("node {voter} endorses node {runner}'s election")
            }
            Action::Abandon(i) => format!("node {i}'s election times out"),
            Action::Sync { node, tip } => {
                format!(
                    "node {node} is offered the chain ending at {}",
                    self.name(tip)
                )
            }
        }
    }

    pub(super) fn finish(self, mut report: Report, states: usize, started: Instant) -> Report {
        report.states = states;
        report.records = self.records.len();
        report.fork_choices = self.choices.len();
        report.adoptions = self.adoptions;
        report.equivocations = self.equivocations;
        report.elected_by_epoch = self.elected_count;
        report.wall_ms = started.elapsed().as_millis() as u64;
        report
    }
}

/// The record ids in a bit set.
pub(super) fn records_in(known: &[u64]) -> impl Iterator<Item = Rec> + '_ {
    known.iter().enumerate().flat_map(|(w, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                (w * 64 + b) as Rec
            })
        })
    })
}

pub(super) fn know(known: &mut Vec<u64>, rec: Rec) {
    let (w, b) = (rec as usize / 64, rec as usize % 64);
    if known.len() <= w {
        known.resize(w + 1, 0);
    }
    known[w] |= 1 << b;
}
