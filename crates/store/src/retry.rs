//! The retry capabilities: scheduling retries with the records ([`RetryStore`]) and handing
//! due retries to workers ([`RetryQueue`]).
//!
//! A store that schedules retries keeps, for each stored failure, its [`RetryStatus`]; a
//! *due set* of scheduled retries ordered by due time; and a *queue* of retry requests that
//! workers claim (on Redis: a stream read by a consumer group). Its invariants:
//!
//! - **Scheduled with the record.** [`RetryStore::record_planned`] stores each task and its
//!   plan in one atomic step: the record, its indexes and its due-set entry change together.
//!   Re-recording a task replaces its plan, except that a plan for the attempt that is
//!   already scheduled (or delivered, or cancelled) keeps that schedule: `(TaskId, Attempt)`
//!   is scheduled once.
//! - **Moved exactly once.** [`RetryStore::deliver_due`] moves each due entry from the due
//!   set into the queue in one atomic step (never both, never neither), so concurrent
//!   schedulers deliver each scheduled retry once.
//! - **At least once to workers.** A claimed request that is not acknowledged within a
//!   lease can be reclaimed by another worker ([`RetryQueue::reclaim_stale`]); workers use
//!   `(TaskId, Attempt)` as the idempotency key.
//! - **Gates hold, never drop.** [`RetryStore::deliver_due`] applies the active
//!   [`RetryGate`]s: a due retry in a `hold` gate's scope, or in a `limit` gate's scope while
//!   its rate is spent, is parked (still scheduled, still not delivered, its attempt kept)
//!   and delivered by a later step once no gate stops it; releasing or lapsing a gate makes
//!   its parked retries due again. A `limit` gate's tokens are kept by the store, so every
//!   scheduler sharing it shares one rate (with `redis_shards` = n, each shard `1/n` of it).
//!   Re-recording, retrying now or cancelling a parked retry takes it out of its gate.
//! - Resolving, removing or trimming a task drops its due entry; a resolved task leaves
//!   every index and group but its failure stays counted, and it is counted as recovered.

use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{
    AttemptRecord, FailedTask, GateId, GateStatus, RetryGate, RetryPlan, RetryRequest, RetryStatus,
    TaskId, TaskSuccess, Timestamp,
};

use crate::{RecordOutcome, StoreError};

/// What [`RetryStore::retry_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryNow {
    /// The retry `attempt` is now due (it was scheduled later, or not at all: a final or
    /// cancelled failure, retried as an operator's override).
    Scheduled {
        /// The attempt that is due now.
        attempt: u32,
    },
    /// The retry `attempt` was already handed to workers: nothing changed (a second request
    /// for the same attempt does not deliver it twice).
    AlreadyDelivered {
        /// The attempt that was delivered.
        attempt: u32,
    },
    /// The task was resolved (its retry succeeded): nothing to retry.
    Resolved,
    /// No such task.
    NotFound,
}

/// What [`RetryStore::cancel_retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRetry {
    /// The scheduled retry `attempt` will not be delivered.
    Cancelled {
        /// The attempt that was cancelled.
        attempt: u32,
    },
    /// No retry was scheduled (a final or unscheduled failure): nothing changed.
    NotScheduled,
    /// The retry `attempt` was already handed to workers: it cannot be called back.
    AlreadyDelivered {
        /// The attempt that was delivered.
        attempt: u32,
    },
    /// The task was resolved.
    Resolved,
    /// No such task.
    NotFound,
}

/// What [`RetryStore::resolve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// The task left the failed tasks and was counted as recovered.
    Resolved,
    /// It was resolved before (resolving is idempotent); nothing changed.
    AlreadyResolved,
    /// No such task, and none resolved under this id within the retention period.
    NotFound,
}

/// A task's retry details: its status and its last failed attempts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryDetails {
    /// Where it stands.
    pub status: RetryStatus,
    /// At most [`MAX_ATTEMPT_HISTORY`](failed_tasks_domain::scheduling::MAX_ATTEMPT_HISTORY)
    /// failed attempts, newest first.
    pub attempts: Vec<AttemptRecord>,
    /// Whether its scheduled retry still waits to be handed to workers (in the due set, or
    /// parked by a gate); `false` once delivered, and when none is scheduled.
    pub waiting: bool,
}

/// What one [`RetryStore::deliver_due`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliverReport {
    /// Another scheduler held the lock; nothing was done.
    pub locked_out: bool,
    /// Due retries moved into the queue.
    pub moved: u64,
    /// Due entries dropped without delivery because their task was no longer scheduled
    /// (possible only for entries left by an older version; counted for the logs).
    pub dropped: u64,
    /// Whether due retries are left (the call stopped at its maximum): call again at once.
    pub more: bool,
    /// Due retries parked by a gate in this step (held, or waiting for a `limit`'s rate).
    pub held: u64,
}

/// What [`RetryStore::create_gate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateGate {
    /// The gate is active.
    Created,
    /// [`MAX_ACTIVE_GATES`](failed_tasks_domain::gate::MAX_ACTIVE_GATES) gates are active
    /// already: nothing changed.
    TooMany,
}

