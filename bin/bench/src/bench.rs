//! The run's state ([`Bench`]): its settings, the Redis connections, the store under test
//! and the figures taken so far; its setup and its report, and what every phase shares.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use failed_tasks_domain::{ListQuery, PageLimits, PageSize, TaskFilter};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::{Keys, RedisConfig, RedisStore};
use failed_tasks_store::Stores;

use crate::child::ChildServer;
use crate::raw::Raw;
use crate::report::{self, Figures};
use crate::{load, retries, shards, Flags, Generator};

/// The store's key prefix in the benchmark (the production default).
pub(crate) const PREFIX: &str = "{failed-tasks}";

/// A second store that stays at 1,000 tasks: its page is timed interleaved with the big
/// store's, so the scale ratio compares two figures taken at the same moments.
pub(crate) const REF_PREFIX: &str = "{bench-ref-1k}";

/// The page the targets are about.
pub(crate) const PAGE: u32 = 50;

pub(crate) const LIST_PATH: &str = "/codebase-embedder/api/v1/tasks/failed?pageSize=50";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn page_query() -> anyhow::Result<ListQuery> {
    Ok(ListQuery {
        filter: TaskFilter::all(),
        page_size: PageSize::new(PAGE, PageLimits::DEFAULT)?,
        cursor: None,
    })
}

struct Machine {
    cores: usize,
    cpu: String,
    redis_version: String,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        redis_version: String::new(),
    }
}

/// What every stage needs: the settings of this run, the Redis connections, the stores and
/// the figures taken so far.
pub(crate) struct Bench {
    pub(crate) quick: bool,
    pub(crate) samples: usize,
    pub(crate) load_secs: u64,
    pub(crate) connections: usize,
    pub(crate) use_wrk: bool,
    pub(crate) sizes: Vec<u64>,
    machine: Machine,
    /// Database 0 (our store) and 1 (the Go records).
    pub(crate) raw0: Raw,
    pub(crate) raw1: Raw,
    pub(crate) url0: String,
    pub(crate) url1: String,
    /// The store under test, its key names and its use cases.
    pub(crate) store: RedisStore,
    pub(crate) keys: Keys,
    pub(crate) service: FailedTaskService,
    /// The 1k reference store (its keys and use cases).
    pub(crate) ref_keys: Keys,
    pub(crate) ref_service: Option<FailedTaskService>,
    pub(crate) query: ListQuery,
    /// When the filled tasks start failing (ms since the epoch).
    pub(crate) base_ms: i64,
    /// How many tasks the store holds.
    pub(crate) stored: u64,
    /// The app server under test, started at the first N.
    pub(crate) app: Option<ChildServer>,
    pub(crate) f: Figures,
    started: Instant,
}

/// The Redis store through every capability but retries: the listing, stats and write
/// figures are measured as before retries existed (recording schedules none).
pub(crate) fn without_retries(store: RedisStore) -> Stores {
    Stores {
        retries: None,
        ..Stores::from(store)
    }
}

/// Connect a Redis store under `prefix` and wait (bounded) until it answers.
pub(crate) async fn connect_store(url: &str, prefix: &str) -> anyhow::Result<RedisStore> {
    let store = RedisStore::connect(RedisConfig {
        url: url.to_owned(),
        key_prefix: prefix.to_owned(),
        command_timeout: Duration::from_secs(10),
        ..RedisConfig::default()
    })
    .await
    .map_err(|e| anyhow!("redis store: {e}"))?;
    if !store.wait_connected(Duration::from_secs(10)).await {
        bail!("the store could not connect to {url}");
    }
    Ok(store)
}

