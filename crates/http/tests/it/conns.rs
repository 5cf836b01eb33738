//! Connection slots: idle connections (HTTP/2 above all) are closed after the idle timeout,
//! and at the connection cap a new client closes an idle connection instead of waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use failed_tasks_domain::FailedTask;
use failed_tasks_http::HttpConfig;
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::helpers::{
    get, memory, metric, spawn_app, tasks_only, test_config, SlowList, TestServer,
};

/// An HTTP/2 prior-knowledge (h2c) connection: the request handle and the task driving it,
/// which ends when the server closes the connection.
pub struct H2c {
    pub send: h2::client::SendRequest<Bytes>,
    pub driver: JoinHandle<Result<(), h2::Error>>,
}

pub async fn h2c(server: &TestServer, builder: &h2::client::Builder) -> H2c {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (send, conn) = builder.handshake(tcp).await.unwrap();
    H2c {
        send,
        driver: tokio::spawn(conn),
    }
}

/// A GET over `conn`; the whole body is read.
pub async fn h2_get(conn: &H2c, path: &str) -> (StatusCode, Bytes) {
    let mut send = conn.send.clone().ready().await.unwrap();
    let req = Request::get(format!("http://127.0.0.1{path}"))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, Bytes::from(out))
}

async fn memory_server(config: HttpConfig) -> TestServer {
    let store = MemoryStore::new();
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    spawn_app(memory(Arc::new(store)), Deadlines::default(), config).await
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = memory_server(HttpConfig {
        idle_timeout: idle,
        ..test_config()
    })
    .await;
    let conn = h2c(&server, &h2::client::Builder::new()).await;
    assert_eq!(h2_get(&conn, "/healthz").await.0, StatusCode::OK);
    assert_eq!(h2_get(&conn, "/healthz").await.0, StatusCode::OK);
    let answered = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn.driver).await;
    assert!(
        ended.is_ok(),
        "the idle h2 connection is still open after 5 s"
    );
    let after = answered.elapsed();
    // The server counts from the end of the last response, which the client sees a moment
    // later; the close can never come early by more than that moment.
    assert!(
        after >= idle - Duration::from_millis(100),
        "closed after {after:?}"
    );
    assert_eq!(
        metric(
            &server,
            "failed_tasks_http_connections_closed_total",
            &[("reason", "idle")]
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn an_h2_connection_that_never_sends_a_request_is_closed_too() {
    let server = memory_server(HttpConfig {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let conn = h2c(&server, &h2::client::Builder::new()).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), conn.driver).await;
    assert!(
        ended.is_ok(),
        "the idle h2 connection is still open after 5 s"
    );
}

/// An HTTP/1.1 keep-alive connection that made one request and now sits idle.
async fn idle_http1(server: &TestServer) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    s
}

#[tokio::test]
async fn at_the_cap_a_new_client_closes_an_idle_connection_instead_of_waiting() {
    // Long timeouts: only eviction can free a slot within the test's bounds.
    let cap = 8;
    let server = memory_server(HttpConfig {
        max_connections: cap,
        idle_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        ..test_config()
    })
    .await;
    let mut h2s = Vec::new();
    for _ in 0..3 {
        let conn = h2c(&server, &h2::client::Builder::new()).await;
        assert_eq!(h2_get(&conn, "/healthz").await.0, StatusCode::OK);
        h2s.push(conn);
    }
    let mut h1s = Vec::new();
    for _ in 0..3 {
        h1s.push(idle_http1(&server).await);
    }
    // Connected, never a byte sent: idle too.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The cap is full of idle connections. Each new client is served and stays connected,
    // so each needs a slot of its own: twice the cap over, the originals go first.
    let mut newcomers = Vec::new();
    for i in 0..2 * cap {
        let served = tokio::time::timeout(Duration::from_secs(5), idle_http1(&server)).await;
        newcomers.push(served.unwrap_or_else(|_| panic!("client {i} was not served within 5 s")));
    }
    for conn in h2s {
        let ended = tokio::time::timeout(Duration::from_secs(5), conn.driver).await;
        assert!(ended.is_ok(), "an idle h2 connection survived");
    }
    for mut s in h1s.into_iter().chain(silent) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "an idle HTTP/1 connection survived");
    }
    let evicted = metric(
        &server,
        "failed_tasks_http_connections_closed_total",
        &[("reason", "evicted")],
    )
    .await
    .unwrap_or(0.0);
    assert!(evicted >= (2 * cap) as f64, "evicted {evicted}");
}

#[tokio::test]
async fn a_connection_with_a_request_in_flight_is_never_closed_to_make_room() {
    let store = MemoryStore::new();
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    let slow_store = SlowList::new(store, Duration::from_millis(600));
    let started = slow_store.started.clone();
    let server = spawn_app(
        tasks_only(Arc::new(slow_store)),
        Deadlines::default(),
        HttpConfig {
            max_connections: 1,
            ..test_config()
        },
    )
    .await;
    let busy = h2c(&server, &h2::client::Builder::new()).await;
    let slow = tokio::spawn(async move {
        let answer = h2_get(&busy, "/codebase-embedder/api/v1/tasks/failed").await;
        (answer, busy)
    });
    // The next client arrives while the listing runs on the one connection allowed.
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .expect("the listing started");
    let other = tokio::time::timeout(Duration::from_secs(10), get(&server, "/healthz"))
        .await
        .expect("the next client is served once the slot is free");
    assert_eq!(other.status, StatusCode::OK);
    let ((status, body), _busy) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the busy connection was cut off");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Data"]["TotalTasks"], 3);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_an_idle_h2_client_that_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(failed_tasks_http::App::new(
        failed_tasks_query::FailedTaskService::new(
            failed_tasks_store::Stores::from(MemoryStore::new()),
            Deadlines::default(),
        ),
        test_config(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(failed_tasks_http::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    // An h2c client that sends the preface and its SETTINGS, then never reads or answers
    // again: the server's GOAWAY and ping at shutdown go unanswered.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // The server's own SETTINGS frame: it has taken the connection as HTTP/2.
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut head))
        .await
        .expect("the server's SETTINGS")
        .unwrap();
    assert_eq!(head[3], 0x4, "a SETTINGS frame");
    stop.send(()).unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(5), serving).await;
    assert!(
        drained.is_ok(),
        "shutdown waits for an idle client that never answers"
    );
    drop(raw);
}
