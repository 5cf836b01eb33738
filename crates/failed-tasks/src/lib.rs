//! Record, read and retry the failed tasks of a Rust service: the one crate an embedder
//! depends on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use failed_tasks::{FailedTask, FailedTasks, NewFailedTask, Timestamp};
//!
//! let failures = FailedTasks::redis("redis://127.0.0.1:6379").await?;
//! let now = Timestamp::now();
//! let task = FailedTask::new(NewFailedTask {
//!     task_id: "task_042".into(),
//!     task_type: "embedding".into(),
//!     client_id: "client123".into(),
//!     start_time: now,
//!     fail_time: now,
//!     error_code: "TIMEOUT_ERROR".into(),
//!     ..NewFailedTask::default()
//! })?;
//! failures.record_failure(&task).await?;
//! failures.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`FailedTasks`] is the use cases ([`FailedTaskService`], which it dereferences to: record,
//! list, get, statistics, retry now, resolve, …) over one store, with the store's background
//! jobs running for it: the retention janitor (both stores), the retry scheduler, which
//! moves due retries into the workers' queue, the replay runner, which advances the running
//! replays (one replica at a time, under the store's lease), and with targets configured
//! ([`FailedTasksBuilder::notify`]) the [`Notifier`]. They stop when it is dropped, or with
//! [`FailedTasks::shutdown`], which waits for them. Workers take retry requests with
//! [`FailedTasks::retry_worker`].
//!
//! Build one with [`FailedTasks::redis`] (a URL, every other setting at its default),
//! [`FailedTasks::memory`] (in process memory: tests, demos), or [`FailedTasks::builder`]
//! for the settings (the store: [`RedisConfig`], [`MemoryConfig`] or the read-only
//! [`CompatConfig`]; [`ServiceConfig`]: deadlines, statistics, alerts, retry policy, fail
//! times; [`SchedulerConfig`]). The builder is the one composition root: the
//! `failed-tasks-server` binary builds its service with it too, so an embedder gets what the
//! server does: an evicting Redis refused ([`Error::Evicting`]), the fail-time limits (the
//! clock-skew allowance, the store's retention age), the janitor and the scheduler, and a
//! start that waits (at most the connection check's deadline) for the store's first answer.
//!
//! The modules re-export the layers underneath ([`domain`], [`store`], [`query`], and with
//! the default `redis` feature [`redis`]); the types an embedder usually needs are also at
//! the root. Unit-test code that uses the port against the mocks of `failed-tasks-store`'s
//! `mocks` feature.

#![forbid(unsafe_code)]

use std::time::Duration;

pub use failed_tasks_domain as domain;
pub use failed_tasks_notify as notify;
pub use failed_tasks_query as query;
#[cfg(feature = "redis")]
pub use failed_tasks_redis as redis;
pub use failed_tasks_store as store;

pub use failed_tasks_domain::stats::AlertThresholds;
pub use failed_tasks_domain::{
    BreakerConfig, ErrorCategory, FailedTask, ListQuery, NewFailedTask, PageLimits, RetryConfig,
    RetryPolicy, RetryRequest, TaskFilter, TaskId, Timestamp, ValidationError,
};
pub use failed_tasks_notify::{Notifier, NotifyConfig, StepReport, TargetConfig};
pub use failed_tasks_query::{
    Capability, Deadlines, FailTimeLimits, FailedTaskService, QueryError, RecordOutcome,
    ReplayRunnerConfig, Resolve, RetryNow, SchedulerConfig, Stores,
};
#[cfg(feature = "redis")]
pub use failed_tasks_redis::{CompatConfig, RedisConfig, RedisRetryQueue, RedisStore};
pub use failed_tasks_store::{
    Delivery, MemoryConfig, MemoryStore, Retention, RetryQueue, StatusStore, StoreError,
    StoreProblem,
};

use failed_tasks_query::{ReplayRunner, RetryBreaker, RetryScheduler};
use failed_tasks_store::Background;

mod backend;

use backend::{first_contact, Backend, FirstContact, WorkerSource};

