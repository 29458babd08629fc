//! The shared store: Redis, spoken through a connection manager that reconnects by itself,
//! with every call bounded in time. Each method is one script call (one round trip).

use std::time::Duration;

use pacer_protocol::LimitKind;
use pacer_protocol::message::BudgetId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use super::keys::Keys;
use super::scripts;
use pacer_broker::{
    Claim, ClaimAnswer, ClusterEvent, Costs, LimitSet, MAX_LIMIT, MAX_RATE_LIMIT_WAIT, PerKind,
};
use pacer_protocol::text::{self, MAX_MESSAGE};

mod replies;

pub use replies::parse_take;

/// How long one call to Redis may take before it counts as a failure.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// A message on the channel: who sent it, and what.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub from: String,
    pub event: ClusterEvent,
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    pub keys: Keys,
    /// This daemon's id (its leases are named after it).
    pub daemon: String,
    pub lease_ttl: Duration,
}

/// Why a call to the store did not get a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// A script answered something it never says: a different pacer version, or a Redis that
    /// someone else wrote to.
    #[error("unexpected answer from the {script} script: {answer}")]
    Answer {
        script: &'static str,
        answer: String,
    },
}

/// The store's answer to a take, and whether the script found values in Redis that were not
/// valid (and rebuilt them).
#[derive(Debug)]
pub struct Taken {
    pub answer: ClaimAnswer,
    pub repaired: bool,
}

