//! The wire format: JSON types with the contract's field names, and the envelope.

use failed_tasks_domain::stats::{minute_start, FailureStats};
use failed_tasks_domain::{
    AttemptRecord, FailedTask, FailureGroup, GroupPage, RetryPolicy, RetryStatus, Timestamp,
};
use failed_tasks_query::audit::AuditPage;
use failed_tasks_query::{stored, StoredPage};
use failed_tasks_query::{FailedTaskPage, RetryDetails, SearchPage};
use serde::{Deserialize, Serialize};

/// The contract's message when the store is unreachable (exact text).
pub const MSG_STORE_UNAVAILABLE: &str = "Redis服务不可用，请稍后再试";
/// The contract's message when the store answered but the query failed (exact text).
pub const MSG_QUERY_FAILED: &str = "查询失败任务时发生内部错误";

/// The message when the store is full (Redis `maxmemory` reached) and refused a write.
pub const MSG_STORE_FULL: &str =
    "the failed-task store is full: nothing of this request was stored; retry once retention has freed space or the store has more memory";

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
    /// Additive: when the next retry is due (RFC 3339), or null when none is scheduled. A
    /// time in the past means the retry was handed to the workers and its outcome is awaited.
    #[serde(rename = "NextRetryAt")]
    pub next_retry_at: Option<String>,
    /// Additive: whether the retry policy gives up on this failure (authorization errors,
    /// maximum retries reached, ...), i.e. it is a final failure.
    #[serde(rename = "FinalFailure")]
    pub final_failure: bool,
}

impl WireTask {
    /// The wire form of `t` with retry status `retry`, `FinalFailure` judged by `policy`.
    pub fn new(t: &FailedTask, retry: &RetryStatus, policy: &RetryPolicy) -> Self {
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
            next_retry_at: retry.next_retry_at().map(Timestamp::to_rfc3339),
            final_failure: policy.is_final_failure(t),
        }
    }
}

/// The last line of an NDJSON export cut at its cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTruncated {
    /// Always `true`: the export stopped before every match was written.
    #[serde(rename = "Truncated")]
    pub truncated: bool,
    /// The rows written (the cap).
    #[serde(rename = "Rows")]
    pub rows: u64,
}

/// One failed attempt in a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAttempt {
    /// The attempt that failed (0 = the first run, n = the n-th retry).
    #[serde(rename = "Attempt")]
    pub attempt: u32,
    /// When it failed (RFC 3339).
    #[serde(rename = "FailTime")]
    pub fail_time: String,
    /// Its error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// Its category.
    #[serde(rename = "ErrorCategory")]
    pub error_category: String,
    /// `policy` or `operator`: who scheduled this attempt; null for the first run or a retry
    /// this service did not schedule.
    #[serde(rename = "ScheduledBy")]
    pub scheduled_by: Option<String>,
}

impl From<&AttemptRecord> for WireAttempt {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            fail_time: a.fail_time.to_rfc3339(),
            error_code: a.error_code.to_string(),
            error_category: a.error_category.as_str().to_owned(),
            scheduled_by: a.scheduled_by.map(|b| b.as_str().to_owned()),
        }
    }
}

/// `Data` of `GET /tasks/failed/{taskId}`: the task, with its last attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task as in the listing.
    #[serde(flatten)]
    pub task: WireTask,
    /// Its last failed attempts (at most 20), newest first; empty when the store keeps none.
    #[serde(rename = "Attempts")]
    pub attempts: Vec<WireAttempt>,
    /// How many of the codebase's files failed (`FailedFiles` as recorded; 0 when the
    /// failure named none). The files themselves: `GET …/tasks/failed/{taskId}/files`.
    #[serde(rename = "FailedFiles", default)]
    pub failed_files: u64,
}

impl TaskDetail {
    /// The detail of `t` with its retry `details` and its count of failed files.
    pub fn new(
        t: &FailedTask,
        details: &RetryDetails,
        policy: &RetryPolicy,
        failed_files: u64,
    ) -> Self {
        Self {
            task: WireTask::new(t, &details.status, policy),
            attempts: details.attempts.iter().map(WireAttempt::from).collect(),
            failed_files,
        }
    }
}

/// One failed file of a task on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFile {
    /// Its path in the codebase.
    #[serde(rename = "Path")]
    pub path: String,
    /// `add`, `modify` or `delete`.
    #[serde(rename = "Operation")]
    pub operation: String,
    /// Machine-readable error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// Human-readable error text.
    #[serde(rename = "ErrorMessage")]
    pub error_message: String,
}

