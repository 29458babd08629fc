//! The memory of gated request bodies, bounded for all of them together. Each is read whole (to
//! find its model, and to send it again after a 429), so without a bound a few clients uploading
//! large bodies slowly could take all of the machine's memory; past the bound, new requests get a
//! 503 with `retry-after`. A quarter of the memory is kept for small bodies, so that a few large
//! uploads cannot keep the ordinary requests out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bytes every body being read or held may take together.
#[derive(Debug)]
pub struct BodyMemory {
    limit: usize,
    used: AtomicUsize,
}

/// Memory held for one body; given back when dropped.
#[derive(Debug)]
pub struct BodyBytes {
    memory: Arc<BodyMemory>,
    bytes: usize,
}

impl BodyMemory {
    pub fn new(limit: usize) -> Arc<BodyMemory> {
        Arc::new(BodyMemory {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What all bodies hold now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty hold, grown as the body arrives.
    pub fn hold(self: &Arc<Self>) -> BodyBytes {
        BodyBytes {
            memory: self.clone(),
            bytes: 0,
        }
    }

    /// Takes `bytes` more for a hold that will then be `hold` large: a large body may bring the
    /// total only to [`LARGE_SHARE`] of the limit, so that small requests always find room.
    fn take(&self, bytes: usize, hold: usize) -> bool {
        let ceiling = if hold > SMALL_BODY {
            self.limit / 4 * 3
        } else {
            self.limit
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= ceiling)
            })
            .is_ok()
    }
}

/// A body up to this size is small: it may use all of the memory, large ones three quarters
/// of it (a Claude Code request is ~100 KB; an image or a PDF makes megabytes).
pub const SMALL_BODY: usize = 1 << 20;

impl BodyBytes {
    /// Makes the hold `bytes` large; false (and unchanged) when that would pass the limit.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if self.memory.take(bytes - self.bytes, bytes) {
            self.bytes = bytes;
            true
        } else {
            false
        }
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_bounded_together_and_given_back() {
        let memory = BodyMemory::new(100);
        let mut a = memory.hold();
        let mut b = memory.hold();
        assert!(a.grow_to(60));
        assert!(!b.grow_to(50), "60 + 50 is past the limit");
        assert!(b.grow_to(40));
        assert_eq!(memory.used(), 100);
        drop(a);
        assert_eq!(memory.used(), 40);
        assert!(b.grow_to(90));
        assert_eq!(memory.used(), 90);
    }

    #[test]
    fn large_bodies_leave_a_quarter_for_small_ones() {
        let memory = BodyMemory::new(16 * SMALL_BODY);
        let large: Vec<BodyBytes> = (0..3)
            .map(|_| {
                let mut held = memory.hold();
                assert!(held.grow_to(4 * SMALL_BODY));
                held
            })
            .collect();
        let mut fourth = memory.hold();
        assert!(
            !fourth.grow_to(4 * SMALL_BODY),
            "three quarters are taken by large bodies"
        );
        let mut small = memory.hold();
        assert!(small.grow_to(SMALL_BODY), "a small body still finds room");
        drop(large);
    }
}
