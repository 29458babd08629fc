//! The calls each account has in flight toward its subscription windows — granted, and not yet
//! answered (their cost is not in the utilization the API reports yet) — on this daemon and, as
//! they tell, on the other daemons sharing the account through Redis; and the calls the windows
//! held until they were refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::Priority;

use crate::owner::Owner;

/// How long what another daemon told of its calls counts without being told again (it tells
/// again every heartbeat while it has calls in flight).
pub const ELSEWHERE_TTL: Duration = Duration::from_secs(10);

/// What one daemon says of one account's calls: in flight toward its windows now, and answered
/// since it started (for the share each call is seen to cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    pub in_flight: u32,
    pub answered: u64,
}

#[derive(Debug, Clone, Copy)]
struct Elsewhere {
    told: InFlight,
    until: Instant,
}

#[derive(Debug, Default)]
pub struct WindowUse {
    /// This daemon's calls in flight, per account and model class.
    here: HashMap<(Owner, Arc<str>), u32>,
    /// Other daemons', per account and daemon.
    elsewhere: HashMap<Owner, HashMap<String, Elsewhere>>,
    /// Calls held by a window until they were refused, per account, window and priority.
    refused: HashMap<(Owner, String, Priority), u64>,
}

impl WindowUse {
    /// A call of `owner`'s `class` went out toward its windows.
    pub fn start(&mut self, owner: &Owner, class: &Arc<str>) {
        *self.here.entry((owner.clone(), class.clone())).or_default() += 1;
    }

    /// That call was answered (or will never be).
    pub fn end(&mut self, owner: &Owner, class: &Arc<str>) {
        let key = (owner.clone(), class.clone());
        if let Some(n) = self.here.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.here.remove(&key);
            }
        }
    }

    /// This daemon's calls of `owner` in flight (all classes), to tell the other daemons.
    pub fn here(&self, owner: &Owner) -> u32 {
        self.here
            .iter()
            .filter(|((o, _), _)| o == owner)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The accounts with calls in flight here.
    pub fn owners_here(&self) -> Vec<Owner> {
        let mut owners: Vec<Owner> = self.here.keys().map(|(o, _)| o.clone()).collect();
        owners.sort();
        owners.dedup();
        owners
    }

    /// Calls of `owner` in flight toward a window: of `class` only for a model-specific window,
    /// of every class otherwise; with those other daemons told of (not yet expired).
    pub fn calls(&self, owner: &Owner, class: Option<&str>) -> u32 {
        let here: u32 = self
            .here
            .iter()
            .filter(|((o, c), _)| o == owner && class.is_none_or(|class| &**c == class))
            .map(|(_, n)| *n)
            .sum();
        let elsewhere: u32 = self.elsewhere.get(owner).map_or(0, |daemons| {
            daemons.values().map(|e| e.told.in_flight).sum()
        });
        here.saturating_add(elsewhere)
    }

    /// Another daemon told of its calls for `owner`; returns by how many its answered count grew
    /// (what this daemon's share samples must count too).
    pub fn told(&mut self, owner: &Owner, daemon: &str, told: InFlight, now: Instant) -> u64 {
        let daemons = self.elsewhere.entry(owner.clone()).or_default();
        if !daemons.contains_key(daemon) && daemons.len() >= 256 {
            return 0;
        }
        let before = daemons.get(daemon).map_or(0, |e| e.told.answered);
        daemons.insert(
            daemon.to_owned(),
            Elsewhere {
                told,
                until: now + ELSEWHERE_TTL,
            },
        );
        // A restarted daemon counts from zero again: what it says is all new.
        if told.answered >= before {
            told.answered - before
        } else {
            told.answered
        }
    }

    /// Forgets what other daemons told that they have not told again in time.
    pub fn expire(&mut self, now: Instant) {
        self.elsewhere.retain(|_, daemons| {
            daemons.retain(|_, e| e.until > now);
            !daemons.is_empty()
        });
    }

    pub fn refused(&mut self, owner: &Owner, window: &str, priority: Priority) {
        *self
            .refused
            .entry((owner.clone(), window.to_owned(), priority))
            .or_default() += 1;
    }

    pub fn refused_of(&self, owner: &Owner, window: &str, priority: Priority) -> u64 {
        self.refused
            .get(&(owner.clone(), window.to_owned(), priority))
            .copied()
            .unwrap_or(0)
    }
}
