//! Sessions starting together. The API answers the first calls of Claude Code sessions
//! started at once with a bare 429 — its request-scoped throttle, no `retry-after`, no limit
//! named — and lets a few through at a time (anthropics/claude-code #53922). Once that has
//! been seen, new sessions are started at a pace pacer learns, for each account and for the
//! machine as a whole (the wall may be per source); until then they start unhindered.
//!
//! The rule is additive increase, multiplicative decrease, the way TCP finds what a link takes:
//!
//! - a bare 429 meeting a session that is starting (none of its calls answered yet) engages
//!   a pace: at first half as many a minute as started in the minute before (at least
//!   [`MIN_PER_MINUTE`]), one at a time, the first a whole interval later;
//! - each session that gets through raises the pace by one a minute (up to
//!   [`MAX_PER_MINUTE`]);
//! - each further bare 429 meeting a starting session halves it — once per interval, so that a
//!   burst of them is one signal — and the next start waits a whole interval;
//! - after [`QUIET`] with no such 429 and no session waiting, sessions start unhindered again.
//!
//! Sessions already at work (one of their calls answered) are never held, nor are calls without
//! a session id. A session let start keeps its place while its first calls are out. The pace
//! is not saved across a restart: it is learned again from one round of bare 429s, which is
//! cheaper than holding sessions for a wall that may be long gone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::StartStatus;

use super::owner::Owner;
use pacer_protocol::message::Event;

/// A new pace at which sessions start, as subscribers are told it.
pub fn told((owner, per_minute): PaceChange) -> Event {
    let account = owner.as_ref().map(Owner::to_wire);
    Event::StartPace {
        account,
        per_minute,
    }
}
use super::queue::WaiterId;
use super::time::{TimeBase, later};

/// The slowest pace: one new session a minute.
pub const MIN_PER_MINUTE: f64 = 1.0;
/// The fastest pace before the quiet time lets sessions start unhindered.
pub const MAX_PER_MINUTE: f64 = 60.0;
/// How long without a bare 429 at a session's start (and nobody waiting) before new sessions
/// start unhindered again.
pub const QUIET: Duration = Duration::from_secs(300);
/// How long a session let start keeps its place while its first calls are out.
const START_KEPT: Duration = Duration::from_secs(600);
/// The most sessions remembered as starting.
const MAX_STARTING: usize = 10_000;

/// The pace in force at one gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    /// New sessions let start a minute.
    pub per_minute: f64,
    /// When a bare 429 last met a session starting.
    pub last_wall: Instant,
    /// When the pace was last cut.
    last_cut: Instant,
    /// No start before then: a whole interval after the last wall.
    hold_until: Instant,
    /// When a session was last let start.
    last_start: Option<Instant>,
}

impl Pace {
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(60.0 / self.per_minute)
    }

    /// When the next session may start: an interval after the last (at the pace in force now,
    /// so that a faster pace is felt at once), and not before the hold after a wall.
    pub fn next(&self) -> Instant {
        let after_last = self.last_start.map(|at| later(at, self.interval()));
        after_last.map_or(self.hold_until, |at| at.max(self.hold_until))
    }
}

/// One gate: the machine's, or an account's.
#[derive(Debug, Default)]
struct Gate {
    pace: Option<Pace>,
    /// When sessions started in the last minute, for the first pace.
    recent: VecDeque<Instant>,
}

impl Gate {
    fn free(&self, now: Instant) -> bool {
        self.pace.as_ref().is_none_or(|pace| pace.next() <= now)
    }

    fn take(&mut self, now: Instant) {
        if let Some(pace) = &mut self.pace {
            pace.last_start = Some(now);
        }
    }

    fn started(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        if self.recent.len() < MAX_PER_MINUTE as usize {
            self.recent.push_back(now);
        }
        if let Some(pace) = &mut self.pace {
            pace.per_minute = (pace.per_minute + 1.0).min(MAX_PER_MINUTE);
        }
    }

    /// A bare 429 met a session starting; returns the pace when it was engaged or cut.
    fn wall(&mut self, now: Instant) -> Option<f64> {
        match &mut self.pace {
            None => {
                let recent = self
                    .recent
                    .iter()
                    .filter(|at| now.saturating_duration_since(**at) <= Duration::from_secs(60))
                    .count();
                let per_minute = (recent as f64 / 2.0).max(MIN_PER_MINUTE);
                let mut pace = Pace {
                    per_minute,
                    last_wall: now,
                    last_cut: now,
                    hold_until: now,
                    last_start: None,
                };
                pace.hold_until = later(now, pace.interval());
                self.pace = Some(pace);
                Some(per_minute)
            }
            Some(pace) => {
                pace.last_wall = now;
                let cut = now.saturating_duration_since(pace.last_cut) >= pace.interval();
                if cut {
                    pace.per_minute = (pace.per_minute / 2.0).max(MIN_PER_MINUTE);
                    pace.last_cut = now;
                }
                pace.hold_until = pace.hold_until.max(later(now, pace.interval()));
                cut.then_some(pace.per_minute)
            }
        }
    }

