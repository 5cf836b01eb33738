//! The use cases against mocked stores: mapping, order, deadlines (paused time, no sleeps).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod bulk;
mod search;

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::stats::{Bucket, BucketTops};
use failed_tasks_domain::{FailedTask, ListQuery, PageLimits, TaskFilter, TaskId, Timestamp};
use failed_tasks_query::{Deadlines, FailedTaskService, QueryError};
use failed_tasks_store::{FailedTaskPage, MockStatusStore, StatusStore, StoreError, Stores};

fn service(store: MockStatusStore) -> FailedTaskService {
    FailedTaskService::new(tasks_only(store), Deadlines::default())
}

/// A store that keeps tasks and nothing else.
fn tasks_only(store: impl StatusStore + 'static) -> Stores {
    Stores::new("mock", Arc::new(store))
}

fn seed_page() -> FailedTaskPage {
    let mut tasks = FailedTask::seed_examples();
    tasks.sort_by_key(FailedTask::sort_key);
    FailedTaskPage {
        total: 3,
        tasks,
        next_cursor: None,
        skipped_corrupt: 0,
        retry: Vec::new(),
    }
}

#[tokio::test]
async fn success_passes_the_page_through_in_order() {
    let mut store = MockStatusStore::new();
    store.expect_ping().times(1).returning(|| Ok(()));
    store
        .expect_list()
        .times(1)
        .withf(|q| q.page_size.get() == 100 && q.cursor.is_none())
        .returning(|_| Ok(seed_page()));
    let page = service(store)
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    let ids: Vec<_> = page.tasks.iter().map(|t| t.task_id().as_str()).collect();
    assert_eq!(ids, ["task_003", "task_002", "task_001"]);
}

#[tokio::test]
async fn connection_error_is_unavailable_and_skips_the_query() {
    let mut store = MockStatusStore::new();
    store
        .expect_ping()
        .returning(|| Err(StoreError::Unavailable("connection refused".into())));
    store.expect_list().never();
    let err = service(store)
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_rejected_ping_is_unavailable_too() {
    let mut store = MockStatusStore::new();
    store
        .expect_ping()
        .returning(|| Err(StoreError::Rejected("NOAUTH".into())));
    store.expect_list().never();
    let err = service(store)
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err:?}");
}

/// A store that answers like `inner`, but only after a delay (or never): mockall's
/// expectations answer synchronously, so the lateness is added around the mock.
struct Late {
    inner: MockStatusStore,
    ping_delay: Option<Duration>,
    list_delay: Option<Duration>,
}

