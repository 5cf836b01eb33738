//! Retries end to end on real Redis: two server replicas schedule, a worker built on
//! `RedisRetryQueue` claims the retries, succeeds on half and fails the rest again until
//! the policy gives up; at the end every task is resolved or final and every count is
//! exact. Also: the retry routes' bad input on every store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use failed_tasks_domain::{ErrorCategory, RetryConfig, RetryPolicy, Timestamp};
use failed_tasks_query::{
    Deadlines, FailedTaskService, RetryCounters, RetryScheduler, SchedulerConfig,
};
use failed_tasks_redis::{RedisConfig, RedisRetryQueue, RedisStore};
use failed_tasks_store::{RetryQueue, Stores};
use failed_tasks_testkit::RedisServer;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{call, get, post, total};
use crate::Env;

use crate::LIST;
const ADMIN: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const TASKS: usize = 1_000;

/// Five categories, 200 tasks each, by index.
fn category_of(i: usize) -> (&'static str, ErrorCategory) {
    match i % 5 {
        0 => ("TIMEOUT_ERROR", ErrorCategory::ServiceTimeout),
        1 => ("PERMISSION_DENIED", ErrorCategory::Authorization),
        2 => ("STORAGE_ERROR", ErrorCategory::ResourceExhausted),
        3 => ("PARSE_ERROR", ErrorCategory::DataError),
        _ => ("INTERNAL_ERROR", ErrorCategory::SystemError),
    }
}

/// The worker's verdict: every task with an even index succeeds on its first retry; the
/// others fail every time.
fn succeeds(i: usize) -> bool {
    i.is_multiple_of(2)
}

pub fn failure_json(i: usize, retry_count: u32, at: Timestamp) -> Value {
    let (code, category) = category_of(i);
    json!({"TaskId": format!("e{i:04}"), "TaskType": "embedding", "ClientId": format!("c{}", i % 9),
        "CodebasePath": format!("/repo/{i}"), "StartTime": at.to_rfc3339(), "FailTime": at.to_rfc3339(),
        "ErrorCode": code, "ErrorMessage": format!("{code} on attempt {retry_count}"),
        "RetryCount": retry_count, "ProcessedFiles": 1, "ErrorCategory": category.as_str()})
}

fn index_of(task_id: &str) -> usize {
    task_id[1..].parse().unwrap()
}

/// One replica: its own Redis connection, service, scheduler and HTTP server.
struct Replica {
    env: Env,
    service: FailedTaskService,
    scheduler: Option<failed_tasks_query::SchedulerHandle>,
}

async fn replica(config: &RedisConfig, policy: &RetryPolicy) -> Replica {
    let store = RedisStore::connect(config.clone()).await.unwrap();
    assert!(store.wait_connected(Duration::from_secs(10)).await);
    let service = FailedTaskService::new(Stores::from(store), Deadlines::default())
        .with_retry_policy(policy.clone());
    let scheduler = RetryScheduler::new(
        service.clone(),
        SchedulerConfig {
            interval: Duration::from_millis(20),
            ..SchedulerConfig::default()
        },
    )
    .spawn();
    Replica {
        env: crate::serve_service(service.clone()).await,
        service,
        scheduler: Some(scheduler),
    }
}

