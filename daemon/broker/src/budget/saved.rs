//! What of a budget survives a restart.

use std::time::{Duration, Instant};

use super::Budget;
use crate::PerKind;
use crate::cost::RunningAverage;

impl Budget {
    /// What a restart must not forget: learned limits, levels, averages.
    pub fn saved(&self, now: Instant) -> SavedBudget {
        SavedBudget {
            learned: self.learned,
            levels: PerKind::from_fn(|kind| self.buckets[kind].as_ref().map(|b| b.level_at(now))),
            input_average: self.input_average,
            output_average: self.output_average,
        }
    }

    /// Restores what [`Budget::saved`] gave, `downtime` ago: buckets are refilled for that time.
    pub fn restore(&mut self, saved: &SavedBudget, downtime: Duration, now: Instant) {
        for (kind, limit) in saved.learned.iter() {
            if let Some(limit) = *limit
                && limit <= crate::limits::MAX_LIMIT
            {
                self.learn(kind, limit, now);
            }
        }
        for (kind, level) in saved.levels.iter() {
            if let (Some(level), Some(bucket)) = (level, &mut self.buckets[kind]) {
                bucket.restore(*level, downtime, now);
            }
        }
        self.input_average = saved.input_average.sane();
        self.output_average = saved.output_average.sane();
    }
}

/// The part of a budget that survives a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedBudget {
    pub learned: PerKind<Option<u64>>,
    pub levels: PerKind<Option<f64>>,
    pub input_average: RunningAverage,
    pub output_average: RunningAverage,
}
