//! pacerd's clocks, and the jumps between them.
//!
//! Waits are measured on a monotonic clock (tokio's, so that tests can pause it). Two things
//! make it part ways with the world, and both are found here by comparing real clocks
//! ([`Clocks`]), then applied:
//!
//! - **Sleep.** The monotonic clock stops while the machine is suspended (Linux
//!   `CLOCK_MONOTONIC`, macOS `CLOCK_UPTIME_RAW`), so a laptop that slept 8 hours would wake
//!   with every pause and lockout 8 hours too long. The broker's `now` is the monotonic clock
//!   plus the time slept since pacerd started (Linux `CLOCK_BOOTTIME` − `CLOCK_MONOTONIC`;
//!   macOS `CLOCK_MONOTONIC` − `CLOCK_UPTIME_RAW`): what ran out meanwhile is over on waking.
//! - **Steps of the wall clock** (an NTP correction, a person setting it): the wall clock
//!   moves against the monotonic one. The broker is rebased, so that its instants map to the
//!   wall clock as it now is and what it holds as wall-clock times (windows' resets) moves
//!   with it; deadlines come from the API's own clock (its `Date`), not this one.
//!
//! Each jump is logged once. Elsewhere (Windows) sleep is not told apart from a step: it is
//! taken for one.

use std::time::{Duration, Instant, SystemTime};

use pacer_broker::Step;

/// The smallest jump noticed: less is the clocks' own jitter and the time between readings.
const JUMP: Duration = Duration::from_secs(2);

/// The real clocks (not tokio's, which tests pause).
pub trait Clocks: Send + Sync + 'static {
    /// The time the machine has spent asleep, since some fixed point.
    fn asleep(&self) -> Duration;
    fn wall(&self) -> SystemTime;
    fn monotonic(&self) -> Instant;
}

/// The machine's.
pub struct SystemClocks;

impl Clocks for SystemClocks {
    fn asleep(&self) -> Duration {
        asleep()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn asleep() -> Duration {
    #[cfg(target_os = "linux")]
    let (counting, stopping) = (libc::CLOCK_BOOTTIME, libc::CLOCK_MONOTONIC);
    #[cfg(target_os = "macos")]
    let (counting, stopping) = (libc::CLOCK_MONOTONIC, libc::CLOCK_UPTIME_RAW);
    let read = |clock| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own; the clock ids exist here.
        let ok = unsafe { libc::clock_gettime(clock, &mut t) } == 0;
        ok.then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    };
    match (read(counting), read(stopping)) {
        (Some(counting), Some(stopping)) => counting.saturating_sub(stopping),
        _ => Duration::ZERO,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn asleep() -> Duration {
    Duration::ZERO
}

/// A jump found between the clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    /// The machine slept this long.
    Slept(Duration),
    /// The wall clock stepped.
    Stepped(Step),
}

/// Where the clocks stood at start, and what has been applied since.
pub struct Drift {
    clocks: Box<dyn Clocks>,
    asleep_at_start: Duration,
    wall_at_start: SystemTime,
    monotonic_at_start: Instant,
    /// Time slept since start, as added to the broker's `now`.
    slept: Duration,
    /// The wall clock's steps since start, added up (nanoseconds, forward positive).
    stepped: i128,
}

impl Drift {
    pub fn new(clocks: Box<dyn Clocks>) -> Drift {
        Drift {
            asleep_at_start: clocks.asleep(),
            wall_at_start: clocks.wall(),
            monotonic_at_start: clocks.monotonic(),
            clocks,
            slept: Duration::ZERO,
            stepped: 0,
        }
    }

    /// The time slept since start: what the broker's `now` is ahead of the monotonic clock.
    pub fn slept(&self) -> Duration {
        self.slept
    }

    /// Reads the clocks: the jumps since the last reading.
    pub fn check(&mut self) -> Vec<Jump> {
        let mut jumps = Vec::new();
        let slept = self.clocks.asleep().saturating_sub(self.asleep_at_start);
        if slept >= self.slept + JUMP {
            jumps.push(Jump::Slept(slept - self.slept));
            self.slept = slept;
        }
        // Where the wall clock should be, had it only run (and slept) with the monotonic one.
        let ran = self.clocks.monotonic() - self.monotonic_at_start + self.slept;
        let expected = nanos_since(self.wall_at_start, self.wall_at_start + ran) + self.stepped;
        let off = nanos_since(self.wall_at_start, self.clocks.wall()) - expected;
        if off.unsigned_abs() >= JUMP.as_nanos() {
            self.stepped += off;
            let by = Duration::from_nanos(off.unsigned_abs().min(u64::MAX as u128) as u64);
            jumps.push(Jump::Stepped(if off > 0 {
                Step::Forward(by)
            } else {
                Step::Back(by)
            }));
        }
        jumps
    }
}

/// `at` − `from`, in signed nanoseconds.
fn nanos_since(from: SystemTime, at: SystemTime) -> i128 {
    match at.duration_since(from) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Clocks a test moves by hand.
    #[derive(Clone)]
    struct Fake(Arc<Mutex<(Duration, SystemTime, Instant)>>);

    impl Clocks for Fake {
        fn asleep(&self) -> Duration {
            self.0.lock().unwrap().0
        }
        fn wall(&self) -> SystemTime {
            self.0.lock().unwrap().1
        }
        fn monotonic(&self) -> Instant {
            self.0.lock().unwrap().2
        }
    }

    impl Fake {
        fn run(&self, d: Duration) {
            let mut c = self.0.lock().unwrap();
            c.1 += d;
            c.2 += d;
        }
        fn sleep(&self, d: Duration) {
            let mut c = self.0.lock().unwrap();
            c.0 += d;
            c.1 += d;
        }
        fn step(&self, forward: bool, d: Duration) {
            let mut c = self.0.lock().unwrap();
            c.1 = if forward { c.1 + d } else { c.1 - d };
        }
    }

    #[test]
    fn sleep_and_steps_are_told_apart_and_each_is_found_once() {
        let fake = Fake(Arc::new(Mutex::new((
            Duration::from_secs(5),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Instant::now(),
        ))));
        let mut drift = Drift::new(Box::new(fake.clone()));
        fake.run(Duration::from_secs(60));
        assert_eq!(drift.check(), []);
        // A laptop's night: the wall clock moves on, the monotonic one does not.
        let night = Duration::from_secs(8 * 3600);
        fake.sleep(night);
        assert_eq!(drift.check(), [Jump::Slept(night)]);
        assert_eq!(drift.slept(), night);
        fake.run(Duration::from_secs(10));
        assert_eq!(drift.check(), []);
        // NTP sets the wall clock an hour forward, later back by half an hour.
        let hour = Duration::from_secs(3600);
        fake.step(true, hour);
        assert_eq!(drift.check(), [Jump::Stepped(Step::Forward(hour))]);
        assert_eq!(drift.check(), []);
        fake.step(false, hour / 2);
        assert_eq!(drift.check(), [Jump::Stepped(Step::Back(hour / 2))]);
        // Jitter is not a jump.
        fake.step(true, Duration::from_millis(300));
        assert_eq!(drift.check(), []);
    }
}
