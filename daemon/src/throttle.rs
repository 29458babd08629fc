//! Warnings that could repeat without end (a client that keeps sending garbage, a listener out
//! of file descriptors) are logged at most once per interval from each place; the next one
//! logged says how many were suppressed meanwhile.
//!
//! ```ignore
//! static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
//! warn_throttled!(REFUSED, "refused a client: {e}");
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One place's allowance of warnings.
pub struct Throttle {
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log this occurrence, at `now`: `Some(n)` with the number suppressed since
    /// the last one logged, or `None` to suppress it.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }

    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }
}

/// A log event at `$level` through a [`Throttle`]: the message is formatted only when logged,
/// and says how many like it were suppressed before it.
#[macro_export]
macro_rules! log_throttled {
    ($level:expr, $throttle:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $throttle.admit() {
            if suppressed > 0 {
                tracing::event!(
                    $level,
                    "{} ({suppressed} more like it since the last one logged)",
                    format_args!($($arg)+)
                );
            } else {
                tracing::event!($level, $($arg)+);
            }
        }
    };
}

/// `tracing::warn!` through a [`Throttle`] (see [`log_throttled`]).
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        $crate::log_throttled!(tracing::Level::WARN, $throttle, $($arg)+)
    };
}

/// `tracing::info!` through a [`Throttle`] (see [`log_throttled`]).
#[macro_export]
macro_rules! info_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        $crate::log_throttled!(tracing::Level::INFO, $throttle, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_then_the_count_of_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.admit_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(throttle.admit_at(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(30)), Some(1));
    }
}
