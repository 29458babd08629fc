//! Budgets shared with the daemons of other machines, through Redis: the I/O half of the
//! broker's `shared` module.
//!
//! - this file: the tasks — claims and settlements carried to Redis as the broker asks,
//!   events from the other daemons brought in, a heartbeat that counts the daemons and renews
//!   this daemon's in-flight slots, and what happens when Redis goes away and comes back;
//! - `store`: one method per script call, each bounded in time;
//! - `scripts`: the Lua scripts (atomic, on Redis's clock);
//! - `keys`: where things are in Redis.
//!
//! Redis unreachable (at start or later) is logged once; with `on_unavailable = "local"` the
//! broker serves from its share of every limit (the limits divided by the daemons seen
//! recently) and charges what it spent when Redis is back; with `"closed"` nothing is granted
//! until then. Nothing here blocks a client on Redis for longer than a call's timeout.

mod keys;
pub mod scripts;
pub mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use pacer_protocol::message::{BudgetId, ClusterStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClusterConfig, OnUnavailable, shown_url};
use crate::hub::{Hub, StoreWork};
use crate::throttle::Throttle;
use crate::warn_throttled;
use pacer_broker::{ClaimAnswer, ClusterEvent, SharedOp, Sharing};
use store::{Keys, Message, Store, StoreError};

/// Values in Redis that were not valid are said once a minute.
static REPAIRED: Throttle = Throttle::new(Duration::from_secs(60));

/// How often the heartbeat runs (and a lost Redis is tried again).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Daemons seen within this window count toward the shares.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

/// The cluster's state, shared by its tasks.
struct Cluster {
    hub: Arc<Hub>,
    /// The URL as it may be shown (no password).
    shown: String,
    config: ClusterConfig,
    client: redis::Client,
    store: Store,
    connected: AtomicBool,
    daemons: AtomicU32,
    /// This daemon's leases in Redis (budget, claim), renewed by the heartbeat.
    leases: Mutex<HashSet<(BudgetId, u64)>>,
    problem: Mutex<Option<String>>,
}

/// Connects to Redis (or starts on the local share when it cannot), and starts the tasks (on
/// `tasks`) that run until `closing` fires.
pub async fn start(
    url: reqwest::Url,
    config: ClusterConfig,
    hub: Arc<Hub>,
    closing: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url.as_str())?;
    let daemon = daemon_id();
    let keys = Keys::new(&config.prefix);
    let shown = shown_url(&url);
    let (connected, store, problem) =
        match Store::connect(&client, keys.clone(), daemon.clone(), config.lease_ttl).await {
            Ok(store) => match store.ping().await {
                Ok(()) => (true, store, None),
                Err(e) => (false, store, Some(e.to_string())),
            },
            Err(e) => {
                // The manager is made lazily instead, and connects once Redis is there.
                let store = Store::lazy(&client, keys, daemon.clone(), config.lease_ttl)
                    .map_err(anyhow::Error::msg)?;
                (false, store, Some(e.to_string()))
            }
        };
    let cluster = Arc::new(Cluster {
        hub: hub.clone(),
        shown: shown.clone(),
        config,
        client,
        store,
        connected: AtomicBool::new(connected),
        daemons: AtomicU32::new(1),
        leases: Mutex::new(HashSet::new()),
        problem: Mutex::new(problem.clone()),
    });
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    hub.cluster().connect(work_tx);
    if connected {
        tracing::info!(redis = shown, daemon, "budgets are shared through Redis");
        cluster.heartbeat().await;
        hub.update(|broker, now| (broker.set_sharing(now, Sharing::Shared), ()));
        cluster.load_links().await;
    } else {
        let problem = problem.unwrap_or_default();
        tracing::warn!(
            redis = shown,
            "Redis is unreachable ({problem}); serving from this daemon's local share until it is back"
        );
        cluster.fall_back();
    }
    cluster.report();
    tasks.spawn(cluster.clone().carry(work_rx, closing.clone()));
    tasks.spawn(cluster.clone().listen(closing.clone()));
    tasks.spawn(cluster.beat(closing));
    Ok(())
}