fn delivered(r: &Replica) -> u64 {
    RetryCounters::get(&r.service.retry_counters().delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_failures_retried_until_resolved_or_final() {
    let server = RedisServer::start();
    let config = RedisConfig {
        url: server.url(),
        key_prefix: format!("{{e2e-retries-{}}}", std::process::id()),
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    };
    let policy = RetryPolicy::new(RetryConfig {
        max_retries: 3,
        base_delay: Duration::from_millis(20),
        multiplier: 2.0,
        max_delay: Duration::from_millis(200),
        jitter: 0.2,
        ..RetryConfig::default()
    })
    .unwrap();
    let mut replicas = [
        replica(&config, &policy).await,
        replica(&config, &policy).await,
    ];
    let queue = RedisRetryQueue::connect(&config, "worker-1").await.unwrap();
    assert!(queue.wait_connected(Duration::from_secs(10)).await);

    // 1,000 failures of five categories, through the two replicas.
    let now = Timestamp::now();
    for (n, chunk) in (0..TASKS).collect::<Vec<_>>().chunks(250).enumerate() {
        let body: Vec<Value> = chunk.iter().map(|i| failure_json(*i, 0, now)).collect();
        let (status, v) = post(&replicas[n % 2].env, Value::Array(body)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    // The worker: claim, run, report, acknowledge; until nothing is scheduled any more.
    let mut seen: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut by_task: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let reports = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "retries did not settle: {} delivered",
            seen.len()
        );
        let batch = queue.claim(200, Duration::from_millis(200)).await.unwrap();
        if batch.is_empty() {
            if total(&replicas[0].env, "retry=scheduled").await == 0 {
                break;
            }
            continue;
        }
        for d in &batch {
            let r = &d.request;
            assert!(
                !matches!(
                    r.error_category,
                    ErrorCategory::Authorization | ErrorCategory::DataError
                ),
                "never retried, yet delivered: {r:?}"
            );
            assert_eq!(d.deliveries, 1);
            assert!(
                seen.insert((r.task_id.to_string(), r.attempt)),
                "delivered twice: {} attempt {}",
                r.task_id,
                r.attempt
            );
            by_task
                .entry(r.task_id.to_string())
                .or_default()
                .push(r.attempt);
            let i = index_of(r.task_id.as_str());
            let env = &replicas[reports.fetch_add(1, Ordering::Relaxed) as usize % 2].env;
            if succeeds(i) {
                let (status, v) = call(
                    env,
                    Method::POST,
                    &format!("{ADMIN}/{}/resolve", r.task_id),
                    None,
                )
                .await;
                assert_eq!(
                    (status, v["Data"]["Status"].clone()),
                    (StatusCode::OK, json!("resolved"))
                );
            } else {
                let (status, v) = post(env, failure_json(i, r.attempt, Timestamp::now())).await;
                assert_eq!(status, StatusCode::OK, "{v}");
            }
        }
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        assert_eq!(queue.ack(&ids).await.unwrap(), ids.len() as u64);
        // A rolling restart: once 300 retries went out, the replica that holds the
        // scheduler lock stops its scheduler; the other takes over.
        if seen.len() >= 300 {
            let holder = if delivered(&replicas[0]) > 0 { 0 } else { 1 };
            if let Some(s) = replicas[holder].scheduler.take() {
                // Its step in progress finishes (and is counted) before it ends.
                s.shutdown().await;
            }
        }
    }

    // Exactly: of the 600 retryable tasks (three categories), 300 succeed on their first
    // retry and 300 fail three retries.
    let retryable: Vec<usize> = (0..TASKS).filter(|i| !matches!(i % 5, 1 | 3)).collect();
    assert_eq!(retryable.len(), 600);
    for i in &retryable {
        let want: Vec<u32> = if succeeds(*i) { vec![1] } else { vec![1, 2, 3] };
        assert_eq!(
            by_task.get(&format!("e{i:04}")),
            Some(&want),
            "task e{i:04}"
        );
    }
    assert_eq!(seen.len(), 300 + 300 * 3);
    let (a, b) = (delivered(&replicas[0]), delivered(&replicas[1]));
    assert!(a > 0 && b > 0, "both replicas ran the scheduler: {a} + {b}");
    assert_eq!(a + b, 1_200);

    // Every task is resolved or final; the listings and statistics agree.
    let env = &replicas[1].env;
    assert_eq!(total(env, "retry=final").await, 700);
    assert_eq!(total(env, "retry=scheduled").await, 0);
    assert_eq!(total(env, "retry=none").await, 0);
    assert_eq!(total(env, "category=service_timeout").await, 100);
    assert_eq!(total(env, "category=authorization").await, 200);
    let stats = get(
        env,
        "/codebase-embedder/api/v1/tasks/failed-stats?window=1h",
    )
    .await;
    assert_eq!(stats["Data"]["Recovered"], 300);
    assert_eq!(stats["Data"]["TotalFailures"], TASKS as u64);
    for i in [0usize, 2, 4] {
        let (status, _) = call(env, Method::GET, &format!("{LIST}/e{i:04}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "e{i:04} was resolved");
    }
    // A task that failed every time: four attempts, the three retries by the policy.
    let one = get(env, &format!("{LIST}/e0005")).await;
    let attempts: Vec<(u64, Value)> = one["Data"]["Attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["Attempt"].as_u64().unwrap(), a["ScheduledBy"].clone()))
        .collect();
    assert_eq!(
        attempts,
        [
            (3, json!("policy")),
            (2, json!("policy")),
            (1, json!("policy")),
            (0, Value::Null)
        ]
    );
    assert_eq!(one["Data"]["NextRetryAt"], Value::Null);
    assert_eq!(one["Data"]["FinalFailure"], true);
    let g = replicas[1]
        .service
        .retry_gauges(Timestamp::now())
        .await
        .unwrap();
    assert_eq!((g.scheduled, g.pending, g.queued), (0, 0, 1_200));
}
