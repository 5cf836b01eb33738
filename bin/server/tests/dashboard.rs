//! The dashboard in a real headless Chromium: this test starts a private redis-server (from
//! the testkit, on a free loopback port) and the server binary over it, then runs the
//! Playwright script `tests/browser/dashboard.mjs` against them and asserts its exit status.
//! The script asks for faults over its stdout (`@@ redis-kill`, `@@ redis-restart`) and
//! waits for `ok` on its stdin; everything it prints is passed through.
//!
//! Needs `node`/`npm` and Debian's `chromium` (`scripts/test` installs them when missing);
//! the npm packages are installed from `package-lock.json` with `npm ci`. When a tool is
//! missing the test fails saying how to install it: it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use failed_tasks_testkit::RedisServer;

mod support;
use support::Server;
const ADMIN_TOKEN: &str = "dashboard-admin-token";
const READ_TOKEN: &str = "dashboard-read-token";
const OPERATE_TOKEN: &str = "dashboard-operate-token";
/// The whole browser run, at most (it takes about a minute).
const RUN_LIMIT: Duration = Duration::from_secs(420);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "{} not found: the dashboard tests need Debian's chromium package \
         (`sudo apt-get install -y chromium`, or run scripts/test, which installs it)",
        path.display()
    );
    path
}

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} not found: the dashboard tests need Node.js and npm \
         (`sudo apt-get install -y nodejs npm`, or run scripts/test, which installs them)"
    );
}

/// `npm ci`: exactly the locked packages, no browser download (playwright-core has none).
fn npm_ci() {
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(browser_dir())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("run npm ci");
    assert!(
        out.status.success(),
        "npm ci failed in {}: {}",
        browser_dir().display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server binary over `redis_url` (see `support::Server`).
fn start_server(redis_url: &str) -> Server {
    Server::start(
        &[
            "--store",
            "redis",
            "--redis-url",
            redis_url,
            "--demo",
            "--admin-token",
            ADMIN_TOKEN,
            "--read-token",
            READ_TOKEN,
            "--operate-token",
            OPERATE_TOKEN,
            // Errors answer at once and ask the page to retry after 1 s.
            "--health-timeout",
            "1s",
            "--redis-command-timeout",
            "500ms",
            "--retry-after-secs",
            "1",
            // Error codes warn above 50 and are critical above 100 (the overview test).
            "--alert-error-code-max-critical",
            "100",
            // task_001 (3 retries made) is a final failure, as the retry-now test expects.
            "--retry-max-retries",
            "3",
            // A breaker opens on two retries failing again within 10 s (the breaker test);
            // the older fixtures, failed a minute or more before, are outside that window.
            "--breaker-min-retries",
            "2",
            "--breaker-window",
            "10s",
            "--breaker-interval",
            "1s",
        ],
        &[("RUST_LOG", "warn,failed_tasks_server=info")],
    )
}

/// Wait until the demo's three tasks are served (recorded at start, or within a second or
/// so when Redis was slow to connect).
fn wait_for_demo(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(total) = total_tasks(addr) {
            assert_eq!(total, 3, "a fresh Redis holds the demo tasks only");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the demo tasks were not served within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn total_tasks(addr: SocketAddr) -> Option<u64> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /codebase-embedder/api/v1/tasks/failed HTTP/1.1\r\nHost: t\r\n\
         Authorization: Bearer {READ_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["Data"]["TotalTasks"].as_u64()
}

#[test]
fn the_dashboard_in_a_real_headless_chromium() {
    let chromium = chromium();
    require("node");
    require("npm");
    npm_ci();

    let mut redis = RedisServer::start();
    let server = start_server(&redis.url());
    wait_for_demo(server.addr);

    // The screenshots go to the target directory, fresh each run, unless
    // UPDATE_SCREENSHOTS=1 asks for the committed ones in docs/screenshots to be replaced
    // (README shows those): a plain test run leaves the working tree as it was.
    let shots = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        repo_root().join("docs/screenshots")
    } else {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let started = std::time::SystemTime::now();
    let mut node = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(browser_dir())
        .env("BASE_URL", format!("http://{}", server.addr))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("READ_TOKEN", READ_TOKEN)
        .env("OPERATE_TOKEN", OPERATE_TOKEN)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = node.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + RUN_LIMIT;
    let mut summary = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(command) = line.strip_prefix("@@ ") {
                    match command.trim() {
                        "redis-kill" => redis.kill(),
                        "redis-restart" => redis.restart(),
                        other => panic!("the browser script asked for {other:?}"),
                    }
                    writeln!(stdin, "ok").unwrap();
                    stdin.flush().unwrap();
                } else {
                    if line.contains(" passed, ") && line.ends_with(" failed") {
                        summary = Some(line.clone());
                    }
                    eprintln!("{line}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = node.kill();
                let _ = node.wait();
                panic!("the browser tests did not finish within {RUN_LIMIT:?}");
            }
        }
    }
    let status = node.wait().unwrap();
    assert!(
        status.success(),
        "the browser tests failed ({status}): {}",
        summary
            .as_deref()
            .unwrap_or("no summary; see the output above")
    );
    let summary = summary.expect("the script printed its summary");
    assert!(summary.ends_with(" 0 failed"), "{summary}");
    for view in ["failures", "task", "overview", "groups"] {
        let shot = shots.join(format!("{view}.png"));
        let written = std::fs::metadata(&shot)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("no screenshot {}: {e}", shot.display()));
        assert!(
            written >= started,
            "{} was not written by this run",
            shot.display()
        );
    }
}
