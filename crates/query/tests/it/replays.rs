//! Replays over the memory store, driven by explicit times (no sleeps): the dry run, the
//! pace, a restart that resumes without scheduling a task twice, the lease, the abort.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{
    FailedTask, GateReason, JitterRng, NewFailedTask, ReplayPace, ReplayState, RetryConfig,
    RetryPolicy, RetryStatus, TaskFilter, TaskId, Timestamp,
};
use failed_tasks_query::{
    Deadlines, FailedTaskService, ReplayAbort, ReplayRequest, ReplayRunner, ReplayRunnerConfig,
};
use failed_tasks_store::{MemoryStore, RetryQueue, RetryStore, Stores};

const BASE: i64 = 1_737_709_200_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE + ms).unwrap()
}

fn failure(id: &str, code: &str, fail_ms: i64) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: "c1".into(),
        codebase_path: "/p".into(),
        start_time: ts(fail_ms - 1000),
        fail_time: ts(fail_ms),
        error_code: code.into(),
        error_message: format!("{code} on {id}"),
        retry_count: 0,
        processed_files: 1,
        error_category: None,
    })
    .unwrap()
}

/// A service over a fresh memory store whose policy retries timeouts half an hour after they
/// fail (so nothing is due before a replay makes it due) and never permission errors.
async fn service_with(timeouts: usize, denied: usize) -> (FailedTaskService, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let policy = RetryPolicy::new(RetryConfig {
        max_retries: 3,
        jitter: 0.0,
        base_delay: Duration::from_secs(1800),
        ..RetryConfig::default()
    })
    .unwrap();
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default())
        .with_retry_policy(policy)
        .with_jitter(JitterRng::new(7));
    let mut tasks: Vec<FailedTask> = (0..timeouts)
        .map(|i| failure(&format!("t{i:04}"), "TIMEOUT_ERROR", -(i as i64) * 1000))
        .collect();
    tasks.extend((0..denied).map(|i| failure(&format!("d{i:04}"), "PERMISSION_DENIED", -5)));
    for chunk in tasks.chunks(500) {
        service.record_failures(chunk).await.unwrap();
    }
    (service, store)
}

fn timeouts() -> TaskFilter {
    TaskFilter::from_params([("errorCode", "TIMEOUT_ERROR")]).unwrap()
}

fn request(pace: Option<f64>) -> ReplayRequest {
    ReplayRequest {
        filter: timeouts(),
        reason: GateReason::parse("provider is back").unwrap(),
        actor: "ops".to_owned(),
        pace: pace.map(|p| ReplayPace::new(p).unwrap()),
    }
}

fn runner(service: &FailedTaskService, batch: u64) -> ReplayRunner {
    ReplayRunner::new(
        service.clone(),
        ReplayRunnerConfig {
            batch,
            ..ReplayRunnerConfig::default()
        },
    )
}

/// Move what is due to the queue and claim all of it: the task ids delivered.
async fn deliver(service: &FailedTaskService, store: &MemoryStore, now: Timestamp) -> Vec<String> {
    loop {
        let r = service.deliver_due(now, 10_000).await.unwrap();
        if !r.more {
            break;
        }
    }
    let got = store
        .retry_queue()
        .claim(100_000, Duration::from_millis(1))
        .await
        .unwrap();
    got.iter().map(|d| d.request.task_id.to_string()).collect()
}

#[tokio::test]
async fn a_dry_run_counts_and_samples_and_changes_nothing() {
    let (service, store) = service_with(30, 5).await;
    let before: Vec<_> = service.list_failed(&all_page()).await.unwrap().retry;
    let preview = service.preview_replay(&timeouts()).await.unwrap();
    assert_eq!(preview.matching, 30);
    assert!(preview.exact);
    let sample: Vec<String> = preview.sample.iter().map(ToString::to_string).collect();
    let want: Vec<String> = (0..20).map(|i| format!("t{i:04}")).collect();
    assert_eq!(sample, want, "the first 20 in the listing's order");
    assert_eq!(
        service.list_failed(&all_page()).await.unwrap().retry,
        before
    );
    assert!(service.replays(10).await.unwrap().is_empty());
    assert!(deliver(&service, &store, ts(0)).await.is_empty());
    // A search counts its pages.
    let searched = TaskFilter::from_params([("q", "PERMISSION_DENIED on d000")]).unwrap();
    let preview = service.preview_replay(&searched).await.unwrap();
    assert_eq!((preview.matching, preview.sample.len()), (5, 5));
}

fn all_page() -> failed_tasks_domain::ListQuery {
    failed_tasks_domain::ListQuery::first_page(
        failed_tasks_domain::PageLimits::new(1000, 1000).unwrap(),
    )
}

