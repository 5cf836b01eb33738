//! A successful run reported by an embedder ([`TaskSuccess`]): every failure of the same task
//! type, client and codebase that failed before it is stale, *superseded*
//! (docs/retries.md#superseded-failures).

use crate::{ClientId, CodebasePath, FailedTask, TaskType, Timestamp, ValidationError};

/// Most successes one report may carry.
pub const MAX_SUCCESSES_PER_REPORT: usize = 1_000;

/// A run of `task_type` for `client_id` over `codebase_path` that succeeded at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSuccess {
    /// The task type that ran.
    pub task_type: TaskType,
    /// For which client.
    pub client_id: ClientId,
    /// Over which codebase (never empty: a success names the codebase it covers).
    pub codebase_path: CodebasePath,
    /// When it succeeded.
    pub time: Timestamp,
}

impl TaskSuccess {
    /// A success; an empty `codebase_path` is refused (`CodebasePath`).
    pub fn new(
        task_type: TaskType,
        client_id: ClientId,
        codebase_path: CodebasePath,
        time: Timestamp,
    ) -> Result<Self, ValidationError> {
        if codebase_path.as_str().is_empty() {
            return Err(ValidationError::new(
                "CodebasePath",
                "is required: a success names the codebase it covers",
            ));
        }
        Ok(Self {
            task_type,
            client_id,
            codebase_path,
            time,
        })
    }

    /// Whether `task` is a failure this success supersedes: the same task type, client and
    /// codebase, failed before the success.
    pub fn supersedes(&self, task: &FailedTask) -> bool {
        task.task_type() == &self.task_type
            && task.client_id() == &self.client_id
            && task.codebase_path() == &self.codebase_path
            && task.fail_time() < self.time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewFailedTask;

    fn failure(client: &str, path: &str, fail_ms: i64) -> FailedTask {
        FailedTask::new(NewFailedTask {
            task_id: "t1".into(),
            task_type: "embedding".into(),
            client_id: client.into(),
            codebase_path: path.into(),
            start_time: Timestamp::from_unix_millis(fail_ms).unwrap(),
            fail_time: Timestamp::from_unix_millis(fail_ms).unwrap(),
            error_code: "TIMEOUT_ERROR".into(),
            error_message: "timeout".into(),
            retry_count: 0,
            processed_files: 0,
            error_category: None,
        })
        .unwrap()
    }

    #[test]
    fn supersedes_older_failures_of_the_same_triple_only() {
        let s = TaskSuccess::new(
            TaskType::parse("embedding").unwrap(),
            ClientId::parse("c1").unwrap(),
            CodebasePath::parse("/repo").unwrap(),
            Timestamp::from_unix_millis(10_000).unwrap(),
        )
        .unwrap();
        assert!(s.supersedes(&failure("c1", "/repo", 9_999)));
        assert!(!s.supersedes(&failure("c1", "/repo", 10_000)), "not before");
        assert!(!s.supersedes(&failure("c2", "/repo", 1)));
        assert!(!s.supersedes(&failure("c1", "/repo2", 1)));
        let empty = TaskSuccess::new(
            TaskType::parse("embedding").unwrap(),
            ClientId::parse("c1").unwrap(),
            CodebasePath::parse("").unwrap(),
            Timestamp::EPOCH,
        );
        assert_eq!(empty.unwrap_err().field, "CodebasePath");
    }
}
