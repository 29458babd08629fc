//! A subscription's windows, as `anthropic-ratelimit-unified-*` headers report them.
//!
//! Claude Pro/Max traffic (OAuth tokens) carries an overall `-unified-status` (`allowed`,
//! `allowed_warning`, `rejected`), `-unified-reset`, `-unified-representative-claim` (the window
//! that decides, e.g. `five_hour`), `-unified-fallback-percentage`, `-unified-overage-*`, and per
//! window `-unified-<window>-{status,utilization,reset}` for `5h`, `7d` and model-specific
//! windows such as `7d_opus`. Utilization is a spent fraction (0.0–1.0); resets are epoch
//! seconds or RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pacer_protocol::text::bounded;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the unified headers of one response say. Empty when the response had none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unified {
    pub status: Option<WindowState>,
    /// When the overall limit resets.
    pub reset: Option<SystemTime>,
    /// The claim that decides the overall status (`five_hour`, `seven_day`, …).
    pub representative_claim: Option<String>,
    pub fallback_percentage: Option<f64>,
    pub overage_status: Option<WindowState>,
    pub overage_reset: Option<SystemTime>,
    pub overage_disabled_reason: Option<String>,
    /// `-unified-overage-in-use`: the account is spending extra usage now.
    pub overage_in_use: Option<bool>,
    /// Every window reported, sorted by name.
    pub windows: Vec<UnifiedWindow>,
}

/// One window (`5h`, `7d`, `7d_opus`, …): what the API said of it. The one shape of a window:
/// the broker keeps it (beside its estimate), daemons tell each other of it in this form (JSON,
/// the reset in epoch seconds); `pacer status` (the socket protocol's `WindowStatus`) and the
/// state file (`SavedWindow`) have their own formats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnifiedWindow {
    pub name: String,
    pub status: Option<WindowState>,
    /// The spent fraction, 0.0 to 1.0.
    pub utilization: Option<f64>,
    #[serde(with = "epoch_seconds")]
    pub reset: Option<SystemTime>,
}

/// A window's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    Allowed,
    /// Allowed, but close to the limit.
    AllowedWarning,
    /// Spent: requests are refused until the reset.
    Rejected,
    /// A status this parser does not know.
    Other(String),
}

impl WindowState {
    pub fn parse(value: &str) -> WindowState {
        match value.trim().to_ascii_lowercase().as_str() {
            "allowed" => WindowState::Allowed,
            "allowed_warning" => WindowState::AllowedWarning,
            "rejected" => WindowState::Rejected,
            other => WindowState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            WindowState::Allowed => "allowed",
            WindowState::AllowedWarning => "allowed_warning",
            WindowState::Rejected => "rejected",
            WindowState::Other(other) => other,
        }
    }
}

/// As its name; read back held to a window name's length (whoever can write to the channel
/// may send anything).
impl Serialize for WindowState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WindowState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(WindowState::parse(&bounded(&text, MAX_WINDOW_NAME)))
    }
}

/// A reset time as whole seconds since the Unix epoch (held below 2⁴⁰ when read back).
mod epoch_seconds {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        let secs = at.and_then(|at| at.duration_since(UNIX_EPOCH).ok());
        secs.map(|d| d.as_secs()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let secs = Option::<u64>::deserialize(d)?;
        Ok(secs.map(|s| UNIX_EPOCH + Duration::from_secs(s.min(1 << 40))))
    }
}

impl Unified {
    /// Whether no unified header was present.
    pub fn is_empty(&self) -> bool {
        *self == Unified::default()
    }

    /// Reads one header whose name followed `anthropic-ratelimit-unified-`; unknown names and
    /// malformed values are ignored.
    pub(crate) fn parse_header(&mut self, rest: &str, value: &str) {
        let value = value.trim();
        match rest {
            "status" => self.status = Some(WindowState::parse(value)),
            "reset" => self.reset = parse_reset(value),
            "representative-claim" => {
                self.representative_claim = Some(pacer_protocol::text::bounded(value, 64))
            }
            "fallback-percentage" => self.fallback_percentage = value.parse().ok(),
            "overage-status" => self.overage_status = Some(WindowState::parse(value)),
            "overage-reset" => self.overage_reset = parse_reset(value),
            "overage-disabled-reason" => {
                self.overage_disabled_reason = Some(pacer_protocol::text::bounded(value, 64))
            }
            "overage-in-use" => self.overage_in_use = value.to_ascii_lowercase().parse().ok(),
            _ => {
                let Some((name, field)) = rest.rsplit_once('-') else {
                    return;
                };
                if !is_window_name(name) {
                    return;
                }
                let window = self.window_mut(name);
                match field {
                    "status" => window.status = Some(WindowState::parse(value)),
                    "utilization" => window.utilization = parse_utilization(value),
                    "reset" => window.reset = parse_reset(value),
                    _ => {}
                }
            }
        }
    }

