//! Retries under faults, on real redis-servers: two schedulers on one store, Redis killed
//! and restarted while delivering, a worker that claims and dies. Schedulers are driven by
//! their step function; waits are for conditions, each under a bounded deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use failed_tasks_domain::{ErrorCategory, FailedTask, NewFailedTask, RetryPlan, Timestamp};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::{RetryQueue, RetryStore};
use failed_tasks_testkit::RedisServer;
use fred::types::Value;

use crate::helpers;

const BASE_MS: i64 = 1_737_709_200_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap()
}

fn failure(i: usize) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: format!("r{i:05}"),
        task_type: "embedding".into(),
        client_id: format!("c{}", i % 7),
        codebase_path: format!("/repo/{i}"),
        start_time: Timestamp::from_unix_millis(BASE_MS).unwrap(),
        fail_time: Timestamp::from_unix_millis(BASE_MS + (i as i64 % 600) * 100).unwrap(),
        error_code: "TIMEOUT_ERROR".into(),
        error_message: "timed out".into(),
        retry_count: (i % 3) as u32,
        processed_files: 1,
        error_category: Some(ErrorCategory::ServiceTimeout),
    })
    .unwrap()
}

/// `n` failures with retries due between BASE and BASE + 60 s, recorded in batches.
async fn schedule(store: &RedisStore, n: usize) -> Vec<FailedTask> {
    let tasks: Vec<FailedTask> = (0..n).map(failure).collect();
    for chunk in tasks.chunks(500) {
        let planned: Vec<(FailedTask, RetryPlan)> = chunk
            .iter()
            .map(|t| {
                let due = t.fail_time().unix_millis() + 1_000;
                (t.clone(), RetryPlan::Retry { due: ts(due) })
            })
            .collect();
        store.record_planned(&planned).await.unwrap();
    }
    tasks
}

/// Every entry of the stream, as (TaskId, Attempt), read in pages with XRANGE.
async fn stream_entries(url: &str, store: &RedisStore) -> Vec<(String, u32)> {
    let raw = helpers::raw(url).await;
    let key = store.config().retry_stream();
    let prefix = &store.config().key_prefix;
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Vec<Value> = helpers::cmd(
            &raw,
            prefix,
            "XRANGE",
            vec![
                key.as_str().into(),
                start.as_str().into(),
                "+".into(),
                "COUNT".into(),
                1000i64.into(),
            ],
        )
        .await;
        if page.is_empty() {
            return out;
        }
        for entry in &page {
            let Value::Array(parts) = entry else {
                panic!("entry {entry:?}")
            };
            let id = parts[0].as_string().unwrap();
            let Value::Array(fields) = &parts[1] else {
                panic!("fields {parts:?}")
            };
            let fields: BTreeMap<String, String> = fields
                .chunks(2)
                .map(|kv| (kv[0].as_string().unwrap(), kv[1].as_string().unwrap()))
                .collect();
            out.push((fields["TaskId"].clone(), fields["Attempt"].parse().unwrap()));
            start = format!("({id}");
        }
    }
}

/// Each scheduled task exactly once in the stream, with the attempt after its failure.
fn assert_exactly_once(tasks: &[FailedTask], entries: &[(String, u32)]) {
    let mut seen: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (id, attempt) in entries {
        seen.entry(id.as_str()).or_default().push(*attempt);
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, a)| a.len() > 1).take(5).collect();
    assert!(doubled.is_empty(), "delivered more than once: {doubled:?}");
    for t in tasks {
        assert_eq!(
            seen.get(t.task_id().as_str()).map(Vec::as_slice),
            Some(&[t.retry_count() + 1][..]),
            "{} not delivered exactly once",
            t.task_id()
        );
    }
    assert_eq!(entries.len(), tasks.len());
}

