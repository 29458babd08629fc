//! Configured limits and model classes: which budget a call draws on, and what caps it.

use std::collections::HashMap;

use pacer_protocol::{KeyFingerprint, LimitKind};

/// The largest limit taken, from the configuration or a state file: far beyond any real
/// account's, small enough that no arithmetic on it overflows.
pub const MAX_LIMIT: u64 = 10_000_000_000;

/// The limits of one budget. `None` is not enforced (until learned from response headers, for
/// the three per-minute limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSet {
    pub rpm: Option<u64>,
    pub itpm: Option<u64>,
    pub otpm: Option<u64>,
    pub max_in_flight: Option<u32>,
}

impl LimitSet {
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::Requests => self.rpm,
            LimitKind::InputTokens => self.itpm,
            LimitKind::OutputTokens => self.otpm,
        }
    }

    /// The lower of the two for each limit set in both; whichever is set otherwise.
    pub fn min(self, other: LimitSet) -> LimitSet {
        fn lower<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        LimitSet {
            rpm: lower(self.rpm, other.rpm),
            itpm: lower(self.itpm, other.itpm),
            otpm: lower(self.otpm, other.otpm),
            max_in_flight: lower(self.max_in_flight, other.max_in_flight),
        }
    }

    /// Each limit from `self` where set, else from `fallback`.
    pub fn or(self, fallback: LimitSet) -> LimitSet {
        LimitSet {
            rpm: self.rpm.or(fallback.rpm),
            itpm: self.itpm.or(fallback.itpm),
            otpm: self.otpm.or(fallback.otpm),
            max_in_flight: self.max_in_flight.or(fallback.max_in_flight),
        }
    }
}

/// Limits from the configuration: per model class, and per key × class (which wins; for an
/// account, the lowest of its keys' wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitTable {
    pub per_class: HashMap<String, LimitSet>,
    pub per_key: HashMap<(KeyFingerprint, String), LimitSet>,
}

impl LimitTable {
    /// The configured limits of one key's budget.
    pub fn for_budget(&self, key: KeyFingerprint, class: &str) -> LimitSet {
        self.for_keys(&[key], class)
    }

    /// The configured limits of a budget shared by `keys` (an account's).
    pub fn for_keys(&self, keys: &[KeyFingerprint], class: &str) -> LimitSet {
        let per_key = keys
            .iter()
            .filter_map(|&key| self.per_key.get(&(key, class.to_owned())).copied())
            .reduce(LimitSet::min)
            .unwrap_or_default();
        let per_class = self.per_class.get(class).copied().unwrap_or_default();
        per_key.or(per_class)
    }
}

/// Maps model names to model classes: the configured patterns in order, then the defaults
/// (`*opus*` → opus, `*sonnet*` → sonnet, `*haiku*` → haiku); a model matching none is a class of
/// its own. Matching ignores case.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelClasses {
    rules: Vec<(String, String)>,
}

impl Default for ModelClasses {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl ModelClasses {
    /// `patterns` are `(glob, class)` pairs, tried before the defaults.
    pub fn new(patterns: Vec<(String, String)>) -> Self {
        let defaults = ["opus", "sonnet", "haiku"].map(|c| (format!("*{c}*"), c.to_owned()));
        let rules = patterns
            .into_iter()
            .map(|(glob, class)| (glob.to_ascii_lowercase(), class))
            .chain(defaults)
            .collect();
        Self { rules }
    }

    pub fn classify(&self, model: &str) -> String {
        let model = model.trim().to_ascii_lowercase();
        self.rules
            .iter()
            .find(|(glob, _)| glob_match(glob, &model))
            .map_or(model.clone(), |(_, class)| class.clone())
    }
}

/// Matches `text` against a glob where `*` is any run of characters and `?` any one character.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (glob, text): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut g, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently stretched to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classes() {
        let classes = ModelClasses::default();
        assert_eq!(classes.classify("claude-opus-4-1-20250805"), "opus");
        assert_eq!(classes.classify("claude-sonnet-4-5"), "sonnet");
        assert_eq!(classes.classify("Claude-3-5-Haiku-latest"), "haiku");
        assert_eq!(classes.classify("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn configured_patterns_come_first() {
        let classes = ModelClasses::new(vec![
            ("claude-3-7-*".into(), "sonnet-legacy".into()),
            ("gpt-*".into(), "openai".into()),
        ]);
        assert_eq!(
            classes.classify("claude-3-7-sonnet-latest"),
            "sonnet-legacy"
        );
        assert_eq!(classes.classify("gpt-4o-mini"), "openai");
        assert_eq!(classes.classify("claude-sonnet-4"), "sonnet");
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*opus*", "claude-opus-4"));
        assert!(glob_match("claude-?-*", "claude-3-opus"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abcbc"));
        assert!(!glob_match("a*b*c", "abcb"));
        assert!(!glob_match("opus", "claude-opus"));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn per_key_limits_win_field_by_field() {
        let key = KeyFingerprint::of("k");
        let mut table = LimitTable::default();
        table.per_class.insert(
            "sonnet".into(),
            LimitSet {
                rpm: Some(50),
                itpm: Some(30_000),
                ..Default::default()
            },
        );
        table.per_key.insert(
            (key, "sonnet".into()),
            LimitSet {
                rpm: Some(4000),
                ..Default::default()
            },
        );
        let limits = table.for_budget(key, "sonnet");
        assert_eq!(limits.rpm, Some(4000));
        assert_eq!(limits.itpm, Some(30_000));
        let other = table.for_budget(KeyFingerprint::of("other"), "sonnet");
        assert_eq!(other.rpm, Some(50));
        assert_eq!(table.for_budget(key, "opus"), LimitSet::default());
        // An account with two configured keys: the lower wins.
        let other = KeyFingerprint::of("other");
        table.per_key.insert(
            (other, "sonnet".into()),
            LimitSet {
                rpm: Some(1000),
                ..Default::default()
            },
        );
        let shared = table.for_keys(&[key, other, KeyFingerprint::of("plain")], "sonnet");
        assert_eq!((shared.rpm, shared.itpm), (Some(1000), Some(30_000)));
    }
}
