//! Statistics: the per-minute counters and per-bucket breakdowns kept with every write,
//! the failure groups, and [`StatsStore`] over them.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use async_trait::async_trait;
use failed_tasks_domain::stats::{buckets, Bucket, BucketTops, MinuteCounts};
use failed_tasks_domain::{
    ClientId, ErrorPattern, ErrorSignature, FailedTask, FailureGroup, GroupCursor, GroupPage,
    GroupQuery, TaskId, TaskType, Timestamp,
};

use super::indexes::{IndexKey, Indexes};
use super::MemoryStore;
use crate::{StatsStore, StoreError};

#[derive(Debug)]
pub(super) struct GroupState {
    pattern: ErrorPattern,
    pub(super) members: BTreeSet<IndexKey>,
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

impl Indexes {
    /// Count `task` (`delta` +1 or -1) in the breakdowns of its minute and of its hour.
    pub(super) fn count_tops(&mut self, task: &FailedTask, minute: i64, delta: i64) {
        for bucket in [Bucket::Minute(minute), Bucket::Hour(minute.div_euclid(60))] {
            let counts = self.tops.entry(bucket).or_default();
            counts.apply(task, delta);
            if counts.is_empty() {
                self.tops.remove(&bucket);
            }
        }
    }

    pub(super) fn join_group(&mut self, task: &FailedTask, key: IndexKey) {
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

    pub(super) fn leave_group(&mut self, task: &FailedTask, key: &IndexKey) {
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

    /// The group of `sig`, if it has members.
    pub(super) fn group(&self, sig: &ErrorSignature) -> Option<FailureGroup> {
        self.groups.get(sig)?.to_group()
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
