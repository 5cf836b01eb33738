//! The errors a status store can answer with.

/// What went wrong talking to a status store.
///
/// Adapters build these from their driver's error kinds so that the use cases can tell
/// "the store is not there" (answer 503) from "the store answered but the query failed"
/// (answer 500) without knowing the driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached: connection refused or lost, not yet connected, or the
    /// client already knows the link is down. Retrying later may succeed.
    #[error("status store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the adapter's command timeout. It may be paused,
    /// overloaded or partitioned away.
    #[error("status store timed out: {0}")]
    Timeout(String),
    /// A stored record could not be decoded (bad JSON, a missing or wrong-typed field, an
    /// unknown category). `key` names the record so an operator can inspect it.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Where the record lives in the store (a Redis key, a task id).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store is full and refused a write that would need more memory (Redis `-OOM`:
    /// `maxmemory` reached under `noeviction`). Nothing of the refused write was stored; it
    /// succeeds again once space is freed (retention trims, more memory).
    #[error("status store is full: {0}")]
    Full(String),
    /// The store answered but refused the command (wrong type, no permission, a script
    /// error). Retrying will not help until someone looks.
    #[error("status store rejected the command: {0}")]
    Rejected(String),
    /// Anything else, with what the adapter was doing.
    #[error("status store failed: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether this error means "the store is not there right now" (so clients should retry
    /// later) rather than "the store answered but something is wrong".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }

    /// A short, stable label of the kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Full(_) => "full",
            StoreError::Rejected(_) => "rejected",
            StoreError::Internal(_) => "internal",
        }
    }
}