async fn due_left(store: &RedisStore, now: Timestamp) -> u64 {
    store.retry_gauges(now).await.unwrap().scheduled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_deliver_each_retry_exactly_once() {
    let server = RedisServer::start();
    let config = helpers::config(&server.url());
    let a = helpers::store_with(config.clone()).await;
    let b = helpers::store_with(config).await;
    let tasks = schedule(&a, 10_000).await;
    // Both replicas step as fast as they can over a moving "now", small batches, so they
    // contend for every batch; the first to have moved 3,000 stops (a rolling restart) and
    // the other, locked out until that lock runs out, takes over.
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let step = |store: RedisStore, stopped: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut moved, mut locked_out) = (0u64, 0u64);
        let mut now = BASE_MS;
        loop {
            assert!(Instant::now() < deadline, "scheduling did not finish");
            now = (now + 500).min(BASE_MS + 70_000);
            match store.deliver_due(ts(now), 97).await {
                Ok(r) if r.locked_out => locked_out += 1,
                Ok(r) => moved += r.moved,
                Err(e) => panic!("deliver_due: {e}"),
            }
            if moved >= 3_000
                && stopped
                    .compare_exchange(
                        false,
                        true,
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                    )
                    .is_ok()
            {
                return (moved, locked_out);
            }
            if now == BASE_MS + 70_000 && due_left(&store, ts(now)).await == 0 {
                return (moved, locked_out);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (ra, rb) = tokio::join!(step(a.clone(), stopped.clone()), step(b.clone(), stopped));
    assert!(
        ra.0 > 0 && rb.0 > 0,
        "both replicas moved retries: {ra:?} {rb:?}"
    );
    assert!(ra.1 + rb.1 > 0, "the lock kept one scheduler at a time");
    assert_eq!(ra.0 + rb.0, 10_000);
    assert_eq!(due_left(&a, ts(BASE_MS + 70_000)).await, 0);
    assert_exactly_once(&tasks, &stream_entries(&server.url(), &a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_during_delivery() {
    // Persistence on, every write synced: a restart reloads what was acknowledged.
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = helpers::store(&server.url()).await;
    let tasks = schedule(&store, 3_000).await;
    let now = ts(BASE_MS + 70_000);
    // The scheduler loop of one replica: small batches, errors retried (it must resume by
    // itself), until nothing is due.
    let runner = {
        let store = store.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut failures = 0u64;
            loop {
                assert!(Instant::now() < deadline, "the scheduler did not finish");
                match store.deliver_due(now, 10).await {
                    Ok(r) if !r.more && !r.locked_out => return failures,
                    Ok(_) => {}
                    Err(_) => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
    };
    // Kill Redis once delivery is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "delivery did not start");
        let left = store.retry_gauges(now).await.map(|g| g.scheduled);
        if left.is_ok_and(|n| n < 2_500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.restart();
    let failures = tokio::time::timeout(Duration::from_secs(90), runner)
        .await
        .expect("the scheduler resumed and finished")
        .unwrap();
    assert!(failures > 0, "the scheduler saw Redis go away");
    assert_eq!(store.retry_gauges(now).await.unwrap().scheduled, 0);
    assert_exactly_once(&tasks, &stream_entries(&server.url(), &store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_claims_and_dies_is_reclaimed_after_the_lease() {
    let server = RedisServer::start();
    let mut config = helpers::config(&server.url());
    config.retry_consumer_lease = Duration::from_millis(300);
    let store = helpers::store_with(config).await;
    let tasks = schedule(&store, 40).await;
    let moved = store
        .deliver_due(ts(BASE_MS + 70_000), 100)
        .await
        .unwrap()
        .moved;
    assert_eq!(moved, 40);
    let dying = helpers::queue(&store, "dies").await;
    let claimed = dying.claim(25, Duration::from_millis(100)).await.unwrap();
    assert_eq!(claimed.len(), 25);
    drop(dying); // its connection closes; the 25 stay pending under its name
    let survivor = helpers::queue(&store, "survives").await;
    let rest = survivor
        .claim(100, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        15,
        "the others' requests are not handed out twice"
    );
    let ids: Vec<String> = rest.iter().map(|d| d.id.clone()).collect();
    survivor.ack(&ids).await.unwrap();
    // Before the lease ran out nothing is reclaimed...
    let early = survivor
        .reclaim_stale(Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert!(early.is_empty());
    // ... after it, the dead worker's requests are the survivor's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reclaimed = Vec::new();
    while reclaimed.len() < 25 {
        assert!(
            Instant::now() < deadline,
            "reclaimed only {}",
            reclaimed.len()
        );
        reclaimed.extend(survivor.reclaim_stale(survivor.lease(), 100).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got: Vec<String> = reclaimed
        .iter()
        .map(|d| d.request.task_id.to_string())
        .collect();
    let mut want: Vec<String> = claimed
        .iter()
        .map(|d| d.request.task_id.to_string())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(reclaimed.iter().all(|d| d.deliveries == 2));
    let ids: Vec<String> = reclaimed.iter().map(|d| d.id.clone()).collect();
    assert_eq!(survivor.ack(&ids).await.unwrap(), 25);
    let g = store.retry_gauges(ts(BASE_MS + 70_000)).await.unwrap();
    assert_eq!((g.pending, g.reclaimed, g.queued), (0, 25, 40));
    assert_eq!(tasks.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_redis_restarting_empty() {
    // Without persistence the group is gone after a restart: the queue re-creates it.
    let mut server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let queue = helpers::queue(&store, "w").await;
    assert!(queue
        .claim(10, Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());
    server.restart();
    assert!(store.wait_connected(Duration::from_secs(10)).await);
    assert!(queue.wait_connected(Duration::from_secs(10)).await);
    let tasks = schedule(&store, 5).await;
    assert_eq!(
        store
            .deliver_due(ts(BASE_MS + 70_000), 10)
            .await
            .unwrap()
            .moved,
        5
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < tasks.len() {
        assert!(Instant::now() < deadline, "claims did not recover");
        if let Ok(d) = queue.claim(10, Duration::from_millis(50)).await {
            got.extend(d);
        }
    }
    assert_eq!(got.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_and_expired_tasks_are_never_delivered() {
    let server = RedisServer::start();
    let mut config = helpers::config(&server.url());
    config.retention.max_age = Duration::from_secs(3600);
    let store = helpers::store_with(config).await;
    // 30 failures from long ago with retries due; the janitor trims them by age.
    let tasks = schedule(&store, 30).await;
    assert_eq!(due_left(&store, ts(BASE_MS)).await, 30);
    let report = store.trim_once(BASE_MS + 10 * 3_600_000).await.unwrap();
    assert_eq!(report.removed_by_age, 30);
    assert_eq!(
        due_left(&store, ts(BASE_MS)).await,
        0,
        "trimming drops the schedule"
    );
    // A record that Redis itself dropped (its expiry, no janitor) leaves a due entry that
    // the scheduler drops instead of delivering.
    schedule(&store, 2).await;
    let raw = helpers::raw(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let key = format!("{prefix}:task:{}", tasks[0].task_id());
    let _: i64 = helpers::cmd(&raw, &prefix, "DEL", vec![key.into()]).await;
    let r = store.deliver_due(ts(BASE_MS + 70_000), 10).await.unwrap();
    assert_eq!((r.moved, r.dropped), (1, 1));
    let entries = stream_entries(&server.url(), &store).await;
    assert_eq!(
        entries,
        [(tasks[1].task_id().to_string(), tasks[1].retry_count() + 1)]
    );
}
