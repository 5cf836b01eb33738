//! The figures of docs/operations.md's "Limits", measured on the binary as an operator runs
//! it (a child process with its default limits): idle HTTP/2 connections at the default
//! connection cap never keep a new client out, and clients that do not read cannot grow the
//! server's memory (its own RSS, read from /proc).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "limits-admin-token";
const BIG: &str = "/codebase-embedder/api/v1/tasks/failed?pageSize=1000";
/// A page of 100 of those tasks, about 850 KB.
const PAGE_100: &str = "/codebase-embedder/api/v1/tasks/failed?pageSize=100";

mod support;
use support::Server;

/// The server with the admin API on, its defaults otherwise.
fn start_server(args: &[&str]) -> Server {
    let mut all = vec!["--admin-token", TOKEN];
    all.extend_from_slice(args);
    Server::start(&all, &[("RUST_LOG", "warn,failed_tasks_server=info")])
}

impl Server {
    async fn call(&self, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
        call(req).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Bytes) {
        fetch(self.addr, path).await
    }

    /// A counter or gauge of `/metrics` (summed over the series that match `labels`).
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Wait until `metric` satisfies `want`, within `within`.
    async fn wait_for(
        &self,
        name: &str,
        labels: &str,
        within: Duration,
        want: impl Fn(f64) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name, labels).await;
            if want(v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{labels}}} is still {v} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Listings answered so far, and answers refused for the response-bytes caps.
    async fn listings_and_refusals(&self) -> (f64, f64) {
        let answered = self
            .metric("failed_tasks_http_requests_total", "route=\"list_failed\"")
            .await;
        let refused = self
            .metric("failed_tasks_http_responses_refused_total", "")
            .await;
        (answered, refused)
    }

    /// Until `answered` listings have been answered (within `within`), sample the RSS and
    /// the response bytes held every 50 ms: their peaks while the clients hang.
    async fn peaks_until_answered(&self, answered: f64, within: Duration) -> (u64, f64) {
        let deadline = Instant::now() + within;
        let (mut rss, mut held) = (0, 0.0f64);
        loop {
            rss = rss.max(self.rss());
            held = held.max(
                self.metric("failed_tasks_http_response_bytes_in_flight", "")
                    .await,
            );
            let now = self
                .metric("failed_tasks_http_requests_total", "route=\"list_failed\"")
                .await;
            if now >= answered {
                return (rss, held);
            }
            assert!(
                Instant::now() < deadline,
                "{now} listings answered after {within:?}, waiting for {answered}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// 1000 tasks with 8 KiB messages: the page of pageSize=1000 is about 8.5 MB.
    async fn seed_big_page(&self) {
        let message = "m".repeat(8 * 1024);
        // Recent: the server's retention (30 days by default) never trims them.
        let fail_time = failed_tasks_domain::Timestamp::now().to_rfc3339();
        for batch in 0..10 {
            let tasks: Vec<serde_json::Value> = (0..100)
                .map(|i| {
                    serde_json::json!({"TaskId": format!("big{batch}-{i:03}"), "TaskType": "embedding",
                        "ClientId": "c1", "FailTime": fail_time,
                        "ErrorCode": "TIMEOUT_ERROR", "ErrorMessage": message})
                })
                .collect();
            let req = Request::post(format!(
                "http://{}/codebase-embedder/api/v1/admin/failed-tasks",
                self.addr
            ))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&tasks).unwrap())))
            .unwrap();
            let (status, body) = self.call(req).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        }
    }
}

