//! The builder is the one composition root: what the server does with its store, an
//! embedder gets from the same `start()` (an evicting Redis refused, the fail-time limits,
//! retention, retries scheduled and delivered, loops stopped at shutdown, a start that
//! waits for the store's first answer).

use std::time::{Duration, Instant};

use failed_tasks::{
    CompatConfig, Deadlines, Error, FailTimeLimits, FailedTask, FailedTasks, ListQuery,
    MemoryConfig, NewFailedTask, PageLimits, QueryError, RedisConfig, Retention, SchedulerConfig,
    ServiceConfig, StoreProblem, Timestamp,
};
use failed_tasks_testkit::{free_port, RedisServer};

const HOUR_MS: i64 = 3_600_000;

/// A retryable failure (`TIMEOUT_ERROR`) of task `id` that failed `ago_ms` ago.
fn failed(id: &str, ago_ms: i64) -> FailedTask {
    let at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - ago_ms).unwrap();
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: "client123".into(),
        start_time: at,
        fail_time: at,
        error_code: "TIMEOUT_ERROR".into(),
        ..NewFailedTask::default()
    })
    .unwrap()
}

async fn listed(failures: &FailedTasks) -> Result<Vec<String>, QueryError> {
    let page = failures
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await?;
    Ok(page.tasks.iter().map(|t| t.task_id().to_string()).collect())
}

fn quick_checks() -> ServiceConfig {
    ServiceConfig {
        deadlines: Deadlines {
            health_check: Duration::from_secs(1),
            ..Deadlines::default()
        },
        ..ServiceConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let config = RedisConfig {
        url: redis.url(),
        ..RedisConfig::default()
    };
    let refused = FailedTasks::builder()
        .redis(config.clone())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Evicting { policy } if policy == "allkeys-lru"),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("refusing to start"),
        "{refused}"
    );

    let allowed = FailedTasks::builder()
        .redis(RedisConfig {
            allow_eviction: true,
            ..config
        })
        .start()
        .await
        .unwrap();
    let condition = allowed.store_condition();
    assert_eq!(condition.eviction_policy.as_deref(), Some("allkeys-lru"));
    assert_eq!(condition.problem, None);
    allowed.record_failure(&failed("t1", 0)).await.unwrap();
    allowed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_times_are_limited_by_the_clock_skew_and_named_past_the_store_retention() {
    let redis = RedisServer::start();
    let service = ServiceConfig {
        clock_skew_allowance: Duration::from_secs(60),
        ..ServiceConfig::default()
    };
    let hour = Duration::from_secs(3600);
    let retention = Retention {
        max_age: hour,
        ..Retention::default()
    };
    let stores = [
        FailedTasks::builder().memory(MemoryConfig {
            retention,
            ..MemoryConfig::default()
        }),
        FailedTasks::builder().redis(RedisConfig {
            url: redis.url(),
            retention,
            ..RedisConfig::default()
        }),
    ];
    for builder in stores {
        let failures = builder.service(service.clone()).start().await.unwrap();
        let limits = failures.fail_time_limits();
        assert_eq!(
            limits,
            FailTimeLimits {
                clock_skew: Duration::from_secs(60),
                retention: Some(hour),
            },
            "{}",
            failures.stores().name
        );
        // Ten minutes ahead of this clock: refused as bad input, nothing stored.
        let ahead = failed("ahead", -600_000);
        let err = failures.record_failure(&ahead).await.unwrap_err();
        assert!(matches!(err, QueryError::BadRequest(_)), "{err:?}");
        // Two hours old: recorded, and named as past the retention age.
        let old = failed("old", 2 * HOUR_MS);
        failures.record_failure(&old).await.unwrap();
        let past = failures.past_retention(std::slice::from_ref(&old));
        assert_eq!(past, [old.task_id()]);
        failures.shutdown().await;
    }

    // The compat source trims nothing: no retention age.
    let compat = FailedTasks::builder()
        .compat(CompatConfig {
            url: redis.url(),
            ..CompatConfig::default()
        })
        .service(service)
        .start()
        .await
        .unwrap();
    assert_eq!(compat.fail_time_limits().retention, None);
    compat.shutdown().await;
}

