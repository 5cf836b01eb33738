//! How many statistics requests run at once, and the answers they share.
//!
//! One statistics request is bounded in work and memory by its window (the store reads a
//! fixed number of values per bucket); the gate bounds how many are computed together, and
//! a short cache lets callers asking for the same window within its lifetime share one
//! answer: callers of a window that is being computed wait for that computation instead of
//! starting their own, so a crowd of statistics callers costs the store and the process about
//! one computation per window and lifetime, and cannot slow the listings.
//!
//! Freshness: a write made through this service (record, remove, resolve, retry, attempts)
//! invalidates every cached answer once it is done, so a client that wrote here reads its
//! write; a write made through another replica, or a retention trim, shows after at most the
//! cache's lifetime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use failed_tasks_domain::stats::{FailureStats, StatsWindow};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The most answers kept (one per window length and top size asked recently): windows are
/// chosen by clients, so the cache must not grow with what they ask.
const MAX_CACHED: usize = 16;

/// Held while one window's answer is computed.
type ComputeLock = Arc<tokio::sync::Mutex<()>>;

/// One kept answer.
struct Cached {
    window: StatsWindow,
    top_n: usize,
    /// The write generation it was computed in (see [`StatsGate::wrote`]).
    generation: u64,
    at: Instant,
    stats: FailureStats,
}

/// The statistics gate of one service.
pub(crate) struct StatsGate {
    permits: Semaphore,
    concurrency: usize,
    ttl: Duration,
    /// Completed writes through this service; an answer computed before the last one is
    /// not used.
    generation: AtomicU64,
    answers: Mutex<Vec<Cached>>,
    /// One lock per window being computed (while the cache is on), so its other callers
    /// wait for that answer; at most one per kept answer plus the computations running.
    computing: Mutex<Vec<(StatsWindow, usize, ComputeLock)>>,
}

impl std::fmt::Debug for StatsGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsGate")
            .field("concurrency", &self.concurrency)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StatsGate {
    /// At most `concurrency` (at least 1) computations at once; answers kept `ttl` (zero:
    /// none kept).
    pub(crate) fn new(concurrency: usize, ttl: Duration) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Semaphore::new(concurrency),
            concurrency,
            ttl,
            generation: AtomicU64::new(0),
            answers: Mutex::new(Vec::new()),
            computing: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A write through the service is done (whatever its outcome: a failed one may have
    /// been applied): answers computed before it are stale.
    pub(crate) fn wrote(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation a computation starting now belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A kept answer for `window` and `top_n`, fresh and computed since the last write.
    pub(crate) fn cached(&self, window: StatsWindow, top_n: usize) -> Option<FailureStats> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = self.generation();
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers
            .iter()
            .find(|c| {
                c.window == window
                    && c.top_n == top_n
                    && c.generation == now
                    && c.at.elapsed() < self.ttl
            })
            .map(|c| c.stats.clone())
    }

    /// Keep `stats`, computed in `generation`, for later callers.
    pub(crate) fn keep(&self, top_n: usize, generation: u64, stats: &FailureStats) {
        if self.ttl.is_zero() {
            return;
        }
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.retain(|c| {
            !(c.window == stats.window && c.top_n == top_n) && c.at.elapsed() < self.ttl
        });
        if answers.len() >= MAX_CACHED {
            answers.remove(0);
        }
        answers.push(Cached {
            window: stats.window,
            top_n,
            generation,
            at: Instant::now(),
            stats: stats.clone(),
        });
    }

    /// The lock of `window`'s computation (the cache on), whose holder computes it while
    /// other callers of the window wait and then take the kept answer; `None` with the
    /// cache off (nothing to share).
    pub(crate) fn computing(&self, window: StatsWindow, top_n: usize) -> Option<ComputeLock> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut locks = self
            .computing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Locks nobody holds or waits for are dropped, so the list stays small.
        locks.retain(|(_, _, l)| Arc::strong_count(l) > 1);
        if let Some((_, _, l)) = locks.iter().find(|(w, n, _)| *w == window && *n == top_n) {
            return Some(l.clone());
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.push((window, top_n, lock.clone()));
        Some(lock)
    }

    /// A turn to compute, waiting at most `within`; `None` when none came.
    pub(crate) async fn turn(&self, within: Duration) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(within, self.permits.acquire())
            .await
            .ok()?
            .ok()
    }
}
