//! Bulk removal cut by the request deadline reports what it removed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use failed_tasks_domain::{
    ErrorCategory, FailedTask, ListQuery, NewFailedTask, TaskFilter, TaskId, TaskType,
};
use failed_tasks_query::{BulkRemoval, Deadlines, FailedTaskService};
use failed_tasks_store::{FailedTaskPage, MemoryStore, RecordOutcome, StatusStore, StoreError};

/// The memory store, except that removals stop answering after `answered` of them (a store
/// that stalls mid-way, so the request deadline cuts the removal), or fail when `fail`.
struct StallsAfter {
    inner: MemoryStore,
    answered: u64,
    removals: AtomicU64,
    fail: bool,
}

#[async_trait::async_trait]
impl StatusStore for StallsAfter {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn list(&self, q: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        self.inner.list(q).await
    }
    async fn get(&self, id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        self.inner.get(id).await
    }
    async fn record(&self, t: &FailedTask) -> Result<RecordOutcome, StoreError> {
        self.inner.record(t).await
    }
    async fn record_batch(&self, t: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        self.inner.record_batch(t).await
    }
    async fn remove(&self, id: &TaskId) -> Result<bool, StoreError> {
        if self.removals.fetch_add(1, Ordering::SeqCst) >= self.answered {
            if self.fail {
                return Err(StoreError::Unavailable("connection lost".into()));
            }
            std::future::pending::<()>().await;
        }
        self.inner.remove(id).await
    }
}

fn task(i: usize) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: format!("t{i:05}"),
        task_type: "embedding".into(),
        client_id: "c1".into(),
        codebase_path: String::new(),
        start_time: failed_tasks_domain::Timestamp::from_unix_millis(1_737_709_200_000).unwrap(),
        fail_time: failed_tasks_domain::Timestamp::from_unix_millis(
            1_737_709_200_000 + i as i64 * 1000,
        )
        .unwrap(),
        error_code: "TIMEOUT_ERROR".into(),
        error_message: String::new(),
        retry_count: 0,
        processed_files: 0,
        error_category: Some(ErrorCategory::ServiceTimeout),
    })
    .unwrap()
}

async fn remove_all_from(answered: u64, fail: bool) -> (BulkRemoval, usize) {
    let store = Arc::new(StallsAfter {
        inner: MemoryStore::new(),
        answered,
        removals: AtomicU64::new(0),
        fail,
    });
    let tasks: Vec<FailedTask> = (0..1200).map(task).collect();
    store.inner.record_batch(&tasks).await.unwrap();
    let service = FailedTaskService::new(
        failed_tasks_store::Stores::new("stalling", store.clone()),
        Deadlines::default(),
    );
    let filter = TaskFilter {
        task_type: Some(TaskType::parse("embedding").unwrap()),
        ..TaskFilter::default()
    };
    let done = service.remove_matching(&filter).await.unwrap();
    (done, store.inner.len())
}

/// 1,200 matching tasks (three pages of 500); the store stalls after 700 removals, in the
/// middle of the second page: the answer says 700 removed, not complete, and 500 are left.
#[tokio::test(start_paused = true)]
async fn a_removal_cut_by_the_deadline_reports_every_task_it_removed() {
    let (done, left) = remove_all_from(700, false).await;
    let want = BulkRemoval {
        removed: 700,
        complete: false,
    };
    assert_eq!((done, left), (want, 500));
}

/// The same when the store fails after 300 removals: 300 removed, not complete (the next
/// call reports the failure if it persists).
#[tokio::test(start_paused = true)]
async fn a_removal_stopped_by_a_store_failure_reports_what_it_removed() {
    let (done, left) = remove_all_from(300, true).await;
    let want = BulkRemoval {
        removed: 300,
        complete: false,
    };
    assert_eq!((done, left), (want, 900));
}
