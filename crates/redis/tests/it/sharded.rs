//! The sharded store's own behaviour beyond the conformance checks: placement over the
//! shards, and changing the shard count while serving.

use std::collections::BTreeMap;

use failed_tasks_domain::stats::minute_of;
use failed_tasks_domain::{RetryPlan, TaskFilter, Timestamp};
use failed_tasks_redis::{reshard, shard_key, RedisConfig, RedisStore};
use failed_tasks_store::conformance::{expected, mixed_tasks, walk, BASE_MS};
use failed_tasks_store::{RetryStore, StatsStore, StatusStore};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// Failures per minute over the test's hour, all shards together.
async fn counts(store: &RedisStore) -> BTreeMap<i64, u64> {
    let from = minute_of(Timestamp::from_unix_millis(BASE_MS - 3_600_000).unwrap());
    store
        .failure_counts(from, from + 180)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.minute, c.total))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_spread_over_every_shard_and_each_shard_is_a_store_of_its_own() {
    let server = RedisServer::start();
    let store = helpers::sharded(&server.url(), 16).await;
    let tasks = mixed_tasks(800);
    store.record_batch(&tasks).await.unwrap();
    for i in 0..16 {
        // Shard `i` read as a one-shard store on its own prefix.
        let prefix = shard_key(&store.config().key_prefix, i, 16);
        let shard = helpers::store_with(RedisConfig {
            key_prefix: prefix.clone(),
            shards: 1,
            ..store.config().clone()
        })
        .await;
        let (ids, _) = walk(&shard, &TaskFilter::default(), 1000).await;
        let n = ids.len();
        assert!((25..=75).contains(&n), "{prefix}: {n} of 800");
    }
    let (ids, totals) = walk(&store, &TaskFilter::default(), 37).await;
    assert_eq!(ids, expected(&tasks, &TaskFilter::default()));
    assert!(totals.iter().all(|t| *t == 800));
}

/// 1 → 4 → 16 shards while a server (reading both layouts, writing the new one) keeps
/// recording: nothing is lost or duplicated, retries and counters move with the tasks, and
/// a second run finds nothing left to move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_while_serving_moves_every_task_once() {
    let server = RedisServer::start();
    let base = helpers::config(&server.url());
    let one = helpers::store_with(base.clone()).await;
    let mut tasks = mixed_tasks(600);
    // Some with a retry scheduled (in the due set), some recorded twice (a history).
    let due = Timestamp::from_unix_millis(BASE_MS + 3_600_000).unwrap();
    let planned: Vec<_> = tasks
        .iter()
        .map(|t| (t.clone(), RetryPlan::Retry { due }))
        .collect();
    one.record_planned(&planned[..100]).await.unwrap();
    one.record_batch(&tasks[100..]).await.unwrap();
    let before = counts(&one).await;
    assert_eq!(before.values().sum::<u64>(), 600);

    for (from, to) in [(1, 4), (4, 16)] {
        let serving = helpers::store_with(RedisConfig {
            shards: to,
            resharding_from: Some(from),
            ..base.clone()
        })
        .await;
        let (ids, _) = walk(&serving, &TaskFilter::default(), 50).await;
        assert_eq!(
            ids,
            expected(&tasks, &TaskFilter::default()),
            "before {from} → {to}"
        );
        let config = base.clone();
        let mover = tokio::spawn(async move { reshard(&config, from, to, 64, |_| {}).await });
        // Writes while moving: new tasks, and re-recordings of moving ones.
        let extra = mixed_tasks(1200)
            .into_iter()
            .filter(|t| !tasks.iter().any(|o| o.task_id() == t.task_id()))
            .take(20)
            .collect::<Vec<_>>();
        for t in &extra {
            serving.record(t).await.unwrap();
        }
        tasks.extend(extra);
        let report = mover.await.unwrap().unwrap();
        assert!(report.moved > 0, "{report:?}");
        let (ids, totals) = walk(&serving, &TaskFilter::default(), 50).await;
        assert_eq!(
            ids,
            expected(&tasks, &TaskFilter::default()),
            "after {from} → {to}"
        );
        assert_eq!(totals[0] as usize, tasks.len());
        let again = reshard(&base, from, to, 64, |_| {}).await.unwrap();
        assert_eq!(
            again.moved, 0,
            "a second run has nothing to move: {again:?}"
        );
    }
    let sixteen = helpers::store_with(RedisConfig {
        shards: 16,
        ..base.clone()
    })
    .await;
    let (ids, _) = walk(&sixteen, &TaskFilter::default(), 100).await;
    assert_eq!(ids, expected(&tasks, &TaskFilter::default()));
    assert_eq!(
        counts(&sixteen).await.values().sum::<u64>(),
        tasks.len() as u64
    );
    // The scheduled retries moved with their tasks.
    let gauges = sixteen.retry_gauges(due).await.unwrap();
    assert_eq!(gauges.scheduled, 100);
    // The old single prefix holds no task any more.
    let raw = helpers::raw(&server.url()).await;
    let all = format!("{}:idx:all", base.key_prefix);
    let left: u64 = helpers::cmd(&raw, &all, "ZCARD", vec![all.as_str().into()]).await;
    assert_eq!(left, 0);
    let _ = one;
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<failed_tasks_domain::TaskId>,
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    slowest: std::time::Duration,
}

