//! The behaviour every [`RetryStore`] and its [`RetryQueue`] must show.
//!
//! Each check takes an empty store that is a [`StatusStore`], a [`StatsStore`] and a
//! [`RetryStore`] at once, and a queue handle on that store's queue; run them all with
//! [`run_retries`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use failed_tasks_domain::stats::minute_of;
use failed_tasks_domain::{
    ErrorCategory, FailedTask, GroupQuery, ListQuery, PageLimits, PageSize, RetryPlan, RetryState,
    RetryStatus, ScheduledBy, TaskFilter, TaskId, Timestamp,
};

use super::{expected, task, walk, BASE_MS};
use crate::{
    CancelRetry, Delivery, RecordOutcome, Resolve, RetryNow, RetryQueue, RetryStore, StatsStore,
    StatusStore,
};

/// A store with the capabilities the checks need: tasks, statistics (recoveries are
/// counted) and retries.
pub trait Both: StatusStore + StatsStore + RetryStore {}
impl<T: StatusStore + StatsStore + RetryStore> Both for T {}

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset_ms).unwrap()
}

/// A task like [`task`] with its retry count.
pub fn task_with_retries(
    id: &str,
    fail_offset_ms: i64,
    category: ErrorCategory,
    n: u32,
) -> FailedTask {
    let mut raw = task(
        id,
        fail_offset_ms,
        category,
        "embedding",
        "client1",
        "TIMEOUT_ERROR",
    )
    .into_parts();
    raw.retry_count = n;
    FailedTask::new(raw).unwrap()
}

fn retry_at(offset_ms: i64) -> RetryPlan {
    RetryPlan::Retry { due: at(offset_ms) }
}

/// Claim everything the queue hands out now (a short block per call), acknowledging it.
pub async fn drain(queue: &dyn RetryQueue) -> Vec<Delivery> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let got = queue.claim(100, Duration::from_millis(20)).await.unwrap();
        if got.is_empty() {
            return all;
        }
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        assert_eq!(queue.ack(&ids).await.unwrap(), ids.len() as u64);
        all.extend(got);
    }
    panic!("the queue did not run dry");
}

/// Run the scheduler until nothing due is left (at most `max` per call).
pub async fn deliver_all(store: &dyn Both, now: Timestamp, max: usize) -> u64 {
    let mut moved = 0;
    for _ in 0..10_000 {
        let r = store.deliver_due(now, max).await.unwrap();
        assert!(!r.locked_out, "no other scheduler runs in these checks");
        moved += r.moved;
        if !r.more {
            return moved;
        }
    }
    panic!("deliver_due kept reporting more");
}

fn keys(deliveries: &[Delivery]) -> Vec<(String, u32)> {
    let mut k: Vec<(String, u32)> = deliveries
        .iter()
        .map(|d| (d.request.task_id.to_string(), d.request.attempt))
        .collect();
    k.sort();
    k
}

fn filter(retry: RetryState) -> TaskFilter {
    TaskFilter {
        retry: Some(retry),
        ..TaskFilter::default()
    }
}

async fn status(store: &dyn Both, id: &str) -> RetryStatus {
    store
        .retry_details(&TaskId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} has no retry details"))
        .status
}

