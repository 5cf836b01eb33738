//! The notifier's lease, state, outboxes and deliveries in process memory
//! ([`NotifyStore`]): one process, so the lease only keeps its own notifiers apart, and
//! everything is lost on restart (documented).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{ErrorSignature, FailureGroup};

use super::MemoryStore;
use crate::notify::{
    CommitReport, GroupMark, NotifyCommit, NotifyState, NotifyStore, OutboxEntry, Pending, Settle,
    TargetDelivery,
};
use crate::StoreError;

/// The notifier's memory.
#[derive(Debug, Default)]
pub(super) struct NotifyMemory {
    lease: super::lease::Lease,
    values: BTreeMap<String, String>,
    seen: HashMap<ErrorSignature, i64>,
    targets: HashMap<String, TargetMemory>,
    /// The next outbox entry id (ids increase across targets).
    next_id: u64,
}

#[derive(Debug, Default)]
struct TargetMemory {
    outbox: VecDeque<(u64, String)>,
    delivery: TargetDelivery,
}

impl NotifyMemory {
    fn holds(&self, holder: &str) -> bool {
        self.lease.holds(holder)
    }
}

impl MemoryStore {
    fn notify_memory(&self) -> std::sync::MutexGuard<'_, NotifyMemory> {
        self.notify
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An outbox id as text, zero-padded so that text order is numeric order.
fn entry_id(n: u64) -> String {
    format!("{n:020}")
}

#[async_trait]
impl NotifyStore for MemoryStore {
    async fn notify_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.notify_memory().lease.take(holder, ttl))
    }

    async fn notify_release(&self, holder: &str) -> Result<(), StoreError> {
        self.notify_memory().lease.release(holder);
        Ok(())
    }

    async fn groups_after(
        &self,
        after: Option<GroupMark>,
        until_ms: i64,
        max: usize,
    ) -> Result<Vec<GroupMark>, StoreError> {
        // `group_order` is newest first: the marks after `after`, oldest first, are the
        // entries before it in that order, walked backwards.
        let end = match &after {
            Some(a) => Bound::Excluded((Reverse(a.last_seen_ms), Reverse(a.signature.clone()))),
            None => Bound::Unbounded,
        };
        let indexes = self.read();
        Ok(indexes
            .group_order
            .range((Bound::Unbounded, end))
            .rev()
            .take_while(|(Reverse(ms), _)| *ms <= until_ms)
            .take(max)
            .map(|(Reverse(ms), Reverse(sig))| GroupMark {
                last_seen_ms: *ms,
                signature: sig.clone(),
            })
            .collect())
    }

    async fn group(&self, signature: &ErrorSignature) -> Result<Option<FailureGroup>, StoreError> {
        Ok(self.read().group(signature))
    }

    async fn notify_state(&self, signatures: &[ErrorSignature]) -> Result<NotifyState, StoreError> {
        let m = self.notify_memory();
        Ok(NotifyState {
            values: m.values.clone(),
            seen: signatures.iter().map(|s| m.seen.get(s).copied()).collect(),
        })
    }

    async fn notify_commit(
        &self,
        holder: &str,
        commit: &NotifyCommit,
    ) -> Result<CommitReport, StoreError> {
        let mut m = self.notify_memory();
        if !m.holds(holder) {
            return Ok(CommitReport {
                lease_lost: true,
                ..CommitReport::default()
            });
        }
        for (key, value) in &commit.state {
            match value {
                Some(v) => m.values.insert(key.clone(), v.clone()),
                None => m.values.remove(key),
            };
        }
        if let Some(before) = commit.forget_seen_before_ms {
            m.seen.retain(|_, ms| *ms >= before);
        }
        for (sig, ms) in &commit.seen {
            let at = m.seen.entry(sig.clone()).or_insert(*ms);
            *at = (*at).max(*ms);
        }
        let mut report = CommitReport::default();
        for (target, body) in &commit.events {
            let id = m.next_id;
            let t = m.targets.entry(target.clone()).or_default();
            if t.outbox.len() as u64 >= commit.outbox_cap {
                t.delivery.dropped += 1;
                report.dropped.push(target.clone());
                continue;
            }
            t.outbox.push_back((id, body.clone()));
            m.next_id += 1;
            report.queued += 1;
        }
        Ok(report)
    }

    async fn outbox(&self, target: &str, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let m = self.notify_memory();
        Ok(m.targets.get(target).map_or_else(Vec::new, |t| {
            t.outbox
                .iter()
                .take(max)
                .map(|(id, body)| OutboxEntry {
                    id: entry_id(*id),
                    body: body.clone(),
                })
                .collect()
        }))
    }

    async fn target_delivery(&self, target: &str) -> Result<TargetDelivery, StoreError> {
        let m = self.notify_memory();
        Ok(m.targets
            .get(target)
            .map_or_else(TargetDelivery::default, |t| TargetDelivery {
                queued: t.outbox.len() as u64,
                ..t.delivery.clone()
            }))
    }

    async fn begin_delivery(
        &self,
        holder: &str,
        target: &str,
        pending: &Pending,
        covered: &[String],
    ) -> Result<bool, StoreError> {
        let mut m = self.notify_memory();
        if !m.holds(holder) {
            return Ok(false);
        }
        let t = m.targets.entry(target.to_owned()).or_default();
        if let Some(current) = &t.delivery.pending {
            // The same message again (a repeated call) is in flight already.
            return Ok(current.id == pending.id);
        }
        t.outbox.retain(|(id, _)| !covered.contains(&entry_id(*id)));
        t.delivery.pending = Some(pending.clone());
        t.delivery.last_started_ms = Some(pending.first_ms);
        Ok(true)
    }

    async fn settle_delivery(
        &self,
        holder: &str,
        target: &str,
        id: &str,
        settle: &Settle,
    ) -> Result<bool, StoreError> {
        let mut m = self.notify_memory();
        if !m.holds(holder) {
            return Ok(false);
        }
        let Some(t) = m.targets.get_mut(target) else {
            return Ok(false);
        };
        let d = &mut t.delivery;
        let Some(pending) = d.pending.as_mut().filter(|p| p.id == id) else {
            return Ok(false);
        };
        match settle {
            Settle::Delivered { at_ms } => {
                d.pending = None;
                d.last_success_ms = Some(*at_ms);
                d.delivered += 1;
            }
            Settle::Failed {
                at_ms,
                error,
                retry_ms,
            } => {
                pending.attempts += 1;
                pending.next_ms = *retry_ms;
                d.failed_attempts += 1;
                d.last_error = Some(error.clone());
                d.last_error_ms = Some(*at_ms);
            }
            Settle::GaveUp { at_ms, error } => {
                let events = pending.events;
                d.pending = None;
                d.failed_attempts += 1;
                d.dropped += events;
                d.last_error = Some(error.clone());
                d.last_error_ms = Some(*at_ms);
            }
        }
        Ok(true)
    }
}
