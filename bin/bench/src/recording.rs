//! Phase 4, recording: filling the stores as the server records (batched, with retry
//! plans) and the recording rates, batched (`records_per_s`) and one task per call
//! (`records_per_s_single`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::{RetryStore, StatusStore};

use crate::bench::{connect_store, now_ms, without_retries, Bench, REF_PREFIX};
use crate::data;

/// Record tasks `from..to` as the server does, with their retry plans from the default
/// policy (scheduling included): batches of 500, `in_flight` at a time. The time it took.
pub(crate) async fn fill(
    store: &RedisStore,
    from: u64,
    to: u64,
    base_ms: i64,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    const BATCH: u64 = 500;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut next = from;
    while next < to || !set.is_empty() {
        while next < to && set.len() < in_flight {
            let (a, b) = (next, (next + BATCH).min(to));
            let store = store.clone();
            set.spawn(async move {
                let planned = data::planned(a, b, base_ms)?;
                store
                    .record_planned(&planned)
                    .await
                    .map_err(|e| anyhow!("recording tasks {a}..{b}: {e}"))?;
                Ok::<_, anyhow::Error>(())
            });
            next = b;
        }
        if let Some(r) = set.join_next().await {
            r.context("fill task panicked")??;
        }
    }
    Ok(start.elapsed())
}

/// Batches in flight while filling the main stores.
const IN_FLIGHT: usize = 4;

/// `record` one task at a time from `concurrency` tasks: the port's basic path.
async fn record_singly(store: &RedisStore, n: u64, concurrency: u64) -> anyhow::Result<f64> {
    let base = now_ms() - 3_600_000;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let store = store.clone();
        set.spawn(async move {
            let mut i = w;
            while i < n {
                let t = data::task(i, base)?;
                store
                    .record(&t)
                    .await
                    .map_err(|e| anyhow!("recording task {i}: {e}"))?;
                i += concurrency;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("record task panicked")??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

impl Bench {
    /// `records_per_s_single`: `record` one task per call (the port's basic path), 64
    /// callers at once, into a store of its own that is flushed afterwards.
    pub(crate) async fn record_one_at_a_time(&mut self) -> anyhow::Result<()> {
        let single = connect_store(&self.url0, "{bench-single}").await?;
        let n = if self.quick { 10_000 } else { 50_000 };
        let rate = record_singly(&single, n, 64).await?;
        self.f.set("records_per_s_single", rate);
        eprintln!("  record() one at a time, 64 callers: {rate:.0}/s");
        self.raw0.run("FLUSHDB", vec![]).await?;
        Ok(())
    }

    /// The 1k reference store, whose page is timed interleaved with the big store's.
    pub(crate) async fn fill_reference(&mut self) -> anyhow::Result<()> {
        let ref_store = connect_store(&self.url0, REF_PREFIX).await?;
        fill(&ref_store, 0, 1_000, now_ms() - 3_600_000 * 24, IN_FLIGHT).await?;
        self.ref_keys = ref_store.keys().clone();
        self.ref_service = Some(FailedTaskService::new(
            without_retries(ref_store),
            Deadlines::default(),
        ));
        Ok(())
    }

    /// Fill the store up to `n` with the batched path: `records_per_s` is the 1k→100k fill.
    pub(crate) async fn fill_to(&mut self, n: u64) -> anyhow::Result<()> {
        if self.stored == 0 {
            self.f
                .set("redis_baseline_used_memory", self.raw0.used_memory().await?);
        }
        self.raw0.reset_stats().await?;
        let took = fill(&self.store, self.stored, n, self.base_ms, IN_FLIGHT).await?;
        let rate = (n - self.stored) as f64 / took.as_secs_f64();
        // The Redis time the fill's scripts took, per task: far steadier than the rate,
        // which the machine's other work moves.
        let redis_us = self.raw0.script_usec().await? / (n - self.stored).max(1) as f64;
        eprintln!(
            "  filled {}..{n} in {:.1} s ({rate:.0}/s, {redis_us:.1} µs of Redis time a task)",
            self.stored,
            took.as_secs_f64()
        );
        if self.stored > 0 && n <= 100_000 {
            self.f.set("records_per_s", rate);
            self.f.set("record_redis_us_per_task", redis_us);
        } else if self.stored > 0 {
            self.f.set("records_per_s_to_max", rate);
        }
        self.stored = n;
        Ok(())
    }
}
