//! The state every connection task and the timer share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pacer_protocol::message::{Event, GatewayInfo, ResponseFrame};
use tokio::sync::{Notify, broadcast, mpsc};

use pacer_protocol::io::{Outbox, SendError};
use pacer_protocol::message::ErrorKind;

use crate::broker::{Broker, ConnId, Output};

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

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 4096;

pub struct Shared {
    state: Mutex<State>,
    /// Wakes the timer task when the broker's next wakeup may have moved earlier.
    pub timer: Notify,
    events: broadcast::Sender<Event>,
    next_conn: AtomicU64,
    /// Counts broker operations, so the saver can tell whether anything changed.
    generation: AtomicU64,
    /// Wakes the saver when a pause or backoff starts or ends.
    pub pause_changed: Notify,
    /// Where the HTTP gateway listens, for `pacer run`.
    pub gateway: GatewayInfo,
}

pub struct State {
    broker: Broker,
    writers: HashMap<ConnId, Writer>,
    /// When the timer task will next tick, so that only an earlier wakeup disturbs it.
    scheduled: Option<Instant>,
    subscribers: usize,
}

impl Shared {
    pub fn new(broker: Broker, gateway: GatewayInfo) -> Self {
        Self {
            state: Mutex::new(State {
                broker,
                writers: HashMap::new(),
                scheduled: None,
                subscribers: 0,
            }),
            timer: Notify::new(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            next_conn: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            pause_changed: Notify::new(),
            gateway,
        }
    }

    /// A number for a new connection or in-process session.
    pub fn new_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug that already aborted that connection; the
        // broker's state is still consistent between operations, so carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one broker operation and delivers its outputs; `f` returns the outputs and whatever
    /// the caller wants back.
    pub fn update<R>(&self, f: impl FnOnce(&mut Broker, Instant) -> (Vec<Output>, R)) -> R {
        let (result, deliveries) = {
            let mut state = self.lock();
            let now = super::now();
            let (outputs, result) = f(&mut state.broker, now);
            self.generation.fetch_add(1, Ordering::Relaxed);
            let deliveries = state.route(outputs, &self.events, &self.pause_changed);
            let next = state.broker.next_wakeup(now);
            if next.is_some_and(|next| state.scheduled.is_none_or(|s| next < s)) {
                self.timer.notify_one();
            }
            (result, deliveries)
        };
        // Written after the lock is released: other connections need not wait for the sockets.
        deliver(deliveries);
        result
    }

    /// Applies what time alone has changed; returns when to come back.
    pub fn tick(&self) -> Option<Instant> {
        let (next, deliveries) = {
            let mut state = self.lock();
            let now = super::now();
            let outputs = state.broker.tick(now);
            if !outputs.is_empty() {
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
            let deliveries = state.route(outputs, &self.events, &self.pause_changed);
            let next = state.broker.next_wakeup(now);
            state.scheduled = next;
            (next, deliveries)
        };
        deliver(deliveries);
        next
    }

    pub fn register(&self, conn: ConnId, writer: Writer) {
        self.lock().writers.insert(conn, writer);
    }

    /// A connection closed: forget its writer and settle what it held.
    pub fn unregister(&self, conn: ConnId) {
        self.update(|broker, now| {
            let outputs = broker.disconnect(now, conn);
            (outputs, ())
        });
        self.lock().writers.remove(&conn);
    }

    /// Starts a subscription to events; the broker produces grant events while any is open.
    pub fn subscribe(&self) -> Subscription<'_> {
        let mut state = self.lock();
        state.subscribers += 1;
        state.broker.set_events(true);
        Subscription {
            shared: self,
            events: self.events.subscribe(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The broker's durable state, as of now.
    pub fn snapshot(&self) -> crate::broker::BrokerState {
        self.lock().broker.snapshot(super::now())
    }

    /// Leases held by open connections and gateway requests.
    pub fn leases_in_flight(&self) -> usize {
        self.lock().broker.leases_in_flight()
    }

    /// One line for the service manager's STATUS.
    pub fn summary(&self) -> String {
        let summary = self.lock().broker.summary(super::now());
        format!(
            "{} budgets, {} calls in flight, {} waiting, {} paused",
            summary.budgets, summary.in_flight, summary.waiting, summary.paused
        )
    }

    /// The daemon is stopping: every waiting acquire is told so.
    pub fn stop(&self) {
        self.update(|broker, _| (broker.stop(), ()));
    }
}

/// Sends a response on a connection; one that cannot be encoded is replaced by an error saying
/// so. (A closed connection needs no answer.)
pub fn send(outbox: &Outbox, frame: &ResponseFrame) {
    if let Err(SendError::Encode(e)) = outbox.send(frame) {
        tracing::error!("cannot encode a response: {e}");
        let fallback = ResponseFrame {
            id: frame.id,
            response: super::handlers::error(
                ErrorKind::InvalidRequest,
                format!("the response could not be sent: {e}"),
            ),
        };
        let _ = outbox.send(&fallback);
    }
}

/// Sends answers to their connections.
fn deliver(deliveries: Vec<(Writer, ResponseFrame)>) {
    for (writer, frame) in deliveries {
        writer.send(frame);
    }
}

impl State {
    /// Publishes events, and pairs each answer with the connection it goes to.
    fn route(
        &mut self,
        outputs: Vec<Output>,
        events: &broadcast::Sender<Event>,
        pause_changed: &Notify,
    ) -> Vec<(Writer, ResponseFrame)> {
        let mut deliveries = Vec::new();
        for output in outputs {
            match output {
                Output::Answer { ticket, response } => {
                    if let Some(writer) = self.writers.get(&ticket.conn) {
                        let frame = ResponseFrame {
                            id: ticket.request,
                            response,
                        };
                        deliveries.push((writer.clone(), frame));
                    }
                }
                Output::Event(event) => {
                    if !matches!(event, Event::Granted { .. } | Event::LimitLearned { .. }) {
                        pause_changed.notify_one();
                    }
                    log_event(&event);
                    if self.subscribers > 0 {
                        let _ = events.send(event);
                    }
                }
            }
        }
        deliveries
    }
}

/// An open subscription; dropping it ends it.
pub struct Subscription<'a> {
    shared: &'a Shared,
    pub events: broadcast::Receiver<Event>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.subscribers -= 1;
        let on = state.subscribers > 0;
        state.broker.set_events(on);
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Granted { .. } => {}
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
    }
}
