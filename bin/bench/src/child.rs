//! The HTTP servers under test, each in a child process of this program so that its CPU
//! time and resident memory are its own: `app` is the real `failed_tasks_http::serve` over a
//! `RedisStore`; `hello` is a hello-world hyper server answering every request with fixed
//! bytes (the same body and headers the app answers for the benchmarked page).
//!
//! A child binds 127.0.0.1:0, prints `PORT n` on stdout, and serves until its stdin closes
//! (the parent holds the pipe; if the parent dies, the child stops by itself).

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use failed_tasks_http::{App, HttpConfig};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::{RedisConfig, RedisStore};
use failed_tasks_store::{StatusStore, StoredPages, Stores};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

/// Which server a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `failed_tasks_http::serve` over the Redis store.
    App,
    /// A hello-world hyper server with fixed response bytes.
    Hello,
    /// The proposed read fast path, prototyped: the hello-world server, but each request
    /// pings Redis and renders the page from `StoredPages::list_stored` (stored records)
    /// with `wire::stored_page_body`, as the HTTP adapter does, without its routing, limits,
    /// metrics and response plumbing.
    Fast,
}

/// A running child server.
pub struct ChildServer {
    child: Child,
    /// Held open: closing it tells the child to stop.
    stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Start `kind` (a new process of this executable) and wait for its port.
    pub fn start(
        kind: Kind,
        redis_url: &str,
        prefix: &str,
        body: Option<&Path>,
    ) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let kind_arg = match kind {
            Kind::App => "app",
            Kind::Hello => "hello",
            Kind::Fast => "fast",
        };
        let mut cmd = Command::new(exe);
        cmd.args(["--serve-child", kind_arg, "--redis-url", redis_url])
            .args(["--prefix", prefix]);
        if let Some(b) = body {
            cmd.arg("--body-file").arg(b);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a child server")?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("child has no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the child's port")?;
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("child said {line:?} instead of its port"))?;
        Ok(ChildServer {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak and current resident memory in MiB (`VmHWM`, `VmRSS` of /proc/PID/status).
    pub fn memory_mb(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading the child's /proc status")?;
        let kb = |field: &str| -> anyhow::Result<f64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow!("no {field} in /proc status"))
        };
        Ok((kb("VmHWM:")? / 1024.0, kb("VmRSS:")? / 1024.0))
    }

    /// CPU seconds (user + system) the child used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .context("reading the child's /proc stat")?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("odd /proc stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
        let ticks = |i: usize| -> anyhow::Result<f64> {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow!("no field {i} in /proc stat"))
        };
        // Linux reports in USER_HZ, 100 on every mainstream configuration.
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: serve `kind` until stdin closes.
pub fn serve_child(
    kind: Kind,
    redis_url: &str,
    prefix: &str,
    body_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let stop = async {
            // Serve until the parent closes our stdin (or dies).
            let mut sink = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while let Ok(n) = stdin.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        match kind {
            Kind::App => {
                let store = connect_store(redis_url, prefix, "app").await?;
                // Measured as before retries existed: recording schedules none.
                let stores = Stores {
                    retries: None,
                    ..Stores::from(store)
                };
                let service = FailedTaskService::new(stores, Deadlines::default());
                let app = Arc::new(App::new(service, HttpConfig::default()));
                announce(port)?;
                failed_tasks_http::serve(listener, app, stop).await?;
            }
            Kind::Fast => {
                let store = connect_store(redis_url, prefix, "fast").await?;
                announce(port)?;
                fast(listener, store, stop).await?;
            }
            Kind::Hello => {
                let path = body_file.ok_or_else(|| anyhow!("hello needs --body-file"))?;
                let body = Bytes::from(std::fs::read(&path).context("reading the body file")?);
                announce(port)?;
                hello(listener, body, stop).await;
            }
        }
        Ok(())
    })
}

fn announce(port: u16) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "PORT {port}")?;
    out.flush()?;
    Ok(())
}

/// A hello-world hyper server: HTTP/1.1 keep-alive, one fixed response, nothing else.
async fn hello(
    listener: tokio::net::TcpListener,
    body: Bytes,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    let mut resp = Response::new(Full::new(body));
                    let h = resp.headers_mut();
                    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    h.insert(
                        "x-request-id",
                        HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The fast-path prototype: ping + one `list_stored` call + `stored_page_body` per request.
async fn fast(
    listener: tokio::net::TcpListener,
    store: RedisStore,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let query = Arc::new(crate::bench::page_query()?);
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        let query = query.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let store = store.clone();
                let query = query.clone();
                async move { Ok::<_, Infallible>(fast_page(&store, &query).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn fast_page(
    store: &RedisStore,
    query: &failed_tasks_domain::ListQuery,
) -> Response<Full<Bytes>> {
    let page = match store.ping().await {
        Ok(()) => store.list_stored(query).await,
        Err(e) => Err(e),
    };
    let policy = failed_tasks_domain::RetryPolicy::default();
    let body = match page {
        Ok(page) => {
            let size: usize = page.records.iter().map(|t| t.len() + 200).sum();
            let mut out = Vec::with_capacity(size + 160);
            match failed_tasks_http::wire::stored_page_body(&page, &policy, &mut out) {
                Some(()) => Bytes::from(out),
                None => Bytes::from_static(br#"{"Code":500,"Success":false,"Data":null}"#),
            }
        }
        Err(_) => Bytes::from_static(br#"{"Code":500,"Success":false,"Data":null}"#),
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A connected store for a child server (`who` names it in the error).
async fn connect_store(redis_url: &str, prefix: &str, who: &str) -> anyhow::Result<RedisStore> {
    let store = RedisStore::connect(RedisConfig {
        url: redis_url.to_owned(),
        key_prefix: prefix.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .map_err(|e| anyhow!("redis store: {e}"))?;
    if !store
        .wait_connected(std::time::Duration::from_secs(10))
        .await
    {
        bail!("the {who} child could not reach redis");
    }
    Ok(store)
}
