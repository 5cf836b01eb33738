//! The replays capability ([`ReplayStore`]): each replay (its filter, reason, actor, pace,
//! state, counts and saved position), the recent ones newest first, the retries each one
//! made due (the last [`MAX_TRACKED_SCHEDULED`], for an abort to cancel those still
//! waiting), and the runner's lease (one runner at a time across replicas).
//!
//! Invariants every adapter keeps:
//! - **Progress only while running, under the lease.** [`ReplayStore::replay_save`] writes a
//!   replay's position, counts and scheduled retries in one atomic step, and only while the
//!   replay is running and the caller holds the runners' lease: a runner that saves after an
//!   abort, or after another runner took the lease over (it was paused past the lease),
//!   writes nothing and learns it.
//! - **Bounded.** At most [`MAX_KEPT_REPLAYS`] replays are listed (the oldest leave the list
//!   and are forgotten with the retention period), at most [`MAX_TRACKED_SCHEDULED`]
//!   scheduled retries are kept per replay (the most recent ones).

use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{Replay, ReplayId, ReplayProgress, ReplayState, TaskId, Timestamp};

use crate::StoreError;

/// How many replays a store lists at most: the most recent ones.
pub const MAX_KEPT_REPLAYS: usize = 1_000;
/// How many of a replay's scheduled retries a store keeps (the most recent ones): what an
/// abort cancels when they are still waiting.
pub const MAX_TRACKED_SCHEDULED: usize = 10_000;

/// One retry a replay made due: the task and the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRetry {
    /// The task.
    pub task_id: TaskId,
    /// The attempt made due.
    pub attempt: u32,
}

/// What [`ReplayStore::replay_save`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySave {
    /// The new position and counts.
    pub progress: ReplayProgress,
    /// The retries made due since the last save, in order.
    pub scheduled: Vec<ScheduledRetry>,
    /// The replay ended (done or failed) at this time.
    pub finish: Option<(ReplayState, Timestamp)>,
}

/// What [`ReplayStore::replay_save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveReplay {
    /// Written.
    Saved,
    /// The replay is not running (ended, aborted) or not kept: nothing written.
    NotRunning,
    /// The caller does not hold the runners' lease: nothing written.
    LeaseLost,
}

/// What [`ReplayStore::replay_abort`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AbortReplay {
    /// The replay was running and is aborted now: it as it is now.
    Aborted(Box<Replay>),
    /// The replay had ended already, in this state: nothing changed.
    Finished(ReplayState),
    /// No such replay.
    NotFound,
}

/// The replays of a store.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Keep a new replay (its id is new); the oldest beyond [`MAX_KEPT_REPLAYS`] leave the
    /// list.
    async fn replay_create(&self, replay: &Replay) -> Result<(), StoreError>;

    /// The replay with this id, if kept.
    async fn replay_get(&self, id: &ReplayId) -> Result<Option<Replay>, StoreError>;

    /// The most recent replays, newest first, at most `max`
    /// (at most [`MAX_KEPT_REPLAYS`]).
    async fn replay_list(&self, max: usize) -> Result<Vec<Replay>, StoreError>;

    /// The ids of running replays, oldest first, at most `max`.
    async fn replay_running(&self, max: usize) -> Result<Vec<ReplayId>, StoreError>;

    /// Save a running replay's progress (see [`ReplaySave`]) in one atomic step, if `holder`
    /// holds the runners' lease ([`replay_lease`](Self::replay_lease)).
    async fn replay_save(
        &self,
        holder: &str,
        id: &ReplayId,
        save: &ReplaySave,
    ) -> Result<SaveReplay, StoreError>;

    /// Abort a running replay at `now`.
    async fn replay_abort(&self, id: &ReplayId, now: Timestamp) -> Result<AbortReplay, StoreError>;

    /// The retries the replay made due that are kept (the most recent, at most
    /// [`MAX_TRACKED_SCHEDULED`]), oldest first, at most `max`.
    async fn replay_scheduled(
        &self,
        id: &ReplayId,
        max: usize,
    ) -> Result<Vec<ScheduledRetry>, StoreError>;

    /// Take the runners' lease for `holder`, or renew it when `holder` has it, for `ttl`;
    /// `false` when another holder has it.
    async fn replay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Give the lease up if `holder` has it.
    async fn replay_release(&self, holder: &str) -> Result<(), StoreError>;
}
