//! Settings: built-in defaults < a TOML file < environment variables < flags.
//!
//! [`Settings`] is made of the components' own configurations (`RedisConfig`,
//! `ServiceConfig`, `HttpConfig`, …), so each default is written once, in the owning
//! component's `Default`; only the server's own settings (where to listen, which store,
//! logging, the drain, `--demo`) have theirs here. [`settings::SETTINGS`] declares each
//! setting once (key, help, field); the flag, the environment variable, the TOML key,
//! `--help` and `--print-config` follow from it ([`field`]). clap reads the flags and the
//! variables (a flag wins over its variable); they override the file, which overrides the
//! defaults. Unknown keys and bad values are refused naming the key and where the value came
//! from, never showing a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use failed_tasks::redis::{CompatConfig, RedisConfig, MAX_SHARDS};
use failed_tasks::{
    FailedTasks, FailedTasksBuilder, MemoryConfig, NotifyConfig, PageLimits, RetryPolicy,
    SchedulerConfig, ServiceConfig,
};
use failed_tasks_http::HttpConfig;

mod field;
mod notify_targets;
mod settings;
mod tokens;

pub use settings::SETTINGS;

/// Where failed tasks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In process memory: the embedded default; nothing survives a restart.
    Memory,
    /// The indexed Redis store.
    Redis,
    /// Read-only view of the original Go service's `request:id:*` records in Redis.
    Compat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The effective settings of the server: the components' configurations, and the server's
/// own settings. Every setting is in [`SETTINGS`], which says which field it sets.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where failed tasks are kept.
    pub store: StoreKind,
    /// Record the three example tasks at start.
    pub demo: bool,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// The Redis store. The other stores take from it what they share with it: the compat
    /// source its URL and command timeout, the memory store its retention and the cap of
    /// its retry queue (`retry_stream_max_len`).
    pub redis: RedisConfig,
    /// The compat source's own settings.
    pub compat: CompatConfig,
    /// The use cases: deadlines, statistics, alerts, retry policy, clock skew.
    pub service: ServiceConfig,
    /// The retry scheduler.
    pub scheduler: SchedulerConfig,
    /// The HTTP adapter (its page limits come from the two settings below).
    pub http: HttpConfig,
    /// Page size when a request names none (`HttpConfig::page_limits`, validated with
    /// the maximum once both are read).
    pub page_size_default: u32,
    /// Largest page size a request may ask for.
    pub page_size_max: u32,
    /// Notifications: the targets (`[[notify_targets]]` of the file, `notify_url`) and how
    /// the notifier runs.
    pub notify: NotifyConfig,
}

impl Default for Settings {
    fn default() -> Self {
        let http = HttpConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreKind::Memory,
            demo: false,
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Human,
            redis: RedisConfig::default(),
            compat: CompatConfig::default(),
            service: ServiceConfig::default(),
            scheduler: SchedulerConfig::default(),
            page_size_default: http.page_limits.default_size().get(),
            page_size_max: http.page_limits.max(),
            http,
            notify: NotifyConfig::default(),
        }
    }
}

/// What each component is built with: the one place where a setting shared by several
/// stores is handed to each.
impl Settings {
    /// The service as every embedder builds it, with the chosen store.
    pub fn builder(&self) -> FailedTasksBuilder {
        let builder = FailedTasks::builder()
            .service(self.service.clone())
            .scheduler(self.scheduler)
            .notify(self.notify.clone());
        match self.store {
            StoreKind::Memory => builder.memory(self.memory_config()),
            StoreKind::Redis => builder.redis(self.redis.clone()),
            StoreKind::Compat => builder.compat(self.compat_config()),
        }
    }

    /// The memory store's configuration: the same retention as the Redis store's, and its
    /// retry queue capped like the Redis stream.
    pub fn memory_config(&self) -> MemoryConfig {
        MemoryConfig {
            retention: self.redis.retention,
            retry_queue_cap: usize::try_from(self.redis.retry_stream_max_len).unwrap_or(usize::MAX),
        }
    }

    /// The compat source's configuration, on the Redis of `redis_url`.
    pub fn compat_config(&self) -> CompatConfig {
        CompatConfig {
            url: self.redis.url.clone(),
            command_timeout: self.redis.command_timeout,
            ..self.compat.clone()
        }
    }

