//! Settings: built-in defaults < a TOML file < environment variables < flags.
//!
//! [`Settings::default`] is the one place defaults live. [`Cli`] holds what the command line
//! and the environment say (clap reads each flag's env var when the flag is absent, which
//! gives flags > env); figment layers it over the file over the defaults and rejects unknown
//! keys and bad values, naming the key and the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use failed_tasks_domain::stats::AlertThresholds;
use failed_tasks_domain::{PageLimits, RetryConfig};
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailTimeLimits, FailedTaskService};
use failed_tasks_redis::{redact_url, CompatConfig, RedisConfig};
use failed_tasks_store::{MemoryConfig, Retention};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Where failed tasks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In process memory: the embedded default; nothing survives a restart.
    Memory,
    /// The indexed Redis store.
    Redis,
    /// Read-only view of the original Go service's `request:id:*` records in Redis.
    Compat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// A secret setting (a token). `Debug` never shows it; `--print-config` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(Secret(s.to_owned()))
        }
    }
}

/// The effective settings of the server. Every field is a TOML key of the same name, a
/// flag `--the-name` and an env var `FAILED_TASKS_THE_NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where failed tasks are kept.
    pub store: StoreKind,
    /// Redis URL for the redis and compat stores.
    pub redis_url: String,
    /// Prefix of every Redis key; one hash tag.
    pub redis_key_prefix: String,
    /// Longest a single Redis command may take.
    #[serde(with = "humantime_serde")]
    pub redis_command_timeout: Duration,
    /// Serve even when Redis's maxmemory-policy evicts keys (not `noeviction`).
    pub redis_allow_eviction: bool,
    /// Shards of the Redis store: one hash tag each, spread over a cluster's masters.
    pub redis_shards: u32,
    /// While the shard count changes: the count tasks move away from (unset otherwise).
    pub redis_resharding_from: Option<u32>,
    /// Retention: tasks that failed longer ago are trimmed.
    #[serde(with = "humantime_serde")]
    pub retention_max_age: Duration,
    /// Retention: at most this many tasks are kept.
    pub retention_max_count: u64,
    /// How often the retention janitor runs.
    #[serde(with = "humantime_serde")]
    pub janitor_interval: Duration,
    /// Where trimmed tasks are archived (JSON lines per UTC day); none when unset.
    pub archive_dir: Option<PathBuf>,
    /// How far ahead of this server's clock a recorded `FailTime` may be.
    #[serde(with = "humantime_serde")]
    pub clock_skew_allowance: Duration,
    /// Key prefix of the Go service's records (compat store).
    pub compat_key_prefix: String,
    /// The Go service's key expiry (compat store).
    #[serde(with = "humantime_serde")]
    pub compat_record_expiry: Duration,
    /// Record the three example tasks at start.
    pub demo: bool,
    /// Deadline of the store connection check.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Deadline of a whole request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A good answer from the store stands in for the connection check of requests this
    /// soon after it (0: check before every request).
    #[serde(with = "humantime_serde")]
    pub connection_check_reuse: Duration,
    /// Statistics requests computed at once; the others wait their turn within the request
    /// deadline.
    pub stats_concurrency: usize,
    /// A statistics answer is shared with callers of the same window this long (0: never); a
    /// write through this server ends it at once.
    #[serde(with = "humantime_serde")]
    pub stats_cache_ttl: Duration,
    /// Time a client has to send its request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send its request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Bearer token of the admin routes; unset disables them.
    pub admin_token: Option<Secret>,
    /// Bearer token the read routes require, when set.
    pub read_token: Option<Secret>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: u64,
    /// Largest accepted request head in bytes.
    pub max_header_bytes: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// A connection with nothing in flight this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A response that makes no progress this long is dropped with its connection.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// Response bytes held for all clients at once (larger answers beyond: 503).
    pub max_response_bytes_in_flight: u64,
    /// Response bytes held for one connection at once.
    pub max_connection_response_bytes: u64,
    /// Most concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings (0: none).
    #[serde(with = "humantime_serde")]
    pub h2_keep_alive_interval: Duration,
    /// An HTTP/2 connection whose ping is not answered this soon is closed.
    #[serde(with = "humantime_serde")]
    pub h2_keep_alive_timeout: Duration,
    /// Page size when a request names none.
    pub page_size_default: u32,
    /// Largest page size a request may ask for.
    pub page_size_max: u32,
    /// `Retry-After` seconds on 503.
    pub retry_after_secs: u32,
    /// How long shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// Alert `sudden_increase`: the last 5 minutes exceed this many times the window's
    /// average per 5 minutes...
    pub alert_spike_factor: f64,
    /// ... with at least this many failures.
    pub alert_spike_min_count: u64,
    /// Alert `sudden_increase` is critical above this many times the average...
    pub alert_spike_factor_critical: f64,
    /// ... with at least this many failures.
    pub alert_spike_min_count_critical: u64,
    /// Alert `category_threshold`: more failures of one category in the window than this.
    pub alert_category_max: u64,
    /// Alert `category_threshold` is critical above this many.
    pub alert_category_max_critical: u64,
    /// Alert `error_code_threshold`: more failures of one error code in the window than this.
    pub alert_error_code_max: u64,
    /// Alert `error_code_threshold` is critical above this many.
    pub alert_error_code_max_critical: u64,
    /// Alert `failure_rate`: failures / reported attempts above this fraction...
    pub alert_failure_rate_max: f64,
    /// Alert `failure_rate` is critical above this fraction.
    pub alert_failure_rate_max_critical: f64,
    /// ... once at least this many attempts were reported in the window.
    pub alert_failure_rate_min_attempts: u64,
    /// Retry policy: retries before a failure is final (`FinalFailure`).
    pub retry_max_retries: u32,
    /// Retry policy: the first backoff delay.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Retry policy: each further delay is this many times the previous one.
    pub retry_multiplier: f64,
    /// Retry policy: no delay is longer than this.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Retry policy: delays vary by up to this fraction either way.
    pub retry_jitter: f64,
    /// Retry scheduler: time between its steps (each moves the due retries to the workers).
    #[serde(with = "humantime_serde")]
    pub retry_scheduler_interval: Duration,
    /// Retry scheduler: retries moved per store call.
    pub retry_scheduler_batch: usize,
    /// Redis key of the retry request stream; unset: `{redis_key_prefix}:retries`. Must hold
    /// the prefix's hash tag.
    pub retry_stream_key: Option<String>,
    /// About how many requests the retry stream (or the memory store's queue) keeps; older
    /// ones are trimmed, read or not.
    pub retry_stream_max_len: u64,
    /// Consumer group of the embedders' retry workers (Redis; for the pending gauge).
    pub retry_consumer_group: String,
    /// How long a worker may hold a retry request unacknowledged before another may reclaim
    /// it (Redis; the lease `RedisRetryQueue` workers built from these settings use).
    #[serde(with = "humantime_serde")]
    pub retry_consumer_lease: Duration,
}

