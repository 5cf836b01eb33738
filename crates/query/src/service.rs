//! The failed-task service: deadlines around a [`StatusStore`] and error mapping.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::stats::{
    minute_of, summarize, AlertThresholds, FailureStats, StatsWindow,
};
use failed_tasks_domain::{
    ErrorCategory, FailedTask, GroupPage, GroupQuery, ListQuery, PageLimits, PageSize, RetryPolicy,
    TaskFilter, TaskId, TaskType, Timestamp, ValidationError,
};
use failed_tasks_store::{
    FailedTaskPage, RecordOutcome, StatusStore, StoreCondition, StoreError, StoredJsonPage,
};

/// How long the service waits for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The connection check (the source's `checkRedisConnection`): 5 s by default.
    pub health_check: Duration,
    /// The whole request, connection check included: 10 s by default.
    pub request: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            health_check: Duration::from_secs(5),
            request: Duration::from_secs(10),
        }
    }
}

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

/// Why a use case could not answer, in the contract's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The store is unreachable or did not answer within a deadline. HTTP answers 503 with
    /// the source's message; `reason` is for logs.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What happened, for the log.
        reason: String,
        /// A short stable label for metrics: a [`StoreError::kind`] or `deadline`.
        kind: &'static str,
    },
    /// The store answered but the operation failed. HTTP answers 500 with a fixed message;
    /// `detail` is for logs only and must never reach a client.
    #[error("internal error: {detail}")]
    Internal {
        /// What happened, for the log.
        detail: String,
        /// A short stable label for metrics: a [`StoreError::kind`].
        kind: &'static str,
    },
    /// The store is full and refused the write (Redis `maxmemory` under `noeviction`);
    /// nothing of it was stored. HTTP answers 507 with a fixed message; `detail` is for logs.
    #[error("store full: {detail}")]
    StoreFull {
        /// What happened, for the log.
        detail: String,
        /// A short stable label for metrics: [`StoreError::kind`] (`full`).
        kind: &'static str,
    },
    /// The request itself is invalid; the message names the parameter.
    #[error("bad request: {0}")]
    BadRequest(#[from] ValidationError),
    /// The task asked for is not stored.
    #[error("not found")]
    NotFound,
}

impl QueryError {
    fn from_store(err: StoreError) -> Self {
        if let StoreError::Full(_) = err {
            return QueryError::StoreFull {
                detail: err.to_string(),
                kind: err.kind(),
            };
        }
        if err.is_unavailable() {
            QueryError::Unavailable {
                reason: err.to_string(),
                kind: err.kind(),
            }
        } else {
            QueryError::Internal {
                detail: err.to_string(),
                kind: err.kind(),
            }
        }
    }
}

/// What a bulk removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRemoval {
    /// How many tasks were removed.
    pub removed: u64,
    /// Whether every matching task is gone; `false` when the request deadline stopped it
    /// early (call again to continue).
    pub complete: bool,
}

/// The use cases over one [`StatusStore`]. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct FailedTaskService {
    store: Arc<dyn StatusStore>,
    deadlines: Deadlines,
    alert_thresholds: Arc<AlertThresholds>,
    retry_policy: Arc<RetryPolicy>,
    health: Arc<RecentHealth>,
    fail_times: FailTimeLimits,
}

/// When the store last answered, so a request right after a good answer can skip its own
/// connection check: the store was verified within [`RecentHealth::reuse`] and, if it went
/// away since, the operation itself fails (fail-fast) and answers 503 just the same. Saves
/// one round trip per request under load; `/readyz` always checks for real.
#[derive(Debug)]
struct RecentHealth {
    epoch: tokio::time::Instant,
    /// Milliseconds after `epoch` of the last good answer, plus one; 0 = none yet or the last
    /// call found the store unavailable.
    last_ok: std::sync::atomic::AtomicU64,
    reuse: Duration,
}

impl RecentHealth {
    fn new(reuse: Duration) -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            last_ok: std::sync::atomic::AtomicU64::new(0),
            reuse,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn ok(&self) {
        self.last_ok
            .store(self.now_ms() + 1, std::sync::atomic::Ordering::Relaxed);
    }

