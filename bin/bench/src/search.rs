//! Phase 8, search and export, on a store of its own (`{bench-search}`, database 0): N
//! failures (quick: 100k, full: 1M) in 1,000 failure groups, served by an app child.
//! - `search_groups`: a `q` naming one group's pattern (`shard qxa`): the groups way, page of
//!   50, p50/p99 over HTTP;
//! - `search_walk`: a `q` only concrete messages hold (`#123`, 1 task in 997): the walk, page
//!   of 50 or an incomplete answer, p50 and the slowest (bounded by the request deadline);
//! - `export_{csv,ndjson}`: every row streamed to a client that reads as fast as it can:
//!   rows/s, and the child's resident memory growth (peak during the export minus resident
//!   before it).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use failed_tasks_domain::{ErrorCategory, FailedTask, NewFailedTask, RetryPlan, Timestamp};
use failed_tasks_store::RetryStore;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench::{connect_store, Bench};
use crate::child::{ChildServer, Kind};
use crate::load::HttpConn;
use crate::report::Latency;

/// The search store's key prefix.
pub(crate) const SEARCH_PREFIX: &str = "{bench-search}";
/// Failure groups in the search store.
const GROUPS: u64 = 1000;
/// Tasks per `record_planned` call while filling, and calls in flight.
const FILL_BATCH: u64 = 500;
const FILL_IN_FLIGHT: usize = 4;
/// Walk samples (each reads ~50,000 tasks).
const WALK_SAMPLES: usize = 20;

const CODES: [(&str, ErrorCategory); 5] = [
    ("TIMEOUT_ERROR", ErrorCategory::ServiceTimeout),
    ("PERMISSION_DENIED", ErrorCategory::Authorization),
    ("STORAGE_ERROR", ErrorCategory::ResourceExhausted),
    ("INVALID_FORMAT", ErrorCategory::DataError),
    ("INTERNAL_ERROR", ErrorCategory::SystemError),
];

/// Group `g`'s word: three letters, distinct for every group (normalisation keeps it).
fn word(g: u64) -> String {
    let letter = |n: u64| char::from(b'a' + (n % 26) as u8);
    [letter(g), letter(g / 26), letter(g / 676)]
        .iter()
        .collect()
}

/// The `i`-th task of the search store: group `i % 1000` (its code and its word), the
/// concrete `#{i % 997}` in every message.
fn task(i: u64, base_ms: i64) -> anyhow::Result<FailedTask> {
    let g = i % GROUPS;
    let (code, category) = CODES[(g % 5) as usize];
    let fail = base_ms + (i as i64) * 3;
    Ok(FailedTask::new(NewFailedTask {
        task_id: format!("search-{i:08}"),
        task_type: "embedding".to_owned(),
        client_id: format!("client-{:03}", i % 50),
        codebase_path: format!("/projects/team-{:02}/repo-{:04}", i % 17, i % 1000),
        start_time: Timestamp::saturating_from_unix_millis(fail - 60_000),
        fail_time: Timestamp::saturating_from_unix_millis(fail),
        error_code: code.to_owned(),
        error_message: format!(
            "vector embedding worker failed in shard {} while processing item #{}",
            word(g),
            i % 997
        ),
        retry_count: (i % 4) as u32,
        processed_files: i % 500,
        error_category: Some(category),
    })?)
}

/// Read a whole streamed answer to `path` (Connection: close): its bytes, its line feeds,
/// its last bytes, and how long it took.
async fn stream(
    addr: std::net::SocketAddr,
    path: &str,
) -> anyhow::Result<(u64, u64, Vec<u8>, Duration)> {
    if !addr.ip().is_loopback() {
        bail!("refusing to read from non-loopback address {addr}");
    }
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.context("connecting")?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut bytes, mut newlines) = (0u64, 0u64);
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .context("the export stalled for 30 s")??;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        newlines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        tail.extend_from_slice(&buf[..n]);
        let keep = tail.len().saturating_sub(512);
        tail.drain(..keep);
    }
    Ok((bytes, newlines, tail, started.elapsed()))
}

