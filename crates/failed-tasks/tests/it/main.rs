//! The facade as an embedder uses it: the example against a private redis-server and in
//! memory, and what each store claims.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use failed_tasks::{Capability, FailedTasks, QueryError, Resolve, TaskId, Timestamp};
use failed_tasks_testkit::RedisServer;

/// The example itself (`examples/embed.rs`), so that what README points to is what runs.
mod root;

/// A worker gets the failed files of a retry and reports a partial success.
mod files;

/// Search (`q`, `pathPrefix`) against a brute-force filter on every store.
mod search;

/// Notifications to a receiver on a loopback port, steps driven by the tests.
mod notify;

/// A replay on Redis across a restart, its runner driven by the test.
mod replays;

#[path = "../../examples/embed.rs"]
#[allow(dead_code)] // its `main`
mod embed;

fn check(report: &embed::Report, id: &str) {
    assert_eq!(report.listed, [id]);
    assert_eq!(report.retried.task_id.as_str(), id);
    assert_eq!(report.retried.attempt, 1);
    assert_eq!(report.resolved, Resolve::Resolved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_against_redis() {
    let redis = RedisServer::start();
    let failures = FailedTasks::redis(redis.url()).await.unwrap();
    assert_eq!(failures.stores().name, "redis");
    assert_eq!(failures.stores().capabilities(), Capability::ALL);
    let report = embed::run(&failures, "task_042").await.unwrap();
    check(&report, "task_042");
    failures.shutdown().await;

    // It was all in that Redis: a second embedder sees the task resolved.
    let again = FailedTasks::redis(redis.url()).await.unwrap();
    let id = TaskId::parse("task_042").unwrap();
    assert_eq!(again.get_failed(&id).await, Err(QueryError::NotFound));
    assert_eq!(
        again.resolve(&id, Timestamp::now()).await.unwrap(),
        Resolve::AlreadyResolved
    );
    let keys = redis.cli(&["KEYS", "{failed-tasks}:*"]);
    assert!(!keys.trim().is_empty(), "nothing under the default prefix");
    again.shutdown().await;
}

/// The same with the failures split into 16 shards: the worker reads every shard's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_against_a_sharded_redis() {
    let redis = RedisServer::start();
    let failures = FailedTasks::builder()
        .redis(failed_tasks::RedisConfig {
            url: redis.url(),
            shards: 16,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    for id in ["task_042", "task_043", "task_044"] {
        check(&embed::run(&failures, id).await.unwrap(), id);
    }
    failures.shutdown().await;
    let keys = redis.cli(&["KEYS", "{failed-tasks:*"]);
    assert!(!keys.trim().is_empty(), "nothing under the shard prefixes");
    assert!(redis.cli(&["KEYS", "{failed-tasks}:*"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_in_memory() {
    let failures = FailedTasks::memory();
    assert_eq!(failures.stores().name, "memory");
    assert_eq!(
        failures.stores().capabilities(),
        [
            Capability::Writes,
            Capability::Statistics,
            Capability::Retries,
            Capability::Notifications,
            Capability::Audit,
            Capability::Breaker,
            Capability::Replays,
            Capability::Files
        ]
    );
    let report = embed::run(&failures, "task_007").await.unwrap();
    check(&report, "task_007");
    // The recording was counted by the use case, as for the server's metrics.
    let recorded: u64 = failures
        .record_counters()
        .recorded()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(recorded, 1);
    failures.shutdown().await;
}

#[tokio::test]
async fn bad_scheduler_settings_are_refused_naming_them() {
    let err = FailedTasks::builder()
        .scheduler(failed_tasks::SchedulerConfig {
            batch: 0,
            ..Default::default()
        })
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("batch"), "{err}");
    // Without a scheduler, no check and no loop: the store still schedules retries.
    let failures = FailedTasks::builder()
        .without_scheduler()
        .start()
        .await
        .unwrap();
    assert!(failures.schedules_retries());
    failures.shutdown().await;
}

/// The facade runs the replay runner: a replay made through it ends by itself (time paused,
/// so the loop's ticks cost no waiting), and the runner stops with the facade.
#[tokio::test(start_paused = true)]
async fn the_replay_runner_runs_with_the_facade() {
    use failed_tasks::domain::{GateReason, ReplayState};
    use failed_tasks::query::ReplayRequest;
    use failed_tasks::{FailedTask, NewFailedTask, TaskFilter};

    let failures = FailedTasks::memory();
    let now = Timestamp::now();
    let tasks: Vec<FailedTask> = (0..3)
        .map(|i| {
            FailedTask::new(NewFailedTask {
                task_id: format!("replayed-{i}"),
                task_type: "embedding".into(),
                client_id: "c1".into(),
                codebase_path: "/p".into(),
                start_time: now,
                fail_time: now,
                error_code: "TIMEOUT_ERROR".into(),
                error_message: "timed out".into(),
                retry_count: 0,
                processed_files: 1,
                error_category: None,
            })
            .unwrap()
        })
        .collect();
    failures.record_failures(&tasks).await.unwrap();
    let replay = failures
        .create_replay(
            ReplayRequest {
                filter: TaskFilter::from_params([("clientId", "c1")]).unwrap(),
                reason: GateReason::parse("facade test").unwrap(),
                actor: "test".to_owned(),
                pace: None,
            },
            now,
        )
        .await
        .unwrap();
    let mut state = ReplayState::Running;
    for _ in 0..50 {
        let r = failures.replay(&replay.id).await.unwrap();
        state = r.state;
        if state == ReplayState::Done {
            assert_eq!(r.progress.scheduled, 3);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(state, ReplayState::Done);
    failures.shutdown().await;
}