/// Why [`FailedTasks`] could not be built or a worker's queue opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid (the message names it).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store refused (a bad URL or key prefix, a bad consumer name).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis evicts keys under memory pressure and eviction was not allowed
    /// ([`RedisConfig::allow_eviction`]): failed tasks would vanish silently.
    #[error(
        "refusing to start: Redis maxmemory-policy is {policy}, which evicts failed tasks \
         silently; set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in \
         redis.conf), or allow eviction to accept that (RedisConfig::allow_eviction, the \
         server's --redis-allow-eviction)"
    )]
    Evicting {
        /// Redis's `maxmemory-policy` (`unknown` when it could not be read).
        policy: String,
    },
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Config(e.to_string())
    }
}

/// How the use cases serve their callers, each part at its owner's default: the deadlines
/// of store calls, how long a good store answer stands in for the connection check, how
/// statistics are computed, the alert thresholds, the retry policy and which fail times are
/// accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Deadlines of the connection check and of a whole call. The connection check's is
    /// also the longest [`FailedTasksBuilder::start`] waits for the store's first answer.
    pub deadlines: Deadlines,
    /// A good answer from the store stands in for the connection check of calls this soon
    /// after it (zero: check before every call).
    pub connection_check_reuse: Duration,
    /// Statistics computed at once; the others wait their turn within their deadline.
    pub stats_concurrency: usize,
    /// A statistics answer is shared with callers of the same window this long (zero:
    /// never); a write through this service ends it at once.
    pub stats_cache_ttl: Duration,
    /// How far ahead of this process's clock a recorded `FailTime` may be (later ones are
    /// refused as bad input). Tasks older than the store's retention age are recorded and
    /// named in the answer ([`FailedTaskService::past_retention`]).
    pub clock_skew_allowance: Duration,
    /// When the alert rules fire.
    pub alert_thresholds: AlertThresholds,
    /// Which failures are retried, after what delay (validated by [`RetryPolicy::new`]).
    pub retry: RetryConfig,
    /// The retry circuit breaker (validated by [`BreakerConfig::validate`]); its decider
    /// runs where the retry scheduler runs.
    pub breaker: BreakerConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            deadlines: Deadlines::default(),
            connection_check_reuse: FailedTaskService::DEFAULT_CHECK_REUSE,
            stats_concurrency: FailedTaskService::DEFAULT_STATS_CONCURRENCY,
            stats_cache_ttl: FailedTaskService::DEFAULT_STATS_CACHE_TTL,
            clock_skew_allowance: FailTimeLimits::default().clock_skew,
            alert_thresholds: AlertThresholds::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// The settings of a [`FailedTasks`]; [`start`](Self::start) builds it. Everything not set
/// is at its documented default: the memory store, the default service settings and
/// scheduler.
#[derive(Debug, Clone)]
pub struct FailedTasksBuilder {
    backend: Backend,
    scheduler: Option<SchedulerConfig>,
    replay_runner: Option<ReplayRunnerConfig>,
    service: ServiceConfig,
    notify: NotifyConfig,
    /// Whether the notifier runs its own loop (tests drive its steps instead).
    notify_loop: bool,
}

impl Default for FailedTasksBuilder {
    fn default() -> Self {
        Self {
            backend: Backend::Memory(MemoryConfig::default()),
            scheduler: Some(SchedulerConfig::default()),
            replay_runner: Some(ReplayRunnerConfig::default()),
            service: ServiceConfig::default(),
            notify: NotifyConfig::default(),
            notify_loop: true,
        }
    }
}

