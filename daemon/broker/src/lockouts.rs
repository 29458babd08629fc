//! Lockouts: an owner's requests (all of them, or one model class's) refused at once, without
//! going upstream, until a time — a spent subscription window, a 429 whose wait outlasts what a
//! request may be held, a spend cap. Waiting cannot help any of these within a request's life,
//! so the caller hears it now: the gateway answers with the API's own 429 (kept here as the
//! [`Answer`]), socket clients get `Rejected` with the time it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use pacer_api::Answer;

use super::owner::Owner;

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

    pub fn iter(&self) -> impl Iterator<Item = (&Owner, &Scope, &Lockout)> {
        self.by_owner
            .iter()
            .flat_map(|(owner, scopes)| scopes.iter().map(move |(s, l)| (owner, s, l)))
    }
}
