//! The state every request shares: the use cases, the HTTP settings, the metrics and the
//! response-bytes budget.

use std::time::Duration;

use failed_tasks_domain::PageLimits;
use failed_tasks_query::FailedTaskService;

use crate::auth::{NamedToken, Token, Tokens};
use crate::body::Budget;
use crate::metrics::Metrics;

/// Limits and settings of the HTTP adapter. [`HttpConfig::default`] holds the defaults of the
/// connection limits; the binary's settings start from it.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Default and maximum `pageSize`.
    pub page_limits: PageLimits,
    /// How long a client may take to send a complete request head (and its first byte).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// Most files one recorded failure may list (`Files`; 413 beyond): 10,000 by default.
    pub max_failed_files: usize,
    /// Largest accepted request head, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most connections served at once. At the cap, a new connection closes the connection
    /// that has been idle longest (nothing in flight) instead of waiting; only when every
    /// connection is busy does it wait in the accept queue.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a GOAWAY;
    /// HTTP/1 keep-alive also ends at `header_read_timeout`, whichever comes first).
    pub idle_timeout: Duration,
    /// A response that makes no progress for this long (the client takes none of its next
    /// 64 KiB, or the socket accepts no byte) is dropped together with its connection.
    pub write_stall_timeout: Duration,
    /// Response bytes held for all clients at once (built, not yet taken by the client's
    /// connection). A larger response that does not fit is answered 503 with `Retry-After`.
    pub max_response_bytes_in_flight: u64,
    /// The same limit per connection (HTTP/2 runs many responses on one connection).
    pub max_connection_response_bytes: u64,
    /// Most concurrent HTTP/2 streams (requests) per connection.
    pub h2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings.
    pub h2_keep_alive_interval: Duration,
    /// An HTTP/2 connection whose keep-alive ping is not answered within this is closed.
    pub h2_keep_alive_timeout: Duration,
    /// The `Retry-After` value sent with 503, in seconds.
    pub retry_after_secs: u32,
    /// Most rows an export writes; beyond it, a last line says it was cut.
    pub export_max_rows: u64,
    /// A token named `admin` with the admin role. Without any token of a role that may call
    /// them, the admin routes answer 403, never open.
    pub admin_token: Option<Token>,
    /// A token named `operate` with the operate role (retry, cancel, resolve).
    pub operate_token: Option<Token>,
    /// A token named `read` with the read role; once a read token (or a token limited to one
    /// client) is configured, the read routes need a token.
    pub read_token: Option<Token>,
    /// More tokens, each named, with its role and optionally limited to one client. Names
    /// and secrets must differ from each other and from the three above
    /// ([`check_tokens`](crate::check_tokens)).
    pub tokens: Vec<NamedToken>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            page_limits: PageLimits::DEFAULT,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_failed_files: failed_tasks_domain::DEFAULT_MAX_FAILED_FILES,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(10),
            max_response_bytes_in_flight: 32 * 1024 * 1024,
            max_connection_response_bytes: 16 * 1024 * 1024,
            h2_max_concurrent_streams: 100,
            h2_keep_alive_interval: Duration::from_secs(20),
            h2_keep_alive_timeout: Duration::from_secs(20),
            retry_after_secs: 5,
            export_max_rows: 1_000_000,
            admin_token: None,
            operate_token: None,
            read_token: None,
            tokens: Vec::new(),
        }
    }
}

/// Everything a request needs: the use cases, the HTTP settings and the metrics. Share it
/// in an `Arc`.
#[derive(Debug)]
pub struct App {
    /// The use cases.
    pub service: FailedTaskService,
    /// The HTTP settings.
    pub config: HttpConfig,
    /// The server's metrics, served at `/metrics`.
    pub metrics: Metrics,
    /// The response-bytes caps of `config`, shared by every connection.
    pub(crate) budget: Budget,
    /// Every token of `config`.
    pub(crate) tokens: Tokens,
}

impl App {
    /// An app with fresh metrics.
    pub fn new(service: FailedTaskService, config: HttpConfig) -> Self {
        let metrics = Metrics::with_counters(
            service.retry_counters().clone(),
            service.record_counters().clone(),
        );
        let budget = Budget::new(
            config.max_response_bytes_in_flight,
            config.max_connection_response_bytes,
            metrics.response_bytes(),
        );
        let tokens = Tokens::of(&config);
        Self {
            service,
            config,
            metrics,
            budget,
            tokens,
        }
    }

    /// Whether some token may call an admin route (the operate or the admin role).
    pub fn admin_api_enabled(&self) -> bool {
        self.tokens.any_with(crate::auth::Role::Operate)
    }

    /// Whether the read routes need a token (a read token, or a token limited to one
    /// client, is configured).
    pub fn reads_need_a_token(&self) -> bool {
        self.tokens.reads_need_a_token()
    }
}
