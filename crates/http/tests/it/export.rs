//! The export: CSV and NDJSON compared row by row with the paged listing, the cap and its
//! last line, bad input, the read token, and a client that stops reading or leaves an
//! export of 1,000,000 rows (the server holds a bounded part of it, and stops reading the
//! store once it is gone).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{Cursor, FailedTask, ListQuery, NewFailedTask, TaskId, Timestamp};
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{FailedTaskPage, MemoryStore, RecordOutcome, StatusStore, StoreError};
use hyper::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::helpers::{
    get, memory, metric, request, spawn_app, tasks_only, test_config, TestServer,
};

const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";
const EXPORT: &str = "/codebase-embedder/api/v1/tasks/failed/export";
const IN_FLIGHT: &str = "failed_tasks_http_response_bytes_in_flight";

/// `n` tasks whose messages and paths need CSV quoting (commas, quotes, line breaks, CJK).
fn tasks(n: usize) -> Vec<FailedTask> {
    (0..n)
        .map(|i| {
            let at =
                Timestamp::from_unix_millis(1_737_700_000_000 + (i as i64 / 3) * 1000).unwrap();
            FailedTask::new(NewFailedTask {
                task_id: format!("exp{i:05}"),
                task_type: ["embedding", "indexing"][i % 2].into(),
                client_id: format!("client{}", i % 4),
                codebase_path: format!("/projects/p{},x", i % 5),
                start_time: at,
                fail_time: at,
                error_code: ["TIMEOUT_ERROR", "DATA_ERROR"][i % 2].into(),
                error_message: match i % 4 {
                    0 => format!("said \"no\", twice ({i})"),
                    1 => format!("line one\nline two {i}"),
                    2 => format!("向量嵌入服务超时，请求超过{i}秒未响应"),
                    _ => format!("plain {i}"),
                },
                retry_count: (i % 3) as u32,
                processed_files: i as u64,
                ..NewFailedTask::default()
            })
            .unwrap()
        })
        .collect()
}

async fn server_of(n: usize, config: HttpConfig) -> TestServer {
    let store = MemoryStore::new();
    store.record_batch(&tasks(n)).await.unwrap();
    spawn_app(memory(Arc::new(store)), Deadlines::default(), config).await
}

