//! The port itself: the task store every adapter is, and the optional capabilities.

use async_trait::async_trait;
use failed_tasks_domain::stats::{BucketTops, MinuteCounts};
use failed_tasks_domain::{
    Cursor, FailedTask, GroupPage, GroupQuery, ListQuery, RetryStatus, TaskId, TaskType,
};

use crate::{StoreCondition, StoreError};

/// One page of failed tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedTaskPage {
    /// How many stored failed tasks match the query's filter (all pages, not this one).
    pub total: u64,
    /// This page, newest first, at most the query's page size.
    pub tasks: Vec<FailedTask>,
    /// Where the next page starts, or `None` when this is the last page.
    pub next_cursor: Option<Cursor>,
    /// Records in this page's range that could not be decoded and were left out.
    pub skipped_corrupt: u64,
    /// The retry status of each task of `tasks`, in the same order, from stores that
    /// schedule retries ([`RetryStore`](crate::RetryStore)); empty from stores that do not.
    /// Read it with [`retry_status`](Self::retry_status).
    pub retry: Vec<RetryStatus>,
}

impl FailedTaskPage {
    /// The retry status of the `i`-th task: [`RetryStatus::Unscheduled`] when the store
    /// keeps none.
    pub fn retry_status(&self, i: usize) -> RetryStatus {
        self.retry.get(i).copied().unwrap_or_default()
    }
}

/// A page as each task's stored record (the [`stored`](crate::stored) form), for stores that
/// keep tasks that way: an HTTP adapter renders its body from these bytes
/// ([`stored::Record::write_wire_json`](crate::stored::Record::write_wire_json)) without
/// a JSON parser and without building tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPage {
    /// As [`FailedTaskPage::total`].
    pub total: u64,
    /// Each task's stored record, newest first. The store checked that each belongs to its
    /// index entry; its header is checked again by [`stored::Record::parse`](crate::stored::Record::parse).
    pub records: Vec<bytes::Bytes>,
    /// As [`FailedTaskPage::next_cursor`].
    pub next_cursor: Option<Cursor>,
    /// As [`FailedTaskPage::skipped_corrupt`].
    pub skipped_corrupt: u64,
}

impl StoredPage {
    /// `page` encoded as stored records (what a store answers when it could not serve the
    /// records' own bytes: an earlier version, several filters).
    pub fn encoded(page: &FailedTaskPage) -> Self {
        Self {
            total: page.total,
            records: page
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let sig = failed_tasks_domain::ErrorSignature::of_task(t);
                    bytes::Bytes::from(crate::stored::encode(t, &sig, &page.retry_status(i)))
                })
                .collect(),
            next_cursor: page.next_cursor.clone(),
            skipped_corrupt: page.skipped_corrupt,
        }
    }
}

/// What `record` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The task id was new.
    Created,
    /// A task with this id existed and was replaced.
    Updated,
}