impl Bench {
    /// Settings, connections, the machine's description, the store under test.
    pub(crate) async fn setup(flags: &Flags, base_url: &str) -> anyhow::Result<Bench> {
        let sizes: Vec<u64> = if flags.quick {
            vec![1_000, 100_000]
        } else {
            vec![1_000, 100_000, 1_000_000]
        };
        let samples = flags
            .requests
            .unwrap_or(if flags.quick { 500 } else { 1000 })
            .max(1);
        let load_secs = flags
            .duration_secs
            .unwrap_or(if flags.quick { 4 } else { 10 });
        let use_wrk = match flags.load_generator {
            Generator::Wrk => {
                if !load::wrk_available() {
                    bail!("--load-generator wrk: wrk is not installed");
                }
                true
            }
            Generator::Builtin => false,
            Generator::Auto => load::wrk_available(),
        };
        let url0 = format!("{base_url}/0");
        let url1 = format!("{base_url}/1");
        let raw0 = Raw::connect(&url0).await?;
        let raw1 = Raw::connect(&url1).await?;
        if flags.redis_url.is_some() {
            let raw2 = Raw::connect(&format!("{base_url}/2")).await?;
            if raw0.dbsize().await? != 0 || raw1.dbsize().await? != 0 || raw2.dbsize().await? != 0 {
                bail!("--redis-url: databases 0, 1 and 2 must be empty (the bench flushes them)");
            }
        }
        let mut machine = machine();
        machine.redis_version = raw0
            .info("server")
            .await?
            .into_iter()
            .find(|(k, _)| k == "redis_version")
            .map(|(_, v)| v)
            .unwrap_or_default();

        let mut f = Figures::default();
        f.set_text("mode", if flags.quick { "quick" } else { "full" });
        f.set_text("machine_cpu", machine.cpu.clone());
        f.set("machine_cores", machine.cores as f64);
        f.set_text("redis_version", machine.redis_version.clone());
        f.set_text(
            "load_generator",
            if use_wrk {
                format!("wrk -t2 -c{} -d{load_secs}s", flags.connections)
            } else {
                format!("built-in, {} connections, {load_secs}s", flags.connections)
            },
        );
        eprintln!(
            "failed-tasks-bench: {} mode, {} cores ({}), redis {}, {} samples per latency",
            if flags.quick { "quick" } else { "full" },
            machine.cores,
            machine.cpu,
            machine.redis_version,
            samples
        );
        let store = connect_store(&url0, PREFIX).await?;
        let keys = store.keys().clone();
        // Statistics answers are not shared: the bench measures their computation.
        let service = FailedTaskService::new(without_retries(store.clone()), Deadlines::default())
            .with_stats_cache(Duration::ZERO);
        Ok(Bench {
            quick: flags.quick,
            samples,
            load_secs,
            connections: flags.connections,
            use_wrk,
            sizes,
            machine,
            raw0,
            raw1,
            url0,
            url1,
            store,
            keys,
            service,
            ref_keys: Keys::new(REF_PREFIX),
            ref_service: None,
            query: page_query()?,
            base_ms: now_ms() - 3_600_000 * 24,
            stored: 0,
            app: None,
            f,
            started: Instant::now(),
        })
    }

    /// `retries_moved_per_s` (without and with 100 gates), `retry_lag_p99_ms` and
    /// `limit_gate_rate_error`, on database 2.
    pub(crate) async fn retries(&mut self) -> anyhow::Result<()> {
        let url2 = format!("{}/2", self.url0.trim_end_matches("/0"));
        let (n, secs) = if self.quick {
            (50_000, 5)
        } else {
            (200_000, 15)
        };
        retries::record_cost(&url2, n / 2, &mut self.f).await?;
        retries::moved_per_s(&url2, n, false, &mut self.f).await?;
        retries::moved_per_s(&url2, n, true, &mut self.f).await?;
        retries::lag(&url2, secs, &mut self.f).await?;
        retries::limit_rate(&url2, &mut self.f).await
    }

    /// Phase 7: the sharding figures on a private cluster.
    pub(crate) async fn shards(&mut self) -> anyhow::Result<()> {
        shards::figures(self.samples, &self.query, &mut self.f).await
    }

    /// Print the table (and write the JSON).
    pub(crate) fn report(mut self, json: Option<&std::path::Path>) -> anyhow::Result<()> {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.f.set("elapsed_s", elapsed);
        print!("{}", report::table(&self.f, &self.sizes));
        let m = &self.machine;
        println!(
            "\nmachine: {} cores, {}, redis {}; run took {elapsed:.0} s",
            m.cores, m.cpu, m.redis_version
        );
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&self.f.to_json())?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
