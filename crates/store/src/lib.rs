//! The status-store port: what the use cases need from wherever failed tasks are kept.
//!
//! # Layout
//! - [`StatusStore`]: the port, an `#[async_trait]` trait. With the `mocks` feature (or in
//!   this crate's tests) `mockall` generates `MockStatusStore` for consumers' unit tests.
//! - [`StoreError`]: the typed errors every adapter maps its driver's errors into.
//! - [`FailedTaskPage`], [`RecordOutcome`]: what the port answers.
//! - [`StoreCondition`], [`StoreProblem`]: what an adapter knows of its link (readiness).
//! - [`retry`]: the retry capabilities: [`RetryStore`] (schedule with the record, deliver due
//!   retries, retry now, cancel, resolve) and [`RetryQueue`] (what workers claim and ack).
//! - [`memory`]: [`MemoryStore`], the embedded default adapter, and its [`MemoryRetryQueue`].
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

mod condition;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
pub mod memory;
mod port;
pub mod retry;

pub use condition::{StoreCondition, StoreProblem};
pub use error::StoreError;
pub use memory::{MemoryRetryQueue, MemoryStore};
pub use port::{FailedTaskPage, RecordOutcome, StatusStore, StoredJsonPage};
pub use retry::{
    CancelRetry, DeliverReport, Delivery, Resolve, RetryDetails, RetryGauges, RetryNow, RetryQueue,
    RetryStore,
};

#[cfg(any(test, feature = "mocks"))]
pub use port::MockStatusStore;
