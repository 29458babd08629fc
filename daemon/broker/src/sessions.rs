//! Claude Code sessions (`X-Claude-Code-Session-Id`, seen by the gateway): which account each
//! session's calls go to, and how many of them were answered in the last hour — what `pacer
//! statusline` shows a session, and `pacer status --clients` each session's share of its
//! account's calls. A session is kept a day after its last call (across restarts too), at most
//! [`MAX_SESSIONS`] of them (the least recently seen go first).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::message::SessionStatus;

use super::TimeBase;
use super::owner::Owner;

/// How long a session is kept after its last call.
pub const SESSION_KEPT: Duration = Duration::from_secs(24 * 3600);
/// The most sessions kept.
pub const MAX_SESSIONS: usize = 10_000;
/// The longest session id kept (Claude Code's are UUIDs).
pub const MAX_SESSION_ID: usize = 128;
/// Calls are counted per minute over the last hour.
const MINUTES: usize = 60;

#[derive(Debug, Clone)]
pub struct ClaudeSession {
    /// The account its calls went to, last.
    pub owner: Option<Owner>,
    pub last_seen: Instant,
    /// Whether one of its calls was answered: it is at work (a session that is not may wait
    /// its turn to start; see `starts`).
    pub started: bool,
    /// Calls answered per minute, the last hour's, ending with `minute`.
    counts: [u32; MINUTES],
    minute: u64,
}

impl ClaudeSession {
    fn new(now_minute: u64, last_seen: Instant) -> ClaudeSession {
        ClaudeSession {
            owner: None,
            last_seen,
            started: false,
            counts: [0; MINUTES],
            minute: now_minute,
        }
    }

    /// Moves the window of minutes forward to `minute`, forgetting what fell out of it.
    fn advance(&mut self, minute: u64) {
        if minute <= self.minute {
            return;
        }
        let steps = (minute - self.minute).min(MINUTES as u64);
        for step in 1..=steps {
            self.counts[((self.minute + step) % MINUTES as u64) as usize] = 0;
        }
        self.minute = minute;
    }

    /// Calls answered in the hour up to `minute`.
    fn last_hour(&self, minute: u64) -> u64 {
        if minute >= self.minute + MINUTES as u64 {
            return 0;
        }
        let gone = minute.saturating_sub(self.minute) as usize;
        let mut total = 0u64;
        for back in 0..MINUTES.saturating_sub(gone) {
            let at = (self.minute + MINUTES as u64 - back as u64) % MINUTES as u64;
            total += u64::from(self.counts[at as usize]);
        }
        total
    }
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<Arc<str>, ClaudeSession>,
}

impl Sessions {
    /// A call of session `id` to `owner`'s account was answered at `now` (`answered`), or
    /// just seen.
    pub fn note(
        &mut self,
        id: &Arc<str>,
        owner: &Owner,
        answered: bool,
        now: Instant,
        base: &TimeBase,
    ) {
        let minute = minute_of(now, base);
        if !self.by_id.contains_key(id) && self.by_id.len() >= MAX_SESSIONS {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.by_id.remove(&oldest);
            }
        }
        let session = self
            .by_id
            .entry(id.clone())
            .or_insert_with(|| ClaudeSession::new(minute, now));
        session.owner = Some(owner.clone());
        session.last_seen = session.last_seen.max(now);
        session.advance(minute);
        if answered {
            session.started = true;
            let at = (minute % MINUTES as u64) as usize;
            session.counts[at] = session.counts[at].saturating_add(1);
        }
    }

    /// Restores a session from the state file.
    pub fn restore(&mut self, id: Arc<str>, owner: Owner, last_seen: Instant, base: &TimeBase) {
        if self.by_id.len() < MAX_SESSIONS {
            let mut session = ClaudeSession::new(minute_of(last_seen, base), last_seen);
            session.owner = Some(owner);
            // It was at work before the restart.
            session.started = true;
            self.by_id.insert(id, session);
        }
    }

    pub fn get(&self, id: &str) -> Option<&ClaudeSession> {
        self.by_id.get(id)
    }

    /// Whether session `id` is at work: one of its calls was answered.
    pub fn is_started(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|s| s.started)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &ClaudeSession)> {
        self.by_id.iter()
    }

    /// Forgets the sessions not seen for [`SESSION_KEPT`].
    pub fn prune(&mut self, now: Instant) {
        self.by_id
            .retain(|_, s| now.saturating_duration_since(s.last_seen) < SESSION_KEPT);
    }

    /// Every session, the most recently seen first, with its share of its account's calls in
    /// the last hour.
    pub fn status(&self, now: Instant, base: &TimeBase) -> Vec<SessionStatus> {
        let minute = minute_of(now, base);
        let mut per_owner: HashMap<&Owner, u64> = HashMap::new();
        for session in self.by_id.values() {
            if let Some(owner) = &session.owner {
                *per_owner.entry(owner).or_default() += session.last_hour(minute);
            }
        }
        let mut out: Vec<(Instant, SessionStatus)> = self
            .by_id
            .iter()
            .map(|(id, session)| {
                let calls = session.last_hour(minute);
                let total = session
                    .owner
                    .as_ref()
                    .and_then(|o| per_owner.get(o))
                    .copied()
                    .unwrap_or(0);
                let status = SessionStatus {
                    id: id.to_string(),
                    owner: session.owner.as_ref().map(Owner::to_wire),
                    last_seen: base.to_wall(session.last_seen),
                    calls_last_hour: calls,
                    share_last_hour: (total > 0).then(|| calls as f64 / total as f64),
                };
                (session.last_seen, status)
            })
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        out.into_iter().map(|(_, status)| status).collect()
    }
}

fn minute_of(now: Instant, base: &TimeBase) -> u64 {
    base.to_wall(now)
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_protocol::KeyFingerprint;
    use std::time::SystemTime;

    #[test]
    fn a_sessions_calls_are_counted_over_the_last_hour_and_shared_out() {
        let t0 = Instant::now();
        let base = TimeBase {
            instant: t0,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let owner = Owner::Key(KeyFingerprint::of("k"));
        let mut sessions = Sessions::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("session-a"), Arc::from("session-b"));
        for i in 0..30 {
            sessions.note(&a, &owner, true, t0 + Duration::from_secs(i * 60), &base);
        }
        sessions.note(&b, &owner, true, t0 + Duration::from_secs(29 * 60), &base);
        let now = t0 + Duration::from_secs(30 * 60);
        let status = sessions.status(now, &base);
        let of = |id: &str| status.iter().find(|s| s.id == id).unwrap().clone();
        assert_eq!(of("session-a").calls_last_hour, 30);
        assert_eq!(of("session-b").calls_last_hour, 1);
        assert!((of("session-a").share_last_hour.unwrap() - 30.0 / 31.0).abs() < 1e-9);
        // An hour and a half on, the first half hour is forgotten.
        let later = t0 + Duration::from_secs(90 * 60);
        assert_eq!(
            sessions
                .status(later, &base)
                .iter()
                .find(|s| s.id == "session-a")
                .unwrap()
                .calls_last_hour,
            0
        );
        sessions.prune(t0 + SESSION_KEPT + Duration::from_secs(3600));
        assert!(sessions.status(later, &base).is_empty());
    }
}
