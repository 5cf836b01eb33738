//! The embedded default store: everything in process memory, indexed like the Redis store.
//!
//! One `BTreeSet` per index holds [`IndexKey`]s in listing order, so a page is a range walk:
//! O(log N + page) for the unfiltered listing and for a single equality filter. With a time
//! filter, or several filters at once, the page walks the smallest matching index and the
//! total is counted over that index's range, so both cost O(matches of that index), never a
//! sort. Nothing survives a restart: this store is for development, demos and tests.
//!
//! It implements [`StatusStore`], [`StatsStore`] and [`RetryStore`] (not
//! [`StoredPages`](crate::StoredPages): it keeps decoded tasks), and
//! [`Stores::from`] claims exactly those.
//!
//! # Retention
//! The store keeps at most [`Retention::max_count`] tasks: a write that goes beyond it drops
//! the oldest tasks (by `FailTime`, the end of the listing) in the same step, so the store
//! cannot grow without bound whatever runs or does not run in the background. Tasks that
//! failed longer ago than [`Retention::max_age`] leave at the next trim step
//! ([`MemoryStore::trim_at`]), which [`MemoryStore::spawn_janitor`] runs periodically, as
//! the Redis janitor does; a trim also drops the per-minute counters and attempts older
//! than the age. Trimmed tasks leave every index, counter and group, like a removal.
//!
//! Retries ([`RetryStore`]) work as on Redis: a due set ordered by due time, changed under
//! the same lock as the record, and an in-process queue ([`MemoryRetryQueue`]) that due
//! retries move into under that lock too, with claims, acknowledgements and leases.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::scheduling::MAX_ATTEMPT_HISTORY;
use failed_tasks_domain::stats::{
    buckets, minute_of, Bucket, BucketCounts, BucketTops, MinuteCounts,
};
use failed_tasks_domain::{
    AttemptRecord, ClientId, Cursor, ErrorCategory, ErrorCode, ErrorPattern, ErrorSignature,
    FailedTask, FailureGroup, GroupCursor, GroupPage, GroupQuery, ListQuery, NextRetry, RetryPlan,
    RetryRequest, RetryState, RetryStatus, ScheduledBy, TaskId, TaskType, Timestamp,
};

use crate::Retention;
use crate::{
    CancelRetry, DeliverReport, Delivery, FailedTaskPage, RecordOutcome, Resolve, RetryDetails,
    RetryGauges, RetryNow, RetryQueue, RetryStore, StatsStore, StatusStore, StoreError, Stores,
};

/// A task's place in an index: ordering ascending by this key lists newest first, then by
/// task id descending, exactly like [`failed_tasks_domain::SortKey`].
type IndexKey = (Reverse<i64>, Reverse<String>);

fn index_key(task: &FailedTask) -> IndexKey {
    (
        Reverse(task.fail_time().unix_millis()),
        Reverse(task.task_id().as_str().to_owned()),
    )
}

/// What a [`MemoryStore`] is built with. `Default` is the documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// What the store keeps (see the module's "Retention").
    pub retention: Retention,
    /// Most requests the retry queue holds (read or not); beyond it the oldest unread ones
    /// are dropped, as a capped Redis stream drops them. 100,000 by default.
    pub retry_queue_cap: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            retry_queue_cap: MemoryStore::DEFAULT_QUEUE_CAP,
        }
    }
}

/// What one [`MemoryStore::trim_at`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryTrimReport {
    /// Tasks that failed longer ago than the maximum age.
    pub removed_by_age: u64,
    /// The oldest tasks beyond the maximum count.
    pub removed_by_count: u64,
}

/// An in-memory [`StatusStore`], [`StatsStore`] and [`RetryStore`], safe to share between
/// tasks (`Arc<MemoryStore>`), keeping what its [`Retention`] allows.
#[derive(Debug)]
pub struct MemoryStore {
    inner: RwLock<Indexes>,
    queue: Arc<Queue>,
    retention: Retention,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_config(MemoryConfig::default())
    }
}

/// A task's retry schedule as the memory store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sched {
    /// A retry is scheduled (in the due set) or delivered (no longer in it).
    Scheduled(NextRetry),
    Final,
    /// Recorded without a plan.
    NotPlanned,
    /// The scheduled retry of the task's next attempt was cancelled.
    Cancelled,
}

impl Sched {
    fn status(self) -> RetryStatus {
        match self {
            Sched::Scheduled(n) => RetryStatus::Scheduled(n),
            Sched::Final => RetryStatus::Final,
            Sched::NotPlanned | Sched::Cancelled => RetryStatus::Unscheduled,
        }
    }
}

