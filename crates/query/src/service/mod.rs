//! The failed-task service: deadlines around a store's capabilities ([`Stores`]) and error
//! mapping.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use failed_tasks_domain::stats::{
    minute_of, summarize, AlertThresholds, FailureStats, StatsWindow,
};
use failed_tasks_domain::{
    ErrorCategory, FailedTask, GroupPage, GroupQuery, JitterRng, ListQuery, PageLimits, PageSize,
    RetryPlan, RetryPolicy, TaskFilter, TaskId, TaskType, Timestamp, ValidationError,
};
use failed_tasks_store::{
    CancelRetry, Capability, DeliverReport, FailedTaskPage, RecordOutcome, Resolve, RetryDetails,
    RetryGauges, RetryNow, RetryStore, StatsStore, StatusStore, StoreCondition, StoreError,
    StoredPage, Stores,
};

use crate::stats_gate::StatsGate;

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
    /// The store in use lacks the capability this needs (statistics or retries on the
    /// read-only compat source). HTTP answers 501 with this error's message, which names the
    /// store and the capability; nothing was read or written.
    #[error("the {store} store does not support {capability}")]
    NotSupported {
        /// What the store would need.
        capability: Capability,
        /// The store's name ([`Stores::name`]).
        store: &'static str,
    },
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

/// How a walk over every match of a filter ended.
#[derive(Debug, PartialEq, Eq)]
enum Walked {
    /// Every match was visited.
    Complete,
    /// The request deadline stopped it.
    Deadline,
    /// The store failed.
    Failed(StoreError),
}

/// What a retry of every match of a filter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkRetry {
    /// Tasks whose next retry is now due (scheduled later before, or not at all).
    pub retried: u64,
    /// Tasks whose next retry was already handed to workers: left alone.
    pub already_delivered: u64,
    /// Whether every match was visited; `false` when the request deadline stopped it early
    /// (call again: tasks already retried answer `already_delivered` or are retried again
    /// only while their retry has not been delivered, so nothing is delivered twice).
    pub complete: bool,
}

/// Counters of the retry use cases since the process started, for the metrics.
#[derive(Debug, Default)]
pub struct RetryCounters {
    /// Failures recorded with a scheduled retry (by the policy).
    pub scheduled_by_policy: AtomicU64,
    /// Retries an operator made due now.
    pub scheduled_by_operator: AtomicU64,
    /// Failures recorded as final.
    pub finals: AtomicU64,
    /// Due retries this process's scheduler moved to the workers' queue.
    pub delivered: AtomicU64,
    /// Tasks resolved through this process.
    pub recovered: AtomicU64,
    /// Scheduled retries cancelled through this process.
    pub cancelled: AtomicU64,
}

impl RetryCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Failures recorded and task attempts reported through this process (by any caller: the
/// HTTP adapter, or a Rust embedder calling the use cases directly), for the metrics: read
/// at scrape time like [`RetryCounters`].
///
/// The label values come from clients (error codes, task types), so their number is
/// bounded: past [`MAX_LABEL_VALUES`](Self::MAX_LABEL_VALUES) distinct values of a label,
/// new ones are counted as [`OTHER`](Self::OTHER). Categories are the five of the domain.
#[derive(Debug, Default)]
pub struct RecordCounters {
    state: Mutex<RecordState>,
}

#[derive(Debug, Default)]
struct RecordState {
    recorded: HashMap<RecordedLabels, u64>,
    attempts: HashMap<String, u64>,
    error_codes: HashSet<String>,
    task_types: HashSet<String>,
}

/// The labels of one series of [`RecordCounters::recorded`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordedLabels {
    /// The failure's category.
    pub category: ErrorCategory,
    /// Its error code, or [`RecordCounters::OTHER`] past the cap.
    pub error_code: String,
    /// Its task type, or [`RecordCounters::OTHER`] past the cap.
    pub task_type: String,
}

