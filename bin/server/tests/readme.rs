//! README.md shows what the program prints. Two checks keep it so:
//!
//! - Every console block marked `<!-- readme-test … -->` is run: a server is started as the
//!   marker says (and a private Redis when it asks for one), each `$ command` of the block is
//!   run with `bash` against it, and what the command prints must equal the lines README
//!   shows under it. Values that differ from run to run are compared by shape only: request
//!   ids (UUIDs), RFC 3339 times, `date:` headers and paging cursors (which encode a time).
//!   `UPDATE_README=1 cargo test -p failed-tasks-server --test readme` rewrites the blocks
//!   with what the commands printed.
//! - The configuration table lists every flag of `--help`, with the env var `--help` names
//!   and the default `--print-config` prints.
//! - deploy/config.example.toml holds every setting of `--help` (a commented line for those
//!   unset by default), each at the default `--print-config` prints.
//!
//! Marker syntax: `<!-- readme-test args="--demo" env="K=V K2=V2" redis -->`, then a
//! ```` ```console ```` block. Commands address the server as `127.0.0.1:8080` and Redis as
//! `127.0.0.1:6379` (or `redis-cli` without `-p`); the test substitutes its own free ports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{print_config, Server, BIN};

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")
}

/// One marked console block of README.
#[derive(Debug)]
struct Block {
    args: Vec<String>,
    env: Vec<(String, String)>,
    redis: bool,
    /// Index of the first line inside the fence, and of the closing fence, in README's lines.
    body: (usize, usize),
    exchanges: Vec<Exchange>,
}

#[derive(Debug)]
struct Exchange {
    /// The command as shown, continuation lines included (without the `$ `).
    command: String,
    /// The lines shown under it, up to the next command (trailing blank lines dropped).
    expected: Vec<String>,
}

fn attribute(marker: &str, name: &str) -> Option<String> {
    let start = marker.find(&format!("{name}=\""))? + name.len() + 2;
    let end = marker[start..].find('"')? + start;
    Some(marker[start..end].to_owned())
}

fn parse_blocks(lines: &[&str]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if !line.starts_with("<!-- readme-test") {
            i += 1;
            continue;
        }
        let args = attribute(line, "args")
            .map(|a| a.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let env = attribute(line, "env")
            .map(|e| {
                e.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let redis = line.split_whitespace().any(|w| w == "redis");
        assert_eq!(
            lines.get(i + 1).map(|l| l.trim()),
            Some("```console"),
            "README line {}: a readme-test marker must be followed by a ```console block",
            i + 1
        );
        let first = i + 2;
        let close = (first..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("README line {}: unclosed console block", i + 2));
        let mut exchanges: Vec<Exchange> = Vec::new();
        let mut j = first;
        while j < close {
            if let Some(cmd) = lines[j].strip_prefix("$ ") {
                let mut command = cmd.to_owned();
                while command.ends_with('\\') && j + 1 < close {
                    j += 1;
                    command.push('\n');
                    command.push_str(lines[j]);
                }
                exchanges.push(Exchange {
                    command,
                    expected: Vec::new(),
                });
            } else if let Some(last) = exchanges.last_mut() {
                last.expected.push(lines[j].to_owned());
            }
            j += 1;
        }
        for e in &mut exchanges {
            while e.expected.last().is_some_and(|l| l.trim().is_empty()) {
                e.expected.pop();
            }
        }
        blocks.push(Block {
            args,
            env,
            redis,
            body: (first, close),
            exchanges,
        });
        i = close + 1;
    }
    blocks
}

/// Values that differ from run to run, replaced by their kind.
fn normalise(text: &str) -> String {
    let rules = [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<uuid>",
        ),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z",
            "<time>",
        ),
        (r"(?m)^date: .*$", "date: <date>"),
        (
            r#""NextCursor":"[A-Za-z0-9_-]+""#,
            r#""NextCursor":"<cursor>""#,
        ),
        (r#""GateId":"g[0-9a-f]{20}""#, r#""GateId":"<gate>""#),
    ];
    let mut out = text.replace("\r\n", "\n");
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}

fn start_server(args: &[String], env: &[(String, String)], redis_url: Option<&str>) -> Server {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(url) = redis_url {
        args.extend(["--redis-url", url]);
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&args, &env)
}

/// Run one README command with bash, the ports substituted, for at most 30 s.
fn run(command: &str, server: SocketAddr, redis_port: Option<u16>) -> String {
    let mut command = command.replace("127.0.0.1:8080", &server.to_string());
    if let Some(port) = redis_port {
        command = command
            .replace("127.0.0.1:6379", &format!("127.0.0.1:{port}"))
            .replace("redis-cli ", &format!("redis-cli -p {port} "));
    }
    let mut child = Command::new("bash")
        .args(["-c", &command])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("README command ran over 30 s: {command}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap()
}

/// The statistics example counts failures per minute: run each block inside one wall-clock
/// minute (the demo's last task fails in the minute the server starts), so the timeline
/// reads the same every run.
fn wait_for_a_fresh_minute() {
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60
    };
    while !(2..=35).contains(&second()) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn readme_exchanges_are_what_the_program_prints() {
    let path = readme_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let blocks = parse_blocks(&lines);
    assert!(
        blocks.len() >= 3,
        "README has {} readme-test blocks",
        blocks.len()
    );
    let update = std::env::var_os("UPDATE_README").is_some();
    let mut replaced: BTreeMap<usize, (usize, Vec<String>)> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for block in &blocks {
        wait_for_a_fresh_minute();
        let redis = block.redis.then(failed_tasks_testkit::RedisServer::start);
        let redis_url = redis.as_ref().map(|r| r.url());
        let server = start_server(&block.args, &block.env, redis_url.as_deref());
        let mut rendered = Vec::new();
        for (n, exchange) in block.exchanges.iter().enumerate() {
            let actual = run(
                &exchange.command,
                server.addr,
                redis.as_ref().map(|r| r.port()),
            );
            let actual = actual.replace("\r\n", "\n");
            let actual = actual.trim_end_matches('\n');
            let expected = exchange.expected.join("\n");
            if normalise(actual) != normalise(&expected) {
                mismatches.push(format!(
                    "README line {}: `$ {}`\n--- README shows\n{expected}\n--- the program printed\n{actual}\n",
                    block.body.0 + 1,
                    exchange.command
                ));
            }
            if n > 0 {
                rendered.push(String::new());
            }
            rendered.extend(format!("$ {}", exchange.command).lines().map(str::to_owned));
            rendered.extend(actual.lines().map(str::to_owned));
        }
        replaced.insert(block.body.0, (block.body.1, rendered));
    }
    if update {
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if let Some((close, body)) = replaced.get(&i) {
                out.extend(body.iter().cloned());
                i = *close;
            } else {
                out.push(lines[i].to_owned());
                i += 1;
            }
        }
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
        return;
    }
    assert!(
        mismatches.is_empty(),
        "README shows what the program no longer prints (UPDATE_README=1 rewrites it):\n{}",
        mismatches.join("\n")
    );
}

/// The rows of README's configuration table: flag, env var, default, as written.
fn configuration_rows(text: &str) -> Vec<(String, String, String)> {
    let section = text
        .split("\n## Configuration")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_owned();
            (unquote(cells[1]), unquote(cells[2]), unquote(cells[3]))
        })
        .collect()
}

