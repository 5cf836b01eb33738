//! The retry scheduler: a loop that moves due retries into the workers' queue.
//!
//! Every [`SchedulerConfig::interval`] it runs one [`RetryScheduler::step`]: calls of
//! [`FailedTaskService::deliver_due`] of at most [`SchedulerConfig::batch`] retries each,
//! repeated at once while due retries are left (at most [`SchedulerConfig::max_batches`]
//! per step, so one step stays short). Several processes may run it against one store: the
//! store moves each due retry exactly once, and a store shared between processes lets one
//! scheduler at a time work (a lock), the others' steps answering `locked_out`.
//!
//! Tests drive [`RetryScheduler::step`] directly rather than waiting for the loop.

use std::time::Duration;

use failed_tasks_domain::Timestamp;

use crate::{FailedTaskService, QueryError};

/// How the scheduler runs. `Default` is the documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Time between steps (default 250 ms): a due retry waits at most about this long
    /// before it is moved, when the scheduler keeps up.
    pub interval: Duration,
    /// Retries moved per store call (default 1,000).
    pub batch: usize,
    /// Most store calls per step (default 100), so a backlog is worked off in bounded steps.
    pub max_batches: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            batch: 1_000,
            max_batches: 100,
        }
    }
}

impl SchedulerConfig {
    /// Check the settings: a non-zero interval and batch, at most 10,000 per batch.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            return Err("retry scheduler interval must be greater than zero".to_owned());
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err(format!(
                "retry scheduler batch is {}; it must be between 1 and 10000",
                self.batch
            ));
        }
        if self.max_batches == 0 {
            return Err("retry scheduler max batches must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Another scheduler held the store's lock.
    pub locked_out: bool,
    /// Retries moved.
    pub moved: u64,
    /// Stale due entries dropped.
    pub dropped: u64,
    /// Due retries are left (the step stopped at its maximum).
    pub more: bool,
}

/// The scheduler of one process.
#[derive(Debug, Clone)]
pub struct RetryScheduler {
    service: FailedTaskService,
    config: SchedulerConfig,
}

/// The running scheduler loop; dropping it stops it (a step in progress is abandoned:
/// each store call is atomic).
pub type SchedulerHandle = failed_tasks_store::Background;

/// The current time.
pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::saturating_from_unix_millis(ms)
}

impl RetryScheduler {
    /// A scheduler of `service`'s store.
    pub fn new(service: FailedTaskService, config: SchedulerConfig) -> Self {
        Self { service, config }
    }

    /// The settings in force.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// One step as of `now`: move due retries, batch after batch, until none is due or
    /// `max_batches` calls were made.
    pub async fn step(&self, now: Timestamp) -> Result<StepReport, QueryError> {
        let mut report = StepReport::default();
        for _ in 0..self.config.max_batches {
            let r = self.service.deliver_due(now, self.config.batch).await?;
            report.moved += r.moved;
            report.dropped += r.dropped;
            report.locked_out = r.locked_out;
            report.more = r.more;
            if r.locked_out || !r.more {
                break;
            }
        }
        Ok(report)
    }

    /// Run [`step`](Self::step) every `interval` (with the current time) until the handle
    /// is dropped or stopped. Errors are logged; the next tick tries again, so the loop
    /// resumes by itself when the store comes back.
    pub fn spawn(self) -> SchedulerHandle {
        let scheduler = std::sync::Arc::new(self);
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        SchedulerHandle::every(scheduler.config.interval, move || {
            let (scheduler, failing) = (scheduler.clone(), failing.clone());
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match scheduler.step(now()).await {
                    Ok(r) => {
                        if failing.swap(false, Relaxed) {
                            tracing::info!("retry scheduler recovered");
                        }
                        if r.dropped > 0 {
                            tracing::info!(dropped = r.dropped, "stale due retries dropped");
                        }
                    }
                    Err(e) => {
                        // Log a failing store once, not at every tick.
                        if !failing.swap(true, Relaxed) {
                            tracing::warn!(error = %e, "retry scheduler step failed; retrying");
                        }
                    }
                }
                std::ops::ControlFlow::Continue(())
            }
        })
    }
}
