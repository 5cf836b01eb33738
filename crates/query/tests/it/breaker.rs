//! The circuit breaker's decider over the memory store (real gates, real scheduling): each
//! step is driven with its time, so nothing waits on a clock.

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{
    BreakerConfig, BreakerPhase, FailedTask, GateCreator, JitterRng, NewFailedTask, RetryConfig,
    RetryPolicy, Timestamp,
};
use failed_tasks_query::audit::{AuditAction, AuditQuery};
use failed_tasks_query::{
    Deadlines, FailedTaskService, RetryBreaker, RetryCounters, Transition, BREAKER_ACTOR,
};
use failed_tasks_store::{MemoryStore, RetryQueue, Stores};

const BASE: i64 = 1_737_709_200_000;

fn at(offset_s: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE + offset_s * 1000).unwrap()
}

/// A retry of `task_type` that failed again with a timeout (attempt `retry_count`) at `at`.
fn timeout(id: &str, task_type: &str, retry_count: u32, at: Timestamp) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: task_type.into(),
        client_id: "c1".into(),
        codebase_path: "/p".into(),
        start_time: Timestamp::saturating_from_unix_millis(at.unix_millis() - 1000),
        fail_time: at,
        error_code: "TIMEOUT_ERROR".into(),
        error_message: format!("timeout on {id}"),
        retry_count,
        processed_files: 1,
        error_category: None,
    })
    .unwrap()
}

fn service() -> (FailedTaskService, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    // Retries due 2 s after a first retry fails again (1 s × 2), no jitter.
    let policy = RetryPolicy::new(RetryConfig {
        base_delay: Duration::from_secs(1),
        jitter: 0.0,
        ..RetryConfig::default()
    })
    .unwrap();
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default())
        .with_retry_policy(policy)
        .with_jitter(JitterRng::new(3))
        .with_breaker_config(BreakerConfig::default());
    (service, store)
}

/// Claims everything delivered so far; the task ids.
async fn delivered(
    service: &FailedTaskService,
    store: &MemoryStore,
    now: Timestamp,
) -> Vec<String> {
    while service.deliver_due(now, 1000).await.unwrap().more {}
    let queue = store.retry_queue();
    let got = queue.claim(10_000, Duration::ZERO).await.unwrap();
    let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    queue.ack(&ids).await.unwrap();
    got.into_iter()
        .map(|d| d.request.task_id.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn an_outage_opens_holds_probes_and_closes() {
    let (service, store) = service();
    let breaker = RetryBreaker::new(service.clone(), "replica-a");
    // 19 retries failing again: below the minimum; nothing opens.
    let first: Vec<FailedTask> = (0..19)
        .map(|i| timeout(&format!("e{i:02}"), "embedding", 1, at(0)))
        .collect();
    service.record_failures(&first).await.unwrap();
    assert_eq!(breaker.step(at(1)).await.unwrap().transitions, vec![]);
    // The 20th (and a resolved indexing retry elsewhere) trips embedding/service_timeout.
    service
        .record_failure(&timeout("e19", "embedding", 1, at(1)))
        .await
        .unwrap();
    service
        .record_failure(&timeout("i00", "indexing", 1, at(1)))
        .await
        .unwrap();
    let report = breaker.step(at(2)).await.unwrap();
    assert_eq!(report.transitions.len(), 1, "{report:?}");
    assert!(
        matches!(&report.transitions[0], Transition::Opened(k) if k.to_string() == "embedding/service_timeout")
    );
    let views = service.retry_breakers(at(2)).await.unwrap();
    assert_eq!(views.len(), 1);
    let gate = views[0].gate.clone().expect("its gate is active");
    assert_eq!(gate.gate.created_by, GateCreator::Breaker);
    assert_eq!(views[0].state.phase, BreakerPhase::Open);
    assert_eq!(views[0].state.trigger.failed_again, 20);
    // Another replica's decider is locked out while the lease is held.
    let other = RetryBreaker::new(service.clone(), "replica-b");
    assert!(other.step(at(3)).await.unwrap().locked_out);

    // Open: every embedding retry stays held however late; indexing goes through.
    let got = delivered(&service, &store, at(50)).await;
    assert_eq!(got, vec!["i00".to_owned()]);
    assert_eq!(breaker.step(at(50)).await.unwrap().transitions, vec![]);
    let held = service.retry_gates(at(50)).await.unwrap()[0].held;
    assert_eq!(held, 20);

    // Cool-down over: three canaries pass; they fail again: open again, twice as long.
    let report = breaker.step(at(62)).await.unwrap();
    assert!(matches!(
        report.transitions[..],
        [Transition::HalfOpened(_)]
    ));
    let canaries = delivered(&service, &store, at(62)).await;
    assert_eq!(canaries.len(), 3, "{canaries:?}");
    assert!(
        delivered(&service, &store, at(63)).await.is_empty(),
        "spent"
    );
    let failed: Vec<FailedTask> = canaries
        .iter()
        .map(|id| timeout(id, "embedding", 2, at(63)))
        .collect();
    service.record_failures(&failed).await.unwrap();
    let report = breaker.step(at(64)).await.unwrap();
    assert!(matches!(report.transitions[..], [Transition::Opened(_)]));
    let state = &service.retry_breakers(at(64)).await.unwrap()[0].state;
    assert_eq!((state.opens, state.cooldown), (2, Duration::from_secs(120)));
    assert!(delivered(&service, &store, at(100)).await.is_empty());

    // Second probe: the canaries resolve; the breaker closes and releases everything.
    assert!(matches!(
        breaker.step(at(185)).await.unwrap().transitions[..],
        [Transition::HalfOpened(_)]
    ));
    let canaries = delivered(&service, &store, at(185)).await;
    assert_eq!(canaries.len(), 3);
    for id in &canaries {
        let id = failed_tasks_domain::TaskId::parse(id.as_str()).unwrap();
        service.resolve(&id, at(186)).await.unwrap();
    }
    assert!(matches!(
        breaker.step(at(187)).await.unwrap().transitions[..],
        [Transition::Closed(_)]
    ));
    // Shown as closed for a window, then forgotten.
    let views = service.retry_breakers(at(187)).await.unwrap();
    assert_eq!(views[0].state.phase, BreakerPhase::Closed);
    assert_eq!(views[0].gate, None);
    assert!(breaker.step(at(250)).await.unwrap().transitions.is_empty());
    assert!(service.retry_breakers(at(250)).await.unwrap().is_empty());
    assert!(service.retry_gates(at(187)).await.unwrap().is_empty());
    // Every held retry is delivered now (the rest of the 20, none lost, none final).
    let rest = delivered(&service, &store, at(4_000)).await;
    assert_eq!(rest.len(), 17, "{rest:?}");

    let c = service.retry_counters();
    assert_eq!(RetryCounters::get(&c.breaker_opened), 2);
    assert_eq!(RetryCounters::get(&c.breaker_half_opened), 2);
    assert_eq!(RetryCounters::get(&c.breaker_closed), 1);
    let log = service
        .audit_log(&AuditQuery {
            actor: Some(BREAKER_ACTOR.to_owned()),
            ..AuditQuery::newest(100)
        })
        .await
        .unwrap();
    let actions: Vec<AuditAction> = log.entries.iter().rev().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::BreakerOpened,
            AuditAction::BreakerHalfOpened,
            AuditAction::BreakerOpened,
            AuditAction::BreakerHalfOpened,
            AuditAction::BreakerClosed
        ]
    );
}

