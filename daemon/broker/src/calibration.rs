//! Estimating a request's input tokens from its body, calibrated by what calls really used.
//!
//! A Claude Code request is a ~90 KB body even for "hi", most of it served from the prompt cache,
//! so bytes / 4 would reserve ~20k input tokens for a call that counts a few hundred. Each
//! client's ratio of counted input tokens (uncached input + cache writes) to body bytes is learned
//! from settled usage; a client with no history uses the ratio shared by all clients, and
//! before any history at all, a conservative 1 token per 4 bytes.
//!
//! The shared ratio is the **median over clients** of what their large bodies counted (one vote
//! each; bodies under [`MIN_TEACHING_BYTES`] do not vote, their count being more envelope than
//! bytes), held to between a sixteenth and twice the default ratio. So no one client — however
//! many calls it makes, however odd its bodies (a document by file id counts thousands of tokens
//! for a few bytes; the gateway does not let those teach at all) — sets what a newcomer is
//! estimated at: with others about, its vote is one among them; alone, it is held to the bounds.
//! (A 90 KB request reserving a tenth of what it counts leaves the budget in debt, and every
//! other client waiting it out; one reserving ten times too much waits for nothing.)
//!
//! A client's own ratio comes only from its own settled calls: the gateway calibrates for the
//! client that made the call, and a socket client only for a client id it has acquired with.

use std::collections::BTreeMap;

/// Tokens per byte before anything is known: about right for uncached English text and JSON.
const DEFAULT_TOKENS_PER_BYTE: f64 = 0.25;
/// Weight of each new sample in the moving averages.
const WEIGHT: f64 = 0.3;
/// The most clients remembered (each Claude Code session is a new one).
const MAX_CLIENTS: usize = 10_000;
/// The highest ratio believed: no request counts more than four tokens for each of its bytes
/// (see the gateway's `input_bound`).
const MAX_TOKENS_PER_BYTE: f64 = 4.0;
/// A body this large moves the shared ratio at the full [`WEIGHT`]; a smaller one in
/// proportion to its size…
const FULL_WEIGHT_BYTES: f64 = 16_384.0;
/// …and one smaller than this not at all: what a tiny call counts is its envelope more than its
/// bytes.
const MIN_TEACHING_BYTES: usize = 1024;
/// The shared ratio, as a newcomer's estimate, is held within these.
const SHARED_MIN: f64 = DEFAULT_TOKENS_PER_BYTE / 16.0;
const SHARED_MAX: f64 = DEFAULT_TOKENS_PER_BYTE * 2.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Ratio {
    tokens_per_byte: f64,
    samples: u64,
}

impl Ratio {
    fn record(&mut self, sample: f64) {
        self.tokens_per_byte = if self.samples == 0 {
            sample
        } else {
            self.tokens_per_byte + WEIGHT * (sample - self.tokens_per_byte)
        };
        self.samples += 1;
    }

    /// Moves from the default (before any sample) toward `sample` by `weight` of the usual step.
    fn record_weighted(&mut self, sample: f64, weight: f64) {
        let from = self.known().unwrap_or(DEFAULT_TOKENS_PER_BYTE);
        self.tokens_per_byte = from + WEIGHT * weight.clamp(0.0, 1.0) * (sample - from);
        self.samples += 1;
    }

    fn known(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.tokens_per_byte)
    }

    fn is_sane(&self) -> bool {
        self.tokens_per_byte.is_finite()
            && (0.0..=MAX_TOKENS_PER_BYTE).contains(&self.tokens_per_byte)
    }
}

/// Serialized as is into the state file, so estimates stay calibrated across restarts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    clients: BTreeMap<String, Ratio>,
    /// The ratio shared before the median (state files of earlier releases): used only until
    /// some client has voted.
    overall: Ratio,
    /// Each client's ratio over its large bodies alone: its vote for the shared ratio.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    votes: BTreeMap<String, Ratio>,
    /// The median of the votes, kept current as they change.
    #[serde(skip)]
    median: Option<f64>,
}

impl Calibration {
    /// The input tokens to reserve for a request body of `body_bytes` from `client`.
    pub fn estimate(&self, client: &str, body_bytes: usize) -> u64 {
        let ratio = self
            .clients
            .get(client)
            .and_then(Ratio::known)
            .or_else(|| self.shared())
            .unwrap_or(DEFAULT_TOKENS_PER_BYTE);
        (body_bytes as f64 * ratio).ceil() as u64
    }

    /// What a newcomer's body is estimated at, per byte: the median vote (or, before any,
    /// an earlier release's shared ratio), within the bounds.
    fn shared(&self) -> Option<f64> {
        let shared = self.median.or_else(|| self.overall.known())?;
        Some(shared.clamp(SHARED_MIN, SHARED_MAX))
    }

    /// The calibration from a state file, held to sense: a ratio no request can have (`1e300`,
    /// negative, not a number) is forgotten, and so are clients past the table's size.
    pub fn sane(mut self) -> Calibration {
        for table in [&mut self.clients, &mut self.votes] {
            table.retain(|_, ratio| ratio.is_sane());
            while table.len() > MAX_CLIENTS {
                let Some(evict) = table.keys().next().cloned() else {
                    break;
                };
                table.remove(&evict);
            }
        }
        if !self.overall.is_sane() {
            self.overall = Ratio::default();
        }
        self.median = median(&self.votes);
        self
    }

