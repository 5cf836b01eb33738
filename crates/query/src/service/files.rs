//! The failed files of codebase tasks: recorded with their failure, paged by path with
//! counts per error code.

use failed_tasks_domain::{FailedTask, FilesPage, FilesQuery, TaskFiles, TaskId};
use failed_tasks_store::{Capability, RecordOutcome};

use super::{FailedTaskService, QueryError};

impl FailedTaskService {
    /// [`record_failures`](Self::record_failures), then the failed files each task carries
    /// (`files[i]` for `tasks[i]`; `None`: the failure names none). Recording a task again
    /// replaces its failure whole: its files are the new failure's, none when it carries
    /// none. A store without the files capability refuses files before anything is
    /// recorded ([`QueryError::NotSupported`]).
    pub async fn record_failures_with_files(
        &self,
        tasks: &[FailedTask],
        files: &[Option<TaskFiles>],
    ) -> Result<Vec<RecordOutcome>, QueryError> {
        let any = files.iter().any(Option::is_some);
        let store = match (&self.stores.files, any) {
            (_, false) => None,
            (Some(store), true) => Some(store),
            (None, true) => return Err(self.not_supported(Capability::Files)),
        };
        let outcomes = self.record_failures(tasks).await?;
        if let Some(store) = store {
            // A batch may name a task twice: the last of its failures is the one stored.
            for (i, (task, f)) in tasks.iter().zip(files).enumerate() {
                let later = tasks[i + 1..].iter().any(|t| t.task_id() == task.task_id());
                if let (Some(f), false) = (f, later) {
                    self.writing(self.checked(store.put_files(task.task_id(), f)))
                        .await?;
                }
            }
        }
        Ok(outcomes)
    }

    /// How many files of `task_id` failed (`FailedFiles`): 0 when its failure named none or
    /// the store keeps no files.
    pub async fn failed_files_count(&self, task_id: &TaskId) -> Result<u64, QueryError> {
        let Some(store) = &self.stores.files else {
            return Ok(0);
        };
        let files = self.checked(store.files(task_id)).await?;
        Ok(files.map_or(0, |f| f.failed_files()))
    }

    /// One page of the failed files of `task_id`, by path, with counts per error code (an
    /// empty page when its failure named none); [`QueryError::NotFound`] for an unknown
    /// task, [`QueryError::NotSupported`] on a store without the files capability.
    pub async fn failed_files(
        &self,
        task_id: &TaskId,
        query: &FilesQuery,
    ) -> Result<FilesPage, QueryError> {
        let store = self
            .stores
            .files
            .as_ref()
            .ok_or_else(|| self.not_supported(Capability::Files))?;
        let tasks = &self.store;
        let (task, files) = self
            .checked(async move {
                let (task, files) =
                    futures_util::future::join(tasks.get(task_id), store.files(task_id)).await;
                Ok((task?, files?))
            })
            .await?;
        if task.is_none() {
            return Err(QueryError::NotFound);
        }
        let files = files.unwrap_or_else(|| TaskFiles::from_valid(0, None));
        Ok(files.page(query))
    }
}
