//! The audit log in process memory ([`AuditStore`]): entries in time order, at most
//! [`Retention::audit_max_len`](crate::Retention::audit_max_len), lost on restart.

use std::collections::VecDeque;

use async_trait::async_trait;

use super::MemoryStore;
use crate::audit::{AuditCursor, AuditEntry, AuditPage, AuditQuery, AuditStore};
use crate::StoreError;

/// Entries, oldest first, each with its id (ms, then a sequence within the ms).
#[derive(Debug, Default)]
pub(super) struct AuditMemory {
    entries: VecDeque<((i64, u64), AuditEntry)>,
}

impl MemoryStore {
    fn audit_memory(&self) -> std::sync::MutexGuard<'_, AuditMemory> {
        self.audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Append `entry`, dropping the oldest beyond the cap.
    pub(super) fn audit_push(&self, entry: &AuditEntry) {
        let cap = usize::try_from(self.retention.audit_max_len.max(1)).unwrap_or(usize::MAX);
        let mut log = self.audit_memory();
        // Ids increase even when the clock does not (as Redis stream ids do).
        let ms = entry.time.unix_millis();
        let id = match log.entries.back() {
            Some(((last, seq), _)) if *last >= ms => (*last, seq + 1),
            _ => (ms, 0),
        };
        log.entries.push_back((id, entry.clone()));
        while log.entries.len() > cap {
            log.entries.pop_front();
        }
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn audit_append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.audit_push(entry);
        Ok(())
    }

    async fn audit_list(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let log = self.audit_memory();
        let before = query.cursor.as_ref().map(|c| (c.ms, c.seq));
        let want = query.page_size.max(1) as usize;
        let mut page = AuditPage::default();
        for (id, entry) in log.entries.iter().rev() {
            if before.is_some_and(|b| *id >= b) {
                continue;
            }
            if query.until.is_some_and(|u| entry.time > u) {
                continue;
            }
            if query.since.is_some_and(|s| entry.time < s) {
                break;
            }
            if query.actor.as_ref().is_some_and(|a| *a != entry.actor)
                || query.action.is_some_and(|a| a != entry.action)
            {
                continue;
            }
            if page.entries.len() == want {
                break;
            }
            page.entries.push(entry.clone());
            page.next_cursor = Some(AuditCursor {
                ms: id.0,
                seq: id.1,
            });
        }
        if page.entries.len() < want {
            page.next_cursor = None;
        }
        Ok(page)
    }
}
