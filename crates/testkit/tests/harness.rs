//! The harness itself works: start, kill, restart, pause, resume.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
use std::time::Duration;

use failed_tasks_testkit::{raw_command, RedisServer};

#[test]
fn private_server_lifecycle() {
    let mut server = RedisServer::start();
    assert_ne!(server.port(), 6379);
    let ping = || raw_command(server.port(), "PING", Duration::from_millis(300));
    assert_eq!(ping().as_deref(), Some("+PONG"));
    server.pause();
    assert_eq!(
        raw_command(server.port(), "PING", Duration::from_millis(300)),
        None
    );
    server.resume();
    assert_eq!(
        raw_command(server.port(), "PING", Duration::from_millis(1000)).as_deref(),
        Some("+PONG")
    );
    server.kill();
    assert_eq!(
        raw_command(server.port(), "PING", Duration::from_millis(300)),
        None
    );
    server.restart();
    assert_eq!(
        raw_command(server.port(), "PING", Duration::from_millis(1000)).as_deref(),
        Some("+PONG")
    );
}