/// Recording with plans schedules in the same step: the page carries each task's status,
/// the `retry=` filter matches brute force, details and gauges agree.
pub async fn scheduled_with_the_record(store: &dyn Both) {
    let mut batch = Vec::new();
    let mut want: BTreeMap<String, RetryState> = BTreeMap::new();
    for i in 0..30 {
        let t = task_with_retries(
            &format!("r{i:02}"),
            i * 1000,
            ErrorCategory::ALL[i as usize % 5],
            0,
        );
        let plan = match i % 3 {
            0 => retry_at(100_000 + i * 10),
            1 => RetryPlan::Final,
            _ => RetryPlan::NotScheduled,
        };
        want.insert(t.task_id().to_string(), plan.status_for(&t).state());
        batch.push((t, plan));
    }
    let outcomes = store.record_planned(&batch).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == RecordOutcome::Created));
    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.retry.len(), page.tasks.len());
    for (i, t) in page.tasks.iter().enumerate() {
        let s = page.retry_status(i);
        assert_eq!(s.state(), want[t.task_id().as_str()], "{}", t.task_id());
        if let Some(n) = s.next() {
            assert_eq!(n.attempt, 1);
            assert_eq!(n.by, ScheduledBy::Policy);
            let i: i64 = t.task_id().as_str()[1..].parse().unwrap();
            assert_eq!(n.due, at(100_000 + i * 10));
        }
    }
    let tasks: Vec<FailedTask> = batch.iter().map(|(t, _)| t.clone()).collect();
    for state in RetryState::ALL {
        let (ids, totals) = walk(store, &filter(state), 4).await;
        let mut brute: Vec<String> = expected(&tasks, &TaskFilter::all())
            .into_iter()
            .filter(|id| want[id] == state)
            .collect();
        assert_eq!(ids, brute, "retry={state}");
        assert_eq!(totals[0] as usize, ids.len());
        // Combined with another filter.
        let f = TaskFilter {
            category: Some(ErrorCategory::ServiceTimeout),
            ..filter(state)
        };
        let (ids, totals) = walk(store, &f, 2).await;
        brute.retain(|id| {
            tasks
                .iter()
                .any(|t| t.task_id().as_str() == id && f.matches(t))
        });
        assert_eq!(ids, brute, "retry={state}&category=service_timeout");
        assert_eq!(totals[0] as usize, ids.len());
    }
    let g = store.retry_gauges(at(0)).await.unwrap();
    assert_eq!((g.scheduled, g.due, g.queued), (10, 0, 0));
    let g = store.retry_gauges(at(200_000)).await.unwrap();
    assert_eq!((g.scheduled, g.due), (10, 10));
    assert_eq!(g.oldest_due_age, Duration::from_millis(100_000));
    assert_eq!(status(store, "r01").await, RetryStatus::Final);
    assert_eq!(status(store, "r02").await, RetryStatus::Unscheduled);
    assert!(store
        .retry_details(&TaskId::parse("nope").unwrap())
        .await
        .unwrap()
        .is_none());
}

/// Each due retry moves into the queue exactly once, in batches, and only once due; what
/// is not due stays; removed tasks' retries are never delivered.
pub async fn delivered_once_when_due(store: &dyn Both, queue: &dyn RetryQueue) {
    let batch: Vec<(FailedTask, RetryPlan)> = (0..60)
        .map(|i| {
            let t = task_with_retries(&format!("d{i:02}"), 0, ErrorCategory::ServiceTimeout, 2);
            (t, retry_at(10_000 + i * 1_000))
        })
        .collect();
    store.record_planned(&batch).await.unwrap();
    // d59 is removed before it is due: never delivered.
    assert!(store.remove(batch[59].0.task_id()).await.unwrap());
    // Due by +39 s: d00..d29.
    assert_eq!(deliver_all(store, at(39_000), 7).await, 30);
    assert_eq!(store.deliver_due(at(39_000), 100).await.unwrap().moved, 0);
    let got = drain(queue).await;
    let want: Vec<(String, u32)> = (0..30).map(|i| (format!("d{i:02}"), 3)).collect();
    assert_eq!(keys(&got), want);
    let d = &got
        .iter()
        .find(|d| d.request.task_id.as_str() == "d05")
        .unwrap()
        .request;
    assert_eq!(d.due_at, at(15_000));
    assert_eq!(d.scheduled_by, ScheduledBy::Policy);
    assert_eq!(d.error_category, ErrorCategory::ServiceTimeout);
    assert_eq!(d.codebase_path.as_str(), "/projects/client1");
    // Delivered tasks stay listed as scheduled, with the due time they had; they no longer
    // wait, the others do.
    assert_eq!(status(store, "d05").await.next_retry_at(), Some(at(15_000)));
    let waiting = |id: &'static str| async move {
        store
            .retry_details(&TaskId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .waiting
    };
    assert!(!waiting("d05").await);
    assert!(waiting("d40").await);
    let g = store.retry_gauges(at(39_000)).await.unwrap();
    assert_eq!((g.scheduled, g.due), (29, 0));
    // The rest, later.
    assert_eq!(deliver_all(store, at(100_000), 1000).await, 29);
    let got = drain(queue).await;
    assert_eq!(got.len(), 29);
    assert!(got.iter().all(|d| d.request.task_id.as_str() != "d59"));
    assert!(drain(queue).await.is_empty());
}

