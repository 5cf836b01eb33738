//! The embedded default store: everything in process memory, indexed like the Redis store.
//!
//! One `BTreeSet` per index holds [`IndexKey`]s in listing order, so a page is a range walk:
//! O(log N + page) for the unfiltered listing and for a single equality filter. With a time
//! filter, or several filters at once, the page walks the smallest matching index and the
//! total is counted over that index's range, so both cost O(matches of that index), never a
//! sort. Nothing survives a restart: this store is for development, demos and tests.
//!
//! It implements [`StatusStore`], [`StatsStore`], [`RetryStore`] and
//! [`FilesStore`](crate::FilesStore) (a map beside the indexes; not
//! [`StoredPages`](crate::StoredPages): it keeps decoded tasks), and
//! [`Stores::from`] claims exactly those.
//!
//! # Retention
//! The store keeps at most [`Retention::max_count`] tasks: a write that goes beyond it drops
//! the oldest tasks (by `FailTime`, the end of the listing) in the same step, so the store
//! cannot grow without bound whatever runs or does not run in the background. Tasks that
//! failed longer ago than [`Retention::max_age`] leave at the next trim step
//! ([`MemoryStore::trim_at`]), which [`MemoryStore::spawn_janitor`] runs periodically, as
//! the Redis janitor does; a trim also drops the per-minute counters and attempts older
//! than the age. Trimmed tasks leave every index, counter and group, like a removal.
//!
//! Retries ([`RetryStore`]) work as on Redis: a due set ordered by due time, changed under
//! the same lock as the record, and an in-process queue ([`MemoryRetryQueue`]) that due
//! retries move into under that lock too, with claims, acknowledgements and leases.
//!
//! # Layout
//! - this module: [`MemoryStore`], its [`MemoryConfig`], [`StatusStore`] over it
//! - `indexes`: the indexes, the upsert and a page's walk
//! - `stats`: minute counters, breakdowns, failure groups; [`StatsStore`]
//! - `retries`: schedules, the due set, attempt history; [`RetryStore`]
//! - `gates`: the retry gates, their token buckets and the retries they park
//! - `notify`: the notifier's lease, state, outboxes and deliveries; [`NotifyStore`] (in
//!   this process only: lost on restart)
//! - `audit`: the audit log, newest first, capped; [`AuditStore`](crate::AuditStore) (in
//!   this process only: lost on restart)
//! - `breaker`: the breaker's outcome counters, states and lease;
//!   [`BreakerStore`](crate::BreakerStore) (in this process only: lost on restart)
//! - `replays`: the replays, their progress and scheduled retries, the runners' lease;
//!   [`ReplayStore`](crate::ReplayStore) (in this process only: lost on restart)
//! - `queue`: [`MemoryRetryQueue`], what workers claim
//! - `retention`: the trim and its janitor ([`MemoryTrimReport`], [`MemoryJanitor`])
//!
//! [`IndexKey`]: indexes::IndexKey
//! [`StatsStore`]: crate::StatsStore
//! [`RetryStore`]: crate::RetryStore
//! [`NotifyStore`]: crate::NotifyStore

mod audit;
mod breaker;
mod gates;
mod indexes;
mod lease;
mod notify;
mod queue;
mod replays;
mod retention;
mod retries;
mod stats;

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use failed_tasks_domain::{FailedTask, ListQuery, RetryPlan, TaskFiles, TaskId};

use crate::Retention;
use crate::{FailedTaskPage, FilesStore, RecordOutcome, StatusStore, StoreError, Stores};
use indexes::Indexes;
use queue::Queue;

pub use queue::MemoryRetryQueue;
pub use retention::{MemoryJanitor, MemoryTrimReport};

/// What a [`MemoryStore`] is built with. `Default` is the documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// What the store keeps (see the module's "Retention").
    pub retention: Retention,
    /// Most requests the retry queue holds (read or not); beyond it the oldest unread ones
    /// are dropped, as a capped Redis stream drops them. 100,000 by default.
    pub retry_queue_cap: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            retry_queue_cap: MemoryStore::DEFAULT_QUEUE_CAP,
        }
    }
}

