//! The hub: the broker shared by every front end, and what delivers its answers.
//!
//! The socket server and the gateway both use the hub and neither owns it. Every broker
//! operation runs under one mutex (each is short and never awaits while holding it); answers to
//! acquires that waited may come out of any operation and are routed to their connection's
//! writer once the lock is released. One timer task calls [`Broker::tick`] when the broker's
//! next wakeup comes.
//!
//! - this file: [`Hub`]: mutating operations ([`Hub::update`]), read-only ones ([`Hub::read`],
//!   which leave the state clean for the saver), the timer's tick, connections joining and
//!   leaving, event subscriptions;
//! - `deliver`: where answers and events go (a socket's outbox, a gateway session, the log,
//!   subscribers);
//! - `handlers`: one function per request, shared by socket connections and sessions;
//! - `session`: an in-process client of the broker, for the gateway;
//! - [`routes`]: upstreams registered by wrapped commands with an endpoint of their own;
//! - `parts`: what the hub holds beside the broker, each with its own small API: the saver's
//!   [`Changes`], the calls in flight a stopping daemon waits for, the [`Stats`], the
//!   [`ClusterLink`];
//! - `timer`: the task that ticks the broker.

pub mod clock;
mod deliver;
pub mod handlers;
mod parts;
pub mod routes;
mod session;
mod timer;

pub use deliver::{Writer, send};
pub use parts::{Changes, ClusterLink, Settling, Stats, StoreWork};
pub use session::Session;
pub use timer::drive as drive_timer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pacer_protocol::message::{DaemonStatus, Event, GatewayInfo, RouteInfo, RouteStatus};
use tokio::sync::{Notify, broadcast};

use pacer_broker::{Broker, BrokerState, Calibration, ConnId, Output};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 4096;

/// The moment, from tokio's clock (so that tests can pause and advance it).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub struct Hub {
    /// The broker and what is kept beside it, under one mutex.
    state: Mutex<State>,
    /// Wakes the timer task when the broker's next wakeup may have moved earlier.
    timer: Notify,
    events: broadcast::Sender<Event>,
    next_conn: AtomicU64,
    changes: Changes,
    settling: Settling,
    stats: Stats,
    cluster: ClusterLink,
    /// Where the HTTP gateway listens, for `pacer run`.
    gateway: GatewayInfo,
}

struct State {
    broker: Broker,
    /// Input-token estimates for gateway requests, learned from real usage.
    calibration: Calibration,
    routes: routes::Routes,
    writers: HashMap<ConnId, Writer>,
    /// When the timer task will next tick, so that only an earlier wakeup disturbs it.
    scheduled: Option<Instant>,
    subscribers: usize,
    /// The real clocks' jumps (sleep, wall-clock steps), found and applied.
    drift: clock::Drift,
}

impl Hub {
    pub fn new(broker: Broker, calibration: Calibration, gateway: GatewayInfo) -> Self {
        Self::with_clocks(broker, calibration, gateway, Box::new(clock::SystemClocks))
    }

