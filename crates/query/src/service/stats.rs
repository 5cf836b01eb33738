//! Statistics: failure statistics under the statistics gate (whose shared answers every
//! write ends), failure groups, reported attempts, counts by category, and the alert
//! thresholds in force.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::stats::{
    minute_of, summarize, AlertThresholds, FailureStats, StatsWindow,
};
use failed_tasks_domain::{
    ErrorCategory, GroupPage, GroupQuery, ListQuery, PageLimits, TaskFilter, TaskType, Timestamp,
};

use super::{FailedTaskService, QueryError};
use crate::stats_gate::StatsGate;

impl FailedTaskService {
    /// How many statistics requests are computed at once by default; the others wait
    /// (within their request deadline) for one to finish.
    pub const DEFAULT_STATS_CONCURRENCY: usize = 4;

    /// How long a statistics answer is shared with callers asking for the same window by
    /// default (a write through this service ends it at once).
    pub const DEFAULT_STATS_CACHE_TTL: Duration = Duration::from_secs(1);

    /// The same service computing at most `n` (at least 1) statistics requests at once.
    #[must_use]
    pub fn with_stats_concurrency(mut self, n: usize) -> Self {
        self.stats_gate = Arc::new(StatsGate::new(n, self.stats_gate.ttl()));
        self
    }

    /// The same service sharing a statistics answer for `ttl` with callers asking for the
    /// same window (zero: every request computes its own). A write through this service
    /// ends every shared answer at once; a write through another replica shows after `ttl`.
    #[must_use]
    pub fn with_stats_cache(mut self, ttl: Duration) -> Self {
        self.stats_gate = Arc::new(StatsGate::new(self.stats_gate.concurrency(), ttl));
        self
    }

    /// Run a write, then end the shared statistics answers (whatever its outcome: a
    /// failed write may have been applied).
    pub(super) async fn writing<T>(&self, work: impl Future<Output = T>) -> T {
        let out = work.await;
        self.stats_gate.wrote();
        out
    }

    /// One page of failure groups, last seen newest first;
    /// [`QueryError::NotSupported`] on a store without statistics.
    pub async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, QueryError> {
        let stats = self.stats_store()?;
        self.checked(stats.list_groups(query)).await
    }

    /// The same service evaluating alerts with `thresholds`.
    #[must_use]
    pub fn with_alert_thresholds(mut self, thresholds: AlertThresholds) -> Self {
        self.alert_thresholds = Arc::new(thresholds);
        self
    }

    /// The alert thresholds in force.
    pub fn alert_thresholds(&self) -> &AlertThresholds {
        &self.alert_thresholds
    }

    /// Failure statistics of the `minutes` whole minutes up to `now`, with the alert rules
    /// evaluated: read from the store's per-minute counters and per-bucket breakdowns, so the
    /// cost depends on the window, neither on how many failures are stored nor on how many
    /// distinct values they have. At most [`with_stats_concurrency`](Self::with_stats_concurrency)
    /// are computed at once; the others wait for a turn within the request deadline (then
    /// [`QueryError::Unavailable`], kind `stats_busy`). [`QueryError::NotSupported`] on a
    /// store without statistics.
    pub async fn failure_stats(
        &self,
        minutes: i64,
        now: Timestamp,
        top_n: usize,
    ) -> Result<FailureStats, QueryError> {
        let window = StatsWindow::ending_at(now, minutes)?;
        let store = self.stats_store()?;
        if let Some(shared) = self.stats_gate.cached(window, top_n) {
            return Ok(shared);
        }
        let started = tokio::time::Instant::now();
        let request = self.deadlines.request;
        let busy = || QueryError::Unavailable {
            reason: format!(
                "statistics are busy: {} requests were computed for the whole {request:?} deadline",
                self.stats_gate.concurrency()
            ),
            kind: "stats_busy",
        };
        // One computation per window at a time: its other callers wait for its answer.
        let computing = self.stats_gate.computing(window, top_n);
        let _computing = match &computing {
            Some(lock) => match tokio::time::timeout(request, lock.lock()).await {
                Ok(guard) => Some(guard),
                Err(_) => return Err(busy()),
            },
            None => None,
        };
        if let Some(shared) = self.stats_gate.cached(window, top_n) {
            return Ok(shared);
        }
        let left = request.saturating_sub(started.elapsed());
        let Some(_turn) = self.stats_gate.turn(left).await else {
            return Err(busy());
        };
        let left = request.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(busy());
        }
        let generation = self.stats_gate.generation();
        let (from, to) = (window.from_minute(), window.to_minute());
        let (counts, tops, attempts) = self
            .checked_within(left, async move {
                let counts = store.failure_counts(from, to).await?;
                let tops = store.failure_tops(from, to).await?;
                let attempts = store.attempt_counts(from, to).await?;
                Ok((counts, tops, attempts))
            })
            .await?;
        let stats = summarize(
            window,
            &counts,
            &tops,
            &attempts,
            &self.alert_thresholds,
            top_n,
        );
        self.stats_gate.keep(top_n, generation, &stats);
        Ok(stats)
    }

    /// Report `count` attempts of `task_type` made at `at` (the failure-rate denominator);
    /// [`QueryError::NotSupported`] on a store without statistics.
    pub async fn report_attempts(
        &self,
        task_type: &TaskType,
        count: u64,
        at: Timestamp,
    ) -> Result<(), QueryError> {
        let stats = self.stats_store()?;
        self.writing(self.checked(stats.record_attempts(task_type, minute_of(at), count)))
            .await?;
        self.record_counters.add_attempts(task_type, count);
        Ok(())
    }

    /// How many failed tasks are stored in each category (five one-item pages: each store
    /// answers a filtered total from its index, O(log N) or better).
    pub async fn count_by_category(&self) -> Result<Vec<(ErrorCategory, u64)>, QueryError> {
        let limits = PageLimits::new(1, 1)?;
        let store = &self.store;
        self.checked(async move {
            let mut counts = Vec::with_capacity(ErrorCategory::ALL.len());
            for category in ErrorCategory::ALL {
                let query = ListQuery {
                    filter: TaskFilter {
                        category: Some(category),
                        ..TaskFilter::default()
                    },
                    page_size: limits.default_size(),
                    cursor: None,
                };
                counts.push((category, store.list(&query).await?.total));
            }
            Ok(counts)
        })
        .await
    }
}