impl FailedTasksBuilder {
    /// Keep the tasks in Redis (single server, Sentinel or Cluster, by the URL's scheme).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis(mut self, config: RedisConfig) -> Self {
        self.backend = Backend::Redis(config);
        self
    }

    /// Read the original Go service's records in Redis (read-only: no writes, statistics
    /// or retries; those calls answer [`QueryError::NotSupported`]).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn compat(mut self, config: CompatConfig) -> Self {
        self.backend = Backend::Compat(config);
        self
    }

    /// Keep the tasks in process memory (lost on restart; one process only).
    #[must_use]
    pub fn memory(mut self, config: MemoryConfig) -> Self {
        self.backend = Backend::Memory(config);
        self
    }

    /// Run the retry scheduler with `config` (it runs with the default one otherwise).
    #[must_use]
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = Some(config);
        self
    }

    /// Run no retry scheduler in this process: another process (a server, another replica)
    /// moves the due retries. Retries are still scheduled when failures are recorded.
    #[must_use]
    pub fn without_scheduler(mut self) -> Self {
        self.scheduler = None;
        self
    }

    /// Run the replay runner with `config` (it runs with the default one otherwise).
    #[must_use]
    pub fn replay_runner(mut self, config: ReplayRunnerConfig) -> Self {
        self.replay_runner = Some(config);
        self
    }

    /// Run no replay runner in this process: another replica advances the replays (or the
    /// caller drives [`ReplayRunner::step`](failed_tasks_query::ReplayRunner::step): tests).
    #[must_use]
    pub fn without_replay_runner(mut self) -> Self {
        self.replay_runner = None;
        self
    }

    /// Serve with `config` (deadlines, statistics, alerts, retry policy, fail times).
    #[must_use]
    pub fn service(mut self, config: ServiceConfig) -> Self {
        self.service = config;
        self
    }

    /// Send notifications to `config`'s targets (none by default): the notifier runs in
    /// this process under the store's lease (one replica at a time), see
    /// [`failed_tasks_notify`].
    #[must_use]
    pub fn notify(mut self, config: NotifyConfig) -> Self {
        self.notify = config;
        self
    }

    /// Build the notifier but run no loop for it: the caller drives
    /// [`Notifier::step`] (tests), through [`FailedTasks::notifier`].
    #[must_use]
    pub fn without_notify_loop(mut self) -> Self {
        self.notify_loop = false;
        self
    }

    /// Decide retries by `policy` (the default policy otherwise).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.service.retry = policy.config().clone();
        self
    }

    /// Bound the store calls by `deadlines`.
    #[must_use]
    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.service.deadlines = deadlines;
        self
    }

    /// Open the store, wait for its first connection attempt to settle, and start its
    /// janitor and (unless disabled) the retry scheduler, on the current tokio runtime.
    ///
    /// Fails on a configuration problem, and on a Redis that evicts keys unless that was
    /// allowed ([`Error::Evicting`]). A store that is down does not fail it: the client
    /// reconnects in the background, and calls answer [`QueryError::Unavailable`]
    /// meanwhile. It waits at most the connection check's deadline
    /// ([`Deadlines::health_check`]) for the store's first answer, so that the first calls
    /// of a healthy setup are not refused merely because the connection was still being
    /// made.
    pub async fn start(self) -> Result<FailedTasks, Error> {
        if let Some(config) = &self.scheduler {
            config.validate().map_err(Error::Config)?;
        }
        let policy = RetryPolicy::new(self.service.retry.clone())
            .map_err(|e| Error::Config(format!("retry {}: {}", e.field, e.reason)))?;
        self.service
            .breaker
            .validate()
            .map_err(|e| Error::Config(format!("{}: {}", e.field, e.reason)))?;
        let targets = self
            .notify
            .check()
            .map_err(|e| Error::Config(e.to_string()))?;
        let shown = self.backend.shown();
        let opened = self.backend.clone().open().await?;
        if !targets.is_empty() && opened.stores.notify.is_none() {
            return Err(Error::Config(format!(
                "notify_targets: the {} store keeps no notifications (use the memory or the redis store)",
                opened.stores.name
            )));
        }
        let settled = first_contact(&opened.stores, self.service.deadlines.health_check).await;
        match settled {
            FirstContact::Answered => {}
            FirstContact::Problem(StoreProblem::Evicting) => {
                let policy = opened.stores.tasks.condition().eviction_policy;
                return Err(Error::Evicting {
                    policy: policy.unwrap_or_else(|| "unknown".to_owned()),
                });
            }
            FirstContact::Problem(problem) => tracing::warn!(
                store = opened.stores.name,
                at = %shown,
                cause = problem.label(),
                "the store is not reachable yet ({problem}); retrying in the background"
            ),
            FirstContact::NoAnswer => tracing::warn!(
                store = opened.stores.name,
                at = %shown,
                "the store is not reachable yet (no answer within {:?}); retrying in the background",
                self.service.deadlines.health_check
            ),
        }
        Ok(self.finish(opened, policy, targets))
    }

    /// The use cases over the opened store, with the service settings, and the retry
    /// scheduler when the store has retries.
    fn finish(
        self,
        opened: backend::Opened,
        policy: RetryPolicy,
        targets: Vec<failed_tasks_notify::Target>,
    ) -> FailedTasks {
        let config = self.service;
        let service = FailedTaskService::new(opened.stores, config.deadlines)
            .with_notify_targets(
                targets
                    .iter()
                    .map(failed_tasks_notify::target_info)
                    .collect(),
            )
            .with_retry_policy(policy)
            .with_breaker_config(config.breaker)
            .with_alert_thresholds(config.alert_thresholds)
            .with_connection_check_reuse(config.connection_check_reuse)
            .with_stats_concurrency(config.stats_concurrency)
            .with_stats_cache(config.stats_cache_ttl)
            .with_fail_time_limits(FailTimeLimits {
                clock_skew: config.clock_skew_allowance,
                retention: opened.trims_after,
            });
        let scheduler = self
            .scheduler
            .filter(|_| service.schedules_retries())
            .map(|config| RetryScheduler::new(service.clone(), config).spawn());
        // One decider at a time across replicas (a lease): it runs where a scheduler runs.
        let breaker_loop = scheduler
            .as_ref()
            .filter(|_| service.breaks_circuits())
            .map(|_| RetryBreaker::new(service.clone(), lease_holder()).spawn());
        let replay_runner = self
            .replay_runner
            .filter(|_| service.schedules_retries() && service.stores().replays.is_some())
            .map(|config| {
                let runner = ReplayRunner::new(service.clone(), config);
                let holder = runner.holder().to_owned();
                (runner.spawn(), holder)
            });
        let notify = NotifyConfig {
            forget_after: opened.trims_after,
            ..self.notify
        };
        // The store's capability was checked by `start`: no notifier otherwise.
        let notifier = Notifier::new(service.clone(), targets, notify)
            .ok()
            .flatten();
        let notify_loop = notifier
            .as_ref()
            .filter(|_| self.notify_loop)
            .map(Notifier::spawn);
        FailedTasks {
            service,
            worker_source: opened.workers,
            janitor: opened.janitor.map(|start| start()),
            scheduler,
            breaker_loop,
            replay_runner,
            notifier,
            notify_loop,
        }
    }
}