async fn call(req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn fetch(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    call(req).await
}

/// The soft limit of open files of this process (its children inherit it).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connections_filling_the_default_cap_never_keep_a_new_client_out() {
    let cap: u32 = 4096;
    assert!(
        open_files_limit() >= 2 * u64::from(cap) + 256,
        "this test holds {cap} connections on each side: raise the open-files limit \
         (scripts/test does: ulimit -n); it is {}",
        open_files_limit()
    );
    // A long idle timeout: only making room at the cap can explain a new client served.
    let server = start_server(&["--idle-timeout", "10m"]);
    let mut idle = Vec::with_capacity(cap as usize);
    let opening = Instant::now();
    for _ in 0..cap {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(conn);
        let mut ready = send.ready().await.unwrap();
        let req = Request::get(format!("http://{}/healthz", server.addr))
            .body(())
            .unwrap();
        let (resp, _) = ready.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
        idle.push((ready, driver));
    }
    println!(
        "{cap} h2c connections opened and used in {:?}",
        opening.elapsed()
    );
    server
        .wait_for(
            "failed_tasks_http_connections_open",
            "",
            Duration::from_secs(10),
            |v| v >= f64::from(cap),
        )
        .await;
    // The cap is full of idle h2 connections. New clients, one after another, keeping
    // their connections open as well:
    let mut latencies = Vec::new();
    let mut newcomers = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(server.addr))
            .await
            .expect("connected")
            .unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(conn);
        let mut ready = send.ready().await.unwrap();
        let req = Request::get(format!("http://{}/healthz", server.addr))
            .body(())
            .unwrap();
        let (resp, _) = ready.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("a new client is served within 5 s")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        latencies.push(started.elapsed());
        newcomers.push((ready, driver));
    }
    latencies.sort();
    println!(
        "with {cap} idle h2c connections: new client served in median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // Room was made by closing idle connections, the oldest first.
    assert!(
        server
            .metric(
                "failed_tasks_http_connections_closed_total",
                "reason=\"evicted\""
            )
            .await
            >= 20.0
    );
    let (_, first) = idle.swap_remove(0);
    let ended = tokio::time::timeout(Duration::from_secs(5), first).await;
    assert!(ended.is_ok(), "the oldest idle connection is still open");
}

