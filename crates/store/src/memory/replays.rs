//! Replays in process memory ([`ReplayStore`]): the most recent
//! [`MAX_KEPT_REPLAYS`] replays (older ones are forgotten), each with its last
//! [`MAX_TRACKED_SCHEDULED`] scheduled retries, and the runners' lease; lost on restart.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{Replay, ReplayId, ReplayState, Timestamp};

use super::MemoryStore;
use crate::replay::{
    AbortReplay, ReplaySave, ReplayStore, SaveReplay, ScheduledRetry, MAX_KEPT_REPLAYS,
    MAX_TRACKED_SCHEDULED,
};
use crate::StoreError;

/// The replays, oldest first, and the lease.
#[derive(Debug, Default)]
pub(super) struct ReplayMemory {
    order: VecDeque<ReplayId>,
    replays: HashMap<ReplayId, (Replay, VecDeque<ScheduledRetry>)>,
    lease: super::lease::Lease,
}

impl MemoryStore {
    fn replay_memory(&self) -> std::sync::MutexGuard<'_, ReplayMemory> {
        self.replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ReplayStore for MemoryStore {
    async fn replay_create(&self, replay: &Replay) -> Result<(), StoreError> {
        let mut m = self.replay_memory();
        m.order.push_back(replay.id.clone());
        m.replays
            .insert(replay.id.clone(), (replay.clone(), VecDeque::new()));
        while m.order.len() > MAX_KEPT_REPLAYS {
            if let Some(old) = m.order.pop_front() {
                m.replays.remove(&old);
            }
        }
        Ok(())
    }

    async fn replay_get(&self, id: &ReplayId) -> Result<Option<Replay>, StoreError> {
        Ok(self.replay_memory().replays.get(id).map(|(r, _)| r.clone()))
    }

    async fn replay_list(&self, max: usize) -> Result<Vec<Replay>, StoreError> {
        let m = self.replay_memory();
        Ok(m.order
            .iter()
            .rev()
            .take(max.min(MAX_KEPT_REPLAYS))
            .filter_map(|id| m.replays.get(id).map(|(r, _)| r.clone()))
            .collect())
    }

    async fn replay_running(&self, max: usize) -> Result<Vec<ReplayId>, StoreError> {
        let m = self.replay_memory();
        Ok(m.order
            .iter()
            .filter(|id| {
                m.replays
                    .get(*id)
                    .is_some_and(|(r, _)| r.state == ReplayState::Running)
            })
            .take(max)
            .cloned()
            .collect())
    }

    async fn replay_save(
        &self,
        holder: &str,
        id: &ReplayId,
        save: &ReplaySave,
    ) -> Result<SaveReplay, StoreError> {
        let mut m = self.replay_memory();
        if !m.lease.holds(holder) {
            return Ok(SaveReplay::LeaseLost);
        }
        let Some((replay, scheduled)) = m.replays.get_mut(id) else {
            return Ok(SaveReplay::NotRunning);
        };
        if replay.state != ReplayState::Running {
            return Ok(SaveReplay::NotRunning);
        }
        replay.progress = save.progress.clone();
        if let Some((state, at)) = save.finish {
            replay.state = state;
            replay.finished = Some(at);
        }
        scheduled.extend(save.scheduled.iter().cloned());
        while scheduled.len() > MAX_TRACKED_SCHEDULED {
            scheduled.pop_front();
        }
        Ok(SaveReplay::Saved)
    }

    async fn replay_abort(&self, id: &ReplayId, now: Timestamp) -> Result<AbortReplay, StoreError> {
        let mut m = self.replay_memory();
        let Some((replay, _)) = m.replays.get_mut(id) else {
            return Ok(AbortReplay::NotFound);
        };
        if replay.state.is_finished() {
            return Ok(AbortReplay::Finished(replay.state));
        }
        replay.state = ReplayState::Aborted;
        replay.finished = Some(now);
        Ok(AbortReplay::Aborted(Box::new(replay.clone())))
    }

    async fn replay_scheduled(
        &self,
        id: &ReplayId,
        max: usize,
    ) -> Result<Vec<ScheduledRetry>, StoreError> {
        let m = self.replay_memory();
        Ok(m.replays
            .get(id)
            .map(|(_, s)| s.iter().take(max).cloned().collect())
            .unwrap_or_default())
    }

    async fn replay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.replay_memory().lease.take(holder, ttl))
    }

    async fn replay_release(&self, holder: &str) -> Result<(), StoreError> {
        self.replay_memory().lease.release(holder);
        Ok(())
    }
}
