//! Where the broker's outputs go: answers to their connection's writer, events to the log and
//! to subscribers.

use std::sync::Arc;

use pacer_protocol::io::{Outbox, SendError};
use pacer_protocol::message::{ErrorKind, Event, ResponseFrame};
use tokio::sync::mpsc;

use super::handlers;
use super::{Hub, State};
use pacer_broker::Output;

/// Where a connection's responses go.
#[derive(Clone)]
pub enum Writer {
    /// A socket connection.
    Socket(Arc<Outbox>),
    /// An in-process session (the gateway), which reads its answers from a channel.
    Session(mpsc::UnboundedSender<ResponseFrame>),
}

impl Writer {
    pub fn send(&self, frame: ResponseFrame) {
        match self {
            Writer::Socket(outbox) => send(outbox, &frame),
            Writer::Session(tx) => {
                let _ = tx.send(frame);
            }
        }
    }
}

/// Sends a response on a connection; one that cannot be encoded is replaced by an error saying
/// so. (A closed connection needs no answer.)
pub fn send(outbox: &Outbox, frame: &ResponseFrame) {
    if let Err(SendError::Encode(e)) = outbox.send(frame) {
        tracing::error!("cannot encode a response: {e}");
        let fallback = ResponseFrame {
            id: frame.id,
            response: handlers::error(
                ErrorKind::InvalidRequest,
                format!("the response could not be sent: {e}"),
            ),
        };
        let _ = outbox.send(&fallback);
    }
}

/// Sends answers to their connections.
pub(super) fn deliver(deliveries: Vec<(Writer, ResponseFrame)>) {
    for (writer, frame) in deliveries {
        writer.send(frame);
    }
}

impl Hub {
    /// Publishes events, and pairs each answer with the connection it goes to.
    pub(super) fn route(
        &self,
        state: &mut State,
        outputs: Vec<Output>,
    ) -> Vec<(Writer, ResponseFrame)> {
        let mut deliveries = Vec::new();
        for output in outputs {
            match output {
                Output::Answer { ticket, response } => {
                    if let Some(writer) = state.writers.get(&ticket.conn) {
                        let frame = ResponseFrame {
                            id: ticket.request,
                            response,
                        };
                        deliveries.push((writer.clone(), frame));
                    }
                }
                Output::Claim(claim) => self.cluster.send(super::StoreWork::Claim(claim)),
                Output::Shared(op) => self.cluster.send(super::StoreWork::Op(op)),
                Output::Event(event) => {
                    if matches!(
                        event,
                        Event::PauseStarted { .. }
                            | Event::PauseEnded { .. }
                            | Event::Overloaded { .. }
                            | Event::KeyLinked { .. }
                            | Event::LockedOut { .. }
                            | Event::LockoutEnded { .. }
                    ) {
                        self.changes.pause_changed();
                    }
                    log_event(&event);
                    if state.subscribers > 0 {
                        let _ = self.events.send(event);
                    }
                }
            }
        }
        deliveries
    }
}

/// Refusals are logged at most once every few seconds, with the count of the rest.
static REFUSALS: crate::throttle::Throttle =
    crate::throttle::Throttle::new(std::time::Duration::from_secs(5));

fn log_event(event: &Event) {
    match event {
        Event::Granted { .. } | Event::Settled { .. } => {}
        Event::Refused {
            budget,
            client_id,
            reason,
        } => {
            // A client that keeps asking while a window is spent would write a line a request.
            if let Some(suppressed) = REFUSALS.admit() {
                let budget = budget.as_ref().map_or("-".to_owned(), ToString::to_string);
                if suppressed > 0 {
                    tracing::info!(
                        budget,
                        client = %client_id,
                        "refused by pacer: {reason} ({suppressed} more refusals since the last one logged)"
                    );
                } else {
                    tracing::info!(budget, client = %client_id, "refused by pacer: {reason}");
                }
            }
        }
        Event::PauseStarted {
            budget,
            until,
            reason,
        } => tracing::info!(
            %budget,
            until = %humantime::format_rfc3339_seconds(*until),
            reason = %reason,
            "pause started"
        ),
        Event::PauseEnded { budget } => tracing::info!(%budget, "pause ended"),
        Event::LimitLearned {
            budget,
            kind,
            limit,
        } => tracing::info!(%budget, kind = kind.short_name(), limit, "limit learned"),
        Event::Overloaded { model_class, until } => tracing::info!(
            model_class,
            until = %humantime::format_rfc3339_seconds(*until),
            "model class overloaded: backing off"
        ),
        Event::KeyLinked { key, account } => {
            tracing::info!(%key, account, "key joined its account")
        }
        Event::Window { owner, window } => tracing::info!(
            %owner,
            window = window.name,
            status = window.status.as_deref().unwrap_or("-"),
            utilization = window.utilization.unwrap_or_default(),
            "subscription window"
        ),
        Event::LockedOut {
            owner,
            model_class,
            until,
            reason,
        } => tracing::info!(
            %owner,
            model_class = model_class.as_deref().unwrap_or("every class"),
            until = %humantime::format_rfc3339_seconds(*until),
            reason = %reason,
            "locked out: requests are refused at once"
        ),
        Event::LockoutEnded { owner, model_class } => tracing::info!(
            %owner,
            model_class = model_class.as_deref().unwrap_or("every class"),
            "lockout ended"
        ),
        Event::StartPace {
            account,
            per_minute,
        } => {
            let whose = account
                .as_ref()
                .map_or("this machine".to_owned(), ToString::to_string);
            match per_minute {
                Some(rate) => tracing::info!(
                    account = %whose,
                    "new Claude Code sessions start one at a time, {rate:.1} a minute: the API \
                     answered sessions starting together with a bare 429"
                ),
                None => tracing::info!(
                    account = %whose,
                    "new Claude Code sessions start at once again (no bare 429 for a while)"
                ),
            }
        }
    }
}
