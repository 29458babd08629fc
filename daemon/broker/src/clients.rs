//! Who uses the budgets: per client id (a `pacer run --name`, a Claude Code session, a script),
//! its grants, tokens, waits and refusals, for `pacer status --clients`, `pacer top` and the
//! metrics. Clients not seen for [`CLIENTS_SEEN_WITHIN`] are forgotten, and at most
//! [`MAX_CLIENTS`] are kept (the least recently seen go first).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_protocol::Priority;
use pacer_protocol::message::{BudgetId, ClientStatus, Event};
use pacer_protocol::status::CLIENTS_SEEN_WITHIN;

use super::TimeBase;

/// The most clients tracked at once.
pub const MAX_CLIENTS: usize = 1000;

#[derive(Debug, Clone)]
struct Client {
    priority: Priority,
    budget: Option<BudgetId>,
    granted: u64,
    input_tokens: u64,
    output_tokens: u64,
    waited_total: Duration,
    refused: u64,
    last_seen: Instant,
    /// Its cap on each window, as its latest acquire asked.
    max_share: Option<f64>,
}

impl Client {
    fn new(now: Instant) -> Client {
        Client {
            priority: Priority::Normal,
            budget: None,
            granted: 0,
            input_tokens: 0,
            output_tokens: 0,
            waited_total: Duration::ZERO,
            refused: 0,
            last_seen: now,
            max_share: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Clients {
    by_id: HashMap<Arc<str>, Client>,
    /// When clients not seen for a while were last forgotten.
    last_prune: Option<Instant>,
}

/// How often clients not seen for a while are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Clients {
    fn touch(&mut self, id: &str, now: Instant) -> &mut Client {
        if !self.by_id.contains_key(id) {
            if self.by_id.len() >= MAX_CLIENTS {
                self.forget_oldest();
            }
            self.by_id.insert(Arc::from(id), Client::new(now));
        }
        let client = self.by_id.get_mut(id).expect("just inserted");
        client.last_seen = client.last_seen.max(now);
        client
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .by_id
            .iter()
            .min_by_key(|(_, c)| c.last_seen)
            .map(|(id, _)| id.clone())
        {
            self.by_id.remove(&oldest);
        }
    }

    /// A client asked for a permit on `budget`, capped at `max_share` of each window.
    pub fn asked(
        &mut self,
        id: &str,
        (priority, max_share): (Priority, Option<f64>),
        budget: BudgetId,
        now: Instant,
    ) {
        let client = self.touch(id, now);
        client.priority = priority;
        client.budget = Some(budget);
        client.max_share = max_share;
    }

    /// A client was granted a permit after waiting `waited`.
    pub fn granted(&mut self, id: &str, waited: Duration, now: Instant) {
        let client = self.touch(id, now);
        client.granted += 1;
        client.waited_total += waited;
    }

    /// A client's call was settled with these input and output tokens.
    pub fn settled(&mut self, id: &str, (input, output): (u64, u64), now: Instant) {
        let client = self.touch(id, now);
        client.input_tokens += input;
        client.output_tokens += output;
    }

    /// pacer refused a client's acquire on `budget` (or it timed out in the queue) for
    /// `reason`: the event that tells it.
    pub fn refused(
        &mut self,
        id: &str,
        budget: Option<BudgetId>,
        reason: &str,
        now: Instant,
    ) -> Event {
        self.touch(id, now).refused += 1;
        Event::Refused {
            budget,
            client_id: id.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Whether it is time to forget those not seen for a while (at most once a minute).
    pub fn prune_due(&mut self, now: Instant) -> bool {
        if self
            .last_prune
            .is_some_and(|at| now.saturating_duration_since(at) < PRUNE_EVERY)
        {
            return false;
        }
        self.last_prune = Some(now);
        true
    }

    /// Budget `from` became `into` (its key joined an account): the clients that used it are
    /// shown on the budget under the name the budget table gives it now.
    pub fn rename_budget(&mut self, from: &BudgetId, into: &BudgetId) {
        for client in self.by_id.values_mut() {
            if client.budget.as_ref() == Some(from) {
                client.budget = Some(into.clone());
            }
        }
    }

    /// Forgets clients not seen for [`CLIENTS_SEEN_WITHIN`].
    pub fn prune(&mut self, now: Instant) {
        self.by_id
            .retain(|_, c| now.saturating_duration_since(c.last_seen) < CLIENTS_SEEN_WITHIN);
    }

    /// Every client seen recently, busiest first; `waiting` gives, per client id, how many of
    /// its acquires wait now and since when the oldest does.
    pub fn status(
        &self,
        waiting: &HashMap<&str, (u32, Instant)>,
        time_base: &TimeBase,
        now: Instant,
    ) -> Vec<ClientStatus> {
        let mut out: Vec<ClientStatus> = self
            .by_id
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_seen) < CLIENTS_SEEN_WITHIN)
            .map(|(id, c)| {
                let (count, since) = waiting.get(&**id).copied().unwrap_or((0, now));
                ClientStatus {
                    id: id.to_string(),
                    priority: c.priority,
                    budget: c.budget.clone(),
                    granted: c.granted,
                    input_tokens: c.input_tokens,
                    output_tokens: c.output_tokens,
                    waiting: count,
                    longest_wait: (count > 0).then(|| now.saturating_duration_since(since)),
                    waited_total: c.waited_total,
                    refused: c.refused,
                    last_seen: time_base.to_wall(c.last_seen),
                    max_share: c.max_share,
                    window_use: None,
                    capped: false,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (b.input_tokens + b.output_tokens, b.granted, &a.id).cmp(&(
                a.input_tokens + a.output_tokens,
                a.granted,
                &b.id,
            ))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_protocol::{BudgetOwner, KeyFingerprint};
    use std::time::SystemTime;

    fn budget() -> BudgetId {
        BudgetId {
            owner: BudgetOwner::Key(KeyFingerprint::of("k")),
            model_class: "sonnet".into(),
        }
    }

    #[test]
    fn clients_are_counted_sorted_and_forgotten() {
        let t0 = Instant::now();
        let base = TimeBase {
            instant: t0,
            wall: SystemTime::UNIX_EPOCH,
        };
        let mut clients = Clients::default();
        let (a, b) = ("a", "b");
        clients.asked(a, (Priority::Batch, None), budget(), t0);
        clients.granted(a, Duration::from_secs(2), t0);
        clients.settled(a, (10, 5), t0);
        clients.asked(b, (Priority::Interactive, None), budget(), t0);
        clients.granted(b, Duration::ZERO, t0);
        clients.settled(b, (100, 50), t0);
        clients.refused(b, None, "held too long", t0);
        let waiting = HashMap::from([(a, (2, t0))]);
        let later = t0 + Duration::from_secs(3);
        let status = clients.status(&waiting, &base, later);
        assert_eq!(status[0].id, "b");
        assert_eq!(
            (status[0].refused, status[0].priority),
            (1, Priority::Interactive)
        );
        assert_eq!(status[1].waiting, 2);
        assert_eq!(status[1].longest_wait, Some(Duration::from_secs(3)));
        assert_eq!(status[1].waited_total, Duration::from_secs(2));
        clients.prune(t0 + CLIENTS_SEEN_WITHIN);
        assert!(clients.status(&waiting, &base, later).is_empty());
    }

    #[test]
    fn at_most_max_clients_are_kept() {
        let t0 = Instant::now();
        let mut clients = Clients::default();
        for i in 0..MAX_CLIENTS + 10 {
            clients.refused(
                &format!("c{i}"),
                None,
                "",
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(clients.by_id.len(), MAX_CLIENTS);
        assert!(!clients.by_id.contains_key("c0"));
    }
}