/// How many listed files have one error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCodeCount {
    /// The error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// Listed files with it.
    #[serde(rename = "Count")]
    pub count: u64,
}

/// `Data` of `GET /tasks/failed/{taskId}/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// How many of the codebase's files failed, as recorded (may exceed the files listed).
    #[serde(rename = "FailedFiles")]
    pub failed_files: u64,
    /// How many files the failure listed.
    #[serde(rename = "ListedFiles")]
    pub listed_files: u64,
    /// How many listed files match `errorCode` (all of them without it), over all pages.
    #[serde(rename = "TotalFiles")]
    pub total_files: u64,
    /// This page, by path.
    #[serde(rename = "Files")]
    pub files: Vec<WireFile>,
    /// The cursor of the next page, or `null` on the last page.
    #[serde(rename = "NextCursor")]
    pub next_cursor: Option<String>,
    /// Listed files per error code, by code (all listed files, whatever `errorCode`).
    #[serde(rename = "ErrorCodes")]
    pub error_codes: Vec<WireCodeCount>,
}

impl From<&failed_tasks_domain::FilesPage> for FileList {
    fn from(p: &failed_tasks_domain::FilesPage) -> Self {
        Self {
            failed_files: p.failed_files,
            listed_files: p.listed,
            total_files: p.matched,
            files: p
                .files
                .iter()
                .map(|f| WireFile {
                    path: f.path.as_str().to_owned(),
                    operation: f.operation.as_str().to_owned(),
                    error_code: f.error_code.as_str().to_owned(),
                    error_message: f.error_message.as_str().to_owned(),
                })
                .collect(),
            next_cursor: p.next_cursor.as_ref().map(|c| c.encode()),
            error_codes: p
                .by_error_code
                .iter()
                .map(|(c, n)| WireCodeCount {
                    error_code: c.as_str().to_owned(),
                    count: *n,
                })
                .collect(),
        }
    }
}

/// `Data` of an operator's retry, cancel or resolve of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryAction {
    /// The task.
    #[serde(rename = "TaskId")]
    pub task_id: String,
    /// The attempt concerned, when there is one.
    #[serde(rename = "Attempt")]
    pub attempt: Option<u32>,
    /// What happened: `scheduled` (due now), `already_delivered` (the same attempt was
    /// handed out before: nothing is delivered twice), `cancelled`, `not_scheduled`,
    /// `resolved` or `already_resolved`.
    #[serde(rename = "Status")]
    pub status: String,
}

/// `Data` of `POST /admin/retries?filters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRetried {
    /// Tasks whose next retry is now due.
    #[serde(rename = "Retried")]
    pub retried: u64,
    /// Tasks whose next retry was already handed out (left alone).
    #[serde(rename = "AlreadyDelivered")]
    pub already_delivered: u64,
    /// `false` when the request deadline stopped it; repeat it to continue.
    #[serde(rename = "Complete")]
    pub complete: bool,
    /// The replay that records it (state `done`), when the store keeps replays and the
    /// retry was complete.
    #[serde(rename = "ReplayId", default, skip_serializing_if = "Option::is_none")]
    pub replay_id: Option<String>,
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
    /// With `q` or `pathPrefix` only: how the tasks were found, `groups` or `walk`.
    #[serde(rename = "Search", default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// With `q` or `pathPrefix` only: `false` when the walk's time ran out before the page
    /// was full; `NextCursor` then continues after the last task examined.
    #[serde(rename = "Complete", default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

impl TaskList {
    /// The wire form of a search's page.
    pub fn searched(found: &SearchPage, policy: &RetryPolicy) -> Self {
        Self {
            search: Some(found.way.as_str().to_owned()),
            complete: Some(found.complete),
            ..Self::new(&found.page, policy)
        }
    }

    /// The wire form of `page`, with `FinalFailure` judged by `policy`.
    pub fn new(page: &FailedTaskPage, policy: &RetryPolicy) -> Self {
        Self {
            search: None,
            complete: None,
            total_tasks: page.total,
            tasks: page
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| WireTask::new(t, &page.retry_status(i), policy))
                .collect(),
            next_cursor: page.next_cursor.as_ref().map(|c| c.encode()),
        }
    }
}

