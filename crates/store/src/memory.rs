//! The embedded default store: everything in process memory, indexed like the Redis store.
//!
//! One `BTreeSet` per index holds [`IndexKey`]s in listing order, so a page is a range walk:
//! O(log N + page) for the unfiltered listing and for a single equality filter. With a time
//! filter, or several filters at once, the page walks the smallest matching index and the
//! total is counted over that index's range, so both cost O(matches of that index), never a
//! sort. Nothing survives a restart: this store is for development, demos and tests.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use failed_tasks_domain::stats::{minute_of, MinuteCounts};
use failed_tasks_domain::{
    ClientId, Cursor, ErrorCategory, ErrorCode, ErrorPattern, ErrorSignature, FailedTask,
    FailureGroup, GroupCursor, GroupPage, GroupQuery, ListQuery, TaskId, TaskType, Timestamp,
};

use crate::{FailedTaskPage, RecordOutcome, StatusStore, StoreError};

/// A task's place in an index: ordering ascending by this key lists newest first, then by
/// task id descending, exactly like [`failed_tasks_domain::SortKey`].
type IndexKey = (Reverse<i64>, Reverse<String>);

fn index_key(task: &FailedTask) -> IndexKey {
    (
        Reverse(task.fail_time().unix_millis()),
        Reverse(task.task_id().as_str().to_owned()),
    )
}

/// An in-memory [`StatusStore`], safe to share between tasks (`Arc<MemoryStore>`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Indexes>,
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
    /// Task attempts per minute, by task type.
    attempts: BTreeMap<i64, HashMap<TaskType, u64>>,
    /// Failure groups by signature; their members double as the signature index.
    groups: HashMap<ErrorSignature, GroupState>,
    /// Groups by last seen, newest first, then signature descending.
    group_order: BTreeSet<(Reverse<i64>, Reverse<ErrorSignature>)>,
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

impl Indexes {
    fn insert(&mut self, task: FailedTask) -> RecordOutcome {
        let outcome = match self.remove(task.task_id()) {
            Some(_) => RecordOutcome::Updated,
            None => RecordOutcome::Created,
        };
        let key = index_key(&task);
        self.all.insert(key.clone());
        insert_into(&mut self.by_category, task.error_category(), key.clone());
        insert_into(
            &mut self.by_task_type,
            task.task_type().clone(),
            key.clone(),
        );
        insert_into(&mut self.by_client, task.client_id().clone(), key.clone());
        insert_into(&mut self.by_error_code, task.error_code().clone(), key);
        self.join_group(&task, index_key(&task));
        let minute = minute_of(task.fail_time());
        self.minutes
            .entry(minute)
            .or_insert_with(|| MinuteCounts {
                minute,
                ..MinuteCounts::default()
            })
            .apply(&task, 1);
        self.by_id.insert(task.task_id().clone(), task);
        outcome
    }

    fn remove(&mut self, id: &TaskId) -> Option<FailedTask> {
        let task = self.by_id.remove(id)?;
        let key = index_key(&task);
        self.all.remove(&key);
        remove_from(&mut self.by_category, &task.error_category(), &key);
        remove_from(&mut self.by_task_type, task.task_type(), &key);
        remove_from(&mut self.by_client, task.client_id(), &key);
        remove_from(&mut self.by_error_code, task.error_code(), &key);
        self.leave_group(&task, &key);
        let minute = minute_of(task.fail_time());
        if let Some(counts) = self.minutes.get_mut(&minute) {
            counts.apply(&task, -1);
            if counts.total == 0 {
                self.minutes.remove(&minute);
            }
        }
        Some(task)
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
            (single_equality_filter || filter.matches(task)).then_some(task)
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
        FailedTaskPage {
            total,
            tasks,
            next_cursor,
            skipped_corrupt: 0,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        Ok(self.write().insert(task.clone()))
    }

    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        Ok(self.write().remove(task_id).is_some())
    }

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

    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        // One lock for the whole batch: readers see all of it or none of it.
        let mut indexes = self.write();
        Ok(tasks.iter().map(|t| indexes.insert(t.clone())).collect())
    }
}
