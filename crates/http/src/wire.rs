//! The wire format: JSON types with the contract's field names, and the envelope.

use failed_tasks_domain::FailedTask;
use failed_tasks_store::FailedTaskPage;
use serde::{Deserialize, Serialize};

/// The contract's message when the store is unreachable (exact text).
pub const MSG_STORE_UNAVAILABLE: &str = "Redis服务不可用，请稍后再试";
/// The contract's message when the store answered but the query failed (exact text).
pub const MSG_QUERY_FAILED: &str = "查询失败任务时发生内部错误";

/// Every response body: `{"Code":..,"Message":..,"Success":..,"Data":..}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// 0 on success, otherwise the error code of the contract's table.
    #[serde(rename = "Code")]
    pub code: u16,
    /// `ok` on success, otherwise what went wrong.
    #[serde(rename = "Message")]
    pub message: String,
    /// Whether the request succeeded.
    #[serde(rename = "Success")]
    pub success: bool,
    /// The payload on success, `null` on error.
    #[serde(rename = "Data")]
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn ok(data: T) -> Self {
        Self {
            code: 0,
            message: "ok".to_owned(),
            success: true,
            data: Some(data),
        }
    }
}

impl Envelope<()> {
    /// An error envelope with `Data: null`.
    pub fn error(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            success: false,
            data: None,
        }
    }
}

/// One failed task on the wire, field for field as in the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTask {
    /// The task's unique id.
    #[serde(rename = "TaskId")]
    pub task_id: String,
    /// `embedding`, `indexing`, `cleaning`, ...
    #[serde(rename = "TaskType")]
    pub task_type: String,
    /// The client it ran for.
    #[serde(rename = "ClientId")]
    pub client_id: String,
    /// The codebase it worked on.
    #[serde(rename = "CodebasePath")]
    pub codebase_path: String,
    /// RFC 3339, UTC, `Z`.
    #[serde(rename = "StartTime")]
    pub start_time: String,
    /// RFC 3339, UTC, `Z`.
    #[serde(rename = "FailTime")]
    pub fail_time: String,
    /// Machine-readable error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// Human-readable error text.
    #[serde(rename = "ErrorMessage")]
    pub error_message: String,
    /// Retries before this failure.
    #[serde(rename = "RetryCount")]
    pub retry_count: u32,
    /// Files processed when it failed.
    #[serde(rename = "ProcessedFiles")]
    pub processed_files: u64,
    /// One of the five categories.
    #[serde(rename = "ErrorCategory")]
    pub error_category: String,
}

impl From<&FailedTask> for WireTask {
    fn from(t: &FailedTask) -> Self {
        Self {
            task_id: t.task_id().to_string(),
            task_type: t.task_type().to_string(),
            client_id: t.client_id().to_string(),
            codebase_path: t.codebase_path().to_string(),
            start_time: t.start_time().to_rfc3339(),
            fail_time: t.fail_time().to_rfc3339(),
            error_code: t.error_code().to_string(),
            error_message: t.error_message().to_string(),
            retry_count: t.retry_count(),
            processed_files: t.processed_files(),
            error_category: t.error_category().as_str().to_owned(),
        }
    }
}

/// `Data` of the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    /// How many failed tasks match the request (all pages).
    #[serde(rename = "TotalTasks")]
    pub total_tasks: u64,
    /// This page, newest first.
    #[serde(rename = "Tasks")]
    pub tasks: Vec<WireTask>,
    /// The cursor of the next page, or `null` on the last page.
    #[serde(rename = "NextCursor")]
    pub next_cursor: Option<String>,
}

impl From<&FailedTaskPage> for TaskList {
    fn from(page: &FailedTaskPage) -> Self {
        Self {
            total_tasks: page.total,
            tasks: page.tasks.iter().map(WireTask::from).collect(),
            next_cursor: page.next_cursor.as_ref().map(|c| c.encode()),
        }
    }
}

/// `Data` of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `alive` or `ready`.
    #[serde(rename = "Status")]
    pub status: String,
}

/// `Data` of a recording request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Tasks in the request, all stored.
    #[serde(rename = "Recorded")]
    pub recorded: u64,
    /// Of those, how many ids were new.
    #[serde(rename = "Created")]
    pub created: u64,
    /// Of those, how many replaced a task with the same id.
    #[serde(rename = "Updated")]
    pub updated: u64,
}

/// `Data` of a removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// How many tasks were removed.
    #[serde(rename = "Removed")]
    pub removed: u64,
    /// `false` when a bulk removal stopped at the request deadline; repeat it to continue.
    #[serde(rename = "Complete")]
    pub complete: bool,
}