/// What un-recording a task leaves behind for the upsert that follows.
struct Unrecorded {
    task: FailedTask,
    sched: Sched,
    /// Its due-set time, when its retry was waiting there.
    due: Option<i64>,
}

#[derive(Debug, Default)]
struct Indexes {
    by_id: HashMap<TaskId, FailedTask>,
    all: BTreeSet<IndexKey>,
    by_category: HashMap<ErrorCategory, BTreeSet<IndexKey>>,
    by_task_type: HashMap<TaskType, BTreeSet<IndexKey>>,
    by_client: HashMap<ClientId, BTreeSet<IndexKey>>,
    by_error_code: HashMap<ErrorCode, BTreeSet<IndexKey>>,
    /// Failure counters per minute, kept in step with every insert and remove.
    minutes: BTreeMap<i64, MinuteCounts>,
    /// The breakdowns by error code, task type and client per minute and per hour (the
    /// buckets of `failed_tasks_domain::stats`), in step with `minutes`.
    tops: BTreeMap<Bucket, BucketCounts>,
    /// Task attempts per minute, by task type.
    attempts: BTreeMap<i64, HashMap<TaskType, u64>>,
    /// Failure groups by signature; their members double as the signature index.
    groups: HashMap<ErrorSignature, GroupState>,
    /// Groups by last seen, newest first, then signature descending.
    group_order: BTreeSet<(Reverse<i64>, Reverse<ErrorSignature>)>,
    /// Each task's retry schedule (absent: recorded without a plan).
    sched: HashMap<TaskId, Sched>,
    /// Tasks by retry state (the `retry=` filter's index).
    by_retry: HashMap<RetryState, BTreeSet<IndexKey>>,
    /// Scheduled retries not yet delivered, by due time.
    due: BTreeSet<(i64, TaskId)>,
    due_of: HashMap<TaskId, i64>,
    /// The last failed attempts of each task, newest first.
    history: HashMap<TaskId, VecDeque<AttemptRecord>>,
    /// Resolved task ids, when they were resolved and in which order (at most
    /// [`MAX_TOMBSTONES`], the oldest forgotten first).
    resolved: HashMap<TaskId, (Timestamp, u64)>,
    resolved_order: VecDeque<(TaskId, u64)>,
    resolved_seq: u64,
}

#[derive(Debug)]
struct GroupState {
    pattern: ErrorPattern,
    members: BTreeSet<IndexKey>,
    clients: HashMap<ClientId, u64>,
}

impl GroupState {
    /// The group's place in `group_order`, from its newest member.
    fn order_key(&self) -> Option<(Reverse<i64>, Reverse<ErrorSignature>)> {
        let newest = self.members.first()?;
        Some((newest.0, Reverse(self.pattern.signature().clone())))
    }

    fn to_group(&self) -> Option<FailureGroup> {
        let newest = self.members.first()?;
        let oldest = self.members.last()?;
        Some(FailureGroup {
            pattern: self.pattern.clone(),
            count: self.members.len() as u64,
            first_seen: Timestamp::saturating_from_unix_millis(oldest.0 .0),
            last_seen: Timestamp::saturating_from_unix_millis(newest.0 .0),
            clients_affected: self.clients.len() as u64,
            sample_task_id: TaskId::parse(newest.1 .0.as_str()).ok()?,
        })
    }
}

fn insert_into<K: Hash + Eq>(map: &mut HashMap<K, BTreeSet<IndexKey>>, k: K, key: IndexKey) {
    map.entry(k).or_default().insert(key);
}