/// This process's name for a lease: its id and a random part.
fn lease_holder() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}-{:016x}", std::process::id(), h.finish())
}

/// The failed-task use cases over one store, with its janitor and retry scheduler running
/// (see the crate's documentation). Dereferences to [`FailedTaskService`] for every use
/// case; dropping it stops the background jobs.
#[derive(Debug)]
pub struct FailedTasks {
    service: FailedTaskService,
    worker_source: WorkerSource,
    janitor: Option<Background>,
    scheduler: Option<Background>,
    breaker_loop: Option<Background>,
    /// The replay runner's loop and the name it holds the lease under.
    replay_runner: Option<(Background, String)>,
    notifier: Option<Notifier>,
    notify_loop: Option<Background>,
}

impl FailedTasks {
    /// The Redis store at `url`, every other setting at its default (key prefix
    /// `{failed-tasks}`, 30 days / 1,000,000 tasks of retention, the default retry policy);
    /// see [`FailedTasksBuilder::start`] for what happens when Redis is down.
    #[cfg(feature = "redis")]
    pub async fn redis(url: impl Into<String>) -> Result<FailedTasks, Error> {
        Self::builder()
            .redis(RedisConfig {
                url: url.into(),
                ..RedisConfig::default()
            })
            .start()
            .await
    }

