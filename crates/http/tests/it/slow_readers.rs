//! Clients that do not read their answers: response bytes in flight are capped per
//! connection and overall (beyond: 503), and a response that makes no progress for the
//! write-stall timeout is dropped with its connection (HTTP/1 and HTTP/2 zero windows).

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{FailedTask, NewFailedTask};
use failed_tasks_http::HttpConfig;
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::conns::{h2_get, h2c};
use crate::helpers::{get, memory, metric, spawn_app, test_config, wait_for_metric, TestServer};

/// The big page: 1000 tasks of 8 KiB messages, about 8.5 MB of JSON.
const BIG: &str = "/codebase-embedder/api/v1/tasks/failed?pageSize=1000";
const IN_FLIGHT: &str = "failed_tasks_http_response_bytes_in_flight";
const CLOSED: &str = "failed_tasks_http_connections_closed_total";

/// `n` tasks of 8 KiB messages.
async fn store_of(n: i64) -> Arc<MemoryStore> {
    let store = MemoryStore::new();
    let message = "m".repeat(8 * 1024);
    let tasks: Vec<FailedTask> = (0..n)
        .map(|i| {
            FailedTask::new(NewFailedTask {
                task_id: format!("big{i:04}"),
                task_type: "embedding".into(),
                client_id: "c1".into(),
                start_time: failed_tasks_domain::Timestamp::from_unix_millis(1_737_700_000_000 + i)
                    .unwrap(),
                fail_time: failed_tasks_domain::Timestamp::from_unix_millis(1_737_700_000_000 + i)
                    .unwrap(),
                error_code: "TIMEOUT_ERROR".into(),
                error_message: message.clone(),
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    store.record_batch(&tasks).await.unwrap();
    Arc::new(store)
}

/// Short deadlines: a request that finds no room waits for it at most this long (then 503).
fn deadlines() -> Deadlines {
    Deadlines {
        health_check: Duration::from_secs(1),
        request: Duration::from_secs(1),
    }
}

async fn big_server(config: HttpConfig) -> TestServer {
    spawn_app(memory(store_of(1000).await), deadlines(), config).await
}

/// A connection with a small receive buffer (no kernel autotuning), so a few KiB that the
/// client does not read stop the server's writes.
async fn tight_connection(server: &TestServer) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// Send the big request and read only the status line: never the body.
async fn request_and_stop_reading(server: &TestServer) -> (TcpStream, u16) {
    let mut s = tight_connection(server).await;
    s.write_all(format!("GET {BIG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("a status line")
        .unwrap();
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (s, status)
}

#[tokio::test]
async fn response_bytes_in_flight_are_capped_overall_and_the_rest_get_503() {
    let cap = 20 * 1024 * 1024;
    let server = big_server(HttpConfig {
        max_response_bytes_in_flight: cap,
        write_stall_timeout: Duration::from_secs(60),
        ..test_config()
    })
    .await;
    // A reading client gets the whole page: it fits the caps.
    let whole = get(&server, BIG).await;
    assert_eq!(whole.status, StatusCode::OK);
    let size = whole.body.len() as u64;
    assert!(size > 8_000_000, "the page is {size} bytes");

    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(request_and_stop_reading(&server).await);
    }
    let served = clients.iter().filter(|(_, s)| *s == 200).count() as u64;
    let refused = clients.iter().filter(|(_, s)| *s == 503).count() as u64;
    assert_eq!(served, cap / size, "pages held at once");
    assert_eq!(served + refused, 5, "every client got 200 or 503");
    let held = metric(&server, IN_FLIGHT, &[]).await.unwrap_or(f64::NAN);
    assert!(
        held as u64 <= cap && held as u64 >= served * size / 2,
        "{held} bytes in flight for {served} hanging pages of {size}"
    );
    // A small answer still goes out while the budget is full.
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    drop(clients);
    wait_for_metric(&server, IN_FLIGHT, &[], Duration::from_secs(10), |v| {
        v == 0.0
    })
    .await
    .expect("the bytes of dropped clients are released");
    assert_eq!(get(&server, BIG).await.status, StatusCode::OK);
}

#[tokio::test]
async fn clients_that_read_wait_for_room_instead_of_being_refused() {
    // Room for one page at a time; the request deadline leaves time for all to take turns.
    let server = spawn_app(
        memory(store_of(1000).await),
        Deadlines {
            health_check: Duration::from_secs(5),
            request: Duration::from_secs(30),
        },
        HttpConfig {
            max_response_bytes_in_flight: 9 * 1024 * 1024,
            ..test_config()
        },
    )
    .await;
    assert_eq!(get(&server, BIG).await.status, StatusCode::OK);
    let addr = server.addr;
    let readers: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(async move {
                let server = TestServer::at(addr);
                get(&server, BIG).await
            })
        })
        .collect();
    for r in readers {
        let a = r.await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json()["Message"]);
        assert!(a.body.len() > 8_000_000);
    }
    assert_eq!(
        metric(&server, "failed_tasks_http_responses_refused_total", &[]).await,
        Some(0.0)
    );
    wait_for_metric(&server, IN_FLIGHT, &[], Duration::from_secs(10), |v| {
        v == 0.0
    })
    .await
    .expect("every page released");
}

#[tokio::test]
async fn a_busy_answer_is_503_with_retry_after_in_the_envelope() {
    let server = big_server(HttpConfig {
        max_response_bytes_in_flight: 9 * 1024 * 1024,
        write_stall_timeout: Duration::from_secs(60),
        ..test_config()
    })
    .await;
    let (_holder, status) = request_and_stop_reading(&server).await;
    assert_eq!(status, 200);
    let busy = get(&server, BIG).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.header("retry-after"), Some("5"));
    let v = busy.json();
    assert_eq!(v["Code"], 503);
    assert_eq!(v["Success"], false);
    assert!(
        v["Message"].as_str().unwrap_or_default().contains("busy"),
        "{v}"
    );
    assert_eq!(
        metric(&server, "failed_tasks_http_responses_refused_total", &[]).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn an_http1_client_that_stops_reading_is_dropped_after_the_stall_timeout() {
    let server = big_server(HttpConfig {
        write_stall_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let (mut s, status) = request_and_stop_reading(&server).await;
    assert_eq!(status, 200);
    wait_for_metric(
        &server,
        CLOSED,
        &[("reason", "write_stall")],
        Duration::from_secs(10),
        |v| v >= 1.0,
    )
    .await
    .expect("the stalled connection is dropped");
    wait_for_metric(&server, IN_FLIGHT, &[], Duration::from_secs(10), |v| {
        v == 0.0
    })
    .await
    .expect("its bytes are released");
    // What the kernel had buffered still arrives, then the connection ends short of the page.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is still open");
    assert!(
        rest.len() < 8_000_000,
        "{} bytes: the whole page",
        rest.len()
    );
}

#[tokio::test]
async fn h2_zero_window_streams_are_capped_per_connection_and_dropped_when_stalled() {
    // Pages of 100 tasks (~850 KB), two per connection at most.
    let page = "/codebase-embedder/api/v1/tasks/failed?pageSize=100";
    let per_connection = 2 * 1024 * 1024;
    let server = spawn_app(
        memory(store_of(100).await),
        deadlines(),
        HttpConfig {
            max_connection_response_bytes: per_connection,
            // Long enough for the ten pages to be built and their heads sent on a busy
            // machine before the first one counts as stalled.
            write_stall_timeout: Duration::from_secs(4),
            ..test_config()
        },
    )
    .await;
    let whole = crate::helpers::get(&server, page).await;
    assert_eq!(whole.status, StatusCode::OK);
    let size = whole.body.len() as u64;
    let mut zero = h2::client::Builder::new();
    zero.initial_window_size(0);
    let conn = h2c(&server, &zero).await;
    // Ten requests at once; the server can send their heads (not flow-controlled), no data.
    let mut pending = Vec::new();
    for _ in 0..10 {
        let mut send = conn.send.clone().ready().await.unwrap();
        let req = Request::get(format!("http://127.0.0.1{page}"))
            .body(())
            .unwrap();
        pending.push(send.send_request(req, true).unwrap().0);
    }
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for resp in pending {
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("a response head")
            .unwrap();
        statuses.push(resp.status().as_u16());
        bodies.push(resp.into_body());
    }
    let served = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(
        served,
        per_connection / size,
        "pages held on one connection: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    // Nothing moves: the connection is dropped and everything it held is released.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn.driver).await;
    assert!(ended.is_ok(), "the stalled h2 connection is still open");
    wait_for_metric(&server, IN_FLIGHT, &[], Duration::from_secs(10), |v| {
        v == 0.0
    })
    .await
    .expect("its bytes are released");
    assert!(
        metric(&server, CLOSED, &[("reason", "write_stall")])
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    // A client that reads gets the page over h2, in many frames, within the same limits.
    let reader = h2c(&server, &h2::client::Builder::new()).await;
    let (status, body) = h2_get(&reader, page).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len() as u64, size);
}