/// Re-recording reschedules or unschedules; the same failure recorded again keeps the
/// schedule of its next attempt, delivered or not, so it is not delivered twice.
pub async fn rerecording_reschedules(store: &dyn Both, queue: &dyn RetryQueue) {
    let t0 = task_with_retries("x", 0, ErrorCategory::ServiceTimeout, 0);
    store
        .record_planned(&[(t0.clone(), retry_at(5_000))])
        .await
        .unwrap();
    // The same failure again with another jitter: the first schedule stands.
    assert_eq!(
        store
            .record_planned(&[(t0.clone(), retry_at(9_000))])
            .await
            .unwrap(),
        vec![RecordOutcome::Updated]
    );
    assert_eq!(status(store, "x").await.next_retry_at(), Some(at(5_000)));
    assert_eq!(deliver_all(store, at(6_000), 10).await, 1);
    assert_eq!(keys(&drain(queue).await), vec![("x".to_owned(), 1)]);
    // Reported again after delivery: still not delivered a second time.
    store
        .record_planned(&[(t0.clone(), retry_at(7_000))])
        .await
        .unwrap();
    assert_eq!(deliver_all(store, at(60_000), 10).await, 0);
    assert!(drain(queue).await.is_empty());
    // Attempt 1 failed: attempt 2 is scheduled.
    let t1 = task_with_retries("x", 8_000, ErrorCategory::ServiceTimeout, 1);
    store
        .record_planned(&[(t1.clone(), retry_at(10_000))])
        .await
        .unwrap();
    let s = status(store, "x").await;
    assert_eq!(s.next().map(|n| (n.attempt, n.due)), Some((2, at(10_000))));
    // Now final (the policy gave up): unscheduled, never delivered.
    let t2 = task_with_retries("x", 8_000, ErrorCategory::Authorization, 1);
    store
        .record_planned(&[(t2, RetryPlan::Final)])
        .await
        .unwrap();
    assert_eq!(status(store, "x").await, RetryStatus::Final);
    assert_eq!(deliver_all(store, at(60_000), 10).await, 0);
    let (ids, _) = walk(store, &filter(RetryState::Final), 10).await;
    assert_eq!(ids, ["x"]);
    assert!(walk(store, &filter(RetryState::Scheduled), 10)
        .await
        .0
        .is_empty());
    // A plain record (no plan) drops a schedule too.
    store
        .record_planned(&[(t1.clone(), retry_at(10_000))])
        .await
        .unwrap();
    store.record(&t1).await.unwrap();
    assert_eq!(status(store, "x").await, RetryStatus::Unscheduled);
    assert_eq!(deliver_all(store, at(60_000), 10).await, 0);
    assert!(drain(queue).await.is_empty());
}