    fn window_mut(&mut self, name: &str) -> &mut UnifiedWindow {
        let at = match self.windows.binary_search_by(|w| w.name.as_str().cmp(name)) {
            Ok(at) => at,
            Err(at) => {
                let window = UnifiedWindow {
                    name: name.to_owned(),
                    status: None,
                    utilization: None,
                    reset: None,
                };
                self.windows.insert(at, window);
                at
            }
        };
        &mut self.windows[at]
    }

    /// Forgets resets past `horizon` (no window is longer than a week): one 2⁴⁰ s ahead would
    /// hold calls for good.
    pub fn forget_resets_past(&mut self, horizon: SystemTime) {
        let bounded = |at: Option<SystemTime>| at.filter(|at| *at <= horizon);
        self.reset = bounded(self.reset);
        self.overage_reset = bounded(self.overage_reset);
        for window in &mut self.windows {
            window.reset = bounded(window.reset);
        }
    }

    /// Moves every reset from one clock to another: `from` and `to` are the same moment on
    /// each (the API's `Date`, and this machine's clock when the answer came).
    pub fn shift(&mut self, from: SystemTime, to: SystemTime) {
        let moved = |at: Option<SystemTime>| {
            at.and_then(|at| match at.duration_since(from) {
                Ok(ahead) => to.checked_add(ahead),
                Err(behind) => to.checked_sub(behind.duration()),
            })
        };
        self.reset = moved(self.reset);
        self.overage_reset = moved(self.overage_reset);
        for window in &mut self.windows {
            window.reset = moved(window.reset);
        }
    }

    /// Whether the headers say the subscription is spent: a window, or the overall status,
    /// `rejected`.
    pub fn is_spent(&self) -> bool {
        self.status == Some(WindowState::Rejected)
            || self
                .windows
                .iter()
                .any(|w| w.status == Some(WindowState::Rejected))
    }

    /// The windows that are spent. When the overall status is `rejected` but no window says
    /// so, the representative claim names it (`five_hour` → `5h`, `seven_day_opus` → `7d_opus`).
    pub fn rejected_windows(&self) -> Vec<&UnifiedWindow> {
        let rejected: Vec<&UnifiedWindow> = self
            .windows
            .iter()
            .filter(|w| w.status == Some(WindowState::Rejected))
            .collect();
        if !rejected.is_empty() || self.status != Some(WindowState::Rejected) {
            return rejected;
        }
        let claimed = self.representative_claim.as_deref().map(window_of_claim);
        self.windows
            .iter()
            .filter(|w| Some(w.name.as_str()) == claimed.as_deref())
            .collect()
    }
}

/// The window a representative claim names: `five_hour` → `5h`, `seven_day` → `7d`,
/// `seven_day_opus` → `7d_opus`.
pub fn window_of_claim(claim: &str) -> String {
    let claim = claim.trim().to_ascii_lowercase();
    for (long, short) in [("five_hour", "5h"), ("seven_day", "7d"), ("one_day", "1d")] {
        if let Some(rest) = claim.strip_prefix(long) {
            return format!("{short}{rest}");
        }
    }
    claim
}

/// The model class a window is limited to (`7d_opus` → `opus`); `None` for windows over every
/// model (`5h`, `7d`).
pub fn window_class(name: &str) -> Option<&str> {
    name.split_once('_')
        .map(|(_, class)| class)
        .filter(|c| !c.is_empty())
}

/// Two readings of a window's reset this close are one window's: the resets the API reports move
/// by a second or two from one answer to the next when read against its `Date`, and a new
/// window's reset is hours after the last one's.
pub const RESET_SLACK: Duration = Duration::from_secs(600);

/// Whether two resets read of a window are one window's (see [`RESET_SLACK`]).
pub fn same_reset(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a
            .duration_since(b)
            .or_else(|_| b.duration_since(a))
            .is_ok_and(|d| d <= RESET_SLACK),
        _ => false,
    }
}

/// The window as people call it: `the 5-hour window`, `the weekly opus window`.
pub fn window_title(name: &str) -> String {
    let class = window_class(name);
    let length = match name.split('_').next() {
        Some("5h") => "5-hour".to_owned(),
        Some("7d") => "weekly".to_owned(),
        Some(other) => other.to_owned(),
        None => name.to_owned(),
    };
    match class {
        Some(class) => format!("the {length} {class} window"),
        None => format!("the {length} window"),
    }
}

/// The longest window name taken (real ones are `5h`, `7d`, `7d_opus`).
pub const MAX_WINDOW_NAME: usize = 32;

/// Whether `name` can be a window's: 1 to [`MAX_WINDOW_NAME`] letters, digits or `_`. Names
/// from a state file or another daemon are held to the same rule as those from headers.
pub fn is_window_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_WINDOW_NAME && name.bytes().all(is_name_byte)
}

