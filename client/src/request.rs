//! What to ask for: the builder for an acquire.

use std::time::Duration;

use pacer_protocol::message::{Acquire, BASIS_POINTS};
use pacer_protocol::{KeyFingerprint, Priority};
use tokio::time::Instant;

/// A request for a permit to make one API call.
///
/// ```
/// # use pacer_client::{AcquireRequest, Priority};
/// let request = AcquireRequest::new("sk-ant-...", "claude-sonnet-4-5")
///     .input_tokens(1200)
///     .max_tokens(1024)
///     .priority(Priority::Interactive);
/// ```
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    key: KeyFingerprint,
    model: String,
    priority: Priority,
    client_id: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    max_tokens: Option<u64>,
    deadline: Option<Instant>,
    detached_ttl: Option<Duration>,
    max_share_bp: Option<u16>,
}

impl AcquireRequest {
    /// A permit for a call with `api_key` to `model`. Only the key's fingerprint is kept.
    pub fn new(api_key: &str, model: impl Into<String>) -> Self {
        Self::for_key(KeyFingerprint::of(api_key), model)
    }

    /// Like [`AcquireRequest::new`], with the fingerprint already computed.
    pub fn for_key(key: KeyFingerprint, model: impl Into<String>) -> Self {
        Self {
            key,
            model: model.into(),
            priority: Priority::Normal,
            client_id: None,
            input_tokens: None,
            output_tokens: None,
            max_tokens: None,
            deadline: None,
            detached_ttl: None,
            max_share_bp: None,
        }
    }

    /// Estimated input tokens (uncached input plus cache writes). Without one, the budget's
    /// running average is reserved.
    pub fn input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = Some(n);
        self
    }

    /// Estimated output tokens. Without one, the budget's running average (capped at
    /// `max_tokens`) is reserved.
    pub fn output_tokens(mut self, n: u64) -> Self {
        self.output_tokens = Some(n);
        self
    }

    /// The call's `max_tokens`: caps the output estimate; never reserved itself.
    pub fn max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = Some(n);
        self
    }

    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Give up waiting at this moment: the acquire fails with [`crate::Error::TimedOut`].
    pub fn deadline(mut self, deadline: impl Into<Instant>) -> Self {
        self.deadline = Some(deadline.into());
        self
    }

    /// Give up waiting after this long.
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.deadline(deadline),
            // Beyond any representable moment: no deadline at all.
            None => self,
        }
    }

    /// Who is asking, for fairness between clients of one priority (default: one identity per
    /// process, or the one set on the client).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Make the permit outlive this connection (for scripts that acquire in one process and
    /// report in another); unreported, it settles by itself after `ttl`.
    pub fn detached(mut self, ttl: Duration) -> Self {
        self.detached_ttl = Some(ttl);
        self
    }

    /// Cap this client's use of each subscription window at `share` of it (0.1: 10 %), per
    /// window: past it, its calls wait (and time out) until the window resets, while other
    /// clients go on. Shares outside (0, 1] are refused by the daemon.
    pub fn max_share(mut self, share: f64) -> Self {
        let bp = (share * f64::from(BASIS_POINTS)).round();
        self.max_share_bp = Some(match bp {
            // A share above 0 is at least one basis point (not rounded to none at all).
            _ if share.is_finite() && share > 0.0 => bp.clamp(1.0, f64::from(u16::MAX)) as u16,
            _ => 0,
        });
        self
    }

    pub fn key(&self) -> KeyFingerprint {
        self.key
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The wire form, with the deadline made relative to now.
    pub(crate) fn to_wire(&self, default_client_id: &str) -> Acquire {
        Acquire {
            key: self.key,
            model: self.model.clone(),
            priority: self.priority,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id.to_owned()),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            max_tokens: self.max_tokens,
            deadline: self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now())),
            detached_ttl: self.detached_ttl,
            max_share_bp: self.max_share_bp,
        }
    }
}