/// Retry now, cancel and resolve, and what each answers for unknown, delivered, final and
/// resolved tasks.
pub async fn operator_actions(store: &dyn Both, queue: &dyn RetryQueue) {
    let unknown = TaskId::parse("unknown").unwrap();
    assert_eq!(
        store.retry_now(&unknown, at(0)).await.unwrap(),
        RetryNow::NotFound
    );
    assert_eq!(
        store.cancel_retry(&unknown).await.unwrap(),
        CancelRetry::NotFound
    );
    assert_eq!(
        store.resolve(&unknown, at(0)).await.unwrap(),
        Resolve::NotFound
    );

    let later = task_with_retries("later", 0, ErrorCategory::ServiceTimeout, 1);
    let fin = task_with_retries("fin", 1_000, ErrorCategory::Authorization, 0);
    let off = task_with_retries("off", 2_000, ErrorCategory::ServiceTimeout, 0);
    store
        .record_planned(&[
            (later.clone(), retry_at(3_600_000)),
            (fin.clone(), RetryPlan::Final),
            (off.clone(), retry_at(3_600_000)),
        ])
        .await
        .unwrap();
    // Retry now: a retry due in an hour is due at once, by the operator.
    let id = later.task_id();
    assert_eq!(
        store.retry_now(id, at(10_000)).await.unwrap(),
        RetryNow::Scheduled { attempt: 2 }
    );
    let s = status(store, "later").await;
    assert_eq!(
        s.next().map(|n| (n.due, n.by)),
        Some((at(10_000), ScheduledBy::Operator))
    );
    assert_eq!(deliver_all(store, at(10_000), 10).await, 1);
    let got = drain(queue).await;
    assert_eq!(keys(&got), vec![("later".to_owned(), 2)]);
    assert_eq!(got[0].request.scheduled_by, ScheduledBy::Operator);
    // Asked again for the same attempt: already delivered, not delivered twice.
    assert_eq!(
        store.retry_now(id, at(11_000)).await.unwrap(),
        RetryNow::AlreadyDelivered { attempt: 2 }
    );
    assert_eq!(
        store.cancel_retry(id).await.unwrap(),
        CancelRetry::AlreadyDelivered { attempt: 2 }
    );
    assert_eq!(deliver_all(store, at(20_000), 10).await, 0);
    // A final failure retried by an operator: an explicit override of attempt 1.
    assert_eq!(
        store.retry_now(fin.task_id(), at(12_000)).await.unwrap(),
        RetryNow::Scheduled { attempt: 1 }
    );
    assert_eq!(status(store, "fin").await.state(), RetryState::Scheduled);
    // Cancel: the retry is not delivered; the same failure reported again stays cancelled.
    assert_eq!(
        store.cancel_retry(off.task_id()).await.unwrap(),
        CancelRetry::Cancelled { attempt: 1 }
    );
    assert_eq!(
        store.cancel_retry(off.task_id()).await.unwrap(),
        CancelRetry::NotScheduled
    );
    store
        .record_planned(&[(off.clone(), retry_at(5_000))])
        .await
        .unwrap();
    assert_eq!(status(store, "off").await, RetryStatus::Unscheduled);
    let (ids, _) = walk(store, &filter(RetryState::Unscheduled), 10).await;
    assert_eq!(ids, ["off"]);
    assert_eq!(
        deliver_all(store, at(7_200_000), 10).await,
        1,
        "only fin's override"
    );
    assert_eq!(keys(&drain(queue).await), vec![("fin".to_owned(), 1)]);

    // Resolve: the task leaves the listing, its indexes and its group; its failure stays
    // counted and it is counted as recovered.
    let minute = minute_of(later.fail_time());
    let before = store.failure_counts(minute, minute + 1).await.unwrap();
    let groups_before = store
        .list_groups(&GroupQuery {
            page_size: PageSize::new(10, PageLimits::DEFAULT).unwrap(),
            cursor: None,
        })
        .await
        .unwrap();
    let resolved_at = at(30 * 60_000);
    assert_eq!(
        store.resolve(id, resolved_at).await.unwrap(),
        Resolve::Resolved
    );
    assert_eq!(
        store.resolve(id, resolved_at).await.unwrap(),
        Resolve::AlreadyResolved
    );
    assert_eq!(store.get(id).await.unwrap(), None);
    assert!(store.retry_details(id).await.unwrap().is_none());
    let (ids, totals) = walk(store, &TaskFilter::all(), 10).await;
    assert_eq!(ids, ["off", "fin"]);
    assert_eq!(totals[0], 2);
    assert!(walk(store, &filter(RetryState::Scheduled), 10).await.0 == ["fin"]);
    let after = store.failure_counts(minute, minute + 1).await.unwrap();
    assert_eq!(
        before.iter().map(|c| c.total).sum::<u64>(),
        after.iter().map(|c| c.total).sum::<u64>(),
        "a resolved task's failure stays counted"
    );
    let m = minute_of(resolved_at);
    let recovered: u64 = store
        .failure_counts(m, m + 1)
        .await
        .unwrap()
        .iter()
        .map(|c| c.recovered)
        .sum();
    assert_eq!(recovered, 1);
    let groups_after = store
        .list_groups(&GroupQuery {
            page_size: PageSize::new(10, PageLimits::DEFAULT).unwrap(),
            cursor: None,
        })
        .await
        .unwrap();
    let count = |p: &failed_tasks_domain::GroupPage| p.groups.iter().map(|g| g.count).sum::<u64>();
    assert_eq!(count(&groups_after), count(&groups_before) - 1);
    assert_eq!(
        store.retry_now(id, at(0)).await.unwrap(),
        RetryNow::Resolved
    );
    assert_eq!(store.cancel_retry(id).await.unwrap(), CancelRetry::Resolved);
    // A new failure of a resolved task is a new failure.
    assert_eq!(
        store
            .record_planned(&[(later.clone(), RetryPlan::Final)])
            .await
            .unwrap(),
        vec![RecordOutcome::Created]
    );
    assert_eq!(status(store, "later").await, RetryStatus::Final);
}

