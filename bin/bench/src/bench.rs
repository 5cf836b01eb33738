//! `failed-tasks-bench`: measures the project's performance targets (listed with
//! their figures in docs/BENCHMARKS.md) in one run, as ratios of figures taken side by side on the same machine.
//!
//! It starts its own private `redis-server` on a free loopback port (or uses `--redis-url`,
//! which must be a loopback address and an empty, disposable database: the run flushes
//! databases 0, 1 and 2), fills it, and measures:
//! 1. page latency (p50/p99) through the use case, through HTTP and as the raw Redis floor at
//!    N = 1k, 100k and (full run) 1M stored failures;
//! 2. the original Go algorithm (SCAN + one GET per key) and the compat source on 100k Go
//!    records, 5 % failed, against our page;
//! 3. HTTP throughput of the list against a hello-world hyper server serving the same bytes;
//! 4. recording throughput from one process;
//! 5. Redis memory per stored failure and the server's peak resident memory;
//! 6. retries: due retries moved into the stream per second by one scheduler, and the lag
//!    from due to in the stream at 1,000 due retries per second (database 2);
//! 7. sharding, on a private three-master Redis Cluster: 100k failures in 16 shards spread
//!    over the masters, page latency and recording rate of 16 shards against 1.
//!
//! The HTTP servers run in child processes of this executable (`--serve-child`), so their CPU
//! time and memory are measured apart from the load generator and the data filler.
//!
//! # Layout
//! - `data`: deterministic tasks and Go status records.
//! - `raw`: direct Redis access (floor page, Go algorithm, INFO).
//! - `load`: raw keep-alive HTTP client, built-in load generator, `wrk` driver.
//! - `child`: the app and hello-world servers in child processes.
//! - `shards`: the sharding figures on a private cluster.
//! - `report`: figures, targets, table and JSON.

#![forbid(unsafe_code)]

mod child;
mod data;
mod load;
mod raw;
mod report;
mod retries;
mod shards;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use failed_tasks_domain::{
    JitterRng, ListQuery, PageLimits, PageSize, RetryPlan, RetryPolicy, TaskFilter, Timestamp,
};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::{CompatConfig, CompatStore, Keys, RedisConfig, RedisStore};
use failed_tasks_store::{RetryStore, StatusStore, StoredPages, Stores};

use crate::child::{ChildServer, Kind};
use crate::load::HttpConn;
use crate::raw::Raw;
use crate::report::{Figures, Latency};

/// The store's key prefix in the benchmark (the production default).
const PREFIX: &str = "{failed-tasks}";
/// A second store that stays at 1,000 tasks: its page is timed interleaved with the big
/// store's, so the scale ratio compares two figures taken at the same moments.
const REF_PREFIX: &str = "{bench-ref-1k}";
/// The page the targets are about.
const PAGE: u32 = 50;
const LIST_PATH: &str = "/codebase-embedder/api/v1/tasks/failed?pageSize=50";
/// Go records for the upstream comparison, 5 % of them failed.
const GO_KEYS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Generator {
    /// wrk when installed, else the built-in one.
    Auto,
    Wrk,
    Builtin,
}

/// Measure the failed-task store against the project's performance targets.
#[derive(Debug, Parser)]
#[command(version)]
struct Flags {
    /// N up to 100k and shorter load runs: finishes in under a minute on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Write every figure (and each target's verdict) to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Use this Redis instead of starting a private one: a loopback `redis://host:port`
    /// without a database path, whose databases 0, 1 and 2 are empty; the run flushes them.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Timed requests per latency figure (default 1000, --quick 500).
    #[arg(long)]
    requests: Option<usize>,
    /// Seconds of each HTTP load run (default 10, --quick 4).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Keep-alive connections of each HTTP load run.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The HTTP load generator.
    #[arg(long, value_enum, default_value = "auto")]
    load_generator: Generator,
    /// Run only the sharding figures (a private three-master cluster; phase 7).
    #[arg(long)]
    only_shards: bool,
    /// Internal: run one of the servers under test (started by the bench itself).
    #[arg(long, value_enum, hide = true)]
    serve_child: Option<Kind>,
    #[arg(long, hide = true, default_value = PREFIX)]
    prefix: String,
    #[arg(long, hide = true)]
    body_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    if let Some(kind) = flags.serve_child {
        let url = flags
            .redis_url
            .clone()
            .ok_or_else(|| anyhow!("--serve-child needs --redis-url"))?;
        return child::serve_child(kind, &url, &flags.prefix, flags.body_file.clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(run(flags))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `redis://host:port` must name a loopback host.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| anyhow!("--redis-url must be redis://host:port"))?;
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    if hostport.contains('/') {
        bail!("--redis-url must not name a database; the bench uses databases 0, 1 and 2");
    }
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--redis-url must be a loopback address (127.0.0.0/8, ::1, localhost), not {host}");
    }
    Ok(())
}

