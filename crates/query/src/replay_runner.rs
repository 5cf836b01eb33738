//! The replay runner: a loop that advances the running replays.
//!
//! Every [`ReplayRunnerConfig::interval`] it runs one [`ReplayRunner::step`]: when a replay
//! runs, it takes (or renews) the store's replay lease, so one runner at a time works across
//! replicas (an idle step reads the running replays and writes nothing), then
//! advances each running replay ([`FailedTaskService::advance_replay`]) by what its pace
//! allows since its last step (unpaced: [`ReplayRunnerConfig::batch`] tasks). Progress is
//! saved in the store after each page, so another replica (or this one after a restart)
//! goes on where it stopped.
//!
//! Tests drive [`ReplayRunner::step`] directly with explicit times rather than waiting for
//! the loop.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{ReplayState, Timestamp};

use crate::scheduler::now;
use crate::{FailedTaskService, QueryError};

/// How the runner runs. `Default` is the documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRunnerConfig {
    /// Time between steps (default 200 ms).
    pub interval: Duration,
    /// Most tasks one replay visits per step (default 1,000): an unpaced replay's batch,
    /// and the cap of a paced one's allowance.
    pub batch: u64,
    /// Most running replays advanced per step (default 16; the others wait their turn).
    pub max_running: usize,
    /// How long the lease lasts without a renewal (default 10 s): a runner that stops
    /// renewing hands over after this.
    pub lease: Duration,
}

impl Default for ReplayRunnerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            batch: 1_000,
            max_running: 16,
            lease: Duration::from_secs(10),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayStepReport {
    /// Another runner holds the lease: nothing was done.
    pub locked_out: bool,
    /// Matching tasks visited.
    pub visited: u64,
    /// Retries made due.
    pub scheduled: u64,
    /// Replays that ended in this step (done or failed).
    pub ended: u64,
}

/// The replay runner of one process.
#[derive(Debug)]
pub struct ReplayRunner {
    service: FailedTaskService,
    config: ReplayRunnerConfig,
    holder: String,
}

/// The running loop; dropping it stops it (between two steps).
pub type ReplayRunnerHandle = failed_tasks_store::Background;

impl ReplayRunner {
    /// A runner of `service`'s replays, holding the lease under a name of its own.
    pub fn new(service: FailedTaskService, config: ReplayRunnerConfig) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            service,
            config,
            holder: format!("{}-{nanos:x}", std::process::id()),
        }
    }

    /// The name it holds the lease under.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One step as of `now`: take the lease, then advance each running replay.
    pub async fn step(&self, now: Timestamp) -> Result<ReplayStepReport, QueryError> {
        let mut report = ReplayStepReport::default();
        // Idle (no replay runs): one read, no lease taken, nothing written.
        let running = self
            .service
            .running_replays(self.config.max_running)
            .await?;
        if running.is_empty() {
            return Ok(report);
        }
        if !self
            .service
            .replay_lease(&self.holder, self.config.lease)
            .await?
        {
            report.locked_out = true;
            return Ok(report);
        }
        let mut failed = None;
        for id in running {
            match self
                .service
                .advance_replay(&self.holder, &id, now, self.config.batch)
                .await
            {
                Ok(a) => {
                    report.visited += a.visited;
                    report.scheduled += a.scheduled;
                    if a.lease_lost {
                        report.locked_out = true;
                        tracing::warn!(replay = %id, "the replay runner lost its lease; another goes on");
                        break;
                    }
                    if matches!(a.ended, Some(ReplayState::Done | ReplayState::Failed)) {
                        report.ended += 1;
                        tracing::info!(replay = %id, state = ?a.ended, "replay ended");
                    }
                }
                // One replay's failure does not hold the others up.
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if report.visited == 0 => Err(e),
            _ => Ok(report),
        }
    }

    /// Give the lease up (at shutdown, so that another replica takes over at once).
    pub async fn release(&self) -> Result<(), QueryError> {
        self.service.replay_release(&self.holder).await
    }

    /// Run [`step`](Self::step) every `interval` (with the current time) until the handle
    /// is dropped or stopped. Errors are logged once; the next tick tries again.
    pub fn spawn(self) -> ReplayRunnerHandle {
        let runner = Arc::new(self);
        let failing = Arc::new(AtomicBool::new(false));
        ReplayRunnerHandle::every(runner.config.interval, move || {
            let (runner, failing) = (runner.clone(), failing.clone());
            async move {
                match runner.step(now()).await {
                    Ok(_) => {
                        if failing.swap(false, Relaxed) {
                            tracing::info!("replay runner recovered");
                        }
                    }
                    Err(e) => {
                        if !failing.swap(true, Relaxed) {
                            tracing::warn!(error = %e, "replay runner step failed; retrying");
                        }
                    }
                }
                std::ops::ControlFlow::Continue(())
            }
        })
    }
}