/// `host:pid:random`: unique among the daemons on one Redis.
fn daemon_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{:08x}", std::process::id(), nonce)
}

impl Cluster {
    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The local share while Redis is away: the limits divided by the daemons last seen.
    fn fall_back(&self) {
        let sharing = match self.config.on_unavailable {
            OnUnavailable::Local => Sharing::Fallback {
                share: 1.0 / f64::from(self.daemons.load(Ordering::Relaxed).max(1)),
            },
            // The broker keeps asking; the claims are refused until Redis is back.
            OnUnavailable::Closed => Sharing::Shared,
        };
        self.hub
            .update(|broker, now| (broker.set_sharing(now, sharing), ()));
    }

    /// Redis failed a call: logged once, then the local share (or nothing, when closed).
    fn lost(&self, problem: &StoreError) {
        let problem = problem.to_string();
        if self.connected.swap(false, Ordering::Relaxed) {
            let share = self.daemons.load(Ordering::Relaxed).max(1);
            tracing::warn!(
                redis = self.shown,
                "Redis is unreachable ({problem}); {}",
                match self.config.on_unavailable {
                    OnUnavailable::Local => format!(
                        "serving from this daemon's local share (1/{share} of each limit) until it is back"
                    ),
                    OnUnavailable::Closed =>
                        "granting nothing until it is back (on_unavailable = \"closed\")".into(),
                }
            );
            *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem);
            self.fall_back();
            self.report();
        }
    }

    /// Redis answered again: back to the shared budgets (what the local share spent is charged).
    async fn found(&self) {
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(
                redis = self.shown,
                "Redis is back: budgets are shared again"
            );
            *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.hub
                .update(|broker, now| (broker.set_sharing(now, Sharing::Shared), ()));
            self.load_links().await;
            self.report();
        }
    }

    fn report(&self) {
        let local_share = match self.hub.read(|broker, _| broker.sharing()) {
            Sharing::Fallback { share } => Some(share),
            _ => None,
        };
        self.hub.cluster().set_status(ClusterStatus {
            redis: self.shown.clone(),
            connected: self.is_connected(),
            daemon_id: self.store.daemon.clone(),
            daemons: self.daemons.load(Ordering::Relaxed),
            local_share,
            problem: self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        });
    }

    /// Key → account links and subscription windows other daemons recorded.
    async fn load_links(&self) {
        if let Ok(links) = self.store.links().await {
            for (key, account) in links {
                let Ok(key) = key.parse() else { continue };
                let event = ClusterEvent::Link { key, account };
                self.hub
                    .update(|broker, now| (broker.apply_shared(now, "redis", event), ()));
            }
        }
        if let Ok(windows) = self.store.windows().await {
            for event in windows {
                self.hub
                    .update(|broker, now| (broker.apply_shared(now, "redis", event), ()));
            }
        }
    }

    /// Carries the broker's work to Redis, one item after the other, in the order the broker
    /// made them: a pause and the lift after it, two settlements, a key's merge into its account
    /// and the claim after it reach Redis in that order. (Each call is bounded in time, and a
    /// permit costs a round trip or two: one at a time is far more than any API's limits need.)
    async fn carry(
        self: Arc<Self>,
        mut work: mpsc::UnboundedReceiver<StoreWork>,
        closing: CancellationToken,
    ) {
        loop {
            let item = tokio::select! {
                item = work.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
                () = closing.cancelled() => return,
            };
            self.handle(item).await;
        }
    }

    async fn handle(&self, item: StoreWork) {
        match item {
            StoreWork::Claim(claim) => {
                let answer = if self.is_connected() {
                    match self.store.take(&claim).await {
                        Ok(taken) => {
                            if taken.repaired {
                                warn_throttled!(
                                    REPAIRED,
                                    "values in Redis for {} were not valid (not a number, out of \
                                     range): dropped, and the budget rebuilt",
                                    claim.budget
                                );
                            }
                            taken.answer
                        }
                        Err(e) => {
                            self.lost(&e);
                            self.unavailable_answer()
                        }
                    }
                } else {
                    self.unavailable_answer()
                };
                if matches!(answer, ClaimAnswer::Granted { .. }) {
                    self.leases
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((claim.budget.clone(), claim.id));
                }
                let id = claim.id;
                self.hub
                    .update(|broker, now| (broker.claim_answered(now, id, answer), ()));
            }
            StoreWork::Op(op) => {
                if let SharedOp::Settle { budget, claim, .. } = &op {
                    self.leases
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(budget.clone(), *claim));
                }
                if !self.is_connected() {
                    return;
                }
                let done = match &op {
                    SharedOp::Settle {
                        budget,
                        parent,
                        claim,
                        reserved,
                        used,
                        taken_before,
                    } => {
                        let mut budgets = vec![budget];
                        budgets.extend(parent.iter());
                        self.store
                            .settle(&budgets, *claim, reserved, used, *taken_before)
                            .await
                    }
                    SharedOp::Publish(event) => self.store.publish(event).await,
                    SharedOp::Charge { budget, spent } => self.store.charge(budget, spent).await,
                    SharedOp::Merge { from, into } => self.store.merge(from, into).await,
                };
                if let Err(e) = done {
                    self.lost(&e);
                }
            }
        }
    }

    /// What a claim gets while Redis is away: served locally (the broker is on its share), or
    /// refused for a second (closed).
    fn unavailable_answer(&self) -> ClaimAnswer {
        match self.config.on_unavailable {
            OnUnavailable::Local => ClaimAnswer::Unavailable,
            OnUnavailable::Closed => ClaimAnswer::Refused {
                wait: Duration::from_secs(1),
                limits: Default::default(),
            },
        }
    }

    /// Brings in what the other daemons publish; resubscribes after a disconnection.
    async fn listen(self: Arc<Self>, closing: CancellationToken) {
        let channel = self.store.keys.channel();
        loop {
            let subscribed = async {
                let mut pubsub =
                    tokio::time::timeout(Duration::from_secs(2), self.client.get_async_pubsub())
                        .await
                        .map_err(|_| "timed out".to_owned())?
                        .map_err(|e| e.to_string())?;
                pubsub
                    .subscribe(&channel)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(pubsub)
            };
            let pubsub = tokio::select! {
                pubsub = subscribed => pubsub,
                () = closing.cancelled() => return,
            };
            if let Ok(pubsub) = pubsub {
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        () = closing.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Message>(&payload) {
                        Ok(message) if message.from != self.store.daemon => {
                            let (from, event) = (message.from, message.event);
                            self.hub
                                .update(|broker, now| (broker.apply_shared(now, &from, event), ()));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!("unreadable cluster message: {e}"),
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT / 2) => {}
                () = closing.cancelled() => return,
            }
        }
    }

    /// One heartbeat: this daemon recorded as alive, the daemons counted, its leases renewed.
    /// Also how a lost Redis is noticed back.
    async fn heartbeat(&self) {
        // What this daemon has in flight toward its accounts' windows is told again.
        self.hub
            .update(|broker, now| (broker.windows_heartbeat(now), ()));
        match self.store.heartbeat(SEEN_WITHIN).await {
            Ok(daemons) => {
                self.daemons.store(daemons.max(1), Ordering::Relaxed);
                self.found().await;
                let leases: Vec<(BudgetId, u64)> = self
                    .leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                if let Err(e) = self.store.renew(&leases).await {
                    self.lost(&e);
                }
            }
            Err(e) => self.lost(&e),
        }
        self.report();
    }

    async fn beat(self: Arc<Self>, closing: CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT.min(self.config.lease_ttl / 3));
        loop {
            tokio::select! {
                _ = ticks.tick() => self.heartbeat().await,
                () = closing.cancelled() => return,
            }
        }
    }
}