/// The retry figures the metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryGauges {
    /// Retries scheduled and not yet delivered (the due set, due or not).
    pub scheduled: u64,
    /// Of those, the ones whose due time has come.
    pub due: u64,
    /// How long the oldest due retry has waited past its due time (zero when none is due).
    pub oldest_due_age: Duration,
    /// Requests in the queue (read or not; on Redis the stream's length).
    pub queued: u64,
    /// Requests claimed by a worker and not acknowledged yet.
    pub pending: u64,
    /// Requests reclaimed from workers whose lease ran out, since the queue was created.
    pub reclaimed: u64,
}

/// Scheduling and tracking retries, for stores that can (the memory and Redis stores).
///
/// Implementations are safe under concurrent use and bound every call in time, like
/// [`StatusStore`](crate::StatusStore), of which a retry store is always one too.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RetryStore: Send + Sync {
    /// Store each task as [`StatusStore::record`](crate::StatusStore::record) does, and
    /// schedule (or unschedule) its retry by its plan, in the same atomic step. Outcomes are
    /// in the order of `batch`.
    async fn record_planned(
        &self,
        batch: &[(FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError>;

    /// Make the task's next retry due at `now` (scheduled by an operator): a scheduled retry
    /// becomes due at once; a final or unscheduled failure gets its next attempt scheduled
    /// (an explicit override); a retry already delivered is left alone.
    async fn retry_now(&self, task_id: &TaskId, now: Timestamp) -> Result<RetryNow, StoreError>;

    /// Drop the task's scheduled retry; the task becomes unscheduled.
    async fn cancel_retry(&self, task_id: &TaskId) -> Result<CancelRetry, StoreError>;

    /// The task's retry succeeded: it leaves the listing, every index, the due set and its
    /// group, is counted as recovered in the minute of `at`, and is remembered as resolved
    /// for the retention period (so a late retry request answers [`RetryNow::Resolved`]).
    async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, StoreError>;

    /// A later run succeeded: resolve every stored failure `success` supersedes (the same
    /// task type, client and codebase, failed before it) as [`resolve`](Self::resolve) does,
    /// but counted as superseded (not recovered) in the minute of the success; their
    /// scheduled retries are dropped. Atomic per shard. Answers how many it resolved.
    async fn supersede(&self, success: &TaskSuccess) -> Result<u64, StoreError>;

    /// The task's retry status and history; `None` when no such task is stored.
    async fn retry_details(&self, task_id: &TaskId) -> Result<Option<RetryDetails>, StoreError>;

    /// One scheduler step: move the retries due at `now` into the queue, at most `max` of
    /// them, each exactly once. Stores shared by several processes take a lock first and
    /// answer `locked_out` when another scheduler holds it.
    async fn deliver_due(&self, now: Timestamp, max: usize) -> Result<DeliverReport, StoreError>;

    /// The figures of [`RetryGauges`] as of `now`.
    async fn retry_gauges(&self, now: Timestamp) -> Result<RetryGauges, StoreError>;

    /// Make `gate` active (its id is new), unless
    /// [`MAX_ACTIVE_GATES`](failed_tasks_domain::gate::MAX_ACTIVE_GATES) gates that have
    /// not lapsed at `now` are active already.
    async fn create_gate(&self, gate: &RetryGate, now: Timestamp)
        -> Result<CreateGate, StoreError>;

    /// Release a gate: the retries it holds become due again (delivered by the next
    /// scheduler steps, paced by any `limit` gate that still applies). `false` when no such
    /// gate is active.
    async fn release_gate(&self, id: &GateId) -> Result<bool, StoreError>;

    /// The gates active at `now` (not lapsed), oldest first, each with the due retries it
    /// holds back.
    async fn list_gates(&self, now: Timestamp) -> Result<Vec<GateStatus>, StoreError>;

    /// Let `passes` retries through a `hold` gate (the breaker's canaries), replacing any
    /// passes it had (0 takes them back): the next scheduler steps deliver up to that many
    /// of the retries it parks or that come due in its scope, as if it were not there, then
    /// it holds again. With `redis_shards` = n each shard lets `ceil(passes / n)` through.
    /// `false` when no such gate is active (or it is a `limit`).
    async fn pass_gate(&self, id: &GateId, passes: u32) -> Result<bool, StoreError>;
}

/// How long a worker may hold a claimed request without acknowledging it before another
/// may reclaim it, by default (the Redis store's `retry_consumer_lease`): one minute.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// One claimed retry request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue's id of this request (on Redis, the stream entry id): what
    /// [`RetryQueue::ack`] takes.
    pub id: String,
    /// The request.
    pub request: RetryRequest,
    /// How many times it was handed out, this time included (more than 1 after a reclaim).
    pub deliveries: u64,
}

/// A worker's view of the retry queue: claim requests, acknowledge them when their outcome
/// is recorded, reclaim those of workers that died.
///
/// Each request is handed to one worker at a time; one that is not acknowledged within the
/// lease may be reclaimed by another, so a request can be seen more than once: use
/// `(TaskId, Attempt)` as the idempotency key.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RetryQueue: Send + Sync {
    /// Up to `max` requests never handed out before, waiting at most `block` for the first.
    async fn claim(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, StoreError>;

    /// Acknowledge handled requests by id; returns how many were pending.
    async fn ack(&self, ids: &[String]) -> Result<u64, StoreError>;

    /// Take over up to `max` requests claimed by any worker more than `lease` ago and not
    /// acknowledged; they are this worker's from now on.
    async fn reclaim_stale(&self, lease: Duration, max: usize)
        -> Result<Vec<Delivery>, StoreError>;
}
