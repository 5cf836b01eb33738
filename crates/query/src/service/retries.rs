//! Retries: the policy and jitter that plan them, and the use cases of one task's retry
//! (retry now, cancel, resolve) and of the scheduler (deliver due, gauges).

use std::sync::{Arc, Mutex, PoisonError};

use failed_tasks_domain::{
    FailedTask, JitterRng, RetryPlan, RetryPolicy, TaskId, TaskSuccess, Timestamp,
};
use failed_tasks_store::{CancelRetry, DeliverReport, Resolve, RetryGauges, RetryNow};

use super::{FailedTaskService, QueryError, RetryCounters};

impl FailedTaskService {
    /// The same service drawing jitter from `rng` (tests seed it to be reproducible).
    #[must_use]
    pub fn with_jitter(mut self, rng: JitterRng) -> Self {
        self.jitter = Arc::new(Mutex::new(rng));
        self
    }

    /// Whether the store schedules retries.
    pub fn schedules_retries(&self) -> bool {
        self.stores.retries.is_some()
    }

    /// The plan of each task by the policy in force, with fresh jitter.
    pub(super) fn plans(&self, tasks: &[FailedTask]) -> Vec<(FailedTask, RetryPlan)> {
        let mut rng = self.jitter.lock().unwrap_or_else(PoisonError::into_inner);
        tasks
            .iter()
            .map(|t| {
                let plan = RetryPlan::of(&self.retry_policy, t, rng.next_unit());
                (t.clone(), plan)
            })
            .collect()
    }

    /// The same service judging final failures with `policy`.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Arc::new(policy);
        self
    }

    /// The retry policy in force: whether a stored failure is final (`FinalFailure`).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry_policy
    }

    /// Make a task's next retry due now (an operator's request; also for a final failure,
    /// as an explicit override). Asking again for the same attempt delivers nothing twice.
    pub async fn retry_now(
        &self,
        task_id: &TaskId,
        now: Timestamp,
    ) -> Result<RetryNow, QueryError> {
        let retries = self.retry_store()?;
        let outcome = self
            .writing(self.checked(retries.retry_now(task_id, now)))
            .await?;
        if matches!(outcome, RetryNow::Scheduled { .. }) {
            RetryCounters::add(&self.retry_counters.scheduled_by_operator, 1);
        }
        Ok(outcome)
    }

    /// Cancel a task's scheduled retry.
    pub async fn cancel_retry(&self, task_id: &TaskId) -> Result<CancelRetry, QueryError> {
        let retries = self.retry_store()?;
        let outcome = self
            .writing(self.checked(retries.cancel_retry(task_id)))
            .await?;
        if matches!(outcome, CancelRetry::Cancelled { .. }) {
            RetryCounters::add(&self.retry_counters.cancelled, 1);
        }
        Ok(outcome)
    }

    /// A task's retry succeeded: it leaves the failed tasks and counts as recovered (and,
    /// for the breaker, as a retry of its task type and category that resolved).
    pub async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, QueryError> {
        let retries = self.retry_store()?;
        // The breaker counts a resolved retry by its task type and category: read first.
        let task = if self.breaks_circuits() {
            self.checked(self.store.get(task_id)).await?
        } else {
            None
        };
        let outcome = self
            .writing(self.checked(retries.resolve(task_id, at)))
            .await?;
        if outcome == Resolve::Resolved {
            RetryCounters::add(&self.retry_counters.recovered, 1);
            if let Some(task) = &task {
                self.count_resolved(task, at).await;
            }
        }
        Ok(outcome)
    }

    /// Later runs succeeded: every stored failure of the same task type, client and codebase
    /// that failed before one of `successes` is resolved as superseded (its retry dropped,
    /// counted in `Superseded`). Every `Time` is checked against the clock skew first
    /// ([`QueryError::BadRequest`] naming `Time`, or `[i].Time` in a batch). Answers how
    /// many failures were superseded.
    pub async fn record_successes(&self, successes: &[TaskSuccess]) -> Result<u64, QueryError> {
        let retries = self.retry_store()?;
        for (i, s) in successes.iter().enumerate() {
            self.check_not_ahead(s.time, || {
                if successes.len() == 1 {
                    "Time".to_owned()
                } else {
                    format!("[{i}].Time")
                }
            })?;
        }
        let mut superseded = 0;
        for s in successes {
            superseded += self.writing(self.checked(retries.supersede(s))).await?;
        }
        RetryCounters::add(&self.retry_counters.superseded, superseded);
        Ok(superseded)
    }

    /// One scheduler step: move up to `max` retries due at `now` to the workers' queue
    /// (see [`RetryScheduler`](crate::RetryScheduler) for the loop).
    pub async fn deliver_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<DeliverReport, QueryError> {
        let retries = self.retry_store()?;
        let report = self.checked(retries.deliver_due(now, max)).await?;
        RetryCounters::add(&self.retry_counters.delivered, report.moved);
        Ok(report)
    }

    /// The retry figures of the store as of `now`, for the metrics.
    pub async fn retry_gauges(&self, now: Timestamp) -> Result<RetryGauges, QueryError> {
        let retries = self.retry_store()?;
        self.checked(retries.retry_gauges(now)).await
    }
}
