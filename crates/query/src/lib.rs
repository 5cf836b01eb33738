//! Use cases of the failed-task store, independent of how requests arrive.
//!
//! [`FailedTaskService`] answers "which tasks failed?" the way the contract describes:
//! check the store's connection under a short deadline (5 s by default), then run the query,
//! both under a whole-request deadline, and map every failure to one of the contract's kinds
//! ([`QueryError`]).
//!
//! The service is built from a store's capabilities ([`Stores`], which each adapter builds):
//! what needs one the store lacks (statistics and groups, retries) answers
//! [`QueryError::NotSupported`] naming the store and the capability, never an internal
//! error.
//!
//! With a store that schedules retries ([`Stores::retries`]), recording a
//! failure schedules its retry by the [`RetryPolicy`](failed_tasks_domain::RetryPolicy) in
//! the same write; operators retry now, cancel, resolve and retry a whole selection; and the
//! [`RetryScheduler`] moves due retries into the workers' queue; replays retry every match of a
//! filter at a pace, advanced by the [`ReplayRunner`].
//!
//! # Invariants
//! - No call outlives its deadline, whatever the store does: every store call is wrapped in
//!   `tokio::time::timeout`, so a store that never answers yields
//!   [`QueryError::Unavailable`] when the deadline passes.
//! - "The store is not there" ([`QueryError::Unavailable`], HTTP 503) is kept apart from
//!   "the store answered but the query failed" ([`QueryError::Internal`], HTTP 500); the
//!   internal detail travels in the error for logs, never to clients.
//! - No transport types: HTTP, gRPC or a CLI can sit on top.

#![forbid(unsafe_code)]

mod breaker;
mod replay_runner;
mod scheduler;
mod service;
mod stats_gate;

pub use breaker::{BreakerHandle, BreakerReport, RetryBreaker, Transition, BREAKER_ACTOR};
/// The audit log's entries and queries, as the adapters write and read them.
pub use failed_tasks_store::audit;
/// The notifier's delivery figures, as the status route shows them.
pub use failed_tasks_store::notify::{Pending, TargetDelivery};
/// Replays as the store keeps them.
pub use failed_tasks_store::replay;
/// What the use cases answer with, from the store port, re-exported so that an adapter on
/// top (HTTP) depends on this crate and the domain only.
pub use failed_tasks_store::{
    stored, CancelRetry, Capability, CreateGate, FailedTaskPage, RecordOutcome, Resolve,
    RetryDetails, RetryGauges, RetryNow, StoreCondition, StoreProblem, StoredPage, Stores,
};
pub use replay_runner::{ReplayRunner, ReplayRunnerConfig, ReplayRunnerHandle, ReplayStepReport};
pub use scheduler::{RetryScheduler, SchedulerConfig, SchedulerHandle, StepReport};
pub use service::{
    BreakerView, BulkRemoval, BulkRetry, Deadlines, FailTimeLimits, FailedTaskService, GateRequest,
    NotifyTargetInfo, QueryError, RecordCounters, RecordedLabels, ReplayAbort, ReplayAdvance,
    ReplayOutcomes, ReplayPreview, ReplayRequest, RetryCounters, SearchPage, SearchWay,
    MAX_GROUPS_READ, MAX_SEARCH_GROUPS, SAMPLE_TASK_IDS, WALK_BATCH,
};