/// `value` when it is already a label value of `seen` or there is room for it; `other`
/// past the cap.
fn bounded(seen: &mut HashSet<String>, value: &str) -> String {
    if seen.contains(value) {
        return value.to_owned();
    }
    if seen.len() < RecordCounters::MAX_LABEL_VALUES {
        seen.insert(value.to_owned());
        return value.to_owned();
    }
    RecordCounters::OTHER.to_owned()
}

/// The entries of `map`, in key order.
fn sorted<K: Clone + Ord>(map: &HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut out: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    out.sort();
    out
}

impl RecordCounters {
    /// Most distinct values of a client-supplied label (error code, task type).
    pub const MAX_LABEL_VALUES: usize = 200;
    /// The label value that stands for every value past the cap.
    pub const OTHER: &'static str = "other";

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count `tasks` as recorded.
    fn add_recorded(&self, tasks: &[FailedTask]) {
        let mut state = self.lock();
        let state = &mut *state;
        for task in tasks {
            let labels = RecordedLabels {
                category: task.error_category(),
                error_code: bounded(&mut state.error_codes, task.error_code().as_str()),
                task_type: bounded(&mut state.task_types, task.task_type().as_str()),
            };
            *state.recorded.entry(labels).or_default() += 1;
        }
    }

    /// Count `n` attempts of `task_type`.
    fn add_attempts(&self, task_type: &TaskType, n: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        let task_type = bounded(&mut state.task_types, task_type.as_str());
        let count = state.attempts.entry(task_type).or_default();
        *count = count.saturating_add(n);
    }

    /// Failures recorded, by category, error code and task type, in label order.
    pub fn recorded(&self) -> Vec<(RecordedLabels, u64)> {
        sorted(&self.lock().recorded)
    }

    /// Task attempts reported, by task type, in label order.
    pub fn attempts(&self) -> Vec<(String, u64)> {
        sorted(&self.lock().attempts)
    }
}

/// The use cases over one store, through the capabilities it has ([`Stores`]): what needs a
/// capability the store lacks answers [`QueryError::NotSupported`]. Cheap to clone; share
/// one per process.
#[derive(Clone)]
pub struct FailedTaskService {
    store: Arc<dyn StatusStore>,
    stores: Stores,
    deadlines: Deadlines,
    alert_thresholds: Arc<AlertThresholds>,
    retry_policy: Arc<RetryPolicy>,
    jitter: Arc<Mutex<JitterRng>>,
    retry_counters: Arc<RetryCounters>,
    record_counters: Arc<RecordCounters>,
    health: Arc<RecentHealth>,
    fail_times: FailTimeLimits,
    /// How many statistics requests are computed at once, and the answers they share
    /// (`stats_gate`): a crowd of statistics callers cannot starve listings of the store or
    /// the process of memory.
    stats_gate: Arc<StatsGate>,
}

/// A jitter seed that differs between processes and starts.
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
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
            .field("stores", &self.stores)
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

impl FailedTaskService {
    /// A service over `stores` (one store through its capabilities, as its adapter builds
    /// it, e.g. `Stores::from(MemoryStore::new())`) with the given deadlines. When the store
    /// schedules retries, recording schedules each failure's retry by the policy in the same
    /// atomic write.
    pub fn new(stores: Stores, deadlines: Deadlines) -> Self {
        Self {
            store: stores.tasks.clone(),
            stores,
            deadlines,
            alert_thresholds: Arc::new(AlertThresholds::default()),
            retry_policy: Arc::new(RetryPolicy::default()),
            jitter: Arc::new(Mutex::new(JitterRng::new(jitter_seed()))),
            retry_counters: Arc::new(RetryCounters::default()),
            record_counters: Arc::new(RecordCounters::default()),
            health: Arc::new(RecentHealth::new(Self::DEFAULT_CHECK_REUSE)),
            fail_times: FailTimeLimits::default(),
            stats_gate: Arc::new(StatsGate::new(
                Self::DEFAULT_STATS_CONCURRENCY,
                Self::DEFAULT_STATS_CACHE_TTL,
            )),
        }
    }

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
    async fn writing<T>(&self, work: impl Future<Output = T>) -> T {
        let out = work.await;
        self.stats_gate.wrote();
        out
    }

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