fn remove_from<K: Hash + Eq>(map: &mut HashMap<K, BTreeSet<IndexKey>>, k: &K, key: &IndexKey) {
    if let Some(set) = map.get_mut(k) {
        set.remove(key);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

static EMPTY: BTreeSet<IndexKey> = BTreeSet::new();

/// Most resolved task ids remembered (to answer a late retry request with "resolved"); the
/// store keeps everything else in memory too, so this only bounds what resolving adds.
const MAX_TOMBSTONES: usize = 100_000;

impl Indexes {
    fn sched_of(&self, id: &TaskId) -> Sched {
        self.sched.get(id).copied().unwrap_or(Sched::NotPlanned)
    }

    fn status_of(&self, id: &TaskId) -> RetryStatus {
        self.sched_of(id).status()
    }

    /// Store `task` with `plan`: the upsert, its schedule and its history entry together.
    fn insert(&mut self, task: FailedTask, plan: RetryPlan) -> RecordOutcome {
        let id = task.task_id().clone();
        let old = self.unrecord(&id, true);
        let outcome = match old {
            Some(_) => RecordOutcome::Updated,
            None => RecordOutcome::Created,
        };
        // Who scheduled the attempt that failed now, when this store did.
        let scheduled_by = match old.as_ref().map(|o| o.sched) {
            Some(Sched::Scheduled(n)) if n.attempt == task.retry_count() => Some(n.by),
            _ => None,
        };
        // The same failure again: the retry of its next attempt keeps the schedule it has
        // (waiting, delivered or cancelled), so (TaskId, Attempt) is scheduled once.
        let (sched, due) = match (plan, &old) {
            (RetryPlan::Retry { .. }, Some(o))
                if o.task.retry_count() == task.retry_count()
                    && matches!(o.sched, Sched::Scheduled(_) | Sched::Cancelled) =>
            {
                (o.sched, o.due)
            }
            (RetryPlan::Retry { due }, _) => (
                Sched::Scheduled(NextRetry {
                    attempt: task.retry_count().saturating_add(1),
                    due,
                    by: ScheduledBy::Policy,
                }),
                Some(due.unix_millis()),
            ),
            (RetryPlan::Final, _) => (Sched::Final, None),
            (RetryPlan::NotScheduled, _) => (Sched::NotPlanned, None),
        };
        let history = self.history.entry(id.clone()).or_default();
        let entry = AttemptRecord {
            attempt: task.retry_count(),
            fail_time: task.fail_time(),
            error_code: task.error_code().clone(),
            error_category: task.error_category(),
            scheduled_by,
        };
        match history.front_mut() {
            // The same failure reported again replaces its entry, keeping who scheduled it.
            Some(head) if head.attempt == entry.attempt && head.fail_time == entry.fail_time => {
                let scheduled_by = entry.scheduled_by.or(head.scheduled_by);
                *head = AttemptRecord {
                    scheduled_by,
                    ..entry
                };
            }
            _ => history.push_front(entry),
        }
        history.truncate(MAX_ATTEMPT_HISTORY);
        self.resolved.remove(&id);
        self.index(task, sched, due, true);
        outcome
    }

    /// Add `task` to every index, its group, (when `count`) its minute's counters, and its
    /// schedule.
    fn index(&mut self, task: FailedTask, sched: Sched, due: Option<i64>, count: bool) {
        let key = index_key(&task);
        self.all.insert(key.clone());
        insert_into(&mut self.by_category, task.error_category(), key.clone());
        insert_into(
            &mut self.by_task_type,
            task.task_type().clone(),
            key.clone(),
        );
        insert_into(&mut self.by_client, task.client_id().clone(), key.clone());
        insert_into(
            &mut self.by_error_code,
            task.error_code().clone(),
            key.clone(),
        );
        insert_into(&mut self.by_retry, sched.status().state(), key);
        self.join_group(&task, index_key(&task));
        if count {
            let minute = minute_of(task.fail_time());
            self.minutes
                .entry(minute)
                .or_insert_with(|| MinuteCounts {
                    minute,
                    ..MinuteCounts::default()
                })
                .apply(&task, 1);
            self.count_tops(&task, minute, 1);
        }
        let id = task.task_id().clone();
        if sched == Sched::NotPlanned {
            self.sched.remove(&id);
        } else {
            self.sched.insert(id.clone(), sched);
        }
        if let Some(at) = due {
            self.due.insert((at, id.clone()));
            self.due_of.insert(id.clone(), at);
        }
        self.by_id.insert(id, task);
    }

    /// Count `task` (`delta` +1 or -1) in the breakdowns of its minute and of its hour.
    fn count_tops(&mut self, task: &FailedTask, minute: i64, delta: i64) {
        for bucket in [Bucket::Minute(minute), Bucket::Hour(minute.div_euclid(60))] {
            let counts = self.tops.entry(bucket).or_default();
            counts.apply(task, delta);
            if counts.is_empty() {
                self.tops.remove(&bucket);
            }
        }
    }

    /// Take `id` out of every index, its group, its schedule and the due set, and (when
    /// `uncount`) out of its minute's counters. Its history stays.
    fn unrecord(&mut self, id: &TaskId, uncount: bool) -> Option<Unrecorded> {
        let task = self.by_id.remove(id)?;
        let key = index_key(&task);
        self.all.remove(&key);
        remove_from(&mut self.by_category, &task.error_category(), &key);
        remove_from(&mut self.by_task_type, task.task_type(), &key);
        remove_from(&mut self.by_client, task.client_id(), &key);
        remove_from(&mut self.by_error_code, task.error_code(), &key);
        let sched = self.sched.remove(id).unwrap_or(Sched::NotPlanned);
        remove_from(&mut self.by_retry, &sched.status().state(), &key);
        let due = self.due_of.remove(id);
        if let Some(at) = due {
            self.due.remove(&(at, id.clone()));
        }
        self.leave_group(&task, &key);
        if uncount {
            let minute = minute_of(task.fail_time());
            if let Some(counts) = self.minutes.get_mut(&minute) {
                counts.apply(&task, -1);
                if counts.total == 0 && counts.recovered == 0 {
                    self.minutes.remove(&minute);
                }
            }
            self.count_tops(&task, minute, -1);
        }
        Some(Unrecorded { task, sched, due })
    }

    /// Remove a task and its history (a deletion, or the janitor).
    fn remove(&mut self, id: &TaskId) -> Option<FailedTask> {
        let gone = self.unrecord(id, true)?;
        self.history.remove(id);
        Some(gone.task)
    }

    /// Change a stored task's schedule (retry now, cancel): re-index it under its new state.
    fn reschedule(&mut self, id: &TaskId, sched: Sched, due: Option<i64>) {
        if let Some(old) = self.unrecord(id, false) {
            self.index(old.task, sched, due, false);
        }
    }

    fn retry_now(&mut self, id: &TaskId, now: Timestamp) -> RetryNow {
        let Some(task) = self.by_id.get(id) else {
            return if self.resolved.contains_key(id) {
                RetryNow::Resolved
            } else {
                RetryNow::NotFound
            };
        };
        let attempt = task.retry_count().saturating_add(1);
        if let Sched::Scheduled(n) = self.sched_of(id) {
            if !self.due_of.contains_key(id) {
                return RetryNow::AlreadyDelivered { attempt: n.attempt };
            }
        }
        let next = NextRetry {
            attempt,
            due: now,
            by: ScheduledBy::Operator,
        };
        self.reschedule(id, Sched::Scheduled(next), Some(now.unix_millis()));
        RetryNow::Scheduled { attempt }
    }

    fn cancel(&mut self, id: &TaskId) -> CancelRetry {
        if !self.by_id.contains_key(id) {
            return if self.resolved.contains_key(id) {
                CancelRetry::Resolved
            } else {
                CancelRetry::NotFound
            };
        }
        match self.sched_of(id) {
            Sched::Scheduled(n) if self.due_of.contains_key(id) => {
                self.reschedule(id, Sched::Cancelled, None);
                CancelRetry::Cancelled { attempt: n.attempt }
            }
            Sched::Scheduled(n) => CancelRetry::AlreadyDelivered { attempt: n.attempt },
            Sched::Final | Sched::NotPlanned | Sched::Cancelled => CancelRetry::NotScheduled,
        }
    }

    fn resolve(&mut self, id: &TaskId, at: Timestamp) -> Resolve {
        if self.unrecord(id, false).is_none() {
            return if self.resolved.contains_key(id) {
                Resolve::AlreadyResolved
            } else {
                Resolve::NotFound
            };
        }
        self.history.remove(id);
        self.resolved_seq += 1;
        self.resolved.insert(id.clone(), (at, self.resolved_seq));
        self.resolved_order
            .push_back((id.clone(), self.resolved_seq));
        while self.resolved_order.len() > MAX_TOMBSTONES {
            if let Some((old, seq)) = self.resolved_order.pop_front() {
                if self.resolved.get(&old).is_some_and(|(_, s)| *s == seq) {
                    self.resolved.remove(&old);
                }
            }
        }
        let minute = minute_of(at);
        self.minutes
            .entry(minute)
            .or_insert_with(|| MinuteCounts {
                minute,
                ..MinuteCounts::default()
            })
            .recovered += 1;
        Resolve::Resolved
    }

    /// Remove the oldest tasks (the end of the listing order) beyond `max`.
    fn trim_to_count(&mut self, max: u64) -> u64 {
        let mut removed = 0;
        while self.by_id.len() as u64 > max {
            let Some((_, Reverse(id))) = self.all.last().cloned() else {
                break;
            };
            let Ok(id) = TaskId::parse(id) else { break };
            if self.remove(&id).is_none() {
                break;
            }
            removed += 1;
        }
        removed
    }

    /// Remove the tasks that failed before `oldest_ms`, and the minute counters and attempts
    /// of the minutes before it.
    fn trim_older_than(&mut self, oldest_ms: i64) -> u64 {
        let mut removed = 0;
        while let Some((Reverse(fail_ms), Reverse(id))) = self.all.last().cloned() {
            if fail_ms >= oldest_ms {
                break;
            }
            let Ok(id) = TaskId::parse(id) else { break };
            if self.remove(&id).is_none() {
                break;
            }
            removed += 1;
        }
        let first_kept = minute_of(Timestamp::saturating_from_unix_millis(oldest_ms));
        self.minutes = self.minutes.split_off(&first_kept);
        // Emptied by the removals already; this only drops what a corrupt state left.
        self.tops.retain(|b, _| match b {
            Bucket::Minute(m) => *m >= first_kept,
            Bucket::Hour(h) => (h + 1) * 60 > first_kept,
        });
        self.attempts = self.attempts.split_off(&first_kept);
        removed
    }

    /// Take up to `max` retries due at `now` out of the due set, as requests.
    fn take_due(&mut self, now: Timestamp, max: usize) -> (Vec<RetryRequest>, u64, bool) {
        let mut out = Vec::new();
        let mut dropped = 0;
        while out.len() + (dropped as usize) < max {
            let Some((at, id)) = self.due.first().cloned() else {
                break;
            };
            if at > now.unix_millis() {
                break;
            }
            self.due.remove(&(at, id.clone()));
            self.due_of.remove(&id);
            match (self.by_id.get(&id), self.sched_of(&id)) {
                (Some(task), Sched::Scheduled(n)) => out.push(RetryRequest::for_task(task, &n)),
                _ => dropped += 1,
            }
        }
        let more = self
            .due
            .first()
            .is_some_and(|(at, _)| *at <= now.unix_millis());
        (out, dropped, more)
    }

    fn join_group(&mut self, task: &FailedTask, key: IndexKey) {
        let pattern = ErrorPattern::of_task(task);
        let sig = pattern.signature().clone();
        let state = self.groups.entry(sig).or_insert_with(|| GroupState {
            pattern,
            members: BTreeSet::new(),
            clients: HashMap::new(),
        });
        if let Some(old) = state.order_key() {
            self.group_order.remove(&old);
        }
        state.members.insert(key);
        *state.clients.entry(task.client_id().clone()).or_default() += 1;
        if let Some(new) = state.order_key() {
            self.group_order.insert(new);
        }
    }

    fn leave_group(&mut self, task: &FailedTask, key: &IndexKey) {
        let sig = ErrorSignature::of_task(task);
        let Some(state) = self.groups.get_mut(&sig) else {
            return;
        };
        if let Some(old) = state.order_key() {
            self.group_order.remove(&old);
        }
        state.members.remove(key);
        if let Some(n) = state.clients.get_mut(task.client_id()) {
            *n -= 1;
            if *n == 0 {
                state.clients.remove(task.client_id());
            }
        }
        match state.order_key() {
            Some(new) => {
                self.group_order.insert(new);
            }
            None => {
                self.groups.remove(&sig);
            }
        }
    }

    fn list_groups(&self, query: &GroupQuery) -> GroupPage {
        let start = match &query.cursor {
            Some(c) => Bound::Excluded((
                Reverse(c.last_seen().unix_millis()),
                Reverse(c.signature().clone()),
            )),
            None => Bound::Unbounded,
        };
        let size = query.page_size.as_usize();
        let mut walk = self
            .group_order
            .range((start, Bound::Unbounded))
            .filter_map(|(_, Reverse(sig))| self.groups.get(sig)?.to_group());
        let groups: Vec<FailureGroup> = walk.by_ref().take(size).collect();
        let next_cursor = match (groups.last(), walk.next()) {
            (Some(last), Some(_)) => Some(GroupCursor::after(last)),
            _ => None,
        };
        GroupPage {
            total: self.groups.len() as u64,
            groups,
            next_cursor,
        }
    }

    /// The smallest index that every match must be in.
    fn narrowest(&self, query: &ListQuery) -> &BTreeSet<IndexKey> {
        let f = &query.filter;
        let mut best = &self.all;
        let candidates = [
            f.category.map(|c| self.by_category.get(&c)),
            f.task_type.as_ref().map(|t| self.by_task_type.get(t)),
            f.client_id.as_ref().map(|c| self.by_client.get(c)),
            f.error_code.as_ref().map(|c| self.by_error_code.get(c)),
            f.signature
                .as_ref()
                .map(|s| self.groups.get(s).map(|g| &g.members)),
            f.retry.map(|r| self.by_retry.get(&r)),
        ];
        for candidate in candidates.into_iter().flatten() {
            let set = candidate.unwrap_or(&EMPTY);
            if set.len() < best.len() {
                best = set;
            }
        }
        best
    }

    fn list(&self, query: &ListQuery) -> FailedTaskPage {
        let filter = &query.filter;
        let index = self.narrowest(query);
        // Only the index's own equality filter is implied by membership; check the rest.
        let single_equality_filter = [
            filter.category.is_some(),
            filter.task_type.is_some(),
            filter.client_id.is_some(),
            filter.error_code.is_some(),
            filter.signature.is_some(),
            filter.retry.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count()
            <= 1;
        let timeless = filter.since.is_none() && filter.until.is_none();

        // Start of the time window: the first key that failed at or before `until`.
        let window_start: Bound<IndexKey> = match filter.until {
            Some(until) if until.unix_millis() < Timestamp::MAX_MILLIS => {
                Bound::Excluded((Reverse(until.unix_millis() + 1), Reverse(String::new())))
            }
            _ => Bound::Unbounded,
        };
        let since = filter.since.map(Timestamp::unix_millis);
        let in_window = |k: &&IndexKey| since.is_none_or(|s| k.0 .0 >= s);
        let matches = |k: &IndexKey| -> Option<&FailedTask> {
            let task = self.by_id.get(k.1 .0.as_str())?;
            (single_equality_filter
                || (filter.matches(task) && filter.matches_status(&self.status_of(task.task_id()))))
            .then_some(task)
        };

        let total = if single_equality_filter && timeless {
            index.len() as u64
        } else {
            index
                .range((window_start.clone(), Bound::Unbounded))
                .take_while(in_window)
                .filter(|k| matches(k).is_some())
                .count() as u64
        };

        // Start of the page: after the cursor, or at the window start, whichever is later.
        let page_start = match &query.cursor {
            Some(cursor) => {
                let pos = cursor.position();
                let after: IndexKey = (
                    Reverse(pos.fail_time().unix_millis()),
                    Reverse(pos.task_id().as_str().to_owned()),
                );
                match &window_start {
                    Bound::Excluded(w) if *w > after => window_start.clone(),
                    _ => Bound::Excluded(after),
                }
            }
            None => window_start,
        };

        let size = query.page_size.as_usize();
        let mut walk = index
            .range((page_start, Bound::Unbounded))
            .take_while(in_window)
            .filter_map(matches);
        let tasks: Vec<FailedTask> = walk.by_ref().take(size).cloned().collect();
        let next_cursor = match (tasks.last(), walk.next()) {
            (Some(last), Some(_)) => Some(Cursor::after(last.sort_key())),
            _ => None,
        };
        let retry = tasks.iter().map(|t| self.status_of(t.task_id())).collect();
        FailedTaskPage {
            total,
            tasks,
            next_cursor,
            skipped_corrupt: 0,
            retry,
        }
    }
}

impl MemoryStore {
    /// Most requests the retry queue holds (read or not) by default; beyond it the oldest
    /// unread ones are dropped, as a capped Redis stream drops them.
    pub const DEFAULT_QUEUE_CAP: usize = 100_000;

    /// An empty store with the default [`MemoryConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store built with `config`.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            inner: RwLock::default(),
            queue: Arc::new(Queue::new(config.retry_queue_cap.max(1))),
            retention: config.retention,
        }
    }

    /// An empty store whose retry queue holds at most `cap` requests.
    pub fn with_queue_cap(cap: usize) -> Self {
        Self::with_config(MemoryConfig {
            retry_queue_cap: cap,
            ..MemoryConfig::default()
        })
    }

    /// The retention in force.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// One trim step as of `now`: remove the tasks that failed longer ago than the maximum
    /// age (and the counters of those minutes), then the oldest beyond the maximum count.
    /// [`spawn_janitor`](Self::spawn_janitor) runs it periodically; tests call it directly.
    pub fn trim_at(&self, now: Timestamp) -> MemoryTrimReport {
        let max_age = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let oldest = now.unix_millis().saturating_sub(max_age);
        let mut indexes = self.write();
        let removed_by_age = indexes.trim_older_than(oldest);
        let removed_by_count = indexes.trim_to_count(self.retention.max_count);
        MemoryTrimReport {
            removed_by_age,
            removed_by_count,
        }
    }

    /// Run [`trim_at`](Self::trim_at) with the current time every
    /// [`Retention::janitor_interval`] in a background task (on the current tokio runtime)
    /// until the handle is dropped or stopped.
    pub fn spawn_janitor(self: &Arc<Self>) -> MemoryJanitor {
        let store = Arc::downgrade(self);
        let every = self
            .retention
            .janitor_interval
            .max(Duration::from_millis(10));
        crate::Background::every(every, move || {
            // The janitor does not keep a dropped store alive.
            let store = store.upgrade();
            async move {
                let Some(store) = store else {
                    return std::ops::ControlFlow::Break(());
                };
                let r = store.trim_at(Timestamp::now());
                if r.removed_by_age + r.removed_by_count > 0 {
                    tracing::info!(
                        removed_by_age = r.removed_by_age,
                        removed_by_count = r.removed_by_count,
                        "memory store trimmed failed tasks"
                    );
                }
                std::ops::ControlFlow::Continue(())
            }
        })
    }

    /// Store a batch under one lock, then drop the oldest tasks beyond the maximum count.
    fn insert_all<'a>(
        &self,
        batch: impl Iterator<Item = (&'a FailedTask, RetryPlan)>,
    ) -> Vec<RecordOutcome> {
        let mut indexes = self.write();
        let outcomes = batch
            .map(|(t, plan)| indexes.insert(t.clone(), plan))
            .collect();
        indexes.trim_to_count(self.retention.max_count);
        outcomes
    }

    /// A worker's handle on this store's retry queue (all handles share one queue, like the
    /// consumers of one Redis consumer group).
    pub fn retry_queue(&self) -> MemoryRetryQueue {
        MemoryRetryQueue {
            queue: self.queue.clone(),
        }
    }

    /// How many tasks are stored.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether no task is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock cannot leave the indexes half-updated (no code path
    // panics between the paired inserts and removes), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Indexes> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Indexes> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running trim loop of a [`MemoryStore`] ([`MemoryStore::spawn_janitor`]); dropping it
/// stops it.
pub type MemoryJanitor = crate::Background;

/// The memory store's capabilities: tasks, statistics and retries.
impl From<Arc<MemoryStore>> for Stores {
    fn from(store: Arc<MemoryStore>) -> Self {
        Stores::new("memory", store.clone())
            .with_stats(store.clone())
            .with_retries(store)
    }
}

impl From<MemoryStore> for Stores {
    fn from(store: MemoryStore) -> Self {
        Stores::from(Arc::new(store))
    }
}

#[async_trait]
impl StatusStore for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        Ok(self.read().list(query))
    }

    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        Ok(self.read().by_id.get(task_id).cloned())
    }

    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        let mut outcomes = self.insert_all(std::iter::once((task, RetryPlan::NotScheduled)));
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Internal("no outcome for one task".to_owned()))
    }

    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        // One lock for the whole batch: readers see all of it or none of it.
        Ok(self.insert_all(tasks.iter().map(|t| (t, RetryPlan::NotScheduled))))
    }

    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        Ok(self.write().remove(task_id).is_some())
    }
}

