//! An outage of the embedding provider end to end on real Redis: two server replicas each
//! run the scheduler and the breaker's decider (one decides at a time), a worker built on
//! `RedisRetryQueue` fails every retry while the provider is down. The breaker opens after
//! its minimum of failed retries, holds the rest (nothing turns final), probes with
//! canaries that fail and opens again for longer; once the provider is back its next
//! canaries resolve, it closes, and every task resolves.
//!
//! The outage ends on an event (the breaker has opened a second time), not after a fixed
//! time, and every wait polls with a deadline.

use std::time::{Duration, Instant};

use failed_tasks_domain::{BreakerConfig, RetryConfig, RetryPolicy, Timestamp};
use failed_tasks_query::{
    Deadlines, FailedTaskService, RetryBreaker, RetryCounters, RetryScheduler, SchedulerConfig,
};
use failed_tasks_redis::{RedisConfig, RedisRetryQueue, RedisStore};
use failed_tasks_store::{Background, RetryQueue, Stores};
use failed_tasks_testkit::RedisServer;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{call, get, post, total};
use crate::Env;

const ADMIN: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const BREAKERS: &str = "/codebase-embedder/api/v1/retry-breakers";
const TASKS: usize = 100;

fn timeout_json(i: usize, retry_count: u32, at: Timestamp) -> Value {
    json!({"TaskId": format!("o{i:03}"), "TaskType": "embedding", "ClientId": "ide-1",
        "CodebasePath": format!("/repo/{i}"), "FailTime": at.to_rfc3339(),
        "ErrorCode": "TIMEOUT_ERROR", "ErrorMessage": "embedding provider timed out",
        "RetryCount": retry_count})
}

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        enabled: true,
        window: Duration::from_secs(10),
        min_retries: 10,
        failure_percent: 80,
        cooldown: Duration::from_secs(1),
        max_cooldown: Duration::from_secs(4),
        canaries: 3,
        interval: Duration::from_millis(100),
    }
}

/// One replica: its own Redis connection, service, scheduler, breaker decider and server.
struct Replica {
    env: Env,
    service: FailedTaskService,
    _loops: [Background; 2],
}

