//! A cap per client (`pacer run --max-share 10%`, `[windows.max_share]`): the most of each
//! subscription window one client may use, per window — counted from the calls pacer granted it,
//! at what one call was seen to cost of the window (`estimate`). Past it, the client's calls
//! are held like batch work past its ceiling until the window resets, and other clients go on.
//!
//! Per window rather than per hour: the window is what runs out. A tenth of a 5-hour window per
//! hour would let a loop take half of it; a tenth per window is a tenth, whenever it is spent.
//! The count is of calls, not of a share fixed at the time: each call costs what one call is
//! seen to cost now, so that the count is right as soon as the share is learned. Calls made
//! after a window's reset and before the next answer count toward the new window; the first
//! call of a window always goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Hold, HoldCause, Windows, window_length};
use crate::owner::Owner;
use crate::time::TimeBase;
use pacer_api::unified::{RESET_SLACK, same_reset};
use pacer_protocol::Priority;

/// The most capped clients whose counts are kept: past it, the least recently counted goes.
pub const MAX_COUNTED: usize = 1000;

/// The reset of the window in force at `wall` for `window`: its own while it lasts; once it is
/// past, the next one's (its reset plus its length, until an answer says), so that calls made
/// between a reset and the next answer count toward the new window. `None`: not counted (a
/// window of unknown length past its reset).
fn in_force(name: &str, window: &super::Window, wall: SystemTime) -> Option<Option<SystemTime>> {
    let reset = window.reset();
    match reset {
        Some(at) if at <= wall => {
            let length = window_length(name)?;
            let mut next = at;
            while next <= wall {
                next = next.checked_add(length)?;
            }
            Some(Some(next))
        }
        _ => Some(reset),
    }
}

/// The calls a capped client was granted toward one window of one account.
#[derive(Debug, Clone)]
struct Counted {
    owner: Owner,
    /// `None`: calls granted before the account's windows were known (its first answers); they
    /// count toward each window that was open then.
    window: Option<String>,
    calls: u64,
    /// The window's reset when they were counted (a window with another reset is a new one);
    /// for calls before the windows were known, when they were made.
    reset: Option<SystemTime>,
}

/// Every capped client's counts, per account and window (a client touches a window or four).
#[derive(Debug, Default)]
pub struct CapCounts {
    by_client: HashMap<Arc<str>, (Instant, Vec<Counted>)>,
}

impl CapCounts {
    fn calls(&self, client: &str, owner: &Owner, window: &str, reset: Option<SystemTime>) -> u64 {
        let Some((_, counts)) = self.by_client.get(client) else {
            return 0;
        };
        // When the window opened: calls made since, before its reset was known, count too.
        let opened = reset
            .zip(window_length(window))
            .and_then(|(r, length)| r.checked_sub(length + RESET_SLACK));
        counts
            .iter()
            .filter(|c| &c.owner == owner)
            .filter(|c| match &c.window {
                Some(name) => name == window && same_reset(c.reset, reset),
                None => c
                    .reset
                    .zip(opened)
                    .is_some_and(|(made, opened)| made >= opened),
            })
            .map(|c| c.calls)
            .sum()
    }

    /// Calls under `from` (a key) are its account's once the key joins one.
    fn move_owner(&mut self, from: &Owner, to: &Owner) {
        for (_, counts) in self.by_client.values_mut() {
            for c in counts.iter_mut().filter(|c| &c.owner == from) {
                c.owner = to.clone();
            }
        }
    }

    /// The wall clock stepped: every reset counted moves with it.
    fn shift(&mut self, step: super::Step) {
        for (_, counts) in self.by_client.values_mut() {
            for c in counts.iter_mut() {
                c.reset = c.reset.and_then(|at| step.apply(at));
            }
        }
    }

