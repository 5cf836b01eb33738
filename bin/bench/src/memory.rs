//! Phase 5, memory: Redis memory per stored failure and where it goes, and the app
//! server's peak resident memory.

use anyhow::anyhow;
use failed_tasks_redis::Keys;

use crate::bench::Bench;
use crate::data;
use crate::raw::Raw;
use crate::report::Figures;

/// Where a task's bytes go: `MEMORY USAGE` of sampled records, of `idx:all` and of the
/// four filter indexes, per task.
async fn memory_breakdown(raw: &Raw, keys: &Keys, n: u64, f: &mut Figures) -> anyhow::Result<()> {
    use fred::types::Value;
    let usage = |key: String| async move {
        match raw
            .run(
                "MEMORY",
                vec!["USAGE".into(), key.into(), "SAMPLES".into(), 0i64.into()],
            )
            .await?
        {
            Value::Integer(b) => Ok::<f64, anyhow::Error>(b as f64),
            _ => Ok(0.0),
        }
    };
    let mut record = 0.0;
    let probes = 100.min(n);
    for i in 0..probes {
        record += usage(keys.record(&data::task_id(i * (n / probes)))).await?;
    }
    f.set(&format!("mem_record_bytes_{n}"), record / probes as f64);
    let all = usage(keys.all()).await?;
    f.set(&format!("mem_idx_all_bytes_per_task_{n}"), all / n as f64);
    let mut filters = 0.0;
    for key in raw
        .run("KEYS", vec![keys.filter_index_pattern().into()])
        .await?
        .into_array()
    {
        if let Some(k) = key.into_string() {
            filters += usage(k).await?;
        }
    }
    f.set(
        &format!("mem_filter_idx_bytes_per_task_{n}"),
        filters / n as f64,
    );
    Ok(())
}

impl Bench {
    /// `redis_bytes_per_task_N` and where the bytes go.
    pub(crate) async fn memory(&mut self, n: u64) -> anyhow::Result<()> {
        let baseline = self.f.get("redis_baseline_used_memory").unwrap_or(0.0);
        let used = self.raw0.used_memory().await? - baseline;
        self.f
            .set(&format!("redis_bytes_per_task_{n}"), used / n as f64);
        self.f.set("redis_bytes_per_task", used / n as f64);
        memory_breakdown(&self.raw0, &self.keys, n, &mut self.f).await
    }

    /// `server_rss_mb`: the app server's peak resident memory over the whole run.
    pub(crate) fn server_memory(&mut self) -> anyhow::Result<()> {
        let app = self
            .app
            .take()
            .ok_or_else(|| anyhow!("no app server was started"))?;
        let (peak, now) = app.memory_mb()?;
        self.f.set("server_rss_mb", peak);
        self.f.set("server_rss_now_mb", now);
        eprintln!("  server peak RSS {peak:.1} MiB");
        Ok(())
    }
}
