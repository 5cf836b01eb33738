//! A paced replay on Redis (4 shards), its runner driven with explicit times: the pace holds,
//! a restart of the runner's process (a new process on the same Redis, a new runner) goes on
//! from the saved position, and the workers' streams get each matching task exactly once.
//! Another process, which stays, delivers (a store lets one scheduler at a time deliver).

use std::collections::HashSet;
use std::time::Duration;

use failed_tasks::domain::{GateReason, ReplayPace, ReplayState};
use failed_tasks::query::{ReplayRequest, ReplayRunner, ReplayRunnerConfig};
use failed_tasks::{
    FailedTask, FailedTasks, NewFailedTask, RedisConfig, RetryConfig, RetryPolicy, TaskFilter,
    Timestamp,
};
use failed_tasks_testkit::RedisServer;

fn failed(id: &str, code: &str, at: Timestamp) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: "client123".into(),
        start_time: at,
        fail_time: at,
        error_code: code.into(),
        ..NewFailedTask::default()
    })
    .unwrap()
}

/// A process on `url`: no loops of its own (the test drives the runner and the scheduler),
/// retries due half an hour after a failure (so only the replay makes them due now).
async fn process(url: &str) -> FailedTasks {
    FailedTasks::builder()
        .redis(RedisConfig {
            url: url.to_owned(),
            shards: 4,
            ..RedisConfig::default()
        })
        .retry_policy(
            RetryPolicy::new(RetryConfig {
                base_delay: Duration::from_secs(1800),
                jitter: 0.0,
                ..RetryConfig::default()
            })
            .unwrap(),
        )
        .without_scheduler()
        .without_replay_runner()
        .start()
        .await
        .unwrap()
}

fn at(t0: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(t0.unix_millis() + ms).unwrap()
}

/// Move what is due at `now` into the streams.
async fn deliver(failures: &FailedTasks, now: Timestamp) {
    for _ in 0..100 {
        if !failures.deliver_due(now, 10_000).await.unwrap().more {
            return;
        }
    }
    panic!("delivery did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_on_redis_resumes_after_a_restart_and_delivers_each_task_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let scheduler = process(&url).await;
    let first = process(&url).await;
    let now = Timestamp::now();
    let mut tasks: Vec<FailedTask> = (0..300)
        .map(|i| failed(&format!("r{i:03}"), "TIMEOUT_ERROR", at(now, -10 * (i + 1))))
        .collect();
    tasks.extend((0..20).map(|i| failed(&format!("x{i:03}"), "STORAGE_ERROR", at(now, -5))));
    for chunk in tasks.chunks(100) {
        first.record_failures(chunk).await.unwrap();
    }
    let t0 = Timestamp::now();
    let replay = first
        .create_replay(
            ReplayRequest {
                filter: TaskFilter::from_params([("errorCode", "TIMEOUT_ERROR")]).unwrap(),
                reason: GateReason::parse("provider back").unwrap(),
                actor: "ops".to_owned(),
                pace: Some(ReplayPace::new(100.0).unwrap()),
            },
            t0,
        )
        .await
        .unwrap();
    assert_eq!(replay.matched, 300);

    let runner = ReplayRunner::new(first.service().clone(), ReplayRunnerConfig::default());
    assert_eq!(runner.step(at(t0, 1_000)).await.unwrap().scheduled, 100);
    assert_eq!(runner.step(at(t0, 1_500)).await.unwrap().scheduled, 50);
    deliver(&scheduler, at(t0, 1_500)).await;
    // A restart: this process goes away, another one starts on the same Redis.
    runner.release().await.unwrap();
    drop(runner);
    first.shutdown().await;

    let second = process(&url).await;
    let saved = second.replay(&replay.id).await.unwrap();
    assert_eq!(saved.state, ReplayState::Running);
    assert_eq!(
        (saved.progress.visited, saved.progress.scheduled),
        (150, 150)
    );
    let runner = ReplayRunner::new(second.service().clone(), ReplayRunnerConfig::default());
    let mut t = 1_500;
    for steps in 1.. {
        t += 1_000;
        let r = runner.step(at(t0, t)).await.unwrap();
        assert!(r.scheduled <= 100, "{r:?}");
        deliver(&scheduler, at(t0, t)).await;
        if r.ended == 1 {
            break;
        }
        assert!(steps < 5, "the replay did not end");
    }
    let done = second.replay(&replay.id).await.unwrap();
    assert_eq!(done.state, ReplayState::Done);
    assert_eq!((done.progress.visited, done.progress.scheduled), (300, 300));

    // The streams: each matching task once, nothing else.
    let worker = second.retry_worker("checker").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let got = worker
            .queue()
            .claim(1_000, Duration::from_millis(50))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        seen.extend(got.iter().map(|d| d.request.task_id.to_string()));
    }
    assert_eq!(seen.len(), 300, "each task delivered once");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 300);
    assert!(seen.iter().all(|id| id.starts_with('r')));
    second.shutdown().await;
    scheduler.shutdown().await;
}

/// Every key of the Redis server and its serialized value (`DUMP`), sorted: the store byte
/// for byte. The janitors' locks are left out: the janitor's first run (at start, on each
/// shard in turn) may still hold one, and it writes nothing here (nothing is old enough).
fn snapshot(redis: &RedisServer) -> Vec<(String, String)> {
    let mut keys: Vec<String> = redis
        .cli(&["--scan"])
        .lines()
        .filter(|k| !k.ends_with(":janitor:lock"))
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let dump = redis.cli(&["DUMP", &k]);
            (k, dump)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_not_one_byte_of_the_store() {
    let redis = RedisServer::start();
    // No loop of its own writes while the test looks: the janitor's first run is at start,
    // its next an hour later.
    let failures = FailedTasks::builder()
        .redis(RedisConfig {
            url: redis.url(),
            shards: 4,
            retention: failed_tasks::Retention {
                janitor_interval: Duration::from_secs(3_600),
                ..failed_tasks::Retention::default()
            },
            ..RedisConfig::default()
        })
        .without_scheduler()
        .without_replay_runner()
        .start()
        .await
        .unwrap();
    let t0 = Timestamp::now();
    let tasks: Vec<FailedTask> = (0..60)
        .map(|i| {
            let code = if i % 2 == 0 {
                "TIMEOUT_ERROR"
            } else {
                "PARSE_ERROR"
            };
            failed(&format!("dry-{i:03}"), code, at(t0, -60_000 - i))
        })
        .collect();
    failures.record_failures(&tasks).await.unwrap();
    let before = snapshot(&redis);
    assert!(before.len() > 10, "{} keys", before.len());
    let filter = TaskFilter {
        error_code: Some(failed_tasks::domain::ErrorCode::parse("TIMEOUT_ERROR").unwrap()),
        ..TaskFilter::default()
    };
    let preview = failures.preview_replay(&filter).await.unwrap();
    assert_eq!(preview.matching, 30);
    assert_eq!(preview.sample.len(), 20);
    let after = snapshot(&redis);
    let changed: Vec<&String> = before
        .iter()
        .chain(after.iter())
        .filter(|kv| !(before.contains(kv) && after.contains(kv)))
        .map(|(k, _)| k)
        .collect();
    assert!(
        changed.is_empty(),
        "a dry run wrote to the store: {changed:?}"
    );
    failures.shutdown().await;
}