    fn count(
        &mut self,
        client: &Arc<str>,
        (owner, window): (&Owner, Option<&str>),
        reset: Option<SystemTime>,
        now: Instant,
    ) {
        if !self.by_client.contains_key(client) && self.by_client.len() >= MAX_COUNTED {
            let oldest = self
                .by_client
                .iter()
                .min_by_key(|(_, (last, _))| *last)
                .map(|(client, _)| client.clone());
            if let Some(client) = oldest {
                self.by_client.remove(&client);
            }
        }
        let (last, counts) = self
            .by_client
            .entry(client.clone())
            .or_insert_with(|| (now, Vec::new()));
        *last = now;
        let same = |c: &Counted| match window {
            // Calls before the windows were known: counted together, from the first.
            None => c.window.is_none(),
            Some(name) => c.window.as_deref() == Some(name) && same_reset(c.reset, reset),
        };
        match counts.iter_mut().find(|c| &c.owner == owner && same(c)) {
            Some(c) => c.calls += 1,
            None => counts.push(Counted {
                owner: owner.clone(),
                window: window.map(str::to_owned),
                calls: 1,
                reset,
            }),
        }
    }

    /// Forgets counts of windows that reset before `wall`.
    fn expire(&mut self, wall: SystemTime) {
        let week = Duration::from_secs(7 * 24 * 3600);
        for (_, counts) in self.by_client.values_mut() {
            counts.retain(|c| match c.window {
                Some(_) => c.reset.is_none_or(|reset| reset + RESET_SLACK > wall),
                // No window lasts longer than a week.
                None => c.reset.is_some_and(|made| made + week > wall),
            });
        }
        self.by_client.retain(|_, (_, counts)| !counts.is_empty());
    }
}

impl Windows {
    /// Whether `client`'s calls to `owner`'s `class` are held by its cap (`max_share` of each
    /// window) now: one more call would bring its use of a window past the cap. The first call
    /// of a window always goes (a cap below what one call costs would otherwise hold it for
    /// good).
    pub fn cap_hold(
        &self,
        (owner, class): (&Owner, &Arc<str>),
        (client, max_share): (&str, f64),
        clock: &TimeBase,
        now: Instant,
    ) -> Option<Hold> {
        let account = self.accounts.get(owner)?;
        let wall = clock.to_wall(now);
        account
            .covering(class)
            .filter_map(|(name, window)| {
                let reset = in_force(name, window, wall)?;
                let calls = self.caps.calls(client, owner, name, reset);
                let used = (calls + 1) as f64 * window.estimate.share();
                (calls > 0 && used > max_share + 1e-9).then(|| Hold {
                    window: name.clone(),
                    priority: Priority::Normal,
                    allowed: max_share,
                    cause: HoldCause::Cap,
                    until: reset.map(|at| clock.to_instant(at)),
                })
            })
            .max_by_key(|hold| hold.until)
    }

    /// A capped client was granted a call of `owner`'s `class`: counted toward each window
    /// covering it (the next one, for a window past its reset).
    pub fn count_capped(
        &mut self,
        (owner, class): (&Owner, &Arc<str>),
        client: &Arc<str>,
        clock: &TimeBase,
        now: Instant,
    ) {
        let wall = clock.to_wall(now);
        let windows: Vec<(String, Option<SystemTime>)> = self
            .accounts
            .get(owner)
            .map(|account| {
                account
                    .covering(class)
                    .filter_map(|(name, window)| {
                        Some((name.clone(), in_force(name, window, wall)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if windows.is_empty() {
            // Not known yet (the account's first answers): counted toward the windows open now.
            self.caps.count(client, (owner, None), Some(wall), now);
        }
        for (name, reset) in windows {
            self.caps.count(client, (owner, Some(&name)), reset, now);
        }
    }

    /// A key's counts become its account's when it joins one.
    pub(super) fn move_caps(&mut self, from: &Owner, to: &Owner) {
        self.caps.move_owner(from, to);
    }

    /// The wall clock stepped: the counts' resets move with the windows'.
    pub(super) fn shift_caps(&mut self, step: super::Step) {
        self.caps.shift(step);
    }

    /// What `client` used of the window of `owner` it used most (as counted), if it is capped
    /// and used any.
    pub fn cap_use(&self, owner: &Owner, client: &str, wall: SystemTime) -> Option<f64> {
        let account = self.accounts.get(owner)?;
        account
            .windows
            .iter()
            .filter_map(|(name, window)| {
                let reset = in_force(name, window, wall)?;
                Some(self.caps.calls(client, owner, name, reset) as f64 * window.estimate.share())
            })
            .filter(|used| *used > 0.0)
            .max_by(f64::total_cmp)
    }

    /// Forgets the counts of windows that reset (every tick).
    pub fn expire_caps(&mut self, wall: SystemTime) {
        self.caps.expire(wall);
    }
}