    /// Lifts the pace after a quiet while with nobody waiting; returns whether it did.
    fn relax(&mut self, waiting: bool, now: Instant) -> bool {
        let quiet = self
            .pace
            .as_ref()
            .is_some_and(|pace| now.saturating_duration_since(pace.last_wall) >= QUIET);
        if quiet && !waiting {
            self.pace = None;
        }
        quiet && !waiting
    }
}

/// A change of pace to tell: whose (`None`: the machine's), and the pace (`None`: unhindered).
pub type PaceChange = (Option<Owner>, Option<f64>);

/// The gates, and the sessions waiting to start.
#[derive(Debug, Default)]
pub struct Starts {
    machine: Gate,
    accounts: HashMap<Owner, Gate>,
    /// Acquires of sessions waiting to start, in arrival order (waiter ids increase), with
    /// their account and session.
    waiting: BTreeMap<WaiterId, (Owner, Arc<str>)>,
    waiting_per_owner: HashMap<Owner, usize>,
    /// Sessions let start whose first call is not answered yet, and when.
    starting: HashMap<Arc<str>, Instant>,
}

impl Starts {
    /// Whether an acquire of `session`, new to pacer, may go on now; if it may, its start is
    /// counted (the next must wait its turn). A session already let start goes on.
    pub fn try_start(&mut self, owner: &Owner, session: &Arc<str>, now: Instant) -> bool {
        if self.starting.contains_key(session) {
            return true;
        }
        let account = self.accounts.get(owner);
        if !self.machine.free(now) || !account.is_none_or(|gate| gate.free(now)) {
            return false;
        }
        self.machine.take(now);
        if let Some(gate) = self.accounts.get_mut(owner) {
            gate.take(now);
        }
        if self.starting.len() >= MAX_STARTING {
            self.expire(now);
        }
        if self.starting.len() < MAX_STARTING {
            self.starting.insert(session.clone(), now);
        }
        true
    }

    /// An acquire of a session waits to start.
    pub fn wait(&mut self, id: WaiterId, owner: &Owner, session: Arc<str>) {
        if self.waiting.insert(id, (owner.clone(), session)).is_none() {
            *self.waiting_per_owner.entry(owner.clone()).or_default() += 1;
        }
    }

    /// Whether `session` was let start and its first calls are out.
    pub fn is_starting(&self, session: &str) -> bool {
        self.starting.contains_key(session)
    }

    /// Whether waiter `id` waits to start (rather than in its budget's queue).
    pub fn is_waiting(&self, id: WaiterId) -> bool {
        self.waiting.contains_key(&id)
    }

    /// Takes waiter `id` out of the line (it timed out, left, or is let start).
    pub fn leave(&mut self, id: WaiterId) {
        if let Some((owner, _)) = self.waiting.remove(&id)
            && let Some(n) = self.waiting_per_owner.get_mut(&owner)
        {
            *n -= 1;
            if *n == 0 {
                self.waiting_per_owner.remove(&owner);
            }
        }
    }

    /// The waiters let start now, in arrival order (each taken out of the line).
    pub fn admit(&mut self, now: Instant) -> Vec<WaiterId> {
        let mut admitted = Vec::new();
        let candidates: Vec<(WaiterId, Owner, Arc<str>)> = self
            .waiting
            .iter()
            .map(|(id, (owner, session))| (*id, owner.clone(), session.clone()))
            .collect();
        for (id, owner, session) in candidates {
            if !self.machine.free(now) && !self.starting.contains_key(&session) {
                break;
            }
            if self.try_start(&owner, &session, now) {
                self.leave(id);
                admitted.push(id);
            }
        }
        admitted
    }

    /// A session's call was answered: it is at work (the first time, a start got through).
    pub fn started(&mut self, owner: &Owner, session: &Arc<str>, now: Instant) {
        self.starting.remove(session);
        self.machine.started(now);
        self.accounts.entry(owner.clone()).or_default().started(now);
    }

