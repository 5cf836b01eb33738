//! Retry scheduling: where a stored failure stands with respect to its next retry, what a
//! worker is handed when a retry is due, and the history of a task's failed attempts.
//!
//! The [`RetryPolicy`](crate::RetryPolicy) says *whether* and *after how long* a failure is
//! retried; this module names what follows from that once the failure is stored:
//!
//! - [`RetryPlan`]: what recording a failure schedules: a retry at `FailTime + delay`, a final
//!   failure, or nothing (the store was not asked to schedule).
//! - [`RetryStatus`]: a stored task's state: a retry scheduled ([`NextRetry`]), final, or
//!   unscheduled (cancelled by an operator, or recorded without a plan). [`RetryState`] is
//!   the same without the details: the listing's `retry=` filter.
//! - [`RetryRequest`]: one due retry as it is handed to the embedder's workers.
//! - [`AttemptRecord`]: one failed run in a task's history (the last [`MAX_ATTEMPT_HISTORY`]).
//!
//! # Attempts
//! A task's first run is attempt 0; the n-th retry is attempt n. A failure with
//! `RetryCount = n` is the failure of attempt n, and the retry it schedules is attempt
//! `n + 1`. `(TaskId, Attempt)` identifies one retry: stores schedule and deliver each at
//! most once, and workers use it as their idempotency key.

use std::fmt;

use crate::{
    ClientId, CodebasePath, ErrorCategory, ErrorCode, FailedTask, RetryDecision, RetryPolicy,
    TaskId, TaskType, Timestamp, ValidationError,
};

/// How many failed attempts a task's history keeps (the newest).
pub const MAX_ATTEMPT_HISTORY: usize = 20;

/// Who scheduled a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduledBy {
    /// The retry policy, when the failure was recorded.
    Policy,
    /// An operator (retry now), possibly overriding a final failure.
    Operator,
}

impl ScheduledBy {
    /// `policy` or `operator`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScheduledBy::Policy => "policy",
            ScheduledBy::Operator => "operator",
        }
    }

    /// Parse `policy` or `operator`; errors name `ScheduledBy`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "policy" => Ok(ScheduledBy::Policy),
            "operator" => Ok(ScheduledBy::Operator),
            _ => Err(ValidationError::new(
                "ScheduledBy",
                format!("{s:?} is neither policy nor operator"),
            )),
        }
    }
}

impl fmt::Display for ScheduledBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three retry states of a stored failure, as the listing's `retry=` filter names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryState {
    /// A retry is scheduled: waiting for its due time, or handed to workers and awaiting its
    /// outcome. `NextRetryAt` is set.
    Scheduled,
    /// The policy gives up on this failure (最终失败): nothing is scheduled.
    Final,
    /// Neither: the scheduled retry was cancelled, or the failure was recorded without a
    /// plan (by a store call that does not schedule, or before retries existed).
    Unscheduled,
}

impl RetryState {
    /// All three, in this order.
    pub const ALL: [RetryState; 3] = [
        RetryState::Scheduled,
        RetryState::Final,
        RetryState::Unscheduled,
    ];

    /// `scheduled`, `final` or `none`: the filter's values.
    pub const fn as_str(self) -> &'static str {
        match self {
            RetryState::Scheduled => "scheduled",
            RetryState::Final => "final",
            RetryState::Unscheduled => "none",
        }
    }

    /// Parse a filter value; errors name `retry`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "retry",
                    format!("unknown retry state {s:?}; expected scheduled, final or none"),
                )
            })
    }
}

impl fmt::Display for RetryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A retry that is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRetry {
    /// Which attempt it is (the failure's `RetryCount + 1`).
    pub attempt: u32,
    /// When it is due (`FailTime + delay`, or the time an operator asked for it).
    pub due: Timestamp,
    /// Who scheduled it.
    pub by: ScheduledBy,
}

/// Where a stored failure stands with respect to retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryStatus {
    /// A retry is scheduled (due later, or due and handed to workers already).
    Scheduled(NextRetry),
    /// A final failure: the policy gives up.
    Final,
    /// No retry is scheduled and the failure is not final (see [`RetryState::Unscheduled`]).
    #[default]
    Unscheduled,
}

