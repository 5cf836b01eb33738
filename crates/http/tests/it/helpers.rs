//! A real server on an ephemeral loopback port, and a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use failed_tasks_http::{App, HttpConfig};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, StatusStore, Stores};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// A running server; stopped (gracefully) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// A handle on a server started elsewhere (stopping it is the caller's business).
    pub fn at(addr: SocketAddr) -> Self {
        Self { addr, stop: None }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn test_config() -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    }
}

pub async fn spawn_service(service: FailedTaskService, config: HttpConfig) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(App::new(service, config));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(failed_tasks_http::serve(listener, app, async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        stop: Some(tx),
    }
}

pub async fn spawn_app(stores: Stores, deadlines: Deadlines, config: HttpConfig) -> TestServer {
    spawn_service(FailedTaskService::new(stores, deadlines), config).await
}

/// A memory store through its tasks and statistics, without retries (recording schedules
/// none, so answers carry no `NextRetryAt`).
pub fn memory(store: Arc<MemoryStore>) -> Stores {
    Stores::new("memory", store.clone()).with_stats(store)
}

/// A store that keeps tasks and nothing else (a mock, a wrapper).
pub fn tasks_only(store: Arc<dyn StatusStore>) -> Stores {
    Stores::new("test", store)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn request(
    server: &TestServer,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Answer {
    request_with_body(server, method, path_and_query, headers, Bytes::new()).await
}

pub async fn request_with_body(
    server: &TestServer,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{}", server.addr, path_and_query));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(server: &TestServer, path_and_query: &str) -> Answer {
    request(server, Method::GET, path_and_query, &[]).await
}

/// One sample of the server's `/metrics`, if present.
pub async fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let a = get(server, "/metrics").await;
    crate::metrics::value(&crate::metrics::scrape(&a.body), name, labels)
}

/// Wait until `metric` holds `want`, within `within`; the last value seen otherwise.
pub async fn wait_for_metric(
    server: &TestServer,
    name: &str,
    labels: &[(&str, &str)],
    within: Duration,
    want: impl Fn(f64) -> bool,
) -> Result<f64, Option<f64>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = metric(server, name, labels).await;
        if let Some(v) = now.filter(|v| want(*v)) {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(now);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A memory store whose listing takes `delay`, and says when one has started (to have a
/// request in flight at a known moment).
pub struct SlowList {
    store: failed_tasks_store::MemoryStore,
    delay: Duration,
    pub started: Arc<tokio::sync::Notify>,
}

impl SlowList {
    pub fn new(store: failed_tasks_store::MemoryStore, delay: Duration) -> Self {
        Self {
            store,
            delay,
            started: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

#[async_trait::async_trait]
impl StatusStore for SlowList {
    async fn ping(&self) -> Result<(), failed_tasks_store::StoreError> {
        self.store.ping().await
    }
    async fn list(
        &self,
        q: &failed_tasks_domain::ListQuery,
    ) -> Result<failed_tasks_store::FailedTaskPage, failed_tasks_store::StoreError> {
        self.started.notify_one();
        tokio::time::sleep(self.delay).await;
        self.store.list(q).await
    }
    async fn get(
        &self,
        id: &failed_tasks_domain::TaskId,
    ) -> Result<Option<failed_tasks_domain::FailedTask>, failed_tasks_store::StoreError> {
        self.store.get(id).await
    }
    async fn record(
        &self,
        t: &failed_tasks_domain::FailedTask,
    ) -> Result<failed_tasks_store::RecordOutcome, failed_tasks_store::StoreError> {
        self.store.record(t).await
    }
    async fn record_batch(
        &self,
        t: &[failed_tasks_domain::FailedTask],
    ) -> Result<Vec<failed_tasks_store::RecordOutcome>, failed_tasks_store::StoreError> {
        self.store.record_batch(t).await
    }
    async fn remove(
        &self,
        id: &failed_tasks_domain::TaskId,
    ) -> Result<bool, failed_tasks_store::StoreError> {
        self.store.remove(id).await
    }
}