/// `Data` of `GET /access`: what the presented token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessInfo {
    /// The token's name, or null when no known token was presented.
    #[serde(rename = "Name")]
    pub name: Option<String>,
    /// Its role (`read`, `operate`, `admin`), or null.
    #[serde(rename = "Role")]
    pub role: Option<String>,
    /// The one client it is limited to, or null.
    #[serde(rename = "ClientId")]
    pub client_id: Option<String>,
    /// Whether the read routes need a token.
    #[serde(rename = "ReadsNeedToken")]
    pub reads_need_token: bool,
}

/// `Data` of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `alive` or `ready`.
    #[serde(rename = "Status")]
    pub status: String,
    /// `/readyz` only: the store's eviction policy (Redis `maxmemory-policy`), once read.
    #[serde(
        rename = "EvictionPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_policy: Option<String>,
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
    /// Ids of recorded tasks that failed longer ago than the retention age: stored, but
    /// trimmed (archived first, when an archive is configured) at the retention janitor's
    /// next run. Left out when there are none.
    #[serde(
        rename = "PastRetention",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub past_retention: Vec<String>,
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

/// A name and how many failures it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    /// The category, error code, task type or client.
    #[serde(rename = "Name")]
    pub name: String,
    /// Failures in the window.
    #[serde(rename = "Count")]
    pub count: u64,
}

/// `Untracked` of the statistics: failures per breakdown whose value was not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUntracked {
    /// Failures whose error code was not tracked.
    #[serde(rename = "ErrorCodes")]
    pub error_codes: u64,
    /// Failures whose task type was not tracked.
    #[serde(rename = "TaskTypes")]
    pub task_types: u64,
    /// Failures whose client was not tracked.
    #[serde(rename = "Clients")]
    pub clients: u64,
    /// Failures whose codebase was not tracked.
    #[serde(rename = "CodebasePaths")]
    pub codebase_paths: u64,
}

/// One minute of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// The start of the minute, RFC 3339.
    #[serde(rename = "Minute")]
    pub minute: String,
    /// Failures in that minute.
    #[serde(rename = "Count")]
    pub count: u64,
}

/// An alert rule that fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAlert {
    /// `sudden_increase`, `category_threshold`, `error_code_threshold` or `failure_rate`.
    #[serde(rename = "Rule")]
    pub rule: String,
    /// `warning` or `critical`: the highest level whose threshold is exceeded.
    #[serde(rename = "Level")]
    pub level: String,
    /// The category or error code concerned, or null.
    #[serde(rename = "Subject")]
    pub subject: Option<String>,
    /// The measured figure.
    #[serde(rename = "Figure")]
    pub figure: f64,
    /// The threshold it exceeds.
    #[serde(rename = "Threshold")]
    pub threshold: f64,
    /// Since when it holds (RFC 3339).
    #[serde(rename = "Since")]
    pub since: String,
}

/// `Data` of `GET /tasks/failed-stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// First instant of the window.
    #[serde(rename = "WindowStart")]
    pub window_start: String,
    /// End of the window (exclusive).
    #[serde(rename = "WindowEnd")]
    pub window_end: String,
    /// Failures in the window.
    #[serde(rename = "TotalFailures")]
    pub total_failures: u64,
    /// Failed tasks resolved in the window (their retry succeeded). A resolved task's
    /// failure stays counted in `TotalFailures`.
    #[serde(rename = "Recovered")]
    pub recovered: u64,
    /// Failed tasks superseded in the window (a later run of the same task type, client and
    /// codebase succeeded), apart from `Recovered`.
    #[serde(rename = "Superseded")]
    pub superseded: u64,
    /// Failures per category (all five).
    #[serde(rename = "ByCategory")]
    pub by_category: Vec<NamedCount>,
    /// Most frequent error codes.
    #[serde(rename = "ByErrorCode")]
    pub by_error_code: Vec<NamedCount>,
    /// Failures per task type.
    #[serde(rename = "ByTaskType")]
    pub by_task_type: Vec<NamedCount>,
    /// Clients with the most failures.
    #[serde(rename = "TopClients")]
    pub top_clients: Vec<NamedCount>,
    /// Codebases (their `CodebasePath`) with the most failures.
    #[serde(rename = "ByCodebasePath")]
    pub by_codebase_path: Vec<NamedCount>,
    /// Failures in the window counted in no breakdown of their kind (additive; see
    /// `failed_tasks_domain::stats`): their error code, task type, client or codebase was
    /// first seen when its minute or hour already tracked the most values the store keeps.
    #[serde(rename = "Untracked")]
    pub untracked: WireUntracked,
    /// Whether `ByErrorCode`, `ByTaskType`, `TopClients` and `ByCodebasePath` are exact. When
    /// false, a count may be below the true one and a value may be missing.
    #[serde(rename = "BreakdownsExact")]
    pub breakdowns_exact: bool,
    /// Failures per minute over the window, oldest first.
    #[serde(rename = "Timeline")]
    pub timeline: Vec<TimelinePoint>,
    /// Task attempts reported in the window, or null when none were.
    #[serde(rename = "Attempts")]
    pub attempts: Option<u64>,
    /// Failures / attempts, or null when no attempts were reported.
    #[serde(rename = "FailureRate")]
    pub failure_rate: Option<f64>,
    /// The alert rules that fire now.
    #[serde(rename = "Alerts")]
    pub alerts: Vec<WireAlert>,
}