    /// Learns from a settled call: its body size and the input tokens that counted.
    pub fn record(&mut self, client: &str, body_bytes: usize, counted_input: u64) {
        if body_bytes == 0 {
            return;
        }
        let sample = (counted_input as f64 / body_bytes as f64).min(MAX_TOKENS_PER_BYTE);
        if !self.clients.contains_key(client) && self.clients.len() >= MAX_CLIENTS {
            // Forget some client to make room; any will do, the overall ratio remains.
            if let Some(evict) = self.clients.keys().next().cloned() {
                self.clients.remove(&evict);
            }
        }
        self.clients
            .entry(client.to_owned())
            .or_default()
            .record(sample);
        if body_bytes >= MIN_TEACHING_BYTES {
            if !self.votes.contains_key(client)
                && self.votes.len() >= MAX_CLIENTS
                && let Some(evict) = self.votes.keys().next().cloned()
            {
                self.votes.remove(&evict);
            }
            self.votes
                .entry(client.to_owned())
                .or_default()
                .record_weighted(sample, body_bytes as f64 / FULL_WEIGHT_BYTES);
            self.median = median(&self.votes);
        }
    }
}

/// The median of the clients' votes (the lower middle one of an even count).
fn median(votes: &BTreeMap<String, Ratio>) -> Option<f64> {
    let mut ratios: Vec<f64> = votes.values().filter_map(Ratio::known).collect();
    if ratios.is_empty() {
        return None;
    }
    let middle = (ratios.len() - 1) / 2;
    let (_, m, _) = ratios.select_nth_unstable_by(middle, f64::total_cmp);
    Some(*m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_a_quarter_token_per_byte() {
        let calibration = Calibration::default();
        assert_eq!(calibration.estimate("claude", 90_000), 22_500);
    }

    #[test]
    fn a_cache_heavy_client_soon_reserves_what_it_really_uses() {
        let mut calibration = Calibration::default();
        // Claude Code: 90 KB bodies that count ~400 input tokens once cached.
        for _ in 0..5 {
            calibration.record("claude", 90_000, 400);
        }
        assert!(calibration.estimate("claude", 90_000) <= 500);
    }

    #[test]
    fn each_client_has_its_own_ratio_and_newcomers_borrow_the_shared_one() {
        let mut calibration = Calibration::default();
        calibration.record("cached", 100_000, 100);
        calibration.record("plain", 1_000, 250);
        assert_eq!(calibration.estimate("cached", 100_000), 100);
        assert_eq!(calibration.estimate("plain", 1_000), 250);
        let newcomer = calibration.estimate("new", 1_000);
        assert!(newcomer > 1 && newcomer < 250, "{newcomer}");
    }

    #[test]
    fn many_tiny_calls_do_not_set_what_a_newcomers_large_body_is_estimated_at() {
        let mut calibration = Calibration::default();
        // Two clients of 88-byte calls that count 9 tokens (a ratio of 0.1), a thousand times.
        for i in 0..1000 {
            calibration.record(["small-1", "small-2"][i % 2], 88, 9);
        }
        // A newcomer's 117 KB body still reserves a quarter token a byte.
        assert_eq!(calibration.estimate("claude-session", 117_660), 29_415);
        // Large bodies move it at full weight: a cache-heavy client teaches it fast…
        for _ in 0..20 {
            calibration.record("cached", 90_000, 400);
        }
        let newcomer = calibration.estimate("another-session", 90_000);
        // …down to a sixteenth of the default at the least.
        assert_eq!(newcomer, (90_000.0 * SHARED_MIN).ceil() as u64);
    }

    #[test]
    fn absurd_samples_and_saved_ratios_are_held_to_sense() {
        let mut calibration = Calibration::default();
        calibration.record("liar", 1000, 1_000_000_000_000_000_000);
        assert_eq!(calibration.estimate("liar", 1000), 4000);
        let saved: Calibration = serde_json::from_str(
            r#"{"clients":{"a":{"tokens_per_byte":1e300,"samples":3},"b":{"tokens_per_byte":0.1,"samples":2}},"overall":{"tokens_per_byte":-5.0,"samples":9}}"#,
        )
        .unwrap();
        let sane = saved.sane();
        assert_eq!(
            sane.estimate("a", 1000),
            250,
            "forgotten: the default ratio"
        );
        assert_eq!(sane.estimate("b", 1000), 100);
    }

    #[test]
    fn one_client_cannot_skew_what_newcomers_are_estimated_at() {
        let mut calibration = Calibration::default();
        // Three ordinary clients: 90 KB bodies counting a quarter token a byte.
        for client in ["a", "b", "c"] {
            for _ in 0..5 {
                calibration.record(client, 90_000, 22_500);
            }
        }
        let before = calibration.estimate("newcomer", 90_000);
        assert_eq!(before, 22_500);
        // One client whose bodies count four tokens a byte (or that says so), many times.
        for _ in 0..1000 {
            calibration.record("skewed", 90_000, 360_000);
        }
        assert_eq!(calibration.estimate("newcomer", 90_000), before);
        assert_eq!(calibration.estimate("skewed", 90_000), 360_000, "its own");
        // Alone, it moves the shared ratio no further than the bound.
        let mut alone = Calibration::default();
        for _ in 0..1000 {
            alone.record("skewed", 90_000, 360_000);
        }
        assert_eq!(
            alone.estimate("newcomer", 90_000),
            (90_000.0 * SHARED_MAX) as u64
        );
        // The votes survive a restart.
        let saved: Calibration =
            serde_json::from_str(&serde_json::to_string(&calibration).unwrap()).unwrap();
        assert_eq!(saved.sane().estimate("newcomer", 90_000), before);
    }

    #[test]
    fn memory_is_bounded() {
        let mut calibration = Calibration::default();
        for i in 0..MAX_CLIENTS + 10 {
            calibration.record(&format!("c{i}"), 100, 10);
        }
        assert_eq!(calibration.clients.len(), MAX_CLIENTS);
    }
}
