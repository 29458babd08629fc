//! What of the broker outlives a restart: pauses and backoffs, learned limits, bucket levels and
//! running averages. (Waiters and leases belong to connections, which a restart closes.)
//!
//! Times are saved on the wall clock; on restore, buckets are refilled for the time the daemon
//! was down, and pauses still in force resume where they were.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pacer_protocol::{KeyFingerprint, LimitKind};
use serde::{Deserialize, Serialize};

use super::cost::RunningAverage;
use super::{Broker, Overload, later};

/// The broker's durable state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerState {
    pub budgets: Vec<BudgetState>,
    /// Model classes backing off after 529s.
    pub overloads: Vec<OverloadState>,
    /// Keys failing fast after a spend cap.
    pub blocked: Vec<BlockState>,
    /// The next lease id, so that a restarted daemon never reuses one.
    pub next_lease: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The key fingerprint, as 16 hex characters.
    pub key: String,
    pub model_class: String,
    /// Limits learned from headers, per kind (requests, input tokens, output tokens).
    pub learned: [Option<u64>; 3],
    /// Bucket levels when saved, per kind.
    pub levels: [Option<f64>; 3],
    pub paused_until: Option<SystemTime>,
    pub input_average: RunningAverage,
    pub output_average: RunningAverage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverloadState {
    pub model_class: String,
    pub consecutive: u32,
    pub until: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockState {
    pub key: String,
    pub until: SystemTime,
    pub reason: String,
}

impl Broker {
    /// The state to save, as of `now`.
    pub fn snapshot(&self, now: Instant) -> BrokerState {
        let wall = |at: Instant| self.time_base.to_wall(at);
        let future = |at: &Option<Instant>| at.filter(|&at| at > now).map(wall);
        BrokerState {
            budgets: self
                .budgets
                .iter()
                .map(|budget| BudgetState {
                    key: budget.key.to_string(),
                    model_class: budget.class.to_string(),
                    learned: budget.learned_limits(),
                    levels: budget.levels(now),
                    paused_until: future(&budget.paused_until),
                    input_average: budget.input_average,
                    output_average: budget.output_average,
                })
                .collect(),
            overloads: self
                .overloads
                .iter()
                .map(|(class, overload)| OverloadState {
                    model_class: class.to_string(),
                    consecutive: overload.consecutive,
                    until: future(&overload.until),
                })
                .collect(),
            blocked: self
                .blocked
                .iter()
                .filter(|(_, (until, _))| *until > now)
                .map(|(key, (until, reason))| BlockState {
                    key: key.to_string(),
                    until: wall(*until),
                    reason: reason.clone(),
                })
                .collect(),
            next_lease: self.next_lease,
        }
    }

    /// Restores a state saved at `saved_at` (wall clock); `wall_now` is the wall clock at `now`.
    /// Entries that no longer make sense (a malformed key) are skipped.
    pub fn restore(
        &mut self,
        state: BrokerState,
        saved_at: SystemTime,
        now: Instant,
        wall_now: SystemTime,
    ) {
        let downtime = wall_now.duration_since(saved_at).unwrap_or_default();
        let instant = |at: SystemTime| -> Option<Instant> {
            let left = at.duration_since(wall_now).ok()?;
            Some(later(now, left))
        };
        for saved in state.budgets {
            let Ok(key) = saved.key.parse::<KeyFingerprint>() else {
                continue;
            };
            let Some(b) = self.budget_for_class(key, Arc::from(saved.model_class.as_str()), now)
            else {
                break;
            };
            let budget = &mut self.budgets[b];
            for kind in LimitKind::ALL {
                if let Some(limit) = saved.learned[kind.index()] {
                    budget.learn(kind, limit, now);
                }
                if let Some(level) = saved.levels[kind.index()] {
                    budget.restore_level(kind, level, downtime, now);
                }
            }
            budget.input_average = saved.input_average;
            budget.output_average = saved.output_average;
            if let Some(until) = saved.paused_until.and_then(instant) {
                budget.extend_pause(until);
            }
            self.touch(b);
        }
        for saved in state.overloads {
            self.overloads.insert(
                Arc::from(saved.model_class.as_str()),
                Overload {
                    consecutive: saved.consecutive,
                    until: saved.until.and_then(instant),
                },
            );
        }
        for saved in state.blocked {
            if let (Ok(key), Some(until)) = (saved.key.parse(), instant(saved.until)) {
                self.blocked.insert(key, (until, saved.reason));
            }
        }
        self.next_lease = self.next_lease.max(state.next_lease);
    }
}