    /// The HTTP adapter's configuration (the page limits were checked when the settings
    /// were loaded).
    pub fn http_config(&self) -> Result<HttpConfig, ConfigError> {
        let page_limits =
            PageLimits::new(self.page_size_default, self.page_size_max).map_err(|e| {
                ConfigError::Rule(format!("page_size_default/page_size_max: {}", e.reason))
            })?;
        Ok(HttpConfig {
            page_limits,
            ..self.http.clone()
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

impl Settings {
    /// Load: defaults, then the file `config` (if any), then the flags and environment
    /// variables clap found in `matches`.
    pub fn load(config: Option<&Path>, matches: &ArgMatches) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = config {
            settings.take_file(path)?;
        }
        for setting in SETTINGS {
            setting.take_matched(&mut settings, matches);
        }
        settings.check().map_err(ConfigError::Rule)?;
        Ok(settings)
    }

    /// Take every key of the TOML file at `path`; every unknown key and bad value is
    /// reported, none with its value.
    fn take_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(ConfigError::NoFile(shown));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        // Reported by position only: the parser's own message quotes the line, which may
        // be `admin_token = "…`.
        let table = text.parse::<toml::Table>().map_err(|e| {
            let at = e.span().map_or(0, |span| span.start).min(text.len());
            let before = &text[..at];
            ConfigError::Syntax {
                path: shown.clone(),
                line: before.matches('\n').count() + 1,
                column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
                message: e.message().to_owned(),
            }
        })?;
        let mut problems = Vec::new();
        for (key, value) in &table {
            if key == tokens::KEY {
                match tokens::read(value, &shown) {
                    Ok(tokens) => self.http.tokens = tokens,
                    Err(more) => problems.extend(more),
                }
                continue;
            }
            if key == notify_targets::KEY {
                match notify_targets::read(value, &shown) {
                    Ok(targets) => self.notify.targets = targets,
                    Err(more) => problems.extend(more),
                }
                continue;
            }
            match SETTINGS.iter().find(|s| s.key() == key) {
                Some(setting) => {
                    if let Err(problem) = setting.take_toml(self, value) {
                        problems.push(format!("{key} in {shown}: {problem}"));
                    }
                }
                None => problems.push(format!("unknown key {key} in {shown}{}", near(key))),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Rules between settings that no single type can state.
    fn check(&self) -> Result<(), String> {
        let max_shards = MAX_SHARDS;
        for (key, n) in [
            ("redis_shards", Some(self.redis.shards)),
            ("redis_resharding_from", self.redis.resharding_from),
        ] {
            if n.is_some_and(|n| n == 0 || n > max_shards) {
                return Err(format!("{key} must be between 1 and {max_shards}"));
            }
        }
        failed_tasks_http::check_tokens(&self.http).map_err(|e| format!("tokens: {e}"))?;
        if self.page_size_default == 0 || self.page_size_default > self.page_size_max {
            return Err(format!(
                "page_size_default ({}) must be between 1 and page_size_max ({})",
                self.page_size_default, self.page_size_max
            ));
        }
        for (key, d) in [
            ("health_timeout", self.service.deadlines.health_check),
            ("request_timeout", self.service.deadlines.request),
            ("header_read_timeout", self.http.header_read_timeout),
            ("body_read_timeout", self.http.body_read_timeout),
            ("redis_command_timeout", self.redis.command_timeout),
            ("janitor_interval", self.redis.retention.janitor_interval),
            ("idle_timeout", self.http.idle_timeout),
            ("write_stall_timeout", self.http.write_stall_timeout),
            ("h2_keep_alive_timeout", self.http.h2_keep_alive_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        if !(self.service.alert_thresholds.spike_factor.is_finite()
            && self.service.alert_thresholds.spike_factor >= 1.0)
        {
            return Err("alert_spike_factor must be a number of at least 1".to_owned());
        }
        if !(self.service.alert_thresholds.failure_rate_max.is_finite()
            && (0.0..=1.0).contains(&self.service.alert_thresholds.failure_rate_max))
        {
            return Err("alert_failure_rate_max must be between 0 and 1".to_owned());
        }
        if !(self
            .service
            .alert_thresholds
            .spike_factor_critical
            .is_finite()
            && self.service.alert_thresholds.spike_factor_critical
                >= self.service.alert_thresholds.spike_factor)
        {
            return Err(
                "alert_spike_factor_critical must be at least alert_spike_factor".to_owned(),
            );
        }
        if !(self
            .service
            .alert_thresholds
            .failure_rate_max_critical
            .is_finite()
            && self.service.alert_thresholds.failure_rate_max_critical <= 1.0
            && self.service.alert_thresholds.failure_rate_max_critical
                >= self.service.alert_thresholds.failure_rate_max)
        {
            return Err(
                "alert_failure_rate_max_critical must be between alert_failure_rate_max and 1"
                    .to_owned(),
            );
        }
        for (key, critical, warning) in [
            (
                "alert_spike_min_count_critical",
                self.service.alert_thresholds.spike_min_count_critical,
                self.service.alert_thresholds.spike_min_count,
            ),
            (
                "alert_category_max_critical",
                self.service.alert_thresholds.category_max_critical,
                self.service.alert_thresholds.category_max,
            ),
            (
                "alert_error_code_max_critical",
                self.service.alert_thresholds.error_code_max_critical,
                self.service.alert_thresholds.error_code_max,
            ),
        ] {
            if critical < warning {
                let warning_key = key.trim_end_matches("_critical");
                return Err(format!(
                    "{key} ({critical}) must be at least {warning_key} ({warning})"
                ));
            }
        }
        RetryPolicy::new(self.service.retry.clone())
            .map_err(|e| format!("retry_{}: {}", e.field, e.reason))?;
        self.scheduler.validate()?;
        if self.redis.retry_stream_max_len == 0 {
            return Err("retry_stream_max_len must be at least 1".to_owned());
        }
        if self.redis.retry_consumer_lease.is_zero() {
            return Err("retry_consumer_lease must be greater than zero".to_owned());
        }
        if self.http.max_connections == 0 {
            return Err("max_connections must be at least 1".to_owned());
        }
        self.notify.check().map_err(|e| e.to_string())?;
        if self.service.stats_concurrency == 0 {
            return Err("stats_concurrency must be at least 1".to_owned());
        }
        for (key, n) in [
            (
                "max_response_bytes_in_flight",
                self.http.max_response_bytes_in_flight,
            ),
            (
                "max_connection_response_bytes",
                self.http.max_connection_response_bytes,
            ),
            (
                "h2_max_concurrent_streams",
                u64::from(self.http.h2_max_concurrent_streams),
            ),
        ] {
            if n == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The settings as TOML, one `key = value` line per setting in [`SETTINGS`]' order,
    /// with secrets and URL passwords redacted; unset settings are left out. The file's
    /// notification targets follow as a comment with their names only (their URLs and
    /// secrets are not shown).
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        let mut out: String = SETTINGS
            .iter()
            .filter_map(|s| Some(format!("{} = {}\n", s.key(), s.shown(&mut shown)?)))
            .collect();
        if !self.http.tokens.is_empty() {
            let names: Vec<String> = self
                .http
                .tokens
                .iter()
                .map(|t| match t.client() {
                    Some(client) => format!("{} ({}, client {client})", t.name(), t.role()),
                    None => format!("{} ({})", t.name(), t.role()),
                })
                .collect();
            out.push_str(&format!(
                "# [[{}]] (secrets not shown): {}\n",
                tokens::KEY,
                names.join(", ")
            ));
        }
        if !self.notify.targets.is_empty() {
            let names: Vec<String> = self.notify.targets.iter().map(|t| t.name.clone()).collect();
            out.push_str(&format!(
                "# [[{}]] (URLs and secrets not shown): {}\n",
                notify_targets::KEY,
                names.join(", ")
            ));
        }
        out
    }
}

/// ` (did you mean KEY?)` for the known key nearest to an unknown one, if any is near.
fn near(unknown: &str) -> String {
    let nearest = SETTINGS
        .iter()
        .map(|s| (strsim::jaro_winkler(unknown, s.key()), s.key()))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, key)) => format!(" (did you mean {key}?)"),
        None => " (--print-config lists every key)".to_owned(),
    }
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

/// The command line beyond the settings: the configuration file, `--print-config` and the
/// maintenance commands. The settings are added from [`SETTINGS`] by [`Cli::parse_all`].
#[derive(Debug, Parser)]
#[command(name = "failed-tasks-server", version, about)]
pub struct Cli {
    /// TOML configuration file (keys as in `--print-config`; unknown keys are refused).
    #[arg(long, env = "FAILED_TASKS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// A maintenance command instead of serving (the settings before it apply).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The whole command: these arguments, then every setting of [`SETTINGS`] with its
    /// default in its help.
    pub fn command_with_settings() -> clap::Command {
        let mut defaults = Settings::default();
        let settings: Vec<clap::Arg> = SETTINGS.iter().map(|s| s.arg(&mut defaults)).collect();
        Cli::command().args(settings)
    }

    /// Parse the command line and the environment (exits with the usage error, or the help,
    /// as clap does), and load the settings they and the file give.
    pub fn parse_all() -> (Cli, Result<Settings, ConfigError>) {
        let matches = Self::command_with_settings().get_matches();
        let cli = match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        let settings = Settings::load(cli.config.as_deref(), &matches);
        (cli, settings)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

    use super::*;

    /// Each key once, in snake case, so that its flag and variable are its own.
    #[test]
    fn every_key_is_declared_once_in_snake_case() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key()).collect();
        assert!(keys.iter().all(|k| k
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key is declared twice");
    }

    /// What `--print-config` prints reads back as the same settings: each setting's TOML
    /// form and its reading agree (the tokens, never printed, aside).
    #[test]
    fn printed_settings_read_back_the_same() {
        let mut s = Settings::default();
        s.redis.archive_dir = Some(PathBuf::from("/var/archive"));
        s.redis.resharding_from = Some(4);
        s.service.alert_thresholds.spike_factor = 4.5;
        s.store = StoreKind::Compat;
        let printed = s.to_redacted_toml();
        let table: toml::Table = printed.parse().unwrap();
        let mut back = Settings::default();
        for (key, value) in &table {
            let setting = SETTINGS.iter().find(|x| x.key() == key).unwrap();
            setting.take_toml(&mut back, value).unwrap();
        }
        assert_eq!(back.to_redacted_toml(), printed);
        assert!(
            printed.contains("archive_dir = \"/var/archive\"\n"),
            "{printed}"
        );
    }

    /// Each setting sets a field of its own: writing one setting changes what exactly that
    /// key prints (checked with a value of each type's own).
    #[test]
    fn each_setting_sets_its_own_field() {
        let defaults = Settings::default().to_redacted_toml();
        let defaults: toml::Table = defaults.parse().unwrap();
        for setting in SETTINGS {
            let Some(changed) = defaults.get(setting.key()).and_then(other_value) else {
                continue;
            };
            let mut s = Settings::default();
            setting.take_toml(&mut s, &changed).unwrap();
            let printed: toml::Table = s.to_redacted_toml().parse().unwrap();
            for (key, value) in &printed {
                let want = if key == setting.key() {
                    &changed
                } else {
                    &defaults[key]
                };
                assert_eq!(value, want, "setting {} changed {key}", setting.key());
            }
        }
    }

    /// A valid value unlike `v`, of the same type.
    fn other_value(v: &toml::Value) -> Option<toml::Value> {
        use toml::Value as V;
        Some(match v {
            V::Integer(n) => V::Integer(n + 1),
            V::Float(x) => V::Float(x + 0.5),
            V::Boolean(b) => V::Boolean(!b),
            V::String(s) if humantime::parse_duration(s).is_ok() => V::String("7s".into()),
            V::String(s) if s.parse::<SocketAddr>().is_ok() => V::String("127.0.0.2:1".into()),
            V::String(s) if s.contains("://") => V::String("redis://other:1".into()),
            V::String(s) if StoreKind::from_str(s, false).is_ok() => V::String("redis".into()),
            V::String(s) if LogFormat::from_str(s, false).is_ok() => V::String("json".into()),
            V::String(s) => V::String(format!("{{other}}:{s}")),
            _ => return None,
        })
    }
}
