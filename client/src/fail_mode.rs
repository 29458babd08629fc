//! What a client does when pacerd cannot be reached.

/// What to do when pacerd cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Proceed without pacing: acquires return an unbrokered permit, after one warning. The
    /// client reconnects by itself once the daemon is back. The default: pacer should never be
    /// the reason a call is not made.
    #[default]
    Open,
    /// Acquires fail with [`crate::Error::Unreachable`].
    Closed,
}