/// A utilization from a state file or another daemon, held to sense: finite, from 0 up to 10
/// (a window is reported a little over 1.0 when spent; headers are parsed the same way).
pub fn sane_utilization(utilization: f64) -> Option<f64> {
    (utilization.is_finite() && utilization >= 0.0).then(|| utilization.min(10.0))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A spent fraction. Reported as 0.0–1.0; a value above 1.5 is read as a percentage.
fn parse_utilization(value: &str) -> Option<f64> {
    let n: f64 = value
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some(if n > 1.5 { (n / 100.0).min(10.0) } else { n })
}

/// A reset time: epoch seconds (integer or decimal) or RFC 3339.
fn parse_reset(value: &str) -> Option<SystemTime> {
    if let Ok(secs) = value.parse::<f64>() {
        let since_epoch = Duration::try_from_secs_f64(secs).ok()?;
        return SystemTime::UNIX_EPOCH.checked_add(since_epoch);
    }
    humantime::parse_rfc3339_weak(value.trim_end_matches("+00:00")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_crosses_to_other_daemons_as_json_with_its_reset_in_epoch_seconds() {
        let window = UnifiedWindow {
            name: "5h".into(),
            status: Some(WindowState::AllowedWarning),
            utilization: Some(0.5),
            reset: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        };
        let json = serde_json::to_string(&window).unwrap();
        assert_eq!(
            json,
            r#"{"name":"5h","status":"allowed_warning","utilization":0.5,"reset":1800000000}"#
        );
        assert_eq!(
            serde_json::from_str::<UnifiedWindow>(&json).unwrap(),
            window
        );
        // What another daemon (or whoever writes to the channel) sends is held to bounds.
        let hostile = format!(
            r#"{{"name":"7d","status":"{}","utilization":null,"reset":{}}}"#,
            "x".repeat(1000),
            u64::MAX
        );
        let read: UnifiedWindow = serde_json::from_str(&hostile).unwrap();
        assert_eq!(read.status.unwrap().as_str().len(), MAX_WINDOW_NAME);
        assert_eq!(read.reset, Some(UNIX_EPOCH + Duration::from_secs(1 << 40)));
    }
    use crate::ratelimit::RateLimitHeaders;

    fn parse(pairs: &[(&str, &str)]) -> Unified {
        // Read at a moment before the resets these headers give (a reset further than 8 days
        // ahead is not believed).
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        RateLimitHeaders::parse(pairs.iter().copied(), now).unified
    }

    #[test]
    fn a_spent_five_hour_window() {
        let unified = parse(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", "1800003600"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
            (
                "anthropic-ratelimit-unified-overage-disabled-reason",
                "org_level_disabled",
            ),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-5h-reset", "1800003600"),
            ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.3"),
            (
                "anthropic-ratelimit-unified-7d-reset",
                "2026-12-01T00:00:00Z",
            ),
            ("anthropic-ratelimit-unified-7d_opus-utilization", "0.92"),
        ]);
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(unified.status, Some(WindowState::Rejected));
        assert_eq!(unified.reset, Some(at(1_800_003_600)));
        assert_eq!(unified.representative_claim.as_deref(), Some("five_hour"));
        assert_eq!(unified.fallback_percentage, Some(0.5));
        assert_eq!(unified.overage_status, Some(WindowState::Rejected));
        let names: Vec<&str> = unified.windows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["5h", "7d", "7d_opus"]);
        assert_eq!(unified.windows[0].utilization, Some(1.0));
        assert_eq!(unified.windows[0].reset, Some(at(1_800_003_600)));
        assert_eq!(
            unified.windows[1].reset,
            Some(humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap())
        );
        assert_eq!(unified.windows[2].status, None);
        let spent: Vec<&str> = unified
            .rejected_windows()
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(spent, ["5h"]);
    }

    #[test]
    fn the_representative_claim_names_the_spent_window_when_no_window_does() {
        let unified = parse(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "seven_day_opus",
            ),
            ("anthropic-ratelimit-unified-7d_opus-utilization", "1"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.2"),
        ]);
        let spent: Vec<&str> = unified
            .rejected_windows()
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(spent, ["7d_opus"]);
        assert_eq!(window_class("7d_opus"), Some("opus"));
        assert_eq!(window_class("5h"), None);
        assert_eq!(window_of_claim("five_hour"), "5h");
    }

    #[test]
    fn odd_values_are_ignored_or_read_sensibly() {
        let unified = parse(&[
            ("anthropic-ratelimit-unified-5h-utilization", "42"),
            ("anthropic-ratelimit-unified-7d-utilization", "-1"),
            ("anthropic-ratelimit-unified-7d-reset", "soon"),
            ("anthropic-ratelimit-unified-bad name-status", "rejected"),
            ("anthropic-ratelimit-unified-status", "Allowed_Warning"),
        ]);
        assert_eq!(unified.windows[0].utilization, Some(0.42), "a percentage");
        assert_eq!(unified.windows[1].utilization, None);
        assert_eq!(unified.windows[1].reset, None);
        assert_eq!(unified.windows.len(), 2);
        assert_eq!(unified.status, Some(WindowState::AllowedWarning));
        assert!(parse(&[("content-type", "x")]).is_empty());
    }
}
