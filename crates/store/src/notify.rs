//! The notifications capability ([`NotifyStore`]): what the notifier keeps in the store so
//! that notifications survive a restart and one replica at a time sends them.
//!
//! The store keeps, for one deployment:
//! - a **lease**: one holder at a time runs the notifier's steps (a process name plus a
//!   random token); the others' steps do nothing. Every write below is *fenced*: it is
//!   applied only while the caller still holds the lease, in the same atomic step, so a
//!   replica that lost its lease (paused, partitioned) cannot write over its successor.
//! - the notifier's **state**: small text values by key (what each event source last
//!   saw, e.g. the alerts firing) and the **seen signatures** (each failure group's
//!   signature with the last time the notifier saw it fail), written with the events the
//!   state change produced in one [`notify_commit`](NotifyStore::notify_commit);
//! - one **outbox** per target: the events waiting for it, oldest first, at most a cap
//!   (beyond it an event is dropped and counted: [`TargetDelivery::dropped`]);
//! - per target, the **message in flight** ([`Pending`]: the body being delivered, with
//!   its attempts and when to try next) and the delivery figures. Starting a delivery
//!   takes the events it carries out of the outbox and stores the message in one step, so
//!   a restart resends exactly that message (at least once: receivers de-duplicate by
//!   its `Id`), never a second message with the same events.
//!
//! Bodies are opaque text to the store: their format belongs to the notifier.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{ErrorSignature, FailureGroup};

use crate::StoreError;

/// A failure group's place in the order of last seen (then signature): what the group
/// watcher walks, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupMark {
    /// The fail time of the group's newest member, in ms since the epoch.
    pub last_seen_ms: i64,
    /// The group's signature.
    pub signature: ErrorSignature,
}

/// One event waiting in a target's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The store's id of the entry (on Redis, the stream entry id), increasing.
    pub id: String,
    /// The event as the notifier wrote it.
    pub body: String,
}

/// What one notifier step writes, all at once and only under the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyCommit {
    /// State values to set (`Some`) or delete (`None`).
    pub state: Vec<(String, Option<String>)>,
    /// Signatures seen, with the fail time (ms) they were last seen at.
    pub seen: Vec<(ErrorSignature, i64)>,
    /// Forget the seen signatures last seen before this (ms): what retention trimmed.
    pub forget_seen_before_ms: Option<i64>,
    /// Events to queue: (target, body), in order.
    pub events: Vec<(String, String)>,
    /// Most events one target's outbox holds; an event beyond it is dropped and counted.
    pub outbox_cap: u64,
}

impl NotifyCommit {
    /// Whether the commit writes nothing.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
            && self.seen.is_empty()
            && self.forget_seen_before_ms.is_none()
            && self.events.is_empty()
    }
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// The caller no longer held the lease: nothing was written.
    pub lease_lost: bool,
    /// Events queued.
    pub queued: u64,
    /// The targets of the events dropped because their outbox was full (one entry per event).
    pub dropped: Vec<String>,
}

/// What the notifier reads before a step: its state values, and for each signature asked
/// about, when it was last seen (`None`: never).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// Every state value.
    pub values: BTreeMap<String, String>,
    /// For each signature asked about, in order, the last seen time (ms) the notifier wrote.
    pub seen: Vec<Option<i64>>,
}

/// A message being delivered to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The message's id (what receivers de-duplicate by).
    pub id: String,
    /// The request body, exactly as sent at every attempt.
    pub body: String,
    /// How many events it carries (a digest carries several).
    pub events: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt was made (ms).
    pub first_ms: i64,
    /// When the next attempt is due (ms).
    pub next_ms: i64,
}

/// How an attempt to deliver the pending message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The target took it: the message leaves.
    Delivered {
        /// When (ms).
        at_ms: i64,
    },
    /// The attempt failed; try again at `retry_ms`.
    Failed {
        /// When (ms).
        at_ms: i64,
        /// Why, as it may be shown (no secret, no URL).
        error: String,
        /// When to try again (ms).
        retry_ms: i64,
    },
    /// The attempt failed and the message is given up (its retries ran out): it leaves,
    /// counted as dropped.
    GaveUp {
        /// When (ms).
        at_ms: i64,
        /// Why the last attempt failed.
        error: String,
    },
}

/// One target's delivery: the message in flight, the outbox, the figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetDelivery {
    /// The message being delivered, if any.
    pub pending: Option<Pending>,
    /// Events waiting in the outbox.
    pub queued: u64,
    /// When a message was last started (ms): the per-target rate limit counts from it.
    pub last_started_ms: Option<i64>,
    /// When a message was last delivered (ms).
    pub last_success_ms: Option<i64>,
    /// Why the last failed attempt failed.
    pub last_error: Option<String>,
    /// When it failed (ms).
    pub last_error_ms: Option<i64>,
    /// Messages delivered.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Events dropped: the outbox was full, or their message's retries ran out.
    pub dropped: u64,
}

/// The notifier's store: lease, state, outboxes and deliveries (see the module). The memory
/// and Redis stores have it; safe under concurrent use, every call bounded in time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait NotifyStore: Send + Sync {
    /// Take the notifier's lease for `holder`, or renew it when `holder` has it, for `ttl`;
    /// `false` when another holder has it.
    async fn notify_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Give the lease up if `holder` has it (at shutdown, so that another replica takes
    /// over at once).
    async fn notify_release(&self, holder: &str) -> Result<(), StoreError>;

    /// The failure groups whose mark comes after `after` (all when `None`) and was last
    /// seen at `until_ms` or before, oldest first, at most `max`. A store split into shards
    /// keeps a group per shard that holds failures of it, so a signature may come once per
    /// such shard, each mark with that shard's last failure.
    async fn groups_after(
        &self,
        after: Option<GroupMark>,
        until_ms: i64,
        max: usize,
    ) -> Result<Vec<GroupMark>, StoreError>;

    /// The failure group of `signature`, if it has stored members.
    async fn group(&self, signature: &ErrorSignature) -> Result<Option<FailureGroup>, StoreError>;

    /// The state values, and when each of `signatures` was last seen.
    async fn notify_state(&self, signatures: &[ErrorSignature]) -> Result<NotifyState, StoreError>;

    /// Write `commit` in one atomic step if `holder` holds the lease.
    async fn notify_commit(
        &self,
        holder: &str,
        commit: &NotifyCommit,
    ) -> Result<CommitReport, StoreError>;

    /// The oldest `max` events of `target`'s outbox.
    async fn outbox(&self, target: &str, max: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// `target`'s delivery.
    async fn target_delivery(&self, target: &str) -> Result<TargetDelivery, StoreError>;

    /// Make `pending` the message in flight of `target` and take the outbox entries
    /// `covered` (the events it carries) out, in one step, if `holder` holds the lease and
    /// no message is in flight; `false` otherwise (nothing written).
    async fn begin_delivery(
        &self,
        holder: &str,
        target: &str,
        pending: &Pending,
        covered: &[String],
    ) -> Result<bool, StoreError>;

    /// Record how an attempt at `target`'s message `id` ended, if `holder` holds the lease
    /// and that message is still in flight; `false` otherwise.
    async fn settle_delivery(
        &self,
        holder: &str,
        target: &str,
        id: &str,
        settle: &Settle,
    ) -> Result<bool, StoreError>;
}