    /// A hub reading `clocks` for their jumps (tests give clocks they move by hand).
    pub fn with_clocks(
        broker: Broker,
        calibration: Calibration,
        gateway: GatewayInfo,
        clocks: Box<dyn clock::Clocks>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                broker,
                calibration,
                routes: routes::Routes::default(),
                writers: HashMap::new(),
                scheduled: None,
                subscribers: 0,
                drift: clock::Drift::new(clocks),
            }),
            timer: Notify::new(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            next_conn: AtomicU64::new(1),
            changes: Changes::default(),
            settling: Settling::default(),
            stats: Stats::default(),
            cluster: ClusterLink::default(),
            gateway,
        }
    }

    /// A number for a new connection or in-process session.
    pub fn new_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug that already aborted that connection; the
        // broker's state is still consistent between operations, so carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The broker's `now`: tokio's clock plus the time the machine slept (see [`clock`]),
    /// once the clocks' jumps since the last call are applied, each logged once.
    fn broker_now(&self, state: &mut State) -> Instant {
        for jump in state.drift.check() {
            match jump {
                clock::Jump::Slept(slept) => tracing::info!(
                    "the machine slept for {}: pauses and lockouts that ran out meanwhile are over",
                    humantime::format_duration(whole_seconds(slept))
                ),
                clock::Jump::Stepped(step) => {
                    let (way, by) = match step {
                        pacer_broker::Step::Forward(by) => ("forward", by),
                        pacer_broker::Step::Back(by) => ("back", by),
                    };
                    tracing::warn!(
                        "the wall clock stepped {way} by {} (an NTP correction, or set by hand): \
                         windows' resets move with it; waits keep the API's own clock",
                        humantime::format_duration(whole_seconds(by))
                    );
                    state.broker.rebase(step);
                    self.changes.bump();
                }
            }
        }
        now() + state.drift.slept()
    }

    /// Runs one broker operation that may change the state, and delivers its outputs; `f`
    /// returns the outputs and whatever the caller wants back.
    pub fn update<R>(&self, f: impl FnOnce(&mut Broker, Instant) -> (Vec<Output>, R)) -> R {
        let (result, deliveries) = {
            let mut state = self.lock();
            let now = self.broker_now(&mut state);
            let (outputs, result) = f(&mut state.broker, now);
            self.changes.bump();
            let deliveries = self.route(&mut state, outputs);
            let next = state.broker.next_wakeup(now);
            if next.is_some_and(|next| state.scheduled.is_none_or(|s| next < s)) {
                self.timer.notify_one();
            }
            self.count_in_flight(&state.broker);
            (result, deliveries)
        };
        // Written after the lock is released: other connections need not wait for the sockets.
        deliver::deliver(deliveries);
        result
    }

    /// Reads the broker without changing what the state file holds (`pacer status`, the
    /// service manager's summary): the saver is not woken for it.
    pub fn read<R>(&self, f: impl FnOnce(&Broker, Instant) -> R) -> R {
        let mut state = self.lock();
        let now = self.broker_now(&mut state);
        f(&state.broker, now)
    }

    /// Applies what time alone has changed; returns when to come back, on tokio's clock.
    fn tick(&self) -> Option<Instant> {
        let (next, deliveries) = {
            let mut state = self.lock();
            let now = self.broker_now(&mut state);
            let outputs = state.broker.tick(now);
            if !outputs.is_empty() {
                self.changes.bump();
            }
            let deliveries = self.route(&mut state, outputs);
            let next = state.broker.next_wakeup(now);
            state.scheduled = next;
            self.count_in_flight(&state.broker);
            // The broker's clock is ahead of tokio's by the time slept.
            let slept = state.drift.slept();
            let next = next.map(|at| at.checked_sub(slept).unwrap_or(at));
            (next, deliveries)
        };
        deliver::deliver(deliveries);
        next
    }

    /// A connection joins: its answers go to `writer`.
    pub fn register(&self, conn: ConnId, writer: Writer) {
        self.lock().writers.insert(conn, writer);
    }

    /// A connection closed: forget its writer and settle what it held.
    pub fn unregister(&self, conn: ConnId) {
        self.update(|broker, now| (broker.disconnect(now, conn), ()));
        self.lock().writers.remove(&conn);
    }

    /// Starts a subscription to events; the broker produces grant events while any is open.
    pub fn subscribe(&self) -> Listener<'_> {
        let mut state = self.lock();
        state.subscribers += 1;
        state.broker.set_events(true);
        Listener {
            hub: self,
            events: self.events.subscribe(),
        }
    }

    /// The input tokens to reserve for a gateway request of `bytes` from `client`.
    pub fn estimate_input(&self, client: &str, bytes: usize) -> u64 {
        self.lock().calibration.estimate(client, bytes)
    }

    /// Learns from a settled gateway request: its size and the input tokens that counted.
    pub fn calibrate(&self, client: &str, bytes: usize, counted_input: u64) {
        self.lock().calibration.record(client, bytes, counted_input);
        self.changes.bump();
    }

    /// Registers an upstream for a wrapped command; the same upstream keeps its route.
    pub fn register_route(
        &self,
        upstream: &str,
        client: &str,
    ) -> Result<RouteInfo, routes::RouteError> {
        let url = routes::check_upstream(upstream)?;
        let shown = crate::config::shown_url(&url);
        let id = self.lock().routes.register(url, client, now())?;
        self.changes.bump();
        tracing::info!(route = id, upstream = shown, client, "route registered");
        Ok(RouteInfo {
            id,
            upstream: shown,
        })
    }

    /// The upstream of a registered route, noting that `client` uses it.
    pub fn resolve_route(&self, id: &str, client: &str) -> Option<reqwest::Url> {
        self.lock().routes.resolve(id, client, now())
    }

    /// Every registered route.
    pub fn routes(&self) -> Vec<RouteStatus> {
        let state = self.lock();
        let time_base = state.broker.time_base();
        state.routes.status(&time_base)
    }

    /// Routes from the state file.
    pub fn restore_routes(&self, saved: Vec<RouteStatus>) {
        let mut state = self.lock();
        let time_base = state.broker.time_base();
        state.routes.restore(saved, &time_base);
    }

    /// What the state file holds changing (for the saver).
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// The durable state as of now: the broker's, the gateway's calibration, the routes.
    pub fn snapshot(&self) -> (BrokerState, Calibration, Vec<RouteStatus>) {
        let mut state = self.lock();
        let now = self.broker_now(&mut state);
        let time_base = state.broker.time_base();
        (
            state.broker.snapshot(now),
            state.calibration.clone(),
            state.routes.saved(&time_base),
        )
    }

    fn count_in_flight(&self, broker: &Broker) {
        self.settling.count(broker.leases_in_flight());
    }

    /// Completes once no connection holds a lease (calls in flight have all reported). Only
    /// for a stopping daemon: see [`Hub::stop`].
    pub async fn settled(&self) {
        self.settling.settled().await
    }

    /// Leases held by open connections and gateway requests.
    pub fn leases_in_flight(&self) -> usize {
        self.settling.in_flight()
    }

    /// One line for the service manager's STATUS.
    pub fn summary(&self) -> String {
        let summary = self.read(|broker, now| broker.summary(now));
        format!(
            "{} budgets, {} calls in flight, {} waiting, {} paused",
            summary.budgets, summary.in_flight, summary.waiting, summary.paused
        )
    }

    /// The daemon's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The link to the shared store (when budgets are shared).
    pub fn cluster(&self) -> &ClusterLink {
        &self.cluster
    }

    /// The daemon as a whole: since when it runs, its connections, what it turned away.
    pub fn daemon_status(&self) -> DaemonStatus {
        let connections = self
            .lock()
            .writers
            .values()
            .filter(|w| matches!(w, Writer::Socket(_)))
            .count();
        DaemonStatus {
            started_at: Some(self.stats.started_at()),
            connections: connections as u32,
            refused_connections: self.stats.refusals(),
            state_saves: self.stats.saves(),
        }
    }

    /// Where the HTTP gateway listens.
    pub fn gateway_info(&self) -> &GatewayInfo {
        &self.gateway
    }

    /// The daemon is stopping: every waiting acquire is told so, and [`Hub::settled`] can be
    /// awaited.
    pub fn stop(&self) {
        self.settling.stop();
        self.update(|broker, _| (broker.stop(), ()));
    }
}

/// An open subscription; dropping it ends it.
pub struct Listener<'a> {
    hub: &'a Hub,
    pub events: broadcast::Receiver<Event>,
}

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.subscribers -= 1;
        let on = state.subscribers > 0;
        state.broker.set_events(on);
    }
}

/// `d` to the second (for messages).
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