fn named(v: &[(String, u64)]) -> Vec<NamedCount> {
    v.iter()
        .map(|(name, count)| NamedCount {
            name: name.clone(),
            count: *count,
        })
        .collect()
}

impl From<&FailureStats> for Stats {
    fn from(s: &FailureStats) -> Self {
        Self {
            window_start: minute_start(s.window.from_minute()).to_rfc3339(),
            window_end: minute_start(s.window.to_minute()).to_rfc3339(),
            total_failures: s.total,
            recovered: s.recovered,
            superseded: s.superseded,
            by_category: s
                .by_category
                .iter()
                .map(|(c, n)| NamedCount {
                    name: c.as_str().to_owned(),
                    count: *n,
                })
                .collect(),
            by_error_code: named(&s.by_error_code),
            by_task_type: named(&s.by_task_type),
            top_clients: named(&s.top_clients),
            by_codebase_path: named(&s.by_codebase_path),
            untracked: WireUntracked {
                error_codes: s.untracked.error_codes,
                task_types: s.untracked.task_types,
                clients: s.untracked.clients,
                codebase_paths: s.untracked.codebase_paths,
            },
            breakdowns_exact: s.breakdowns_exact,
            timeline: s
                .timeline
                .iter()
                .map(|(m, n)| TimelinePoint {
                    minute: minute_start(*m).to_rfc3339(),
                    count: *n,
                })
                .collect(),
            attempts: s.attempts,
            failure_rate: s.failure_rate,
            alerts: s
                .alerts
                .iter()
                .map(|a| WireAlert {
                    rule: a.rule.to_owned(),
                    level: a.level.as_str().to_owned(),
                    subject: a.subject.clone(),
                    figure: a.figure,
                    threshold: a.threshold,
                    since: a.since.to_rfc3339(),
                })
                .collect(),
        }
    }
}

/// `Data` of `POST /admin/task-attempts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptsRecorded {
    /// Attempts added.
    #[serde(rename = "Recorded")]
    pub recorded: u64,
}

/// `Data` of `POST /admin/task-successes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessesRecorded {
    /// Success reports taken.
    #[serde(rename = "Reported")]
    pub reported: u64,
    /// Stored failures they superseded.
    #[serde(rename = "Superseded")]
    pub superseded: u64,
}

/// One failure group on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGroup {
    /// The group's id: use it as `signature=` on the listing to see its tasks.
    #[serde(rename = "Signature")]
    pub signature: String,
    /// The members' category.
    #[serde(rename = "ErrorCategory")]
    pub error_category: String,
    /// The members' error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// The members' message with numbers, ids, paths and quoted values replaced.
    #[serde(rename = "Pattern")]
    pub pattern: String,
    /// Stored failures in the group.
    #[serde(rename = "Count")]
    pub count: u64,
    /// The oldest member's fail time.
    #[serde(rename = "FirstSeen")]
    pub first_seen: String,
    /// The newest member's fail time.
    #[serde(rename = "LastSeen")]
    pub last_seen: String,
    /// Distinct clients among the members.
    #[serde(rename = "ClientsAffected")]
    pub clients_affected: u64,
    /// The newest member's id.
    #[serde(rename = "SampleTaskId")]
    pub sample_task_id: String,
}

impl From<&FailureGroup> for WireGroup {
    fn from(g: &FailureGroup) -> Self {
        Self {
            signature: g.pattern.signature().to_string(),
            error_category: g.pattern.category().as_str().to_owned(),
            error_code: g.pattern.error_code().to_owned(),
            pattern: g.pattern.normalised_message().to_owned(),
            count: g.count,
            first_seen: g.first_seen.to_rfc3339(),
            last_seen: g.last_seen.to_rfc3339(),
            clients_affected: g.clients_affected,
            sample_task_id: g.sample_task_id.to_string(),
        }
    }
}

