//! What `pacer top` shows: the latest status, each budget's grants and 429s over the last
//! minutes (from the counters of successive status reads), and the latest events.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use pacer_client::{Event, StatusSnapshot};
use pacer_protocol::message::BudgetId;

/// How many samples of history are kept per budget (one per refresh).
pub const HISTORY_LEN: usize = 300;
/// How many recent events are kept.
pub const EVENTS_KEPT: usize = 50;

/// Grants and 429s per refresh, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub grants: VecDeque<u64>,
    pub limited: VecDeque<u64>,
    /// The counters at the last refresh, to take differences from.
    last: Option<(u64, u64)>,
}

impl History {
    fn record(&mut self, granted: u64, rate_limited: u64) {
        if let Some((g, l)) = self.last {
            push(&mut self.grants, granted.saturating_sub(g));
            push(&mut self.limited, rate_limited.saturating_sub(l));
        }
        self.last = Some((granted, rate_limited));
    }
}

fn push(series: &mut VecDeque<u64>, value: u64) {
    if series.len() == HISTORY_LEN {
        series.pop_front();
    }
    series.push_back(value);
}

#[derive(Debug, Clone)]
pub struct Model {
    pub snapshot: Option<StatusSnapshot>,
    /// When the snapshot was read.
    pub now: SystemTime,
    pub history: HashMap<BudgetId, History>,
    /// The latest events, newest last, as `pacer watch` words them.
    pub events: VecDeque<String>,
    /// Why the daemon is not shown (it went away, say).
    pub problem: Option<String>,
    /// How often the status is read.
    pub refresh: Duration,
}

impl Model {
    pub fn new(refresh: Duration) -> Model {
        Model {
            snapshot: None,
            now: SystemTime::UNIX_EPOCH,
            history: HashMap::new(),
            events: VecDeque::new(),
            problem: None,
            refresh,
        }
    }

    /// A new status read at `now`.
    pub fn update(&mut self, snapshot: StatusSnapshot, now: SystemTime) {
        for budget in &snapshot.budgets {
            self.history
                .entry(budget.budget.clone())
                .or_default()
                .record(budget.granted, budget.rate_limited);
        }
        self.history
            .retain(|id, _| snapshot.budgets.iter().any(|b| &b.budget == id));
        self.snapshot = Some(snapshot);
        self.now = now;
        self.problem = None;
    }

    /// An event from the daemon; grants are too many to list and show in the sparklines.
    pub fn event(&mut self, event: &Event, at: &str) {
        if matches!(event, Event::Granted { .. }) {
            return;
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events
            .push_back(format!("{at} {}", crate::watch::describe(event)));
    }

    pub fn lost(&mut self, problem: String) {
        self.problem = Some(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_takes_differences_and_keeps_a_window() {
        let mut history = History::default();
        history.record(10, 1);
        history.record(15, 1);
        history.record(15, 3);
        assert_eq!(history.grants, [5, 0]);
        assert_eq!(history.limited, [0, 2]);
        for i in 0..HISTORY_LEN as u64 {
            history.record(15 + i, 3);
        }
        assert_eq!(history.grants.len(), HISTORY_LEN);
    }
}