#[tokio::test]
async fn resolving_retries_keep_it_closed_and_an_operator_release_closes_it() {
    let (service, _store) = service();
    let breaker = RetryBreaker::new(service.clone(), "replica-a");
    // 16 failed again and 5 resolved (first runs that failed, then resolved) of 21: 76 %,
    // under 80 %.
    let failed: Vec<FailedTask> = (0..21)
        .map(|i| timeout(&format!("e{i:02}"), "embedding", u32::from(i < 16), at(0)))
        .collect();
    service.record_failures(&failed[..16]).await.unwrap();
    service.record_failures(&failed[16..]).await.unwrap();
    for t in &failed[16..] {
        service.resolve(t.task_id(), at(1)).await.unwrap();
    }
    assert!(breaker.step(at(2)).await.unwrap().transitions.is_empty());
    // Four more failures: 20 of 25, 80 %: it opens.
    let more: Vec<FailedTask> = (21..25)
        .map(|i| timeout(&format!("e{i:02}"), "embedding", 1, at(2)))
        .collect();
    service.record_failures(&more).await.unwrap();
    assert!(matches!(
        breaker.step(at(3)).await.unwrap().transitions[..],
        [Transition::Opened(_)]
    ));
    // An operator releases its gate: it closes, and what it saw before does not open it
    // again; new failures do.
    let gate = service.retry_gates(at(4)).await.unwrap()[0].gate.id.clone();
    assert!(service.release_gate(&gate).await.unwrap());
    assert!(matches!(
        breaker.step(at(5)).await.unwrap().transitions[..],
        [Transition::Closed(_)]
    ));
    assert!(breaker.step(at(6)).await.unwrap().transitions.is_empty());
    // Failures reported in the very second it closed, before the close, do not reopen it.
    let same_second: Vec<FailedTask> = (50..70)
        .map(|i| timeout(&format!("e{i:02}"), "embedding", 1, at(5)))
        .collect();
    service.record_failures(&same_second).await.unwrap();
    assert!(breaker.step(at(6)).await.unwrap().transitions.is_empty());
    let again: Vec<FailedTask> = (30..50)
        .map(|i| timeout(&format!("e{i:02}"), "embedding", 1, at(7)))
        .collect();
    service.record_failures(&again).await.unwrap();
    assert!(matches!(
        breaker.step(at(8)).await.unwrap().transitions[..],
        [Transition::Opened(_)]
    ));
    let state = &service.retry_breakers(at(8)).await.unwrap()[0].state;
    assert_eq!((state.opens, state.trigger.failed_again), (1, 20));
}

#[tokio::test]
async fn disabled_breakers_never_open() {
    let (service, _store) = service();
    let service = service.with_breaker_config(BreakerConfig {
        enabled: false,
        ..BreakerConfig::default()
    });
    let breaker = RetryBreaker::new(service.clone(), "replica-a");
    let failed: Vec<FailedTask> = (0..50)
        .map(|i| timeout(&format!("e{i:02}"), "embedding", 1, at(0)))
        .collect();
    service.record_failures(&failed).await.unwrap();
    assert!(breaker.step(at(1)).await.unwrap().transitions.is_empty());
    assert!(service.retry_gates(at(1)).await.unwrap().is_empty());
}
