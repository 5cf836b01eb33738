//! Fail-time limits: how far ahead of this server's clock a `FailTime` may be, and which
//! recorded tasks are already past the retention age.

use std::time::Duration;

use failed_tasks_domain::{FailedTask, TaskId, ValidationError};

use super::{FailedTaskService, QueryError};

/// Which `FailTime`s the service records, and what it says about old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailTimeLimits {
    /// How far ahead of this server's clock a `FailTime` may be (embedders' clocks drift):
    /// later ones are refused as bad input, so a task dated in year 9999 cannot sit at the
    /// top of every listing. 5 minutes by default.
    pub clock_skew: Duration,
    /// The store's retention age, when it trims by age: a task that failed longer ago is
    /// still recorded (the janitor archives and trims it at its next run) but named in the
    /// answer ([`FailedTaskService::past_retention`]). `None` (the default): nothing is
    /// trimmed by age.
    pub retention: Option<Duration>,
}

impl Default for FailTimeLimits {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(5 * 60),
            retention: None,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl FailedTaskService {
    /// The same service accepting fail times within `limits`.
    #[must_use]
    pub fn with_fail_time_limits(mut self, limits: FailTimeLimits) -> Self {
        self.fail_times = limits;
        self
    }

    /// The fail-time limits in force.
    pub fn fail_time_limits(&self) -> FailTimeLimits {
        self.fail_times
    }

    /// Refuse a task whose `FailTime` is further ahead of this server's clock than the
    /// allowed clock skew; `field` names it for the client.
    pub(super) fn check_fail_time(
        &self,
        task: &FailedTask,
        field: impl Fn() -> String,
    ) -> Result<(), QueryError> {
        self.check_not_ahead(task.fail_time(), field)
    }

    /// Refuse a reported time further ahead of this server's clock than the allowed clock
    /// skew; `field` names it for the client.
    pub(super) fn check_not_ahead(
        &self,
        time: failed_tasks_domain::Timestamp,
        field: impl Fn() -> String,
    ) -> Result<(), QueryError> {
        let latest = now_ms().saturating_add(millis(self.fail_times.clock_skew));
        if time.unix_millis() > latest {
            return Err(QueryError::BadRequest(ValidationError::new(
                field(),
                format!(
                    "is in the future: more than {} s ahead of this server's clock (the allowed clock skew)",
                    self.fail_times.clock_skew.as_secs()
                ),
            )));
        }
        Ok(())
    }

    /// The tasks among `tasks` that failed longer ago than the retention age (if the store
    /// trims by age): recording them works, but the janitor trims them at its next run.
    pub fn past_retention<'a>(&self, tasks: &'a [FailedTask]) -> Vec<&'a TaskId> {
        let Some(age) = self.fail_times.retention else {
            return Vec::new();
        };
        let oldest = now_ms().saturating_sub(millis(age));
        tasks
            .iter()
            .filter(|t| t.fail_time().unix_millis() < oldest)
            .map(FailedTask::task_id)
            .collect()
    }
}
