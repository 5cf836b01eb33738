//! Phase 2, upstream: the original Go algorithm (SCAN + one GET per key) and the compat
//! source on Go records, against our use-case page.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use failed_tasks_redis::{CompatConfig, CompatStore};
use failed_tasks_store::StatusStore;

use crate::bench::Bench;
use crate::raw;
use crate::report::Latency;

/// Go records for the upstream comparison, 5 % of them failed.
const GO_KEYS: u64 = 100_000;

impl Bench {
    /// The original algorithm (SCAN + one GET per key) and the compat source on 100k Go
    /// records, 5 % failed, against our use-case page at 100k.
    pub(crate) async fn upstream_comparison(&mut self) -> anyhow::Result<()> {
        let ours = self
            .f
            .get("usecase_100000_p50_ms")
            .ok_or_else(|| anyhow!("the 100k page was not timed"))?;
        self.raw1.fill_go(GO_KEYS).await?;
        let runs = if self.quick { 1 } else { 3 };
        let mut go_times = Vec::new();
        let mut found = 0;
        for _ in 0..runs {
            let (c, t) = raw::timed(self.raw1.go_list_failed()).await?;
            found = c;
            go_times.push(t);
        }
        let go = Latency::of(go_times);
        self.f.set("upstream_go_ms", go.p50_ms);
        self.f.set("upstream_found_failed", found as f64);
        self.f.set("upstream_speedup", go.p50_ms / ours);
        let compat = CompatStore::connect(CompatConfig {
            url: self.url1.clone(),
            command_timeout: Duration::from_secs(10),
            ..CompatConfig::default()
        })
        .await
        .map_err(|e| anyhow!("compat source: {e}"))?;
        // It connects in the background: wait (bounded) until it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while compat.ping().await.is_err() {
            if Instant::now() > deadline {
                bail!("the compat source could not connect to {}", self.url1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut compat_times = Vec::new();
        for _ in 0..3 {
            let (page, t) = raw::timed(async {
                compat
                    .list(&self.query)
                    .await
                    .map_err(|e| anyhow!("compat list: {e}"))
            })
            .await?;
            if page.total != GO_KEYS / 20 {
                bail!(
                    "compat found {} failed, expected {}",
                    page.total,
                    GO_KEYS / 20
                );
            }
            compat_times.push(t);
        }
        let compat = Latency::of(compat_times);
        self.f.set("compat_list_ms", compat.p50_ms);
        self.f.set("compat_speedup", go.p50_ms / compat.p50_ms);
        eprintln!(
            "  Go algorithm {:.0} ms ({found} failed), compat {:.0} ms, ours {ours:.3} ms",
            go.p50_ms, compat.p50_ms
        );
        self.raw1.run("FLUSHDB", vec![]).await?;
        Ok(())
    }
}
