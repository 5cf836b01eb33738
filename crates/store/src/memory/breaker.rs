//! The breaker's counters, states and lease in process memory ([`BreakerStore`]), lost on
//! restart like the rest of this store.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{BreakerKey, BreakerState, OutcomeCounts, Timestamp};

use super::MemoryStore;
use crate::breaker::{BreakerStore, OUTCOME_KEEP};
use crate::StoreError;

/// Outcomes per second (unix seconds), states per key, the lease.
#[derive(Debug, Default)]
pub(super) struct BreakerMemory {
    outcomes: BTreeMap<i64, HashMap<BreakerKey, OutcomeCounts>>,
    states: BTreeMap<BreakerKey, BreakerState>,
    lease: super::lease::Lease,
}

fn second_of(t: Timestamp) -> i64 {
    t.unix_millis().div_euclid(1_000)
}

impl MemoryStore {
    fn breaker_memory(&self) -> std::sync::MutexGuard<'_, BreakerMemory> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl BreakerStore for MemoryStore {
    async fn add_outcomes(
        &self,
        at: Timestamp,
        outcomes: &[(BreakerKey, OutcomeCounts)],
    ) -> Result<(), StoreError> {
        let sec = second_of(at);
        let mut m = self.breaker_memory();
        let keep = OUTCOME_KEEP.as_secs() as i64;
        // Seconds older than the keep period leave, as Redis expires them.
        while m
            .outcomes
            .first_key_value()
            .is_some_and(|(s, _)| *s < sec - keep)
        {
            m.outcomes.pop_first();
        }
        let slot = m.outcomes.entry(sec).or_default();
        for (key, c) in outcomes {
            slot.entry(key.clone()).or_default().add(*c);
        }
        Ok(())
    }

    async fn outcomes(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(BreakerKey, OutcomeCounts)>, StoreError> {
        let (from, to) = (second_of(from), second_of(to));
        if from > to {
            return Ok(Vec::new());
        }
        let m = self.breaker_memory();
        let mut sum: BTreeMap<BreakerKey, OutcomeCounts> = BTreeMap::new();
        for slot in m.outcomes.range(from..=to).map(|(_, s)| s) {
            for (key, c) in slot {
                sum.entry(key.clone()).or_default().add(*c);
            }
        }
        Ok(sum.into_iter().collect())
    }

    async fn breaker_states(&self) -> Result<Vec<BreakerState>, StoreError> {
        Ok(self.breaker_memory().states.values().cloned().collect())
    }

    async fn put_breaker_state(&self, state: &BreakerState) -> Result<(), StoreError> {
        self.breaker_memory()
            .states
            .insert(state.key.clone(), state.clone());
        Ok(())
    }

    async fn remove_breaker_state(&self, key: &BreakerKey) -> Result<(), StoreError> {
        self.breaker_memory().states.remove(key);
        Ok(())
    }

    async fn breaker_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.breaker_memory().lease.take(holder, ttl))
    }
}