pub(crate) fn page_query() -> anyhow::Result<ListQuery> {
    Ok(ListQuery {
        filter: TaskFilter::all(),
        page_size: PageSize::new(PAGE, PageLimits::DEFAULT)?,
        cursor: None,
    })
}

/// Record tasks `from..to` as the server does, with their retry plans from the default
/// policy (scheduling included), `in_flight` batches at a time.
async fn fill(store: &RedisStore, from: u64, to: u64, base_ms: i64) -> anyhow::Result<Duration> {
    const BATCH: u64 = 500;
    const IN_FLIGHT: usize = 4;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut next = from;
    while next < to || !set.is_empty() {
        while next < to && set.len() < IN_FLIGHT {
            let end = (next + BATCH).min(to);
            let store = store.clone();
            let (a, b) = (next, end);
            set.spawn(async move {
                let policy = RetryPolicy::default();
                let mut jitter = JitterRng::new(a);
                let planned: Vec<_> = data::tasks(a, b, base_ms)?
                    .into_iter()
                    .map(|t| {
                        let plan = RetryPlan::of(&policy, &t, jitter.next_unit());
                        (t, plan)
                    })
                    .collect();
                store
                    .record_planned(&planned)
                    .await
                    .map_err(|e| anyhow!("recording tasks {a}..{b}: {e}"))?;
                Ok::<_, anyhow::Error>(())
            });
            next = end;
        }
        if let Some(r) = set.join_next().await {
            r.context("fill task panicked")??;
        }
    }
    Ok(start.elapsed())
}

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

