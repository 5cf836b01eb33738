//! The retry use cases over the memory store (real scheduling, no mocks), and what a store
//! without retries answers.

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{
    ErrorCategory, FailedTask, JitterRng, ListQuery, NewFailedTask, PageLimits, RetryConfig,
    RetryPolicy, RetryState, RetryStatus, TaskFilter, TaskId, Timestamp,
};
use failed_tasks_query::{
    Deadlines, FailedTaskService, QueryError, RetryCounters, RetryScheduler, SchedulerConfig,
};
use failed_tasks_store::{Capability, MemoryStore, MockStatusStore, RetryNow, RetryQueue, Stores};

const BASE: i64 = 1_737_709_200_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap()
}

fn failure(id: &str, code: &str, retry_count: u32, fail_ms: i64) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: "c1".into(),
        codebase_path: "/p".into(),
        start_time: Timestamp::from_unix_millis(fail_ms - 1000).unwrap(),
        fail_time: Timestamp::from_unix_millis(fail_ms).unwrap(),
        error_code: code.into(),
        error_message: format!("{code} on {id}"),
        retry_count,
        processed_files: 1,
        error_category: None,
    })
    .unwrap()
}

fn service() -> (FailedTaskService, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let policy = RetryPolicy::new(RetryConfig {
        max_retries: 3,
        jitter: 0.0,
        base_delay: Duration::from_secs(2),
        ..RetryConfig::default()
    })
    .unwrap();
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default())
        .with_retry_policy(policy)
        .with_jitter(JitterRng::new(7));
    (service, store)
}

#[tokio::test]
async fn recording_schedules_by_the_policy() {
    let (service, _) = service();
    let tasks = [
        failure("timeout", "TIMEOUT_ERROR", 1, BASE),
        failure("denied", "PERMISSION_DENIED", 0, BASE),
        failure("parse", "PARSE_ERROR", 0, BASE),
        failure("spent", "TIMEOUT_ERROR", 3, BASE),
    ];
    service.record_failures(&tasks).await.unwrap();
    let page = service
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    let status = |id: &str| {
        let i = page
            .tasks
            .iter()
            .position(|t| t.task_id().as_str() == id)
            .unwrap();
        page.retry_status(i)
    };
    // 2 s x 2^1 after the failure, attempt 2.
    let s = status("timeout");
    assert_eq!(
        s.next().map(|n| (n.attempt, n.due)),
        Some((2, ts(BASE + 4_000)))
    );
    assert_eq!(
        status("denied"),
        RetryStatus::Final,
        "authorization is never retried"
    );
    assert_eq!(
        status("parse"),
        RetryStatus::Final,
        "data_error is not retried by default"
    );
    assert_eq!(status("spent"), RetryStatus::Final, "max retries reached");
    let c = service.retry_counters();
    assert_eq!(RetryCounters::get(&c.scheduled_by_policy), 1);
    assert_eq!(RetryCounters::get(&c.finals), 3);
    let (_, details) = service
        .get_failed_with_retries(&TaskId::parse("timeout").unwrap())
        .await
        .unwrap();
    assert_eq!(details.attempts.len(), 1);
    assert_eq!(details.status.state(), RetryState::Scheduled);
}

#[tokio::test]
async fn the_scheduler_step_delivers_what_is_due() {
    let (service, store) = service();
    let tasks: Vec<FailedTask> = (0..25)
        .map(|i| failure(&format!("t{i:02}"), "TIMEOUT_ERROR", 0, BASE + i * 1000))
        .collect();
    service.record_failures(&tasks).await.unwrap();
    let scheduler = RetryScheduler::new(
        service.clone(),
        SchedulerConfig {
            batch: 4,
            max_batches: 3,
            ..SchedulerConfig::default()
        },
    );
    // Due at BASE + i s + 2 s: by BASE + 11 s, t00..t09.
    let r = scheduler.step(ts(BASE + 11_000)).await.unwrap();
    assert_eq!((r.moved, r.more), (10, false));
    // A backlog larger than one step: 3 batches of 4, then the rest.
    let r = scheduler.step(ts(BASE + 60_000)).await.unwrap();
    assert_eq!((r.moved, r.more), (12, true));
    let r = scheduler.step(ts(BASE + 60_000)).await.unwrap();
    assert_eq!((r.moved, r.more), (3, false));
    assert_eq!(RetryCounters::get(&service.retry_counters().delivered), 25);
    let queue = store.retry_queue();
    let got = queue.claim(100, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.len(), 25);
    assert!(got.iter().all(|d| d.request.attempt == 1));
}