/// Every task of the listing at `query`, page after page.
async fn listed(server: &TestServer, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{LIST}?pageSize=1000&{query}");
        if let Some(c) = cursor.take() {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = get(server, &path).await.json();
        out.extend(page["Data"]["Tasks"].as_array().unwrap().iter().cloned());
        match page["Data"]["NextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// A JSON value as CSV writes it.
fn as_csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn ndjson_and_csv_are_the_paged_listing_row_by_row() {
    let server = server_of(2500, test_config()).await;
    for query in [
        "",
        "q=TWICE",
        "q=%E8%B6%85%E6%97%B6&clientId=client2",
        "pathPrefix=%2Fprojects%2Fp3,x",
    ] {
        let want = listed(&server, query).await;
        assert!(!want.is_empty(), "{query}");

        let nd = get(&server, &format!("{EXPORT}?format=ndjson&{query}")).await;
        assert_eq!(nd.status, StatusCode::OK);
        assert_eq!(nd.header("content-type"), Some("application/x-ndjson"));
        let rows: Vec<Value> = std::str::from_utf8(&nd.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows, want, "ndjson {query}");

        let c = get(&server, &format!("{EXPORT}?format=csv&{query}")).await;
        assert_eq!(c.status, StatusCode::OK);
        assert_eq!(c.header("content-type"), Some("text/csv; charset=utf-8"));
        assert_eq!(
            c.header("content-disposition"),
            Some("attachment; filename=\"failed-tasks.csv\"")
        );
        assert!(c.body.ends_with(b"\r\n"), "RFC 4180 line ends");
        let mut reader = csv::Reader::from_reader(&c.body[..]);
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let names: Vec<String> = want[0].as_object().unwrap().keys().cloned().collect();
        let mut sorted_header = header.clone();
        sorted_header.sort();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        assert_eq!(
            sorted_header, sorted_names,
            "the header names the listing's fields"
        );
        assert_eq!(header[0], "TaskId");
        let mut n = 0;
        for (record, task) in reader.records().zip(&want) {
            let record = record.unwrap();
            for (name, field) in header.iter().zip(record.iter()) {
                assert_eq!(field, as_csv_field(&task[name]), "{query}: {name}");
            }
            n += 1;
        }
        assert_eq!(n, want.len(), "csv {query}");
    }
    // Nothing matches: NDJSON is empty, CSV the header row alone.
    let none = get(
        &server,
        &format!("{EXPORT}?format=ndjson&q=nothing+like+it"),
    )
    .await;
    assert_eq!((none.status, none.body.len()), (StatusCode::OK, 0));
    let none = get(&server, &format!("{EXPORT}?format=csv&q=nothing+like+it")).await;
    let text = std::str::from_utf8(&none.body).unwrap();
    assert!(
        text.starts_with("TaskId,") && text.ends_with("\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("\r\n").count(), 1);
}

#[tokio::test]
async fn past_the_cap_the_last_line_says_so() {
    let config = HttpConfig {
        export_max_rows: 7,
        ..test_config()
    };
    let server = server_of(20, config).await;
    let want = listed(&server, "").await;
    let nd = get(&server, &format!("{EXPORT}?format=ndjson")).await;
    let lines: Vec<Value> = std::str::from_utf8(&nd.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[..7], want[..7]);
    assert_eq!(lines[7], serde_json::json!({"Truncated": true, "Rows": 7}));
    let c = get(&server, &format!("{EXPORT}?format=csv")).await;
    let text = std::str::from_utf8(&c.body).unwrap();
    let last = text.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("#Truncated: the export stopped at its cap of 7 rows"),
        "{last}"
    );
    // Read as CSV: 7 rows of 13 fields, then the one-field record.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let widths: Vec<usize> = reader.records().map(|r| r.unwrap().len()).collect();
    assert_eq!(widths, [13, 13, 13, 13, 13, 13, 13, 1]);
    // Exactly at the cap is no truncation.
    let ten = get(&server, &format!("{EXPORT}?format=ndjson&q=exp0000")).await;
    let body = std::str::from_utf8(&ten.body).unwrap();
    assert_eq!(
        body.lines().count(),
        8,
        "exp00000..exp00009 are 10 > 7: cut"
    );
    assert!(
        body.ends_with("{\"Truncated\":true,\"Rows\":7}\n"),
        "{body}"
    );
    let seven = get(&server, &format!("{EXPORT}?format=ndjson&clientId=client1")).await;
    let body = std::str::from_utf8(&seven.body).unwrap();
    assert_eq!(body.lines().count(), 5, "5 of 20 rows, no last line");
    assert!(!body.contains("Truncated"));
}

#[tokio::test]
async fn bad_exports_are_400s_and_the_read_token_suffices() {
    let config = HttpConfig {
        read_token: Token::new("reader"),
        admin_token: Token::new("admin"),
        ..test_config()
    };
    let server = server_of(3, config).await;
    let reader = [("authorization", "Bearer reader")];
    for (query, name) in [
        ("", "format"),
        ("format=xml", "format"),
        ("format=csv&q=", "q"),
        ("format=csv&pathPrefix=p", "pathPrefix"),
        ("format=csv&pageSize=10", "pageSize"),
        ("format=csv&bogus=1", "bogus"),
    ] {
        let a = request(
            &server,
            hyper::Method::GET,
            &format!("{EXPORT}?{query}"),
            &reader,
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            a.json()["Message"].as_str().unwrap().contains(name),
            "{query}"
        );
    }
    let anonymous = get(&server, &format!("{EXPORT}?format=csv")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let ok = request(
        &server,
        hyper::Method::GET,
        &format!("{EXPORT}?format=csv"),
        &reader,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let wrong = request(
        &server,
        hyper::Method::POST,
        &format!("{EXPORT}?format=csv"),
        &reader,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A store of `n` made-up tasks (task i failed i ms before a fixed time), counting the pages
/// read: a million rows without a million stored.
struct Generated {
    n: u64,
    pages: AtomicU64,
    /// How long each page takes to read.
    slow: Duration,
}

const BASE_MS: i64 = 1_800_000_000_000;

fn generated(i: u64) -> FailedTask {
    let at = Timestamp::from_unix_millis(BASE_MS - i as i64).unwrap();
    FailedTask::new(NewFailedTask {
        task_id: format!("g{i:07}"),
        task_type: "embedding".into(),
        client_id: "c1".into(),
        codebase_path: "/projects/generated".into(),
        start_time: at,
        fail_time: at,
        error_code: "TIMEOUT_ERROR".into(),
        error_message: format!("generated failure number {i}"),
        ..NewFailedTask::default()
    })
    .unwrap()
}

#[async_trait::async_trait]
impl StatusStore for Generated {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn list(&self, q: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        if !self.slow.is_zero() {
            tokio::time::sleep(self.slow).await;
        }
        let start = q.cursor.as_ref().map_or(0, |c| {
            (BASE_MS - c.position().fail_time().unix_millis()) as u64 + 1
        });
        let end = (start + u64::from(q.page_size.get())).min(self.n);
        let tasks: Vec<FailedTask> = (start..end).map(generated).collect();
        let next_cursor = (end < self.n)
            .then(|| tasks.last().map(|t| Cursor::after(t.sort_key())))
            .flatten();
        Ok(FailedTaskPage {
            total: self.n,
            tasks,
            next_cursor,
            skipped_corrupt: 0,
            retry: Vec::new(),
        })
    }
    async fn get(&self, _: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        Ok(None)
    }
    async fn record(&self, _: &FailedTask) -> Result<RecordOutcome, StoreError> {
        Err(StoreError::Internal("read-only".into()))
    }
    async fn record_batch(&self, _: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        Err(StoreError::Internal("read-only".into()))
    }
    async fn remove(&self, _: &TaskId) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// Wait (at most 10 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_a_bounded_part_and_one_that_leaves_stops_the_reads() {
    let store = Arc::new(Generated {
        n: 1_000_000,
        pages: AtomicU64::new(0),
        slow: Duration::ZERO,
    });
    let config = HttpConfig {
        // Long enough that the stall watch does not end the connection during the test.
        write_stall_timeout: Duration::from_secs(60),
        ..test_config()
    };
    let server = spawn_app(tasks_only(store.clone()), Deadlines::default(), config).await;
    // The test's and the server's own references; an export's task holds more.
    let baseline = Arc::strong_count(&store);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let mut s = socket.connect(server.addr).await.unwrap();
    s.write_all(format!("GET {EXPORT}?format=csv HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[9..12], b"200");
    // The client reads nothing more: the server's writes stop, then its reads of the store.
    let mut last = u64::MAX;
    let mut steady = 0;
    eventually(
        "the store reads stop while the client does not read",
        || {
            let now = store.pages.load(Ordering::SeqCst);
            steady = if now == last { steady + 1 } else { 0 };
            last = now;
            steady >= 50
        },
    )
    .await;
    // What the kernel's socket buffers took (a few MB at most) and the stream's queue: a
    // small part of the 1000 pages.
    assert!(
        last <= 50,
        "{last} pages of 1000 read for a client that reads nothing"
    );
    // What the server holds for it is the stream's share, not the export.
    let held = metric(&server, IN_FLIGHT, &[]).await.unwrap();
    assert!(held <= 512.0 * 1024.0, "{held} bytes in flight");

    // The client leaves: the export's task ends (it held the store), and the reads stop.
    drop(s);
    eventually("the export stops when its client is gone", || {
        Arc::strong_count(&store) == baseline
    })
    .await;
    let after = store.pages.load(Ordering::SeqCst);
    tokio::task::yield_now().await;
    assert_eq!(store.pages.load(Ordering::SeqCst), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_streams_to_a_reader_that_keeps_up() {
    let store = Arc::new(Generated {
        n: 100_000,
        pages: AtomicU64::new(0),
        slow: Duration::ZERO,
    });
    let server = spawn_app(
        tasks_only(store.clone()),
        Deadlines::default(),
        test_config(),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!("GET {EXPORT}?format=ndjson HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // Count the lines as they come, holding no more than one read's worth.
    let mut buf = vec![0u8; 64 * 1024];
    let mut newlines = 0u64;
    let mut tail = Vec::new();
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        newlines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        tail.extend_from_slice(&buf[..n]);
        let keep = tail.len().saturating_sub(256);
        tail.drain(..keep);
    }
    let text = String::from_utf8_lossy(&tail);
    // Chunked framing: the last chunk ends "0\r\n\r\n"; the last row names the last task.
    assert!(text.contains("generated failure number 99999\""), "{text}");
    assert!(!text.contains("Truncated"));
    // Head lines (status, headers, blank) and chunk-size lines add newlines; rows are
    // 100,000 of them at least.
    assert!(newlines >= 100_000, "{newlines}");
    assert_eq!(store.pages.load(Ordering::SeqCst), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_is_no_stall_of_the_client() {
    let store = Arc::new(Generated {
        n: 3000,
        pages: AtomicU64::new(0),
        slow: Duration::from_millis(300),
    });
    let config = HttpConfig {
        write_stall_timeout: Duration::from_millis(100),
        ..test_config()
    };
    let server = spawn_app(tasks_only(store), Deadlines::default(), config).await;
    let a = get(&server, &format!("{EXPORT}?format=ndjson")).await;
    assert_eq!(a.status, StatusCode::OK);
    let body = std::str::from_utf8(&a.body).unwrap();
    assert_eq!(body.lines().count(), 3000);
    assert!(body.ends_with("number 2999\",\"RetryCount\":0,\"ProcessedFiles\":0,\"ErrorCategory\":\"service_timeout\",\"NextRetryAt\":null,\"FinalFailure\":false}\n"));
}
