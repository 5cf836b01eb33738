//! Test support: private `redis-server` processes on free loopback ports.
//!
//! Tests never use a shared Redis (the machine's 127.0.0.1:6379 included): each test binary
//! starts its own with [`RedisServer::start`], which it can also kill, restart, pause and
//! resume for fault tests. [`RedisCluster::start`] makes a three-master cluster.
//!
//! A server started with `--requirepass PW` among its extra arguments is still checked and
//! driven by the testkit ([`RedisServer::cli`] authenticates); its [`RedisServer::url`]
//! carries no password, so tests write the URL they mean to try.
//!
//! When `redis-server` is not installed, starting one panics with a message saying how to
//! install it: a Redis test must fail loudly, never skip silently.
//!
//! Everything here is test code: it panics on failure, like an assertion.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "redis-server was not found on PATH; these tests need a real Redis. \
     Install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) or \
     `brew install redis` (macOS), or run `.ci/run`, which installs it";

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Send one inline command and read the first reply line (`+PONG`, `-ERR ...`).
pub fn raw_command(port: u16, command: &str, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// The inline commands that authenticate with `password` (if any) before `command`.
fn with_auth(password: Option<&str>, command: &str) -> String {
    match password {
        Some(pw) => format!("AUTH {pw}\r\n{command}"),
        None => command.to_owned(),
    }
}

/// PING (after AUTH when the server wants a password) answered `+PONG`.
fn pong(port: u16, password: Option<&str>, timeout: Duration) -> bool {
    let Some(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()
    else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err()
        || stream
            .write_all(format!("{}\r\n", with_auth(password, "PING")).as_bytes())
            .is_err()
    {
        return false;
    }
    let replies = if password.is_some() { 2 } else { 1 };
    let mut text = String::new();
    let mut buf = [0u8; 512];
    while text.matches("\r\n").count() < replies {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text.lines().nth(replies - 1) == Some("+PONG")
}

fn wait_for_pong(port: u16, password: Option<&str>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pong(port, password, Duration::from_millis(200)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs redis-server with the arguments after `$1` (the test process id), prints its pid,
/// and kills it when either the test process or redis-server is gone.
const GUARDIAN: &str = r#"
parent=$1; shift
redis-server "$@" >/dev/null 2>&1 &
child=$!
echo "$child"
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.2; done
kill -CONT "$child" 2>/dev/null
kill -KILL "$child" 2>/dev/null
wait "$child" 2>/dev/null
"#;

/// Start `redis-server ARGS…` under the [`GUARDIAN`] shell, which kills it as soon as this
/// test process is gone (so a server held in a `static`, never dropped, or a test that
/// aborts cannot leave redis-server processes behind). Returns the guardian and the
/// redis-server's process id.
fn spawn_guarded(args: &[std::ffi::OsString]) -> (Child, Option<u32>) {
    match Command::new("redis-server").arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
        Err(e) => panic!("could not run redis-server: {e}"),
    }
    let mut guardian = Command::new("sh")
        .arg("-c")
        .arg(GUARDIAN)
        .arg("sh")
        .arg(std::process::id().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sh");
    let mut line = String::new();
    let stdout = guardian.stdout.take().expect("guardian stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("read redis-server pid");
    (guardian, line.trim().parse().ok())
}

/// The process id of the Redis server answering on `port`.
fn server_pid(port: u16, password: Option<&str>) -> Option<u32> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(format!("{}\r\n", with_auth(password, "INFO server")).as_bytes())
        .ok()?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("process_id:") || !text[text.find("process_id:")?..].contains('\n') {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let line = text.lines().find_map(|l| l.strip_prefix("process_id:"))?;
    line.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// A private `redis-server` on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    /// The guardian shell (see `spawn`).
    child: Option<Child>,
    redis_pid: Option<u32>,
}

impl RedisServer {
    /// Start a server with no persistence on a free port and wait until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a server on `port` exactly (e.g. one a system under test already points at).
    pub fn start_on(port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("failed-tasks-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut server = Self {
            port,
            dir,
            extra_args: Vec::new(),
            child: None,
            redis_pid: None,
        };
        assert!(server.spawn(), "port {port} is taken by another process");
        server
    }

    /// Start with extra `redis-server` arguments (e.g. `["--cluster-enabled", "yes"]`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("failed-tasks-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut server = Self {
            port,
            dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            redis_pid: None,
        };
        // A port found free can be taken by another process before redis-server binds it;
        // then try another one.
        for _ in 0..5 {
            if server.spawn() {
                return server;
            }
            server.kill();
            server.port = free_port();
        }
        panic!("could not start redis-server on a free port after 5 attempts");
    }

    /// Start redis-server on `self.port`; `false` when the port was taken by someone else.
    fn spawn(&mut self) -> bool {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--port".into(),
            self.port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--protected-mode".into(),
            "yes".into(),
            "--dir".into(),
            self.dir.clone().into_os_string(),
        ];
        args.extend(self.extra_args.iter().map(Into::into));
        let (guardian, pid) = spawn_guarded(&args);
        self.child = Some(guardian);
        self.redis_pid = pid;
        let Some(pid) = self.redis_pid else {
            return false;
        };
        // The answer must come from our process, not from a server that already held the port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let password = self.password();
            if wait_for_pong(self.port, password, Duration::from_millis(200)) {
                return server_pid(self.port, password) == Some(pid);
            }
            if !alive(pid) {
                return false;
            }
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    /// The value of a `--requirepass` among the extra arguments.
    fn password(&self) -> Option<&str> {
        let at = self.extra_args.iter().position(|a| a == "--requirepass")?;
        self.extra_args.get(at + 1).map(String::as_str)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id of the running redis-server.
    pub fn pid(&self) -> u32 {
        self.redis_pid.expect("server is running")
    }

    /// Kill the server (SIGKILL) and reap it; the port is free afterwards.
    pub fn kill(&mut self) {
        if let Some(pid) = self.redis_pid.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(mut guardian) = self.child.take() {
            // The guardian exits once its redis-server is gone.
            let _ = guardian.wait();
        }
    }

    /// Start a fresh, empty server on the same port after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "port {} was taken before redis-server could restart on it",
            self.port
        );
    }

    /// Freeze the server (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Thaw a paused server (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// Run `redis-cli -p PORT args...` and return its stdout (for test set-up and checks),
    /// authenticated when the server was started with `--requirepass`.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = self.password() {
            command.args(["--no-auth-warning", "-a", pw]);
        }
        let out = command
            .args(args)
            .output()
            .expect("run redis-cli (install redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server ignores SIGKILL until... it does not; but resume anyway so the
            // process exits promptly and the port is released.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel on a free loopback port watching one [`RedisServer`] as master
/// `mymaster`, stopped when dropped.
#[derive(Debug)]
pub struct RedisSentinel {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
}

impl RedisSentinel {
    /// The name of the monitored master.
    pub const MASTER: &'static str = "mymaster";

    /// Start a sentinel monitoring `master` (quorum 1) and wait until it knows the master.
    pub fn start(master: &RedisServer) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "failed-tasks-sentinel-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create sentinel dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {} 1000\n",
                dir.display(),
                Self::MASTER,
                master.port(),
                Self::MASTER
            ),
        )
        .expect("write sentinel.conf");
        let (guardian, pid) = spawn_guarded(&[conf.into_os_string(), "--sentinel".into()]);
        let sentinel = Self {
            port,
            dir,
            child: Some(guardian),
            pid,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = raw_command(
                port,
                &format!("SENTINEL get-master-addr-by-name {}", Self::MASTER),
                Duration::from_millis(300),
            );
            if answer.is_some_and(|a| a.starts_with('*')) {
                return sentinel;
            }
            assert!(
                Instant::now() < deadline,
                "redis-sentinel on port {port} did not know its master within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-sentinel://127.0.0.1:PORT?sentinelServiceName=mymaster` (fred's form).
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={}",
            self.port,
            Self::MASTER
        )
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(mut guardian) = self.child.take() {
            let _ = guardian.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-master Redis Cluster on free loopback ports, stopped when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start three cluster-enabled nodes and join them with `redis-cli --cluster create`.
    pub fn start() -> Self {
        Self::start_with_replicas(0)
    }

    /// Three masters with `replicas` replicas each (`--cluster-replicas`), every replica
    /// connected to its master before this returns: a cluster in which killing a master
    /// fails over to its replica.
    pub fn start_with_replicas(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (install redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Wait until every node reports the cluster as ok.
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = node.cli(&["cluster", "info"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster did not become ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let cluster = Self { nodes };
        // Every replica must have finished its first sync (its link up): only then can it
        // take over its master's data.
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &cluster.nodes {
            loop {
                let info = node.cli(&["info", "replication"]);
                if info.contains("role:master")
                    || (info.contains("master_link_status:up")
                        && info.contains("master_sync_in_progress:0"))
                {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica did not sync: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The indexes (into [`nodes`](Self::nodes)) of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.redis_pid.is_some() && n.cli(&["role"]).starts_with("master"))
            .map(|(i, _)| i)
            .collect()
    }

    /// Move `slots` hash slots from node `from` to node `to` (both masters) with
    /// `redis-cli --cluster reshard`, keys included (`MIGRATE`); returns when done.
    pub fn move_slots(&self, from: usize, to: usize, slots: u32) {
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.nodes[from].port()))
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "cluster reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The cluster id of node `i` (`CLUSTER MYID`).
    pub fn node_id(&self, i: usize) -> String {
        self.nodes[i].cli(&["cluster", "myid"]).trim().to_owned()
    }

    /// The hash slots node `i` serves, as inclusive ranges (its own `CLUSTER NODES` line;
    /// a replica serves none).
    pub fn slots_of(&self, i: usize) -> Vec<(u16, u16)> {
        let nodes = self.nodes[i].cli(&["cluster", "nodes"]);
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
            return Vec::new();
        };
        // Fields after the eighth are slots (`a-b` or `a`); `[slot->-id]` marks a migration.
        me.split_whitespace()
            .skip(8)
            .filter(|f| !f.starts_with('['))
            .map(|f| match f.split_once('-') {
                Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                None => {
                    let a = f.parse().expect("slot");
                    (a, a)
                }
            })
            .collect()
    }

    /// The master that serves hash slot `slot`.
    pub fn owner_of(&self, slot: u16) -> usize {
        self.masters()
            .into_iter()
            .find(|&m| {
                self.slots_of(m)
                    .iter()
                    .any(|&(a, b)| (a..=b).contains(&slot))
            })
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Begin moving hash slot `slot` from master `from` to master `to` by hand, as
    /// `redis-cli --cluster reshard` begins: `to` IMPORTING, then `from` MIGRATING. Its keys
    /// stay on `from` until [`migrate_keys`](Self::migrate_keys) or
    /// [`finish_slot_move`](Self::finish_slot_move) moves them.
    pub fn begin_slot_move(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        self.ok(
            to,
            &[
                "cluster",
                "setslot",
                &slot,
                "importing",
                &self.node_id(from),
            ],
        );
        self.ok(
            from,
            &["cluster", "setslot", &slot, "migrating", &self.node_id(to)],
        );
    }

    /// `MIGRATE` `keys` (of a slot being moved) from node `from` to node `to`.
    pub fn migrate_keys(&self, from: usize, to: usize, keys: &[&str]) {
        let port = self.nodes[to].port().to_string();
        let mut args = vec![
            "migrate",
            "127.0.0.1",
            port.as_str(),
            "",
            "0",
            "5000",
            "keys",
        ];
        args.extend_from_slice(keys);
        self.ok(from, &args);
    }

    /// Finish moving `slot` from `from` to `to`: migrate the keys left on `from`, then assign
    /// the slot to `to` on `to`, `from` and every other master (redis-cli's order).
    pub fn finish_slot_move(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        loop {
            let listed = self.nodes[from].cli(&["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            self.migrate_keys(from, to, &keys);
        }
        let id = self.node_id(to);
        let others = self.masters().into_iter().filter(|&m| m != to && m != from);
        for i in [to, from].into_iter().chain(others) {
            self.ok(i, &["cluster", "setslot", &slot, "node", &id]);
        }
    }

    /// Run `redis-cli args` on node `i` and check it answered `OK`.
    fn ok(&self, i: usize, args: &[&str]) {
        let out = self.nodes[i].cli(args);
        assert_eq!(out.trim(), "OK", "{args:?} on node {i}");
    }

    /// Kill node `i` (SIGKILL), e.g. a master whose replica then takes over.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// The nodes, e.g. to kill one.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=...` URL naming every node
    /// (fred's cluster URL form).
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port());
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port()));
        }
        url
    }
}