impl RetryStatus {
    /// The filter state of this status.
    pub fn state(&self) -> RetryState {
        match self {
            RetryStatus::Scheduled(_) => RetryState::Scheduled,
            RetryStatus::Final => RetryState::Final,
            RetryStatus::Unscheduled => RetryState::Unscheduled,
        }
    }

    /// When the scheduled retry is (or was) due; `None` when none is scheduled.
    pub fn next_retry_at(&self) -> Option<Timestamp> {
        match self {
            RetryStatus::Scheduled(n) => Some(n.due),
            RetryStatus::Final | RetryStatus::Unscheduled => None,
        }
    }

    /// The scheduled retry, if any.
    pub fn next(&self) -> Option<&NextRetry> {
        match self {
            RetryStatus::Scheduled(n) => Some(n),
            RetryStatus::Final | RetryStatus::Unscheduled => None,
        }
    }
}

/// What recording a failure schedules, decided from the policy before the store is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPlan {
    /// Schedule the next attempt (`RetryCount + 1`) at `due`, by the policy.
    Retry {
        /// `FailTime + the policy's delay`.
        due: Timestamp,
    },
    /// A final failure: schedule nothing, and drop any retry scheduled before.
    Final,
    /// Schedule nothing and drop any retry scheduled before, without calling it final.
    NotScheduled,
}

impl RetryPlan {
    /// The plan `policy` gives `task`, with `jitter` in `[0, 1)` (see
    /// [`RetryPolicy::decide`]): a retry at `FailTime + delay`, or final.
    pub fn of(policy: &RetryPolicy, task: &FailedTask, jitter: f64) -> Self {
        match policy.decide_for(task, jitter) {
            RetryDecision::RetryAfter(delay) => RetryPlan::Retry {
                due: Timestamp::saturating_from_unix_millis(
                    task.fail_time()
                        .unix_millis()
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                ),
            },
            RetryDecision::GiveUp(_) => RetryPlan::Final,
        }
    }

    /// The status a task recorded with this plan has, when nothing was scheduled before.
    pub fn status_for(&self, task: &FailedTask) -> RetryStatus {
        match *self {
            RetryPlan::Retry { due } => RetryStatus::Scheduled(NextRetry {
                attempt: task.retry_count().saturating_add(1),
                due,
                by: ScheduledBy::Policy,
            }),
            RetryPlan::Final => RetryStatus::Final,
            RetryPlan::NotScheduled => RetryStatus::Unscheduled,
        }
    }
}

/// One failed attempt of a task, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The attempt that failed: the failure's `RetryCount` (0 for the first run).
    pub attempt: u32,
    /// When it failed.
    pub fail_time: Timestamp,
    /// Its error code.
    pub error_code: ErrorCode,
    /// Its category.
    pub error_category: ErrorCategory,
    /// Who scheduled this attempt, when this service did (`None` for the first run, or a
    /// retry this service did not schedule).
    pub scheduled_by: Option<ScheduledBy>,
}

/// One due retry, as workers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRequest {
    /// The task to run again.
    pub task_id: TaskId,
    /// Its task type.
    pub task_type: TaskType,
    /// Its client.
    pub client_id: ClientId,
    /// Its codebase.
    pub codebase_path: CodebasePath,
    /// Which attempt this is (the failure's `RetryCount + 1`): with `task_id`, the
    /// idempotency key.
    pub attempt: u32,
    /// The error code of the failure being retried.
    pub error_code: ErrorCode,
    /// Its category.
    pub error_category: ErrorCategory,
    /// When the retry was due.
    pub due_at: Timestamp,
    /// Who scheduled it.
    pub scheduled_by: ScheduledBy,
    /// The files of the codebase that failed, when the failure named them: a worker
    /// re-embeds only those (`None`: the failure named no files, retry the whole task).
    pub files: Option<RetryFiles>,
}