    /// The store through its capabilities.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    fn not_supported(&self, capability: Capability) -> QueryError {
        QueryError::NotSupported {
            capability,
            store: self.stores.name,
        }
    }

    /// The store's tasks, for a write; [`QueryError::NotSupported`] on a read-only one.
    fn writable_store(&self) -> Result<&Arc<dyn StatusStore>, QueryError> {
        if self.stores.writable {
            Ok(&self.store)
        } else {
            Err(self.not_supported(Capability::Writes))
        }
    }

    fn stats_store(&self) -> Result<&Arc<dyn StatsStore>, QueryError> {
        self.stores
            .stats
            .as_ref()
            .ok_or_else(|| self.not_supported(Capability::Statistics))
    }

    /// The retry counters of this process (shared by clones of this service).
    pub fn retry_counters(&self) -> &Arc<RetryCounters> {
        &self.retry_counters
    }

    /// The recording counters of this process (shared by clones of this service).
    pub fn record_counters(&self) -> &Arc<RecordCounters> {
        &self.record_counters
    }

    fn retry_store(&self) -> Result<&Arc<dyn RetryStore>, QueryError> {
        self.stores
            .retries
            .as_ref()
            .ok_or_else(|| self.not_supported(Capability::Retries))
    }

    /// The plan of each task by the policy in force, with fresh jitter.
    fn plans(&self, tasks: &[FailedTask]) -> Vec<(FailedTask, RetryPlan)> {
        let mut rng = self.jitter.lock().unwrap_or_else(PoisonError::into_inner);
        tasks
            .iter()
            .map(|t| {
                let plan = RetryPlan::of(&self.retry_policy, t, rng.next_unit());
                (t.clone(), plan)
            })
            .collect()
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

    /// What the store's adapter last observed of its link (the cause of a problem, its
    /// eviction policy); no I/O. For `/readyz` and the metrics.
    pub fn store_condition(&self) -> StoreCondition {
        self.store.condition()
    }

    /// The store's tasks, for wiring that needs them directly (demo data, background jobs).
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
        self.checked_within(self.deadlines.request, work).await
    }

    /// [`checked`](Self::checked) with `deadline` instead of the request deadline (what is
    /// left of it after a wait).
    async fn checked_within<T, F>(&self, deadline: Duration, work: F) -> Result<T, QueryError>
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
        match tokio::time::timeout(deadline, run).await {
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

    /// The filter's checks, and that the store can answer its `retry` condition.
    fn check_filter(&self, filter: &TaskFilter) -> Result<(), QueryError> {
        filter.validate()?;
        if filter.retry.is_some() {
            self.retry_store()?;
        }
        Ok(())
    }

    /// One page of failed tasks (the contract's `GET /tasks/failed`).
    pub async fn list_failed(&self, query: &ListQuery) -> Result<FailedTaskPage, QueryError> {
        self.check_filter(&query.filter)?;
        self.checked(self.store.list(query)).await
    }

    /// The same page as [`list_failed`](Self::list_failed) as stored records, when the
    /// store keeps it; `None` without a call when it does not
    /// ([`Capability::StoredRecords`] is a fast path, never required): use `list_failed`.
    pub async fn list_failed_stored(
        &self,
        query: &ListQuery,
    ) -> Result<Option<StoredPage>, QueryError> {
        self.check_filter(&query.filter)?;
        let Some(json) = &self.stores.stored else {
            return Ok(None);
        };
        self.checked(json.list_stored(query)).await.map(Some)
    }

    /// One failed task by id; [`QueryError::NotFound`] when absent.
    pub async fn get_failed(&self, task_id: &TaskId) -> Result<FailedTask, QueryError> {
        self.checked(self.store.get(task_id))
            .await?
            .ok_or(QueryError::NotFound)
    }

    /// One failed task by id with its retry status and last attempts (empty details when
    /// the store schedules no retries); [`QueryError::NotFound`] when absent.
    pub async fn get_failed_with_retries(
        &self,
        task_id: &TaskId,
    ) -> Result<(FailedTask, RetryDetails), QueryError> {
        let store = &self.store;
        let retries = self.stores.retries.as_ref();
        let (task, details) = self
            .checked(async move {
                let task = store.get(task_id).await?;
                let details = match (&task, retries) {
                    (Some(_), Some(r)) => r.retry_details(task_id).await?,
                    _ => None,
                };
                Ok((task, details))
            })
            .await?;
        Ok((
            task.ok_or(QueryError::NotFound)?,
            details.unwrap_or_default(),
        ))
    }

    /// Record a failure: an upsert by task id, scheduling its retry when the store can. A
    /// `FailTime` beyond the allowed clock skew is refused ([`QueryError::BadRequest`]
    /// naming `FailTime`).
    pub async fn record_failure(&self, task: &FailedTask) -> Result<RecordOutcome, QueryError> {
        let mut outcomes = self.record_failures(std::slice::from_ref(task)).await?;
        outcomes.pop().ok_or_else(|| QueryError::Internal {
            detail: "the store answered no outcome for one task".to_owned(),
            kind: "internal",
        })
    }

    /// Record several failures at once (each an upsert), all or nothing. Every task is
    /// checked first: a `FailTime` beyond the allowed clock skew refuses the whole batch
    /// ([`QueryError::BadRequest`] naming `[i].FailTime`, or `FailTime` for a single task).
    /// A store that schedules retries schedules each failure's retry by the policy (or makes
    /// it final) in the same atomic write. A read-only store answers
    /// [`QueryError::NotSupported`].
    pub async fn record_failures(
        &self,
        tasks: &[FailedTask],
    ) -> Result<Vec<RecordOutcome>, QueryError> {
        let store = self.writable_store()?;
        for (i, task) in tasks.iter().enumerate() {
            self.check_fail_time(task, || {
                if tasks.len() == 1 {
                    "FailTime".to_owned()
                } else {
                    format!("[{i}].FailTime")
                }
            })?;
        }
        let Some(retries) = &self.stores.retries else {
            let outcomes = self
                .writing(self.checked(store.record_batch(tasks)))
                .await?;
            self.record_counters.add_recorded(tasks);
            return Ok(outcomes);
        };
        let planned = self.plans(tasks);
        let outcomes = self
            .writing(self.checked(retries.record_planned(&planned)))
            .await?;
        self.record_counters.add_recorded(tasks);
        let scheduled = planned
            .iter()
            .filter(|(_, p)| matches!(p, RetryPlan::Retry { .. }))
            .count() as u64;
        let c = &self.retry_counters;
        RetryCounters::add(&c.scheduled_by_policy, scheduled);
        RetryCounters::add(&c.finals, planned.len() as u64 - scheduled);
        Ok(outcomes)
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

    /// A task's retry succeeded: it leaves the failed tasks and counts as recovered.
    pub async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, QueryError> {
        let retries = self.retry_store()?;
        let outcome = self
            .writing(self.checked(retries.resolve(task_id, at)))
            .await?;
        if outcome == Resolve::Resolved {
            RetryCounters::add(&self.retry_counters.recovered, 1);
        }
        Ok(outcome)
    }

    /// Make the next retry of every task matching `filter` due now, a page at a time, until
    /// none is left or the request deadline is near (like [`remove_matching`](Self::remove_matching)).
    /// Each retry is counted as soon as the store confirms it, so a deadline or a store
    /// failure part-way loses no count.
    pub async fn retry_matching(
        &self,
        filter: &TaskFilter,
        now: Timestamp,
    ) -> Result<BulkRetry, QueryError> {
        self.check_filter(filter)?;
        let retries = self.retry_store()?;
        let (retried, delivered) = (AtomicU64::new(0), AtomicU64::new(0));
        let counters = &self.retry_counters;
        let walked = self
            .writing(self.walk_matching(filter, |id| {
                let (retried, delivered) = (&retried, &delivered);
                async move {
                    match retries.retry_now(&id, now).await? {
                        RetryNow::Scheduled { .. } => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            RetryCounters::add(&counters.scheduled_by_operator, 1);
                        }
                        RetryNow::AlreadyDelivered { .. } => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        // Resolved or removed since the page was read.
                        RetryNow::Resolved | RetryNow::NotFound => {}
                    }
                    Ok(())
                }
            }))
            .await?;
        let done = BulkRetry {
            retried: retried.into_inner(),
            already_delivered: delivered.into_inner(),
            complete: walked == Walked::Complete,
        };
        match walked {
            Walked::Failed(e) if done.retried + done.already_delivered == 0 => {
                Err(QueryError::from_store(e))
            }
            Walked::Failed(e) => {
                tracing::warn!(retried = done.retried, error = %e, "bulk retry stopped by a store error");
                Ok(done)
            }
            Walked::Complete | Walked::Deadline => Ok(done),
        }
    }

    /// Call `visit` with the id of every task matching `filter`, a page of 500 at a time,
    /// until none is left, the request deadline passes or the store fails (the bulk removal
    /// and the bulk retry).
    async fn walk_matching<F, Fut>(
        &self,
        filter: &TaskFilter,
        mut visit: F,
    ) -> Result<Walked, QueryError>
    where
        F: FnMut(TaskId) -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        self.ensure_connection().await?;
        let deadline = tokio::time::Instant::now() + self.deadlines.request;
        let page_size = PageSize::new(500, PageLimits::new(500, 500)?)?;
        let work = async {
            let mut cursor = None;
            loop {
                let query = ListQuery {
                    filter: filter.clone(),
                    page_size,
                    cursor: cursor.take(),
                };
                let page = self.store.list(&query).await?;
                for task in page.tasks {
                    visit(task.task_id().clone()).await?;
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return Ok::<_, StoreError>(()),
                }
            }
        };
        Ok(match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(())) => Walked::Complete,
            Ok(Err(e)) => Walked::Failed(e),
            Err(_) => Walked::Deadline,
        })
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

    /// Remove every failed task matching `filter`, a page at a time, until none is left or
    /// the request deadline is near. Returns how many were removed and whether the removal
    /// is complete (a huge removal continues with the next request).
    ///
    /// Each removal is counted as soon as the store confirms it, so a deadline (or a store
    /// failure after some removals) that cuts the work short loses no count; only the
    /// removal in flight at that moment is unknown (it may have happened, and is not counted).
    /// A read-only store answers [`QueryError::NotSupported`].
    pub async fn remove_matching(&self, filter: &TaskFilter) -> Result<BulkRemoval, QueryError> {
        self.check_filter(filter)?;
        let store = self.writable_store()?;
        let removed = AtomicU64::new(0);
        let walked = self
            .writing(self.walk_matching(filter, |id| {
                let removed = &removed;
                async move {
                    if store.remove(&id).await? {
                        removed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
            }))
            .await?;
        let removed = removed.into_inner();
        match walked {
            Walked::Complete => Ok(BulkRemoval {
                removed,
                complete: true,
            }),
            // Some were removed before the store failed: say how many (the next call
            // continues, or reports the failure if it persists).
            Walked::Failed(e) if removed > 0 => {
                tracing::warn!(removed, error = %e, "bulk removal stopped by a store error");
                Ok(BulkRemoval {
                    removed,
                    complete: false,
                })
            }
            Walked::Failed(e) => Err(QueryError::from_store(e)),
            Walked::Deadline => Ok(BulkRemoval {
                removed,
                complete: false,
            }),
        }
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

    /// Remove a failed task; [`QueryError::NotFound`] when absent, [`QueryError::NotSupported`]
    /// on a read-only store.
    pub async fn remove_failed(&self, task_id: &TaskId) -> Result<(), QueryError> {
        let store = self.writable_store()?;
        if self.writing(self.checked(store.remove(task_id))).await? {
            Ok(())
        } else {
            Err(QueryError::NotFound)
        }
    }
}
