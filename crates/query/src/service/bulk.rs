//! Bulk walks: remove or retry every task matching a filter, a page at a time, within the
//! request deadline.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use failed_tasks_domain::{ListQuery, PageLimits, PageSize, TaskFilter, TaskId, Timestamp};
use failed_tasks_store::{RetryNow, StoreError};

use super::{FailedTaskService, QueryError, RetryCounters};

/// What a bulk removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRemoval {
    /// How many tasks were removed.
    pub removed: u64,
    /// Whether every matching task is gone; `false` when the request deadline stopped it
    /// early (call again to continue).
    pub complete: bool,
}

/// How a walk over every match of a filter ended.
#[derive(Debug, PartialEq, Eq)]
enum Walked {
    /// Every match was visited.
    Complete,
    /// The request deadline stopped it.
    Deadline,
    /// The store failed.
    Failed(StoreError),
}

/// What a retry of every match of a filter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkRetry {
    /// Tasks whose next retry is now due (scheduled later before, or not at all).
    pub retried: u64,
    /// Tasks whose next retry was already handed to workers: left alone.
    pub already_delivered: u64,
    /// Whether every match was visited; `false` when the request deadline stopped it early
    /// (call again: tasks already retried answer `already_delivered` or are retried again
    /// only while their retry has not been delivered, so nothing is delivered twice).
    pub complete: bool,
}

impl FailedTaskService {
    /// Call `visit` with the id of every task matching `filter` (text filters: searched,
    /// see `search`), a page of 500 at a time,
    /// until none is left, the request deadline passes or the store fails (the bulk removal
    /// and the bulk retry).
    async fn walk_matching<F, Fut>(
        &self,
        filter: &TaskFilter,
        mut visit: F,
    ) -> Result<Walked, QueryError>
    where
        F: FnMut(TaskId) -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        self.ensure_connection().await?;
        let deadline = tokio::time::Instant::now() + self.deadlines.request;
        let page_size = PageSize::new(500, PageLimits::new(500, 500)?)?;
        let work = async {
            let mut cursor = None;
            loop {
                let query = ListQuery {
                    filter: filter.clone(),
                    page_size,
                    cursor: cursor.take(),
                };
                let page = if filter.searches() {
                    self.search_page(&query, deadline).await?.page
                } else {
                    self.store.list(&query).await?
                };
                for task in page.tasks {
                    visit(task.task_id().clone()).await?;
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return Ok::<_, StoreError>(()),
                }
            }
        };
        Ok(match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(())) => Walked::Complete,
            Ok(Err(e)) => Walked::Failed(e),
            Err(_) => Walked::Deadline,
        })
    }

    /// Remove every failed task matching `filter`, a page at a time, until none is left or
    /// the request deadline is near. Returns how many were removed and whether the removal
    /// is complete (a huge removal continues with the next request).
    ///
    /// Each removal is counted as soon as the store confirms it, so a deadline (or a store
    /// failure after some removals) that cuts the work short loses no count; only the
    /// removal in flight at that moment is unknown (it may have happened, and is not counted).
    /// A read-only store answers [`QueryError::NotSupported`].
    pub async fn remove_matching(&self, filter: &TaskFilter) -> Result<BulkRemoval, QueryError> {
        self.check_filter(filter)?;
        let store = self.writable_store()?;
        let removed = AtomicU64::new(0);
        let walked = self
            .writing(self.walk_matching(filter, |id| {
                let removed = &removed;
                async move {
                    if store.remove(&id).await? {
                        removed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
            }))
            .await?;
        let removed = removed.into_inner();
        match walked {
            Walked::Complete => Ok(BulkRemoval {
                removed,
                complete: true,
            }),
            // Some were removed before the store failed: say how many (the next call
            // continues, or reports the failure if it persists).
            Walked::Failed(e) if removed > 0 => {
                tracing::warn!(removed, error = %e, "bulk removal stopped by a store error");
                Ok(BulkRemoval {
                    removed,
                    complete: false,
                })
            }
            Walked::Failed(e) => Err(QueryError::from_store(e)),
            Walked::Deadline => Ok(BulkRemoval {
                removed,
                complete: false,
            }),
        }
    }

    /// Make the next retry of every task matching `filter` due now, a page at a time, until
    /// none is left or the request deadline is near (like [`remove_matching`](Self::remove_matching)).
    /// Each retry is counted as soon as the store confirms it, so a deadline or a store
    /// failure part-way loses no count.
    pub async fn retry_matching(
        &self,
        filter: &TaskFilter,
        now: Timestamp,
    ) -> Result<BulkRetry, QueryError> {
        self.check_filter(filter)?;
        let retries = self.retry_store()?;
        let (retried, delivered) = (AtomicU64::new(0), AtomicU64::new(0));
        let counters = &self.retry_counters;
        let walked = self
            .writing(self.walk_matching(filter, |id| {
                let (retried, delivered) = (&retried, &delivered);
                async move {
                    match retries.retry_now(&id, now).await? {
                        RetryNow::Scheduled { .. } => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            RetryCounters::add(&counters.scheduled_by_operator, 1);
                        }
                        RetryNow::AlreadyDelivered { .. } => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        // Resolved or removed since the page was read.
                        RetryNow::Resolved | RetryNow::NotFound => {}
                    }
                    Ok(())
                }
            }))
            .await?;
        let done = BulkRetry {
            retried: retried.into_inner(),
            already_delivered: delivered.into_inner(),
            complete: walked == Walked::Complete,
        };
        match walked {
            Walked::Failed(e) if done.retried + done.already_delivered == 0 => {
                Err(QueryError::from_store(e))
            }
            Walked::Failed(e) => {
                tracing::warn!(retried = done.retried, error = %e, "bulk retry stopped by a store error");
                Ok(done)
            }
            Walked::Complete | Walked::Deadline => Ok(done),
        }
    }
}
