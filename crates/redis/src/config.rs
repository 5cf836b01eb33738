//! How to reach Redis and how long to keep failed tasks.

use std::path::PathBuf;
use std::time::Duration;

use failed_tasks_store::{Retention, StoreError};

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
    /// What the store keeps: failed tasks older than `retention.max_age` (by `FailTime`)
    /// and the oldest beyond `retention.max_count` are trimmed by the janitor, which runs
    /// every `retention.janitor_interval` (the same settings as every store's).
    pub retention: Retention,
    /// When set, the janitor appends trimmed tasks as JSON lines to
    /// `DIR/failed-tasks-YYYY-MM-DD.jsonl` (UTC day of the trim) before removing them.
    pub archive_dir: Option<PathBuf>,
    /// Each record also gets a Redis expiry of `retention.max_age + record_ttl_slack` after its
    /// `FailTime`, a safety net so that records do not pile up when no janitor runs. The
    /// slack leaves the janitor time to archive a task before Redis drops it.
    pub record_ttl_slack: Duration,
    /// Serve even when Redis's `maxmemory-policy` is not `noeviction`. An evicting Redis
    /// drops records and index entries behind the store's back (acknowledged failures
    /// vanish, totals go wrong), so by default the store refuses to work with one: every
    /// call answers [`StoreError::Unavailable`] naming the policy until it is fixed.
    pub allow_eviction: bool,
    /// The stream of retry requests workers read; `None`: `{key_prefix}:retries`. It must
    /// hash to the prefix's slot (hold the same hash tag): the scheduler moves due retries
    /// into it atomically with the due set.
    pub retry_stream_key: Option<String>,
    /// About how many entries the retry stream keeps (`XADD … MAXLEN ~`): older entries are
    /// trimmed whether or not they were read (see docs/retries.md).
    pub retry_stream_max_len: u64,
    /// A retry request of a task whose failure listed at most this many files carries their
    /// paths inline (`Files`); with more it carries where they are (`FilesKey`). 10 by
    /// default; 0: never inline. See docs/retries.md, "Retries of just the failed files".
    pub retry_inline_files: usize,
    /// The consumer group of the workers: [`RedisRetryQueue`](crate::RedisRetryQueue)s join
    /// it, and the metrics read its pending count.
    pub retry_consumer_group: String,
    /// How long a worker may hold a claimed retry request without acknowledging it before
    /// another worker may reclaim it ([`RedisRetryQueue::reclaim_stale`](failed_tasks_store::RetryQueue::reclaim_stale)
    /// with [`RedisRetryQueue::lease`](crate::RedisRetryQueue::lease)).
    pub retry_consumer_lease: Duration,
    /// Into how many shards one deployment's failures are split (the one
    /// [`RedisStore`](crate::RedisStore) serves them all): shard `i` of `n > 1` has the
    /// prefix with the shard added inside its hash tag (`{failed-tasks:3.20}`, see
    /// [`shard_key`]), so on a Redis Cluster the shards spread over the masters; `1` (the
    /// default) is exactly the one configured prefix. At most [`MAX_SHARDS`]. See
    /// `docs/redis-layout.md#shards`.
    pub shards: u32,
    /// While the shard count changes (`failed-tasks-server reshard`): the count tasks are
    /// moving away from. Reads then see both layouts (a task seen in both is shown once),
    /// writes go to the new one and remove the task from its old shard. `None` (the
    /// default) outside a reshard.
    pub resharding_from: Option<u32>,
}

