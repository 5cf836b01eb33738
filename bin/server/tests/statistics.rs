//! docs/operations.md's statistics figure, measured on the binary as an operator runs it (a
//! child process on a private redis-server, default limits): with 100,000 distinct clients
//! and error codes in the window, 32 concurrent statistics callers keep the server's peak
//! RSS within 200 MB, get no 503 (nor do the listings served meanwhile), and leave the
//! listing's latency near its unloaded figure. Measured with the defaults and again with
//! every statistics request computed (`--stats-cache-ttl 0s`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use failed_tasks_domain::{ErrorCategory, FailedTask, NewFailedTask, Timestamp};
use failed_tasks_redis::{RedisConfig, RedisStore};
use failed_tasks_store::StatusStore;
use failed_tasks_testkit::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod support;
use support::Server;

const PREFIX: &str = "{stats-load}";
const STATS: &str = "/codebase-embedder/api/v1/tasks/failed-stats?window=1h";
const LISTING: &str = "/codebase-embedder/api/v1/tasks/failed?pageSize=50";
const ONE_TASK: &str = "/codebase-embedder/api/v1/tasks/failed/load-000001";
const DISTINCT: usize = 100_000;
const CALLERS: usize = 32;
/// How long the callers of one phase keep asking (each waits for its answer, at most
/// `CALL_TIMEOUT`).
const LOAD: Duration = Duration::from_secs(4);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `DISTINCT` failures of the last 50 minutes, each with its own client and error code,
/// written with the store's batch API (1,000 per script call).
async fn fill(url: &str) {
    let store = RedisStore::connect(RedisConfig {
        url: url.to_owned(),
        key_prefix: PREFIX.to_owned(),
        command_timeout: Duration::from_secs(10),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    assert!(store.wait_connected(Duration::from_secs(10)).await);
    let now = Timestamp::now().unix_millis();
    let types = ["embedding", "indexing", "cleaning"];
    let batch = move |b: usize| -> Vec<FailedTask> {
        (0..1_000)
            .map(|j| {
                let i = b * 1_000 + j;
                let fail = now - 1_000 - (i as i64 % 50) * 60_000 - (i as i64 % 997);
                FailedTask::new(NewFailedTask {
                    task_id: format!("load-{i:06}"),
                    task_type: types[i % 3].into(),
                    client_id: format!("client-{i:06}"),
                    codebase_path: format!("/projects/p{i}"),
                    start_time: Timestamp::from_unix_millis(fail - 60_000).unwrap(),
                    fail_time: Timestamp::from_unix_millis(fail).unwrap(),
                    error_code: format!("E_{i:06}"),
                    error_message: format!("failure number {i}"),
                    retry_count: 0,
                    processed_files: 1,
                    error_category: Some(ErrorCategory::ALL[i % ErrorCategory::ALL.len()]),
                })
                .unwrap()
            })
            .collect()
    };
    // Two writers, so building the next batch overlaps Redis running the script of one.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in (w..DISTINCT / 1_000).step_by(2) {
                    store.record_batch(&batch(b)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}

/// A client keeping its connections (as callers polling a dashboard do).
type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> Http {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

async fn get(client: &Http, addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let call = async {
        let resp = client.request(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or((StatusCode::GATEWAY_TIMEOUT, Bytes::new()))
}

/// The 99th percentile of `samples` (sorted in place).
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// `n` listings one after another: their latencies, and how many were not 200.
async fn listings(client: &Http, addr: SocketAddr, n: usize) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let start = Instant::now();
        let (status, _) = get(client, addr, LISTING).await;
        times.push(start.elapsed());
        failed += usize::from(status != StatusCode::OK);
    }
    (times, failed)
}

/// What one phase of load measured.
struct Phase {
    answered: usize,
    refused: Vec<StatusCode>,
    listings: usize,
    listing_failed: usize,
    listing_p99: Duration,
    /// The highest RSS sampled (every 20 ms) during the phase.
    peak_rss: u64,
}

/// `CALLERS` callers of `path`, each asking again as soon as answered, for `LOAD`, with a
/// listing caller beside them.
async fn hammer(server: &Server, path: &'static str) -> Phase {
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = client();
                let (mut answered, mut refused) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = get(&client, addr, path).await;
                    answered += 1;
                    if status != StatusCode::OK {
                        refused.push(status);
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    let listing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = client();
            let (mut times, mut failed) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let (t, f) = listings(&client, addr, 1).await;
                times.extend(t);
                failed += f;
            }
            (times, failed)
        })
    };
    let start = Instant::now();
    let mut peak_rss = 0;
    while start.elapsed() < LOAD {
        peak_rss = peak_rss.max(server.rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut refused) = (0, Vec::new());
    for c in callers {
        let (a, r) = c.await.unwrap();
        answered += a;
        refused.extend(r);
    }
    let (mut times, listing_failed) = listing.await.unwrap();
    Phase {
        answered,
        refused,
        listings: times.len(),
        listing_failed,
        listing_p99: p99(&mut times),
        peak_rss,
    }
}

/// What one server run measured.
struct Run {
    unloaded_p99: Duration,
    baseline_rss: u64,
    /// The same callers asking for one task (a cheap store read): what the load of 33
    /// clients on two CPUs costs the listing by itself (when measured).
    control: Option<Phase>,
    stats: Phase,
    peak_rss: u64,
}

/// The server on `url` with `args`: the listing unloaded, under `CALLERS` callers of one
/// task (with `control`), under `CALLERS` statistics callers.
async fn run(url: &str, args: &[&str], control: bool) -> Run {
    let mut all = vec![
        "--store",
        "redis",
        "--redis-url",
        url,
        "--redis-key-prefix",
        PREFIX,
    ];
    all.extend_from_slice(args);
    let server = Server::start(&all, &[("RUST_LOG", "warn,failed_tasks_server=info")]);
    let addr = server.addr;
    let http = client();

    // The figures answer what was filled.
    let (status, body) = get(&http, addr, STATS).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let data = &stats["Data"];
    assert_eq!(data["TotalFailures"], DISTINCT as u64, "{stats}");
    assert_eq!(data["BreakdownsExact"], false);
    assert!(data["Untracked"]["Clients"].as_u64().unwrap() > 0);
    assert_eq!(data["TopClients"].as_array().unwrap().len(), 20);
    let (_, failed) = listings(&http, addr, 20).await; // warm-up
    assert_eq!(failed, 0);
    let (mut unloaded, failed) = listings(&http, addr, 200).await;
    assert_eq!(failed, 0);
    let unloaded_p99 = p99(&mut unloaded);
    let baseline_rss = server.rss();
    let control = if control {
        Some(hammer(&server, ONE_TASK).await)
    } else {
        None
    };
    let stats = hammer(&server, STATS).await;
    Run {
        unloaded_p99,
        baseline_rss,
        control,
        stats,
        peak_rss: server.peak_rss(),
    }
}

/// Checks the figure on `run` (named `what` in messages).
fn check(what: &str, run: &Run, latency_bound: bool) {
    // `latency_bound` needs the control load.
    let ratio = |d: Duration| d.as_secs_f64() / run.unloaded_p99.as_secs_f64().max(1e-6);
    let st = &run.stats;
    let control = run.control.as_ref().map_or(String::new(), |c| {
        format!(
            "under {CALLERS} callers of one task {:?} ({:.1}x, {} answers, {} listings); ",
            c.listing_p99,
            ratio(c.listing_p99),
            c.answered,
            c.listings
        )
    });
    eprintln!(
        "{what}: RSS {} MB before the load, peak {} MB (sampled under statistics {} MB); \
         listing p99 unloaded {:?}; {control}under {CALLERS} statistics callers {:?} ({:.1}x, \
         {} answers, {} refused {:?}, {} listings, {} failed)",
        run.baseline_rss >> 20,
        run.peak_rss.max(st.peak_rss) >> 20,
        st.peak_rss >> 20,
        run.unloaded_p99,
        st.listing_p99,
        ratio(st.listing_p99),
        st.answered,
        st.refused.len(),
        st.refused.iter().take(3).collect::<Vec<_>>(),
        st.listings,
        st.listing_failed,
    );
    if let Some(c) = &run.control {
        assert!(
            c.refused.is_empty() && c.listing_failed == 0,
            "{what}: control load failed"
        );
    }
    assert!(st.answered >= CALLERS, "{what}: {} answers", st.answered);
    assert!(
        st.refused.is_empty(),
        "{what}: {} of {} statistics answers were not 200: {:?}",
        st.refused.len(),
        st.answered,
        st.refused.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        st.listing_failed, 0,
        "{what}: listings answered other than 200"
    );
    let peak = run.peak_rss.max(st.peak_rss);
    assert!(
        peak <= 200 << 20,
        "{what}: peak RSS {} MB > 200 MB",
        peak >> 20
    );
    // Generous: the figure is 2x the unloaded p99, but the two CPUs are shared by this
    // test's 33 callers, the server and the redis-server, so any load of 32 callers slows
    // the listing (the control shows by how much). Before, a listing stuck behind
    // statistics work timed out (15 s).
    if let Some(c) = run.control.as_ref().filter(|_| latency_bound) {
        let bound = (c.listing_p99 * 5).max(Duration::from_millis(500));
        assert!(
            st.listing_p99 <= bound,
            "{what}: listing p99 {:?} under statistics vs {:?} under the control load",
            st.listing_p99,
            c.listing_p99
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_statistics_callers_over_100k_distinct_values_stay_bounded() {
    let redis = RedisServer::start();
    let filled = Instant::now();
    fill(&redis.url()).await;
    eprintln!(
        "filled {DISTINCT} distinct clients and codes in {:?}",
        filled.elapsed()
    );
    // As deployed (an answer shared for 1 s, 4 computed at once), and every request
    // computed (nothing shared): the memory bound and the 0 refusals hold without sharing.
    let shared = run(&redis.url(), &[], true).await;
    let computed = run(&redis.url(), &["--stats-cache-ttl", "0s"], false).await;
    check("defaults", &shared, true);
    check("nothing shared", &computed, false);
}