/// `Data` of `GET /tasks/failed-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    /// How many groups there are (all pages).
    #[serde(rename = "TotalGroups")]
    pub total_groups: u64,
    /// This page, last seen newest first.
    #[serde(rename = "Groups")]
    pub groups: Vec<WireGroup>,
    /// The cursor of the next page, or null.
    #[serde(rename = "NextCursor")]
    pub next_cursor: Option<String>,
}

impl From<&GroupPage> for GroupList {
    fn from(p: &GroupPage) -> Self {
        Self {
            total_groups: p.total,
            groups: p.groups.iter().map(WireGroup::from).collect(),
            next_cursor: p.next_cursor.as_ref().map(|c| c.encode()),
        }
    }
}

/// One entry of `GET /audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAuditEntry {
    /// When it was done.
    #[serde(rename = "Time")]
    pub time: String,
    /// Who did it: a token's name (or `breaker`, `janitor`).
    #[serde(rename = "Actor")]
    pub actor: String,
    /// What was done (`retry`, `cancel_retry`, `resolve`, `delete`, `delete_matching`,
    /// `retry_matching`, `gate_created`, `gate_released`, `breaker_opened`,
    /// `breaker_half_opened`, `breaker_closed`, `replay_created`, `replay_aborted`, `trim`).
    #[serde(rename = "Action")]
    pub action: String,
    /// A `TaskId`, or the filters as a query string.
    #[serde(rename = "Target")]
    pub target: String,
    /// Why, as the actor said (`X-Reason`), or null.
    #[serde(rename = "Reason")]
    pub reason: Option<String>,
    /// How many tasks it changed.
    #[serde(rename = "Count")]
    pub count: u64,
    /// The request that did it, or null.
    #[serde(rename = "RequestId")]
    pub request_id: Option<String>,
}

/// `Data` of `GET /audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    /// This page, newest first.
    #[serde(rename = "Entries")]
    pub entries: Vec<WireAuditEntry>,
    /// The cursor of the next page, or null.
    #[serde(rename = "NextCursor")]
    pub next_cursor: Option<String>,
}

impl From<&AuditPage> for AuditList {
    fn from(p: &AuditPage) -> Self {
        Self {
            entries: p
                .entries
                .iter()
                .map(|e| WireAuditEntry {
                    time: e.time.to_rfc3339(),
                    actor: e.actor.clone(),
                    action: e.action.as_str().to_owned(),
                    target: e.target.clone(),
                    reason: e.reason.clone(),
                    count: e.count,
                    request_id: e.request_id.clone(),
                })
                .collect(),
            next_cursor: p.next_cursor.as_ref().map(|c| c.encode()),
        }
    }
}

/// Append the whole success body of a listing to `body`, rendered from each task's stored
/// record without a JSON parser and without building tasks: the envelope and `Data` written
/// here, each task by [`stored::Record::write_wire_json`] (the one place where stored bytes
/// become API bytes; a test checks it against [`WireTask`] field by field) with
/// `FinalFailure` judged from the header's category, error code and retry count. `None`
/// when a record's header does not check out (an earlier version, a foreign or corrupt
/// value): the caller then serves the decoded path, which skips and counts it. The bytes
/// equal the decoded path's for the same tasks.
pub fn stored_page_body(page: &StoredPage, policy: &RetryPolicy, body: &mut Vec<u8>) -> Option<()> {
    // Into one buffer sized up front (a record renders to its length plus the field names,
    // under 256 bytes more): no regrowth, no per-write bookkeeping.
    let size: usize = page.records.iter().map(|r| r.len() + 256).sum();
    body.reserve(size + 200);
    body.extend_from_slice(
        b"{\"Code\":0,\"Message\":\"ok\",\"Success\":true,\"Data\":{\"TotalTasks\":",
    );
    stored::write_u64(page.total, body).ok()?;
    body.extend_from_slice(b",\"Tasks\":[");
    for (i, bytes) in page.records.iter().enumerate() {
        let r = stored::Record::parse(bytes).ok()?;
        let final_failure = policy
            .decide(r.category(), r.error_code(), r.retry_count(), 0.0)
            .is_give_up();
        if i > 0 {
            body.push(b',');
        }
        r.write_wire_json(Some(final_failure), body).ok()?;
    }
    body.extend_from_slice(b"],\"NextCursor\":");
    match &page.next_cursor {
        // URL-safe base64: nothing to escape.
        Some(c) => {
            body.push(b'"');
            body.extend_from_slice(c.encode().as_bytes());
            body.push(b'"');
        }
        None => body.extend_from_slice(b"null"),
    }
    body.extend_from_slice(b"}}");
    Some(())
}

