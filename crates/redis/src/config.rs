//! How to reach Redis and how long to keep failed tasks.

use std::path::PathBuf;
use std::time::Duration;

use failed_tasks_store::StoreError;

/// Everything the Redis store needs, with working defaults ([`RedisConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[user:pass@]host[:port][/db]` (single server),
    /// `redis-cluster://host:port?node=host2:port2&node=...` (cluster; the first node plus
    /// any `node` parameters seed the discovery) or
    /// `redis-sentinel://host:port[/db]?sentinelServiceName=NAME&node=...` (sentinels).
    /// `rediss://` and the other TLS schemes are rejected: this build has no TLS feature, and
    /// fred would otherwise silently connect in plain text.
    pub url: String,
    /// Prepended to every key, e.g. `{failed-tasks}` gives `{failed-tasks}:task:ID`.
    /// It must hold exactly one non-empty hash tag (`{...}`) so that every key of the store
    /// lands in one cluster slot: the Lua scripts touch several keys atomically.
    pub key_prefix: String,
    /// The longest any single Redis call may take (also the connect timeout). fred has no
    /// timeout by default, which lets a paused Redis hang a request forever.
    pub command_timeout: Duration,
    /// Failed tasks older than this (by `FailTime`) are trimmed by the janitor.
    pub max_age: Duration,
    /// At most this many failed tasks are kept; the janitor trims the oldest beyond it.
    pub max_count: u64,
    /// How often the janitor runs.
    pub janitor_interval: Duration,
    /// When set, the janitor appends trimmed tasks as JSON lines to
    /// `DIR/failed-tasks-YYYY-MM-DD.jsonl` (UTC day of the trim) before removing them.
    pub archive_dir: Option<PathBuf>,
    /// Each record also gets a Redis expiry of `max_age + record_ttl_slack` after its
    /// `FailTime`, a safety net so that records do not pile up when no janitor runs. The
    /// slack leaves the janitor time to archive a task before Redis drops it.
    pub record_ttl_slack: Duration,
    /// Serve even when Redis's `maxmemory-policy` is not `noeviction`. An evicting Redis
    /// drops records and index entries behind the store's back (acknowledged failures
    /// vanish, totals go wrong), so by default the store refuses to work with one: every
    /// call answers [`StoreError::Unavailable`] naming the policy until it is fixed.
    pub allow_eviction: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "{failed-tasks}".to_owned(),
            command_timeout: Duration::from_secs(2),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_count: 1_000_000,
            janitor_interval: Duration::from_secs(60),
            archive_dir: None,
            record_ttl_slack: Duration::from_secs(24 * 3600),
            allow_eviction: false,
        }
    }
}

/// Schemes that ask for TLS, which this build cannot do.
const TLS_SCHEMES: &[&str] = &[
    "rediss",
    "rediss-cluster",
    "rediss-sentinel",
    "valkeys",
    "valkeys-cluster",
    "valkeys-sentinel",
];

/// Schemes this store accepts.
const PLAIN_SCHEMES: &[&str] = &[
    "redis",
    "redis-cluster",
    "redis-sentinel",
    "valkey",
    "valkey-cluster",
    "valkey-sentinel",
];

impl RedisConfig {
    /// Check the parts fred does not check: the URL scheme and the key prefix's hash tag.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_url_scheme(&self.url)?;
        validate_prefix(&self.key_prefix)?;
        if self.command_timeout.is_zero() {
            return Err(StoreError::Rejected(
                "redis command timeout must be greater than zero".to_owned(),
            ));
        }
        if self.max_count == 0 {
            return Err(StoreError::Rejected(
                "redis max count must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Hides the password of a URL for logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn validate_url_scheme(url: &str) -> Result<(), StoreError> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    let scheme = scheme.to_ascii_lowercase();
    if TLS_SCHEMES.contains(&scheme.as_str()) {
        return Err(StoreError::Rejected(format!(
            "redis url {}: TLS ({scheme}://) is not supported by this build; use a TLS-terminating \
             proxy, or a plain redis:// URL on a trusted network",
            redact_url(url)
        )));
    }
    if !PLAIN_SCHEMES.contains(&scheme.as_str()) {
        return Err(StoreError::Rejected(format!(
            "redis url {}: unknown scheme {scheme:?}; expected redis://, redis-cluster:// or \
             redis-sentinel://",
            redact_url(url)
        )));
    }
    Ok(())
}

fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        StoreError::Rejected(format!(
            "redis key prefix {prefix:?} {why}; it needs exactly one non-empty hash tag such as \
             {{failed-tasks}} so that all keys share one cluster slot"
        ))
    };
    let open = prefix.find('{').ok_or_else(|| bad("has no hash tag"))?;
    let close = prefix[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| bad("has an unclosed hash tag"))?;
    if close == open + 1 {
        return Err(bad("has an empty hash tag"));
    }
    if prefix[close + 1..].contains('{') || prefix[close + 1..].contains('}') {
        return Err(bad("has more than one hash tag"));
    }
    if prefix.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let with = |url: &str| RedisConfig {
            url: url.to_owned(),
            ..RedisConfig::default()
        };
        assert!(with("redis://localhost:6379/2").validate().is_ok());
        assert!(with("redis-cluster://a:1?node=b:2").validate().is_ok());
        assert!(with("redis-sentinel://a:1?sentinelServiceName=m")
            .validate()
            .is_ok());
        let e = with("rediss://u:secret@h:1").validate().unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(with("http://h").validate().is_err());
        assert!(with("localhost:6379").validate().is_err());
    }

    #[test]
    fn prefixes() {
        for ok in ["{failed-tasks}", "app:{ft}", "{x}:v2"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["failed-tasks", "{}", "{a", "{a}{b}", "a}"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