/// The history keeps the last 20 failed attempts, newest first, with who scheduled each.
pub async fn history_of_attempts(store: &dyn Both, queue: &dyn RetryQueue) {
    for n in 0..25u32 {
        let t = task_with_retries("h", i64::from(n) * 1_000, ErrorCategory::ServiceTimeout, n);
        let plan = retry_at(i64::from(n) * 1_000 + 500);
        store.record_planned(&[(t.clone(), plan)]).await.unwrap();
        // The same report twice adds no entry.
        store.record_planned(&[(t, plan)]).await.unwrap();
    }
    let id = TaskId::parse("h").unwrap();
    let d = store.retry_details(&id).await.unwrap().unwrap();
    assert_eq!(d.attempts.len(), 20);
    let attempts: Vec<u32> = d.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, (5..25).rev().collect::<Vec<u32>>());
    assert!(d
        .attempts
        .iter()
        .all(|a| a.scheduled_by == Some(ScheduledBy::Policy)));
    assert_eq!(d.attempts[0].fail_time, at(24_000));
    assert_eq!(d.attempts[0].error_code.as_str(), "TIMEOUT_ERROR");
    // Attempt 25 retried by an operator, then failed: its entry says so.
    assert_eq!(
        store.retry_now(&id, at(30_000)).await.unwrap(),
        RetryNow::Scheduled { attempt: 25 }
    );
    deliver_all(store, at(30_000), 100).await;
    assert_eq!(drain(queue).await.len(), 1, "one due entry per task");
    let t = task_with_retries("h", 31_000, ErrorCategory::ServiceTimeout, 25);
    store
        .record_planned(&[(t, RetryPlan::Final)])
        .await
        .unwrap();
    let d = store.retry_details(&id).await.unwrap().unwrap();
    assert_eq!(d.attempts[0].attempt, 25);
    assert_eq!(d.attempts[0].scheduled_by, Some(ScheduledBy::Operator));
    assert_eq!(d.status, RetryStatus::Final);
    // The first run's entry (attempt 0) names no scheduler.
    let first = task_with_retries("h0", 0, ErrorCategory::ServiceTimeout, 0);
    store
        .record_planned(&[(first.clone(), RetryPlan::Final)])
        .await
        .unwrap();
    let d = store.retry_details(first.task_id()).await.unwrap().unwrap();
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].scheduled_by, None);
}

/// Claims hand each request to one worker; unacknowledged ones are reclaimed after the
/// lease (and only then), with their delivery count; acknowledged ones never come back.
pub async fn queue_leases(store: &dyn Both, queue: &dyn RetryQueue, other: &dyn RetryQueue) {
    let batch: Vec<(FailedTask, RetryPlan)> = (0..10)
        .map(|i| {
            (
                task_with_retries(&format!("q{i}"), 0, ErrorCategory::ServiceTimeout, 0),
                retry_at(1_000),
            )
        })
        .collect();
    store.record_planned(&batch).await.unwrap();
    assert_eq!(deliver_all(store, at(2_000), 100).await, 10);
    let first = queue.claim(4, Duration::from_millis(50)).await.unwrap();
    assert_eq!(first.len(), 4);
    assert!(first.iter().all(|d| d.deliveries == 1));
    let rest = other.claim(100, Duration::from_millis(50)).await.unwrap();
    assert_eq!(rest.len(), 6);
    let all: BTreeSet<String> = first
        .iter()
        .chain(&rest)
        .map(|d| d.request.task_id.to_string())
        .collect();
    assert_eq!(all.len(), 10, "each request went to one worker");
    assert!(queue
        .claim(10, Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());
    let g = store.retry_gauges(at(2_000)).await.unwrap();
    assert_eq!(g.pending, 10);
    // The first worker finishes its four; the other dies holding six.
    let ids: Vec<String> = first.iter().map(|d| d.id.clone()).collect();
    assert_eq!(queue.ack(&ids).await.unwrap(), 4);
    assert_eq!(
        queue.ack(&ids).await.unwrap(),
        0,
        "acknowledging twice counts once"
    );
    // Not stale within a long lease.
    assert!(queue
        .reclaim_stale(Duration::from_secs(3600), 100)
        .await
        .unwrap()
        .is_empty());
    // With the lease run out, the survivor takes them over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reclaimed = Vec::new();
    while reclaimed.len() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "not reclaimed");
        reclaimed.extend(
            queue
                .reclaim_stale(Duration::from_millis(50), 100)
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keys(&reclaimed), keys(&rest));
    assert!(reclaimed.iter().all(|d| d.deliveries == 2));
    let ids: Vec<String> = reclaimed.iter().map(|d| d.id.clone()).collect();
    assert_eq!(queue.ack(&ids).await.unwrap(), 6);
    assert!(queue
        .reclaim_stale(Duration::ZERO, 100)
        .await
        .unwrap()
        .is_empty());
    let g = store.retry_gauges(at(2_000)).await.unwrap();
    assert_eq!(g.pending, 0);
    assert!(g.reclaimed >= 6);
}

