//! Why a use case could not answer: [`QueryError`], the contract's kinds, made from the
//! store's errors.

use failed_tasks_domain::ValidationError;
use failed_tasks_store::{Capability, StoreError};

/// Why a use case could not answer, in the contract's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The store is unreachable or did not answer within a deadline. HTTP answers 503 with
    /// the source's message; `reason` is for logs.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What happened, for the log.
        reason: String,
        /// A short stable label for metrics: a [`StoreError::kind`] or `deadline`.
        kind: &'static str,
    },
    /// The store answered but the operation failed. HTTP answers 500 with a fixed message;
    /// `detail` is for logs only and must never reach a client.
    #[error("internal error: {detail}")]
    Internal {
        /// What happened, for the log.
        detail: String,
        /// A short stable label for metrics: a [`StoreError::kind`].
        kind: &'static str,
    },
    /// The store is full and refused the write (Redis `maxmemory` under `noeviction`);
    /// nothing of it was stored. HTTP answers 507 with a fixed message; `detail` is for logs.
    #[error("store full: {detail}")]
    StoreFull {
        /// What happened, for the log.
        detail: String,
        /// A short stable label for metrics: [`StoreError::kind`] (`full`).
        kind: &'static str,
    },
    /// The request itself is invalid; the message names the parameter.
    #[error("bad request: {0}")]
    BadRequest(#[from] ValidationError),
    /// The task asked for is not stored.
    #[error("not found")]
    NotFound,
    /// The store in use lacks the capability this needs (statistics or retries on the
    /// read-only compat source). HTTP answers 501 with this error's message, which names the
    /// store and the capability; nothing was read or written.
    #[error("the {store} store does not support {capability}")]
    NotSupported {
        /// What the store would need.
        capability: Capability,
        /// The store's name ([`Stores::name`](failed_tasks_store::Stores::name)).
        store: &'static str,
    },
}

impl QueryError {
    pub(super) fn from_store(err: StoreError) -> Self {
        if let StoreError::Full(_) = err {
            return QueryError::StoreFull {
                detail: err.to_string(),
                kind: err.kind(),
            };
        }
        if err.is_unavailable() {
            QueryError::Unavailable {
                reason: err.to_string(),
                kind: err.kind(),
            }
        } else {
            QueryError::Internal {
                detail: err.to_string(),
                kind: err.kind(),
            }
        }
    }
}