#[async_trait]
impl StatsStore for MemoryStore {
    async fn failure_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        if from_minute >= to_minute {
            return Ok(Vec::new());
        }
        Ok(self
            .read()
            .minutes
            .range(from_minute..to_minute)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn failure_tops(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<BucketTops>, StoreError> {
        let indexes = self.read();
        Ok(buckets(from_minute, to_minute)
            .into_iter()
            .filter_map(|b| Some(indexes.tops.get(&b)?.tops(b)))
            .collect())
    }

    async fn record_attempts(
        &self,
        task_type: &TaskType,
        minute: i64,
        count: u64,
    ) -> Result<(), StoreError> {
        let mut indexes = self.write();
        let n = indexes
            .attempts
            .entry(minute)
            .or_default()
            .entry(task_type.clone())
            .or_default();
        *n = n.saturating_add(count);
        Ok(())
    }

    async fn attempt_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        if from_minute >= to_minute {
            return Ok(Vec::new());
        }
        let per: Vec<(i64, u64)> = self
            .read()
            .attempts
            .range(from_minute..to_minute)
            .map(|(minute, by_type)| (*minute, by_type.values().sum()))
            .collect();
        Ok(per)
    }

    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, StoreError> {
        Ok(self.read().list_groups(query))
    }
}

#[async_trait]
impl RetryStore for MemoryStore {
    async fn record_planned(
        &self,
        batch: &[(FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        Ok(self.insert_all(batch.iter().map(|(t, plan)| (t, *plan))))
    }

    async fn retry_now(&self, task_id: &TaskId, now: Timestamp) -> Result<RetryNow, StoreError> {
        Ok(self.write().retry_now(task_id, now))
    }

    async fn cancel_retry(&self, task_id: &TaskId) -> Result<CancelRetry, StoreError> {
        Ok(self.write().cancel(task_id))
    }

    async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, StoreError> {
        Ok(self.write().resolve(task_id, at))
    }

    async fn retry_details(&self, task_id: &TaskId) -> Result<Option<RetryDetails>, StoreError> {
        let indexes = self.read();
        if !indexes.by_id.contains_key(task_id) {
            return Ok(None);
        }
        Ok(Some(RetryDetails {
            status: indexes.status_of(task_id),
            attempts: indexes
                .history
                .get(task_id)
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
        }))
    }

    async fn deliver_due(&self, now: Timestamp, max: usize) -> Result<DeliverReport, StoreError> {
        // The queue is filled under the store's lock: an entry leaves the due set exactly
        // when it enters the queue.
        let mut indexes = self.write();
        let (requests, dropped, more) = indexes.take_due(now, max);
        let moved = requests.len() as u64;
        self.queue.push(requests);
        Ok(DeliverReport {
            locked_out: false,
            moved,
            dropped,
            more,
        })
    }

    async fn retry_gauges(&self, now: Timestamp) -> Result<RetryGauges, StoreError> {
        let (scheduled, due, oldest) = {
            let indexes = self.read();
            let due = indexes
                .due
                .iter()
                .take_while(|(at, _)| *at <= now.unix_millis())
                .count() as u64;
            let oldest = indexes
                .due
                .first()
                .map(|(at, _)| now.unix_millis().saturating_sub(*at).max(0));
            (indexes.due.len() as u64, due, oldest.unwrap_or(0))
        };
        let q = self.queue.lock();
        Ok(RetryGauges {
            scheduled,
            due,
            oldest_due_age: Duration::from_millis(u64::try_from(oldest).unwrap_or(0)),
            queued: (q.unread.len() + q.pending.len()) as u64,
            pending: q.pending.len() as u64,
            reclaimed: q.reclaimed,
        })
    }
}

/// The in-process retry queue: requests wait unread until claimed, then pending until
/// acknowledged or reclaimed after their lease.
#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes claims waiting for requests.
    arrived: tokio::sync::Notify,
}

#[derive(Debug)]
struct QueueState {
    cap: usize,
    next_id: u64,
    unread: VecDeque<(u64, RetryRequest)>,
    pending: BTreeMap<u64, Pending>,
    reclaimed: u64,
    /// Unread requests dropped because the queue was full.
    trimmed: u64,
}

#[derive(Debug)]
struct Pending {
    request: RetryRequest,
    since: tokio::time::Instant,
    deliveries: u64,
}

impl Queue {
    fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                cap,
                next_id: 1,
                unread: VecDeque::new(),
                pending: BTreeMap::new(),
                reclaimed: 0,
                trimmed: 0,
            }),
            arrived: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, requests: Vec<RetryRequest>) {
        if requests.is_empty() {
            return;
        }
        let mut q = self.lock();
        for r in requests {
            let id = q.next_id;
            q.next_id += 1;
            q.unread.push_back((id, r));
        }
        while q.unread.len() + q.pending.len() > q.cap && q.unread.pop_front().is_some() {
            q.trimmed += 1;
        }
        drop(q);
        self.arrived.notify_waiters();
    }

    fn take(&self, max: usize) -> Vec<Delivery> {
        let mut q = self.lock();
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((id, request)) = q.unread.pop_front() else {
                break;
            };
            out.push(Delivery {
                id: id.to_string(),
                request: request.clone(),
                deliveries: 1,
            });
            q.pending.insert(
                id,
                Pending {
                    request,
                    since: now,
                    deliveries: 1,
                },
            );
        }
        out
    }
}

