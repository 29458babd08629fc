//! The parts the hub holds beside the broker, each with its own small API: what the saver
//! watches ([`Changes`]), the calls in flight a stopping daemon waits for ([`Settling`]), the
//! daemon's counters ([`Stats`]) and the link to the shared store ([`ClusterLink`]).

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use pacer_protocol::message::ClusterStatus;
use tokio::sync::{Notify, mpsc};

/// What the state file holds changed: a counter the saver compares, and a wake-up for the
/// changes it must not sit on (a pause or backoff starting or ending).
#[derive(Debug, Default)]
pub struct Changes {
    generation: AtomicU64,
    pause_changed: Notify,
}

impl Changes {
    /// Something the state file holds changed.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A pause or backoff started or ended: the saver writes at once.
    pub fn pause_changed(&self) {
        self.bump();
        self.pause_changed.notify_one();
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Completes the next time a pause or backoff starts or ends.
    pub async fn next_pause_change(&self) {
        self.pause_changed.notified().await
    }
}

/// The leases held by connections and gateway requests, and a stopping daemon's wait for them
/// to report.
#[derive(Debug, Default)]
pub struct Settling {
    in_flight: AtomicUsize,
    stopping: AtomicBool,
    settled: Notify,
}

impl Settling {
    /// `held` leases are in flight now.
    pub fn count(&self, held: usize) {
        self.in_flight.store(held, Ordering::Relaxed);
        if held == 0 && self.stopping.load(Ordering::Relaxed) {
            self.settled.notify_waiters();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// From now on, [`Settling::settled`] completes when the last lease settles.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Completes once no lease is in flight (only for a stopping daemon).
    pub async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The daemon's own counters, for `pacer status` and /metrics.
#[derive(Debug)]
pub struct Stats {
    refusals: AtomicU64,
    saves: AtomicU64,
    started_at: SystemTime,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            refusals: AtomicU64::new(0),
            saves: AtomicU64::new(0),
            started_at: SystemTime::now(),
        }
    }
}

impl Stats {
    /// Counts a connection or request turned away before it reached the broker.
    pub fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections and requests were turned away since the start.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Counts a write of the state file.
    pub fn count_save(&self) {
        self.saves.fetch_add(1, Ordering::Relaxed);
    }

    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }
}

/// Work for the shared store, from the broker.
#[derive(Debug)]
pub enum StoreWork {
    Claim(pacer_broker::Claim),
    Op(pacer_broker::SharedOp),
}

/// The link to the shared store, when budgets are shared (see `cluster`): where the broker's
/// claims and store work go, and how the store looked last.
#[derive(Debug, Default)]
pub struct ClusterLink {
    work: OnceLock<mpsc::UnboundedSender<StoreWork>>,
    status: Mutex<Option<ClusterStatus>>,
}

impl ClusterLink {
    /// Sends claims and store work to `work` from now on.
    pub fn connect(&self, work: mpsc::UnboundedSender<StoreWork>) {
        let _ = self.work.set(work);
    }

    pub fn send(&self, work: StoreWork) {
        match self.work.get() {
            Some(store) => {
                let _ = store.send(work);
            }
            None => tracing::debug!("no shared store for {work:?}"),
        }
    }

    /// Records what the cluster task sees of the shared store.
    pub fn set_status(&self, status: ClusterStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    pub fn status(&self) -> Option<ClusterStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
