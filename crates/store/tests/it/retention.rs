//! The memory store's retention: at most `max_count` tasks after every write, and the trim
//! step by age, driven explicitly (no background timing).

use std::time::Duration;

use failed_tasks_domain::stats::minute_of;
use failed_tasks_domain::{ErrorCategory, GroupQuery, PageLimits, RetryPlan, Timestamp};
use failed_tasks_store::conformance::{self, task, BASE_MS};
use failed_tasks_store::{
    MemoryConfig, MemoryStore, MemoryTrimReport, Retention, RetryStore, StatsStore, StatusStore,
};

fn store(max_count: u64, max_age: Duration) -> MemoryStore {
    MemoryStore::with_config(MemoryConfig {
        retention: Retention {
            max_age,
            max_count,
            janitor_interval: Duration::from_secs(60),
            ..Retention::default()
        },
        ..MemoryConfig::default()
    })
}

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset_ms).unwrap()
}

#[test]
fn the_default_retention_is_the_documented_one() {
    let r = MemoryStore::new().retention();
    assert_eq!(r.max_age, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(r.max_count, 1_000_000);
    assert_eq!(r.janitor_interval, Duration::from_secs(60));
    assert_eq!(r, Retention::default());
}

#[tokio::test]
async fn every_write_keeps_at_most_max_count_dropping_the_oldest() {
    let store = store(10, Duration::from_secs(3600 * 24 * 365 * 100));
    let tasks = conformance::mixed_tasks(25);
    // One by one, in a batch, and with plans: every way of writing is bounded.
    for t in &tasks[..8] {
        store.record(t).await.unwrap();
    }
    store.record_batch(&tasks[8..18]).await.unwrap();
    let planned: Vec<_> = tasks[18..]
        .iter()
        .map(|t| (t.clone(), RetryPlan::Retry { due: at(999_999) }))
        .collect();
    store.record_planned(&planned).await.unwrap();
    assert_eq!(store.len(), 10);

    // The newest ten of everything written are what is left, in every index and counter.
    let all = conformance::expected(&tasks, &Default::default());
    let (ids, totals) = conformance::walk(&store, &Default::default(), 4).await;
    assert_eq!(ids, all[..10]);
    assert_eq!(totals[0], 10);
    let counts = store
        .failure_counts(minute_of(at(-3_600_000)), minute_of(at(3_600_000)))
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.total).sum::<u64>(), 10);
    let groups = store
        .list_groups(&GroupQuery {
            page_size: PageLimits::DEFAULT.default_size(),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(groups.groups.iter().map(|g| g.count).sum::<u64>(), 10);
    // Trimmed tasks lose their scheduled retries too.
    let gauges = store.retry_gauges(at(0)).await.unwrap();
    let kept_planned = planned
        .iter()
        .filter(|(t, _)| ids.contains(&t.task_id().to_string()))
        .count();
    assert_eq!(gauges.scheduled, kept_planned as u64);
}

#[tokio::test]
async fn a_trim_step_removes_tasks_past_the_max_age_and_their_counters() {
    let store = store(1_000, Duration::from_secs(3600));
    let old = task("old", 0, ErrorCategory::DataError, "embedding", "c1", "X");
    let edge = task(
        "edge",
        60_000,
        ErrorCategory::DataError,
        "embedding",
        "c1",
        "X",
    );
    let new = task(
        "new",
        7_200_000,
        ErrorCategory::SystemError,
        "indexing",
        "c2",
        "Y",
    );
    store.record_batch(&[old, edge, new]).await.unwrap();
    store
        .record_attempts(
            &failed_tasks_domain::TaskType::embedding(),
            minute_of(at(0)),
            5,
        )
        .await
        .unwrap();

    // Nothing is trimmed by age on write: only the trim step does it.
    assert_eq!(store.len(), 3);
    // An hour after `edge` failed: `edge` is exactly at the limit and stays; `old` goes.
    let report = store.trim_at(at(60_000 + 3_600_000));
    assert_eq!(
        report,
        MemoryTrimReport {
            removed_by_age: 1,
            removed_by_count: 0
        }
    );
    let (ids, _) = conformance::walk(&store, &Default::default(), 10).await;
    assert_eq!(ids, ["new", "edge"]);
    let from = minute_of(at(-3_600_000));
    let to = minute_of(at(10_000_000));
    let counts = store.failure_counts(from, to).await.unwrap();
    assert_eq!(counts.iter().map(|c| c.total).sum::<u64>(), 2);
    assert!(
        store.attempt_counts(from, to).await.unwrap().is_empty(),
        "attempts of trimmed minutes are trimmed with them"
    );
    // A second step finds nothing more.
    assert_eq!(
        store.trim_at(at(60_000 + 3_600_000)),
        MemoryTrimReport::default()
    );
    // The step that trimmed is in the audit log once, as the janitor's.
    use failed_tasks_store::audit::{AuditAction, AuditQuery, AuditStore};
    let log = store.audit_list(&AuditQuery::newest(10)).await.unwrap();
    let entries: Vec<_> = log
        .entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action, e.count, e.time))
        .collect();
    assert_eq!(
        entries,
        [("janitor", AuditAction::Trim, 1, at(60_000 + 3_600_000))]
    );
}

#[tokio::test(start_paused = true)]
async fn the_janitor_runs_the_trim_step_and_stops_with_its_handle() {
    use std::sync::Arc;
    // Fail times of 2025: far past a one-second maximum age by the wall clock.
    let store = Arc::new(store(1_000, Duration::from_secs(1)));
    let old = |id: &str| task(id, 0, ErrorCategory::DataError, "embedding", "c", "X");
    store.record(&old("t")).await.unwrap();
    let janitor = store.spawn_janitor();
    // With tokio's clock paused, time advances only when every task waits: the first tick
    // is at once, so the store is trimmed once the janitor task has run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !store.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(store.is_empty(), "the janitor never trimmed");
    janitor.stop();
    store.record(&old("u")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(store.len(), 1, "a stopped janitor trims nothing");
}

/// A trimmed task's failed files leave with it, by age and by count.
#[tokio::test]
async fn trimmed_tasks_take_their_files() {
    use failed_tasks_store::FilesStore;
    let store = store(2, Duration::from_secs(3600));
    let tasks = [
        task(
            "old",
            0,
            ErrorCategory::ServiceTimeout,
            "embedding",
            "c",
            "E",
        ),
        task(
            "mid",
            10,
            ErrorCategory::ServiceTimeout,
            "embedding",
            "c",
            "E",
        ),
        task(
            "new",
            7_200_000,
            ErrorCategory::ServiceTimeout,
            "embedding",
            "c",
            "E",
        ),
    ];
    for t in &tasks {
        store.record(t).await.unwrap();
        // "old" is trimmed by count as "new" is recorded.
        store
            .put_files(t.task_id(), &conformance::files::files_of("src", 3))
            .await
            .unwrap();
    }
    assert_eq!(store.files(tasks[0].task_id()).await.unwrap(), None);
    assert!(store.files(tasks[1].task_id()).await.unwrap().is_some());
    let report = store.trim_at(at(7_200_000));
    assert_eq!(report.removed_by_age, 1);
    assert_eq!(store.files(tasks[1].task_id()).await.unwrap(), None);
    assert!(store.files(tasks[2].task_id()).await.unwrap().is_some());
}
