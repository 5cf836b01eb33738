//! The retry circuit breaker's use cases (docs/retries.md#the-circuit-breaker): counting
//! the outcomes of retries as they are reported (`count_failed_again`, `count_resolved`,
//! best effort: a count that fails never fails the report), its settings, and the breakers
//! that are not closed. The decider that opens and closes them is
//! [`RetryBreaker`](crate::RetryBreaker).

use std::collections::BTreeMap;
use std::sync::Arc;

use failed_tasks_domain::{
    BreakerConfig, BreakerKey, BreakerState, FailedTask, GateStatus, OutcomeCounts, Timestamp,
};
use failed_tasks_store::{BreakerStore, Capability};

use super::counters::RetryCounters;
use super::{FailedTaskService, QueryError};

/// A breaker that is not closed, with the outcomes of its window and its gate as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerView {
    /// Its state.
    pub state: BreakerState,
    /// Its gate, when still active (with what it holds back).
    pub gate: Option<GateStatus>,
}

impl FailedTaskService {
    /// The same service with breaker settings `config` (validated by the caller).
    #[must_use]
    pub fn with_breaker_config(mut self, config: BreakerConfig) -> Self {
        self.breaker = Arc::new(config);
        self
    }

    /// The breaker settings in force.
    pub fn breaker_config(&self) -> &BreakerConfig {
        &self.breaker
    }

    /// The store's breaker capability; [`QueryError::NotSupported`] without one.
    pub(crate) fn breaker_store(&self) -> Result<Arc<dyn BreakerStore>, QueryError> {
        self.stores
            .breaker
            .clone()
            .ok_or_else(|| self.not_supported(Capability::Breaker))
    }

    /// Whether breakers count and decide here: enabled, and the store keeps their counters
    /// and schedules retries.
    pub fn breaks_circuits(&self) -> bool {
        self.breaker.enabled && self.stores.breaker.is_some() && self.stores.retries.is_some()
    }

    /// Count the recorded failures that are retries failing again (`RetryCount` ≥ 1) of a
    /// category the policy retries, in the second of the newest `FailTime` among them (a
    /// worker reports a retry as it fails: its `FailTime` is the outcome's time).
    pub(super) async fn count_failed_again(&self, tasks: &[FailedTask]) {
        if !self.breaks_circuits() {
            return;
        }
        let mut by_key: BTreeMap<BreakerKey, OutcomeCounts> = BTreeMap::new();
        let mut at = None;
        for t in tasks.iter().filter(|t| t.retry_count() >= 1) {
            if self.retry_policy.max_retries_for(t.error_category()) == 0 {
                continue;
            }
            at = at.max(Some(t.fail_time()));
            by_key
                .entry(BreakerKey {
                    task_type: t.task_type().clone(),
                    category: t.error_category(),
                })
                .or_default()
                .failed_again += 1;
        }
        if let Some(at) = at {
            self.count_outcomes(at, by_key.into_iter().collect()).await;
        }
    }

    /// Count one resolved retry of `task` at `now`.
    pub(super) async fn count_resolved(&self, task: &FailedTask, now: Timestamp) {
        let key = BreakerKey {
            task_type: task.task_type().clone(),
            category: task.error_category(),
        };
        let resolved = OutcomeCounts {
            failed_again: 0,
            resolved: 1,
        };
        self.count_outcomes(now, vec![(key, resolved)]).await;
    }

    async fn count_outcomes(&self, now: Timestamp, outcomes: Vec<(BreakerKey, OutcomeCounts)>) {
        let Some(store) = self.stores.breaker.clone() else {
            return;
        };
        if outcomes.is_empty() {
            return;
        }
        let added = self
            .checked(async move { store.add_outcomes(now, &outcomes).await })
            .await;
        if let Err(e) = added {
            RetryCounters::add(&self.retry_counters.breaker_count_failures, 1);
            tracing::warn!(error = %e, "retry outcomes could not be counted for the breaker");
        }
    }

    /// The breakers open, half-open or closed lately. [`QueryError::NotSupported`] on a
    /// store without breakers.
    pub async fn breaker_states(&self) -> Result<Vec<BreakerState>, QueryError> {
        let store = self.breaker_store()?;
        self.checked(async move { store.breaker_states().await })
            .await
    }

    /// The breakers open, half-open or closed lately, each with its gate as the store lists
    /// it now. [`QueryError::NotSupported`] on a store without breakers.
    pub async fn retry_breakers(&self, now: Timestamp) -> Result<Vec<BreakerView>, QueryError> {
        let states = self.breaker_states().await?;
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let gates = self.retry_gates(now).await?;
        Ok(states
            .into_iter()
            .map(|state| {
                let gate = gates.iter().find(|g| g.gate.id == state.gate).cloned();
                BreakerView { state, gate }
            })
            .collect())
    }
}