impl Bench {
    /// Phase 8 (see the module).
    pub(crate) async fn search_and_export(&mut self) -> anyhow::Result<()> {
        let n: u64 = if self.quick { 100_000 } else { 1_000_000 };
        let store = connect_store(&self.url0, SEARCH_PREFIX).await?;
        let filled = Instant::now();
        let mut next = 0u64;
        while next < n {
            let mut calls = Vec::with_capacity(FILL_IN_FLIGHT);
            for _ in 0..FILL_IN_FLIGHT {
                if next >= n {
                    break;
                }
                let to = (next + FILL_BATCH).min(n);
                // As the server records (one script per batch), without retry plans: the
                // search figures are about reading.
                let tasks = (next..to)
                    .map(|i| Ok((task(i, self.base_ms)?, RetryPlan::NotScheduled)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let store = &store;
                calls.push(async move { store.record_planned(&tasks).await });
                next = to;
            }
            for done in join_all(calls).await {
                done.map_err(|e| anyhow!("filling the search store: {e}"))?;
            }
        }
        eprintln!(
            "  search store: {n} tasks in {GROUPS} groups recorded in {:.1} s",
            filled.elapsed().as_secs_f64()
        );
        let f = &mut self.f;
        f.set("search_n", n as f64);
        let app = ChildServer::start(Kind::App, &self.url0, SEARCH_PREFIX, None)?;

        // The groups way: a text of one group's pattern.
        let groups_path = format!(
            "/codebase-embedder/api/v1/tasks/failed?pageSize=50&q=shard+{}",
            word(123)
        );
        let mut conn = HttpConn::connect(app.addr, &groups_path).await?;
        let first = conn.get(true).await?;
        let body: serde_json::Value = serde_json::from_slice(&first.body)?;
        let data = &body["Data"];
        if first.status != 200
            || data["Search"] != "groups"
            || data["TotalTasks"].as_u64() != Some(n / GROUPS)
            || data["Tasks"].as_array().map(Vec::len) != Some(50)
        {
            bail!(
                "the groups search answered {:.300}",
                String::from_utf8_lossy(&first.body)
            );
        }
        let mut samples = Vec::with_capacity(self.samples);
        for _ in 0..self.samples {
            let t = Instant::now();
            let r = conn.get(false).await?;
            samples.push(t.elapsed());
            if r.status != 200 {
                bail!("the groups search answered {}", r.status);
            }
        }
        f.latency("search_groups", Latency::of(samples));

        // The walk: a concrete text, 1 task in 997.
        let walk_path = "/codebase-embedder/api/v1/tasks/failed?pageSize=50&q=%23123";
        let mut conn = HttpConn::connect(app.addr, walk_path).await?;
        let (mut samples, mut complete) = (Vec::with_capacity(WALK_SAMPLES), 0u32);
        for _ in 0..WALK_SAMPLES {
            let t = Instant::now();
            let r = conn.get(true).await?;
            samples.push(t.elapsed());
            let body: serde_json::Value = serde_json::from_slice(&r.body)?;
            if r.status != 200 || body["Data"]["Search"] != "walk" {
                bail!(
                    "the walk answered {:.300}",
                    String::from_utf8_lossy(&r.body)
                );
            }
            if body["Data"]["Complete"] == true {
                complete += 1;
            }
        }
        let slowest = samples.iter().max().copied().unwrap_or_default();
        f.latency("search_walk", Latency::of(samples));
        f.set("search_walk_max_ms", slowest.as_secs_f64() * 1e3);
        f.set(
            "search_walk_complete_pct",
            f64::from(complete) * 100.0 / WALK_SAMPLES as f64,
        );

        // The export of every row, in each format.
        let (mut slowest_rate, mut most_growth) = (f64::INFINITY, 0.0f64);
        for format in ["csv", "ndjson"] {
            let (_, rss_before) = app.memory_mb()?;
            let path = format!("/codebase-embedder/api/v1/tasks/failed/export?format={format}");
            let (bytes, newlines, tail, took) = stream(app.addr, &path).await?;
            let (peak, _) = app.memory_mb()?;
            let tail = String::from_utf8_lossy(&tail);
            if newlines < n || tail.contains("Truncated") || !tail.contains("search-00000000") {
                bail!("the {format} export is incomplete: {newlines} lines, ending {tail:?}");
            }
            let rate = n as f64 / took.as_secs_f64();
            let growth = (peak - rss_before).max(0.0);
            f.set(&format!("export_{format}_rows_per_s"), rate);
            f.set(&format!("export_{format}_mb"), bytes as f64 / 1e6);
            f.set(&format!("export_{format}_rss_growth_mb"), growth);
            slowest_rate = slowest_rate.min(rate);
            most_growth = most_growth.max(growth);
            eprintln!(
                "  export {format}: {n} rows, {:.0} MB in {:.2} s ({rate:.0} rows/s), RSS +{growth:.1} MB",
                bytes as f64 / 1e6,
                took.as_secs_f64()
            );
        }
        f.set("export_rows_per_s", slowest_rate);
        f.set("export_rss_growth_mb", most_growth);
        Ok(())
    }
}