// --- Notifications (`GET …/notifications`) --------------------------------------------------

/// The message a target is being sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireInFlight {
    /// The message's `Id`.
    pub id: String,
    /// Events it carries.
    pub events: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: String,
}

/// One notification target and its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireTarget {
    /// Its name.
    pub name: String,
    /// Scheme and host of its URL (never the path: it is often the secret).
    pub url: String,
    /// `json` or `slack`.
    pub format: String,
    /// The event kinds it gets.
    pub events: Vec<String>,
    /// The lowest level it gets.
    pub min_level: String,
    /// Whether its messages are signed.
    pub signed: bool,
    /// Events waiting.
    pub queued: u64,
    /// The message being delivered, if any.
    pub in_flight: Option<WireInFlight>,
    /// When a message was last delivered.
    pub last_success_at: Option<String>,
    /// Why the last failed attempt failed.
    pub last_error: Option<String>,
    /// When it failed.
    pub last_error_at: Option<String>,
    /// Messages delivered.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Events dropped (outbox full, or given up).
    pub dropped: u64,
}

/// `Data` of `GET …/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Notifications {
    /// Every target, in the configuration's order.
    pub targets: Vec<WireTarget>,
}

fn time_of(ms: i64) -> String {
    Timestamp::saturating_from_unix_millis(ms).to_rfc3339()
}

impl
    From<
        &[(
            failed_tasks_query::NotifyTargetInfo,
            failed_tasks_query::TargetDelivery,
        )],
    > for Notifications
{
    fn from(
        targets: &[(
            failed_tasks_query::NotifyTargetInfo,
            failed_tasks_query::TargetDelivery,
        )],
    ) -> Self {
        Notifications {
            targets: targets
                .iter()
                .map(|(t, d)| WireTarget {
                    name: t.name.clone(),
                    url: t.url.clone(),
                    format: t.format.clone(),
                    events: t.events.clone(),
                    min_level: t.min_level.clone(),
                    signed: t.signed,
                    queued: d.queued,
                    in_flight: d.pending.as_ref().map(|p| WireInFlight {
                        id: p.id.clone(),
                        events: p.events,
                        attempts: p.attempts,
                        next_attempt_at: time_of(p.next_ms),
                    }),
                    last_success_at: d.last_success_ms.map(time_of),
                    last_error: d.last_error.clone(),
                    last_error_at: d.last_error_ms.map(time_of),
                    delivered: d.delivered,
                    failed_attempts: d.failed_attempts,
                    dropped: d.dropped,
                })
                .collect(),
        }
    }
}

// --- Retry gates (`…/retry-gates`, `…/admin/retry-gates`) ----------------------------------

/// A gate's scope: the retries it applies to (fields not sent or `null`: any).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WireGateScope {
    /// Only this task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Only this error category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_category: Option<String>,
    /// Only this error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Only this client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Only this error signature (one failure group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl From<&failed_tasks_domain::GateScope> for WireGateScope {
    fn from(s: &failed_tasks_domain::GateScope) -> Self {
        Self {
            task_type: s.task_type.as_ref().map(ToString::to_string),
            error_category: s.error_category.map(|c| c.as_str().to_owned()),
            error_code: s.error_code.as_ref().map(ToString::to_string),
            client_id: s.client_id.as_ref().map(ToString::to_string),
            signature: s.signature.as_ref().map(ToString::to_string),
        }
    }
}

/// The body of `POST …/admin/retry-gates`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GateBody {
    /// The retries it applies to (absent or `{}`: every retry).
    #[serde(default)]
    pub scope: Option<WireGateScope>,
    /// `hold` or `limit`.
    #[serde(default)]
    pub mode: Option<String>,
    /// A `limit`'s deliveries a second (kept as sent, checked by the handler).
    #[serde(default)]
    pub per_second: Option<serde_json::Value>,
    /// Why (required).
    #[serde(default)]
    pub reason: Option<String>,
    /// When it lapses by itself, RFC 3339, in the future.
    #[serde(default)]
    pub until: Option<String>,
}

