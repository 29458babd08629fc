//! A cap per client (`pacer run --max-share 10%`, `[windows.max_share]`): the most of each
//! subscription window one client may use, per window — counted from the calls pacer granted it,
//! at what one call was seen to cost of the window (`estimate`). Past it, the client's calls
//! are held like batch work past its ceiling until the window resets, and other clients go on.
//!
//! Per window rather than per hour: the window is what runs out. A tenth of a 5-hour window per
//! hour would let a loop take half of it; a tenth per window is a tenth, whenever it is spent.
//! The count is of calls, not of a share fixed at the time: each call costs what one call is
//! seen to cost now, so that the count is right as soon as the share is learned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Hold, HoldCause, Windows, window_length};
use crate::owner::Owner;
use crate::time::TimeBase;
use pacer_protocol::Priority;

/// The most capped clients whose counts are kept: past it, the least recently counted goes.
pub const MAX_COUNTED: usize = 1000;

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
            .map(|(r, length)| r - length);
        counts
            .iter()
            .filter(|c| &c.owner == owner)
            .filter(|c| match &c.window {
                Some(name) => name == window && c.reset == reset,
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
        match counts
            .iter_mut()
            .find(|c| &c.owner == owner && c.window.as_deref() == window)
        {
            // Calls before the windows were known: counted together, from the first.
            Some(c) if window.is_none() => c.calls += 1,
            // A window with another reset is a new window: counted from zero.
            Some(c) if c.reset != reset => {
                c.reset = reset;
                c.calls = 1;
            }
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
                Some(_) => c.reset.is_none_or(|reset| reset > wall),
                // No window lasts longer than a week.
                None => c.reset.is_some_and(|made| made + week > wall),
            });
        }
        self.by_client.retain(|_, (_, counts)| !counts.is_empty());
    }
}

impl Windows {
    /// Whether `client`'s calls to `owner`'s `class` are held by its cap (`max_share` of each
    /// window) now: the one more call would bring its use of a window past the cap.
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
            .filter(|(_, window)| window.current(wall).is_some())
            .filter_map(|(name, window)| {
                let calls = self.caps.calls(client, owner, name, window.reset());
                let used = (calls + 1) as f64 * window.estimate.share();
                (used > max_share + 1e-9).then(|| Hold {
                    window: name.clone(),
                    priority: Priority::Normal,
                    allowed: max_share,
                    cause: HoldCause::Cap,
                    until: window.reset().map(|at| clock.to_instant(at)),
                })
            })
            .max_by_key(|hold| hold.until)
    }

    /// A capped client was granted a call of `owner`'s `class`: counted toward each window
    /// covering it.
    pub fn count_capped(
        &mut self,
        (owner, class): (&Owner, &Arc<str>),
        client: &Arc<str>,
        clock: &TimeBase,
        now: Instant,
    ) {
        let windows: Vec<(String, Option<SystemTime>)> = self
            .accounts
            .get(owner)
            .map(|account| {
                account
                    .covering(class)
                    .map(|(name, window)| (name.clone(), window.reset()))
                    .collect()
            })
            .unwrap_or_default();
        if windows.is_empty() {
            // Not known yet (the account's first answers): counted toward the windows open now.
            let made = Some(clock.to_wall(now));
            self.caps.count(client, (owner, None), made, now);
        }
        for (name, reset) in windows {
            self.caps.count(client, (owner, Some(&name)), reset, now);
        }
    }

    /// A key's counts become its account's when it joins one.
    pub(super) fn move_caps(&mut self, from: &Owner, to: &Owner) {
        self.caps.move_owner(from, to);
    }

    /// What `client` used of the window of `owner` it used most (as counted), if it is capped
    /// and used any.
    pub fn cap_use(&self, owner: &Owner, client: &str, wall: SystemTime) -> Option<f64> {
        let account = self.accounts.get(owner)?;
        account
            .windows
            .iter()
            .filter(|(_, window)| window.current(wall).is_some())
            .map(|(name, window)| {
                self.caps.calls(client, owner, name, window.reset()) as f64
                    * window.estimate.share()
            })
            .filter(|used| *used > 0.0)
            .max_by(f64::total_cmp)
    }

    /// Forgets the counts of windows that reset (every tick).
    pub fn expire_caps(&mut self, wall: SystemTime) {
        self.caps.expire(wall);
    }
}
