//! The in-process retry queue that workers claim from ([`MemoryRetryQueue`]): unread,
//! then pending under a lease until acknowledged or reclaimed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::RetryRequest;

use crate::{Delivery, RetryQueue, StoreError};

/// The in-process retry queue: requests wait unread until claimed, then pending until
/// acknowledged or reclaimed after their lease.
#[derive(Debug)]
pub(super) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes claims waiting for requests.
    arrived: tokio::sync::Notify,
}

#[derive(Debug)]
pub(super) struct QueueState {
    cap: usize,
    next_id: u64,
    pub(super) unread: VecDeque<(u64, RetryRequest)>,
    pub(super) pending: BTreeMap<u64, Pending>,
    pub(super) reclaimed: u64,
    /// Unread requests dropped because the queue was full.
    trimmed: u64,
}

#[derive(Debug)]
pub(super) struct Pending {
    request: RetryRequest,
    since: tokio::time::Instant,
    deliveries: u64,
}

impl Queue {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                cap,
                next_id: 1,
                unread: VecDeque::new(),
                pending: BTreeMap::new(),
                reclaimed: 0,
                trimmed: 0,
            }),
            arrived: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn push(&self, requests: Vec<RetryRequest>) {
        if requests.is_empty() {
            return;
        }
        let mut q = self.lock();
        for r in requests {
            let id = q.next_id;
            q.next_id += 1;
            q.unread.push_back((id, r));
        }
        while q.unread.len() + q.pending.len() > q.cap && q.unread.pop_front().is_some() {
            q.trimmed += 1;
        }
        drop(q);
        self.arrived.notify_waiters();
    }

    fn take(&self, max: usize) -> Vec<Delivery> {
        let mut q = self.lock();
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((id, request)) = q.unread.pop_front() else {
                break;
            };
            out.push(Delivery {
                id: id.to_string(),
                request: request.clone(),
                deliveries: 1,
            });
            q.pending.insert(
                id,
                Pending {
                    request,
                    since: now,
                    deliveries: 1,
                },
            );
        }
        out
    }
}

/// A worker's handle on a [`MemoryStore`](super::MemoryStore)'s retry queue
/// ([`MemoryStore::retry_queue`](super::MemoryStore::retry_queue)).
#[derive(Debug, Clone)]
pub struct MemoryRetryQueue {
    pub(super) queue: Arc<Queue>,
}

impl MemoryRetryQueue {
    /// Unread requests dropped because the queue was full, since it was created.
    pub fn trimmed(&self) -> u64 {
        self.queue.lock().trimmed
    }
}

#[async_trait]
impl RetryQueue for MemoryRetryQueue {
    async fn claim(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, StoreError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so a push in between is not missed
            // (`notify_waiters` wakes only futures already enabled).
            let arrived = self.queue.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.queue.take(max);
            if !got.is_empty() || max == 0 {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut q = self.queue.lock();
        let mut n = 0;
        for id in ids {
            if let Ok(id) = id.parse::<u64>() {
                if q.pending.remove(&id).is_some() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn reclaim_stale(
        &self,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut q = self.queue.lock();
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        for (id, p) in q.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if now.duration_since(p.since) >= lease {
                p.since = now;
                p.deliveries += 1;
                out.push(Delivery {
                    id: id.to_string(),
                    request: p.request.clone(),
                    deliveries: p.deliveries,
                });
            }
        }
        q.reclaimed += out.len() as u64;
        Ok(out)
    }
}
