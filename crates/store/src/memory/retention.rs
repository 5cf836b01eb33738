//! Retention: the trim by age and by count, one step ([`MemoryStore::trim_at`]) or
//! periodically ([`MemoryStore::spawn_janitor`]).

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::stats::{minute_of, Bucket};
use failed_tasks_domain::{TaskId, Timestamp};

use super::indexes::Indexes;
use super::MemoryStore;

/// What one [`MemoryStore::trim_at`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryTrimReport {
    /// Tasks that failed longer ago than the maximum age.
    pub removed_by_age: u64,
    /// The oldest tasks beyond the maximum count.
    pub removed_by_count: u64,
}

impl Indexes {
    /// Remove the oldest tasks (the end of the listing order) beyond `max`.
    pub(super) fn trim_to_count(&mut self, max: u64) -> u64 {
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
}

impl MemoryStore {
    /// One trim step as of `now`: remove the tasks that failed longer ago than the maximum
    /// age (and the counters of those minutes), then the oldest beyond the maximum count.
    /// [`spawn_janitor`](Self::spawn_janitor) runs it periodically; tests call it directly.
    pub fn trim_at(&self, now: Timestamp) -> MemoryTrimReport {
        let max_age = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let oldest = now.unix_millis().saturating_sub(max_age);
        let mut indexes = self.write();
        let removed_by_age = indexes.trim_older_than(oldest);
        let removed_by_count = indexes.trim_to_count(self.retention.max_count);
        drop(indexes);
        if removed_by_age + removed_by_count > 0 {
            self.audit_push(&crate::audit::AuditEntry::janitor_trim(
                now,
                removed_by_age,
                removed_by_count,
            ));
        }
        MemoryTrimReport {
            removed_by_age,
            removed_by_count,
        }
    }

    /// Run [`trim_at`](Self::trim_at) with the current time every
    /// [`Retention::janitor_interval`](crate::Retention::janitor_interval) in a background
    /// task (on the current tokio runtime) until the handle is dropped or stopped.
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
}

/// The running trim loop of a [`MemoryStore`] ([`MemoryStore::spawn_janitor`]); dropping it
/// stops it.
pub type MemoryJanitor = crate::Background;