impl Store {
    fn manager_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
    }

    /// A store whose connection is made on first use (Redis is not there yet).
    pub fn lazy(
        client: &redis::Client,
        keys: Keys,
        daemon: String,
        lease_ttl: Duration,
    ) -> Result<Store, StoreError> {
        let conn = client.get_connection_manager_lazy(Self::manager_config())?;
        Ok(Store {
            conn,
            keys,
            daemon,
            lease_ttl,
        })
    }

    /// Connects (within a few seconds).
    pub async fn connect(
        client: &redis::Client,
        keys: Keys,
        daemon: String,
        lease_ttl: Duration,
    ) -> Result<Store, StoreError> {
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            client.get_connection_manager_with_config(Self::manager_config()),
        )
        .await
        .map_err(|_| StoreError::Timeout(Duration::from_secs(3)))??;
        Ok(Store {
            conn,
            keys,
            daemon,
            lease_ttl,
        })
    }

    fn message(&self, event: &ClusterEvent) -> String {
        serde_json::to_string(&Message {
            from: self.daemon.clone(),
            event: event.clone(),
        })
        .expect("events serialize")
    }

    fn lease_name(&self, claim: u64) -> String {
        format!("{}#{claim}", self.daemon)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        bounded(invocation.invoke_async(&mut conn)).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        bounded(cmd.query_async::<String>(&mut conn))
            .await
            .map(|_| ())
    }

    /// Takes a claim's capacity, all or none.
    pub async fn take(&self, claim: &Claim) -> Result<Taken, StoreError> {
        let owner = claim.budget.owner.to_string();
        let mut invocation = scripts::TAKE.prepare_invoke();
        invocation
            .key(self.keys.overload(&claim.class))
            .key(self.keys.lockout(&owner, None))
            .key(self.keys.lockout(&owner, Some(&claim.budget.model_class)));
        let mut budgets = vec![(&claim.budget, claim.limits)];
        if let Some((parent, limits)) = &claim.parent {
            budgets.push((parent, *limits));
        }
        for (id, _) in &budgets {
            invocation
                .key(self.keys.budget(id))
                .key(self.keys.leases(id));
        }
        let (turns, due) = self.keys.turns(&claim.budget);
        invocation.key(turns).key(due);
        invocation
            .arg(budgets.len())
            .arg(claim.cost[LimitKind::Requests])
            .arg(claim.cost[LimitKind::InputTokens])
            .arg(claim.cost[LimitKind::OutputTokens])
            .arg(self.lease_name(claim.id))
            .arg(self.lease_ttl.as_millis() as u64);
        for (_, limits) in &budgets {
            invocation
                .arg(limits.rpm.unwrap_or(0))
                .arg(limits.itpm.unwrap_or(0))
                .arg(limits.otpm.unwrap_or(0))
                .arg(limits.max_in_flight.unwrap_or(0));
        }
        invocation
            .arg(&self.daemon)
            .arg(scripts::TURN_GRACE_MS)
            .arg(scripts::TURN_HALF_LIFE_MS);
        let reply: Vec<String> = self.run(&invocation).await?;
        parse_take(&reply)
    }

    /// A key's budget joins its account's (see [`scripts::MERGE`]).
    pub async fn merge(&self, from: &BudgetId, into: &BudgetId) -> Result<(), StoreError> {
        let mut invocation = scripts::MERGE.prepare_invoke();
        invocation
            .key(self.keys.budget(from))
            .key(self.keys.budget(into));
        self.run::<i64>(&invocation).await.map(|_| ())
    }

    /// Settles a lease (see [`scripts::SETTLE`]).
    pub async fn settle(
        &self,
        budgets: &[&BudgetId],
        claim: u64,
        reserved: &Costs,
        used: &Costs,
        taken_before: Option<f64>,
    ) -> Result<(), StoreError> {
        let mut invocation = scripts::SETTLE.prepare_invoke();
        for id in budgets {
            invocation
                .key(self.keys.budget(id))
                .key(self.keys.leases(id));
        }
        let freed = ClusterEvent::Freed {
            budget: budgets[0].clone(),
        };
        invocation
            .arg(budgets.len())
            .arg(self.lease_name(claim))
            .arg(reserved[LimitKind::Requests])
            .arg(reserved[LimitKind::InputTokens])
            .arg(reserved[LimitKind::OutputTokens])
            .arg(used[LimitKind::Requests])
            .arg(used[LimitKind::InputTokens])
            .arg(used[LimitKind::OutputTokens])
            .arg(taken_before.map_or(String::new(), |t| t.to_string()))
            .arg(self.message(&freed))
            .arg(self.keys.channel());
        self.run::<i64>(&invocation).await.map(|_| ())
    }

    /// Stores and publishes what this daemon tells the others.
    pub async fn publish(&self, event: &ClusterEvent) -> Result<(), StoreError> {
        let message = self.message(event);
        let channel = self.keys.channel();
        match event {
            ClusterEvent::Pause {
                budget,
                for_ms,
                reason,
                drain,
            } => {
                let drain = match drain {
                    None => String::new(),
                    Some(kinds) if kinds.is_empty() => "all".into(),
                    Some(kinds) => kinds
                        .iter()
                        .map(|k| k.index().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                };
                let mut invocation = scripts::PAUSE.prepare_invoke();
                invocation
                    .key(self.keys.budget(budget))
                    .arg(*for_ms)
                    .arg(reason)
                    .arg(drain)
                    .arg(message)
                    .arg(channel);
                self.run::<i64>(&invocation).await.map(|_| ())
            }
            ClusterEvent::Lift { budget } => {
                let owner = budget.owner.to_string();
                let mut invocation = scripts::LIFT.prepare_invoke();
                invocation
                    .key(self.keys.budget(budget))
                    .key(self.keys.overload(&budget.model_class))
                    .key(self.keys.lockout(&owner, None))
                    .key(self.keys.lockout(&owner, Some(&budget.model_class)))
                    .arg(message)
                    .arg(channel);
                self.run::<i64>(&invocation).await.map(|_| ())
            }
            ClusterEvent::Overload { class, for_ms } => {
                self.extend_key(&self.keys.overload(class), *for_ms, "529", message)
                    .await
            }
            ClusterEvent::Lockout {
                owner,
                class,
                for_ms,
                reason,
            } => {
                let key = self.keys.lockout(&owner.to_string(), class.as_deref());
                self.extend_key(&key, *for_ms, reason, message).await
            }
            ClusterEvent::Link { key, account } => {
                self.record_and_publish(&self.keys.links(), &key.to_string(), account, message)
                    .await
            }
            ClusterEvent::Windows { owner, .. } => {
                let windows = self.keys.windows();
                self.record_and_publish(&windows, &owner.to_string(), &message, message.clone())
                    .await
            }
            ClusterEvent::Freed { .. }
            | ClusterEvent::Limit { .. }
            | ClusterEvent::WindowCalls { .. } => {
                let mut conn = self.conn.clone();
                let publish = redis::cmd("PUBLISH").arg(channel).arg(message).to_owned();
                bounded(publish.query_async::<i64>(&mut conn))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Sets `field` of the hash `key` to `value` and publishes `message`, in one round trip.
    async fn record_and_publish(
        &self,
        key: &str,
        field: &str,
        value: &str,
        message: String,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.hset(key, field, value)
            .ignore()
            .publish(self.keys.channel(), message)
            .ignore();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    async fn extend_key(
        &self,
        key: &str,
        for_ms: u64,
        value: &str,
        message: String,
    ) -> Result<(), StoreError> {
        let mut invocation = scripts::EXTEND_KEY.prepare_invoke();
        invocation
            .key(key)
            .arg(for_ms.max(1))
            .arg(value)
            .arg(message)
            .arg(self.keys.channel());
        self.run::<i64>(&invocation).await.map(|_| ())
    }

    /// Charges what was spent from a local share.
    pub async fn charge(&self, budget: &BudgetId, spent: &Costs) -> Result<(), StoreError> {
        let mut invocation = scripts::CHARGE.prepare_invoke();
        invocation
            .key(self.keys.budget(budget))
            .arg(spent[LimitKind::Requests])
            .arg(spent[LimitKind::InputTokens])
            .arg(spent[LimitKind::OutputTokens]);
        self.run::<i64>(&invocation).await.map(|_| ())
    }

    /// Renews this daemon's leases (budget, claim).
    pub async fn renew(&self, leases: &[(BudgetId, u64)]) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut invocation = scripts::RENEW.prepare_invoke();
        invocation.arg(self.lease_ttl.as_millis() as u64);
        for (budget, _) in leases {
            invocation.key(self.keys.leases(budget));
        }
        for (_, claim) in leases {
            invocation.arg(self.lease_name(*claim));
        }
        self.run::<i64>(&invocation).await.map(|_| ())
    }

    /// Records this daemon as alive; returns how many are (seen within `window`).
    pub async fn heartbeat(&self, window: Duration) -> Result<u32, StoreError> {
        let mut invocation = scripts::HEARTBEAT.prepare_invoke();
        invocation
            .key(self.keys.daemons())
            .arg(&self.daemon)
            .arg(window.as_millis() as u64);
        self.run::<u32>(&invocation).await
    }

    /// Every key → account link the daemons have recorded.
    pub async fn links(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.hash(&self.keys.links()).await
    }

    /// The subscription windows other daemons reported, as the events they published.
    pub async fn windows(&self) -> Result<Vec<ClusterEvent>, StoreError> {
        let reported = self.hash(&self.keys.windows()).await?;
        Ok(reported
            .into_iter()
            .filter_map(|(_, message)| serde_json::from_str::<Message>(&message).ok())
            .map(|message| message.event)
            .filter(|event| matches!(event, ClusterEvent::Windows { .. }))
            .collect())
    }

    async fn hash(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        bounded(cmd.query_async::<Vec<(String, String)>>(&mut conn)).await
    }
}

/// A call to Redis, bounded in time: past twice [`CALL_TIMEOUT`] it counts as failed.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    Ok(tokio::time::timeout(CALL_TIMEOUT * 2, call)
        .await
        .map_err(|_| StoreError::Timeout(CALL_TIMEOUT * 2))??)
}