/// `Data` of `POST …/admin/retry-gates` and of `DELETE …/admin/retry-gates/{gateId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GateAction {
    /// The gate.
    pub gate_id: String,
    /// `created` or `released`.
    pub status: String,
}

/// One active gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireGate {
    /// Its id.
    pub gate_id: String,
    /// The retries it applies to.
    pub scope: WireGateScope,
    /// `hold` or `limit`.
    pub mode: String,
    /// A `limit`'s deliveries a second; `null` for a `hold`.
    pub per_second: Option<f64>,
    /// Why.
    pub reason: String,
    /// `operator` or `breaker`.
    pub created_by: String,
    /// When it was made.
    pub since: String,
    /// When it lapses by itself, or `null`.
    pub until: Option<String>,
    /// Due retries it holds back now.
    pub held: u64,
}

/// `Data` of `GET …/retry-gates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryGates {
    /// The active gates, oldest first.
    pub gates: Vec<WireGate>,
}

impl From<&[failed_tasks_domain::GateStatus]> for RetryGates {
    fn from(all: &[failed_tasks_domain::GateStatus]) -> Self {
        Self {
            gates: all
                .iter()
                .map(|s| WireGate {
                    gate_id: s.gate.id.to_string(),
                    scope: WireGateScope::from(&s.gate.scope),
                    mode: s.gate.mode.as_str().to_owned(),
                    per_second: s.gate.mode.per_second(),
                    reason: s.gate.reason.as_str().to_owned(),
                    created_by: s.gate.created_by.as_str().to_owned(),
                    since: s.gate.since.to_rfc3339(),
                    until: s.gate.until.map(Timestamp::to_rfc3339),
                    held: s.held,
                })
                .collect(),
        }
    }
}

// --- Retry breakers (`…/retry-breakers`) -----------------------------------------------------

/// One breaker that is open, half-open or closed lately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireBreaker {
    /// The task type it watches.
    pub task_type: String,
    /// The error category it watches.
    pub error_category: String,
    /// `open`, `half_open` or `closed`.
    pub state: String,
    /// Its `hold` gate, while active (`null` once closed).
    pub gate_id: Option<String>,
    /// Due retries its gate holds back now.
    pub held: u64,
    /// Why its gate exists (`null` once closed).
    pub reason: Option<String>,
    /// When it opened.
    pub opened: String,
    /// When its state began.
    pub since: String,
    /// When an open breaker's cool-down ends (its canaries pass then); `null` otherwise.
    pub cooldown_ends: Option<String>,
    /// Its current (or last) cool-down, in seconds.
    pub cooldown_seconds: u64,
    /// How many times it opened since it was last closed.
    pub opens: u32,
    /// Retries that failed again among the outcomes that opened it (or its last canaries).
    pub failed_again: u64,
    /// Those outcomes in all (failed again and resolved).
    pub outcomes: u64,
}

/// The breaker settings in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireBreakerSettings {
    /// Whether breakers open at all.
    pub enabled: bool,
    /// The window of outcomes, in seconds.
    pub window_seconds: u64,
    /// Fewest outcomes in the window before a breaker may open.
    pub min_retries: u64,
    /// The share failed again that opens it, in percent.
    pub failure_percent: u8,
    /// The first cool-down, in seconds.
    pub cooldown_seconds: u64,
    /// The longest cool-down, in seconds.
    pub max_cooldown_seconds: u64,
    /// Retries let through when half-open.
    pub canaries: u32,
}

/// `Data` of `GET …/retry-breakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryBreakers {
    /// Breakers open, half-open or closed within the last window, by task type and category.
    pub breakers: Vec<WireBreaker>,
    /// The settings in force.
    pub settings: WireBreakerSettings,
}