    /// The in-memory store with its default settings, its janitor and the retry scheduler
    /// started on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime (the background jobs are tokio tasks).
    pub fn memory() -> FailedTasks {
        // The default settings are valid and the memory store answers at once: nothing to
        // check or wait for.
        let builder = Self::builder();
        let policy = RetryPolicy::default();
        builder.finish(Backend::memory(MemoryConfig::default()), policy, Vec::new())
    }

    /// Settings other than the defaults.
    pub fn builder() -> FailedTasksBuilder {
        FailedTasksBuilder::default()
    }

    /// The notifier, when targets are configured.
    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }

    /// The use cases (also reachable through `Deref`).
    pub fn service(&self) -> &FailedTaskService {
        &self.service
    }

    /// A worker's handle on the retry queue, as consumer `consumer` (unique per worker,
    /// e.g. host and process id): claim requests, acknowledge them, reclaim those of dead
    /// workers after the lease. On Redis it has its own connection (it waits at most the
    /// command timeout for it, like [`FailedTasksBuilder::start`]).
    pub async fn retry_worker(&self, consumer: &str) -> Result<RetryWorker, Error> {
        match &self.worker_source {
            WorkerSource::Memory(store) => {
                // One in-process queue: every handle is a consumer of it; names are not kept.
                let _ = consumer;
                Ok(RetryWorker {
                    queue: Box::new(store.retry_queue()),
                    lease: failed_tasks_store::retry::DEFAULT_LEASE,
                })
            }
            #[cfg(feature = "redis")]
            WorkerSource::None => Err(Error::Config(format!(
                "the {} store has no retry queue",
                self.service.stores().name
            ))),
            #[cfg(feature = "redis")]
            WorkerSource::Redis(config) => {
                // Every shard's stream.
                let queue = RedisRetryQueue::connect(config, consumer).await?;
                if !queue.wait_connected(config.command_timeout).await {
                    tracing::warn!("the retry queue's connection is not up yet; retrying");
                }
                Ok(RetryWorker {
                    lease: queue.lease(),
                    queue: Box::new(queue),
                })
            }
        }
    }

    /// Stop the notifier and the replay runner (giving up their leases), the janitor, the
    /// retry scheduler and the breaker's decider and wait until they have ended (a step in
    /// progress is abandoned: each store call is atomic). Dropping does the same without
    /// waiting.
    pub async fn shutdown(mut self) {
        if let Some(notify_loop) = self.notify_loop.take() {
            notify_loop.shutdown().await;
        }
        if let Some(notifier) = self.notifier.take() {
            // Another replica takes over at once instead of after the lease.
            notifier.release().await;
        }
        if let Some(breaker) = self.breaker_loop.take() {
            breaker.shutdown().await;
        }
        if let Some((runner, holder)) = self.replay_runner.take() {
            runner.shutdown().await;
            // Another replica takes over at once instead of after the lease.
            if let Err(e) = self.service.replay_release(&holder).await {
                tracing::warn!(error = %e, "the replay runner's lease could not be given up");
            }
        }
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
        if let Some(janitor) = self.janitor.take() {
            janitor.shutdown().await;
        }
    }
}

impl std::ops::Deref for FailedTasks {
    type Target = FailedTaskService;

    fn deref(&self) -> &FailedTaskService {
        &self.service
    }
}

/// A worker's handle on the retry queue ([`FailedTasks::retry_worker`]): the
/// [`RetryQueue`] of the store in use, and the lease after which another worker may
/// reclaim a request this one claimed and did not acknowledge.
pub struct RetryWorker {
    queue: Box<dyn RetryQueue>,
    lease: Duration,
}

impl std::fmt::Debug for RetryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryWorker")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl RetryWorker {
    /// The lease: pass it to [`RetryQueue::reclaim_stale`].
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The queue.
    pub fn queue(&self) -> &dyn RetryQueue {
        self.queue.as_ref()
    }
}
