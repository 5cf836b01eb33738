//! Retries: each task's schedule, the due set, attempt history and resolved tombstones, and
//! [`RetryStore`] over them (due retries move into the [`queue`](super::queue) under the
//! store's lock).

use std::cmp::Reverse;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::stats::{minute_of, MinuteCounts};
use failed_tasks_domain::{
    FailedTask, GateId, GateStatus, NextRetry, RetryFiles, RetryGate, RetryPlan, RetryRequest,
    RetryStatus, ScheduledBy, TaskId, TaskSuccess, Timestamp,
};

use super::indexes::Indexes;

/// How a resolved task is counted.
#[derive(Debug, Clone, Copy)]
enum Resolution {
    /// Its retry succeeded.
    Recovered,
    /// A later run of its task type, client and codebase succeeded.
    Superseded,
}
use super::MemoryStore;
use crate::{
    CancelRetry, CreateGate, DeliverReport, RecordOutcome, Resolve, RetryDetails, RetryGauges,
    RetryNow, RetryStore, StoreError,
};

/// A task's retry schedule as the memory store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sched {
    /// A retry is scheduled (in the due set) or delivered (no longer in it).
    Scheduled(NextRetry),
    Final,
    /// Recorded without a plan.
    NotPlanned,
    /// The scheduled retry of the task's next attempt was cancelled.
    Cancelled,
}

impl Sched {
    pub(super) fn status(self) -> RetryStatus {
        match self {
            Sched::Scheduled(n) => RetryStatus::Scheduled(n),
            Sched::Final => RetryStatus::Final,
            Sched::NotPlanned | Sched::Cancelled => RetryStatus::Unscheduled,
        }
    }
}

/// Most resolved task ids remembered (to answer a late retry request with "resolved"); the
/// store keeps everything else in memory too, so this only bounds what resolving adds.
pub(super) const MAX_TOMBSTONES: usize = 100_000;

impl Indexes {
    fn sched_of(&self, id: &TaskId) -> Sched {
        self.sched.get(id).copied().unwrap_or(Sched::NotPlanned)
    }

    pub(super) fn status_of(&self, id: &TaskId) -> RetryStatus {
        self.sched_of(id).status()
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
        if !self.resolve_as(id, at, Resolution::Recovered) {
            return if self.resolved.contains_key(id) {
                Resolve::AlreadyResolved
            } else {
                Resolve::NotFound
            };
        }
        Resolve::Resolved
    }

    /// Take `id` out of the failed tasks (every index, group, the due set), remember it as
    /// resolved, and count it in the minute of `at` as `how`; `false` when not stored.
    fn resolve_as(&mut self, id: &TaskId, at: Timestamp, how: Resolution) -> bool {
        if self.unrecord(id, false).is_none() {
            return false;
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
        let counts = self.minutes.entry(minute).or_insert_with(|| MinuteCounts {
            minute,
            ..MinuteCounts::default()
        });
        match how {
            Resolution::Recovered => counts.recovered += 1,
            Resolution::Superseded => counts.superseded += 1,
        }
        true
    }

    /// Resolve as superseded every failure `success` supersedes (from the client's index).
    fn supersede(&mut self, success: &TaskSuccess) -> u64 {
        let before = success.time.unix_millis();
        let ids: Vec<TaskId> = self
            .by_client
            .get(&success.client_id)
            .into_iter()
            .flat_map(|keys| keys.iter())
            .filter(|(Reverse(ms), _)| *ms < before)
            .filter_map(|(_, Reverse(id))| TaskId::parse(id.as_str()).ok())
            .filter(|id| self.by_id.get(id).is_some_and(|t| success.supersedes(t)))
            .collect();
        ids.iter()
            .filter(|id| self.resolve_as(id, success.time, Resolution::Superseded))
            .count() as u64
    }

    /// The request for `task`'s retry `next`, with its failed files: in this process every
    /// path is handed over inline (there is no key to read them from).
    fn request_for(&self, task: &FailedTask, next: &NextRetry) -> RetryRequest {
        let mut request = RetryRequest::for_task(task, next);
        request.files = self.files.get(task.task_id()).map(|f| RetryFiles {
            failed_files: f.failed_files(),
            paths: f
                .files()
                .map(|list| list.iter().map(|x| x.path.as_str().to_owned()).collect()),
            files_key: None,
        });
        request
    }

    /// Take up to `max` retries due at `now` out of the due set, as requests.
    fn take_due(&mut self, now: Timestamp, max: usize) -> (Vec<RetryRequest>, u64, bool, u64) {
        self.lapse_gates(now);
        if !self.gates.is_empty() {
            let step = self.take_due_gated(now, max);
            let out = step
                .delivered
                .iter()
                .filter_map(|(_, id)| match (self.by_id.get(id), self.sched_of(id)) {
                    (Some(task), Sched::Scheduled(n)) => Some(self.request_for(task, &n)),
                    _ => None,
                })
                .collect();
            return (out, step.dropped, self.due_left(now), step.held);
        }
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
                (Some(task), Sched::Scheduled(n)) => out.push(self.request_for(task, &n)),
                _ => dropped += 1,
            }
        }
        (out, dropped, self.due_left(now), 0)
    }

    /// Whether retries due at `now` are left in the due set.
    fn due_left(&self, now: Timestamp) -> bool {
        self.due
            .first()
            .is_some_and(|(at, _)| *at <= now.unix_millis())
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

    async fn supersede(&self, success: &TaskSuccess) -> Result<u64, StoreError> {
        Ok(self.write().supersede(success))
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
            waiting: indexes.due_of.contains_key(task_id),
        }))
    }

    async fn deliver_due(&self, now: Timestamp, max: usize) -> Result<DeliverReport, StoreError> {
        // The queue is filled under the store's lock: an entry leaves the due set exactly
        // when it enters the queue.
        let mut indexes = self.write();
        let (requests, dropped, more, held) = indexes.take_due(now, max);
        let moved = requests.len() as u64;
        self.queue.push(requests);
        Ok(DeliverReport {
            locked_out: false,
            moved,
            dropped,
            more,
            held,
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

    async fn create_gate(
        &self,
        gate: &RetryGate,
        now: Timestamp,
    ) -> Result<CreateGate, StoreError> {
        Ok(self.write().create_gate(gate, now))
    }

    async fn release_gate(&self, id: &GateId) -> Result<bool, StoreError> {
        Ok(self.write().release_gate(id))
    }

    async fn pass_gate(&self, id: &GateId, passes: u32) -> Result<bool, StoreError> {
        Ok(self.write().pass_gate(id, passes))
    }

    async fn list_gates(&self, now: Timestamp) -> Result<Vec<GateStatus>, StoreError> {
        Ok(self.read().list_gates(now))
    }
}