    fn lost(&self) {
        self.last_ok.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn fresh(&self) -> bool {
        let last = self.last_ok.load(std::sync::atomic::Ordering::Relaxed);
        last != 0 && self.now_ms() + 1 - last < self.reuse.as_millis() as u64
    }
}

impl std::fmt::Debug for FailedTaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedTaskService")
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

impl FailedTaskService {
    /// A service over `store` with the given deadlines.
    pub fn new(store: Arc<dyn StatusStore>, deadlines: Deadlines) -> Self {
        Self {
            store,
            deadlines,
            alert_thresholds: Arc::new(AlertThresholds::default()),
            retry_policy: Arc::new(RetryPolicy::default()),
            health: Arc::new(RecentHealth::new(Self::DEFAULT_CHECK_REUSE)),
            fail_times: FailTimeLimits::default(),
        }
    }

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
    fn check_fail_time(
        &self,
        task: &FailedTask,
        field: impl Fn() -> String,
    ) -> Result<(), QueryError> {
        let latest = now_ms().saturating_add(millis(self.fail_times.clock_skew));
        if task.fail_time().unix_millis() > latest {
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

    /// One page of failure groups, last seen newest first.
    pub async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, QueryError> {
        self.checked(self.store.list_groups(query)).await
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

    /// What the store's adapter last observed of its link (the cause of a problem, its
    /// eviction policy); no I/O. For `/readyz` and the metrics.
    pub fn store_condition(&self) -> StoreCondition {
        self.store.condition()
    }

    /// The store, for wiring that needs it directly (demo data, background jobs).
    pub fn store(&self) -> &Arc<dyn StatusStore> {
        &self.store
    }

    /// The deadlines in force.
    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
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
    async fn ensure_connection(&self) -> Result<(), QueryError> {
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

    /// Run `work` after a connection check, the whole under the request deadline.
    async fn checked<T, F>(&self, work: F) -> Result<T, QueryError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let run = async {
            self.ensure_connection().await?;
            match work.await {
                Ok(v) => {
                    self.health.ok();
                    Ok(v)
                }
                Err(e) => {
                    if e.is_unavailable() {
                        self.health.lost();
                    }
                    Err(QueryError::from_store(e))
                }
            }
        };
        match tokio::time::timeout(self.deadlines.request, run).await {
            Ok(result) => result,
            Err(_) => {
                self.health.lost();
                Err(QueryError::Unavailable {
                    reason: format!("request exceeded its {:?} deadline", self.deadlines.request),
                    kind: "deadline",
                })
            }
        }
    }

    /// One page of failed tasks (the contract's `GET /tasks/failed`).
    pub async fn list_failed(&self, query: &ListQuery) -> Result<FailedTaskPage, QueryError> {
        query.filter.validate()?;
        self.checked(self.store.list(query)).await
    }

    /// The same page as [`list_failed`](Self::list_failed) as stored wire JSON, when the
    /// store keeps it (`None`: use `list_failed`).
    pub async fn list_failed_stored_json(
        &self,
        query: &ListQuery,
    ) -> Result<Option<StoredJsonPage>, QueryError> {
        query.filter.validate()?;
        self.checked(self.store.list_stored_json(query)).await
    }

    /// One failed task by id; [`QueryError::NotFound`] when absent.
    pub async fn get_failed(&self, task_id: &TaskId) -> Result<FailedTask, QueryError> {
        self.checked(self.store.get(task_id))
            .await?
            .ok_or(QueryError::NotFound)
    }

    /// Record a failure: an upsert by task id. A `FailTime` beyond the allowed clock skew
    /// is refused ([`QueryError::BadRequest`] naming `FailTime`).
    pub async fn record_failure(&self, task: &FailedTask) -> Result<RecordOutcome, QueryError> {
        self.check_fail_time(task, || "FailTime".to_owned())?;
        self.checked(self.store.record(task)).await
    }

    /// Record several failures at once (each an upsert), all or nothing. Every task is
    /// checked first: a `FailTime` beyond the allowed clock skew refuses the whole batch
    /// ([`QueryError::BadRequest`] naming `[i].FailTime`, or `FailTime` for a single task).
    pub async fn record_failures(
        &self,
        tasks: &[FailedTask],
    ) -> Result<Vec<RecordOutcome>, QueryError> {
        for (i, task) in tasks.iter().enumerate() {
            self.check_fail_time(task, || {
                if tasks.len() == 1 {
                    "FailTime".to_owned()
                } else {
                    format!("[{i}].FailTime")
                }
            })?;
        }
        self.checked(self.store.record_batch(tasks)).await
    }

    /// Remove every failed task matching `filter`, a page at a time, until none is left or
    /// the request deadline is near. Returns how many were removed and whether the removal
    /// is complete (a huge removal continues with the next request).
    ///
    /// Each removal is counted as soon as the store confirms it, so a deadline (or a store
    /// failure after some removals) that cuts the work short loses no count; only the
    /// removal in flight at that moment is unknown (it may have happened, and is not counted).
    pub async fn remove_matching(&self, filter: &TaskFilter) -> Result<BulkRemoval, QueryError> {
        filter.validate()?;
        self.ensure_connection().await?;
        let deadline = tokio::time::Instant::now() + self.deadlines.request;
        let page_size = PageSize::new(500, PageLimits::new(500, 500)?)?;
        let mut removed = 0u64;
        let work = async {
            let mut cursor = None;
            loop {
                let query = ListQuery {
                    filter: filter.clone(),
                    page_size,
                    cursor: cursor.take(),
                };
                let page = self.store.list(&query).await?;
                for task in &page.tasks {
                    if self.store.remove(task.task_id()).await? {
                        removed += 1;
                    }
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return Ok::<_, StoreError>(()),
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline, work).await;
        match outcome {
            Ok(Ok(())) => Ok(BulkRemoval {
                removed,
                complete: true,
            }),
            // Some were removed before the store failed: say how many (the next call
            // continues, or reports the failure if it persists).
            Ok(Err(e)) if removed > 0 => {
                tracing::warn!(removed, error = %e, "bulk removal stopped by a store error");
                Ok(BulkRemoval {
                    removed,
                    complete: false,
                })
            }
            Ok(Err(e)) => Err(QueryError::from_store(e)),
            Err(_) => Ok(BulkRemoval {
                removed,
                complete: false,
            }),
        }
    }

    /// Failure statistics of the `minutes` whole minutes up to `now`, with the alert rules
    /// evaluated: read from the store's per-minute counters, so the cost depends on the
    /// window, not on how many failures are stored.
    pub async fn failure_stats(
        &self,
        minutes: i64,
        now: Timestamp,
        top_n: usize,
    ) -> Result<FailureStats, QueryError> {
        let window = StatsWindow::ending_at(now, minutes)?;
        let store = &self.store;
        let (counts, attempts) = self
            .checked(async move {
                let counts = store
                    .failure_counts(window.from_minute(), window.to_minute())
                    .await?;
                let attempts = store
                    .attempt_counts(window.from_minute(), window.to_minute())
                    .await?;
                Ok((counts, attempts))
            })
            .await?;
        Ok(summarize(
            window,
            &counts,
            &attempts,
            &self.alert_thresholds,
            top_n,
        ))
    }

    /// Report `count` attempts of `task_type` made at `at` (the failure-rate denominator).
    pub async fn report_attempts(
        &self,
        task_type: &TaskType,
        count: u64,
        at: Timestamp,
    ) -> Result<(), QueryError> {
        self.checked(self.store.record_attempts(task_type, minute_of(at), count))
            .await
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

    /// Remove a failed task; [`QueryError::NotFound`] when absent.
    pub async fn remove_failed(&self, task_id: &TaskId) -> Result<(), QueryError> {
        if self.checked(self.store.remove(task_id)).await? {
            Ok(())
        } else {
            Err(QueryError::NotFound)
        }
    }
}
