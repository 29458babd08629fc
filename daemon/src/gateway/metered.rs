//! The upstream response on its way to the client: passed through chunk by chunk, untouched,
//! while its usage is read from the bytes going past; the permit is settled when the body ends,
//! breaks, or the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame};
use pacer_api::call::{Action, GatedCall};
use pacer_api::usage::{Ended, UsageTap};
use pacer_protocol::message::LeaseId;

use crate::hub::Session;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settles the permit of a call once its response body is done, as its [`GatedCall`] says.
pub struct Settle {
    pub call: GatedCall,
    pub session: Session,
    pub lease: LeaseId,
    /// The client, whose later estimates learn from this call's real input.
    pub client: String,
}

impl Settle {
    fn finish(mut self, tap: &mut UsageTap, ended: Ended) {
        // The headers were fed to the broker when the answer's head arrived.
        self.call
            .ended(tap.outcome(Vec::new()), ended == Ended::Complete);
        loop {
            match self.call.poll(std::time::Instant::now()) {
                Action::Calibrate {
                    body_bytes,
                    counted_input,
                } => self
                    .session
                    .calibrate(&self.client, body_bytes, counted_input),
                Action::Report(outcome) => self.session.report(self.lease, outcome),
                Action::Done => return,
                other => {
                    tracing::error!("a streamed call asked for {other:?} after its body ended");
                    return;
                }
            }
        }
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