/// A connection that asks for the big page and never reads a byte of the answer; its
/// receive buffer is small, so the kernel holds little of it either.
async fn non_reader(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(format!("GET {BIG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Wait for the server's RSS to come back within 10 % of `baseline`; how long it took.
async fn rss_back_to(server: &Server, baseline: u64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let rss = server.rss();
        if rss * 10 <= baseline * 11 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "RSS {} MB is still above baseline {} MB + 10 % after {within:?}",
            rss >> 20,
            baseline >> 20
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` clients at once that ask for `path` and read the whole answer (200, or 503 when the
/// caps are full); how many got the page.
async fn reading_burst(addr: SocketAddr, path: &'static str, n: usize) -> usize {
    let clients: Vec<_> = (0..n)
        .map(|_| tokio::spawn(async move { fetch(addr, path).await.0 }))
        .collect();
    let mut served = 0;
    for c in clients {
        let status = c.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
        served += usize::from(status == StatusCode::OK);
    }
    served
}

/// Seed the big page, then serve bursts of `n` clients that read `path` (the same load as the
/// test's, from clients that read): the baseline RSS is the server after such bursts, so
/// what malloc keeps after serving that load anyway is in it, and what the test measures on
/// top is what clients that do not read make the server hold.
async fn baseline(server: &Server, path: &'static str, n: usize) -> u64 {
    server.seed_big_page().await;
    let idle = server.rss();
    let (status, body) = server.get(BIG).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() > 8_000_000, "the page is {} bytes", body.len());
    let mut served = Vec::new();
    for _ in 0..2 {
        served.push(reading_burst(server.addr, path, n).await);
    }
    let base = server.rss();
    println!(
        "RSS with the big page stored: {} MB; after two bursts of {n} reading clients ({served:?} served, the rest 503): {} MB",
        idle >> 20,
        base >> 20
    );
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_http1_clients_that_do_not_read_8mb_pages_cannot_grow_the_server() {
    let server = start_server(&[]);
    let base = baseline(&server, BIG, 30).await;
    let (answered_before, refused_before) = server.listings_and_refusals().await;
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(non_reader(server.addr).await);
    }
    // Every one of them has been answered (200 or 503), none has read anything.
    let (hanging, held) = server
        .peaks_until_answered(answered_before + 30.0, Duration::from_secs(60))
        .await;
    let refused = server.listings_and_refusals().await.1 - refused_before;
    let rise = hanging.saturating_sub(base);
    println!(
        "30 non-reading HTTP/1 clients: baseline {} MB, peak while they hang {} MB (+{} MB), {refused} answers refused (503), at most {} MB held",
        base >> 20,
        hanging >> 20,
        rise >> 20,
        (held as u64) >> 20
    );
    assert!(rise <= 64 << 20, "RSS rose by {} MB", rise >> 20);
    assert!(held <= f64::from(32u32 << 20), "{held} bytes held");
    assert!(refused >= 1.0, "no answer was refused");
    drop(clients);
    let took = rss_back_to(&server, base, Duration::from_secs(30)).await;
    println!("RSS back within 10 % of the baseline {took:?} after the clients went");
    server
        .wait_for(
            "failed_tasks_http_response_bytes_in_flight",
            "",
            Duration::from_secs(30),
            |v| v == 0.0,
        )
        .await;
    assert_eq!(server.get(BIG).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_h2c_connections_of_200_zero_window_streams_cannot_grow_the_server() {
    // The write-stall timeout runs from a connection's first stalled stream: on a loaded
    // machine answering all 400 streams took longer than the default 10 s, and the server
    // dropped a connection before the figure was taken. 25 s leaves room for that and still
    // ends both connections within the 30 s the test waits for it.
    let server = start_server(&["--write-stall-timeout", "25s"]);
    let base = baseline(&server, PAGE_100, 200).await;
    let (answered_before, refused_before) = server.listings_and_refusals().await;
    let mut zero = h2::client::Builder::new();
    zero.initial_window_size(0);
    let mut conns = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let (send, conn) = zero.handshake::<_, Bytes>(tcp).await.unwrap();
        conns.push(tokio::spawn(conn));
        for _ in 0..200 {
            let send = send.clone();
            let uri = format!("http://{}{PAGE_100}", server.addr);
            // Streams over the server's limit wait in the client for a free one.
            streams.push(tokio::spawn(async move {
                let mut ready = send.ready().await.ok()?;
                let (resp, _) = ready
                    .send_request(Request::get(uri).body(()).ok()?, true)
                    .ok()?;
                let resp = resp.await.ok()?;
                Some((resp.status(), resp.into_body()))
            }));
        }
    }
    // The server answers as many streams as it allows at once (the heads go out; the data
    // waits for a window that never opens).
    let (hanging, held) = server
        .peaks_until_answered(answered_before + 200.0, Duration::from_secs(60))
        .await;
    let rise = hanging.saturating_sub(base);
    let refused = server.listings_and_refusals().await.1 - refused_before;
    assert!(
        conns.iter().all(|c| !c.is_finished()),
        "measured after a connection was dropped, not while they hang"
    );
    println!(
        "2 h2c connections x 200 zero-window streams of 850 KB pages: baseline {} MB, peak while they hang {} MB (+{} MB), {refused} answers refused (503), at most {} MB held",
        base >> 20,
        hanging >> 20,
        rise >> 20,
        (held as u64) >> 20
    );
    assert!(rise <= 64 << 20, "RSS rose by {} MB", rise >> 20);
    assert!(held <= f64::from(32u32 << 20), "{held} bytes held");
    assert!(refused >= 100.0, "only {refused} answers were refused");
    // Nothing moves on those streams: the server drops both connections (write stall).
    for conn in conns {
        let ended = tokio::time::timeout(Duration::from_secs(30), conn).await;
        assert!(
            ended.is_ok(),
            "a stalled h2 connection is still open after 30 s"
        );
    }
    drop(streams);
    let took = rss_back_to(&server, base, Duration::from_secs(30)).await;
    println!("RSS back within 10 % of the baseline {took:?} after the connections were dropped");
    assert!(
        server
            .metric(
                "failed_tasks_http_connections_closed_total",
                "reason=\"write_stall\""
            )
            .await
            >= 2.0
    );
}