impl Default for Settings {
    /// Each default is the one of the component the setting configures (the Redis adapter,
    /// the HTTP adapter, the use cases, the domain's policies): written there once, read
    /// here. Only the server's own settings (where to listen, which store, logging, the
    /// drain, `--demo`) have their defaults in this function.
    fn default() -> Self {
        let redis = RedisConfig::default();
        let compat = CompatConfig::default();
        let http = HttpConfig::default();
        let deadlines = Deadlines::default();
        let alerts = AlertThresholds::default();
        let retry = RetryConfig::default();
        let scheduler = failed_tasks_query::SchedulerConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreKind::Memory,
            redis_url: redis.url,
            redis_key_prefix: redis.key_prefix,
            redis_command_timeout: redis.command_timeout,
            redis_allow_eviction: redis.allow_eviction,
            redis_shards: redis.shards,
            redis_resharding_from: redis.resharding_from,
            retention_max_age: redis.max_age,
            retention_max_count: redis.max_count,
            janitor_interval: redis.janitor_interval,
            archive_dir: redis.archive_dir,
            clock_skew_allowance: FailTimeLimits::default().clock_skew,
            compat_key_prefix: compat.key_prefix,
            compat_record_expiry: compat.record_expiry,
            demo: false,
            health_timeout: deadlines.health_check,
            request_timeout: deadlines.request,
            connection_check_reuse: FailedTaskService::DEFAULT_CHECK_REUSE,
            stats_concurrency: FailedTaskService::DEFAULT_STATS_CONCURRENCY,
            stats_cache_ttl: FailedTaskService::DEFAULT_STATS_CACHE_TTL,
            header_read_timeout: http.header_read_timeout,
            body_read_timeout: http.body_read_timeout,
            admin_token: None,
            read_token: None,
            max_body_bytes: http.max_body_bytes,
            max_header_bytes: http.max_header_bytes,
            max_connections: http.max_connections,
            idle_timeout: http.idle_timeout,
            write_stall_timeout: http.write_stall_timeout,
            max_response_bytes_in_flight: http.max_response_bytes_in_flight,
            max_connection_response_bytes: http.max_connection_response_bytes,
            h2_max_concurrent_streams: http.h2_max_concurrent_streams,
            h2_keep_alive_interval: http.h2_keep_alive_interval,
            h2_keep_alive_timeout: http.h2_keep_alive_timeout,
            page_size_default: http.page_limits.default_size().get(),
            page_size_max: http.page_limits.max(),
            retry_after_secs: http.retry_after_secs,
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Human,
            alert_spike_factor: alerts.spike_factor,
            alert_spike_min_count: alerts.spike_min_count,
            alert_spike_factor_critical: alerts.spike_factor_critical,
            alert_spike_min_count_critical: alerts.spike_min_count_critical,
            alert_category_max: alerts.category_max,
            alert_category_max_critical: alerts.category_max_critical,
            alert_error_code_max: alerts.error_code_max,
            alert_error_code_max_critical: alerts.error_code_max_critical,
            alert_failure_rate_max: alerts.failure_rate_max,
            alert_failure_rate_max_critical: alerts.failure_rate_max_critical,
            alert_failure_rate_min_attempts: alerts.failure_rate_min_attempts,
            retry_max_retries: retry.max_retries,
            retry_base_delay: retry.base_delay,
            retry_multiplier: retry.multiplier,
            retry_max_delay: retry.max_delay,
            retry_jitter: retry.jitter,
            retry_scheduler_interval: scheduler.interval,
            retry_scheduler_batch: scheduler.batch,
            retry_stream_key: redis.retry_stream_key,
            retry_stream_max_len: redis.retry_stream_max_len,
            retry_consumer_group: redis.retry_consumer_group,
            retry_consumer_lease: redis.retry_consumer_lease,
        }
    }
}

