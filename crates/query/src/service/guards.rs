//! Guards and deadlines: what a use case checks before it calls the store (the capability
//! it needs, the filter), and the request deadline every store call runs under.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::TaskFilter;
use failed_tasks_store::{Capability, RetryStore, StatsStore, StatusStore, StoreError};

use super::{FailedTaskService, QueryError};

/// How long the service waits for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The connection check (the source's `checkRedisConnection`): 5 s by default.
    pub health_check: Duration,
    /// The whole request, connection check included: 10 s by default.
    pub request: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            health_check: Duration::from_secs(5),
            request: Duration::from_secs(10),
        }
    }
}

impl FailedTaskService {
    pub(crate) fn not_supported(&self, capability: Capability) -> QueryError {
        QueryError::NotSupported {
            capability,
            store: self.stores.name,
        }
    }

    /// The store's tasks, for a write; [`QueryError::NotSupported`] on a read-only one.
    pub(super) fn writable_store(&self) -> Result<&Arc<dyn StatusStore>, QueryError> {
        if self.stores.writable {
            Ok(&self.store)
        } else {
            Err(self.not_supported(Capability::Writes))
        }
    }

    pub(super) fn stats_store(&self) -> Result<&Arc<dyn StatsStore>, QueryError> {
        self.stores
            .stats
            .as_ref()
            .ok_or_else(|| self.not_supported(Capability::Statistics))
    }

    pub(super) fn retry_store(&self) -> Result<&Arc<dyn RetryStore>, QueryError> {
        self.stores
            .retries
            .as_ref()
            .ok_or_else(|| self.not_supported(Capability::Retries))
    }

    /// The deadlines in force.
    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// Run `work` after a connection check, the whole under the request deadline.
    pub(crate) async fn checked<T, F>(&self, work: F) -> Result<T, QueryError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        self.checked_within(self.deadlines.request, work).await
    }

    /// [`checked`](Self::checked) with `deadline` instead of the request deadline (what is
    /// left of it after a wait).
    pub(super) async fn checked_within<T, F>(
        &self,
        deadline: Duration,
        work: F,
    ) -> Result<T, QueryError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let run = async {
            self.ensure_connection().await?;
            match work.await {
                Ok(v) => {
                    self.health.ok();
                    Ok(v)
                }
                Err(e) => {
                    if e.is_unavailable() {
                        self.health.lost();
                    }
                    Err(QueryError::from_store(e))
                }
            }
        };
        match tokio::time::timeout(deadline, run).await {
            Ok(result) => result,
            Err(_) => {
                self.health.lost();
                Err(QueryError::Unavailable {
                    reason: format!("request exceeded its {:?} deadline", self.deadlines.request),
                    kind: "deadline",
                })
            }
        }
    }

    /// The filter's checks, and that the store can answer its `retry` condition.
    pub(super) fn check_filter(&self, filter: &TaskFilter) -> Result<(), QueryError> {
        filter.validate()?;
        if filter.retry.is_some() {
            self.retry_store()?;
        }
        Ok(())
    }
}
