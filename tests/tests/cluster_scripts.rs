//! The Lua scripts that keep shared budgets in Redis, against a real `redis-server`: take all
//! or none (across a workspace and its organization too), refunds up to the limit and debt
//! beyond it, an extend-only pause, in-flight slots freed by settlement or by expiry, lockouts.
#![cfg(unix)]

use std::time::Duration;

use pacer_broker::{Claim, ClaimAnswer, ClusterEvent, Costs, LimitSet};
use pacer_daemon::cluster::store::{Keys, Store};
use pacer_protocol::message::BudgetId;
use pacer_protocol::{BudgetOwner, KeyFingerprint};
use pacer_tests::redis::RedisServer;

fn budget(owner: &str) -> BudgetId {
    BudgetId {
        owner: BudgetOwner::Account(owner.into()),
        model_class: "sonnet".into(),
    }
}

async fn store(server: &RedisServer, ttl: Duration) -> Store {
    let client = redis::Client::open(server.url()).unwrap();
    Store::connect(&client, Keys::new("t"), "test-daemon".into(), ttl)
        .await
        .unwrap()
}

fn limits(rpm: u64, itpm: u64, cap: Option<u32>) -> LimitSet {
    LimitSet {
        rpm: Some(rpm),
        itpm: Some(itpm),
        otpm: None,
        max_in_flight: cap,
    }
}

fn claim(id: u64, budget: &BudgetId, cost: Costs, limits: LimitSet) -> Claim {
    Claim {
        id,
        budget: budget.clone(),
        cost,
        limits,
        parent: None,
        class: "sonnet".into(),
    }
}

/// The level Redis holds for a budget's bucket (`l0` requests, `l1` input tokens).
fn level(server: &RedisServer, id: &BudgetId, field: &str) -> f64 {
    let key = Keys::new("t").budget(id);
    server.cli(&["HGET", &key, field]).parse().unwrap()
}