/// Run every retry check, each on a fresh empty store with two queue handles from `fresh`.
pub async fn run_retries<S, Q, F, Fut>(mut fresh: F)
where
    S: StatusStore + StatsStore + RetryStore + crate::FilesStore,
    Q: RetryQueue,
    F: FnMut() -> Fut,
    Fut: Future<Output = (S, Q, Q)>,
{
    let (s, _, _) = fresh().await;
    scheduled_with_the_record(&s).await;
    let (s, q, _) = fresh().await;
    delivered_once_when_due(&s, &q).await;
    let (s, q, _) = fresh().await;
    rerecording_reschedules(&s, &q).await;
    let (s, q, _) = fresh().await;
    operator_actions(&s, &q).await;
    let (s, q, _) = fresh().await;
    history_of_attempts(&s, &q).await;
    let (s, q, o) = fresh().await;
    queue_leases(&s, &q, &o).await;
    let (s, q, _) = fresh().await;
    super::gates::hold_and_release(&s, &q).await;
    let (s, q, _) = fresh().await;
    super::gates::limit_paces(&s, &q).await;
    let (s, q, _) = fresh().await;
    super::gates::lapse(&s, &q).await;
    let (s, q, _) = fresh().await;
    super::gates::cap_and_order(&s, &q).await;
    let (s, q, _) = fresh().await;
    super::gates::released_under_a_limit(&s, &q).await;
    let (s, q, _) = fresh().await;
    super::gates::passes_let_canaries_through(&s, &q).await;
    let (s, q, _) = fresh().await;
    superseded_by_a_later_success(&s, &q).await;
    let (s, q, _) = fresh().await;
    retries_carry_the_failed_files(&s, &s, &q).await;
}

/// A retry of a task whose failure listed files carries them: how many failed, and the
/// paths inline or where the list is (reading it gives exactly the list); a task without
/// files carries none, one with only a count carries the count.
pub async fn retries_carry_the_failed_files(
    store: &dyn Both,
    files: &dyn crate::FilesStore,
    queue: &dyn RetryQueue,
) {
    use super::files::files_of;
    let plain = task_with_retries("f-none", 0, ErrorCategory::ServiceTimeout, 0);
    let few = task_with_retries("f-few", 1, ErrorCategory::ServiceTimeout, 0);
    let many = task_with_retries("f-many", 2, ErrorCategory::ServiceTimeout, 0);
    let count = task_with_retries("f-count", 3, ErrorCategory::ServiceTimeout, 0);
    let batch: Vec<(FailedTask, RetryPlan)> = [&plain, &few, &many, &count]
        .into_iter()
        .map(|t| (t.clone(), retry_at(1_000)))
        .collect();
    store.record_planned(&batch).await.unwrap();
    let (few_files, many_files) = (files_of("src", 3), files_of("lib", 500));
    let count_only = failed_tasks_domain::TaskFiles::new(Some(7), None, 10, "")
        .unwrap()
        .unwrap();
    assert!(files.put_files(few.task_id(), &few_files).await.unwrap());
    assert!(files.put_files(many.task_id(), &many_files).await.unwrap());
    assert!(files.put_files(count.task_id(), &count_only).await.unwrap());
    assert_eq!(deliver_all(store, at(5_000), 100).await, 4);
    let got = drain(queue).await;
    let of = |id: &str| {
        got.iter()
            .find(|d| d.request.task_id.as_str() == id)
            .unwrap()
            .request
            .files
            .clone()
    };
    assert_eq!(of("f-none"), None);
    let c = of("f-count").unwrap();
    assert_eq!((c.failed_files, c.paths, c.files_key), (7, None, None));
    for (id, want) in [("f-few", &few_files), ("f-many", &many_files)] {
        let f = of(id).unwrap();
        assert_eq!(f.failed_files, want.failed_files(), "{id}");
        let paths: Vec<String> = want
            .files()
            .unwrap()
            .iter()
            .map(|x| x.path.as_str().to_owned())
            .collect();
        match (&f.paths, &f.files_key) {
            (Some(p), None) => assert_eq!(p, &paths, "{id}"),
            (None, Some(_)) => {
                let id = failed_tasks_domain::TaskId::parse(id).unwrap();
                assert_eq!(files.files(&id).await.unwrap().as_ref(), Some(want));
            }
            other => panic!("{id}: neither inline nor a key: {other:?}"),
        }
    }
    // Three files go inline on every store (the Redis default inlines up to 10).
    assert!(of("f-few").unwrap().paths.is_some());
}

