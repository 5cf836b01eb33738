//! The audit log: the adapters append one entry per state-changing action, after the action
//! is done (`audit`), and read it back (`audit_log`). An entry that cannot be appended does
//! not undo the action: it is logged and counted
//! (`failed_tasks_audit_append_failures_total`).

use failed_tasks_store::audit::{AuditEntry, AuditPage, AuditQuery};
use failed_tasks_store::Capability;

use super::counters::RetryCounters;
use super::{FailedTaskService, QueryError};

impl FailedTaskService {
    /// Append `entry` to the audit log, within the request deadline. A store without an
    /// audit log keeps nothing; a failure is logged and counted, never returned: the action
    /// it records is already done.
    pub async fn audit(&self, entry: AuditEntry) {
        let Some(store) = self.stores.audit.clone() else {
            return;
        };
        let appended = self
            .checked(async move { store.audit_append(&entry).await })
            .await;
        if let Err(e) = appended {
            RetryCounters::add(&self.retry_counters().audit_failures, 1);
            tracing::warn!(error = %e, "an audit entry could not be appended");
        }
    }

    /// Audit entries matching `query`, newest first. [`QueryError::NotSupported`] on a store
    /// without an audit log.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<AuditPage, QueryError> {
        let store = self
            .stores
            .audit
            .clone()
            .ok_or_else(|| self.not_supported(Capability::Audit))?;
        let query = query.clone();
        self.checked(async move { store.audit_list(&query).await })
            .await
    }
}
