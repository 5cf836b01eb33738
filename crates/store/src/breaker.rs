//! The breaker capability ([`BreakerStore`]): what the retry circuit breaker shares between
//! replicas (docs/retries.md#the-circuit-breaker).
//!
//! - **Outcome counters** per second and [`BreakerKey`]: retries reported failed again or
//!   resolved, added by whichever replica hears of them, read summed over a window by the
//!   decider. Kept for [`OUTCOME_KEEP`] (longer than any window), then they expire.
//! - **States** of the breakers that are not closed (open or half-open), one per key.
//! - **A lease**: one decider at a time (a process name plus a random part, renewed each
//!   step), as the notifier's.

use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{BreakerKey, BreakerState, OutcomeCounts, Timestamp};

use crate::StoreError;

/// How long outcome counters are kept: two hours, more than the longest window (1 h).
pub const OUTCOME_KEEP: Duration = Duration::from_secs(2 * 3_600);

/// The breaker's shared counters, states and lease. The memory store keeps them in the
/// process; the Redis store in the first shard's slot (`P:breaker:*`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BreakerStore: Send + Sync {
    /// Add outcomes reported at `at` (counted in its second).
    async fn add_outcomes(
        &self,
        at: Timestamp,
        outcomes: &[(BreakerKey, OutcomeCounts)],
    ) -> Result<(), StoreError>;

    /// The outcomes of the seconds from `from`'s to `to`'s (both included), summed per key;
    /// keys without any are left out. At most [`OUTCOME_KEEP`] back is kept.
    async fn outcomes(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(BreakerKey, OutcomeCounts)>, StoreError>;

    /// Every breaker that is not closed.
    async fn breaker_states(&self) -> Result<Vec<BreakerState>, StoreError>;

    /// Store `state` for its key (replacing what was there).
    async fn put_breaker_state(&self, state: &BreakerState) -> Result<(), StoreError>;

    /// Forget the state of `key` (the breaker closed).
    async fn remove_breaker_state(&self, key: &BreakerKey) -> Result<(), StoreError>;

    /// Take the decider's lease for `holder`, or renew it when `holder` has it, for `ttl`;
    /// `false` when another holds it.
    async fn breaker_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
}