/// A worker's handle on a [`MemoryStore`]'s retry queue ([`MemoryStore::retry_queue`]).
#[derive(Debug, Clone)]
pub struct MemoryRetryQueue {
    queue: Arc<Queue>,
}

impl MemoryRetryQueue {
    /// Unread requests dropped because the queue was full, since it was created.
    pub fn trimmed(&self) -> u64 {
        self.queue.lock().trimmed
    }
}

#[async_trait]
impl RetryQueue for MemoryRetryQueue {
    async fn claim(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, StoreError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so a push in between is not missed
            // (`notify_waiters` wakes only futures already enabled).
            let arrived = self.queue.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.queue.take(max);
            if !got.is_empty() || max == 0 {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut q = self.queue.lock();
        let mut n = 0;
        for id in ids {
            if let Ok(id) = id.parse::<u64>() {
                if q.pending.remove(&id).is_some() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn reclaim_stale(
        &self,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut q = self.queue.lock();
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        for (id, p) in q.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if now.duration_since(p.since) >= lease {
                p.since = now;
                p.deliveries += 1;
                out.push(Delivery {
                    id: id.to_string(),
                    request: p.request.clone(),
                    deliveries: p.deliveries,
                });
            }
        }
        q.reclaimed += out.len() as u64;
        Ok(out)
    }
}
