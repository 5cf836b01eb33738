//! A minimal HTTP/1.1 keep-alive client over raw TCP, the built-in load generator, and the
//! `wrk` driver. Loopback only: every address comes from a server this program started.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection sending the same GET again and again.
pub struct HttpConn {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

/// The status and body of one response.
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpConn {
    /// Connect to `addr` (loopback) for `GET path`.
    pub async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<HttpConn> {
        if !addr.ip().is_loopback() {
            bail!("refusing to send load to non-loopback address {addr}");
        }
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
        Ok(HttpConn {
            stream,
            request: request.into_bytes(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Send the request and read the whole response (`Content-Length` bodies only).
    pub async fn get(&mut self, keep_body: bool) -> anyhow::Result<Response> {
        self.stream.write_all(&self.request).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
        let mut length = None;
        let mut content_type = None;
        for line in head.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("content-type") {
                    content_type = Some(v.trim().to_owned());
                }
            }
        }
        let length = length.ok_or_else(|| anyhow!("response without Content-Length"))?;
        while self.buf.len() < head_end + length {
            self.read_more().await?;
        }
        let body = if keep_body {
            self.buf[head_end..head_end + length].to_vec()
        } else {
            Vec::new()
        };
        self.buf.drain(..head_end + length);
        Ok(Response {
            status,
            content_type,
            body,
        })
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 32 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .context("no response within 10 s")??;
        if n == 0 {
            bail!("server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Throughput of one load run.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub requests: u64,
    /// Responses that were not 200 (counted as errors, not as throughput).
    pub errors: u64,
}

/// Load `addr` with `connections` keep-alive connections for `duration`, with `wrk` when
/// `use_wrk`, otherwise with the built-in generator.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    use_wrk: bool,
) -> anyhow::Result<Throughput> {
    if use_wrk {
        wrk(addr, path, connections, duration).await
    } else {
        builtin(addr, path, connections, duration).await
    }
}

/// Whether `wrk` is on PATH.
pub fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

async fn wrk(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    if !addr.ip().is_loopback() {
        bail!("refusing to send load to non-loopback address {addr}");
    }
    let url = format!("http://{addr}{path}");
    let secs = duration.as_secs().max(1).to_string();
    let conns = connections.to_string();
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", "-c", &conns, "-d", &format!("{secs}s"), &url])
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rps = field("Requests/sec:").ok_or_else(|| anyhow!("no Requests/sec in {text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let errors = field("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    Ok(Throughput {
        requests_per_s: rps,
        requests,
        errors,
    })
}

async fn builtin(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let path = path.to_owned();
        set.spawn(async move {
            let mut conn = HttpConn::connect(addr, &path).await?;
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                if conn.get(false).await?.status == 200 {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            Ok::<_, anyhow::Error>((ok, errors))
        });
    }
    let (mut ok, mut errors) = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        let (o, e) = r.context("load task panicked")??;
        ok += o;
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Throughput {
        requests_per_s: ok as f64 / secs,
        requests: ok + errors,
        errors,
    })
}
