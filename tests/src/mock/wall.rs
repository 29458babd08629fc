//! The API's request-scoped throttle, the "bare 429": a wall for sessions starting together.
//!
//! Seen from Claude Code's users (anthropics/claude-code #53922 and others): about ten sessions
//! started together, the first few work and the rest get a 429 carrying nothing but
//! `x-should-retry: true` — no `retry-after`, no rate-limit header, no organization — and so do
//! their retries for a while; later, each gets through. Here: a bucket of session starts
//! (`burst`, one more every `refill`); a new session (a `x-claude-code-session-id` not seen
//! before) that finds it empty is refused, with its retries, for `block`. Requests without a
//! session id, and sessions already started, never meet it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// How the wall behaves.
#[derive(Debug, Clone)]
pub struct SessionWall {
    /// New sessions let through at once.
    pub burst: u64,
    /// One more start is allowed every `refill`.
    pub refill: Duration,
    /// A session refused is refused, with every retry, for this long.
    pub block: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Wall {
    started: HashSet<String>,
    blocked: HashMap<String, Instant>,
    /// Starts available, and when they were counted.
    tokens: Option<(f64, Instant)>,
}

impl Wall {
    /// Whether a request of `session` meets the wall now (a bare 429).
    pub(super) fn meets(&mut self, wall: &SessionWall, session: &str, now: Instant) -> bool {
        if self.started.contains(session) {
            return false;
        }
        if self.blocked.get(session).is_some_and(|until| *until > now) {
            return true;
        }
        let (tokens, at) = self.tokens.unwrap_or((wall.burst as f64, now));
        let refilled = now.saturating_duration_since(at).as_secs_f64() / wall.refill.as_secs_f64();
        let tokens = (tokens + refilled).min(wall.burst as f64);
        if tokens >= 1.0 {
            self.tokens = Some((tokens - 1.0, now));
            self.blocked.remove(session);
            self.started.insert(session.to_owned());
            false
        } else {
            self.tokens = Some((tokens, now));
            self.blocked.insert(session.to_owned(), now + wall.block);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_few_start_the_rest_and_their_retries_meet_the_wall_for_a_while() {
        let wall = SessionWall {
            burst: 3,
            refill: Duration::from_secs(10),
            block: Duration::from_secs(30),
        };
        let mut state = Wall::default();
        let t0 = Instant::now();
        let met: Vec<bool> = (0..10)
            .map(|i| state.meets(&wall, &format!("s{i}"), t0))
            .collect();
        assert_eq!(met.iter().filter(|m| !**m).count(), 3);
        assert!(!state.meets(&wall, "s0", t0), "a started session goes on");
        // Retried within the block: still refused, though starts have refilled.
        assert!(state.meets(&wall, "s3", t0 + Duration::from_secs(25)));
        // After it: a start is free.
        assert!(!state.meets(&wall, "s3", t0 + Duration::from_secs(31)));
    }
}