/// Retention as configured: the memory store keeps at most `max_count` at every write, and
/// its janitor (started by the builder) trims what is older than `max_age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_what_its_retention_allows() {
    let failures = FailedTasks::builder()
        .memory(MemoryConfig {
            retention: Retention {
                max_age: Duration::from_secs(3600),
                max_count: 2,
                janitor_interval: Duration::from_millis(20),
                ..Retention::default()
            },
            ..MemoryConfig::default()
        })
        .start()
        .await
        .unwrap();
    for (id, ago) in [("a", 3), ("b", 2), ("c", 1)] {
        failures
            .record_failure(&failed(id, ago * 1000))
            .await
            .unwrap();
    }
    assert_eq!(listed(&failures).await.unwrap(), ["c", "b"]);
    failures
        .record_failure(&failed("too-old", 2 * HOUR_MS))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&failures)
        .await
        .unwrap()
        .contains(&"too-old".to_owned())
    {
        assert!(
            Instant::now() < deadline,
            "the janitor never trimmed by age"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed(&failures).await.unwrap(), ["c", "b"]);
    failures.shutdown().await;
}

/// A recorded failure's retry is scheduled by the policy and handed to the workers by the
/// scheduler the builder started; after `shutdown` no retry is handed out any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_scheduled_and_delivered_until_shutdown() {
    let failures = FailedTasks::builder()
        .scheduler(SchedulerConfig {
            interval: Duration::from_millis(10),
            ..SchedulerConfig::default()
        })
        .start()
        .await
        .unwrap();
    let worker = failures.retry_worker("w1").await.unwrap();
    // Failed a minute ago: its first retry (after about a second) is already due.
    let first = failed("due", 60_000);
    failures.record_failure(&first).await.unwrap();
    let claimed = worker
        .queue()
        .claim(10, Duration::from_secs(10))
        .await
        .unwrap();
    let ids: Vec<_> = claimed.iter().map(|d| d.request.task_id.clone()).collect();
    assert_eq!(ids, [first.task_id().clone()]);
    assert_eq!(claimed[0].request.attempt, 1);

    let service = failures.service().clone();
    failures.shutdown().await;
    let second = failed("after-shutdown", 60_000);
    service.record_failure(&second).await.unwrap();
    let (_, details) = service
        .get_failed_with_retries(second.task_id())
        .await
        .unwrap();
    assert!(
        matches!(
            details.status,
            failed_tasks::domain::RetryStatus::Scheduled(_)
        ),
        "{details:?}"
    );
    // The scheduler ran every 10 ms; stopped, it hands out nothing however long one waits.
    let claimed = worker
        .queue()
        .claim(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
}

/// The first call after `start` is answered: the builder waited for the store's first
/// connection (the compat source connects in the background, and before this answered 503
/// for about half a second after the server said it was listening).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_start_is_answered_on_every_store() {
    let redis = RedisServer::start();
    let stores = [
        FailedTasks::builder().compat(CompatConfig {
            url: redis.url(),
            ..CompatConfig::default()
        }),
        FailedTasks::builder().redis(RedisConfig {
            url: redis.url(),
            ..RedisConfig::default()
        }),
    ];
    for builder in stores {
        let failures = builder.start().await.unwrap();
        let first = listed(&failures).await;
        assert_eq!(first, Ok(Vec::new()), "{}", failures.stores().name);
        failures.shutdown().await;
    }
}

/// A store that is down at start does not stop the start: it settles on the first refused
/// connection (well within the connection check's deadline), calls answer `Unavailable`,
/// and once Redis is up they are answered, in the same process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_start_is_unavailable_then_recovers() {
    let port = free_port();
    let started = Instant::now();
    let failures = FailedTasks::builder()
        .redis(RedisConfig {
            url: format!("redis://127.0.0.1:{port}"),
            ..RedisConfig::default()
        })
        .service(quick_checks())
        .start()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start took {:?}",
        started.elapsed()
    );
    assert_eq!(
        failures.store_condition().problem,
        Some(StoreProblem::ConnectionRefused)
    );
    let err = listed(&failures).await.unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err:?}");

    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listed(&failures).await.is_err() {
        assert!(Instant::now() < deadline, "no recovery within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failures.shutdown().await;
}