/// Pages per second and Redis CPU per page with `callers` concurrent callers of `page`
/// for `d`: what Redis itself costs per page, apart from any HTTP server.
async fn page_load<F, Fut>(
    raw: &Raw,
    callers: usize,
    d: Duration,
    page: F,
) -> anyhow::Result<(f64, f64)>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let cpu0 = raw.cpu_seconds().await?;
    let start = Instant::now();
    let deadline = start + d;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let page = page.clone();
        set.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                page().await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        });
    }
    let mut pages = 0u64;
    while let Some(r) = set.join_next().await {
        pages += r.context("page load task panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = raw.cpu_seconds().await? - cpu0;
    Ok((pages as f64 / secs, cpu * 1e6 / pages.max(1) as f64))
}

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
struct Bench {
    quick: bool,
    samples: usize,
    load_secs: u64,
    connections: usize,
    use_wrk: bool,
    sizes: Vec<u64>,
    machine: Machine,
    /// Database 0 (our store) and 1 (the Go records).
    raw0: Raw,
    raw1: Raw,
    url0: String,
    url1: String,
    /// The store under test, its key names and its use cases.
    store: RedisStore,
    keys: Keys,
    service: FailedTaskService,
    /// The 1k reference store (its keys and use cases).
    ref_keys: Keys,
    ref_service: Option<FailedTaskService>,
    query: ListQuery,
    /// When the filled tasks start failing (ms since the epoch).
    base_ms: i64,
    /// How many tasks the store holds.
    stored: u64,
    /// The app server under test, started at the first N.
    app: Option<ChildServer>,
    f: Figures,
    started: Instant,
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    // A private Redis unless told otherwise; never the machine's 6379 by default.
    let (_guard, base_url) = match &flags.redis_url {
        Some(url) => {
            check_loopback(url)?;
            (None, url.trim_end_matches('/').to_owned())
        }
        None => {
            std::process::Command::new("redis-server")
                .arg("--version")
                .output()
                .context(
                    "redis-server is not installed (apt-get install -y redis-server), or pass --redis-url",
                )?;
            let server = failed_tasks_testkit::RedisServer::start();
            let url = server.url();
            (Some(server), url)
        }
    };
    let mut b = Bench::setup(&flags, &base_url).await?;
    if flags.only_shards {
        b.shards().await?;
        return b.report(flags.json.as_deref());
    }
    b.record_one_at_a_time().await?;
    b.fill_reference().await?;
    for n in b.sizes.clone() {
        b.fill_to(n).await?;
        b.memory(n).await?;
        stats_cost(&b.service, n, b.base_ms, &mut b.f).await?;
        b.page_latency(n).await?;
        if n == 100_000 {
            b.upstream_comparison().await?;
        }
    }
    b.scale_and_floor_ratios();
    b.http_throughput().await?;
    b.redis_cpu_per_page().await?;
    b.server_memory()?;
    b.retries().await?;
    b.shards().await?;
    b.report(flags.json.as_deref())
}

/// Connect a Redis store under `prefix` and wait (bounded) until it answers.
/// The Redis store through every capability but retries: the listing, stats and write
/// figures are measured as before retries existed (recording schedules none).
fn without_retries(store: RedisStore) -> Stores {
    Stores {
        retries: None,
        ..Stores::from(store)
    }
}

async fn connect_store(url: &str, prefix: &str) -> anyhow::Result<RedisStore> {
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
    async fn setup(flags: &Flags, base_url: &str) -> anyhow::Result<Bench> {
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

    /// `records_per_s_single`: `record` one task per call (the port's basic path), 64
    /// callers at once, into a store of its own that is flushed afterwards.
    async fn record_one_at_a_time(&mut self) -> anyhow::Result<()> {
        let single = connect_store(&self.url0, "{bench-single}").await?;
        let n = if self.quick { 10_000 } else { 50_000 };
        let rate = record_singly(&single, n, 64).await?;
        self.f.set("records_per_s_single", rate);
        eprintln!("  record() one at a time, 64 callers: {rate:.0}/s");
        self.raw0.run("FLUSHDB", vec![]).await?;
        Ok(())
    }

    /// The 1k reference store, whose page is timed interleaved with the big store's.
    async fn fill_reference(&mut self) -> anyhow::Result<()> {
        let ref_store = connect_store(&self.url0, REF_PREFIX).await?;
        fill(&ref_store, 0, 1_000, now_ms() - 3_600_000 * 24).await?;
        self.ref_keys = ref_store.keys().clone();
        self.ref_service = Some(FailedTaskService::new(
            without_retries(ref_store),
            Deadlines::default(),
        ));
        Ok(())
    }

    /// Fill the store up to `n` with the batched path: `records_per_s` is the 1k→100k fill.
    async fn fill_to(&mut self, n: u64) -> anyhow::Result<()> {
        if self.stored == 0 {
            self.f
                .set("redis_baseline_used_memory", self.raw0.used_memory().await?);
        }
        let took = fill(&self.store, self.stored, n, self.base_ms).await?;
        let rate = (n - self.stored) as f64 / took.as_secs_f64();
        eprintln!(
            "  filled {}..{n} in {:.1} s ({rate:.0}/s)",
            self.stored,
            took.as_secs_f64()
        );
        if self.stored > 0 && n <= 100_000 {
            self.f.set("records_per_s", rate);
        } else if self.stored > 0 {
            self.f.set("records_per_s_to_max", rate);
        }
        self.stored = n;
        Ok(())
    }

    /// `redis_bytes_per_task_N` and where the bytes go.
    async fn memory(&mut self, n: u64) -> anyhow::Result<()> {
        let baseline = self.f.get("redis_baseline_used_memory").unwrap_or(0.0);
        let used = self.raw0.used_memory().await? - baseline;
        self.f
            .set(&format!("redis_bytes_per_task_{n}"), used / n as f64);
        self.f.set("redis_bytes_per_task", used / n as f64);
        memory_breakdown(&self.raw0, &self.keys, n, &mut self.f).await
    }

    /// Page latency at `n`: use case, store alone, HTTP, raw floor, and the 1k reference
    /// store's use-case page and floor, interleaved call by call so that a burst of other
    /// work on the (shared) machine hits every figure alike.
    async fn page_latency(&mut self, n: u64) -> anyhow::Result<()> {
        if self.app.is_none() {
            self.app = Some(ChildServer::start(Kind::App, &self.url0, PREFIX, None)?);
        }
        let app = self.app.as_ref().ok_or_else(|| anyhow!("no app server"))?;
        let ref_service = self
            .ref_service
            .as_ref()
            .ok_or_else(|| anyhow!("the reference store is not filled"))?;
        let (index, record_prefix) = (self.keys.all(), self.keys.record_prefix());
        let (ref_index, ref_record_prefix) = (self.ref_keys.all(), self.ref_keys.record_prefix());
        let query = &self.query;
        let mut conn = HttpConn::connect(app.addr, LIST_PATH).await?;
        let mut times: [Vec<Duration>; 6] = Default::default();
        let warm = self.samples / 10;
        for i in 0..self.samples + warm {
            let keep = i >= warm;
            let mut lap = |k: usize, start: Instant| {
                if keep {
                    times[k].push(start.elapsed());
                }
            };
            let t = Instant::now();
            let page = self
                .service
                .list_failed(query)
                .await
                .map_err(|e| anyhow!("list_failed: {e}"))?;
            lap(0, t);
            if page.tasks.len() != PAGE as usize || page.total != n {
                bail!(
                    "unexpected page: {} tasks, total {}",
                    page.tasks.len(),
                    page.total
                );
            }
            let t = Instant::now();
            self.store
                .list(query)
                .await
                .map_err(|e| anyhow!("store.list: {e}"))?;
            lap(1, t);
            let t = Instant::now();
            let r = conn.get(false).await?;
            lap(2, t);
            if r.status != 200 {
                bail!("HTTP list answered {}", r.status);
            }
            let t = Instant::now();
            self.raw0.floor_page(&index, &record_prefix).await?;
            lap(3, t);
            let t = Instant::now();
            ref_service
                .list_failed(query)
                .await
                .map_err(|e| anyhow!("list_failed on the 1k reference: {e}"))?;
            lap(4, t);
            let t = Instant::now();
            self.raw0.floor_page(&ref_index, &ref_record_prefix).await?;
            lap(5, t);
        }
        let [usecase, alone, http, floor, ref_usecase, ref_floor] = times.map(Latency::of);
        let f = &mut self.f;
        f.latency(&format!("usecase_{n}"), usecase);
        f.latency(&format!("store_{n}"), alone);
        f.latency(&format!("http_{n}"), http);
        f.latency(&format!("floor_{n}"), floor);
        f.latency(&format!("ref1k_usecase_at_{n}"), ref_usecase);
        f.latency(&format!("ref1k_floor_at_{n}"), ref_floor);
        eprintln!(
            "  N={n}: use case p50 {:.3} ms, store {:.3}, HTTP {:.3}, floor {:.3}",
            usecase.p50_ms, alone.p50_ms, http.p50_ms, floor.p50_ms
        );
        Ok(())
    }

    /// The original algorithm (SCAN + one GET per key) and the compat source on 100k Go
    /// records, 5 % failed, against our use-case page at 100k.
    async fn upstream_comparison(&mut self) -> anyhow::Result<()> {
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

    /// `scale_ratio` (largest N against the 1k store, interleaved) and `floor_ratio`.
    fn scale_and_floor_ratios(&mut self) {
        let f = &mut self.f;
        let first = self.sizes.first().copied().unwrap_or(1_000);
        let last = self.sizes.last().copied().unwrap_or(1_000);
        if let (Some(a), Some(b)) = (
            f.get(&format!("usecase_{first}_p50_ms")),
            f.get(&format!("usecase_{last}_p50_ms")),
        ) {
            f.set("scale_ratio_staged", b / a);
        }
        if let (Some(a), Some(b)) = (
            f.get(&format!("ref1k_usecase_at_{last}_p50_ms")),
            f.get(&format!("usecase_{last}_p50_ms")),
        ) {
            f.set("scale_ratio", b / a);
            f.set_text(
                "scale_ratio_basis",
                format!(
                    "use-case p50 at N={last} / a 1k store's, interleaved in the same loop \
                     (staged N={last} vs N={first} minutes apart: scale_ratio_staged)"
                ),
            );
        }
        if let (Some(ours), Some(floor)) = (
            f.get(&format!("usecase_{last}_p50_ms")),
            f.get(&format!("floor_{last}_p50_ms")),
        ) {
            f.set("floor_ratio", ours / floor);
            f.set_text(
                "floor_ratio_basis",
                format!("use-case p50 / floor p50 at N={last}"),
            );
        }
    }

    /// HTTP throughput of the list against a hello-world server serving the same bytes (and
    /// the fast-path prototype), with each server's and Redis's CPU per request.
    async fn http_throughput(&mut self) -> anyhow::Result<()> {
        let app = self
            .app
            .as_ref()
            .ok_or_else(|| anyhow!("no app server was started"))?;
        let mut conn = HttpConn::connect(app.addr, LIST_PATH).await?;
        let reference = conn.get(true).await?;
        let body = String::from_utf8_lossy(&reference.body);
        if reference.status != 200
            || reference.content_type.as_deref() != Some("application/json")
            || body.matches("\"TaskId\"").count() != PAGE as usize
        {
            bail!("the app's page is not a 200 JSON page of {PAGE}: {body:.200}");
        }
        let f = &mut self.f;
        f.set("page_bytes", reference.body.len() as f64);
        let body_file =
            std::env::temp_dir().join(format!("failed-tasks-bench-{}.json", std::process::id()));
        std::fs::write(&body_file, &reference.body).context("writing the page body")?;
        let hello = ChildServer::start(Kind::Hello, &self.url0, PREFIX, Some(&body_file))?;
        let fast = ChildServer::start(Kind::Fast, &self.url0, PREFIX, None)?;
        {
            let mut c = HttpConn::connect(fast.addr, LIST_PATH).await?;
            let r = c.get(true).await?;
            let fast_body = String::from_utf8_lossy(&r.body);
            if r.status != 200 || fast_body.matches("\"TaskId\"").count() != PAGE as usize {
                bail!("the fast-path prototype's page is wrong: {fast_body:.200}");
            }
            f.set("fast_page_bytes", r.body.len() as f64);
        }
        let (connections, use_wrk, raw0) = (self.connections, self.use_wrk, &self.raw0);
        let duration = Duration::from_secs(self.load_secs.max(1));
        // Warm both up briefly, then measure hello, then the app.
        for addr in [hello.addr, app.addr] {
            load::run(
                addr,
                LIST_PATH,
                connections,
                Duration::from_secs(1),
                use_wrk,
            )
            .await?;
        }
        // Alternate the servers (the machine is shared: a burst of other work should hit
        // each alike), keep each one's best round.
        let rounds = if self.quick { 1 } else { 2 };
        let (mut h_best, mut a_best, mut fast_best) = (0.0f64, 0.0f64, 0.0f64);
        let (mut fast_cpu, mut fast_req, mut fast_redis_cpu) = (0.0, 0u64, 0.0);
        let (mut h_req, mut a_req, mut errors) = (0u64, 0u64, 0u64);
        let (mut hello_cpu, mut app_cpu, mut redis_cpu) = (0.0, 0.0, 0.0);
        for _ in 0..rounds {
            let cpu0 = hello.cpu_seconds()?;
            let h = load::run(hello.addr, LIST_PATH, connections, duration, use_wrk).await?;
            hello_cpu += hello.cpu_seconds()? - cpu0;
            let cpu0 = app.cpu_seconds()?;
            let redis_cpu0 = raw0.cpu_seconds().await?;
            let a = load::run(app.addr, LIST_PATH, connections, duration, use_wrk).await?;
            app_cpu += app.cpu_seconds()? - cpu0;
            redis_cpu += raw0.cpu_seconds().await? - redis_cpu0;
            let cpu0 = fast.cpu_seconds()?;
            let redis_cpu0 = raw0.cpu_seconds().await?;
            let p = load::run(fast.addr, LIST_PATH, connections, duration, use_wrk).await?;
            fast_cpu += fast.cpu_seconds()? - cpu0;
            fast_redis_cpu += raw0.cpu_seconds().await? - redis_cpu0;
            fast_best = fast_best.max(p.requests_per_s);
            fast_req += p.requests;
            errors += p.errors;
            h_best = h_best.max(h.requests_per_s);
            a_best = a_best.max(a.requests_per_s);
            h_req += h.requests;
            a_req += a.requests;
            errors += h.errors + a.errors;
            eprintln!(
                "  round: hello {:.0} req/s, list {:.0} req/s, fast-path prototype {:.0} req/s",
                h.requests_per_s, a.requests_per_s, p.requests_per_s
            );
        }
        drop(hello);
        drop(fast);
        let _ = std::fs::remove_file(&body_file);
        f.set("fastpath_rps", fast_best);
        f.set("fastpath_vs_hello", fast_best / h_best);
        if fast_req > 0 {
            f.set(
                "fastpath_server_cpu_us_per_req",
                fast_cpu * 1e6 / fast_req as f64,
            );
            f.set(
                "fastpath_redis_cpu_us_per_req",
                fast_redis_cpu * 1e6 / fast_req as f64,
            );
        }
        if errors > 0 {
            bail!("{errors} non-200 answers under load");
        }
        f.set("hello_rps", h_best);
        f.set("http_rps", a_best);
        f.set("http_vs_hello", a_best / h_best);
        if h_req > 0 {
            f.set(
                "hello_server_cpu_us_per_req",
                hello_cpu * 1e6 / h_req as f64,
            );
        }
        if a_req > 0 {
            f.set("http_server_cpu_us_per_req", app_cpu * 1e6 / a_req as f64);
            f.set("http_redis_cpu_us_per_req", redis_cpu * 1e6 / a_req as f64);
        }
        if let (Some(app), Some(hello)) = (
            f.get("http_server_cpu_us_per_req"),
            f.get("hello_server_cpu_us_per_req"),
        ) {
            f.set("server_cpu_vs_hello", app / hello);
        }
        eprintln!("  HTTP: hello {h_best:.0} req/s, list {a_best:.0} req/s");
        Ok(())
    }

    /// What Redis itself costs per page: the raw floor and our read path, 64 callers each.
    async fn redis_cpu_per_page(&mut self) -> anyhow::Result<()> {
        let load_d = Duration::from_secs(if self.quick { 2 } else { 4 });
        let raw = self.raw0.clone();
        let (index, record_prefix) = (self.keys.all(), self.keys.record_prefix());
        let (rate, cpu) = page_load(&self.raw0, 64, load_d, move || {
            let raw = raw.clone();
            let (index, record_prefix) = (index.clone(), record_prefix.clone());
            async move {
                raw.floor_page(&index, &record_prefix).await?;
                Ok(())
            }
        })
        .await?;
        self.f.set("redis_floor_pages_per_s", rate);
        self.f.set("redis_floor_cpu_us_per_page", cpu);
        let st = self.store.clone();
        let q = Arc::new(self.query.clone());
        let (rate, cpu) = page_load(&self.raw0, 64, load_d, move || {
            let st = st.clone();
            let q = q.clone();
            async move {
                st.list_stored(&q)
                    .await
                    .map_err(|e| anyhow!("list_stored: {e}"))?;
                Ok(())
            }
        })
        .await?;
        self.f.set("redis_list_json_pages_per_s", rate);
        self.f.set("redis_list_json_cpu_us_per_page", cpu);
        if let Some(floor) = self.f.get("redis_floor_cpu_us_per_page") {
            self.f.set("redis_cpu_vs_floor", cpu / floor);
        }
        Ok(())
    }

    /// `server_rss_mb`: the app server's peak resident memory over the whole run.
    fn server_memory(&mut self) -> anyhow::Result<()> {
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

    /// `retries_moved_per_s` and `retry_lag_p99_ms`, on database 2.
    async fn retries(&mut self) -> anyhow::Result<()> {
        let url2 = format!("{}/2", self.url0.trim_end_matches("/0"));
        let (n, secs) = if self.quick {
            (50_000, 5)
        } else {
            (200_000, 15)
        };
        retries::record_cost(&url2, n / 2, &mut self.f).await?;
        retries::moved_per_s(&url2, n, &mut self.f).await?;
        retries::lag(&url2, secs, &mut self.f).await
    }

    /// Print the table (and write the JSON), then empty the database.
    /// Phase 7: the sharding figures on a private cluster.
    async fn shards(&mut self) -> anyhow::Result<()> {
        shards::figures(self.samples, &self.query, &mut self.f).await
    }

    fn report(mut self, json: Option<&std::path::Path>) -> anyhow::Result<()> {
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

/// The statistics request at this N: a 1-hour and a 7-day window whose last minute is the
/// 59th after the data's first (the filled tasks are 3 ms apart, so 1M of them span 50
/// minutes and all fall in both windows). Their cost must not grow with N: the stores read
/// per-hour counters and per-bucket breakdowns, not tasks (every call computed: the bench's
/// service shares no answers).
async fn stats_cost(
    service: &FailedTaskService,
    n: u64,
    base_ms: i64,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let now = Timestamp::saturating_from_unix_millis(base_ms + 59 * 60_000);
    for (label, minutes) in [("1h", 60i64), ("7d", 7 * 24 * 60)] {
        let mut times = Vec::with_capacity(50);
        let mut total = 0;
        for _ in 0..50 {
            let (stats, t) = raw::timed(async {
                service
                    .failure_stats(minutes, now, 20)
                    .await
                    .map_err(|e| anyhow!("failure_stats: {e}"))
            })
            .await?;
            total = stats.total;
            times.push(t);
        }
        if total != n {
            bail!("stats over {label} counted {total} failures, {n} were recorded");
        }
        let l = Latency::of(times);
        f.set(&format!("stats_{label}_{n}_p50_ms"), l.p50_ms);
        eprintln!(
            "  N={n}: stats {label} p50 {:.3} ms (counted {total})",
            l.p50_ms
        );
    }
    Ok(())
}
