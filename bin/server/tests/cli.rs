//! The binary as an operator runs it: flags and env vars, `--demo`, bad configuration,
//! and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::{print_config, Server as Running, BIN};

/// The server on port 0 with JSON logs (see `support::Server::start`).
fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
    Running::start(args, env)
}

fn http_get_text(addr: SocketAddr, path: &str) -> (u16, String) {
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
    (head[9..12].parse().unwrap(), body.to_owned())
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get_text(addr, path);
    (status, serde_json::from_str(&body).unwrap())
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
    // Every signal ends in the same place: the `stopped` line is always the last one.
    assert!(
        server.wait_for_logs("stopped", 1, Duration::from_secs(5), |_| true),
        "no `stopped` line after SIGTERM"
    );
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

/// The default (memory) store keeps at most `--retention-max-count` tasks: the demo's three
/// leave the two newest, at once (enforced on write, not by a background run).
#[test]
fn the_memory_store_keeps_at_most_the_retention_count() {
    let server = start(&["--demo", "--retention-max-count", "2"], &[]);
    let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Data"]["TotalTasks"], 2);
    let ids: Vec<&str> = body["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["TaskId"].as_str())
        .collect();
    assert_eq!(ids, ["task_003", "task_002"]);
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

/// A request with a method and headers, and its status and JSON body.
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    (
        head[9..12].parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

/// The compat source reads tasks only: the statistics, groups, retry and write routes answer
/// 501 naming the store and what it lacks (before: 500 for the statistics and the writes),
/// the listing 200.
#[test]
fn the_compat_store_answers_501_where_it_lacks_a_capability() {
    let redis = failed_tasks_testkit::RedisServer::start();
    let url = redis.url();
    let server = start(
        &["--store", "compat", "--redis-url", &url],
        &[("FAILED_TASKS_ADMIN_TOKEN", "t0ken")],
    );
    let stats =
        "the compat store does not support failure statistics, task attempts and failure groups";
    for path in [
        "/codebase-embedder/api/v1/tasks/failed-stats?window=1h",
        "/codebase-embedder/api/v1/tasks/failed-groups",
    ] {
        let (status, body) = http_get(server.addr, path);
        assert_eq!(status, 501, "{path}: {body}");
        assert_eq!(
            body,
            serde_json::json!({"Code": 501, "Message": stats, "Success": false, "Data": null}),
            "{path}"
        );
    }
    let (status, body) = http_call(
        server.addr,
        "POST",
        "/codebase-embedder/api/v1/admin/failed-tasks/t1/retry",
        &["Authorization: Bearer t0ken"],
    );
    assert_eq!(status, 501, "{body}");
    assert_eq!(body["Message"], "the compat store does not support retries");
    // It is read-only: writes are refused the same way (before: 500 from the store).
    let writes = "the compat store does not support recording or removing failed tasks";
    for path in [
        "/codebase-embedder/api/v1/admin/failed-tasks/t1",
        "/codebase-embedder/api/v1/admin/failed-tasks?category=data_error",
    ] {
        let (status, body) = http_call(
            server.addr,
            "DELETE",
            path,
            &["Authorization: Bearer t0ken"],
        );
        assert_eq!(
            (status, body["Message"].as_str()),
            (501, Some(writes)),
            "{path}: {body}"
        );
    }
    // The tasks are served once the source is connected (it connects in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
        if status == 200 {
            assert_eq!(body["Data"]["TotalTasks"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the compat listing never answered: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    // Every URL form the Redis store accepts: user info and password parameters go.
    let table = [
        (
            "redis-sentinel://user:s3cret-a@h:26379/0?sentinelServiceName=m&sentinelPassword=s3cret-b",
            "redis-sentinel://<redacted>@h:26379/0?sentinelServiceName=m&sentinelPassword=<redacted>",
        ),
        (
            "redis-cluster://:s3cret-a@a:7000?node=b:7001",
            "redis-cluster://<redacted>@a:7000?node=b:7001",
        ),
        ("redis://user:s3cret-a@h:6379/2", "redis://<redacted>@h:6379/2"),
    ];
    for (url, redacted) in table {
        let shown = print_config(&["--redis-url", url], &[]);
        assert!(!shown.contains("s3cret"), "{url}:\n{shown}");
        assert!(
            shown.contains(&format!("redis_url = \"{redacted}\"")),
            "{shown}"
        );
    }
}

/// A config file with a TOML syntax error on a secret's line: the error names the file,
/// line and column, and does not quote the line (the TOML parser's own message does).
#[test]
fn config_syntax_errors_do_not_echo_secrets() {
    let table = [
        (
            "token-line.toml",
            "demo = true\nadmin_token = \"hunter2-secret\n",
            2,
        ),
        (
            "url-line.toml",
            "redis_url = \"redis-sentinel://h:1/0?sentinelPassword=hunter2-secret\n",
            1,
        ),
        ("bad-type.toml", "read_token = 424242\n", 0),
    ];
    for (name, text, line) in table {
        let file = temp_file(name, text);
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(file.to_str().unwrap()), "{name}: {stderr}");
        for secret in ["hunter2", "424242"] {
            assert!(!stderr.contains(secret), "{name} echoed a secret: {stderr}");
        }
        if line > 0 {
            assert!(stderr.contains(&format!("line {line}")), "{name}: {stderr}");
        }
    }
}

/// The start-up warning about an unreachable Redis shows the URL redacted.
#[test]
fn the_unreachable_redis_warning_redacts_the_url() {
    let port = failed_tasks_testkit::free_port();
    let url = format!("redis://user:hunter2-secret@127.0.0.1:{port}/0");
    let server = start(&["--store", "redis", "--redis-url", &url], &[]);
    let lines = &server.start_logs;
    let text = lines.join("\n");
    assert!(text.contains("not reachable"), "no warning: {text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("<redacted>@127.0.0.1"), "{text}");
}

/// `--demo` on Redis: the demo tasks are in the recent past, so neither this server's
/// janitor (it runs at start and then every interval) nor a second replica's (its first run
/// is at its start) trims them. Before, they failed on 2025-01-24, older than the retention
/// age, and vanished at the first janitor run. The test follows the janitors' runs in the
/// debug log, so it does not depend on when they happen.
#[test]
fn demo_on_redis_survives_janitor_runs_and_a_second_replica() {
    let redis = failed_tasks_testkit::RedisServer::start();
    let url = redis.url();
    let args = [
        "--store",
        "redis",
        "--redis-url",
        url.as_str(),
        "--demo",
        "--janitor-interval",
        "100ms",
    ];
    let env = [("RUST_LOG", "info,failed_tasks_redis::janitor=debug")];
    let ran = |v: &serde_json::Value| v["locked_out"] == false;
    let total = |addr| {
        let (status, body) = http_get(addr, "/codebase-embedder/api/v1/tasks/failed");
        assert_eq!(status, 200, "{body}");
        body["Data"]["TotalTasks"].clone()
    };
    let first = start(&args, &env);
    assert!(
        first.wait_for_logs("janitor run finished", 2, Duration::from_secs(20), ran),
        "the janitor did not run twice"
    );
    assert_eq!(total(first.addr), 3, "after two janitor runs");
    let second = start(&args, &env);
    assert!(
        second.wait_for_logs("janitor run finished", 1, Duration::from_secs(20), ran),
        "the second replica's janitor did not run"
    );
    assert_eq!(
        total(second.addr),
        3,
        "after the second replica's janitor ran"
    );
    assert!(first.wait_for_logs("janitor run finished", 1, Duration::from_secs(20), ran));
    assert_eq!(total(first.addr), 3);
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

/// Redis with an evicting `maxmemory-policy`: the server refuses to start, saying why in its
/// log; with `--redis-allow-eviction` it starts and shows the policy on `/readyz` and in the
/// metrics.
#[test]
fn an_evicting_redis_is_refused_at_start_unless_allowed() {
    let redis =
        failed_tasks_testkit::RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let url = redis.url();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--store", "redis", "--redis-url", &url])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running on an evicting Redis");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("refusing to start")
            && l.contains("maxmemory-policy is allkeys-lru")
            && l.contains("--redis-allow-eviction")),
        "one line says why: {stderr}"
    );

    let server = start(
        &[
            "--store",
            "redis",
            "--redis-url",
            &url,
            "--redis-allow-eviction",
        ],
        &[],
    );
    let (status, body) = http_get(server.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Data"]["EvictionPolicy"], "allkeys-lru", "{body}");
    let (_, metrics) = http_get_text(server.addr, "/metrics");
    assert!(
        metrics.contains("failed_tasks_store_eviction_policy{policy=\"allkeys-lru\"} 1"),
        "{metrics}"
    );
}

/// A wrong or missing Redis password: `/readyz` answers 503 naming the cause, and the log
/// says it at warn level once, however often the client retries; no password is logged.
#[test]
fn a_wrong_redis_password_is_named_on_readyz_and_logged_once() {
    let redis = failed_tasks_testkit::RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    for url in [
        format!("redis://:wrong-pw@127.0.0.1:{}", redis.port()),
        redis.url(),
    ] {
        let server = start(
            &[
                "--store",
                "redis",
                "--redis-url",
                &url,
                "--health-timeout",
                "1s",
            ],
            &[],
        );
        // The client retries every 2 s at most; watch /readyz across several retries.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let mut body = serde_json::Value::Null;
        while std::time::Instant::now() < until {
            let (status, b) = http_get(server.addr, "/readyz");
            assert_eq!(status, 503, "{b}");
            body = b;
            std::thread::sleep(Duration::from_millis(250));
        }
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(
            message.contains("refused the credentials (WRONGPASS/NOAUTH)"),
            "{url}: {body}"
        );
        let mut logs = server.start_logs.clone();
        while let Ok(line) = server.logs.try_recv() {
            logs.push(line);
        }
        let warned: Vec<&String> = logs
            .iter()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["level"] == "WARN"
                    && v["cause"] == "auth_failed"
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("Redis is not usable"))
            })
            .collect();
        assert_eq!(warned.len(), 1, "{url}: one warning per change:\n{logs:#?}");
        for line in &logs {
            assert!(
                !line.contains("wrong-pw") && !line.contains("s3cret-pw"),
                "{line}"
            );
        }
    }
}

/// `migrate` walks the Redis store in batches, prints each and a summary, and exits 0 while
/// a server serves the same store (the demo's records are current: nothing to rewrite; the
/// rewrite itself is tested in crates/redis/tests/it/migrate.rs). It refuses other stores.
#[test]
fn migrate_walks_the_redis_store_in_batches_while_it_is_served() {
    let redis = failed_tasks_testkit::RedisServer::start();
    let url = redis.url();
    let server = start(
        &["--store", "redis", "--redis-url", url.as_str(), "--demo"],
        &[],
    );
    let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(
        (status, &body["Data"]["TotalTasks"]),
        (200, &serde_json::json!(3))
    );
    let out = Command::new(BIN)
        .args(["--store", "redis", "--redis-url", url.as_str()])
        .args(["migrate", "--batch", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("batch 1: 2 read, 0 migrated, 2 current"),
        "{stdout}"
    );
    assert!(stdout.contains("batch 2: 1 read"), "{stdout}");
    assert!(
        stdout.contains("migrated 0 of 3 records (3 already current"),
        "{stdout}"
    );
    let (status, _) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
    assert_eq!(status, 200);

    let out = Command::new(BIN)
        .args(["--store", "memory", "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("migrate works on --store redis"));
}

/// `reshard` as an operator runs it: the demo tasks recorded with one shard, moved to four
/// (progress printed, a second run moves nothing), then served by a server with four shards.
#[test]
fn reshard_moves_the_tasks_to_the_new_shard_count() {
    let redis = failed_tasks_testkit::RedisServer::start();
    let url = redis.url();
    let list = "/codebase-embedder/api/v1/tasks/failed";
    let serve = |shards: &str| {
        start(
            &[
                "--store",
                "redis",
                "--redis-url",
                &url,
                "--redis-shards",
                shards,
            ],
            &[],
        )
    };
    let total = |server: &Running| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = http_get(server.addr, list);
            if status == 200 {
                return body["Data"]["TotalTasks"].clone();
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    {
        let server = start(&["--store", "redis", "--redis-url", &url, "--demo"], &[]);
        assert_eq!(total(&server), 3);
    }
    assert_eq!(
        total(&serve("4")),
        0,
        "four shards do not see the one shard's keys"
    );
    let reshard = |from: &str, to: &str| {
        let out = Command::new(BIN)
            .args(["--redis-url", &url, "reshard", "--from", from, "--to", to])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let first = reshard("1", "4");
    assert!(first.contains("reshard 1 -> 4 done: moved 3,"), "{first}");
    let again = reshard("1", "4");
    assert!(again.contains("done: moved 0,"), "{again}");
    assert_eq!(total(&serve("4")), 3);
    assert_eq!(redis.cli(&["EXISTS", "{failed-tasks}:idx:all"]).trim(), "0");
    let refused = Command::new(BIN)
        .args(["--redis-url", &url, "reshard", "--from", "0", "--to", "4"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// Ready means ready: the very first request after `listening` is answered by the store,
/// on every store (the compat source used to answer 503 for about half a second: its
/// connection was still being made when the server started listening), and nothing warns
/// on the way up.
#[test]
fn the_first_request_after_listening_is_answered() {
    let redis = failed_tasks_testkit::RedisServer::start();
    let url = redis.url();
    for store in ["compat", "redis", "memory"] {
        let server = start(&["--store", store, "--redis-url", &url], &[]);
        // Nothing warns on the way up to a healthy store (the janitor's first run used to
        // fail, and warn, while the connection was still being made).
        let warned: Vec<&String> = server
            .start_logs
            .iter()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["level"] == "WARN" || v["level"] == "ERROR"
            })
            .collect();
        assert!(warned.is_empty(), "{store}: {warned:#?}");
        let (status, body) = http_get(server.addr, "/codebase-embedder/api/v1/tasks/failed");
        assert_eq!(status, 200, "{store}: {body}");
        assert_eq!(body["Data"]["TotalTasks"], 0, "{store}");
        assert_eq!(http_get(server.addr, "/readyz").0, 200, "{store}");
    }
}

/// `[[notify_targets]]`: read from the file, shown by name only; `notify_url` and
/// `notify_secret` redacted; a bad target refused at start naming its key, no secret shown.
#[test]
fn notify_targets_are_read_from_the_file_and_shown_by_name_only() {
    let good = temp_file(
        "notify.toml",
        "public_url = \"https://failures.example\"\n\
         [[notify_targets]]\nname = \"ops\"\nurl = \"https://ops.example/hooks/TOPSECRET-PATH\"\n\
         secret = \"TOPSECRET-KEY\"\nevents = [\"alert.firing\"]\nmin_level = \"warning\"\n\
         [[notify_targets]]\nname = \"chat\"\nurl = \"https://hooks.slack.example/services/TOPSECRET\"\n\
         format = \"slack\"\n[notify_targets.scope]\nErrorCategory = \"authorization\"\n",
    );
    let shown = print_config(
        &["--config", good.to_str().unwrap()],
        &[
            (
                "FAILED_TASKS_NOTIFY_URL",
                "https://env.example/hook/TOPSECRET",
            ),
            ("FAILED_TASKS_NOTIFY_SECRET", "TOPSECRET-ENV"),
        ],
    );
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    assert!(
        shown.contains("# [[notify_targets]] (URLs and secrets not shown): ops, chat"),
        "{shown}"
    );
    assert!(
        shown.contains("notify_url = \"https://env.example\""),
        "{shown}"
    );
    assert!(shown.contains("notify_secret = \"<redacted>\""), "{shown}");
    assert!(
        shown.contains("public_url = \"https://failures.example\""),
        "{shown}"
    );

    let table = [
        (
            "n-scheme.toml",
            "url = \"ftp://x/TOPSECRET\"",
            "notify_targets[0] (ops).url",
        ),
        (
            "n-event.toml",
            "url = \"https://x/TOPSECRET\"\nevents = [\"group.nwe\"]",
            "notify_targets[0] (ops).events",
        ),
        (
            "n-key.toml",
            "url = \"https://x/TOPSECRET\"\nsecrets = \"TOPSECRET\"",
            "notify_targets[0].secrets",
        ),
    ];
    for (name, rest, key) in table {
        let file = temp_file(
            name,
            &format!("[[notify_targets]]\nname = \"ops\"\n{rest}\n"),
        );
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{name}: {stderr}");
        assert!(!stderr.contains("TOPSECRET"), "{name}: {stderr}");
    }
}

/// `[[tokens]]`: read from the file (secret by value, variable or file), shown by name and
/// role only; a token limited to one client keeps to it on the running server; bad tokens are
/// refused at start naming the key, no secret shown.
#[test]
fn named_tokens_are_read_from_the_file_and_shown_by_name_and_role_only() {
    let secret_file = temp_file("ide-secret.txt", "TOPSECRET-FILE\n");
    let good = temp_file(
        "tokens.toml",
        &format!(
            "[[tokens]]\nname = \"alice\"\nrole = \"operate\"\nsecret = \"TOPSECRET-ALICE\"\n\
             [[tokens]]\nname = \"bob\"\nrole = \"admin\"\nsecret_env = \"BOB_TOKEN\"\n\
             [[tokens]]\nname = \"ide\"\nrole = \"read\"\nsecret_file = \"{}\"\nclient_id = \"client456\"\n",
            secret_file.display()
        ),
    );
    let env = [("BOB_TOKEN", "TOPSECRET-BOB")];
    let shown = print_config(&["--config", good.to_str().unwrap()], &env);
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    assert!(
        shown.contains(
            "# [[tokens]] (secrets not shown): alice (operate), bob (admin), ide (read, client client456)"
        ),
        "{shown}"
    );

    let server = start(&["--config", good.to_str().unwrap(), "--demo"], &env);
    let listening: serde_json::Value =
        serde_json::from_str(server.start_logs.last().unwrap()).unwrap();
    assert_eq!(listening["admin_api"], "enabled");
    assert_eq!(listening["read_auth"], true);
    let list = "/codebase-embedder/api/v1/tasks/failed";
    let (status, _) = http_call(server.addr, "GET", list, &[]);
    assert_eq!(status, 401);
    let (status, body) = http_call(
        server.addr,
        "GET",
        list,
        &["Authorization: Bearer TOPSECRET-FILE"],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Data"]["TotalTasks"], 1,
        "the ide token sees client456's task only"
    );
    let (status, body) = http_call(
        server.addr,
        "GET",
        list,
        &["Authorization: Bearer TOPSECRET-BOB"],
    );
    assert_eq!(
        (status, body["Data"]["TotalTasks"].clone()),
        (200, 3.into())
    );
    drop(server);

    let table = [
        (
            "t-role.toml",
            "name = \"x\"\nrole = \"root\"\nsecret = \"TOPSECRET\"",
            "tokens[0].role",
        ),
        (
            "t-key.toml",
            "name = \"x\"\nrole = \"read\"\nsecrets = \"TOPSECRET\"",
            "tokens[0].secrets",
        ),
        (
            "t-none.toml",
            "name = \"x\"\nrole = \"read\"",
            "tokens[0].secret",
        ),
        (
            "t-env.toml",
            "name = \"x\"\nrole = \"read\"\nsecret_env = \"NO_SUCH_VARIABLE_HERE\"",
            "tokens[0].secret_env",
        ),
        (
            "t-client.toml",
            "name = \"x\"\nrole = \"read\"\nsecret = \"TOPSECRET\"\nclient_id = \"\"",
            "tokens[0].client_id",
        ),
        (
            "t-dup.toml",
            "name = \"admin\"\nrole = \"read\"\nsecret = \"TOPSECRET\"",
            "two tokens are named \"admin\"",
        ),
    ];
    for (name, rest, key) in table {
        let file = temp_file(name, &format!("[[tokens]]\n{rest}\n"));
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .env("FAILED_TASKS_ADMIN_TOKEN", "TOPSECRET-ADMIN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{name}: {stderr}");
        assert!(!stderr.contains("TOPSECRET"), "{name}: {stderr}");
    }
}
