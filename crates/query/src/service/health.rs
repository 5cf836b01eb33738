//! Health reuse: the connection check before an operation, skipped while a recent good
//! answer from the store stands in for it; the real check `/readyz` makes.

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_store::StoreCondition;

use super::{FailedTaskService, QueryError};

/// When the store last answered, so a request right after a good answer can skip its own
/// connection check: the store was verified within [`RecentHealth::reuse`] and, if it went
/// away since, the operation itself fails (fail-fast) and answers 503 just the same. Saves
/// one round trip per request under load; `/readyz` always checks for real.
#[derive(Debug)]
pub(super) struct RecentHealth {
    epoch: tokio::time::Instant,
    /// Milliseconds after `epoch` of the last good answer, plus one; 0 = none yet or the last
    /// call found the store unavailable.
    last_ok: std::sync::atomic::AtomicU64,
    reuse: Duration,
}

impl RecentHealth {
    pub(super) fn new(reuse: Duration) -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            last_ok: std::sync::atomic::AtomicU64::new(0),
            reuse,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    pub(super) fn ok(&self) {
        self.last_ok
            .store(self.now_ms() + 1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn lost(&self) {
        self.last_ok.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn fresh(&self) -> bool {
        let last = self.last_ok.load(std::sync::atomic::Ordering::Relaxed);
        last != 0 && self.now_ms() + 1 - last < self.reuse.as_millis() as u64
    }
}

impl FailedTaskService {
    /// How long a good answer from the store stands in for a connection check by default.
    pub const DEFAULT_CHECK_REUSE: Duration = Duration::from_secs(1);

    /// The same service, letting a good answer from the store stand in for the connection
    /// check of requests within `reuse` of it (zero: check before every request, as the
    /// source does).
    #[must_use]
    pub fn with_connection_check_reuse(mut self, reuse: Duration) -> Self {
        self.health = Arc::new(RecentHealth::new(reuse));
        self
    }

    /// What the store's adapter last observed of its link (the cause of a problem, its
    /// eviction policy); no I/O. For `/readyz` and the metrics.
    pub fn store_condition(&self) -> StoreCondition {
        self.store.condition()
    }

    /// Check the store answers, under the health-check deadline (always a real check, e.g.
    /// a Redis `PING`: what `/readyz` uses).
    pub async fn check_connection(&self) -> Result<(), QueryError> {
        let result = self.ping().await;
        match &result {
            Ok(()) => self.health.ok(),
            Err(_) => self.health.lost(),
        }
        result
    }

    /// The check before an operation: skipped when the store answered well just before.
    pub(super) async fn ensure_connection(&self) -> Result<(), QueryError> {
        if self.health.fresh() {
            return Ok(());
        }
        self.check_connection().await
    }

    async fn ping(&self) -> Result<(), QueryError> {
        match tokio::time::timeout(self.deadlines.health_check, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            // A failed ping means the store is not usable, whatever the failure kind.
            Ok(Err(e)) => Err(QueryError::Unavailable {
                reason: e.to_string(),
                kind: e.kind(),
            }),
            Err(_) => Err(QueryError::Unavailable {
                reason: format!(
                    "connection check exceeded its {:?} deadline",
                    self.deadlines.health_check
                ),
                kind: "deadline",
            }),
        }
    }
}