/// The request deadline of the server (the use cases' default): every call must answer
/// within it, an error or a success.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Writers (batches of 20 new tasks) and readers (the first page) against `store` until
/// `stop`; every call answered within [`DEADLINE`], each error a 503 kind.
async fn load(
    store: RedisStore,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    worker: usize,
) -> Seen {
    use failed_tasks_domain::{ErrorCategory, PageLimits, PageSize};
    use failed_tasks_store::conformance::task;
    let mut seen = Seen::default();
    let mut seq = 0u64;
    let page = failed_tasks_domain::ListQuery {
        filter: TaskFilter::default(),
        page_size: PageSize::new(50, PageLimits::DEFAULT).unwrap(),
        cursor: None,
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let batch: Vec<_> = (0..20)
            .map(|k| {
                seq += 1;
                task(
                    &format!("w{worker}-{seq}"),
                    (seq * 20 + k) as i64,
                    ErrorCategory::ServiceTimeout,
                    "embedding",
                    "client1",
                    "TIMEOUT_ERROR",
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let wrote = tokio::time::timeout(DEADLINE, store.record_batch(&batch))
            .await
            .expect("a batch answered within the deadline");
        let read = tokio::time::timeout(DEADLINE, store.list(&page))
            .await
            .expect("a page answered within the deadline");
        seen.slowest = seen.slowest.max(started.elapsed());
        match wrote {
            Ok(_) => {
                seen.ok += 1;
                seen.acked.extend(batch.iter().map(|t| t.task_id().clone()));
            }
            Err(e) => {
                assert!(
                    e.is_unavailable(),
                    "a write failed with a non-503 error: {e}"
                );
                *seen.errors.entry(e.kind()).or_default() += 1;
            }
        }
        if let Err(e) = read {
            assert!(
                e.is_unavailable(),
                "a read failed with a non-503 error: {e}"
            );
            *seen.errors.entry(e.kind()).or_default() += 1;
        }
        // A client backs off after a 503 (calls refused at once would otherwise spin and
        // starve the runtime); yield either way.
        if seen.errors.values().sum::<u64>() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    seen
}

/// Run [`load`] from three workers while `disturb` runs (blocking), and a second more;
/// then every acknowledged task must be stored.
async fn survives(
    store: &RedisStore,
    disturb: impl FnOnce() + Send + 'static,
    settle: impl Fn() -> bool + Send + Sync + 'static,
    fresh_reader: bool,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(load(store.clone(), stop.clone(), w)))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(disturb).await.unwrap();
    // Until the cluster is whole again (bounded), then a second of load on it.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let settle = std::sync::Arc::new(settle);
    loop {
        let s = settle.clone();
        if tokio::task::spawn_blocking(move || s()).await.unwrap() {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the cluster did not settle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        let seen = w.await.unwrap();
        eprintln!(
            "worker: {} batches stored, errors {:?}, slowest call pair {:?}",
            seen.ok, seen.errors, seen.slowest
        );
        assert!(seen.ok > 0, "no batch was stored at all");
        acked.extend(seen.acked);
    }
    // Every acknowledged task is there (reads may need a moment while routes refresh),
    // read by this store or by a new client of the same configuration.
    let fresh;
    let store = if fresh_reader {
        fresh = helpers::store_with(store.config().clone()).await;
        &fresh
    } else {
        store
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for id in &acked {
        loop {
            match store.get(id).await {
                Ok(Some(_)) => break,
                Ok(None) => panic!("acknowledged task {id} was lost"),
                Err(e) if e.is_unavailable() && std::time::Instant::now() < until => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reading {id}: {e}"),
            }
        }
    }
    let (ids, _) = walk(store, &TaskFilter::default(), 500).await;
    assert!(ids.len() >= acked.len());
}

/// Slots (with their keys) move between masters under load (`redis-cli --cluster
/// reshard`: MIGRATE, ASK and MOVED redirections, TRYAGAIN on split slots): every call
/// answers within the deadline, and a new client finds every acknowledged task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_slots_under_load_loses_nothing_acknowledged() {
    moving_slots(true).await;
}

/// The store's own client keeps working after `redis-cli --cluster reshard` under this
/// load (fred 10.1 used to end its connection task on an `ASK`; fred no longer follows
/// redirections, the store does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_recovers_after_slots_moved_under_load() {
    moving_slots(false).await;
}

async fn moving_slots(fresh_reader: bool) {
    let cluster = std::sync::Arc::new(failed_tasks_testkit::RedisCluster::start());
    let store = helpers::sharded(&cluster.url(), 16).await;
    store.record_batch(&mixed_tasks(500)).await.unwrap();
    let c = cluster.clone();
    let masters = cluster.masters();
    let (from, to) = (masters[0], masters[1]);
    survives(
        &store,
        move || c.move_slots(from, to, 3000),
        || true,
        fresh_reader,
    )
    .await;
    // fred's connection task never ended: the restart in `conn` is only a safety net.
    assert_eq!(store.condition().connection_restarts, 0);
}

/// A master with a replica is killed under load: its replica takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_load_loses_nothing_acknowledged() {
    let cluster = std::sync::Arc::new(std::sync::Mutex::new(
        failed_tasks_testkit::RedisCluster::start_with_replicas(1),
    ));
    let (url, victim) = {
        let c = cluster.lock().unwrap();
        (c.url(), c.masters()[0])
    };
    let store = helpers::store_with(RedisConfig {
        shards: 16,
        ..helpers::config(&url)
    })
    .await;
    store.record_batch(&mixed_tasks(500)).await.unwrap();
    let (k, s) = (cluster.clone(), cluster.clone());
    survives(
        &store,
        move || k.lock().unwrap().kill(victim),
        move || {
            let c = s.lock().unwrap();
            c.masters().len() == 3
                && c.nodes()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != victim)
                    .all(|(_, n)| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        },
        false,
    )
    .await;
}