async fn after(delay: Option<Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[async_trait::async_trait]
impl failed_tasks_store::StatusStore for Late {
    async fn ping(&self) -> Result<(), StoreError> {
        after(self.ping_delay).await;
        self.inner.ping().await
    }
    async fn list(&self, q: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        after(self.list_delay).await;
        self.inner.list(q).await
    }
    async fn get(&self, id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        self.inner.get(id).await
    }
    async fn record(
        &self,
        t: &FailedTask,
    ) -> Result<failed_tasks_store::RecordOutcome, StoreError> {
        self.inner.record(t).await
    }
    async fn record_batch(
        &self,
        t: &[FailedTask],
    ) -> Result<Vec<failed_tasks_store::RecordOutcome>, StoreError> {
        self.inner.record_batch(t).await
    }
    async fn remove(&self, id: &TaskId) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_ping_that_never_answers_is_unavailable_at_the_health_deadline() {
    let mut inner = MockStatusStore::new();
    inner.expect_ping().never();
    inner.expect_list().never();
    let svc = FailedTaskService::new(
        tasks_only(Late {
            inner,
            ping_delay: None,
            list_delay: Some(Duration::ZERO),
        }),
        Deadlines::default(),
    );
    let started = tokio::time::Instant::now();
    let err = svc
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err:?}");
    // Paused time: exactly the 5 s health deadline passed, no more.
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_slow_query_is_cut_at_the_request_deadline() {
    let mut inner = MockStatusStore::new();
    inner.expect_ping().returning(|| Ok(()));
    inner.expect_list().never();
    let deadlines = Deadlines {
        health_check: Duration::from_secs(5),
        request: Duration::from_secs(8),
    };
    let svc = FailedTaskService::new(
        tasks_only(Late {
            inner,
            ping_delay: Some(Duration::from_secs(1)),
            list_delay: None,
        }),
        deadlines,
    );
    let started = tokio::time::Instant::now();
    let err = svc
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn a_late_but_timely_store_is_served() {
    let mut inner = MockStatusStore::new();
    inner.expect_ping().returning(|| Ok(()));
    inner.expect_list().returning(|_| Ok(seed_page()));
    let svc = FailedTaskService::new(
        tasks_only(Late {
            inner,
            ping_delay: Some(Duration::from_millis(4_900)),
            list_delay: Some(Duration::from_secs(4)),
        }),
        Deadlines::default(),
    );
    let page = svc
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 3);
}

#[tokio::test]
async fn query_error_is_internal_and_keeps_the_detail_for_logs_only() {
    let mut store = MockStatusStore::new();
    store.expect_ping().returning(|| Ok(()));
    store.expect_list().returning(|_| {
        Err(StoreError::Rejected(
            "WRONGTYPE Operation against a key".into(),
        ))
    });
    let err = service(store)
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap_err();
    match err {
        QueryError::Internal { detail, kind } => {
            assert_eq!(kind, "rejected");
            assert!(detail.contains("WRONGTYPE"), "{detail}")
        }
        other => panic!("expected Internal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_lost_mid_query_is_unavailable() {
    let mut store = MockStatusStore::new();
    store.expect_ping().returning(|| Ok(()));
    store
        .expect_list()
        .returning(|_| Err(StoreError::Timeout("command timed out".into())));
    let err = service(store)
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn since_after_until_is_a_bad_request_before_any_store_call() {
    let mut store = MockStatusStore::new();
    store.expect_ping().never();
    store.expect_list().never();
    let mut q = ListQuery::first_page(PageLimits::DEFAULT);
    q.filter = TaskFilter {
        since: Some(Timestamp::from_unix_millis(2).unwrap()),
        until: Some(Timestamp::from_unix_millis(1).unwrap()),
        ..TaskFilter::default()
    };
    let err = service(store).list_failed(&q).await.unwrap_err();
    assert!(
        matches!(err, QueryError::BadRequest(ref e) if e.field == "since"),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_absent_is_not_found_and_remove_absent_too() {
    let mut store = MockStatusStore::new();
    store.expect_ping().returning(|| Ok(()));
    store.expect_get().returning(|_| Ok(None));
    store.expect_remove().returning(|_| Ok(false));
    let svc = service(store);
    let id = TaskId::parse("missing").unwrap();
    assert_eq!(svc.get_failed(&id).await.unwrap_err(), QueryError::NotFound);
    assert_eq!(
        svc.remove_failed(&id).await.unwrap_err(),
        QueryError::NotFound
    );
}

fn first_page() -> ListQuery {
    ListQuery::first_page(PageLimits::DEFAULT)
}

#[tokio::test(start_paused = true)]
async fn a_good_answer_stands_in_for_the_next_checks_for_a_second() {
    let mut store = MockStatusStore::new();
    // Two pings: the first request, and the one after the reuse period ran out.
    store.expect_ping().times(2).returning(|| Ok(()));
    store.expect_list().times(4).returning(|_| Ok(seed_page()));
    let svc = service(store);
    svc.list_failed(&first_page()).await.unwrap();
    svc.list_failed(&first_page()).await.unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    svc.list_failed(&first_page()).await.unwrap();
    tokio::time::advance(Duration::from_millis(1500)).await;
    svc.list_failed(&first_page()).await.unwrap();
}

#[tokio::test]
async fn after_the_store_went_away_every_request_checks_again() {
    let mut store = MockStatusStore::new();
    store.expect_ping().times(2).returning(|| Ok(()));
    let mut seq = mockall::Sequence::new();
    store
        .expect_list()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(seed_page()));
    store
        .expect_list()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(StoreError::Unavailable("connection reset".into())));
    store
        .expect_list()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(seed_page()));
    let svc = service(store);
    svc.list_failed(&first_page()).await.unwrap(); // ping 1
    let err = svc.list_failed(&first_page()).await.unwrap_err(); // reused, fails
    assert!(matches!(err, QueryError::Unavailable { .. }));
    svc.list_failed(&first_page()).await.unwrap(); // ping 2
}

#[tokio::test]
async fn zero_reuse_checks_before_every_request_and_readiness_always_checks() {
    let mut store = MockStatusStore::new();
    store.expect_ping().times(3).returning(|| Ok(()));
    store.expect_list().times(2).returning(|_| Ok(seed_page()));
    let svc = service(store).with_connection_check_reuse(Duration::ZERO);
    svc.list_failed(&first_page()).await.unwrap();
    svc.list_failed(&first_page()).await.unwrap();
    svc.check_connection().await.unwrap();
}

mod breaker;
mod replays;
mod retries;

#[tokio::test]
async fn a_store_without_statistics_says_so_before_any_store_call() {
    use failed_tasks_domain::{GroupQuery, TaskType};
    use failed_tasks_query::Capability;
    // No expectations: any call on the store (a ping included) fails the test.
    let svc = FailedTaskService::new(
        Stores::new("tasks-only", Arc::new(MockStatusStore::new())),
        Deadlines::default(),
    );
    let now = Timestamp::from_unix_millis(1_737_709_200_000).unwrap();
    let missing = QueryError::NotSupported {
        capability: Capability::Statistics,
        store: "tasks-only",
    };
    assert_eq!(svc.failure_stats(60, now, 5).await.unwrap_err(), missing);
    assert_eq!(
        svc.report_attempts(&TaskType::embedding(), 3, now)
            .await
            .unwrap_err(),
        missing
    );
    let groups = GroupQuery {
        page_size: PageLimits::DEFAULT.default_size(),
        cursor: None,
    };
    assert_eq!(svc.list_groups(&groups).await.unwrap_err(), missing);
    assert_eq!(
        missing.to_string(),
        "the tasks-only store does not support failure statistics, task attempts and failure groups"
    );
    // The stored-JSON fast path is optional: absent means "use the decoded page".
    assert_eq!(
        svc.list_failed_stored(&ListQuery::first_page(PageLimits::DEFAULT))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn statistics_go_to_the_stats_capability() {
    use failed_tasks_domain::stats::{minute_of, MinuteCounts};
    use failed_tasks_store::MockStatsStore;
    let now = Timestamp::from_unix_millis(1_737_709_200_000).unwrap();
    let mut tasks = MockStatusStore::new();
    tasks.expect_ping().returning(|| Ok(()));
    let mut stats = MockStatsStore::new();
    let to = minute_of(now) + 1;
    stats
        .expect_failure_counts()
        .withf(move |from, until| *from == to - 60 && *until == to)
        .times(1)
        .returning(|from, _| {
            Ok(vec![MinuteCounts {
                minute: from,
                total: 4,
                ..MinuteCounts::default()
            }])
        });
    stats
        .expect_failure_tops()
        .withf(move |from, until| *from == to - 60 && *until == to)
        .times(1)
        .returning(|from, _| {
            let mut t = BucketTops::empty(Bucket::Minute(from));
            t.by_client = vec![("c1".to_owned(), 4)];
            Ok(vec![t])
        });
    stats
        .expect_attempt_counts()
        .times(1)
        .returning(|from, _| Ok(vec![(from, 10)]));
    let svc = FailedTaskService::new(
        Stores::new("mock", Arc::new(tasks)).with_stats(Arc::new(stats)),
        Deadlines::default(),
    );
    let got = svc.failure_stats(60, now, 5).await.unwrap();
    assert_eq!(got.total, 4);
    assert_eq!(got.top_clients, vec![("c1".to_owned(), 4)]);
    assert!(got.breakdowns_exact);
}

#[tokio::test(start_paused = true)]
async fn callers_of_one_window_share_an_answer_until_a_write_through_the_service() {
    use failed_tasks_domain::stats::MinuteCounts;
    use failed_tasks_store::MockStatsStore;
    let now = Timestamp::from_unix_millis(1_737_709_200_000).unwrap();
    let mut tasks = MockStatusStore::new();
    tasks.expect_ping().returning(|| Ok(()));
    let mut stats = MockStatsStore::new();
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = reads.clone();
    stats.expect_failure_counts().returning(move |from, _| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Ok(vec![MinuteCounts {
            minute: from,
            total: n,
            ..MinuteCounts::default()
        }])
    });
    stats.expect_failure_tops().returning(|_, _| Ok(Vec::new()));
    stats
        .expect_attempt_counts()
        .returning(|_, _| Ok(Vec::new()));
    stats.expect_record_attempts().returning(|_, _, _| Ok(()));
    let svc = FailedTaskService::new(
        Stores::new("mock", Arc::new(tasks)).with_stats(Arc::new(stats)),
        Deadlines::default(),
    );
    let total = |svc: &FailedTaskService, minutes| {
        let svc = svc.clone();
        async move { svc.failure_stats(minutes, now, 5).await.unwrap().total }
    };
    assert_eq!(total(&svc, 60).await, 1);
    assert_eq!(total(&svc, 60).await, 1, "shared");
    assert_eq!(total(&svc, 30).await, 2, "another window is its own answer");
    // A write through the service ends the shared answers.
    svc.report_attempts(&failed_tasks_domain::TaskType::embedding(), 1, now)
        .await
        .unwrap();
    assert_eq!(total(&svc, 60).await, 3);
    // So does the cache's lifetime.
    tokio::time::advance(FailedTaskService::DEFAULT_STATS_CACHE_TTL).await;
    assert_eq!(total(&svc, 60).await, 4);
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 4);
}

/// A statistics store whose counter reads wait until released.
struct HeldStats(Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl failed_tasks_store::StatsStore for HeldStats {
    async fn failure_counts(
        &self,
        _: i64,
        _: i64,
    ) -> Result<Vec<failed_tasks_domain::stats::MinuteCounts>, StoreError> {
        self.0.notified().await;
        Ok(Vec::new())
    }
    async fn failure_tops(&self, _: i64, _: i64) -> Result<Vec<BucketTops>, StoreError> {
        Ok(Vec::new())
    }
    async fn record_attempts(
        &self,
        _: &failed_tasks_domain::TaskType,
        _: i64,
        _: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn attempt_counts(&self, _: i64, _: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        Ok(Vec::new())
    }
    async fn list_groups(
        &self,
        _: &failed_tasks_domain::GroupQuery,
    ) -> Result<failed_tasks_domain::GroupPage, StoreError> {
        Ok(failed_tasks_domain::GroupPage::default())
    }
}

#[tokio::test(start_paused = true)]
async fn statistics_beyond_the_concurrency_wait_their_turn_within_the_deadline() {
    let now = Timestamp::from_unix_millis(1_737_709_200_000).unwrap();
    let mut tasks = MockStatusStore::new();
    tasks.expect_ping().returning(|| Ok(()));
    let release = Arc::new(tokio::sync::Notify::new());
    let svc = FailedTaskService::new(
        Stores::new("mock", Arc::new(tasks)).with_stats(Arc::new(HeldStats(release.clone()))),
        Deadlines::default(),
    )
    .with_stats_concurrency(1)
    .with_stats_cache(Duration::ZERO);
    let call = || {
        let svc = svc.clone();
        tokio::spawn(async move { svc.failure_stats(60, now, 5).await })
    };
    // The one permit is held by the first; the second waits its turn and gets it when the
    // first is answered.
    let (first, second) = (call(), call());
    tokio::task::yield_now().await;
    release.notify_one();
    assert!(first.await.unwrap().is_ok());
    release.notify_one();
    assert!(second.await.unwrap().is_ok());
    // Held past the deadline: the waiting caller gives up at its deadline, as stats_busy.
    let held = call();
    tokio::task::yield_now().await;
    let busy = svc.failure_stats(60, now, 5).await.unwrap_err();
    assert!(
        matches!(
            busy,
            QueryError::Unavailable {
                kind: "stats_busy",
                ..
            }
        ),
        "{busy:?}"
    );
    assert!(
        held.await.unwrap().is_err(),
        "the holder ran out of time too"
    );
}

#[tokio::test]
async fn a_read_only_store_refuses_writes_before_any_store_call() {
    use failed_tasks_query::Capability;
    // No expectations: a call on the store fails the test.
    let svc = FailedTaskService::new(
        Stores::new("source", Arc::new(MockStatusStore::new())).read_only(),
        Deadlines::default(),
    );
    let missing = QueryError::NotSupported {
        capability: Capability::Writes,
        store: "source",
    };
    let seed = FailedTask::seed_examples();
    assert_eq!(svc.record_failures(&seed).await.unwrap_err(), missing);
    assert_eq!(
        svc.remove_failed(seed[0].task_id()).await.unwrap_err(),
        missing
    );
    let filter = TaskFilter {
        category: Some(seed[0].error_category()),
        ..TaskFilter::default()
    };
    assert_eq!(svc.remove_matching(&filter).await.unwrap_err(), missing);
    assert!(svc.record_counters().recorded().is_empty());
}