async fn replica(config: &RedisConfig, policy: &RetryPolicy, name: &str) -> Replica {
    let store = RedisStore::connect(config.clone()).await.unwrap();
    assert!(store.wait_connected(Duration::from_secs(10)).await);
    let service = FailedTaskService::new(Stores::from(store), Deadlines::default())
        .with_retry_policy(policy.clone())
        .with_breaker_config(breaker_config());
    let scheduler = RetryScheduler::new(
        service.clone(),
        SchedulerConfig {
            interval: Duration::from_millis(20),
            ..SchedulerConfig::default()
        },
    )
    .spawn();
    let breaker = RetryBreaker::new(service.clone(), name).spawn();
    Replica {
        env: crate::serve_service(service.clone()).await,
        service,
        _loops: [scheduler, breaker],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_held_by_the_breaker_and_nothing_turns_final() {
    let server = RedisServer::start();
    let config = RedisConfig {
        url: server.url(),
        key_prefix: format!("{{e2e-outage-{}}}", std::process::id()),
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    };
    // Fast retries (200 ms doubling, no jitter): without the breaker, every task would
    // spend its 6 retries within a few seconds of the outage and turn final.
    let policy = RetryPolicy::new(RetryConfig {
        max_retries: 6,
        base_delay: Duration::from_millis(200),
        multiplier: 2.0,
        max_delay: Duration::from_secs(2),
        jitter: 0.0,
        ..RetryConfig::default()
    })
    .unwrap();
    let replicas = [
        replica(&config, &policy, "replica-a").await,
        replica(&config, &policy, "replica-b").await,
    ];
    let queue = RedisRetryQueue::connect(&config, "worker-1").await.unwrap();
    assert!(queue.wait_connected(Duration::from_secs(10)).await);

    // The first runs fail, two every 100 ms (recorded in the loop below), through both
    // replicas: their retries come due spread out, as they do in an outage.
    let mut recorded = 0usize;
    let mut next_wave = Instant::now();
    let mut outage = true;
    let (mut delivered_in_outage, mut delivered_after, mut reports) = (0u64, 0u64, 0usize);
    let mut opens_seen = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "not settled: {delivered_in_outage} delivered in the outage, {delivered_after} after"
        );
        let breakers = get(&replicas[0].env, BREAKERS).await;
        let list = breakers["Data"]["Breakers"].as_array().unwrap().clone();
        assert!(list.len() <= 1, "one breaker, one scope: {list:?}");
        if let Some(b) = list.first() {
            assert_eq!(
                (b["TaskType"].as_str(), b["ErrorCategory"].as_str()),
                (Some("embedding"), Some("service_timeout"))
            );
            opens_seen = opens_seen.max(b["Opens"].as_u64().unwrap_or(0));
        }
        if recorded < TASKS && Instant::now() >= next_wave {
            for i in recorded..recorded + 2 {
                let (status, v) =
                    post(&replicas[i % 2].env, timeout_json(i, 0, Timestamp::now())).await;
                assert_eq!(status, StatusCode::OK, "{v}");
            }
            recorded += 2;
            next_wave += Duration::from_millis(100);
        }
        // The provider comes back once the breaker has opened a second time (its first
        // canaries failed).
        if outage && opens_seen >= 2 {
            outage = false;
        }
        let batch = queue.claim(50, Duration::from_millis(50)).await.unwrap();
        for d in &batch {
            let r = &d.request;
            let env = &replicas[reports % 2].env;
            reports += 1;
            if outage {
                delivered_in_outage += 1;
                let (status, v) = post(
                    env,
                    timeout_json(
                        r.task_id.as_str()[1..].parse().unwrap(),
                        r.attempt,
                        Timestamp::now(),
                    ),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{v}");
            } else {
                delivered_after += 1;
                let (status, v) = call(
                    env,
                    Method::POST,
                    &format!("{ADMIN}/{}/resolve", r.task_id),
                    None,
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{v}");
            }
        }
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        if !ids.is_empty() {
            queue.ack(&ids).await.unwrap();
        }
        if recorded == TASKS && total(&replicas[1].env, "").await == 0 {
            break;
        }
    }

    // Contained: of the 100 tasks' retries, the outage saw the failures that tripped the
    // breaker (its minimum, plus those already handed out in the moment it took to decide)
    // and its canaries; everything else waited, held, keeping its attempt.
    eprintln!(
        "outage: {delivered_in_outage} retries delivered during it, {delivered_after} after; the breaker opened {opens_seen} times"
    );
    let canaries = u64::from(breaker_config().canaries);
    let decide_slack = 10;
    assert!(
        delivered_in_outage <= breaker_config().min_retries + canaries * 2 + decide_slack,
        "{delivered_in_outage} retries delivered during the outage"
    );
    assert!(delivered_in_outage >= breaker_config().min_retries + canaries);
    // Nothing turned final because of the outage; every task resolved in the end.
    let env = &replicas[1].env;
    assert_eq!(total(env, "retry=final").await, 0);
    let stats = get(
        env,
        "/codebase-embedder/api/v1/tasks/failed-stats?window=1h",
    )
    .await;
    assert_eq!(stats["Data"]["Recovered"], TASKS as u64);
    // The breaker closed (its gate released); exactly one decider acted for each transition.
    let b = get(env, BREAKERS).await;
    let states: Vec<&str> = b["Data"]["Breakers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["State"].as_str())
        .collect();
    assert!(states.iter().all(|s| *s == "closed"), "{states:?}");
    let gates = get(env, "/codebase-embedder/api/v1/retry-gates").await;
    assert_eq!(gates["Data"]["Gates"], json!([]));
    let sum = |f: fn(&RetryCounters) -> &std::sync::atomic::AtomicU64| -> u64 {
        replicas
            .iter()
            .map(|r| RetryCounters::get(f(r.service.retry_counters())))
            .sum()
    };
    assert_eq!(sum(|c| &c.breaker_opened), opens_seen);
    assert_eq!(sum(|c| &c.breaker_closed), 1);
    let audit = get(
        env,
        "/codebase-embedder/api/v1/audit?actor=breaker&pageSize=100",
    )
    .await;
    let actions: Vec<&str> = audit["Data"]["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|e| e["Action"].as_str())
        .collect();
    assert_eq!(actions.first(), Some(&"breaker_opened"));
    assert_eq!(actions.last(), Some(&"breaker_closed"));
}