/// An in-memory [`StatusStore`], [`StatsStore`](crate::StatsStore) and
/// [`RetryStore`](crate::RetryStore), safe to share between tasks (`Arc<MemoryStore>`),
/// keeping what its [`Retention`] allows.
#[derive(Debug)]
pub struct MemoryStore {
    inner: RwLock<Indexes>,
    queue: Arc<Queue>,
    retention: Retention,
    /// The notifier's lease, state, outboxes and deliveries (`notify`).
    notify: std::sync::Mutex<notify::NotifyMemory>,
    /// The audit log (`audit`).
    audit: std::sync::Mutex<audit::AuditMemory>,
    breaker: std::sync::Mutex<breaker::BreakerMemory>,
    /// The replays (`replays`).
    replays: std::sync::Mutex<replays::ReplayMemory>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_config(MemoryConfig::default())
    }
}

impl MemoryStore {
    /// Most requests the retry queue holds (read or not) by default; beyond it the oldest
    /// unread ones are dropped, as a capped Redis stream drops them.
    pub const DEFAULT_QUEUE_CAP: usize = 100_000;

    /// An empty store with the default [`MemoryConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store built with `config`.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            inner: RwLock::default(),
            queue: Arc::new(Queue::new(config.retry_queue_cap.max(1))),
            retention: config.retention,
            notify: std::sync::Mutex::default(),
            audit: std::sync::Mutex::default(),
            breaker: std::sync::Mutex::default(),
            replays: std::sync::Mutex::default(),
        }
    }

    /// An empty store whose retry queue holds at most `cap` requests.
    pub fn with_queue_cap(cap: usize) -> Self {
        Self::with_config(MemoryConfig {
            retry_queue_cap: cap,
            ..MemoryConfig::default()
        })
    }

    /// The retention in force.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Store a batch under one lock, then drop the oldest tasks beyond the maximum count.
    fn insert_all<'a>(
        &self,
        batch: impl Iterator<Item = (&'a FailedTask, RetryPlan)>,
    ) -> Vec<RecordOutcome> {
        let mut indexes = self.write();
        let outcomes = batch
            .map(|(t, plan)| indexes.insert(t.clone(), plan))
            .collect();
        indexes.trim_to_count(self.retention.max_count);
        outcomes
    }

    /// A worker's handle on this store's retry queue (all handles share one queue, like the
    /// consumers of one Redis consumer group).
    pub fn retry_queue(&self) -> MemoryRetryQueue {
        MemoryRetryQueue {
            queue: self.queue.clone(),
        }
    }

    /// How many tasks are stored.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether no task is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock cannot leave the indexes half-updated (no code path
    // panics between the paired inserts and removes), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Indexes> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Indexes> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The memory store's capabilities: tasks, statistics, retries, notifications, the audit
/// log and replays.
impl From<Arc<MemoryStore>> for Stores {
    fn from(store: Arc<MemoryStore>) -> Self {
        Stores::new("memory", store.clone())
            .with_stats(store.clone())
            .with_retries(store.clone())
            .with_notify(store.clone())
            .with_audit(store.clone())
            .with_breaker(store.clone())
            .with_replays(store.clone())
            .with_files(store)
    }
}

impl From<MemoryStore> for Stores {
    fn from(store: MemoryStore) -> Self {
        Stores::from(Arc::new(store))
    }
}

#[async_trait]
impl StatusStore for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        Ok(self.read().list(query))
    }

    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        Ok(self.read().by_id.get(task_id).cloned())
    }

    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        let mut outcomes = self.insert_all(std::iter::once((task, RetryPlan::NotScheduled)));
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Internal("no outcome for one task".to_owned()))
    }

    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        // One lock for the whole batch: readers see all of it or none of it.
        Ok(self.insert_all(tasks.iter().map(|t| (t, RetryPlan::NotScheduled))))
    }

    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        Ok(self.write().remove(task_id).is_some())
    }
}

/// A map by task id beside the indexes, under the same lock; `unrecord` empties a task's
/// entry whenever the task leaves or is recorded again.
#[async_trait]
impl FilesStore for MemoryStore {
    async fn put_files(&self, task_id: &TaskId, files: &TaskFiles) -> Result<bool, StoreError> {
        let mut indexes = self.write();
        if !indexes.by_id.contains_key(task_id) {
            return Ok(false);
        }
        indexes
            .files
            .insert(task_id.clone(), Arc::new(files.clone()));
        Ok(true)
    }

    async fn files(&self, task_id: &TaskId) -> Result<Option<TaskFiles>, StoreError> {
        Ok(self.read().files.get(task_id).map(|f| TaskFiles::clone(f)))
    }
}
