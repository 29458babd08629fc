//! What of the broker outlives a restart: pauses and backoffs, learned limits, bucket levels and
//! running averages. (Waiters and leases belong to connections, which a restart closes.)
//!
//! Times are saved on the wall clock; on restore, buckets are refilled for the time the daemon
//! was down, and pauses still in force resume where they were.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pacer_protocol::KeyFingerprint;
use serde::{Deserialize, Serialize};

use super::budget::SavedBudget;
use super::cost::RunningAverage;
use super::overload::Overload;
use super::{Broker, PerKind, later};

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
    pub learned: PerKind<Option<u64>>,
    /// Bucket levels when saved, per kind.
    pub levels: PerKind<Option<f64>>,
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
                .map(|(_, budget)| {
                    let saved = budget.saved(now);
                    BudgetState {
                        key: budget.key().to_string(),
                        model_class: budget.class().to_string(),
                        learned: saved.learned,
                        levels: saved.levels,
                        paused_until: future(&budget.paused_until()),
                        input_average: saved.input_average,
                        output_average: saved.output_average,
                    }
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
                .blocks
                .in_force(now)
                .map(|(key, until, reason)| BlockState {
                    key: key.to_string(),
                    until: wall(until),
                    reason: reason.to_owned(),
                })
                .collect(),
            next_lease: self.leases.next_id(),
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
            let class = Arc::from(saved.model_class.as_str());
            let Some(b) = self.budgets.get_or_create(&self.config, key, class, now) else {
                break;
            };
            let budget = &mut self.budgets[b];
            let kept = SavedBudget {
                learned: saved.learned,
                levels: saved.levels,
                input_average: saved.input_average,
                output_average: saved.output_average,
            };
            budget.restore(&kept, downtime, now);
            if let Some(until) = saved.paused_until.and_then(instant) {
                budget.extend_pause(until);
            }
            self.budgets.touch(b);
        }
        for saved in state.overloads {
            self.overloads.restore(
                Arc::from(saved.model_class.as_str()),
                Overload {
                    consecutive: saved.consecutive,
                    until: saved.until.and_then(instant),
                },
            );
        }
        for saved in state.blocked {
            if let (Ok(key), Some(until)) = (saved.key.parse(), instant(saved.until)) {
                self.blocks.block(key, until, saved.reason, now);
            }
        }
        self.leases.set_next(state.next_lease);
    }
}
