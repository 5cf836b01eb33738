//! The status-store port: what the use cases need from wherever failed tasks are kept.
//!
//! # Layout
//! - [`StatusStore`]: the port every store implements (ping, list, get, record, remove), an
//!   `#[async_trait]` trait.
//! - The capabilities a store may add, each a trait of its own: [`StatsStore`] (failure
//!   statistics, attempts, groups), [`StoredPages`] (pages as stored records), and the
//!   retry capabilities in [`retry`]. No trait has a default that fails at run time: a store
//!   implements a capability or does not, and [`Stores`] (built by each adapter) says which
//!   ones it has, named by [`Capability`] (writes included: a read-only source implements
//!   [`StatusStore`] without [`Capability::Writes`], and the use cases refuse its writes).
//! - [`Retention`]: how long and how many tasks a store keeps (memory and Redis alike).
//! - [`Background`]: the handle of a background loop (janitors, the retry scheduler).
//! - With the `mocks` feature (or in this crate's tests) `mockall` generates
//!   `MockStatusStore`, `MockStatsStore`, `MockStoredPages`, `MockRetryStore` and
//!   `MockRetryQueue` for consumers' unit tests.
//! - [`StoreError`]: the typed errors every adapter maps its driver's errors into.
//! - [`FailedTaskPage`], [`RecordOutcome`]: what the port answers.
//! - [`StoreCondition`], [`StoreProblem`]: what an adapter knows of its link (readiness).
//! - [`retry`]: the retry capabilities: [`RetryStore`] (schedule with the record, deliver due
//!   retries, retry now, cancel, resolve) and [`RetryQueue`] (what workers claim and ack).
//! - [`notify`]: the notifications capability, [`NotifyStore`]: the notifier's lease, state,
//!   per-target outboxes and deliveries, written fenced by the lease.
//! - [`audit`]: the audit capability, [`AuditStore`]: one entry per state-changing action,
//!   newest first, capped.
//! - [`breaker`]: the breaker capability, [`BreakerStore`]: retry outcome counters per
//!   second, the states of open breakers, the decider's lease.
//! - [`replay`]: the replays capability, [`ReplayStore`]: each replay, its saved position
//!   (written only while it runs), the retries it made due, the runners' lease.
//! - [`files`]: the failed-files capability, [`FilesStore`]: the files of a codebase task
//!   that failed, kept apart from its record and removed with it; their stored form.
//! - [`stored`]: the stored form of a task (one owner: encode, decode, render a page
//!   without a JSON parser), used by the Redis adapter and the tools.
//! - [`memory`]: [`MemoryStore`], the embedded default adapter (tasks, statistics, retries,
//!   with retention), and its [`MemoryRetryQueue`].
//!
//! # Invariants every adapter keeps
//! - Only failed tasks are stored; a page is in [`SortKey`](failed_tasks_domain::SortKey)
//!   order and never has duplicates.
//! - `record` is an upsert by `TaskId`: recording the same id again replaces the task and
//!   moves every index entry it owns; it never creates a second entry.
//! - `list` costs O(log N + page) for the unfiltered listing: adapters keep ordered indexes
//!   rather than sorting per request.
//! - A record that cannot be decoded is skipped by `list` and counted in
//!   [`FailedTaskPage::skipped_corrupt`], never fatal to the page.

#![forbid(unsafe_code)]

pub mod audit;
mod background;
pub mod breaker;
mod condition;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
pub mod files;
pub mod memory;
pub mod notify;
mod port;
pub mod replay;
pub mod retry;
pub mod stored;
mod stores;

pub use audit::AuditStore;
pub use background::Background;
pub use breaker::BreakerStore;
pub use condition::{StoreCondition, StoreProblem};
pub use error::StoreError;
pub use files::FilesStore;
pub use memory::{MemoryConfig, MemoryJanitor, MemoryRetryQueue, MemoryStore, MemoryTrimReport};
pub use notify::NotifyStore;
pub use port::{FailedTaskPage, RecordOutcome, StatsStore, StatusStore, StoredPage, StoredPages};
pub use replay::ReplayStore;
pub use retry::{
    CancelRetry, CreateGate, DeliverReport, Delivery, Resolve, RetryDetails, RetryGauges, RetryNow,
    RetryQueue, RetryStore,
};
pub use stores::{Capability, Retention, Stores};

#[cfg(any(test, feature = "mocks"))]
pub use audit::MockAuditStore;
#[cfg(any(test, feature = "mocks"))]
pub use breaker::MockBreakerStore;
#[cfg(any(test, feature = "mocks"))]
pub use files::MockFilesStore;
#[cfg(any(test, feature = "mocks"))]
pub use notify::MockNotifyStore;
#[cfg(any(test, feature = "mocks"))]
pub use port::{MockStatsStore, MockStatusStore, MockStoredPages};
#[cfg(any(test, feature = "mocks"))]
pub use replay::MockReplayStore;
#[cfg(any(test, feature = "mocks"))]
pub use retry::{MockRetryQueue, MockRetryStore};
