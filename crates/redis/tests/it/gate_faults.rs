//! Retry gates on real redis-servers: a `limit` gate paces two schedulers together (its
//! bucket is in Redis), and gates survive a new store (a server restart) and a Redis
//! restart with AOF. Schedulers are driven by their step function over an explicit clock.

use std::collections::BTreeMap;
use std::time::Duration;

use failed_tasks_domain::{
    ErrorCategory, FailedTask, GateCreator, GateId, GateMode, GateReason, GateScope, NewFailedTask,
    PerSecond, RetryGate, RetryPlan, TaskType, Timestamp,
};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::RetryStore;
use failed_tasks_testkit::RedisServer;

use crate::helpers;

const BASE_MS: i64 = 1_737_709_200_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap()
}

/// `n` embedding timeouts of `prefix`, each with its retry due at BASE + 1 s.
async fn due(store: &RedisStore, prefix: &str, task_type: &str, n: usize) {
    let planned: Vec<(FailedTask, RetryPlan)> = (0..n)
        .map(|i| {
            let t = FailedTask::new(NewFailedTask {
                task_id: format!("{prefix}{i:05}"),
                task_type: task_type.into(),
                client_id: format!("c{}", i % 7),
                codebase_path: format!("/repo/{i}"),
                start_time: ts(BASE_MS - 1_000),
                fail_time: ts(BASE_MS),
                error_code: "TIMEOUT_ERROR".into(),
                error_message: "timed out".into(),
                retry_count: 1,
                processed_files: 1,
                error_category: Some(ErrorCategory::ServiceTimeout),
            })
            .unwrap();
            (
                t,
                RetryPlan::Retry {
                    due: ts(BASE_MS + 1_000),
                },
            )
        })
        .collect();
    for chunk in planned.chunks(500) {
        store.record_planned(chunk).await.unwrap();
    }
}

fn gate(id: &str, scope: GateScope, mode: GateMode, since: i64) -> RetryGate {
    RetryGate {
        id: GateId::parse(id).unwrap(),
        scope,
        mode,
        reason: GateReason::parse("provider outage").unwrap(),
        created_by: GateCreator::Operator,
        since: ts(since),
        until: None,
    }
}

/// A `limit` of 50/s and two schedulers taking turns every 100 ms (the lock handed over
/// between them each time): per second of the clock, 50 ± 10 % deliveries, both
/// schedulers delivering, and nothing out of the gate's scope held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_gate_paces_two_schedulers_together() {
    let server = RedisServer::start();
    let config = helpers::config(&server.url());
    let a = helpers::store_with(config.clone()).await;
    let b = helpers::store_with(config.clone()).await;
    due(&a, "e", "embedding", 1_000).await;
    let made = BASE_MS + 10_000;
    let limit = gate(
        "g1",
        GateScope {
            task_type: Some(TaskType::parse("embedding").unwrap()),
            ..GateScope::default()
        },
        GateMode::Limit(PerSecond::new(50.0).unwrap()),
        made,
    );
    a.create_gate(&limit, ts(made)).await.unwrap();
    let raw = helpers::raw(&server.url()).await;
    let lock = format!("{}:retry:lock", config.key_prefix);
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    let mut by = [0u64; 2];
    let mut now = made;
    for step in 0..100 {
        now += 100;
        let _: i64 =
            helpers::cmd(&raw, &config.key_prefix, "DEL", vec![lock.as_str().into()]).await;
        let (who, store) = if step % 2 == 0 { (0, &a) } else { (1, &b) };
        let r = store.deliver_due(ts(now), 1_000).await.unwrap();
        assert!(!r.locked_out);
        by[who] += r.moved;
        *per_second.entry((now - made - 1) / 1_000).or_default() += r.moved;
    }
    assert_eq!(per_second.len(), 10);
    for (second, n) in &per_second {
        assert!((45..=55).contains(n), "second {second}: {n} delivered");
    }
    assert!(by[0] > 0 && by[1] > 0, "both schedulers delivered: {by:?}");
    let total: u64 = per_second.values().sum();
    let gates = a.list_gates(ts(now)).await.unwrap();
    assert_eq!(gates[0].held, 1_000 - total, "the rest waits, counted");
}

/// Gates are in Redis: a new store (a restarted server) sees them with their held counts,
/// and so does one after Redis itself restarts and reloads its AOF; releasing then
/// delivers what was held, with the attempt it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_survive_a_server_restart_and_a_redis_restart_with_aof() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let config = helpers::config(&server.url());
    let first = helpers::store_with(config.clone()).await;
    due(&first, "e", "embedding", 30).await;
    due(&first, "i", "indexing", 5).await;
    let hold = gate(
        "g1",
        GateScope {
            task_type: Some(TaskType::parse("embedding").unwrap()),
            error_category: Some(ErrorCategory::ServiceTimeout),
            ..GateScope::default()
        },
        GateMode::Hold,
        BASE_MS,
    );
    let limit = gate(
        "g2",
        GateScope::default(),
        GateMode::Limit(PerSecond::new(1_000.0).unwrap()),
        BASE_MS,
    );
    first.create_gate(&hold, ts(BASE_MS)).await.unwrap();
    first.create_gate(&limit, ts(BASE_MS)).await.unwrap();
    let r = first.deliver_due(ts(BASE_MS + 5_000), 1_000).await.unwrap();
    assert_eq!((r.moved, r.held), (5, 30));
    drop(first);

    let held = |gates: Vec<failed_tasks_domain::GateStatus>| -> Vec<(String, u64)> {
        gates
            .into_iter()
            .map(|g| (g.gate.id.to_string(), g.held))
            .collect()
    };
    let want = vec![("g1".to_owned(), 30), ("g2".to_owned(), 0)];
    let second = helpers::store_with(config.clone()).await;
    let listed = second.list_gates(ts(BASE_MS + 6_000)).await.unwrap();
    assert_eq!(listed[0].gate, hold);
    assert_eq!(listed[1].gate, limit);
    assert_eq!(held(listed), want);

    server.restart();
    assert!(second.wait_connected(Duration::from_secs(10)).await);
    let mut listed = Err(failed_tasks_store::StoreError::Internal(String::new()));
    for _ in 0..50 {
        listed = second.list_gates(ts(BASE_MS + 7_000)).await;
        if listed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held(listed.unwrap()), want, "reloaded from the AOF");
    // The first store's scheduler lock would make the second wait until it runs out: its
    // holder is gone, so hand it over at once.
    let raw = helpers::raw(&server.url()).await;
    let lock = format!("{}:retry:lock", config.key_prefix);
    let _: i64 = helpers::cmd(&raw, &config.key_prefix, "DEL", vec![lock.as_str().into()]).await;
    let r = second
        .deliver_due(ts(BASE_MS + 8_000), 1_000)
        .await
        .unwrap();
    assert_eq!((r.locked_out, r.moved), (false, 0), "still held");
    assert!(second.release_gate(&hold.id).await.unwrap());
    let r = second
        .deliver_due(ts(BASE_MS + 9_000), 1_000)
        .await
        .unwrap();
    assert_eq!((r.locked_out, r.moved), (false, 30));
    let queue = helpers::queue(&second, "w").await;
    let got = failed_tasks_store::RetryQueue::claim(&queue, 100, Duration::from_millis(100))
        .await
        .unwrap();
    let embedding: Vec<_> = got
        .iter()
        .filter(|d| d.request.task_type.as_str() == "embedding")
        .collect();
    assert_eq!(embedding.len(), 30);
    assert!(embedding.iter().all(|d| d.request.attempt == 2));
}
