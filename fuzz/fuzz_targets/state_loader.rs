//! A state file, whatever it holds, either is refused or is restored into a broker that then
//! works: no panic restoring it, showing its status, granting from it or ticking it.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use pacer_broker::{Broker, BrokerConfig, ConnId, Ticket, TimeBase};
use pacer_daemon::persist;
use pacer_protocol::message::Acquire;
use pacer_protocol::{KeyFingerprint, Priority};

fuzz_target!(|data: &[u8]| {
    let Ok(state) = persist::parse(data) else {
        return;
    };
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut broker = Broker::new(BrokerConfig::default(), TimeBase { instant: now, wall }, 1);
    broker.restore(state.broker, state.saved_at, now, wall);
    let _ = broker.status(now);
    let _ = broker.accounts(now);
    for (i, budget) in broker.status(now).into_iter().take(8).enumerate() {
        let key = match budget.budget.owner {
            pacer_protocol::BudgetOwner::Key(key) => key,
            _ => KeyFingerprint::of("fuzz"),
        };
        let acquire = Acquire {
            key,
            model: budget.budget.model_class.clone(),
            priority: Priority::Normal,
            client_id: "fuzz".into(),
            input_tokens: None,
            output_tokens: None,
            max_tokens: Some(100),
            deadline: None,
            detached_ttl: None,
            max_share_bp: None,
        };
        let ticket = Ticket {
            conn: ConnId(1),
            request: i as u64,
        };
        let _ = broker.acquire(now, ticket, &acquire);
    }
    let _ = broker.tick(now + Duration::from_secs(3600));
    let _ = broker.snapshot(now + Duration::from_secs(3600));
});
