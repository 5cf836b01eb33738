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
//! jobs running for it: the retention janitor (both stores) and the retry scheduler, which
//! moves due retries into the workers' queue. They stop when it is dropped, or with
//! [`FailedTasks::shutdown`], which waits for them. Workers take retry requests with
//! [`FailedTasks::retry_worker`].
//!
//! Build one with [`FailedTasks::redis`] (a URL, every other setting at its default),
//! [`FailedTasks::memory`] (in process memory: tests, demos), or [`FailedTasks::builder`]
//! for the settings ([`RedisConfig`], [`MemoryConfig`], [`SchedulerConfig`], the retry
//! policy, deadlines).
//!
//! The modules re-export the layers underneath ([`domain`], [`store`], [`query`], and with
//! the default `redis` feature [`redis`]); the types an embedder usually needs are also at
//! the root. Unit-test code that uses the port against the mocks of `failed-tasks-store`'s
//! `mocks` feature.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

pub use failed_tasks_domain as domain;
pub use failed_tasks_query as query;
#[cfg(feature = "redis")]
pub use failed_tasks_redis as redis;
pub use failed_tasks_store as store;

pub use failed_tasks_domain::{
    ErrorCategory, FailedTask, ListQuery, NewFailedTask, PageLimits, RetryConfig, RetryPolicy,
    RetryRequest, TaskFilter, TaskId, Timestamp, ValidationError,
};
pub use failed_tasks_query::{
    Capability, Deadlines, FailedTaskService, QueryError, RecordOutcome, Resolve, RetryNow,
    SchedulerConfig, Stores,
};
#[cfg(feature = "redis")]
pub use failed_tasks_redis::{RedisConfig, RedisRetryQueue, RedisStore};
pub use failed_tasks_store::{
    Delivery, MemoryConfig, MemoryStore, Retention, RetryQueue, StatusStore, StoreError,
};

use failed_tasks_query::RetryScheduler;
use failed_tasks_store::Background;

/// Why [`FailedTasks`] could not be built or a worker's queue opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid (the message names it).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store refused (a bad URL or key prefix, a bad consumer name).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Config(e.to_string())
    }
}

/// Where the failed tasks are kept.
#[derive(Debug, Clone)]
enum Backend {
    Memory(MemoryConfig),
    #[cfg(feature = "redis")]
    Redis(RedisConfig),
}

/// The settings of a [`FailedTasks`]; [`start`](Self::start) builds it. Everything not set
/// is at its documented default: the memory store, the default retry policy, deadlines and
/// scheduler.
#[derive(Debug, Clone)]
pub struct FailedTasksBuilder {
    backend: Backend,
    scheduler: Option<SchedulerConfig>,
    retry_policy: Option<RetryPolicy>,
    deadlines: Deadlines,
}

impl Default for FailedTasksBuilder {
    fn default() -> Self {
        Self {
            backend: Backend::Memory(MemoryConfig::default()),
            scheduler: Some(SchedulerConfig::default()),
            retry_policy: None,
            deadlines: Deadlines::default(),
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

    /// Decide retries by `policy` (the default policy otherwise).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Bound the store calls by `deadlines`.
    #[must_use]
    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Open the store and start its janitor and (unless disabled) the retry scheduler, on
    /// the current tokio runtime.
    ///
    /// Fails only on a configuration problem. A Redis that is down does not fail it: the
    /// client reconnects in the background, and calls answer
    /// [`QueryError::Unavailable`] meanwhile. It waits at most the command timeout for a
    /// first connection, so that the first calls of a healthy setup succeed.
    pub async fn start(self) -> Result<FailedTasks, Error> {
        if let Some(config) = &self.scheduler {
            config.validate().map_err(Error::Config)?;
        }
        match self.backend.clone() {
            Backend::Memory(config) => Ok(self.in_memory(config)),
            #[cfg(feature = "redis")]
            Backend::Redis(config) => self.in_redis(config).await,
        }
    }

    /// The Redis store with `config` (split into `config.shards` shards; one by default)
    /// and its janitor.
    #[cfg(feature = "redis")]
    async fn in_redis(self, config: RedisConfig) -> Result<FailedTasks, Error> {
        let store = RedisStore::connect(config.clone()).await?;
        if !store.wait_connected(config.command_timeout).await {
            tracing::warn!(
                url = %failed_tasks_redis::redact_url(&config.url),
                "Redis is not reachable yet; retrying in the background"
            );
        }
        let janitor = store.spawn_janitor();
        Ok(self.finish(
            Stores::from(store),
            WorkerSource::Redis(Box::new(config)),
            janitor,
        ))
    }

    /// The memory store with `config` and its janitor: nothing here can fail.
    fn in_memory(self, config: MemoryConfig) -> FailedTasks {
        let store = Arc::new(MemoryStore::with_config(config));
        let janitor = store.spawn_janitor();
        self.finish(
            Stores::from(store.clone()),
            WorkerSource::Memory(store),
            janitor,
        )
    }

    /// The use cases over `stores`, and the retry scheduler when the store has retries.
    fn finish(
        self,
        stores: Stores,
        worker_source: WorkerSource,
        janitor: Background,
    ) -> FailedTasks {
        let mut service = FailedTaskService::new(stores, self.deadlines);
        if let Some(policy) = self.retry_policy {
            service = service.with_retry_policy(policy);
        }
        let scheduler = self
            .scheduler
            .filter(|_| service.schedules_retries())
            .map(|config| RetryScheduler::new(service.clone(), config).spawn());
        FailedTasks {
            service,
            worker_source,
            janitor: Some(janitor),
            scheduler,
        }
    }
}

/// How workers reach the retry queue of the store in use.
#[derive(Debug)]
enum WorkerSource {
    Memory(Arc<MemoryStore>),
    #[cfg(feature = "redis")]
    Redis(Box<RedisConfig>),
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
        // The default scheduler settings are valid: nothing to check.
        Self::builder().in_memory(MemoryConfig::default())
    }

    /// Settings other than the defaults.
    pub fn builder() -> FailedTasksBuilder {
        FailedTasksBuilder::default()
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

    /// Stop the janitor and the retry scheduler and wait until they have ended (a step in
    /// progress is abandoned: each store call is atomic). Dropping does the same without
    /// waiting.
    pub async fn shutdown(mut self) {
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
