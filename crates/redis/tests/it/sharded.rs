//! The sharded store's own behaviour beyond the conformance checks: placement over the
//! shards, and changing the shard count while serving.

use std::collections::BTreeMap;

use failed_tasks_domain::stats::minute_of;
use failed_tasks_domain::{RetryPlan, TaskFilter, Timestamp};
use failed_tasks_redis::{reshard, RedisConfig, ShardedStore};
use failed_tasks_store::conformance::{expected, mixed_tasks, walk, BASE_MS};
use failed_tasks_store::{RetryStore, StatsStore, StatusStore};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// Failures per minute over the test's hour, all shards together.
async fn counts(store: &ShardedStore) -> BTreeMap<i64, u64> {
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
    for shard in store.shards() {
        let (ids, _) = walk(shard, &TaskFilter::default(), 1000).await;
        let n = ids.len();
        assert!(
            (25..=75).contains(&n),
            "{}: {n} of 800",
            shard.keys().prefix()
        );
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
    let one = helpers::sharded_with(base.clone()).await;
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
        let serving = helpers::sharded_with(RedisConfig {
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
    let sixteen = helpers::sharded_with(RedisConfig {
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
