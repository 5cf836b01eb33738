//! `failed-tasks-server`: serves the failed-task API over HTTP.
//!
//! Only wiring lives here: flags (each also an environment variable), logging, the chosen
//! store, the use cases, the HTTP adapter, and shutdown on SIGINT/SIGTERM. Defaults live in
//! the flag definitions and nowhere else.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use failed_tasks_domain::{FailedTask, PageLimits};
use failed_tasks_http::{App, HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::{CompatConfig, CompatStore, JanitorHandle, RedisConfig, RedisStore};
use failed_tasks_store::{MemoryStore, StatusStore};

/// Where failed tasks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// In process memory: the embedded default; nothing survives a restart.
    Memory,
    /// The indexed Redis store.
    Redis,
    /// Read-only view of the original Go service's `request:id:*` records in Redis.
    Compat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Serve the failed tasks of a codebase-embedder deployment over HTTP.
#[derive(Debug, Parser)]
#[command(name = "failed-tasks-server", version, about)]
struct Flags {
    /// Address to listen on.
    #[arg(long, env = "FAILED_TASKS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Where failed tasks are kept.
    #[arg(long, env = "FAILED_TASKS_STORE", value_enum, default_value_t = StoreKind::Memory)]
    store: StoreKind,

    /// Redis URL for `--store redis|compat` (redis://, rediss://, redis-sentinel://, redis-cluster://).
    #[arg(
        long,
        env = "FAILED_TASKS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,

    /// Prefix of every key of the Redis store; must hold exactly one hash tag (`{...}`), so
    /// all keys share one Redis Cluster slot.
    #[arg(
        long,
        env = "FAILED_TASKS_REDIS_KEY_PREFIX",
        default_value = "{failed-tasks}"
    )]
    redis_key_prefix: String,

    /// The longest a single Redis command may take.
    #[arg(long, env = "FAILED_TASKS_REDIS_COMMAND_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    redis_command_timeout: Duration,

    /// Retention: failed tasks older than this are trimmed (Redis store).
    #[arg(long, env = "FAILED_TASKS_RETENTION_MAX_AGE", default_value = "30days", value_parser = humantime::parse_duration)]
    retention_max_age: Duration,

    /// Retention: at most this many failed tasks are kept; the oldest beyond are trimmed (Redis store).
    #[arg(
        long,
        env = "FAILED_TASKS_RETENTION_MAX_COUNT",
        default_value_t = 1_000_000
    )]
    retention_max_count: u64,

    /// How often the retention janitor runs (Redis store).
    #[arg(long, env = "FAILED_TASKS_JANITOR_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    janitor_interval: Duration,

    /// Directory where trimmed tasks are archived as JSON lines, one file per UTC day
    /// (Redis store). Unset: trimmed tasks are dropped.
    #[arg(long, env = "FAILED_TASKS_ARCHIVE_DIR")]
    archive_dir: Option<std::path::PathBuf>,

    /// Key prefix of the original Go service's records (`--store compat`).
    #[arg(
        long,
        env = "FAILED_TASKS_COMPAT_KEY_PREFIX",
        default_value = "request:id:"
    )]
    compat_key_prefix: String,

    /// Expiry the Go service sets on its records, used to estimate their fail time (`--store compat`).
    #[arg(long, env = "FAILED_TASKS_COMPAT_RECORD_EXPIRY", default_value = "24h", value_parser = humantime::parse_duration)]
    compat_record_expiry: Duration,

    /// Record the source document's three example tasks at start.
    #[arg(long, env = "FAILED_TASKS_DEMO")]
    demo: bool,

    /// Deadline of the store connection check (e.g. `5s`, `500ms`).
    #[arg(long, env = "FAILED_TASKS_HEALTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    health_timeout: Duration,

    /// Deadline of a whole request, connection check included.
    #[arg(long, env = "FAILED_TASKS_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,

    /// How long a client may take to send a complete request head.
    #[arg(long, env = "FAILED_TASKS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,

    /// How long a client may take to send a request body.
    #[arg(long, env = "FAILED_TASKS_BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    body_read_timeout: Duration,

    /// Bearer token of the admin routes (recording, removal). Unset: admin routes answer 403.
    #[arg(long, env = "FAILED_TASKS_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_token)]
    admin_token: Option<Token>,

    /// Bearer token the read routes require, when set (the admin token is accepted too).
    #[arg(long, env = "FAILED_TASKS_READ_TOKEN", hide_env_values = true, value_parser = parse_token)]
    read_token: Option<Token>,

    /// Largest accepted request body in bytes (413 beyond).
    #[arg(long, env = "FAILED_TASKS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: u64,

    /// Largest accepted request head in bytes (431 beyond).
    #[arg(long, env = "FAILED_TASKS_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    max_header_bytes: usize,

    /// Most connections served at once.
    #[arg(long, env = "FAILED_TASKS_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,

    /// Page size when a request names none.
    #[arg(long, env = "FAILED_TASKS_PAGE_SIZE_DEFAULT", default_value_t = 100)]
    page_size_default: u32,

    /// Largest page size a request may ask for.
    #[arg(long, env = "FAILED_TASKS_PAGE_SIZE_MAX", default_value_t = 1000)]
    page_size_max: u32,

    /// `Retry-After` seconds sent with 503 answers.
    #[arg(long, env = "FAILED_TASKS_RETRY_AFTER_SECS", default_value_t = 5)]
    retry_after_secs: u32,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "FAILED_TASKS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,

    /// Log line format.
    #[arg(long, env = "FAILED_TASKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// A bearer token from a flag or env var; its `Debug` is redacted, so `Flags` can be logged.
