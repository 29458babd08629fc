//! The upstream response on its way to the client: passed through chunk by chunk, untouched,
//! while its usage is read from the bytes going past; the permit is settled when the body ends,
//! breaks, or the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame};
use pacer_client::api::usage::{Ended, UsageTap};
use pacer_protocol::message::{Headers, LeaseId, Outcome};

use crate::hub::Session;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settles the permit of a call once its response body is done.
pub struct Settle {
    pub session: Session,
    pub lease: LeaseId,
    pub headers: Headers,
    /// The client and the request's size, to calibrate later estimates with its real input.
    pub calibrate: Option<(String, usize)>,
}

pub use pacer_client::api::policy::input_bound;

impl Settle {
    fn finish(self, tap: &mut UsageTap, ended: Ended) {
        let mut outcome = tap.outcome(self.headers);
        if let (Outcome::Success { usage, .. }, Some((_, bytes))) = (&mut outcome, &self.calibrate)
        {
            // An answer claiming more input than its request could hold is not believed.
            let bound = input_bound(*bytes);
            usage.input_tokens = usage.input_tokens.min(bound);
            usage.cache_creation_input_tokens = usage
                .cache_creation_input_tokens
                .min(bound - usage.input_tokens);
        }
        if let (Outcome::Success { usage, .. }, Some((client, bytes))) = (&outcome, &self.calibrate)
            && ended == Ended::Complete
        {
            self.session
                .calibrate(client, *bytes, usage.counted_input_tokens());
        }
        self.session.report(self.lease, outcome);
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The response body handed to the client.
pub struct MeteredBody {
    upstream: ByteStream,
    tap: UsageTap,
    settle: Option<Settle>,
    /// The declared `content-length`, if any, and the bytes passed so far: a body of known
    /// length is complete when its last byte goes out (hyper does not poll it again after that).
    length: Option<u64>,
    passed: u64,
}

impl MeteredBody {
    pub fn new(
        upstream: ByteStream,
        tap: UsageTap,
        settle: Option<Settle>,
        length: Option<u64>,
    ) -> Self {
        Self {
            upstream,
            tap,
            settle,
            length,
            passed: 0,
        }
    }

    fn finish(&mut self, ended: Ended) {
        if let Some(settle) = self.settle.take() {
            settle.finish(&mut self.tap, ended);
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.upstream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.tap.feed(&chunk);
                self.passed += chunk.len() as u64;
                if self.length.is_some_and(|length| self.passed >= length) {
                    self.finish(Ended::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(Ended::Broken);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.finish(Ended::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish(Ended::Abandoned);
    }
}
