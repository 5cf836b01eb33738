//! Retry gates: make, list and release them (docs/retries.md#gates).

use std::sync::PoisonError;

use failed_tasks_domain::{
    GateCreator, GateId, GateMode, GateReason, GateScope, GateStatus, RetryGate, Timestamp,
    ValidationError,
};
use failed_tasks_store::CreateGate;

use super::{FailedTaskService, QueryError};

/// A gate as a caller asks for it (validated parts; the use case adds the id and times).
#[derive(Debug, Clone, PartialEq)]
pub struct GateRequest {
    /// The retries it applies to.
    pub scope: GateScope,
    /// Hold or limit.
    pub mode: GateMode,
    /// Why.
    pub reason: GateReason,
    /// When it lapses by itself.
    pub until: Option<Timestamp>,
    /// Who asks.
    pub created_by: GateCreator,
}

impl FailedTaskService {
    /// Make a gate active from `now`: its id, or `None` when
    /// [`MAX_ACTIVE_GATES`](failed_tasks_domain::gate::MAX_ACTIVE_GATES) are active already.
    /// An `until` not after `now` is a bad request (`Until`).
    pub async fn create_gate(
        &self,
        request: GateRequest,
        now: Timestamp,
    ) -> Result<Option<RetryGate>, QueryError> {
        let retries = self.retry_store()?;
        if request.until.is_some_and(|u| u <= now) {
            return Err(QueryError::BadRequest(ValidationError::new(
                "Until",
                "must be in the future",
            )));
        }
        let nonce = {
            let mut rng = self.jitter.lock().unwrap_or_else(PoisonError::into_inner);
            (rng.next_unit() * f64::from(u32::MAX)) as u32
        };
        let gate = RetryGate {
            id: GateId::new(now, nonce),
            scope: request.scope,
            mode: request.mode,
            reason: request.reason,
            created_by: request.created_by,
            since: now,
            until: request.until,
        };
        match self.checked(retries.create_gate(&gate, now)).await? {
            CreateGate::Created => Ok(Some(gate)),
            CreateGate::TooMany => Ok(None),
        }
    }

    /// Release a gate; `false` when no such gate is active.
    pub async fn release_gate(&self, id: &GateId) -> Result<bool, QueryError> {
        let retries = self.retry_store()?;
        self.checked(retries.release_gate(id)).await
    }

    /// Let `passes` retries through a `hold` gate (the breaker's canaries; 0 takes them
    /// back); `false` when no such hold is active.
    pub async fn pass_gate(&self, id: &GateId, passes: u32) -> Result<bool, QueryError> {
        let retries = self.retry_store()?;
        self.checked(retries.pass_gate(id, passes)).await
    }

    /// The gates active at `now`, oldest first, with what each holds back.
    pub async fn retry_gates(&self, now: Timestamp) -> Result<Vec<GateStatus>, QueryError> {
        let retries = self.retry_store()?;
        self.checked(retries.list_gates(now)).await
    }
}