/// The most shards a deployment may have (each is a set of keys with its own hash tag).
pub const MAX_SHARDS: u32 = 1024;

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "{failed-tasks}".to_owned(),
            command_timeout: Duration::from_secs(2),
            retention: Retention::default(),
            archive_dir: None,
            record_ttl_slack: Duration::from_secs(24 * 3600),
            allow_eviction: false,
            retry_stream_key: None,
            retry_stream_max_len: 1_000_000,
            retry_inline_files: 10,
            retry_consumer_group: "embedders".to_owned(),
            retry_consumer_lease: failed_tasks_store::retry::DEFAULT_LEASE,
            shards: 1,
            resharding_from: None,
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
        if self.retention.max_count == 0 {
            return Err(StoreError::Rejected(
                "redis max count must be at least 1".to_owned(),
            ));
        }
        if let Some(key) = &self.retry_stream_key {
            if key.is_empty() || key.chars().any(char::is_control) {
                return Err(StoreError::Rejected(format!(
                    "retry stream key {key:?} must be non-empty text without control characters"
                )));
            }
            if fred::util::redis_keyslot(key.as_bytes())
                != fred::util::redis_keyslot(self.key_prefix.as_bytes())
            {
                return Err(StoreError::Rejected(format!(
                    "retry stream key {key:?} must hold the key prefix's hash tag ({}), so that it \
                     shares the store's cluster slot",
                    self.key_prefix
                )));
            }
        }
        if let Some(key) = &self.retry_stream_key {
            let several = self.shards > 1 || self.resharding_from.is_some_and(|n| n > 1);
            if several && hash_tag(key) != hash_tag(&self.key_prefix) {
                return Err(StoreError::Rejected(format!(
                    "retry stream key {key:?} must hold the key prefix's hash tag ({}) itself when \
                     there are several shards: each shard's stream takes its shard's tag",
                    self.key_prefix
                )));
            }
        }
        if self.retry_stream_max_len == 0 {
            return Err(StoreError::Rejected(
                "retry stream max len must be at least 1".to_owned(),
            ));
        }
        if self.retry_consumer_group.is_empty()
            || self.retry_consumer_group.chars().any(char::is_control)
        {
            return Err(StoreError::Rejected(
                "retry consumer group must be non-empty text without control characters".to_owned(),
            ));
        }
        for (what, n) in [
            ("redis shards", Some(self.shards)),
            ("resharding from", self.resharding_from),
        ] {
            if let Some(n) = n {
                if n == 0 || n > MAX_SHARDS {
                    return Err(StoreError::Rejected(format!(
                        "{what} must be between 1 and {MAX_SHARDS}, got {n}"
                    )));
                }
            }
        }
        if self.retry_consumer_lease.is_zero() {
            return Err(StoreError::Rejected(
                "retry consumer lease must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }

    /// The retry stream's key: [`retry_stream_key`](Self::retry_stream_key) or
    /// `{key_prefix}:retries`.
    pub fn retry_stream(&self) -> String {
        self.retry_stream_key
            .clone()
            .unwrap_or_else(|| format!("{}:retries", self.key_prefix))
    }
}

/// `key` with shard `shard` of `shards` put into its hash tag: the tag `T` becomes
/// `T:{shard}` (`{failed-tasks}` → `{failed-tasks:3}`), or `T:{shard}.{k}` for the smallest
/// `k` ≥ 1 with which the tag's cluster slot falls into the shard's share of the slot space,
/// `[shard × 16384 / shards, (shard + 1) × 16384 / shards)`. So the shards' slots are spread
/// evenly over the 16,384 slots, and a cluster whose masters own equal ranges of slots (as
/// `redis-cli --cluster create` makes them) holds an equal share of the shards on each master,
/// not whatever the CRC of `T:0` … `T:15` happens to give. The tag depends only on `T`,
/// `shard` and `shards`: it never changes for a given count. `key` itself when
/// `shards == 1`, so one shard is exactly today's layout. A key without a hash tag is
/// returned unchanged (the configuration check refuses such prefixes).
pub fn shard_key(key: &str, shard: u32, shards: u32) -> String {
    if shards <= 1 {
        return key.to_owned();
    }
    let Some((open, close)) = key
        .find('{')
        .and_then(|open| key[open..].find('}').map(|i| (open, open + i)))
    else {
        return key.to_owned();
    };
    let tag = &key[open + 1..close];
    format!(
        "{}{}{}",
        &key[..=open],
        shard_tag(tag, shard, shards),
        &key[close..]
    )
}

/// The content of `key`'s first hash tag (`{…}`), if any.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = open + key[open..].find('}')?;
    Some(&key[open + 1..close])
}

/// The hash tag content of shard `shard` of `shards` for the tag `tag` (see [`shard_key`]).
fn shard_tag(tag: &str, shard: u32, shards: u32) -> String {
    const SLOTS: u64 = 16_384;
    let lo = u64::from(shard) * SLOTS / u64::from(shards);
    let hi = (u64::from(shard) + 1) * SLOTS / u64::from(shards);
    let plain = format!("{tag}:{shard}");
    let fits = |t: &str| (lo..hi).contains(&u64::from(fred::util::redis_keyslot(t.as_bytes())));
    if fits(&plain) {
        return plain;
    }
    // About `shards` candidates on average; the bound is never reached in practice.
    (1..=SLOTS * 64)
        .map(|k| format!("{tag}:{shard}.{k}"))
        .find(|t| fits(t))
        .unwrap_or(plain)
}

/// Hides the password of a URL for logs and error messages.
/// A Redis URL as it may be shown (logs, `--print-config`, error messages): the user info
/// (`user:password@`) and the value of every query parameter that names a password, a
/// secret or a token (`sentinelPassword=`, …) replaced by `<redacted>`. Everything else,
/// hosts, ports, database and the other parameters, is kept so the URL stays recognisable.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    // The user info ends at the last '@' before the query (a password may hold an '@').
    match before_query.rfind('@') {
        Some(at) if scheme.is_some() => {
            out.push_str(HIDDEN);
            out.push_str(&before_query[at..]);
        }
        _ => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_parameter(key) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(HIDDEN);
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// Whether a URL query parameter carries a secret (`sentinelPassword`, `password`, `token`…).
fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "auth"]
        .iter()
        .any(|word| key.contains(word))
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
    fn every_secret_in_every_accepted_url_form_is_redacted() {
        let table = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:pw@host:6379/0", "redis://<redacted>@host:6379/0"),
            ("redis://user:pw@host:6379", "redis://<redacted>@host:6379"),
            ("redis://user:p@ss@host", "redis://<redacted>@host"),
            ("valkey://u:pw@h:1/2", "valkey://<redacted>@h:1/2"),
            (
                "redis-cluster://u:pw@a:1?node=b:2&node=c:3",
                "redis-cluster://<redacted>@a:1?node=b:2&node=c:3",
            ),
            (
                "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=zzz",
                "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=<redacted>",
            ),
            (
                "redis-sentinel://u:pw@h:26379/0?sentinelPassword=z%40z&sentinelUsername=su&sentinelServiceName=m",
                "redis-sentinel://<redacted>@h:26379/0?sentinelPassword=<redacted>&sentinelUsername=su&sentinelServiceName=m",
            ),
            ("rediss://u:secret@h:1?password=x", "rediss://<redacted>@h:1?password=<redacted>"),
            ("localhost:6379", "localhost:6379"),
        ];
        for (url, shown) in table {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

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
    fn the_retry_stream_shares_the_prefix_slot() {
        let with = |key: Option<&str>| RedisConfig {
            retry_stream_key: key.map(str::to_owned),
            ..RedisConfig::default()
        };
        assert_eq!(with(None).retry_stream(), "{failed-tasks}:retries");
        assert!(with(Some("{failed-tasks}:stream")).validate().is_ok());
        let e = with(Some("retries")).validate().unwrap_err();
        assert!(e.to_string().contains("hash tag"), "{e}");
        assert!(with(Some("")).validate().is_err());
        let zero = RedisConfig {
            retry_stream_max_len: 0,
            ..RedisConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    const PINNED_16: [&str; 16] = [
        "{failed-tasks:0.2}",
        "{failed-tasks:1.1}",
        "{failed-tasks:2.23}",
        "{failed-tasks:3.20}",
        "{failed-tasks:4.60}",
        "{failed-tasks:5.63}",
        "{failed-tasks:6.40}",
        "{failed-tasks:7.43}",
        "{failed-tasks:8.23}",
        "{failed-tasks:9.20}",
        "{failed-tasks:10.10}",
        "{failed-tasks:11.13}",
        "{failed-tasks:12.2}",
        "{failed-tasks:13.1}",
        "{failed-tasks:14.60}",
        "{failed-tasks:15.63}",
    ];

    #[test]
    fn shard_keys_add_the_shard_inside_the_hash_tag() {
        assert_eq!(shard_key("{failed-tasks}", 0, 1), "{failed-tasks}");
        // Pinned: the layout of a deployment with 16 shards.
        let tags: Vec<String> = (0..16)
            .map(|i| shard_key("{failed-tasks}", i, 16))
            .collect();
        assert_eq!(tags, PINNED_16);
        for (i, t) in tags.iter().enumerate() {
            let slot = u64::from(fred::util::redis_keyslot(t.as_bytes()));
            assert_eq!(
                slot * 16 / 16_384,
                i as u64,
                "{t} is in its sixteenth of the slots"
            );
        }
        let stream = shard_key("{failed-tasks}:retries", 2, 16);
        assert_eq!(stream, format!("{}:retries", tags[2]));
        assert!(shard_key("app:{ft}:v2", 15, 16).starts_with("app:{ft:15"));
        assert!(shard_key("app:{ft}:v2", 15, 16).ends_with("}:v2"));
        for n in [2, 3, 64, 1024] {
            for i in [0, n / 2, n - 1] {
                let t = shard_key("{x}", i, n);
                let slot = u64::from(fred::util::redis_keyslot(t.as_bytes()));
                assert_eq!(slot * u64::from(n) / 16_384, u64::from(i), "{t}");
            }
        }
        let zero = RedisConfig {
            shards: 0,
            ..RedisConfig::default()
        };
        assert!(zero.validate().is_err());
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