/// A success supersedes exactly the failures of its task type, client and codebase that
/// failed before it: they leave the listing and its groups, their scheduled retries are
/// dropped, they count as superseded (not recovered) in the success's minute, and a late
/// retry request finds them resolved. A newer failure, another type, client or codebase
/// stays. Superseding again finds nothing.
pub async fn superseded_by_a_later_success(store: &dyn Both, queue: &dyn RetryQueue) {
    let make = |id: &str, task_type: &str, client: &str, path: &str, fail_ms: i64| {
        let mut raw = task(
            id,
            fail_ms,
            ErrorCategory::ServiceTimeout,
            task_type,
            client,
            "TIMEOUT_ERROR",
        )
        .into_parts();
        raw.codebase_path = path.to_owned();
        let t = FailedTask::new(raw).unwrap();
        (t, RetryPlan::Retry { due: at(40_000) })
    };
    let batch = vec![
        make("old1", "embedding", "c1", "/repo", 0),
        make("old2", "embedding", "c1", "/repo", 5_000),
        make("newer", "embedding", "c1", "/repo", 30_000),
        make("other-type", "indexing", "c1", "/repo", 0),
        make("other-client", "embedding", "c2", "/repo", 0),
        make("other-path", "embedding", "c1", "/repo/sub", 0),
    ];
    store.record_planned(&batch).await.unwrap();
    let success = failed_tasks_domain::TaskSuccess::new(
        failed_tasks_domain::TaskType::parse("embedding").unwrap(),
        failed_tasks_domain::ClientId::parse("c1").unwrap(),
        failed_tasks_domain::CodebasePath::parse("/repo").unwrap(),
        at(20_000),
    )
    .unwrap();
    assert_eq!(store.supersede(&success).await.unwrap(), 2);
    let (ids, totals) = walk(store, &TaskFilter::default(), 100).await;
    assert_eq!(totals, vec![4]);
    let listed: BTreeSet<String> = ids.into_iter().collect();
    let want: BTreeSet<String> = ["newer", "other-type", "other-client", "other-path"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, want);
    for id in ["old1", "old2"] {
        let id = TaskId::parse(id).unwrap();
        assert_eq!(store.get(&id).await.unwrap(), None);
        assert_eq!(
            store.retry_now(&id, at(50_000)).await.unwrap(),
            RetryNow::Resolved
        );
    }
    // Their retries are gone: only the four others are delivered.
    assert_eq!(deliver_all(store, at(3_600_000), 100).await, 4);
    let delivered: BTreeSet<String> = drain(queue)
        .await
        .into_iter()
        .map(|d| d.request.task_id.to_string())
        .collect();
    assert_eq!(delivered, want);
    // Counted as superseded in the success's minute, never as recovered; the failures stay
    // counted where they failed.
    let minute = minute_of(at(20_000));
    let counts = store.failure_counts(minute - 5, minute + 5).await.unwrap();
    let superseded: u64 = counts.iter().map(|c| c.superseded).sum();
    let recovered: u64 = counts.iter().map(|c| c.recovered).sum();
    let total: u64 = counts.iter().map(|c| c.total).sum();
    assert_eq!((superseded, recovered, total), (2, 0, 6));
    assert_eq!(
        counts
            .iter()
            .find(|c| c.minute == minute)
            .map(|c| c.superseded),
        Some(2)
    );
    assert_eq!(store.supersede(&success).await.unwrap(), 0);
}
