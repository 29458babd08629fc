//! The kinds of 429 the API answers, each with what pacer does about it (protocol 6).

use serde::{Deserialize, Serialize};

/// What kind of 429 a call met, which says what pacer does about it. New in protocol 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Throttle {
    /// A per-minute limit (the 429 carries a `retry-after`, or rate-limit headers): every peer
    /// on the budget pauses until it has passed.
    PerMinute,
    /// A spent subscription window (`anthropic-ratelimit-unified-*` says `rejected`): the
    /// account, or the window's model class, is locked out until the window resets.
    Window,
    /// The spend cap: the key's account fails fast for a while.
    SpendCap,
    /// A bare 429 — nothing but `x-should-retry`: no `retry-after`, no rate-limit header of
    /// any name. It says nothing about the budget: the request alone is held and sent again,
    /// and nobody else pauses. When it meets a Claude Code session starting, new sessions are
    /// started at a pace pacer learns.
    Bare,
}

impl Throttle {
    pub const ALL: [Throttle; 4] = [
        Throttle::PerMinute,
        Throttle::Window,
        Throttle::SpendCap,
        Throttle::Bare,
    ];

    /// Its name in `pacer watch`, `status --json` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Throttle::PerMinute => "per-minute",
            Throttle::Window => "window",
            Throttle::SpendCap => "spend-cap",
            Throttle::Bare => "bare",
        }
    }

    /// What pacer does about it, in a few words.
    pub fn handling(self) -> &'static str {
        match self {
            Throttle::PerMinute => "every peer on the budget pauses",
            Throttle::Window => "the account is locked out until the window resets",
            Throttle::SpendCap => "the account's calls fail fast for a while",
            Throttle::Bare => "this request alone is held and sent again; nothing else pauses",
        }
    }
}

/// 429s reported, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttles {
    pub per_minute: u64,
    pub window: u64,
    pub spend_cap: u64,
    pub bare: u64,
}

impl Throttles {
    pub fn get(&self, kind: Throttle) -> u64 {
        match kind {
            Throttle::PerMinute => self.per_minute,
            Throttle::Window => self.window,
            Throttle::SpendCap => self.spend_cap,
            Throttle::Bare => self.bare,
        }
    }

    pub fn count(&mut self, kind: Throttle) {
        let n = match kind {
            Throttle::PerMinute => &mut self.per_minute,
            Throttle::Window => &mut self.window,
            Throttle::SpendCap => &mut self.spend_cap,
            Throttle::Bare => &mut self.bare,
        };
        *n += 1;
    }

    /// Adds another budget's counts (two budgets merged into one account).
    pub fn absorb(&mut self, other: &Throttles) {
        for kind in Throttle::ALL {
            let n = match kind {
                Throttle::PerMinute => &mut self.per_minute,
                Throttle::Window => &mut self.window,
                Throttle::SpendCap => &mut self.spend_cap,
                Throttle::Bare => &mut self.bare,
            };
            *n += other.get(kind);
        }
    }

    pub fn total(&self) -> u64 {
        Throttle::ALL.iter().map(|&kind| self.get(kind)).sum()
    }
}
