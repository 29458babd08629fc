//! What one call costs of a subscription window, learned from how its utilization moves, and how
//! fast the window is being spent.
//!
//! The API reports a window's utilization (a fraction with two decimals) only on its answers,
//! while several calls are in flight. Between two reports that differ by at least two steps, the
//! calls answered meanwhile explain the difference: each sample is the difference over their
//! number, and the share is a moving average of the samples. Everything else that spends the
//! window (claude.ai, another machine) makes the share look larger: pacer errs on the side of
//! holding a little early. Until a sample is taken, one call is taken to cost one step (0.01).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The cost of one call before any is learned: one reporting step.
pub const DEFAULT_SHARE: f64 = 0.01;
/// How far utilization must have moved before a sample is taken: two reporting steps (one
/// step is mostly rounding).
const MIN_MOVE: f64 = 0.02 - 1e-9;
/// A fall this large is the window starting over, not a late answer.
const RESET_FALL: f64 = 0.05;
/// The weight of each new sample.
const WEIGHT: f64 = 0.5;
/// The burn rate is measured over this long, once the answers it is measured from span
/// [`BURN_MIN_SPAN`]: a burst of a few seconds says nothing of an hour.
pub const BURN_SPAN: Duration = Duration::from_secs(15 * 60);
pub const BURN_MIN_SPAN: Duration = Duration::from_secs(5 * 60);
const MAX_HISTORY: usize = 256;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    /// Where the last sample was taken: the utilization then, and the calls answered by then.
    anchor: Option<(f64, u64)>,
    share: Option<f64>,
    /// Utilization over the last [`BURN_SPAN`], for the burn rate.
    history: VecDeque<(Instant, f64)>,
}

impl Estimate {
    /// An estimate that starts from a share learned before (a state file, another daemon).
    pub fn with_share(share: Option<f64>) -> Estimate {
        Estimate {
            share: share.filter(|s| s.is_finite() && *s > 0.0 && *s <= 1.0),
            ..Estimate::default()
        }
    }

    /// An answer reported `utilization`, when `answered` calls of the window had been answered
    /// in all (this one included).
    pub fn observe(&mut self, utilization: f64, answered: u64, now: Instant) {
        match self.anchor {
            Some((at, _)) if utilization < at - RESET_FALL => {
                // The window started over.
                self.anchor = Some((utilization, answered));
                self.history.clear();
            }
            Some((at, calls)) if utilization - at >= MIN_MOVE && answered > calls => {
                let sample = ((utilization - at) / (answered - calls) as f64).min(1.0);
                self.share = Some(match self.share {
                    None => sample,
                    Some(share) => share + WEIGHT * (sample - share),
                });
                self.anchor = Some((utilization, answered));
            }
            Some(_) => {}
            None => self.anchor = Some((utilization, answered)),
        }
        while self
            .history
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > BURN_SPAN)
        {
            self.history.pop_front();
        }
        let highest = self.history.back().map_or(f64::MIN, |&(_, u)| u);
        if utilization > highest || self.history.is_empty() {
            if self.history.len() >= MAX_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((now, utilization));
        }
    }

    /// What one call costs of the window, as far as is known.
    pub fn share(&self) -> f64 {
        self.share.unwrap_or(DEFAULT_SHARE)
    }

    /// The share learned from the window's own answers, if any.
    pub fn learned_share(&self) -> Option<f64> {
        self.share
    }

    /// Utilization spent per second over the last [`BURN_SPAN`], once the answers in it span
    /// at least [`BURN_MIN_SPAN`] (`None` before: not enough history to say).
    pub fn burn_per_second(&self, now: Instant) -> Option<f64> {
        let &(first_at, first) = self
            .history
            .iter()
            .find(|&&(at, _)| now.saturating_duration_since(at) <= BURN_SPAN)?;
        let &(last_at, last) = self.history.back()?;
        let seen = last_at.saturating_duration_since(first_at);
        let span = now.saturating_duration_since(first_at);
        (seen >= BURN_MIN_SPAN && last > first).then(|| (last - first) / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_share_of_a_call_is_learned_through_the_rounding() {
        // A window of 60 calls: each is 0.0167, reported with two decimals.
        let t0 = Instant::now();
        let mut estimate = Estimate::default();
        assert_eq!(estimate.share(), DEFAULT_SHARE);
        for calls in 1..=30u64 {
            let reported = (calls as f64 / 60.0 * 100.0).round() / 100.0;
            estimate.observe(reported, calls, t0 + secs(calls));
        }
        let share = estimate.learned_share().unwrap();
        assert!((share - 1.0 / 60.0).abs() < 0.004, "{share}");
    }

    #[test]
    fn late_answers_are_ignored_and_a_reset_starts_over() {
        let t0 = Instant::now();
        let mut estimate = Estimate::default();
        estimate.observe(0.40, 10, t0);
        estimate.observe(0.38, 11, t0 + secs(1));
        assert_eq!(estimate.learned_share(), None, "a late answer is no sample");
        estimate.observe(0.44, 12, t0 + secs(2));
        assert!((estimate.share() - 0.02).abs() < 1e-9);
        estimate.observe(0.01, 13, t0 + secs(3));
        estimate.observe(0.03, 14, t0 + secs(4));
        assert!(
            (estimate.share() - 0.02).abs() < 1e-9,
            "kept across the reset"
        );
    }

    #[test]
    fn the_burn_rate_is_measured_over_the_last_quarter_hour() {
        let t0 = Instant::now();
        let mut estimate = Estimate::default();
        assert_eq!(estimate.burn_per_second(t0), None);
        // 0.01 a minute for half an hour.
        for minute in 0..=30u64 {
            estimate.observe(minute as f64 / 100.0, minute, t0 + secs(60 * minute));
        }
        let now = t0 + secs(60 * 30);
        let rate = estimate.burn_per_second(now).unwrap() * 3600.0;
        assert!((rate - 0.6).abs() < 0.05, "{rate} an hour");
    }

    #[test]
    fn a_burst_of_seconds_is_no_forecast() {
        // 45 % in two seconds, then two minutes of nothing.
        let t0 = Instant::now();
        let mut estimate = Estimate::default();
        estimate.observe(0.10, 1, t0);
        estimate.observe(0.30, 2, t0 + secs(1));
        estimate.observe(0.55, 3, t0 + secs(2));
        assert_eq!(estimate.burn_per_second(t0 + secs(120)), None);
        // An hour later, still the same two seconds: nothing to say of a pace.
        assert_eq!(estimate.burn_per_second(t0 + secs(600)), None);
    }
}
