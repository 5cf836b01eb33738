//! One store seen through each capability it has ([`Stores`]), and the names of those
//! capabilities ([`Capability`]); what a store keeps ([`Retention`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    AuditStore, BreakerStore, FilesStore, NotifyStore, ReplayStore, RetryStore, StatsStore,
    StatusStore, StoredPages,
};

/// What a store can do beyond listing and reading failed tasks ([`StatusStore`], which every
/// store is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Recording and removing failed tasks ([`StatusStore::record`] and friends): every store
    /// but a read-only source (the compat store, over another service's records).
    Writes,
    /// Failure statistics, task attempts and failure groups ([`StatsStore`]).
    Statistics,
    /// Pages as each task's stored record ([`StoredPages`], in the [`stored`](crate::stored)
    /// form): a read fast path, never required (the use cases fall back to the decoded page).
    StoredRecords,
    /// Scheduling and tracking retries ([`RetryStore`]).
    Retries,
    /// The notifier's lease, state, outboxes and deliveries ([`NotifyStore`]).
    Notifications,
    /// The audit log of actions ([`AuditStore`]).
    Audit,
    /// The retry circuit breaker's counters, states and lease ([`BreakerStore`]).
    Breaker,
    /// Replays: paced retries of every match of a filter, their state and position
    /// ([`ReplayStore`]).
    Replays,
    /// The files of a codebase task that failed, kept apart from its record ([`FilesStore`]).
    Files,
}

impl Capability {
    /// Every capability, in a stable order.
    pub const ALL: [Capability; 9] = [
        Capability::Writes,
        Capability::Statistics,
        Capability::StoredRecords,
        Capability::Retries,
        Capability::Notifications,
        Capability::Audit,
        Capability::Breaker,
        Capability::Replays,
        Capability::Files,
    ];

    /// A short, stable label, for logs and metrics: `writes`, `statistics`, `stored_records`,
    /// `retries`, `notifications`, `audit`, `breaker`, `replays`, `files`.
    pub fn label(self) -> &'static str {
        match self {
            Capability::Writes => "writes",
            Capability::Statistics => "statistics",
            Capability::StoredRecords => "stored_records",
            Capability::Retries => "retries",
            Capability::Notifications => "notifications",
            Capability::Audit => "audit",
            Capability::Breaker => "breaker",
            Capability::Replays => "replays",
            Capability::Files => "files",
        }
    }
}

/// What the capability is, in words: "the compat store does not support {this}".
impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Writes => "recording or removing failed tasks",
            Capability::Statistics => "failure statistics, task attempts and failure groups",
            Capability::StoredRecords => "pages of stored records",
            Capability::Retries => "retries",
            Capability::Notifications => "notifications",
            Capability::Audit => "an audit log",
            Capability::Breaker => "a retry circuit breaker",
            Capability::Replays => "replays",
            Capability::Files => "files",
        })
    }
}

/// One store through each of its capabilities: what the use cases are built from. Each
/// adapter builds its own (`Stores::from(Arc<MemoryStore>)`, `Stores::from(RedisStore)`, …),
/// claiming exactly what it implements; the handles all point at the same store.
///
/// Cheap to clone (`Arc`s).
#[derive(Clone)]
pub struct Stores {
    /// The store's name in messages (`memory`, `redis`, `compat`): "the compat store does
    /// not support retries".
    pub name: &'static str,
    /// The failed tasks themselves.
    pub tasks: Arc<dyn StatusStore>,
    /// Whether `tasks` takes writes (`false`: a read-only source, whose writes the use cases
    /// refuse before calling it).
    pub writable: bool,
    /// Statistics and groups, when the store keeps them.
    pub stats: Option<Arc<dyn StatsStore>>,
    /// Pages as stored records ([`stored`](crate::stored)), when the store keeps tasks that way.
    pub stored: Option<Arc<dyn StoredPages>>,
    /// Retries, when the store schedules them.
    pub retries: Option<Arc<dyn RetryStore>>,
    /// The notifier's store, when the store keeps one.
    pub notify: Option<Arc<dyn NotifyStore>>,
    /// The audit log, when the store keeps one.
    pub audit: Option<Arc<dyn AuditStore>>,
    /// The breaker's counters, states and lease, when the store keeps them.
    pub breaker: Option<Arc<dyn BreakerStore>>,
    /// Replays, when the store keeps them.
    pub replays: Option<Arc<dyn ReplayStore>>,
    /// The failed files of tasks, when the store keeps them.
    pub files: Option<Arc<dyn FilesStore>>,
}

