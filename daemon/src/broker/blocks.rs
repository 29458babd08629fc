//! Keys whose acquires fail fast for a while, and why: the API said the key's spend cap is
//! reached, and retrying cannot help until it is lifted.

use std::collections::HashMap;
use std::time::Instant;

use pacer_protocol::KeyFingerprint;

#[derive(Debug, Default)]
pub struct Blocks {
    by_key: HashMap<KeyFingerprint, (Instant, String)>,
}

impl Blocks {
    /// Blocks `key` until `until` (a moment not after `now` blocks nothing).
    pub fn block(&mut self, key: KeyFingerprint, until: Instant, reason: String, now: Instant) {
        if until > now {
            self.by_key.insert(key, (until, reason));
        }
    }

    /// Why `key` is blocked at `now`, if it is; a block whose time has passed is forgotten.
    pub fn reason(&mut self, key: KeyFingerprint, now: Instant) -> Option<String> {
        let (until, reason) = self.by_key.get(&key)?;
        if *until > now {
            return Some(reason.clone());
        }
        self.by_key.remove(&key);
        None
    }

    /// The blocks still in force at `now`.
    pub fn in_force(&self, now: Instant) -> impl Iterator<Item = (KeyFingerprint, Instant, &str)> {
        self.by_key
            .iter()
            .filter(move |(_, (until, _))| *until > now)
            .map(|(key, (until, reason))| (*key, *until, reason.as_str()))
    }
}
