//! The binary as an operator runs it: flags and env vars, `--demo`, bad configuration,
//! and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_failed-tasks-server");

struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server on port 0 with JSON logs and read the bound address from its log.
fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            break None;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            break v["addr"].as_str().and_then(|a| a.parse().ok());
        }
    };
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not log its listening address within 20 s");
    };
    // Keep draining so the server never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Running { child, addr }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head[9..12].parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn demo_serves_the_seed_tasks_and_sigterm_exits_cleanly() {
    let mut server = start(&["--demo"], &[]);
    let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(status, 200);
    let ids: Vec<_> = body["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TaskId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["task_003", "task_002", "task_001"]);
    assert_eq!(body["Data"]["TotalTasks"], 3);

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn settings_come_from_env_vars_and_flags_win() {
    let server = start(&["--demo"], &[("FAILED_TASKS_PAGE_SIZE_DEFAULT", "2")]);
    let (_, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(body["Data"]["Tasks"].as_array().unwrap().len(), 2);
    assert!(body["Data"]["NextCursor"].is_string());

    let server = start(
        &["--demo", "--page-size-default", "1"],
        &[("FAILED_TASKS_PAGE_SIZE_DEFAULT", "2")],
    );
    let (_, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(body["Data"]["Tasks"].as_array().unwrap().len(), 1);
}

#[test]
fn without_demo_the_store_starts_empty() {
    let server = start(&[], &[]);
    let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(status, 200);
    assert_eq!(body["Data"]["TotalTasks"], 0);
    assert_eq!(body["Data"]["Tasks"], serde_json::json!([]));
}

#[test]
fn bad_configuration_exits_with_a_message_naming_the_setting() {
    let table: [(&[&str], &str); 5] = [
        (&["--page-size-default", "0"], "page_size_default"),
        (&["--health-timeout", "soon"], "--health-timeout"),
        (&["--listen", "not-an-address"], "--listen"),
        (
            &["--alert-category-max-critical", "99"],
            "alert_category_max_critical (99) must be at least alert_category_max (100)",
        ),
        (
            &["--alert-failure-rate-max-critical", "0.1"],
            "alert_failure_rate_max_critical",
        ),
    ];
    for (args, name) in table {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{args:?}: {stderr}");
    }
}

/// The server process over a private Redis: killed → 503 at once, paused → 503 within the
/// health deadline, restarted on the same port → 200 again, by itself, in the same process.
#[test]
fn redis_faults_are_503_and_the_same_process_recovers() {
    let mut redis = failed_tasks_testkit::RedisServer::start();
    let url = redis.url();
    let server = start(
        &[
            "--store",
            "redis",
            "--redis-url",
            &url,
            "--demo",
            "--health-timeout",
            "1s",
            "--redis-command-timeout",
            "500ms",
        ],
        &[],
    );
    let list = "/codebase-embedder/api/v1/tasks/failed";
    let timed = |path: &str| {
        let started = std::time::Instant::now();
        let (status, body) = http_get(server.addr, path);
        (status, body, started.elapsed())
    };
    // The demo tasks are recorded before serving when Redis answers at once, and within a
    // second or so otherwise (a loaded machine can be slow to connect).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, _) = timed(list);
        if status == 200 && body["Data"]["TotalTasks"] == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo tasks not served: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(timed("/readyz").0, 200);

    redis.pause();
    let (status, body, took) = timed(list);
    assert_eq!(status, 503);
    assert_eq!(body["Message"], "Redis服务不可用，请稍后再试");
    assert!(
        took < Duration::from_millis(2500),
        "paused Redis: answered after {took:?}"
    );
    redis.resume();

    redis.kill();
    let (status, _, took) = timed(list);
    assert_eq!(status, 503);
    assert!(
        took < Duration::from_millis(2500),
        "killed Redis: answered after {took:?}"
    );
    assert_eq!(timed("/readyz").0, 503);
    assert_eq!(
        timed("/healthz").0,
        200,
        "liveness does not depend on Redis"
    );

    redis.restart(); // same port, empty data
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body, _) = timed(list);
        if status == 200 {
            assert_eq!(body["Data"]["TotalTasks"], 0, "a fresh Redis holds nothing");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery within 15 s of the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .arg("--print-config")
        .args(args)
        .env_remove("FAILED_TASKS_PAGE_SIZE_DEFAULT")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("failed-tasks-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn precedence_is_flags_over_env_over_file_over_defaults() {
    let file = temp_file(
        "precedence.toml",
        "page_size_default = 7\npage_size_max = 50\nretry_after_secs = 9\n",
    );
    let file = file.to_str().unwrap();
    let line = |text: &str, key: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap()
            .to_owned()
    };
    let defaults = print_config(&[], &[]);
    assert_eq!(
        line(&defaults, "page_size_default"),
        "page_size_default = 100"
    );
    let from_file = print_config(&["--config", file], &[]);
    assert_eq!(
        line(&from_file, "page_size_default"),
        "page_size_default = 7"
    );
    assert_eq!(line(&from_file, "retry_after_secs"), "retry_after_secs = 9");
    let env_wins = print_config(
        &["--config", file],
        &[("FAILED_TASKS_PAGE_SIZE_DEFAULT", "8")],
    );
    assert_eq!(
        line(&env_wins, "page_size_default"),
        "page_size_default = 8"
    );
    assert_eq!(
        line(&env_wins, "page_size_max"),
        "page_size_max = 50",
        "the file still applies"
    );
    let flag_wins = print_config(
        &["--config", file, "--page-size-default", "9"],
        &[("FAILED_TASKS_PAGE_SIZE_DEFAULT", "8")],
    );
    assert_eq!(
        line(&flag_wins, "page_size_default"),
        "page_size_default = 9"
    );
    // The config file itself can come from the environment.
    let via_env = print_config(&[], &[("FAILED_TASKS_CONFIG", file)]);
    assert_eq!(line(&via_env, "page_size_default"), "page_size_default = 7");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_naming_key_and_file() {
    let table = [
        ("unknown.toml", "listn = \"127.0.0.1:1\"\n", "listn"),
        (
            "badvalue.toml",
            "health_timeout = \"soon\"\n",
            "health_timeout",
        ),
        (
            "badtype.toml",
            "page_size_max = \"many\"\n",
            "page_size_max",
        ),
    ];
    for (name, text, key) in table {
        let file = temp_file(name, text);
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{name}: {stderr}");
        assert!(
            stderr.contains(file.to_str().unwrap()),
            "{name} does not name the file: {stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/failed-tasks.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn print_config_redacts_secrets() {
    let file = temp_file("secrets.toml", "read_token = \"file-reader-secret\"\nredis_url = \"redis://:hunter2@redis.internal:6379/0\"\n");
    let shown = print_config(
        &["--config", file.to_str().unwrap()],
        &[("FAILED_TASKS_ADMIN_TOKEN", "env-admin-secret")],
    );
    for secret in ["env-admin-secret", "file-reader-secret", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} printed:\n{shown}");
    }
    assert!(shown.contains("admin_token = \"<redacted>\""), "{shown}");
    assert!(shown.contains("read_token = \"<redacted>\""), "{shown}");
    assert!(
        shown.contains("redis_url = \"redis://<redacted>@redis.internal:6379/0\""),
        "{shown}"
    );
}

/// Started while Redis is down: the server comes up anyway, says not-ready and 503, and once
/// Redis starts on that port it turns ready and serves, demo tasks included, by itself.
#[test]
fn starting_while_redis_is_down_waits_for_it_instead_of_exiting() {
    let port = failed_tasks_testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = start(
        &[
            "--store",
            "redis",
            "--redis-url",
            &url,
            "--demo",
            "--health-timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(http_get(server.addr, "/healthz").0, 200);
    assert_eq!(http_get(server.addr, "/readyz").0, 503);
    let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(status, 503);
    assert_eq!(body["Message"], "Redis服务不可用，请稍后再试");

    let _redis = failed_tasks_testkit::RedisServer::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
        if status == 200 && body["Data"]["TotalTasks"] == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not serving the demo tasks 20 s after Redis started: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(server.addr, "/readyz").0, 200);
}
