//! The failed-task service: deadlines around a store's capabilities ([`Stores`]) and error
//! mapping.
//!
//! One struct, [`FailedTaskService`], with its use cases in `impl` blocks by topic:
//! - `error`: [`QueryError`], the contract's kinds
//! - `guards`: the capability a use case needs, the filter check, [`Deadlines`]
//! - `health`: the connection check and its reuse after a good answer
//! - `fail_times`: [`FailTimeLimits`] (clock skew, retention)
//! - `counters`: [`RecordCounters`] and [`RetryCounters`] for the metrics
//! - `tasks`: list, get, record, remove
//! - `files`: the failed files of codebase tasks: recorded with their failure, paged
//! - `bulk`: remove or retry every match of a filter ([`BulkRemoval`], [`BulkRetry`])
//! - `retries`: the retry policy, retry now, cancel, resolve, deliver due
//! - `search`: the text filters `q` and `pathPrefix` ([`SearchPage`], [`SearchWay`])
//! - `breaker`: the circuit breaker's outcome counts, settings and states ([`BreakerView`])
//! - `gates`: retry gates ([`GateRequest`]): make, list, release
//! - `stats`: statistics, groups, attempts, the alert thresholds
//! - `replays`: replays ([`ReplayRequest`]): dry run, make, read, list, abort, advance
//! - `notify`: the notification targets in force and their delivery ([`NotifyTargetInfo`])

mod audit;
mod breaker;
mod bulk;
mod counters;
mod error;
mod fail_times;
mod files;
mod gates;
mod guards;
mod health;
mod notify;
mod replays;
mod retries;
mod search;
mod stats;
mod tasks;

use std::sync::{Arc, Mutex};

use failed_tasks_domain::stats::AlertThresholds;
use failed_tasks_domain::{BreakerConfig, JitterRng, RetryPolicy};
use failed_tasks_store::{StatusStore, Stores};

use crate::stats_gate::StatsGate;
use health::RecentHealth;

pub use breaker::BreakerView;
pub use bulk::{BulkRemoval, BulkRetry};
pub use counters::{RecordCounters, RecordedLabels, RetryCounters};
pub use error::QueryError;
pub use fail_times::FailTimeLimits;
pub use gates::GateRequest;
pub use guards::Deadlines;
pub use notify::NotifyTargetInfo;
pub use replays::{
    ReplayAbort, ReplayAdvance, ReplayOutcomes, ReplayPreview, ReplayRequest, SAMPLE_TASK_IDS,
};
pub use search::{SearchPage, SearchWay, MAX_GROUPS_READ, MAX_SEARCH_GROUPS, WALK_BATCH};

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
    /// The retry circuit breaker's settings (`breaker`).
    breaker: Arc<BreakerConfig>,
    jitter: Arc<Mutex<JitterRng>>,
    retry_counters: Arc<RetryCounters>,
    record_counters: Arc<RecordCounters>,
    health: Arc<RecentHealth>,
    fail_times: FailTimeLimits,
    /// How many statistics requests are computed at once, and the answers they share
    /// (`stats_gate`): a crowd of statistics callers cannot starve listings of the store or
    /// the process of memory.
    stats_gate: Arc<StatsGate>,
    /// The notification targets whose delivery the service shows (`notify`).
    notify_targets: Arc<Vec<NotifyTargetInfo>>,
    /// How long a search walk reads before answering an incomplete page (`None`: half the
    /// request deadline).
    search_budget: Option<std::time::Duration>,
    /// The failure groups' patterns as last read (`search`).
    group_patterns: Arc<search::GroupPatterns>,
}

/// A jitter seed that differs between processes and starts.
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
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
            breaker: Arc::new(BreakerConfig::default()),
            jitter: Arc::new(Mutex::new(JitterRng::new(jitter_seed()))),
            retry_counters: Arc::new(RetryCounters::default()),
            record_counters: Arc::new(RecordCounters::default()),
            health: Arc::new(RecentHealth::new(Self::DEFAULT_CHECK_REUSE)),
            fail_times: FailTimeLimits::default(),
            stats_gate: Arc::new(StatsGate::new(
                Self::DEFAULT_STATS_CONCURRENCY,
                Self::DEFAULT_STATS_CACHE_TTL,
            )),
            notify_targets: Arc::new(Vec::new()),
            search_budget: None,
            group_patterns: Arc::default(),
        }
    }

    /// The store through its capabilities.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The store's tasks, for wiring that needs them directly (demo data, background jobs).
    pub fn store(&self) -> &Arc<dyn StatusStore> {
        &self.store
    }
}