/// What each component is configured with: the settings mapped onto the components'
/// configuration types, field by field, in one place (`run` in `main.rs` only wires them).
impl Settings {
    /// The Redis store's configuration.
    pub fn redis_config(&self) -> RedisConfig {
        RedisConfig {
            url: self.redis_url.clone(),
            key_prefix: self.redis_key_prefix.clone(),
            command_timeout: self.redis_command_timeout,
            max_age: self.retention_max_age,
            max_count: self.retention_max_count,
            janitor_interval: self.janitor_interval,
            archive_dir: self.archive_dir.clone(),
            allow_eviction: self.redis_allow_eviction,
            retry_stream_key: self.retry_stream_key.clone(),
            retry_stream_max_len: self.retry_stream_max_len,
            retry_consumer_group: self.retry_consumer_group.clone(),
            retry_consumer_lease: self.retry_consumer_lease,
            shards: self.redis_shards,
            resharding_from: self.redis_resharding_from,
            ..RedisConfig::default()
        }
    }

    /// The memory store's configuration: the same retention as the Redis store's, and its
    /// retry queue capped like the Redis stream.
    pub fn memory_config(&self) -> MemoryConfig {
        MemoryConfig {
            retention: Retention {
                max_age: self.retention_max_age,
                max_count: self.retention_max_count,
                janitor_interval: self.janitor_interval,
            },
            retry_queue_cap: usize::try_from(self.retry_stream_max_len).unwrap_or(usize::MAX),
        }
    }

    /// The compat source's configuration.
    pub fn compat_config(&self) -> CompatConfig {
        CompatConfig {
            url: self.redis_url.clone(),
            key_prefix: self.compat_key_prefix.clone(),
            record_expiry: self.compat_record_expiry,
            command_timeout: self.redis_command_timeout,
            ..CompatConfig::default()
        }
    }

    /// The use cases' deadlines.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            health_check: self.health_timeout,
            request: self.request_timeout,
        }
    }

    /// The alert rules' thresholds.
    pub fn alert_thresholds(&self) -> AlertThresholds {
        AlertThresholds {
            spike_factor: self.alert_spike_factor,
            spike_factor_critical: self.alert_spike_factor_critical,
            spike_min_count: self.alert_spike_min_count,
            spike_min_count_critical: self.alert_spike_min_count_critical,
            category_max: self.alert_category_max,
            category_max_critical: self.alert_category_max_critical,
            category_max_overrides: Default::default(),
            error_code_max: self.alert_error_code_max,
            error_code_max_critical: self.alert_error_code_max_critical,
            failure_rate_max: self.alert_failure_rate_max,
            failure_rate_max_critical: self.alert_failure_rate_max_critical,
            failure_rate_min_attempts: self.alert_failure_rate_min_attempts,
        }
    }

    /// Which fail times are recorded: the clock-skew allowance, and the retention age where
    /// the store trims by age (the memory and the Redis store; not the compat source).
    pub fn fail_time_limits(&self) -> FailTimeLimits {
        FailTimeLimits {
            clock_skew: self.clock_skew_allowance,
            retention: (self.store != StoreKind::Compat).then_some(self.retention_max_age),
        }
    }

    /// The HTTP adapter's configuration (page limits were checked when the settings were
    /// loaded).
    pub fn http_config(&self) -> Result<HttpConfig, ConfigError> {
        let page_limits =
            PageLimits::new(self.page_size_default, self.page_size_max).map_err(|e| {
                ConfigError::Rule(format!("page_size_default/page_size_max: {}", e.reason))
            })?;
        let token = |t: &Option<Secret>| t.as_ref().and_then(|t| Token::new(t.expose()));
        Ok(HttpConfig {
            page_limits,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            admin_token: token(&self.admin_token),
            read_token: token(&self.read_token),
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            retry_after_secs: self.retry_after_secs,
            idle_timeout: self.idle_timeout,
            write_stall_timeout: self.write_stall_timeout,
            max_response_bytes_in_flight: self.max_response_bytes_in_flight,
            max_connection_response_bytes: self.max_connection_response_bytes,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_keep_alive_interval: self.h2_keep_alive_interval,
            h2_keep_alive_timeout: self.h2_keep_alive_timeout,
        })
    }
}