impl Stores {
    /// A store named `name` that keeps failed tasks (reads and writes) and nothing else;
    /// add what else it can do with the `with_*` methods.
    pub fn new(name: &'static str, tasks: Arc<dyn StatusStore>) -> Self {
        Self {
            name,
            tasks,
            writable: true,
            stats: None,
            stored: None,
            retries: None,
            notify: None,
            audit: None,
            breaker: None,
            replays: None,
            files: None,
        }
    }

    /// The same, read-only: the use cases refuse writes
    /// ([`Capability::Writes`] is missing).
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.writable = false;
        self
    }

    /// The same, keeping statistics and groups in `stats` (the same store).
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<dyn StatsStore>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The same, answering pages of stored records from `stored` (the same store).
    #[must_use]
    pub fn with_stored(mut self, stored: Arc<dyn StoredPages>) -> Self {
        self.stored = Some(stored);
        self
    }

    /// The same, scheduling retries in `retries` (the same store).
    #[must_use]
    pub fn with_retries(mut self, retries: Arc<dyn RetryStore>) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The same, keeping the notifier's lease, state and outboxes in `notify` (the same
    /// store).
    #[must_use]
    pub fn with_notify(mut self, notify: Arc<dyn NotifyStore>) -> Self {
        self.notify = Some(notify);
        self
    }

    /// The same, keeping the audit log in `audit` (the same store).
    #[must_use]
    pub fn with_audit(mut self, audit: Arc<dyn AuditStore>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The same, keeping the breaker's counters, states and lease in `breaker` (the same
    /// store).
    #[must_use]
    pub fn with_breaker(mut self, breaker: Arc<dyn BreakerStore>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The same, keeping replays in `replays` (the same store).
    #[must_use]
    pub fn with_replays(mut self, replays: Arc<dyn ReplayStore>) -> Self {
        self.replays = Some(replays);
        self
    }

    /// The same, keeping the failed files of tasks in `files` (the same store).
    #[must_use]
    pub fn with_files(mut self, files: Arc<dyn FilesStore>) -> Self {
        self.files = Some(files);
        self
    }

    /// Whether the store has `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::Writes => self.writable,
            Capability::Statistics => self.stats.is_some(),
            Capability::StoredRecords => self.stored.is_some(),
            Capability::Retries => self.retries.is_some(),
            Capability::Notifications => self.notify.is_some(),
            Capability::Audit => self.audit.is_some(),
            Capability::Breaker => self.breaker.is_some(),
            Capability::Replays => self.replays.is_some(),
            Capability::Files => self.files.is_some(),
        }
    }

    /// The capabilities the store has, in the order of [`Capability::ALL`].
    pub fn capabilities(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.has(*c))
            .collect()
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities())
            .finish_non_exhaustive()
    }
}

/// How long, and how many, failed tasks a store keeps: the same two settings for the
/// memory and the Redis store (`retention_max_age`, `retention_max_count` of the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Tasks that failed longer ago than this (by `FailTime`) are trimmed: 30 days by
    /// default.
    pub max_age: Duration,
    /// At most this many tasks are kept; the oldest beyond it are trimmed: 1,000,000 by
    /// default.
    pub max_count: u64,
    /// How often the retention janitor trims: 1 minute by default.
    pub janitor_interval: Duration,
    /// At most this many audit entries are kept; the oldest beyond it leave: 100,000 by
    /// default.
    pub audit_max_len: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_count: 1_000_000,
            janitor_interval: Duration::from_secs(60),
            audit_max_len: crate::audit::DEFAULT_AUDIT_MAX_LEN,
        }
    }
}
