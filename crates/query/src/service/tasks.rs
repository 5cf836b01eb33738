//! The use cases on failed tasks themselves: list a page, get one, record, remove one.

use failed_tasks_domain::{
    Cursor, FailedTask, ListQuery, PageLimits, PageSize, RetryPlan, TaskFilter, TaskId,
};
use failed_tasks_store::{FailedTaskPage, RecordOutcome, RetryDetails, StoredPage};

use super::{FailedTaskService, QueryError, RetryCounters};

impl FailedTaskService {
    /// One page of failed tasks (the contract's `GET /tasks/failed`); with text filters,
    /// [`search_failed`](Self::search_failed)'s page.
    pub async fn list_failed(&self, query: &ListQuery) -> Result<FailedTaskPage, QueryError> {
        self.check_filter(&query.filter)?;
        if query.filter.searches() {
            return self.search_failed(query).await.map(|s| s.page);
        }
        self.checked(self.store.list(query)).await
    }

    /// The same page as [`list_failed`](Self::list_failed) as stored records, when the
    /// store keeps it; `None` without a call when it does not
    /// ([`Capability::StoredRecords`](failed_tasks_store::Capability::StoredRecords) is a fast
    /// path, never required): use `list_failed`.
    pub async fn list_failed_stored(
        &self,
        query: &ListQuery,
    ) -> Result<Option<StoredPage>, QueryError> {
        self.check_filter(&query.filter)?;
        let Some(json) = &self.stores.stored else {
            return Ok(None);
        };
        if query.filter.searches() {
            return Ok(None);
        }
        self.checked(json.list_stored(query)).await.map(Some)
    }

    /// The next `n` (at most) tasks matching `filter` after `cursor`, for an export that
    /// reads every match page by page: the store's page, or with text filters a search's
    /// (which may hold fewer, even none, and still have a next cursor). Each page under the
    /// request deadline.
    pub async fn export_page(
        &self,
        filter: &TaskFilter,
        cursor: Option<Cursor>,
        n: u32,
    ) -> Result<FailedTaskPage, QueryError> {
        self.check_filter(filter)?;
        let limits = PageLimits::new(n.max(1), n.max(1))?;
        let query = ListQuery {
            filter: filter.clone(),
            page_size: PageSize::new(n.max(1), limits)?,
            cursor,
        };
        if filter.searches() {
            return self.search_failed(&query).await.map(|s| s.page);
        }
        self.checked(self.store.list(&query)).await
    }

    /// One failed task by id; [`QueryError::NotFound`] when absent.
    pub async fn get_failed(&self, task_id: &TaskId) -> Result<FailedTask, QueryError> {
        self.checked(self.store.get(task_id))
            .await?
            .ok_or(QueryError::NotFound)
    }

    /// One failed task by id with its retry status and last attempts (empty details when
    /// the store schedules no retries); [`QueryError::NotFound`] when absent.
    pub async fn get_failed_with_retries(
        &self,
        task_id: &TaskId,
    ) -> Result<(FailedTask, RetryDetails), QueryError> {
        let store = &self.store;
        let retries = self.stores.retries.as_ref();
        let (task, details) = self
            .checked(async move {
                let task = store.get(task_id).await?;
                let details = match (&task, retries) {
                    (Some(_), Some(r)) => r.retry_details(task_id).await?,
                    _ => None,
                };
                Ok((task, details))
            })
            .await?;
        Ok((
            task.ok_or(QueryError::NotFound)?,
            details.unwrap_or_default(),
        ))
    }

    /// Record a failure: an upsert by task id, scheduling its retry when the store can. A
    /// `FailTime` beyond the allowed clock skew is refused ([`QueryError::BadRequest`]
    /// naming `FailTime`).
    pub async fn record_failure(&self, task: &FailedTask) -> Result<RecordOutcome, QueryError> {
        let mut outcomes = self.record_failures(std::slice::from_ref(task)).await?;
        outcomes.pop().ok_or_else(|| QueryError::Internal {
            detail: "the store answered no outcome for one task".to_owned(),
            kind: "internal",
        })
    }

    /// Record several failures at once (each an upsert), all or nothing. Every task is
    /// checked first: a `FailTime` beyond the allowed clock skew refuses the whole batch
    /// ([`QueryError::BadRequest`] naming `[i].FailTime`, or `FailTime` for a single task).
    /// A store that schedules retries schedules each failure's retry by the policy (or makes
    /// it final) in the same atomic write. A read-only store answers
    /// [`QueryError::NotSupported`].
    pub async fn record_failures(
        &self,
        tasks: &[FailedTask],
    ) -> Result<Vec<RecordOutcome>, QueryError> {
        let store = self.writable_store()?;
        for (i, task) in tasks.iter().enumerate() {
            self.check_fail_time(task, || {
                if tasks.len() == 1 {
                    "FailTime".to_owned()
                } else {
                    format!("[{i}].FailTime")
                }
            })?;
        }
        let Some(retries) = &self.stores.retries else {
            let outcomes = self
                .writing(self.checked(store.record_batch(tasks)))
                .await?;
            self.record_counters.add_recorded(tasks);
            return Ok(outcomes);
        };
        let planned = self.plans(tasks);
        let outcomes = self
            .writing(self.checked(retries.record_planned(&planned)))
            .await?;
        self.record_counters.add_recorded(tasks);
        self.count_failed_again(tasks).await;
        let scheduled = planned
            .iter()
            .filter(|(_, p)| matches!(p, RetryPlan::Retry { .. }))
            .count() as u64;
        let c = &self.retry_counters;
        RetryCounters::add(&c.scheduled_by_policy, scheduled);
        RetryCounters::add(&c.finals, planned.len() as u64 - scheduled);
        Ok(outcomes)
    }

    /// Remove a failed task; [`QueryError::NotFound`] when absent, [`QueryError::NotSupported`]
    /// on a read-only store.
    pub async fn remove_failed(&self, task_id: &TaskId) -> Result<(), QueryError> {
        let store = self.writable_store()?;
        if self.writing(self.checked(store.remove(task_id))).await? {
            Ok(())
        } else {
            Err(QueryError::NotFound)
        }
    }
}