impl RetryBreakers {
    /// The breakers of `views` under `config`.
    pub fn new(
        views: &[failed_tasks_query::BreakerView],
        config: &failed_tasks_domain::BreakerConfig,
    ) -> Self {
        use failed_tasks_domain::BreakerPhase;
        Self {
            breakers: views
                .iter()
                .map(|v| {
                    let s = &v.state;
                    WireBreaker {
                        task_type: s.key.task_type.to_string(),
                        error_category: s.key.category.as_str().to_owned(),
                        state: s.phase.as_str().to_owned(),
                        gate_id: v.gate.as_ref().map(|g| g.gate.id.to_string()),
                        held: v.gate.as_ref().map_or(0, |g| g.held),
                        reason: v.gate.as_ref().map(|g| g.gate.reason.as_str().to_owned()),
                        opened: s.opened.to_rfc3339(),
                        since: s.phase_since.to_rfc3339(),
                        cooldown_ends: (s.phase == BreakerPhase::Open)
                            .then(|| s.cooldown_ends().to_rfc3339()),
                        cooldown_seconds: s.cooldown.as_secs(),
                        opens: s.opens,
                        failed_again: s.trigger.failed_again,
                        outcomes: s.trigger.total(),
                    }
                })
                .collect(),
            settings: WireBreakerSettings {
                enabled: config.enabled,
                window_seconds: config.window.as_secs(),
                min_retries: config.min_retries,
                failure_percent: config.failure_percent,
                cooldown_seconds: config.cooldown.as_secs(),
                max_cooldown_seconds: config.max_cooldown.as_secs(),
                canaries: config.canaries,
            },
        }
    }
}
// --- Replays (`…/replays`, `…/admin/replays`) ----------------------------------------------

/// The body of `POST …/admin/replays`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReplayBody {
    /// The listing's filters under their query-parameter names (at least one).
    #[serde(default)]
    pub filters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Why (required).
    #[serde(default)]
    pub reason: Option<String>,
    /// Tasks a second (kept as sent, checked by the handler); absent: unpaced.
    #[serde(default)]
    pub per_second: Option<serde_json::Value>,
    /// Only count and show what would be retried.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `Data` of a dry run of `POST …/admin/replays`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplayPreview {
    /// How many tasks match.
    pub matching: u64,
    /// The first 20 of them, in the listing's order.
    pub sample_task_ids: Vec<String>,
}

/// `Data` of `POST …/admin/replays` (not a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplayCreated {
    /// The replay's id.
    pub replay_id: String,
    /// How many tasks matched when it was made.
    pub matching: u64,
}

/// One replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireReplay {
    /// Its id.
    pub replay_id: String,
    /// `running`, `done`, `aborted` or `failed`.
    pub state: String,
    /// Its filters, under their query-parameter names.
    pub filters: std::collections::BTreeMap<String, String>,
    /// Why.
    pub reason: String,
    /// Who made it: a token's name.
    pub actor: String,
    /// When it was made.
    pub created: String,
    /// When it ended, or `null`.
    pub finished: Option<String>,
    /// Its pace, tasks a second; `null`: unpaced.
    pub per_second: Option<f64>,
    /// Tasks matching when it was made.
    pub matched: u64,
    /// Matching tasks visited so far.
    pub visited: u64,
    /// Of those, retries made due.
    pub scheduled: u64,
}

impl From<&failed_tasks_domain::Replay> for WireReplay {
    fn from(r: &failed_tasks_domain::Replay) -> Self {
        Self {
            replay_id: r.id.to_string(),
            state: r.state.as_str().to_owned(),
            filters: r
                .filter
                .params()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            reason: r.reason.as_str().to_owned(),
            actor: r.actor.clone(),
            created: r.created.to_rfc3339(),
            finished: r.finished.map(Timestamp::to_rfc3339),
            per_second: r.pace.map(failed_tasks_domain::ReplayPace::get),
            matched: r.matched,
            visited: r.progress.visited,
            scheduled: r.progress.scheduled,
        }
    }
}

/// `Data` of `GET …/replays/{replayId}`: the replay and what became of the retries it made
/// due (of the last 10,000), read from their tasks now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplayDetail {
    /// The replay.
    #[serde(flatten)]
    pub replay: WireReplay,
    /// Retries looked at for the counts below (the last 10,000 it made due).
    pub tracked: u64,
    /// Of those, handed to workers (no longer waiting).
    pub delivered: u64,
    /// Of those, tasks no longer failed (resolved, superseded or removed).
    pub resolved: u64,
    /// Of those, retries reported failed again.
    pub failed_again: u64,
}

/// `Data` of `GET …/replays`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplayList {
    /// The most recent replays, newest first.
    pub replays: Vec<WireReplay>,
}

/// `Data` of `DELETE …/admin/replays/{replayId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplayAborted {
    /// The replay.
    pub replay_id: String,
    /// `aborted`.
    pub status: String,
    /// Retries it had made due that were still waiting, now cancelled.
    pub cancelled: u64,
}