fn granted(answer: &ClaimAnswer) -> bool {
    matches!(answer, ClaimAnswer::Granted { .. })
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_take_is_all_or_none() {
    let server = RedisServer::start();
    let store = store(&server, Duration::from_secs(30)).await;
    let org = budget("org-take");
    let first = store
        .take(&claim(1, &org, Costs::new(1, 60, 0), limits(2, 100, None)))
        .await
        .unwrap()
        .answer;
    assert!(granted(&first), "{first:?}");
    // Requests are there (1 left), input tokens are not (40 < 60): nothing is taken.
    let second = store
        .take(&claim(2, &org, Costs::new(1, 60, 0), limits(2, 100, None)))
        .await
        .unwrap()
        .answer;
    let ClaimAnswer::Refused { wait, limits: told } = second else {
        panic!("{second:?}")
    };
    // 20 tokens short at 100 a minute: about 12 s.
    assert!(
        wait > Duration::from_secs(11) && wait <= Duration::from_secs(13),
        "{wait:?}"
    );
    assert_eq!(told.itpm, Some(100));
    assert!((level(&server, &org, "l0") - 1.0).abs() < 0.01);

    // A workspace's claim takes from its organization's budget too, or from neither: the
    // workspace has room, the organization (40 input tokens left) has not.
    let workspace = budget("wsp-take");
    let mut both = claim(3, &workspace, Costs::new(1, 50, 0), limits(5, 1000, None));
    both.parent = Some((org.clone(), limits(2, 100, None)));
    let refused = store.take(&both).await.unwrap().answer;
    assert!(
        matches!(refused, ClaimAnswer::Refused { .. }),
        "{refused:?}"
    );
    assert_eq!(
        server.cli(&["HGET", &Keys::new("t").budget(&workspace), "l0"]),
        ""
    );
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn settlement_refunds_up_to_the_limit_and_charges_into_debt() {
    let server = RedisServer::start();
    let store = store(&server, Duration::from_secs(30)).await;
    let org = budget("org-settle");
    let cost = Costs::new(1, 500, 0);
    let answer = store
        .take(&claim(1, &org, cost, limits(10, 1000, None)))
        .await
        .unwrap()
        .answer;
    assert!(granted(&answer));
    assert!((level(&server, &org, "l1") - 500.0).abs() < 1.0);
    // It used 100: 400 back (not beyond the limit).
    store
        .settle(&[&org], 1, &cost, &Costs::new(1, 100, 0), None)
        .await
        .unwrap();
    assert!((level(&server, &org, "l1") - 900.0).abs() < 1.0);
    let answer = store
        .take(&claim(2, &org, cost, limits(10, 1000, None)))
        .await
        .unwrap()
        .answer;
    assert!(granted(&answer));
    // It used 2,000: the bucket goes into debt — no deeper than a whole bucket (a minute of
    // refill), as the daemon's own buckets.
    store
        .settle(&[&org], 2, &cost, &Costs::new(1, 2000, 0), None)
        .await
        .unwrap();
    let debt = level(&server, &org, "l1");
    assert!((-1000.0..=-999.0).contains(&debt), "{debt}");
    // A big refund stops at the limit.
    store
        .settle(&[&org], 3, &Costs::new(0, 5000, 0), &Costs::default(), None)
        .await
        .unwrap();
    assert!(level(&server, &org, "l1") <= 1000.0);
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_pause_only_ever_extends_and_holds_every_take() {
    let server = RedisServer::start();
    let store = store(&server, Duration::from_secs(30)).await;
    let org = budget("org-pause");
    let pause = |ms: u64| ClusterEvent::Pause {
        budget: org.clone(),
        for_ms: ms,
        reason: "429".into(),
        drain: Some(Vec::new()),
    };
    store.publish(&pause(5_000)).await.unwrap();
    let until = server.cli(&["HGET", &Keys::new("t").budget(&org), "p"]);
    store.publish(&pause(1_000)).await.unwrap();
    assert_eq!(
        server.cli(&["HGET", &Keys::new("t").budget(&org), "p"]),
        until
    );
    let answer = store
        .take(&claim(1, &org, Costs::new(1, 0, 0), limits(10, 1000, None)))
        .await
        .unwrap()
        .answer;
    let ClaimAnswer::Refused { wait, .. } = answer else {
        panic!("{answer:?}")
    };
    assert!(wait > Duration::from_secs(4), "{wait:?}");
    // A lift ends it at once.
    store
        .publish(&ClusterEvent::Lift {
            budget: org.clone(),
        })
        .await
        .unwrap();
    let answer = store
        .take(&claim(2, &org, Costs::new(1, 0, 0), limits(10, 1000, None)))
        .await
        .unwrap()
        .answer;
    assert!(granted(&answer), "{answer:?}");
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn in_flight_slots_are_freed_by_settlement_or_by_expiry() {
    let server = RedisServer::start();
    let store = store(&server, Duration::from_millis(400)).await;
    let org = budget("org-slots");
    let cost = Costs::new(1, 0, 0);
    let capped = limits(100, 100_000, Some(1));
    assert!(granted(
        &store
            .take(&claim(1, &org, cost, capped))
            .await
            .unwrap()
            .answer
    ));
    let full = store
        .take(&claim(2, &org, cost, capped))
        .await
        .unwrap()
        .answer;
    assert!(matches!(full, ClaimAnswer::Refused { .. }), "{full:?}");
    store.settle(&[&org], 1, &cost, &cost, None).await.unwrap();
    assert!(granted(
        &store
            .take(&claim(3, &org, cost, capped))
            .await
            .unwrap()
            .answer
    ));
    // Its holder dies (no settlement, no renewal): the slot frees itself.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(granted(
        &store
            .take(&claim(4, &org, cost, capped))
            .await
            .unwrap()
            .answer
    ));
    // While renewed, it holds.
    store.renew(&[(org.clone(), 4)]).await.unwrap();
    let held = store
        .take(&claim(5, &org, cost, capped))
        .await
        .unwrap()
        .answer;
    assert!(matches!(held, ClaimAnswer::Refused { .. }), "{held:?}");
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_lockout_refuses_takes_until_it_ends() {
    let server = RedisServer::start();
    let store = store(&server, Duration::from_secs(30)).await;
    let org = budget("org-locked");
    store
        .publish(&ClusterEvent::Lockout {
            owner: org.owner.clone(),
            class: None,
            for_ms: 60_000,
            reason: "the spend cap is reached".into(),
        })
        .await
        .unwrap();
    let answer = store
        .take(&claim(1, &org, Costs::new(1, 0, 0), limits(10, 1000, None)))
        .await
        .unwrap()
        .answer;
    let ClaimAnswer::LockedOut { for_, reason } = answer else {
        panic!("{answer:?}")
    };
    assert!(for_ > Duration::from_secs(50));
    assert_eq!(reason, "the spend cap is reached");
    // Links are kept for daemons that start later.
    let key = KeyFingerprint::of("sk-linked");
    store
        .publish(&ClusterEvent::Link {
            key,
            account: "org-locked".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.links().await.unwrap(),
        vec![(key.to_string(), "org-locked".to_owned())]
    );
}

/// One request from `store` on a budget of 10 requests a second.
async fn take(store: &Store, org: &BudgetId, id: u64) -> ClaimAnswer {
    let claim = claim(id, org, Costs::new(1, 1, 0), limits(600, 1_000_000, None));
    store.take(&claim).await.unwrap().answer
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn daemons_take_turns_and_a_daemon_that_does_not_come_back_loses_its_turn() {
    let server = RedisServer::start();
    let connect = |name: &str| {
        let client = redis::Client::open(server.url()).unwrap();
        let name = name.to_owned();
        async move {
            Store::connect(&client, Keys::new("t"), name, Duration::from_secs(30))
                .await
                .unwrap()
        }
    };
    let (a, b, c) = (connect("a").await, connect("b").await, connect("c").await);
    let org = budget("org-turns");
    let key = Keys::new("t").budget(&org);
    let (turns, _) = Keys::new("t").turns(&org);
    // 10 requests a second; the bucket held where the test puts it (no refill: last update
    // in the far future).
    assert!(granted(&take(&a, &org, 1).await));
    let hold = |level: &str| {
        server.cli(&["HSET", &key, "l0", level, "t", "99999999999999"]);
    };
    hold("0");
    // a is refused, then b; b, which has had nothing yet, goes first.
    assert!(matches!(
        take(&a, &org, 2).await,
        ClaimAnswer::Refused { .. }
    ));
    assert!(matches!(
        take(&b, &org, 3).await,
        ClaimAnswer::Refused { .. }
    ));
    assert_eq!(server.cli(&["ZRANGE", &turns, "0", "-1"]), "a\nb");
    // Enough for one: kept for b, even though a was refused first and asks first.
    hold("1.5");
    let ClaimAnswer::Refused { wait, .. } = take(&a, &org, 4).await else {
        panic!("a took b's turn")
    };
    assert!(wait <= Duration::from_millis(250), "{wait:?}");
    assert!(granted(&take(&b, &org, 5).await));
    // Enough for two: a daemon ahead does not stop another.
    hold("0");
    assert!(matches!(
        take(&c, &org, 6).await,
        ClaimAnswer::Refused { .. }
    ));
    hold("2.5");
    assert!(granted(&take(&a, &org, 7).await));
    // c, ahead now, never comes back: once it is overdue, its turn is gone.
    hold("1.5");
    assert!(matches!(
        take(&b, &org, 8).await,
        ClaimAnswer::Refused { .. }
    ));
    tokio::time::sleep(Duration::from_millis(100 + 250 + 100)).await;
    hold("1.5");
    assert!(granted(&take(&b, &org, 9).await));
    assert_eq!(server.cli(&["ZRANGE", &turns, "0", "-1"]), "");
}

#[tokio::test]
#[cfg_attr(
    not(pacer_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_keys_budget_merged_into_its_account_gives_nothing_more_to_a_daemon_not_told_yet() {
    let server = RedisServer::start();
    let store = store(&server, Duration::from_secs(30)).await;
    let key = BudgetId {
        owner: BudgetOwner::Key(KeyFingerprint::of("sk-ant-merged")),
        model_class: "sonnet".into(),
    };
    let org = budget("org-merged");
    // The key's first call, then its answer ties it to the account.
    let first = store
        .take(&claim(
            1,
            &key,
            Costs::new(1, 10, 0),
            limits(30, 10_000, None),
        ))
        .await
        .unwrap()
        .answer;
    assert!(granted(&first), "{first:?}");
    store.merge(&key, &org).await.unwrap();
    // A daemon that has not heard of the link yet asks the key's budget again, with the limits
    // it learned: it is told to wait (and will take from the account's once told), not given
    // a bucket rebuilt full beside the account's.
    let stale = store
        .take(&claim(
            2,
            &key,
            Costs::new(1, 10, 0),
            limits(30, 10_000, None),
        ))
        .await
        .unwrap()
        .answer;
    let ClaimAnswer::Refused { wait, .. } = stale else {
        panic!("{stale:?}")
    };
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
}
