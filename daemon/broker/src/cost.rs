//! What a call costs against each limit, and how unknown costs are estimated.

use super::PerKind;

/// An amount per limit kind: requests, input tokens, output tokens.
pub type Costs = PerKind<u64>;

impl Costs {
    pub fn plus(&self, other: &Costs) -> Costs {
        Costs::from_fn(|kind| self[kind].saturating_add(other[kind]))
    }

    pub fn minus(&self, other: &Costs) -> Costs {
        Costs::from_fn(|kind| self[kind].saturating_sub(other[kind]))
    }
}

/// The most input one call can count: twice the largest context window (1M tokens).
pub const MAX_CALL_INPUT: u64 = 2_000_000;
/// The most output one call can produce when it names no `max_tokens`: twice the largest output
/// any model allows.
pub const MAX_CALL_OUTPUT: u64 = 256_000;

/// The most a call's report is believed to have used: one request, [`MAX_CALL_INPUT`] input
/// tokens, and its `max_tokens` (else [`MAX_CALL_OUTPUT`]) of output.
pub fn usage_bound(max_tokens: Option<u64>) -> Costs {
    let output = max_tokens.map_or(MAX_CALL_OUTPUT, |max| max.min(MAX_CALL_OUTPUT));
    Costs::new(1, MAX_CALL_INPUT, output)
}

/// A running average of real token counts, used where the caller gave no estimate. Exponentially
/// weighted so it follows a workload that changes, seeded by the first sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunningAverage {
    value: f64,
    samples: u64,
}

impl RunningAverage {
    /// Weight of each new sample: the average mostly reflects the last ten or so calls.
    const WEIGHT: f64 = 0.2;

    pub fn record(&mut self, sample: u64) {
        let sample = sample as f64;
        self.value = if self.samples == 0 {
            sample
        } else {
            self.value + Self::WEIGHT * (sample - self.value)
        };
        self.samples += 1;
    }

    /// The largest average believed from a state file: more tokens than any call has.
    pub const MAX: f64 = 10_000_000.0;

    /// An average from a state file, held to what makes sense.
    pub fn sane(self) -> Self {
        if self.value.is_finite() && (0.0..=Self::MAX).contains(&self.value) {
            self
        } else {
            Self::default()
        }
    }

    /// Whether no sample was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The average, rounded up; zero before the first sample.
    pub fn estimate(&self) -> u64 {
        self.value.ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_add_and_subtract_without_wrapping() {
        let a = Costs::new(1, 10, 5);
        let b = Costs::new(2, 3, 9);
        assert_eq!(a.plus(&b), Costs::new(3, 13, 14));
        assert_eq!(a.minus(&b), Costs::new(0, 7, 0));
    }

    #[test]
    fn running_average_starts_at_the_first_sample_and_follows_later_ones() {
        let mut avg = RunningAverage::default();
        assert_eq!(avg.estimate(), 0);
        avg.record(100);
        assert_eq!(avg.estimate(), 100);
        avg.record(200);
        assert_eq!(avg.estimate(), 120);
        for _ in 0..50 {
            avg.record(1000);
        }
        assert!(avg.estimate() >= 999);
    }
}