/// Where failed tasks are kept: the capability every store has.
///
/// Implementations must be safe under concurrent use from many tasks, and must bound every
/// call in time themselves (a command timeout); the use cases add their own deadlines on top.
/// What else a store can do is a trait of its own ([`StatsStore`], [`StoredPages`],
/// [`RetryStore`](crate::RetryStore)); [`Stores`](crate::Stores) says which ones a store has.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StatusStore: Send + Sync {
    /// Check that the store answers (a Redis `PING`). Answers at once with
    /// [`StoreError::Unavailable`] when the adapter already knows the link is down.
    async fn ping(&self) -> Result<(), StoreError>;

    /// What the adapter last observed of its link to the store (why it is not usable, its
    /// eviction policy), without I/O: for `/readyz`, metrics and start-up checks. The
    /// default knows nothing (a store without a link to watch, such as the memory store).
    fn condition(&self) -> StoreCondition {
        StoreCondition::default()
    }

    /// One page of the failed tasks matching `query.filter`, newest first, starting after
    /// `query.cursor`, with the total count of matches. The text filters (`text`,
    /// `path_prefix`) have no index: the search use case asks without them and checks each
    /// task itself; a store asked with them checks them task by task, and its total may
    /// then count the other filters only.
    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError>;

    /// The failed task with this id, if stored.
    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError>;

    /// Store `task`, replacing any task with the same id, atomically with every index. On a
    /// store that schedules retries this schedules none (and drops one scheduled before):
    /// recording with a plan is [`RetryStore::record_planned`](crate::RetryStore::record_planned).
    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError>;

    /// Store several tasks, each an upsert as in [`record`](StatusStore::record); the
    /// outcomes are in the order of `tasks` (a repeated id sees its earlier copy).
    ///
    /// A batch is **all or nothing**: on `Ok` every task is stored, on `Err` none is (the
    /// memory store under one lock; Redis in one script, at most
    /// `failed_tasks_redis::store::MAX_BATCH` tasks per call). The one exception no store
    /// can rule out: the store applied the batch and the answer was lost on the way back
    /// (a timeout or a dropped connection after the write), so after an `Unavailable` or
    /// `Timeout` the batch may be stored; recording again is safe (an upsert).
    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError>;

    /// Remove the task with this id and every index entry of it; `false` when it was absent.
    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError>;
}

/// Failure statistics, task attempts and failure groups, kept up to date on every write: the
/// capability behind `/tasks/failed-stats` and `/tasks/failed-groups` (the memory and Redis
/// stores; not the read-only compat source).
///
/// A statistics store is always a [`StatusStore`] too, the writes of which keep these
/// figures in step; the same bounds on time and concurrency apply.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// The per-minute failure counters of the minutes in `[from_minute, to_minute)` that had
    /// failures, oldest first. Stores keep them up to date on every write (record, upsert,
    /// remove, trim), so this costs O(minutes in the range), never O(stored tasks).
    async fn failure_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MinuteCounts>, StoreError>;

    /// The breakdowns by error code, task type and client of the minutes in
    /// `[from_minute, to_minute)`: one [`BucketTops`] per bucket of
    /// [`failed_tasks_domain::stats::buckets`] that counts anything, oldest first, each with
    /// at most [`READ_PER_BUCKET`](failed_tasks_domain::stats::READ_PER_BUCKET) + 1 values
    /// per dimension (the most frequent; equal counts by name descending) and its untracked
    /// counts. Stores keep at most
    /// [`TRACKED_PER_BUCKET`](failed_tasks_domain::stats::TRACKED_PER_BUCKET) values per
    /// bucket and dimension ([`TrackedCounts`](failed_tasks_domain::stats::TrackedCounts)'s
    /// rule), so this costs O(buckets), never O(distinct values) nor O(stored tasks).
    async fn failure_tops(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<BucketTops>, StoreError>;

    /// Add `count` task attempts of `task_type` in `minute` (the failure-rate denominator,
    /// reported by embedders). Kept with the same retention as failures.
    async fn record_attempts(
        &self,
        task_type: &TaskType,
        minute: i64,
        count: u64,
    ) -> Result<(), StoreError>;

    /// Task attempts per minute (all task types together) in `[from_minute, to_minute)`,
    /// oldest first; minutes without attempts are left out.
    async fn attempt_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError>;

    /// One page of failure groups (failures sharing an error signature), last seen newest
    /// first, kept up to date on every write like the indexes.
    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, StoreError>;
}

/// The optional read fast path of stores that keep each task as a [`stored`](crate::stored)
/// record (Redis): a page as those bytes, so an HTTP adapter can render its body without
/// decoding each task. Stores without it are read through [`StatusStore::list`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StoredPages: Send + Sync {
    /// The same page as [`StatusStore::list`] gives for `query` (the same tasks, totals,
    /// cursor and skipped records), as each task's stored record. The bytes are the
    /// store's: callers still check what they rely on (`stored::Record::parse`).
    async fn list_stored(&self, query: &ListQuery) -> Result<StoredPage, StoreError>;
}
