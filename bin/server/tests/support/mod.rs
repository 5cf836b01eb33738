//! The server binary as a child process, the way an operator runs it: started on port 0
//! with JSON logs, its address read from its `listening` line, its log lines kept for the
//! test to read, killed when dropped. Shared by the binary's test files (`mod support;`).

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_failed-tasks-server");

/// Run `command` to its end; its standard output, once it succeeded.
pub fn stdout_of(command: &mut Command) -> Vec<u8> {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What `--print-config` prints after `args`, with the environment `env` only.
pub fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(BIN);
    command
        .arg("--print-config")
        .args(args)
        .env_clear()
        .envs(env.iter().copied());
    String::from_utf8(stdout_of(&mut command)).unwrap()
}

/// A running server process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The server's log lines up to `listening` (JSON).
    pub start_logs: Vec<String>,
    /// The server's log lines after `listening` (JSON), as they come.
    pub logs: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start the server on 127.0.0.1:0 with JSON logs, `args` and `env` (`RUST_LOG` is
    /// cleared unless `env` sets it), and wait up to 20 s for its `listening` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Drains the pipe into the (unbounded) channel, so the server never blocks on a
        // full pipe; tests that care read the lines from `logs`.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut start_logs = Vec::new();
        let addr = loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
                break None;
            };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            start_logs.push(line);
            if v["message"] == "listening" {
                break v["addr"].as_str().and_then(|a| a.parse().ok());
            }
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not log its listening address within 20 s:\n{}",
                start_logs.join("\n")
            );
        };
        Server {
            child,
            addr,
            start_logs,
            logs: rx,
        }
    }

    /// Wait until `count` more log lines with this `message` arrived for which `keep` holds,
    /// for at most `within`; false if they did not.
    pub fn wait_for_logs(
        &self,
        message: &str,
        count: usize,
        within: Duration,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        let mut seen = 0;
        while seen < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.logs.recv_timeout(left) else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == message && keep(&v) {
                seen += 1;
            }
        }
        true
    }

    /// The server's resident memory, in bytes (`VmRSS` of /proc).
    pub fn rss(&self) -> u64 {
        self.proc_status_kb("VmRSS:") * 1024
    }

    /// The server's peak resident memory, in bytes (`VmHWM` of /proc).
    pub fn peak_rss(&self) -> u64 {
        self.proc_status_kb("VmHWM:") * 1024
    }

    fn proc_status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}
