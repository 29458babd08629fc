//! Lockouts: an owner's requests (all of them, or one model class's) refused at once, without
//! going upstream, until a time — a spent subscription window, a 429 whose wait outlasts what a
//! request may be held, a spend cap. Waiting cannot help any of these within a request's life,
//! so the caller hears it now: the gateway answers with the API's own 429 (kept here as the
//! [`Answer`]), socket clients get `Rejected` with the time it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pacer_api::Answer;
use pacer_api::unified::{Unified, window_class};
use pacer_protocol::message::{BudgetId, LockoutStatus, Rejected};

use super::owner::Owner;
use super::time::{TimeBase, later};

/// The longest wait a 429 is believed for: a subscription's weekly window resets within a
/// week; anything beyond 8 days is a broken header.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long every call of a key's account fails fast after a spend-cap 429.
pub const SPEND_CAP_BLOCK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct Lockout {
    pub until: Instant,
    /// Why, for users: "the 5h subscription window is spent", …
    pub reason: String,
    /// The API's answer that caused it, replayed to every request it refuses.
    pub rejection: Option<Arc<Answer>>,
}

/// What a lockout covers: every class of the owner (`None`), or one.
pub type Scope = Option<Arc<str>>;

impl Lockout {
    /// A spend cap's, from a 429 that says so: every call of the owner for
    /// [`SPEND_CAP_BLOCK`].
    pub fn spend_cap(message: Option<String>, rejection: Option<Answer>, now: Instant) -> Lockout {
        let reason = match message {
            Some(message) => format!("the API key's spend cap is reached: {message}"),
            None => "the API key's spend cap is reached (enforced_spend_limit_reached)".to_owned(),
        };
        Lockout {
            until: later(now, SPEND_CAP_BLOCK),
            reason,
            rejection: rejection.map(Arc::new),
        }
    }

    /// How an acquire of `owner`'s `class` it refuses is told.
    pub fn rejected(&self, owner: &Owner, class: &str, clock: &TimeBase) -> Rejected {
        Rejected {
            reason: self.reason.clone(),
            until: Some(clock.to_wall(self.until)),
            budget: Some(BudgetId {
                owner: owner.to_wire(),
                model_class: class.to_owned(),
            }),
        }
    }
}

/// The lockouts a 429 of spent subscription windows calls for: what each spent window covers
/// (every class, or one model's for a model-specific window) until its reset, or `fallback`
/// where none is known. Empty when the answer says no window is spent.
pub fn of_spent_windows(
    unified: &Unified,
    fallback: Instant,
    rejection: &Option<Arc<Answer>>,
    clock: &TimeBase,
    now: Instant,
) -> Vec<(Scope, Lockout)> {
    if !unified.is_spent() {
        return Vec::new();
    }
    let until = |reset: Option<SystemTime>| {
        reset
            .map(|at| clock.to_instant(at))
            .filter(|&at| at > now)
            .map_or(fallback, |at| at.min(later(now, MAX_RATE_LIMIT_WAIT)))
    };
    let lockout = |until, reason| Lockout {
        until,
        reason,
        rejection: rejection.clone(),
    };
    let mut lockouts: Vec<(Scope, Lockout)> = unified
        .rejected_windows()
        .iter()
        .map(|window| {
            let reason = format!("the {} subscription window is spent", window.name);
            let scope = window_class(&window.name).map(Arc::from);
            (
                scope,
                lockout(until(window.reset.or(unified.reset)), reason),
            )
        })
        .collect();
    if lockouts.is_empty() {
        let reason = "the subscription's limit is spent".to_owned();
        lockouts.push((None, lockout(until(unified.reset), reason)));
    }
    lockouts
}

#[derive(Debug, Default)]
pub struct Lockouts {
    by_owner: BTreeMap<Owner, BTreeMap<Scope, Lockout>>,
}

impl Lockouts {
    /// Locks `owner`'s `scope` out until `lockout.until`, unless a lockout of that scope already
    /// lasts longer. Returns whether it started or was extended.
    pub fn lock(&mut self, owner: &Owner, scope: Scope, lockout: Lockout) -> bool {
        let scopes = self.by_owner.entry(owner.clone()).or_default();
        match scopes.get(&scope) {
            Some(current) if current.until >= lockout.until => false,
            _ => {
                scopes.insert(scope, lockout);
                true
            }
        }
    }

    /// The lockout in force at `now` that covers `owner`'s `class`, the longest if several do.
    pub fn covering(&self, owner: &Owner, class: &str, now: Instant) -> Option<&Lockout> {
        self.by_owner
            .get(owner)?
            .iter()
            .filter(|(scope, lockout)| {
                scope.as_deref().is_none_or(|s| s == class) && lockout.until > now
            })
            .map(|(_, lockout)| lockout)
            .max_by_key(|lockout| lockout.until)
    }

    /// Lifts every lockout covering `owner`'s `class` (a lockout of every class included).
    /// Returns the scopes lifted.
    pub fn lift(&mut self, owner: &Owner, class: &str) -> Vec<Scope> {
        let Some(scopes) = self.by_owner.get_mut(owner) else {
            return Vec::new();
        };
        let lifted: Vec<Scope> = scopes
            .keys()
            .filter(|scope| scope.as_deref().is_none_or(|s| s == class))
            .cloned()
            .collect();
        for scope in &lifted {
            scopes.remove(scope);
        }
        if scopes.is_empty() {
            self.by_owner.remove(owner);
        }
        lifted
    }

    /// Removes the lockouts whose time has passed; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<(Owner, Scope)> {
        let mut ended = Vec::new();
        self.by_owner.retain(|owner, scopes| {
            scopes.retain(|scope, lockout| {
                let keep = lockout.until > now;
                if !keep {
                    ended.push((owner.clone(), scope.clone()));
                }
                keep
            });
            !scopes.is_empty()
        });
        ended
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_owner
            .values()
            .flat_map(|scopes| scopes.values())
            .map(|lockout| lockout.until)
            .min()
    }

    /// A key's lockouts become its account's when it joins one.
    pub fn move_owner(&mut self, from: &Owner, to: &Owner) {
        if let Some(scopes) = self.by_owner.remove(from) {
            for (scope, lockout) in scopes {
                self.lock(to, scope, lockout);
            }
        }
    }

    pub fn of(&self, owner: &Owner) -> impl Iterator<Item = (&Scope, &Lockout)> {
        self.by_owner.get(owner).into_iter().flatten()
    }

    /// `owner`'s lockouts in force, as `pacer status` shows them.
    pub fn status_of(&self, owner: &Owner, clock: &TimeBase, now: Instant) -> Vec<LockoutStatus> {
        self.of(owner)
            .filter(|(_, lockout)| lockout.until > now)
            .map(|(scope, lockout)| LockoutStatus {
                model_class: scope.as_deref().map(str::to_owned),
                until: clock.to_wall(lockout.until),
                reason: lockout.reason.clone(),
            })
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Owner, &Scope, &Lockout)> {
        self.by_owner
            .iter()
            .flat_map(|(owner, scopes)| scopes.iter().map(move |(s, l)| (owner, s, l)))
    }
}