    /// A bare 429 met `session`, which is starting: it waits for a turn again, and the paces of
    /// its account and the machine are engaged or cut. Returns the changes to tell.
    pub fn wall(&mut self, owner: &Owner, session: &Arc<str>, now: Instant) -> Vec<PaceChange> {
        self.starting.remove(session);
        let mut changes = Vec::new();
        if let Some(pace) = self.machine.wall(now) {
            changes.push((None, Some(pace)));
        }
        let gate = self.accounts.entry(owner.clone()).or_default();
        if let Some(pace) = gate.wall(now) {
            changes.push((Some(owner.clone()), Some(pace)));
        }
        changes
    }

    /// Lifts the paces quiet for [`QUIET`] with nobody waiting, and forgets stale starts;
    /// returns the paces lifted.
    pub fn relax(&mut self, now: Instant) -> Vec<PaceChange> {
        let mut lifted = Vec::new();
        if self.machine.relax(!self.waiting.is_empty(), now) {
            lifted.push((None, None));
        }
        let waiting = &self.waiting_per_owner;
        self.accounts.retain(|owner, gate| {
            if gate.relax(waiting.contains_key(owner), now) {
                lifted.push((Some(owner.clone()), None));
            }
            gate.pace.is_some()
                || gate
                    .recent
                    .back()
                    .is_some_and(|at| now.saturating_duration_since(*at) <= Duration::from_secs(60))
        });
        self.expire(now);
        lifted
    }

    fn expire(&mut self, now: Instant) {
        self.starting
            .retain(|_, at| now.saturating_duration_since(*at) < START_KEPT);
    }

    /// When time alone next changes something here: a waiter's turn, or a pace's quiet end.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let turn = (!self.waiting.is_empty()).then(|| {
            let machine = self.machine.pace.as_ref().map(Pace::next);
            let account = self
                .waiting_per_owner
                .keys()
                .filter_map(|owner| self.accounts.get(owner)?.pace.as_ref().map(Pace::next))
                .min();
            machine.into_iter().chain(account).max()
        });
        let quiet = std::iter::once(&self.machine)
            .chain(self.accounts.values())
            .filter_map(|gate| gate.pace.as_ref())
            .map(|pace| later(pace.last_wall, QUIET))
            .min();
        turn.flatten().into_iter().chain(quiet).min()
    }

    /// How long until the next session of `owner` may start, and the pace that holds it
    /// (`None`: sessions start at once). Those waiting already go first, but the pace quickens
    /// as they get through, so the next turn is what is known.
    pub fn wait_for(&self, owner: &Owner, now: Instant) -> Option<(Duration, f64)> {
        let gates = [Some(&self.machine), self.accounts.get(owner)];
        let paces = gates.into_iter().flatten().filter_map(|g| g.pace.as_ref());
        let (next, per_minute) = paces.fold((now, f64::MAX), |(next, rate), pace| {
            (next.max(pace.next()), rate.min(pace.per_minute))
        });
        (per_minute != f64::MAX).then(|| (next.saturating_duration_since(now), per_minute))
    }

    /// The paces in force: the machine's (`None`), then each account's, with how many wait.
    pub fn paces(&self) -> Vec<(Option<&Owner>, &Pace, usize)> {
        let machine = self
            .machine
            .pace
            .as_ref()
            .map(|pace| (None, pace, self.waiting.len()));
        let mut accounts: Vec<(Option<&Owner>, &Pace, usize)> = self
            .accounts
            .iter()
            .filter_map(|(owner, gate)| {
                let waiting = self.waiting_per_owner.get(owner).copied().unwrap_or(0);
                gate.pace.as_ref().map(|pace| (Some(owner), pace, waiting))
            })
            .collect();
        accounts.sort_by(|a, b| a.0.cmp(&b.0));
        machine.into_iter().chain(accounts).collect()
    }
}

impl Starts {
    /// How long a session of `owner` starting now would wait for its turn, and why, in words.
    pub fn holdup(&self, owner: &Owner, now: Instant) -> (Duration, String) {
        let (wait, per_minute) = self
            .wait_for(owner, now)
            .unwrap_or((Duration::ZERO, MAX_PER_MINUTE));
        let reason = format!(
            "new Claude Code sessions start one at a time, {per_minute:.1} a minute, while the \
             API turns sessions starting together away (a bare 429)"
        );
        (wait, reason)
    }

    /// Where new sessions start at a pace, and how many wait.
    pub fn status(&self, clock: &TimeBase) -> Vec<StartStatus> {
        self.paces()
            .into_iter()
            .map(|(owner, pace, waiting)| StartStatus {
                account: owner.map(Owner::to_wire),
                per_minute: pace.per_minute,
                waiting: waiting as u32,
                next_start: Some(clock.to_wall(pace.next())),
                last_wall: clock.to_wall(pace.last_wall),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