fn parse_token(value: &str) -> Result<Token, String> {
    Token::new(value).ok_or_else(|| "must not be empty".to_owned())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// The chosen store, and the background job that keeps it trimmed (if any).
async fn open_store(
    flags: &Flags,
) -> anyhow::Result<(Arc<dyn StatusStore>, Option<JanitorHandle>)> {
    match flags.store {
        StoreKind::Memory => Ok((Arc::new(MemoryStore::new()), None)),
        StoreKind::Redis => {
            let config = RedisConfig {
                url: flags.redis_url.clone(),
                key_prefix: flags.redis_key_prefix.clone(),
                command_timeout: flags.redis_command_timeout,
                max_age: flags.retention_max_age,
                max_count: flags.retention_max_count,
                janitor_interval: flags.janitor_interval,
                archive_dir: flags.archive_dir.clone(),
                ..RedisConfig::default()
            };
            // Fails only on bad configuration: a Redis that is down is retried in the
            // background while /readyz reports not-ready.
            let store = RedisStore::connect(config)
                .await
                .context("--redis-url / --redis-key-prefix / --redis-command-timeout")?;
            if !store.wait_connected(Duration::from_secs(2)).await {
                tracing::warn!(
                    url = %redact_url(&flags.redis_url),
                    "Redis is not reachable yet; retrying in the background"
                );
            }
            let janitor = store.spawn_janitor();
            Ok((Arc::new(store), Some(janitor)))
        }
        StoreKind::Compat => {
            let config = CompatConfig {
                url: flags.redis_url.clone(),
                key_prefix: flags.compat_key_prefix.clone(),
                record_expiry: flags.compat_record_expiry,
                command_timeout: flags.redis_command_timeout,
                ..CompatConfig::default()
            };
            let store = CompatStore::connect(config)
                .await
                .context("--redis-url / --compat-key-prefix")?;
            Ok((Arc::new(store), None))
        }
    }
}

/// A Redis URL with any password replaced, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<redacted>@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let page_limits = PageLimits::new(flags.page_size_default, flags.page_size_max)
        .map_err(|e| anyhow::anyhow!("--page-size-default/--page-size-max: {}", e.reason))?;
    if flags.health_timeout.is_zero() || flags.request_timeout.is_zero() {
        bail!("--health-timeout and --request-timeout must be greater than zero");
    }
    let (store, janitor) = open_store(&flags).await?;
    let deadlines = Deadlines {
        health_check: flags.health_timeout,
        request: flags.request_timeout,
    };
    let service = FailedTaskService::new(store, deadlines);
    if flags.demo && flags.store == StoreKind::Compat {
        bail!("--demo cannot record into --store compat, which is read-only");
    }
    if flags.demo {
        for task in FailedTask::seed_examples() {
            service
                .record_failure(&task)
                .await
                .with_context(|| format!("recording demo task {}", task.task_id()))?;
        }
        tracing::info!("recorded the 3 demo tasks");
    }
    let app = Arc::new(App {
        service,
        config: HttpConfig {
            page_limits,
            header_read_timeout: flags.header_read_timeout,
            body_read_timeout: flags.body_read_timeout,
            admin_token: flags.admin_token.clone(),
            read_token: flags.read_token.clone(),
            max_body_bytes: flags.max_body_bytes,
            max_header_bytes: flags.max_header_bytes,
            max_connections: flags.max_connections,
            retry_after_secs: flags.retry_after_secs,
        },
    });
    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("binding {}", flags.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        %addr,
        store = ?flags.store,
        admin_api = if app.config.admin_token.is_some() { "enabled" } else { "disabled" },
        read_auth = app.config.read_token.is_some(),
        "listening"
    );

    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(failed_tasks_http::serve(listener, app, async move {
        shutdown_signal().await;
        let _ = stopped_tx.send(());
    }));
    let mut server = server;
    tokio::select! {
        res = &mut server => return res.context("server task failed")?.context("server failed"),
        _ = stopped_rx => {}
    }
    match tokio::time::timeout(flags.shutdown_grace, server).await {
        Ok(res) => res
            .context("server task failed")?
            .context("server failed")?,
        Err(_) => {
            tracing::warn!(grace = ?flags.shutdown_grace, "in-flight requests did not finish within the grace period")
        }
    }
    if let Some(janitor) = janitor {
        janitor.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging(flags.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed-tasks-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("failed-tasks-server: {e:#}");
            ExitCode::from(2)
        }
    }
}
