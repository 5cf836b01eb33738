//! The store choice: which adapter a [`Backend`] opens, with its janitor and its workers'
//! queue, and the wait for its first connection. The one place that names the adapters'
//! constructors.

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_query::Stores;
#[cfg(feature = "redis")]
use failed_tasks_redis::{CompatConfig, CompatStore, RedisConfig, RedisStore};
use failed_tasks_store::{Background, MemoryConfig, MemoryStore, StoreProblem};

use crate::Error;

/// Where the failed tasks are kept.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Memory(MemoryConfig),
    #[cfg(feature = "redis")]
    Redis(RedisConfig),
    #[cfg(feature = "redis")]
    Compat(CompatConfig),
}

/// How workers reach the retry queue of the store in use.
#[derive(Debug)]
pub(crate) enum WorkerSource {
    Memory(Arc<MemoryStore>),
    #[cfg(feature = "redis")]
    Redis(Box<RedisConfig>),
    /// A store without retries (the compat source): no queue to work.
    #[cfg(feature = "redis")]
    None,
}

/// An opened store: its capabilities, its janitor (if it trims), where its workers' queue is,
/// and the age beyond which it trims tasks (if it trims by age).
pub(crate) struct Opened {
    pub(crate) stores: Stores,
    /// Starts the janitor: called once the store's first connection attempt has settled, so
    /// its first run does not fail (and warn) merely because the connection is being made.
    pub(crate) janitor: Option<StartJanitor>,
    pub(crate) workers: WorkerSource,
    pub(crate) trims_after: Option<Duration>,
}

impl Backend {
    /// Open the store (its janitor is started by [`Opened::start_janitor`]). Fails only on a configuration problem; a store
    /// that is down is connected in the background.
    pub(crate) async fn open(self) -> Result<Opened, Error> {
        match self {
            Backend::Memory(config) => Ok(Self::memory(config)),
            #[cfg(feature = "redis")]
            Backend::Redis(config) => {
                let store = RedisStore::connect(config.clone()).await?;
                let janitor = store.clone();
                Ok(Opened {
                    stores: Stores::from(store),
                    janitor: Some(Box::new(move || janitor.spawn_janitor())),
                    trims_after: Some(config.retention.max_age),
                    workers: WorkerSource::Redis(Box::new(config)),
                })
            }
            #[cfg(feature = "redis")]
            Backend::Compat(config) => Ok(Opened {
                stores: Stores::from(CompatStore::connect(config).await?),
                janitor: None,
                workers: WorkerSource::None,
                // The Go service's records expire by themselves; nothing is trimmed here.
                trims_after: None,
            }),
        }
    }

    /// The memory store: nothing here can fail or wait.
    pub(crate) fn memory(config: MemoryConfig) -> Opened {
        let store = Arc::new(MemoryStore::with_config(config));
        let janitor = store.clone();
        Opened {
            stores: Stores::from(store.clone()),
            janitor: Some(Box::new(move || janitor.spawn_janitor())),
            trims_after: Some(config.retention.max_age),
            workers: WorkerSource::Memory(store),
        }
    }

    /// Where the store is, as it may be logged (a URL without its secrets).
    pub(crate) fn shown(&self) -> String {
        match self {
            Backend::Memory(_) => "process memory".to_owned(),
            #[cfg(feature = "redis")]
            Backend::Redis(RedisConfig { url, .. }) | Backend::Compat(CompatConfig { url, .. }) => {
                failed_tasks_redis::redact_url(url)
            }
        }
    }
}

/// Starts a store's janitor on the current runtime.
pub(crate) type StartJanitor = Box<dyn FnOnce() -> Background + Send>;

/// How the store's first connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirstContact {
    /// The store answered.
    Answered,
    /// The adapter named why it cannot be used (refused, credentials, eviction policy, …).
    Problem(StoreProblem),
    /// Neither within the wait.
    NoAnswer,
}

/// Wait until the store's first connection attempt has settled: it answered a ping, or its
/// adapter names a problem, for at most `within`. Until then a call would be refused only
/// because the connection is still being made.
pub(crate) async fn first_contact(stores: &Stores, within: Duration) -> FirstContact {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stores.tasks.ping()).await {
            Ok(Ok(())) => return FirstContact::Answered,
            Err(_) => return FirstContact::NoAnswer,
            Ok(Err(_)) => {}
        }
        if let Some(problem) = stores.tasks.condition().problem {
            return FirstContact::Problem(problem);
        }
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(10)))
            .await
            .is_err()
        {
            return FirstContact::NoAnswer;
        }
    }
}