/// Why the settings could not be loaded. Messages name the key and where its value came
/// from, and never show the value of a secret (tokens, the Redis URL).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names no file.
    #[error("--config {0}: no such file")]
    NoFile(String),
    /// The file exists but cannot be read.
    #[error("--config {path}: cannot read it: {reason}")]
    Unreadable {
        /// The path as given.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML. The offending line is not shown: it may hold a secret.
    #[error("{path}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// The path as given.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the TOML parser expected, without the line's text.
        message: String,
    },
    /// One or more keys have bad values, or are unknown.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A rule between settings does not hold.
    #[error("{0}")]
    Rule(String),
}

/// Keys whose values are never shown, in messages or in `--print-config`.
const SECRET_KEYS: &[&str] = &["admin_token", "read_token", "redis_url"];

impl Settings {
    /// Load: defaults, then the file (if any), then `cli` (flags and env vars).
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let shown_path = cli.config.as_ref().map(|p| p.display().to_string());
        if let (Some(path), Some(shown)) = (&cli.config, &shown_path) {
            if !path.is_file() {
                return Err(ConfigError::NoFile(shown.clone()));
            }
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            // Parsed here first so that a syntax error is reported by position only: the
            // parser's own message quotes the line, which may be `admin_token = "…`.
            if let Err(e) = text.parse::<toml::Table>() {
                let at = e.span().map_or(0, |span| span.start).min(text.len());
                let before = &text[..at];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                return Err(ConfigError::Syntax {
                    path: shown.clone(),
                    line,
                    column,
                    message: e.message().to_owned(),
                });
            }
            figment = figment.merge(Toml::string(&text));
        }
        figment = figment.merge(Serialized::defaults(cli));
        let settings: Settings = figment.extract().map_err(|e| {
            ConfigError::Invalid(
                e.into_iter()
                    .map(|e| describe_error(&e, shown_path.as_deref()))
                    .collect(),
            )
        })?;
        settings.check().map_err(ConfigError::Rule)?;
        Ok(settings)
    }

    /// Rules between settings that no single type can state.
    fn check(&self) -> Result<(), String> {
        let max_shards = failed_tasks_redis::MAX_SHARDS;
        for (key, n) in [
            ("redis_shards", Some(self.redis_shards)),
            ("redis_resharding_from", self.redis_resharding_from),
        ] {
            if n.is_some_and(|n| n == 0 || n > max_shards) {
                return Err(format!("{key} must be between 1 and {max_shards}"));
            }
        }
        if self.page_size_default == 0 || self.page_size_default > self.page_size_max {
            return Err(format!(
                "page_size_default ({}) must be between 1 and page_size_max ({})",
                self.page_size_default, self.page_size_max
            ));
        }
        for (key, d) in [
            ("health_timeout", self.health_timeout),
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("redis_command_timeout", self.redis_command_timeout),
            ("janitor_interval", self.janitor_interval),
            ("idle_timeout", self.idle_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
            ("h2_keep_alive_timeout", self.h2_keep_alive_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        if !(self.alert_spike_factor.is_finite() && self.alert_spike_factor >= 1.0) {
            return Err("alert_spike_factor must be a number of at least 1".to_owned());
        }
        if !(self.alert_failure_rate_max.is_finite()
            && (0.0..=1.0).contains(&self.alert_failure_rate_max))
        {
            return Err("alert_failure_rate_max must be between 0 and 1".to_owned());
        }
        if !(self.alert_spike_factor_critical.is_finite()
            && self.alert_spike_factor_critical >= self.alert_spike_factor)
        {
            return Err(
                "alert_spike_factor_critical must be at least alert_spike_factor".to_owned(),
            );
        }
        if !(self.alert_failure_rate_max_critical.is_finite()
            && self.alert_failure_rate_max_critical <= 1.0
            && self.alert_failure_rate_max_critical >= self.alert_failure_rate_max)
        {
            return Err(
                "alert_failure_rate_max_critical must be between alert_failure_rate_max and 1"
                    .to_owned(),
            );
        }
        for (key, critical, warning) in [
            (
                "alert_spike_min_count_critical",
                self.alert_spike_min_count_critical,
                self.alert_spike_min_count,
            ),
            (
                "alert_category_max_critical",
                self.alert_category_max_critical,
                self.alert_category_max,
            ),
            (
                "alert_error_code_max_critical",
                self.alert_error_code_max_critical,
                self.alert_error_code_max,
            ),
        ] {
            if critical < warning {
                let warning_key = key.trim_end_matches("_critical");
                return Err(format!(
                    "{key} ({critical}) must be at least {warning_key} ({warning})"
                ));
            }
        }
        self.retry_policy()?;
        self.scheduler().validate()?;
        if self.retry_stream_max_len == 0 {
            return Err("retry_stream_max_len must be at least 1".to_owned());
        }
        if self.retry_consumer_lease.is_zero() {
            return Err("retry_consumer_lease must be greater than zero".to_owned());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".to_owned());
        }
        if self.stats_concurrency == 0 {
            return Err("stats_concurrency must be at least 1".to_owned());
        }
        for (key, n) in [
            (
                "max_response_bytes_in_flight",
                self.max_response_bytes_in_flight,
            ),
            (
                "max_connection_response_bytes",
                self.max_connection_response_bytes,
            ),
            (
                "h2_max_concurrent_streams",
                u64::from(self.h2_max_concurrent_streams),
            ),
        ] {
            if n == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The retry policy these settings describe (validated by the domain).
    pub fn retry_policy(&self) -> Result<failed_tasks_domain::RetryPolicy, String> {
        failed_tasks_domain::RetryPolicy::new(failed_tasks_domain::RetryConfig {
            max_retries: self.retry_max_retries,
            base_delay: self.retry_base_delay,
            multiplier: self.retry_multiplier,
            max_delay: self.retry_max_delay,
            jitter: self.retry_jitter,
            ..failed_tasks_domain::RetryConfig::default()
        })
        .map_err(|e| format!("retry_{}: {}", e.field, e.reason))
    }

    /// The retry scheduler's settings.
    pub fn scheduler(&self) -> failed_tasks_query::SchedulerConfig {
        failed_tasks_query::SchedulerConfig {
            interval: self.retry_scheduler_interval,
            batch: self.retry_scheduler_batch,
            ..failed_tasks_query::SchedulerConfig::default()
        }
    }

    /// The settings as TOML, with secrets and URL passwords redacted.
    pub fn to_redacted_toml(&self) -> Result<String, String> {
        let mut shown = self.clone();
        let redacted = || Some(Secret("<redacted>".to_owned()));
        if shown.admin_token.is_some() {
            shown.admin_token = redacted();
        }
        if shown.read_token.is_some() {
            shown.read_token = redacted();
        }
        shown.redis_url = redact_url(&shown.redis_url);
        toml::to_string(&shown).map_err(|e| format!("cannot print the configuration: {e}"))
    }
}

/// One figment error as `key (where it came from): problem`, with the value hidden for
/// secret keys and the path of the file as the user gave it.
fn describe_error(e: &figment::Error, file: Option<&str>) -> String {
    use figment::error::Kind;
    // Errors name keys within figment's profile ("default.listen"): show "listen".
    let key = e
        .path
        .iter()
        .skip_while(|p| p.as_str() == "default")
        .cloned()
        .collect::<Vec<_>>()
        .join(".");
    let from_file = e.metadata.as_ref().is_some_and(|m| m.name.contains("TOML"));
    let source = match (from_file, file) {
        (true, Some(path)) => format!("in {path}"),
        _ => "from a flag or environment variable".to_owned(),
    };
    let secret = SECRET_KEYS.contains(&key.as_str());
    let problem = match &e.kind {
        Kind::UnknownField(found, known) => {
            let near = known
                .iter()
                .map(|k| (strsim::jaro_winkler(found, k), *k))
                .filter(|(score, _)| *score > 0.85)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match near {
                Some((_, k)) => format!(" (did you mean {k}?)"),
                None => " (--print-config lists every key)".to_owned(),
            };
            return format!("unknown key {found} {source}{hint}");
        }
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) if secret => {
            format!("expected {expected}")
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {actual}")
        }
        Kind::UnknownVariant(found, known) if !secret => {
            format!("{found:?} is not one of {}", known.join(", "))
        }
        Kind::Message(_) | Kind::UnknownVariant(..) if secret => "invalid value".to_owned(),
        other => other.to_string(),
    };
    format!("{key} {source}: {problem}")
}

impl Cli {
    /// Parse the command line (and the environment). `--help` shows each setting's default
    /// as `Settings::default()` has it, so the two cannot disagree.
    pub fn parse_with_defaults() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let defaults = default_values();
        let command = Cli::command().mut_args(|arg| {
            let key = arg.get_id().as_str().to_owned();
            match (defaults.get(&key), arg.get_help()) {
                (Some(shown), Some(help)) => {
                    let help = format!("{help} [default: {shown}]");
                    arg.help(help)
                }
                _ => arg,
            }
        });
        let matches = command.get_matches();
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }
}

/// Every setting's default as `--print-config` spells it (strings unquoted), by key; unset
/// options are absent.
pub fn default_values() -> std::collections::BTreeMap<String, String> {
    let Ok(toml::Value::Table(table)) = toml::Value::try_from(Settings::default()) else {
        return Default::default();
    };
    table
        .into_iter()
        .map(|(key, value)| {
            let shown = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            (key, shown)
        })
        .collect()
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A maintenance command (`failed-tasks-server [settings] COMMAND`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Rewrite the Redis store's records of earlier layouts in the current one, in batches,
    /// printing progress (docs/operations.md): resumable, idempotent, safe while serving
    /// once every server runs this version
    Migrate {
        /// Index members per batch (1 to 10000)
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// With several shards (`redis_shards`), start at this shard (0-based): a stopped run
        /// prints where to resume
        #[arg(long, default_value_t = 0)]
        shard: u32,
        /// Resume after this position (in the first shard walked): the `next` a stopped run
        /// printed last
        #[arg(long)]
        after: Option<String>,
    },
    /// Move every task of the Redis store (`--redis-url`, `--redis-key-prefix`) from its
    /// shard among FROM shards to its shard among TO, in batches, printing progress.
    /// Resumable and idempotent (run it again after a stop); safe while servers serve with
    /// `redis_shards = TO` and `redis_resharding_from = FROM` (docs/operations.md)
    Reshard {
        /// The shard count the tasks are stored under now
        #[arg(long)]
        from: u32,
        /// The new shard count
        #[arg(long)]
        to: u32,
        /// Tasks moved per step (at most 1000)
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

/// Every setting is a flag, an environment variable and a key of the `--config` TOML file;
/// flags win over the environment, which wins over the file, which wins over the defaults
/// (`--print-config` shows the result).
#[derive(Debug, Parser, Serialize)]
#[command(name = "failed-tasks-server", version, about)]
pub struct Cli {
    /// TOML configuration file (keys as in `--print-config`; unknown keys are refused).
    #[arg(long, env = "FAILED_TASKS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,

    /// A maintenance command instead of serving (the settings before it apply).
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// Address to listen on
    #[arg(long, env = "FAILED_TASKS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// Where failed tasks are kept
    #[arg(long, env = "FAILED_TASKS_STORE", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreKind>,

    /// Redis URL: redis://, redis-sentinel://…?sentinelServiceName=…, redis-cluster://h:p?node=h:p
    /// (rediss:// is refused: no TLS in this build)
    #[arg(long, env = "FAILED_TASKS_REDIS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key; must hold exactly one hash tag (`{...}`) so all keys share
    /// one Redis Cluster slot
    #[arg(long, env = "FAILED_TASKS_REDIS_KEY_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_key_prefix: Option<String>,

    /// The longest a single Redis command may take
    #[arg(long, env = "FAILED_TASKS_REDIS_COMMAND_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub redis_command_timeout: Option<Duration>,

    /// Serve even when Redis's maxmemory-policy is not noeviction (an evicting Redis loses
    /// failed tasks silently; without this the server refuses to start on one and stops
    /// serving when it finds one after a reconnection)
    #[arg(long, env = "FAILED_TASKS_REDIS_ALLOW_EVICTION", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_allow_eviction: Option<bool>,

    /// Shards of the Redis store (1-1024): on a Redis Cluster, each shard's keys share one
    /// hash tag of their own (`{failed-tasks:3.20}`), so the data and the writes spread over
    /// the masters; 1 is one hash tag, `redis_key_prefix` itself. Changing it needs
    /// `reshard` (docs/operations.md)
    #[arg(long, env = "FAILED_TASKS_REDIS_SHARDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_shards: Option<u32>,

    /// While `reshard` moves tasks to `redis_shards` shards: the shard count they move away
    /// from (reads see both, writes go to the new shards)
    #[arg(long, env = "FAILED_TASKS_REDIS_RESHARDING_FROM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_resharding_from: Option<u32>,

    /// Retention: failed tasks older than this are trimmed (memory and Redis stores)
    #[arg(long, env = "FAILED_TASKS_RETENTION_MAX_AGE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retention_max_age: Option<Duration>,

    /// Retention: at most this many failed tasks are kept (memory and Redis stores)
    #[arg(long, env = "FAILED_TASKS_RETENTION_MAX_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_count: Option<u64>,

    /// How often the retention janitor runs (memory and Redis stores)
    #[arg(long, env = "FAILED_TASKS_JANITOR_INTERVAL", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub janitor_interval: Option<Duration>,

    /// Directory where trimmed tasks are archived as JSON lines, one file per UTC day
    /// (Redis store). Unset: trimmed tasks are dropped.
    #[arg(long, env = "FAILED_TASKS_ARCHIVE_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,

    /// A recorded FailTime further ahead of this server's clock than this is refused (400)
    #[arg(long, env = "FAILED_TASKS_CLOCK_SKEW_ALLOWANCE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub clock_skew_allowance: Option<Duration>,

    /// Key prefix of the original Go service's records (compat store)
    #[arg(long, env = "FAILED_TASKS_COMPAT_KEY_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat_key_prefix: Option<String>,

    /// Expiry the Go service sets on its records, to estimate fail times (compat store)
    #[arg(long, env = "FAILED_TASKS_COMPAT_RECORD_EXPIRY", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub compat_record_expiry: Option<Duration>,

    /// Record the source document's three example tasks at start.
    #[arg(long, env = "FAILED_TASKS_DEMO", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<bool>,

    /// Deadline of the store connection check
    #[arg(long, env = "FAILED_TASKS_HEALTH_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub health_timeout: Option<Duration>,

    /// Deadline of a whole request, connection check included
    #[arg(long, env = "FAILED_TASKS_REQUEST_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub request_timeout: Option<Duration>,

    /// A good answer from the store stands in for the connection check of requests this soon
    /// after it; 0 checks before every request
    #[arg(long, env = "FAILED_TASKS_CONNECTION_CHECK_REUSE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub connection_check_reuse: Option<Duration>,

    /// Statistics requests computed at once; the others wait their turn within the request
    /// deadline (each is bounded in work and memory by its window)
    #[arg(long, env = "FAILED_TASKS_STATS_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_concurrency: Option<usize>,

    /// A statistics answer is shared with callers of the same window this long; 0 computes
    /// every request (a write through this server ends a shared answer at once)
    #[arg(long, env = "FAILED_TASKS_STATS_CACHE_TTL", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub stats_cache_ttl: Option<Duration>,

    /// How long a client may take to send a complete request head
    #[arg(long, env = "FAILED_TASKS_HEADER_READ_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub header_read_timeout: Option<Duration>,

    /// How long a client may take to send a request body
    #[arg(long, env = "FAILED_TASKS_BODY_READ_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub body_read_timeout: Option<Duration>,

    /// Bearer token of the admin routes (recording, removal). Unset: they answer 403.
    #[arg(long, env = "FAILED_TASKS_ADMIN_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,

    /// Bearer token the read routes require, when set (the admin token is accepted too).
    #[arg(long, env = "FAILED_TASKS_READ_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_token: Option<Secret>,

    /// Largest accepted request body in bytes, 413 beyond
    #[arg(long, env = "FAILED_TASKS_MAX_BODY_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,

    /// Largest accepted request head in bytes, 431 beyond
    #[arg(long, env = "FAILED_TASKS_MAX_HEADER_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,

    /// Most connections served at once
    #[arg(long, env = "FAILED_TASKS_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,

    /// A connection with no request in flight this long is closed (HTTP/2 with a GOAWAY)
    #[arg(long, env = "FAILED_TASKS_IDLE_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub idle_timeout: Option<Duration>,

    /// A response whose client takes none of it this long is dropped with its connection
    #[arg(long, env = "FAILED_TASKS_WRITE_STALL_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub write_stall_timeout: Option<Duration>,

    /// Response bytes held for all clients at once; a larger answer that does not fit gets 503
    #[arg(long, env = "FAILED_TASKS_MAX_RESPONSE_BYTES_IN_FLIGHT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_bytes_in_flight: Option<u64>,

    /// Response bytes held for one connection at once
    #[arg(long, env = "FAILED_TASKS_MAX_CONNECTION_RESPONSE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_response_bytes: Option<u64>,

    /// Most concurrent HTTP/2 streams per connection
    #[arg(long, env = "FAILED_TASKS_H2_MAX_CONCURRENT_STREAMS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_max_concurrent_streams: Option<u32>,

    /// Interval of HTTP/2 keep-alive pings; 0s sends none
    #[arg(long, env = "FAILED_TASKS_H2_KEEP_ALIVE_INTERVAL", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub h2_keep_alive_interval: Option<Duration>,

    /// An HTTP/2 connection whose keep-alive ping is not answered this soon is closed
    #[arg(long, env = "FAILED_TASKS_H2_KEEP_ALIVE_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub h2_keep_alive_timeout: Option<Duration>,

    /// Page size when a request names none
    #[arg(long, env = "FAILED_TASKS_PAGE_SIZE_DEFAULT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size_default: Option<u32>,

    /// Largest page size a request may ask for
    #[arg(long, env = "FAILED_TASKS_PAGE_SIZE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size_max: Option<u32>,

    /// `Retry-After` seconds sent with 503 answers
    #[arg(long, env = "FAILED_TASKS_RETRY_AFTER_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u32>,

    /// How long shutdown waits for in-flight requests
    #[arg(long, env = "FAILED_TASKS_SHUTDOWN_GRACE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub shutdown_grace: Option<Duration>,

    /// Log line format
    #[arg(long, env = "FAILED_TASKS_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Alert sudden_increase: last 5 minutes above this many times the window's average per
    /// 5 minutes
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_FACTOR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_factor: Option<f64>,

    /// Alert sudden_increase: and at least this many failures
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_MIN_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_min_count: Option<u64>,

    /// Alert sudden_increase is critical above this many times the average
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_FACTOR_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_factor_critical: Option<f64>,

    /// Alert sudden_increase: and critical with at least this many failures
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_MIN_COUNT_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_min_count_critical: Option<u64>,

    /// Alert category_threshold: failures of one category in the window above this
    #[arg(long, env = "FAILED_TASKS_ALERT_CATEGORY_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_category_max: Option<u64>,

    /// Alert category_threshold is critical above this many
    #[arg(long, env = "FAILED_TASKS_ALERT_CATEGORY_MAX_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_category_max_critical: Option<u64>,

    /// Alert error_code_threshold: failures of one error code in the window above this
    #[arg(long, env = "FAILED_TASKS_ALERT_ERROR_CODE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_error_code_max: Option<u64>,

    /// Alert error_code_threshold is critical above this many
    #[arg(long, env = "FAILED_TASKS_ALERT_ERROR_CODE_MAX_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_error_code_max_critical: Option<u64>,

    /// Alert failure_rate: failures / reported attempts above this fraction
    #[arg(long, env = "FAILED_TASKS_ALERT_FAILURE_RATE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_failure_rate_max: Option<f64>,

    /// Alert failure_rate is critical above this fraction
    #[arg(long, env = "FAILED_TASKS_ALERT_FAILURE_RATE_MAX_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_failure_rate_max_critical: Option<f64>,

    /// Alert failure_rate: only once this many attempts were reported in the window
    #[arg(long, env = "FAILED_TASKS_ALERT_FAILURE_RATE_MIN_ATTEMPTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_failure_rate_min_attempts: Option<u64>,

    /// Retry policy: retries before a failure is final (FinalFailure)
    #[arg(long, env = "FAILED_TASKS_RETRY_MAX_RETRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_retries: Option<u32>,

    /// Retry policy: the first backoff delay
    #[arg(long, env = "FAILED_TASKS_RETRY_BASE_DELAY", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retry_base_delay: Option<Duration>,

    /// Retry policy: each further delay is this many times the previous one
    #[arg(long, env = "FAILED_TASKS_RETRY_MULTIPLIER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_multiplier: Option<f64>,

    /// Retry policy: no delay is longer than this
    #[arg(long, env = "FAILED_TASKS_RETRY_MAX_DELAY", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retry_max_delay: Option<Duration>,

    /// Retry policy: delays vary by up to this fraction either way
    #[arg(long, env = "FAILED_TASKS_RETRY_JITTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_jitter: Option<f64>,

    /// Retry scheduler: time between its steps, each moving the due retries to the workers
    #[arg(long, env = "FAILED_TASKS_RETRY_SCHEDULER_INTERVAL", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retry_scheduler_interval: Option<Duration>,

    /// Retry scheduler: retries moved per store call (1 to 10000)
    #[arg(long, env = "FAILED_TASKS_RETRY_SCHEDULER_BATCH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_scheduler_batch: Option<usize>,

    /// Redis key of the retry request stream workers read; must hold the key prefix's hash
    /// tag. Unset: {redis_key_prefix}:retries
    #[arg(long, env = "FAILED_TASKS_RETRY_STREAM_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_stream_key: Option<String>,

    /// About how many requests the retry stream (or the memory store's queue) keeps; older
    /// ones are trimmed, read or not
    #[arg(long, env = "FAILED_TASKS_RETRY_STREAM_MAX_LEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_stream_max_len: Option<u64>,

    /// Consumer group of the embedders' retry workers (Redis store; for the pending gauge)
    #[arg(long, env = "FAILED_TASKS_RETRY_CONSUMER_GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_consumer_group: Option<String>,

    /// How long a worker may hold a retry request unacknowledged before another may reclaim
    /// it (Redis store)
    #[arg(long, env = "FAILED_TASKS_RETRY_CONSUMER_LEASE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retry_consumer_lease: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings' defaults are the components' own: mapped back onto each component's
    /// configuration, they give exactly its `Default`.
    #[test]
    fn default_settings_configure_every_component_with_its_own_defaults() {
        let s = Settings::default();
        assert_eq!(s.redis_config(), RedisConfig::default());
        assert_eq!(s.compat_config(), CompatConfig::default());
        assert_eq!(s.deadlines(), Deadlines::default());
        assert_eq!(s.alert_thresholds(), AlertThresholds::default());
        assert_eq!(
            FailTimeLimits {
                retention: None,
                ..s.fail_time_limits()
            },
            FailTimeLimits::default()
        );
        let http = s.http_config().unwrap();
        let want = HttpConfig::default();
        assert_eq!(format!("{http:?}"), format!("{want:?}"));
        let retry = s.retry_policy().unwrap();
        assert_eq!(
            format!("{retry:?}"),
            format!(
                "{:?}",
                failed_tasks_domain::RetryPolicy::new(RetryConfig::default()).unwrap()
            )
        );
    }

    #[test]
    fn defaults_survive_a_round_trip_through_toml() {
        let text = toml::to_string(&Settings::default()).unwrap();
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back, Settings::default());
    }
}