#[test]
fn readme_configuration_table_matches_help_and_print_config() {
    let text = std::fs::read_to_string(readme_path()).unwrap();
    let rows = configuration_rows(&text);
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let printed = Command::new(BIN)
        .arg("--print-config")
        .env_clear()
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed: toml::Table = String::from_utf8(printed.stdout).unwrap().parse().unwrap();

    let help_flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '[']).next())
        .filter(|f| !["help", "version"].contains(f))
        .collect();
    let readme_flags: Vec<&str> = rows
        .iter()
        .map(|(flag, _, _)| flag.trim_start_matches("--"))
        .collect();
    assert_eq!(
        readme_flags, help_flags,
        "README's configuration table lists the flags of --help, in its order"
    );

    for (flag, env, default) in &rows {
        let key = flag.trim_start_matches("--").replace('-', "_");
        if env.is_empty() {
            assert_eq!(flag, "--print-config", "only --print-config has no env var");
            continue;
        }
        assert!(
            help.contains(&format!("[env: {env}=")) || help.contains(&format!("[env: {env}]")),
            "{flag}: --help does not name {env}"
        );
        if key == "config" {
            assert_eq!(default, "unset");
            continue;
        }
        let shown = match printed.get(&key) {
            None => "unset".to_owned(),
            Some(toml::Value::Boolean(false)) => "off".to_owned(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        assert_eq!(
            default, &shown,
            "{flag}: README's default differs from --print-config"
        );
    }
    let documented: Vec<String> = rows
        .iter()
        .map(|(flag, _, _)| flag.trim_start_matches("--").replace('-', "_"))
        .collect();
    for key in printed.keys() {
        assert!(
            documented.contains(key),
            "{key} is printed by --print-config but not in README"
        );
    }
}

/// The keys of the settings `--help` lists (every flag but `--config` and `--print-config`).
fn setting_keys() -> Vec<String> {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    String::from_utf8(help.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '[']).next())
        .filter(|f| !["help", "version", "config", "print-config"].contains(f))
        .map(|f| f.replace('-', "_"))
        .collect()
}

#[test]
fn the_example_configuration_holds_every_setting_at_its_default() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        print_config(&["--config", path.to_str().unwrap()], &[]),
        print_config(&[], &[]),
        "deploy/config.example.toml sets a key to something else than its default"
    );
    let keys = setting_keys();
    assert!(keys.len() > 50, "{keys:?}");
    for key in keys {
        let set = format!("\n{key} = ");
        let commented = format!("\n# {key} = ");
        assert!(
            text.contains(&set) || text.contains(&commented),
            "deploy/config.example.toml does not show {key}"
        );
    }
}
