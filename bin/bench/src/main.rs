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
//!    over the masters, page latency and recording rate of 16 shards against 1;
//! 8. search and export, on a store of their own with N failures in 1,000 groups: a `q` of
//!    pattern text (groups) and a concrete one (a walk), page latency; the export of every
//!    row as CSV and NDJSON, rows/s and the server's resident memory growth;
//! 9. (`--only-notify`) recording with notification targets against without;
//! 10. (`--only-codebase`) a success report superseding 1,000 failures, and failed files: the
//!     page p50 with files against without, recording a task with 1,000 files, Redis bytes a
//!     file.
//!
//! The HTTP servers run in child processes of this executable (`--serve-child`), so their CPU
//! time and memory are measured apart from the load generator and the data filler.
//!
//! # Layout
//! - this file: the flags and the order of the phases.
//! - `bench`: the run's state, its setup and report, and what the phases share.
//! - one module per phase: `pages` (1), `upstream` (2), `throughput` (3), `recording` (4),
//!   `memory` (5), `retries` (6), `shards` (7, on a private cluster), `search` (8), `notify`
//!   (9), `codebase` and `files` (10), and `stats` (the statistics request at each N).
//! - `data`: deterministic tasks and Go status records.
//! - `raw`: direct Redis access (floor page, Go algorithm, INFO).
//! - `load`: raw keep-alive HTTP client, built-in load generator, `wrk` driver.
//! - `child`: the app and hello-world servers in child processes.
//! - `report`: figures, targets, table and JSON.

#![forbid(unsafe_code)]

mod bench;
mod child;
mod codebase;
mod data;
mod files;
mod load;
mod memory;
mod notify;
mod pages;
mod raw;
mod recording;
mod report;
mod retries;
mod search;
mod shards;
mod stats;
mod throughput;
mod upstream;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::Parser;

use crate::bench::{Bench, PREFIX};
use crate::child::Kind;
use crate::stats::stats_cost;
// The phases' clock, where `shards` imports it from.
use crate::bench::now_ms;

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
    /// Run only the search and export figures (phase 8).
    #[arg(long)]
    only_search: bool,
    /// Run only the retry figures (phase 8: scheduling cost, moved per second with and
    /// without gates, lag, a limit gate's rate).
    #[arg(long)]
    only_retries: bool,
    /// Run only the notification figure (phase 9: recording with two notification targets
    /// and a receiver, against recording without).
    #[arg(long)]
    only_notify: bool,
    /// Run only the codebase figures (phase 10: what a superseding report costs, and what
    /// failed files cost: page p50 with and without, recording, Redis bytes a file).
    #[arg(long)]
    only_codebase: bool,
    /// Run only the recording figures (phase 4's fill from 1,000 to 100,000 tasks:
    /// `records_per_s` and `record_redis_us_per_task`).
    #[arg(long)]
    only_recording: bool,
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
    if flags.only_search {
        b.search_and_export().await?;
        return b.report(flags.json.as_deref());
    }
    if flags.only_retries {
        b.retries().await?;
        return b.report(flags.json.as_deref());
    }
    if flags.only_notify {
        b.notify_cost().await?;
        return b.report(flags.json.as_deref());
    }
    if flags.only_codebase {
        b.codebase_costs().await?;
        b.files_costs().await?;
        return b.report(flags.json.as_deref());
    }
    if flags.only_recording {
        b.fill_to(1_000).await?;
        b.fill_to(100_000).await?;
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
    b.search_and_export().await?;
    b.retries().await?;
    b.shards().await?;
    b.report(flags.json.as_deref())
}