#[tokio::test]
async fn retry_matching_needs_a_match_and_counts() {
    let (service, _) = service();
    let tasks: Vec<FailedTask> = (0..30)
        .map(|i| {
            let code = if i % 2 == 0 {
                "PERMISSION_DENIED"
            } else {
                "TIMEOUT_ERROR"
            };
            failure(&format!("m{i:02}"), code, 0, BASE + i * 1000)
        })
        .collect();
    service.record_failures(&tasks).await.unwrap();
    let finals = TaskFilter {
        retry: Some(RetryState::Final),
        ..TaskFilter::default()
    };
    let done = service
        .retry_matching(&finals, ts(BASE + 100_000))
        .await
        .unwrap();
    assert_eq!(
        (done.retried, done.already_delivered, done.complete),
        (15, 0, true)
    );
    // Every one of them is scheduled now, by the operator; none is final any more.
    let page = service
        .list_failed(&ListQuery {
            filter: finals.clone(),
            ..ListQuery::first_page(PageLimits::DEFAULT)
        })
        .await
        .unwrap();
    assert_eq!(page.total, 0);
    let delivered = service.deliver_due(ts(BASE + 100_000), 1000).await.unwrap();
    assert_eq!(
        delivered.moved, 30,
        "15 overrides and the 15 timeouts, due by now"
    );
    // Again for the same attempts: nothing is delivered twice.
    let category = TaskFilter {
        category: Some(ErrorCategory::Authorization),
        ..TaskFilter::default()
    };
    let again = service
        .retry_matching(&category, ts(BASE + 100_000))
        .await
        .unwrap();
    assert_eq!((again.retried, again.already_delivered), (0, 15));
    assert_eq!(
        service
            .deliver_due(ts(BASE + 200_000), 1000)
            .await
            .unwrap()
            .moved,
        0
    );
    assert!(matches!(
        service
            .retry_now(&TaskId::parse("nope").unwrap(), ts(BASE))
            .await,
        Ok(RetryNow::NotFound)
    ));
}

#[tokio::test]
async fn a_store_without_retries_says_so() {
    let mut store = MockStatusStore::new();
    store.expect_ping().returning(|| Ok(()));
    let service = FailedTaskService::new(
        Stores::new("read-only", Arc::new(store)),
        Deadlines::default(),
    );
    let id = TaskId::parse("t").unwrap();
    assert!(matches!(
        service.retry_now(&id, ts(BASE)).await,
        Err(QueryError::NotSupported {
            capability: Capability::Retries,
            store: "read-only"
        })
    ));
    assert!(matches!(
        service.resolve(&id, ts(BASE)).await,
        Err(QueryError::NotSupported {
            capability: Capability::Retries,
            store: "read-only"
        })
    ));
    let q = ListQuery {
        filter: TaskFilter {
            retry: Some(RetryState::Scheduled),
            ..TaskFilter::default()
        },
        ..ListQuery::first_page(PageLimits::DEFAULT)
    };
    // Refused before any store call (the mock expects no list).
    assert!(matches!(
        service.list_failed(&q).await,
        Err(QueryError::NotSupported {
            capability: Capability::Retries,
            store: "read-only"
        })
    ));
}

#[tokio::test]
async fn recordings_and_attempts_are_counted_by_the_use_case_with_bounded_labels() {
    use failed_tasks_domain::{ErrorCategory, TaskType};
    use failed_tasks_query::{RecordCounters, RecordedLabels};
    let (service, _store) = service();
    let now = Timestamp::now();
    // 250 distinct error codes: the first 200 keep their value, the rest count as `other`.
    let tasks: Vec<FailedTask> = (0..250)
        .map(|i| {
            let mut raw =
                failure(&format!("t{i}"), "STORAGE_ERROR", 0, now.unix_millis()).into_parts();
            raw.error_code = format!("CODE_{i:03}");
            FailedTask::new(raw).unwrap()
        })
        .collect();
    service.record_failures(&tasks).await.unwrap();
    // A refused batch counts nothing.
    let mut ahead = tasks[0].clone().into_parts();
    ahead.fail_time = Timestamp::from_unix_millis(now.unix_millis() + 3_600_000).unwrap();
    assert!(service
        .record_failures(&[FailedTask::new(ahead).unwrap()])
        .await
        .is_err());
    service
        .report_attempts(&TaskType::embedding(), 40, now)
        .await
        .unwrap();

    let counts = service.record_counters().recorded();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 250);
    let distinct_codes: std::collections::BTreeSet<&str> =
        counts.iter().map(|(l, _)| l.error_code.as_str()).collect();
    assert_eq!(distinct_codes.len(), RecordCounters::MAX_LABEL_VALUES + 1);
    let category = tasks[0].error_category();
    let other = RecordedLabels {
        category,
        error_code: RecordCounters::OTHER.to_owned(),
        task_type: tasks[0].task_type().to_string(),
    };
    assert_eq!(
        counts.iter().find(|(l, _)| *l == other).map(|(_, n)| *n),
        Some(50)
    );
    assert_ne!(category, ErrorCategory::Authorization);
    assert_eq!(
        service.record_counters().attempts(),
        vec![("embedding".to_owned(), 40)]
    );
}