/// The failed files a retry carries: how many, and which, inline (at most a few) or where
/// to read them (`FilesKey`, the store's key of the task's files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryFiles {
    /// How many of the codebase's files failed (`FailedFiles`).
    pub failed_files: u64,
    /// Their paths, when the retry carries them inline (at most the store's inline limit),
    /// by path.
    pub paths: Option<Vec<String>>,
    /// Where the list is (the Redis store: `PREFIX:files:ID`, the stored form of
    /// `failed_tasks_store::files`), when the paths are not inline and the failure listed
    /// files; read the page API (`GET …/tasks/failed/{taskId}/files`) or the key.
    pub files_key: Option<String>,
}

impl RetryRequest {
    /// The request for `task`'s scheduled retry `next` (without files: the store adds those
    /// it keeps).
    pub fn for_task(task: &FailedTask, next: &NextRetry) -> Self {
        Self {
            task_id: task.task_id().clone(),
            task_type: task.task_type().clone(),
            client_id: task.client_id().clone(),
            codebase_path: task.codebase_path().clone(),
            attempt: next.attempt,
            error_code: task.error_code().clone(),
            error_category: task.error_category(),
            due_at: next.due,
            scheduled_by: next.by,
            files: None,
        }
    }

    /// The failure a worker records when this retry failed again: `task` with the new
    /// `RetryCount` (this attempt), fail time `failed_at` and the new error. The start time
    /// is `started_at`, clamped to the fail time.
    pub fn failed_again(
        &self,
        template: &FailedTask,
        started_at: Timestamp,
        failed_at: Timestamp,
        error_code: &str,
        error_message: &str,
    ) -> Result<FailedTask, ValidationError> {
        let mut raw = template.clone().into_parts();
        raw.start_time = started_at.min(failed_at);
        raw.fail_time = failed_at;
        raw.error_code = error_code.to_owned();
        raw.error_message = error_message.to_owned();
        raw.error_category = None;
        raw.retry_count = self.attempt;
        FailedTask::new(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in RetryState::ALL {
            assert_eq!(RetryState::parse(s.as_str()), Ok(s));
        }
        assert_eq!(RetryState::parse("later").unwrap_err().field, "retry");
        for b in [ScheduledBy::Policy, ScheduledBy::Operator] {
            assert_eq!(ScheduledBy::parse(b.as_str()), Ok(b));
        }
        assert!(ScheduledBy::parse("cron").is_err());
    }

    #[test]
    fn plans_follow_the_policy() {
        let seed = FailedTask::seed_examples();
        let policy = RetryPolicy::new(crate::RetryConfig {
            jitter: 0.0,
            max_retries: 5,
            ..crate::RetryConfig::default()
        })
        .unwrap();
        // task_001: a timeout after 3 retries: retry after 30 s x 2^3.
        let plan = RetryPlan::of(&policy, &seed[0], 0.5);
        let due = seed[0].fail_time().unix_millis() + 240_000;
        assert_eq!(
            plan,
            RetryPlan::Retry {
                due: Timestamp::from_unix_millis(due).unwrap()
            }
        );
        let status = plan.status_for(&seed[0]);
        assert_eq!(status.state(), RetryState::Scheduled);
        assert_eq!(status.next().map(|n| n.attempt), Some(4));
        // task_002: authorization: final.
        assert_eq!(RetryPlan::of(&policy, &seed[1], 0.5), RetryPlan::Final);
        assert_eq!(RetryPlan::Final.status_for(&seed[1]), RetryStatus::Final);
        assert_eq!(RetryStatus::Final.next_retry_at(), None);
    }

    #[test]
    fn a_failed_retry_carries_its_attempt_as_retry_count() {
        let t = &FailedTask::seed_examples()[2];
        let next = NextRetry {
            attempt: 2,
            due: t.fail_time(),
            by: ScheduledBy::Operator,
        };
        let req = RetryRequest::for_task(t, &next);
        let later = Timestamp::from_unix_millis(t.fail_time().unix_millis() + 5_000).unwrap();
        let again = req
            .failed_again(t, later, later, "TIMEOUT_ERROR", "again")
            .unwrap();
        assert_eq!(again.retry_count(), 2);
        assert_eq!(again.error_category(), ErrorCategory::ServiceTimeout);
        assert_eq!(again.task_id(), t.task_id());
    }
}
