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
}

impl Default for Settings {
    fn default() -> Self {
        // The alert thresholds' defaults are the domain's, written once there.
        let alerts = AlertThresholds::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_key_prefix: "{failed-tasks}".to_owned(),
            redis_command_timeout: Duration::from_secs(2),
            retention_max_age: Duration::from_secs(30 * 24 * 3600),
            retention_max_count: 1_000_000,
            janitor_interval: Duration::from_secs(60),
            archive_dir: None,
            compat_key_prefix: "request:id:".to_owned(),
            compat_record_expiry: Duration::from_secs(24 * 3600),
            demo: false,
            health_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            connection_check_reuse: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            admin_token: None,
            read_token: None,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            page_size_default: 100,
            page_size_max: 1000,
            retry_after_secs: 5,
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
            retry_max_retries: 3,
            retry_base_delay: Duration::from_secs(1),
            retry_multiplier: 2.0,
            retry_max_delay: Duration::from_secs(300),
            retry_jitter: 0.2,
        }
    }
}

impl Settings {
    /// Load: defaults, then the file (if any), then `cli` (flags and env vars).
    pub fn load(cli: &Cli) -> Result<Settings, String> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &cli.config {
            if !path.is_file() {
                return Err(format!("--config {}: no such file", path.display()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Serialized::defaults(cli));
        let settings: Settings = figment.extract().map_err(|e| {
            e.into_iter()
                // figment names keys within its profile ("default.listen"); show "listen".
                .map(|e| e.to_string().replace("for key \"default.", "for key \""))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// Rules between settings that no single type can state.
    fn check(&self) -> Result<(), String> {
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
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The alert rules' thresholds these settings describe.
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

/// A Redis URL with any password replaced, for logs and `--print-config`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<redacted>@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Serve the failed tasks of a codebase-embedder deployment over HTTP.
///
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

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FAILED_TASKS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// Where failed tasks are kept [default: memory].
    #[arg(long, env = "FAILED_TASKS_STORE", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreKind>,

    /// Redis URL: redis://, redis-sentinel://…?sentinelServiceName=…, redis-cluster://h:p?node=h:p
    /// (rediss:// is refused: no TLS in this build) [default: redis://127.0.0.1:6379].
    #[arg(long, env = "FAILED_TASKS_REDIS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key; must hold exactly one hash tag (`{...}`) so all keys share
    /// one Redis Cluster slot [default: {failed-tasks}].
    #[arg(long, env = "FAILED_TASKS_REDIS_KEY_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_key_prefix: Option<String>,

    /// The longest a single Redis command may take [default: 2s].
    #[arg(long, env = "FAILED_TASKS_REDIS_COMMAND_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub redis_command_timeout: Option<Duration>,

    /// Retention: failed tasks older than this are trimmed (Redis store) [default: 30days].
    #[arg(long, env = "FAILED_TASKS_RETENTION_MAX_AGE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retention_max_age: Option<Duration>,

    /// Retention: at most this many failed tasks are kept (Redis store) [default: 1000000].
    #[arg(long, env = "FAILED_TASKS_RETENTION_MAX_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_count: Option<u64>,

    /// How often the retention janitor runs (Redis store) [default: 60s].
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

    /// Key prefix of the original Go service's records (compat store) [default: request:id:].
    #[arg(long, env = "FAILED_TASKS_COMPAT_KEY_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat_key_prefix: Option<String>,

    /// Expiry the Go service sets on its records, to estimate fail times (compat store) [default: 24h].
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

    /// Deadline of the store connection check [default: 5s].
    #[arg(long, env = "FAILED_TASKS_HEALTH_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub health_timeout: Option<Duration>,

    /// Deadline of a whole request, connection check included [default: 10s].
    #[arg(long, env = "FAILED_TASKS_REQUEST_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub request_timeout: Option<Duration>,

    /// A good answer from the store stands in for the connection check of requests this soon
    /// after it; 0 checks before every request [default: 1s].
    #[arg(long, env = "FAILED_TASKS_CONNECTION_CHECK_REUSE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub connection_check_reuse: Option<Duration>,

    /// How long a client may take to send a complete request head [default: 10s].
    #[arg(long, env = "FAILED_TASKS_HEADER_READ_TIMEOUT", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub header_read_timeout: Option<Duration>,

    /// How long a client may take to send a request body [default: 10s].
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

    /// Largest accepted request body in bytes, 413 beyond [default: 1048576].
    #[arg(long, env = "FAILED_TASKS_MAX_BODY_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,

    /// Largest accepted request head in bytes, 431 beyond [default: 16384].
    #[arg(long, env = "FAILED_TASKS_MAX_HEADER_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,

    /// Most connections served at once [default: 4096].
    #[arg(long, env = "FAILED_TASKS_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,

    /// Page size when a request names none [default: 100].
    #[arg(long, env = "FAILED_TASKS_PAGE_SIZE_DEFAULT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size_default: Option<u32>,

    /// Largest page size a request may ask for [default: 1000].
    #[arg(long, env = "FAILED_TASKS_PAGE_SIZE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size_max: Option<u32>,

    /// `Retry-After` seconds sent with 503 answers [default: 5].
    #[arg(long, env = "FAILED_TASKS_RETRY_AFTER_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u32>,

    /// How long shutdown waits for in-flight requests [default: 10s].
    #[arg(long, env = "FAILED_TASKS_SHUTDOWN_GRACE", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub shutdown_grace: Option<Duration>,

    /// Log line format [default: human].
    #[arg(long, env = "FAILED_TASKS_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Alert sudden_increase: last 5 minutes above this many times the window's average per
    /// 5 minutes [default: 3].
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_FACTOR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_factor: Option<f64>,

    /// Alert sudden_increase: and at least this many failures [default: 10].
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_MIN_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_min_count: Option<u64>,

    /// Alert sudden_increase is critical above this many times the average [default: 10].
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_FACTOR_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_factor_critical: Option<f64>,

    /// Alert sudden_increase: and critical with at least this many failures [default: 50].
    #[arg(long, env = "FAILED_TASKS_ALERT_SPIKE_MIN_COUNT_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_spike_min_count_critical: Option<u64>,

    /// Alert category_threshold: failures of one category in the window above this [default: 100].
    #[arg(long, env = "FAILED_TASKS_ALERT_CATEGORY_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_category_max: Option<u64>,

    /// Alert category_threshold is critical above this many [default: 500].
    #[arg(long, env = "FAILED_TASKS_ALERT_CATEGORY_MAX_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_category_max_critical: Option<u64>,

    /// Alert error_code_threshold: failures of one error code in the window above this [default: 50].
    #[arg(long, env = "FAILED_TASKS_ALERT_ERROR_CODE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_error_code_max: Option<u64>,

    /// Alert error_code_threshold is critical above this many [default: 250].
    #[arg(long, env = "FAILED_TASKS_ALERT_ERROR_CODE_MAX_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_error_code_max_critical: Option<u64>,

    /// Alert failure_rate: failures / reported attempts above this fraction [default: 0.2].
    #[arg(long, env = "FAILED_TASKS_ALERT_FAILURE_RATE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_failure_rate_max: Option<f64>,

    /// Alert failure_rate is critical above this fraction [default: 0.5].
    #[arg(long, env = "FAILED_TASKS_ALERT_FAILURE_RATE_MAX_CRITICAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_failure_rate_max_critical: Option<f64>,

    /// Alert failure_rate: only once this many attempts were reported in the window [default: 20].
    #[arg(long, env = "FAILED_TASKS_ALERT_FAILURE_RATE_MIN_ATTEMPTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_failure_rate_min_attempts: Option<u64>,

    /// Retry policy: retries before a failure is final (FinalFailure) [default: 3].
    #[arg(long, env = "FAILED_TASKS_RETRY_MAX_RETRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_retries: Option<u32>,

    /// Retry policy: the first backoff delay [default: 1s].
    #[arg(long, env = "FAILED_TASKS_RETRY_BASE_DELAY", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retry_base_delay: Option<Duration>,

    /// Retry policy: each further delay is this many times the previous one [default: 2].
    #[arg(long, env = "FAILED_TASKS_RETRY_MULTIPLIER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_multiplier: Option<f64>,

    /// Retry policy: no delay is longer than this [default: 5m].
    #[arg(long, env = "FAILED_TASKS_RETRY_MAX_DELAY", value_parser = duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub retry_max_delay: Option<Duration>,

    /// Retry policy: delays vary by up to this fraction either way [default: 0.2].
    #[arg(long, env = "FAILED_TASKS_RETRY_JITTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_jitter: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_survive_a_round_trip_through_toml() {
        let text = toml::to_string(&Settings::default()).unwrap();
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back, Settings::default());
    }

    #[test]
    fn urls_lose_their_passwords_when_shown() {
        assert_eq!(
            redact_url("redis://:pw@host:6379/0"),
            "redis://<redacted>@host:6379/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }
}