#[tokio::test]
async fn a_paced_replay_keeps_its_pace_and_a_restart_schedules_no_task_twice() {
    let (service, store) = service_with(230, 7).await;
    let replay = service
        .create_replay(request(Some(50.0)), ts(0))
        .await
        .unwrap();
    assert_eq!((replay.matched, replay.state), (230, ReplayState::Running));
    let first = runner(&service, 1_000);

    // No time elapsed: nothing. Then PerSecond x elapsed per step.
    assert_eq!(first.step(ts(0)).await.unwrap().visited, 0);
    let r = first.step(ts(1_000)).await.unwrap();
    assert_eq!((r.visited, r.scheduled), (50, 50));
    let r = first.step(ts(1_500)).await.unwrap();
    assert_eq!((r.visited, r.scheduled), (25, 25));
    assert_eq!(first.step(ts(1_500)).await.unwrap().visited, 0);
    let r = first.step(ts(1_700)).await.unwrap();
    assert_eq!(r.visited, 10);
    let mut delivered = deliver(&service, &store, ts(1_700)).await;
    assert_eq!(delivered.len(), 85);

    // Another replica cannot step while this one holds the lease.
    let other = runner(&service, 1_000);
    assert!(other.step(ts(1_800)).await.unwrap().locked_out);

    // Restart: the first runner goes away; a fresh one goes on from the saved position.
    first.release().await.unwrap();
    drop(first);
    let saved = service.replay(&replay.id).await.unwrap();
    assert_eq!((saved.progress.visited, saved.progress.scheduled), (85, 85));
    let second = runner(&service, 1_000);
    // A long pause is caught up by one second's worth at most.
    let r = second.step(ts(60_000)).await.unwrap();
    assert_eq!(r.visited, 50);
    delivered.extend(deliver(&service, &store, ts(60_000)).await);
    let mut t = 60_000;
    let mut steps = 0;
    loop {
        t += 1_000;
        steps += 1;
        let r = second.step(ts(t)).await.unwrap();
        assert!(r.visited <= 50, "{r:?}");
        delivered.extend(deliver(&service, &store, ts(t)).await);
        if r.ended == 1 {
            break;
        }
        assert!(steps < 10, "the replay did not end");
    }
    let done = service.replay(&replay.id).await.unwrap();
    assert_eq!(done.state, ReplayState::Done);
    assert_eq!((done.progress.visited, done.progress.scheduled), (230, 230));
    assert_eq!(done.finished, Some(ts(t)));
    // Every matching task delivered exactly once, no other.
    assert_eq!(delivered.len(), 230);
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), 230);
    assert!(delivered.iter().all(|id| id.starts_with('t')));
    // Done: the runner leaves it alone; nothing more is delivered.
    assert_eq!(second.step(ts(t + 5_000)).await.unwrap().visited, 0);
    assert!(deliver(&service, &store, ts(t + 5_000)).await.is_empty());
}

#[tokio::test]
async fn an_abort_stops_the_replay_and_cancels_what_waits() {
    let (service, store) = service_with(100, 0).await;
    let replay = service.create_replay(request(None), ts(0)).await.unwrap();
    let runner = runner(&service, 10);
    let r = runner.step(ts(100)).await.unwrap();
    assert_eq!((r.visited, r.scheduled), (10, 10));
    let delivered = deliver(&service, &store, ts(100)).await;
    assert_eq!(delivered.len(), 10);
    let r = runner.step(ts(200)).await.unwrap();
    assert_eq!(r.scheduled, 10);

    let ReplayAbort::Aborted {
        replay: aborted,
        cancelled,
    } = service.abort_replay(&replay.id, ts(300)).await.unwrap()
    else {
        panic!("a running replay aborts");
    };
    assert_eq!(aborted.state, ReplayState::Aborted);
    assert_eq!(cancelled, 10, "the 10 made due and not delivered");
    assert_eq!(
        service.abort_replay(&replay.id, ts(400)).await.unwrap(),
        ReplayAbort::Finished(ReplayState::Aborted)
    );
    // Nothing more is scheduled or delivered.
    assert_eq!(runner.step(ts(10_000)).await.unwrap().visited, 0);
    assert!(deliver(&service, &store, ts(10_000)).await.is_empty());
    // The cancelled ones are unscheduled; the rest keep the policy's schedule.
    let status = |id: &str| {
        let store = store.clone();
        let id = TaskId::parse(id).unwrap();
        async move { store.retry_details(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status("t0015").await, RetryStatus::Unscheduled);
    assert!(matches!(status("t0050").await, RetryStatus::Scheduled(_)));
    let unknown = failed_tasks_domain::ReplayId::parse("nope").unwrap();
    assert_eq!(
        service.abort_replay(&unknown, ts(0)).await.unwrap(),
        ReplayAbort::NotFound
    );
}

#[tokio::test]
async fn a_runner_that_lost_its_lease_writes_nothing() {
    let (service, store) = service_with(50, 0).await;
    let replay = service.create_replay(request(None), ts(0)).await.unwrap();
    let a = runner(&service, 10);
    assert_eq!(a.step(ts(100)).await.unwrap().visited, 10);
    let b = runner(&service, 10);
    assert!(b.step(ts(150)).await.unwrap().locked_out);
    // a's lease ends (released here, as if it ran out); b takes over.
    a.release().await.unwrap();
    assert_eq!(b.step(ts(200)).await.unwrap().visited, 10);
    // a, paused meanwhile, goes on with its work: its save is refused, nothing is written.
    let late = service
        .advance_replay(a.holder(), &replay.id, ts(300), 10)
        .await
        .unwrap();
    assert!(late.lease_lost);
    let saved = service.replay(&replay.id).await.unwrap();
    assert_eq!((saved.progress.visited, saved.progress.scheduled), (20, 20));
    // b goes on from there; what a made due is made due again for the same attempt and
    // delivered once.
    let mut t = 200;
    loop {
        t += 100;
        if b.step(ts(t)).await.unwrap().ended == 1 {
            break;
        }
        assert!(t < 2_000, "the replay did not end");
    }
    let delivered = deliver(&service, &store, ts(t)).await;
    assert_eq!(delivered.len(), 50);
    assert_eq!(delivered.iter().collect::<HashSet<_>>().len(), 50);
}
