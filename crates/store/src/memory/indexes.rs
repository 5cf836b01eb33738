//! The indexes: every task under the store's one lock, in listing order per index, kept
//! in step by one upsert and one un-recording; a page is a range walk of the narrowest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::ops::Bound;

use failed_tasks_domain::scheduling::MAX_ATTEMPT_HISTORY;
use failed_tasks_domain::stats::{minute_of, Bucket, BucketCounts, MinuteCounts};
use failed_tasks_domain::{
    AttemptRecord, ClientId, Cursor, ErrorCategory, ErrorCode, ErrorSignature, FailedTask,
    ListQuery, NextRetry, RetryPlan, RetryState, ScheduledBy, TaskId, TaskType, Timestamp,
};

use super::retries::Sched;
use super::stats::GroupState;
use crate::{FailedTaskPage, RecordOutcome};

/// A task's place in an index: ordering ascending by this key lists newest first, then by
/// task id descending, exactly like [`failed_tasks_domain::SortKey`].
pub(super) type IndexKey = (Reverse<i64>, Reverse<String>);

fn index_key(task: &FailedTask) -> IndexKey {
    (
        Reverse(task.fail_time().unix_millis()),
        Reverse(task.task_id().as_str().to_owned()),
    )
}

/// What un-recording a task leaves behind for the upsert that follows.
pub(super) struct Unrecorded {
    pub(super) task: FailedTask,
    sched: Sched,
    /// Its due-set time, when its retry was waiting there.
    due: Option<i64>,
}

#[derive(Debug, Default)]
pub(super) struct Indexes {
    pub(super) by_id: HashMap<TaskId, FailedTask>,
    pub(super) all: BTreeSet<IndexKey>,
    pub(super) by_category: HashMap<ErrorCategory, BTreeSet<IndexKey>>,
    pub(super) by_task_type: HashMap<TaskType, BTreeSet<IndexKey>>,
    pub(super) by_client: HashMap<ClientId, BTreeSet<IndexKey>>,
    pub(super) by_error_code: HashMap<ErrorCode, BTreeSet<IndexKey>>,
    /// Failure counters per minute, kept in step with every insert and remove.
    pub(super) minutes: BTreeMap<i64, MinuteCounts>,
    /// The breakdowns by error code, task type and client per minute and per hour (the
    /// buckets of `failed_tasks_domain::stats`), in step with `minutes`.
    pub(super) tops: BTreeMap<Bucket, BucketCounts>,
    /// Task attempts per minute, by task type.
    pub(super) attempts: BTreeMap<i64, HashMap<TaskType, u64>>,
    /// Failure groups by signature; their members double as the signature index.
    pub(super) groups: HashMap<ErrorSignature, GroupState>,
    /// Groups by last seen, newest first, then signature descending.
    pub(super) group_order: BTreeSet<(Reverse<i64>, Reverse<ErrorSignature>)>,
    /// Each task's retry schedule (absent: recorded without a plan).
    pub(super) sched: HashMap<TaskId, Sched>,
    /// Tasks by retry state (the `retry=` filter's index).
    pub(super) by_retry: HashMap<RetryState, BTreeSet<IndexKey>>,
    /// Scheduled retries not yet delivered, by due time.
    pub(super) due: BTreeSet<(i64, TaskId)>,
    /// Every retry waiting for delivery, in the due set or parked by a gate, and its due time.
    pub(super) due_of: HashMap<TaskId, i64>,
    /// The retry gates and the retries they park.
    pub(super) gates: super::gates::Gates,
    /// The last failed attempts of each task, newest first.
    pub(super) history: HashMap<TaskId, VecDeque<AttemptRecord>>,
    /// Resolved task ids, when they were resolved and in which order (at most
    /// [`MAX_TOMBSTONES`](super::retries::MAX_TOMBSTONES), the oldest forgotten first).
    pub(super) resolved: HashMap<TaskId, (Timestamp, u64)>,
    pub(super) resolved_order: VecDeque<(TaskId, u64)>,
    pub(super) resolved_seq: u64,
    /// The failed files of stored tasks ([`FilesStore`](crate::FilesStore)), apart from the
    /// tasks the pages read; leaving with the task in `unrecord`.
    pub(super) files: HashMap<TaskId, std::sync::Arc<failed_tasks_domain::TaskFiles>>,
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

impl Indexes {
    /// Store `task` with `plan`: the upsert, its schedule and its history entry together.
    pub(super) fn insert(&mut self, task: FailedTask, plan: RetryPlan) -> RecordOutcome {
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
    pub(super) fn index(&mut self, task: FailedTask, sched: Sched, due: Option<i64>, count: bool) {
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

    /// Take `id` out of every index, its group, its schedule and the due set, and (when
    /// `uncount`) out of its minute's counters; its failed files leave with it (an upsert
    /// stores the new failure's afterwards). Its history stays.
    pub(super) fn unrecord(&mut self, id: &TaskId, uncount: bool) -> Option<Unrecorded> {
        let task = self.by_id.remove(id)?;
        self.files.remove(id);
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
            // Waiting in the due set, or parked by a gate: an upsert puts it back in the due
            // set, and the next scheduler step looks at it again.
            self.due.remove(&(at, id.clone()));
            self.gates.unpark(id, at);
        }
        self.leave_group(&task, &key);
        if uncount {
            let minute = minute_of(task.fail_time());
            if let Some(counts) = self.minutes.get_mut(&minute) {
                counts.apply(&task, -1);
                if counts.total == 0 && counts.recovered == 0 && counts.superseded == 0 {
                    self.minutes.remove(&minute);
                }
            }
            self.count_tops(&task, minute, -1);
        }
        Some(Unrecorded { task, sched, due })
    }

    /// Remove a task and its history (a deletion, or the janitor).
    pub(super) fn remove(&mut self, id: &TaskId) -> Option<FailedTask> {
        let gone = self.unrecord(id, true)?;
        self.history.remove(id);
        Some(gone.task)
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

    pub(super) fn list(&self, query: &ListQuery) -> FailedTaskPage {
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
            <= 1
            && !filter.searches();
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
