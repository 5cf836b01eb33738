//! Every setting of the server, declared once: its key, its `--help` text and the field of
//! [`Settings`] it sets. The flag, the environment variable, the TOML key, `--help` (with
//! the default, read from `Settings::default()`, i.e. the owning component's `Default`) and
//! `--print-config` follow from the entry; README's configuration table and
//! deploy/config.example.toml are checked against them by tests.
//!
//! A new setting is one entry here, plus its field and default in the component it
//! configures (and the code that uses it). The order is the order of `--help`,
//! `--print-config` and README's table.

use super::field::{Field, Setting};

/// The settings, in the order `--help` lists them.
pub static SETTINGS: &[&dyn Setting] = &[
    &Field::new("listen", "Address to listen on", |s| &mut s.listen),
    &Field::new("store", "Where failed tasks are kept", |s| &mut s.store),
    &Field::new(
        "redis_url",
        "Redis URL: redis://, redis-sentinel://…?sentinelServiceName=…, \
         redis-cluster://h:p?node=h:p (rediss:// is refused: no TLS in this build)",
        |s| &mut s.redis.url,
    )
    .url(),
    &Field::new(
        "redis_key_prefix",
        "Prefix of every Redis key; must hold exactly one hash tag (`{...}`) so all keys \
         share one Redis Cluster slot",
        |s| &mut s.redis.key_prefix,
    ),
    &Field::new(
        "redis_command_timeout",
        "The longest a single Redis command may take",
        |s| &mut s.redis.command_timeout,
    ),
    &Field::new(
        "redis_allow_eviction",
        "Serve even when Redis's maxmemory-policy is not noeviction (an evicting Redis loses \
         failed tasks silently; without this the server refuses to start on one and stops \
         serving when it finds one after a reconnection)",
        |s| &mut s.redis.allow_eviction,
    ),
    &Field::new(
        "redis_shards",
        "Shards of the Redis store (1-1024): on a Redis Cluster, each shard's keys share one \
         hash tag of their own (`{failed-tasks:3.20}`), so the data and the writes spread \
         over the masters; 1 is one hash tag, `redis_key_prefix` itself. Changing it needs \
         `reshard` (docs/operations.md)",
        |s| &mut s.redis.shards,
    ),
    &Field::new(
        "redis_resharding_from",
        "While `reshard` moves tasks to `redis_shards` shards: the shard count they move away \
         from (reads see both, writes go to the new shards)",
        |s| &mut s.redis.resharding_from,
    ),
    &Field::new(
        "retention_max_age",
        "Retention: failed tasks older than this are trimmed (memory and Redis stores)",
        |s| &mut s.redis.retention.max_age,
    ),
    &Field::new(
        "retention_max_count",
        "Retention: at most this many failed tasks are kept (memory and Redis stores)",
        |s| &mut s.redis.retention.max_count,
    ),
    &Field::new(
        "janitor_interval",
        "How often the retention janitor runs (memory and Redis stores)",
        |s| &mut s.redis.retention.janitor_interval,
    ),
    &Field::new(
        "audit_max_len",
        "The audit log keeps about this many entries; the oldest beyond it leave (memory and Redis stores)",
        |s| &mut s.redis.retention.audit_max_len,
    ),
    &Field::new(
        "archive_dir",
        "Directory where trimmed tasks are archived as JSON lines, one file per UTC day \
         (Redis store). Unset: trimmed tasks are dropped",
        |s| &mut s.redis.archive_dir,
    ),
    &Field::new(
        "clock_skew_allowance",
        "A recorded FailTime further ahead of this server's clock than this is refused (400)",
        |s| &mut s.service.clock_skew_allowance,
    ),
    &Field::new(
        "compat_key_prefix",
        "Key prefix of the original Go service's records (compat store)",
        |s| &mut s.compat.key_prefix,
    ),
    &Field::new(
        "compat_record_expiry",
        "Expiry the Go service sets on its records, to estimate fail times (compat store)",
        |s| &mut s.compat.record_expiry,
    ),
    &Field::new(
        "demo",
        "Record the source document's three example tasks at start",
        |s| &mut s.demo,
    ),
    &Field::new(
        "health_timeout",
        "Deadline of the store connection check",
        |s| &mut s.service.deadlines.health_check,
    ),
    &Field::new(
        "request_timeout",
        "Deadline of a whole request, connection check included",
        |s| &mut s.service.deadlines.request,
    ),
    &Field::new(
        "connection_check_reuse",
        "A good answer from the store stands in for the connection check of requests this \
         soon after it; 0 checks before every request",
        |s| &mut s.service.connection_check_reuse,
    ),
    &Field::new(
        "stats_concurrency",
        "Statistics requests computed at once; the others wait their turn within the request \
         deadline (each is bounded in work and memory by its window)",
        |s| &mut s.service.stats_concurrency,
    ),
    &Field::new(
        "stats_cache_ttl",
        "A statistics answer is shared with callers of the same window this long; 0 computes \
         every request (a write through this server ends a shared answer at once)",
        |s| &mut s.service.stats_cache_ttl,
    ),
    &Field::new(
        "header_read_timeout",
        "How long a client may take to send a complete request head",
        |s| &mut s.http.header_read_timeout,
    ),
    &Field::new(
        "body_read_timeout",
        "How long a client may take to send a request body",
        |s| &mut s.http.body_read_timeout,
    ),
    &Field::new(
        "admin_token",
        "Bearer token named admin, with the admin role (also recording and removal). Without a token that may call them, the admin routes answer 403",
        |s| &mut s.http.admin_token,
    ),
    &Field::new(
        "operate_token",
        "Bearer token named operate, with the operate role (also retry, cancel, resolve)",
        |s| &mut s.http.operate_token,
    ),
    &Field::new(
        "read_token",
        "Bearer token named read, with the read role; once set, the read routes need a token (any role)",
        |s| &mut s.http.read_token,
    ),
    &Field::new(
        "max_body_bytes",
        "Largest accepted request body in bytes, 413 beyond",
        |s| &mut s.http.max_body_bytes,
    ),
    &Field::new(
        "max_failed_files",
        "Most files one recorded failure may list (Files), 413 beyond",
        |s| &mut s.http.max_failed_files,
    ),
    &Field::new(
        "max_header_bytes",
        "Largest accepted request head in bytes, 431 beyond",
        |s| &mut s.http.max_header_bytes,
    ),
    &Field::new("max_connections", "Most connections served at once", |s| {
        &mut s.http.max_connections
    }),
    &Field::new(
        "idle_timeout",
        "A connection with no request in flight this long is closed (HTTP/2 with a GOAWAY)",
        |s| &mut s.http.idle_timeout,
    ),
    &Field::new(
        "write_stall_timeout",
        "A response whose client takes none of it this long is dropped with its connection",
        |s| &mut s.http.write_stall_timeout,
    ),
    &Field::new(
        "max_response_bytes_in_flight",
        "Response bytes held for all clients at once; a larger answer that does not fit gets \
         503",
        |s| &mut s.http.max_response_bytes_in_flight,
    ),
    &Field::new(
        "max_connection_response_bytes",
        "Response bytes held for one connection at once",
        |s| &mut s.http.max_connection_response_bytes,
    ),
    &Field::new(
        "h2_max_concurrent_streams",
        "Most concurrent HTTP/2 streams per connection",
        |s| &mut s.http.h2_max_concurrent_streams,
    ),
    &Field::new(
        "h2_keep_alive_interval",
        "Interval of HTTP/2 keep-alive pings; 0s sends none",
        |s| &mut s.http.h2_keep_alive_interval,
    ),
    &Field::new(
        "h2_keep_alive_timeout",
        "An HTTP/2 connection whose keep-alive ping is not answered this soon is closed",
        |s| &mut s.http.h2_keep_alive_timeout,
    ),
    &Field::new(
        "page_size_default",
        "Page size when a request names none",
        |s| &mut s.page_size_default,
    ),
    &Field::new(
        "page_size_max",
        "Largest page size a request may ask for",
        |s| &mut s.page_size_max,
    ),
    &Field::new(
        "retry_after_secs",
        "`Retry-After` seconds sent with 503 answers",
        |s| &mut s.http.retry_after_secs,
    ),
    &Field::new(
        "export_max_rows",
        "Most rows an export writes; past it, its last line says it was cut",
        |s| &mut s.http.export_max_rows,
    ),
    &Field::new(
        "shutdown_grace",
        "How long shutdown waits for in-flight requests",
        |s| &mut s.shutdown_grace,
    ),
    &Field::new("log_format", "Log line format", |s| &mut s.log_format),
    &Field::new(
        "alert_spike_factor",
        "Alert sudden_increase: last 5 minutes above this many times the window's average per \
         5 minutes",
        |s| &mut s.service.alert_thresholds.spike_factor,
    ),
    &Field::new(
        "alert_spike_min_count",
        "Alert sudden_increase: and at least this many failures",
        |s| &mut s.service.alert_thresholds.spike_min_count,
    ),
    &Field::new(
        "alert_spike_factor_critical",
        "Alert sudden_increase is critical above this many times the average",
        |s| &mut s.service.alert_thresholds.spike_factor_critical,
    ),
    &Field::new(
        "alert_spike_min_count_critical",
        "Alert sudden_increase: and critical with at least this many failures",
        |s| &mut s.service.alert_thresholds.spike_min_count_critical,
    ),
    &Field::new(
        "alert_category_max",
        "Alert category_threshold: failures of one category in the window above this",
        |s| &mut s.service.alert_thresholds.category_max,
    ),
    &Field::new(
        "alert_category_max_critical",
        "Alert category_threshold is critical above this many",
        |s| &mut s.service.alert_thresholds.category_max_critical,
    ),
    &Field::new(
        "alert_error_code_max",
        "Alert error_code_threshold: failures of one error code in the window above this",
        |s| &mut s.service.alert_thresholds.error_code_max,
    ),
    &Field::new(
        "alert_error_code_max_critical",
        "Alert error_code_threshold is critical above this many",
        |s| &mut s.service.alert_thresholds.error_code_max_critical,
    ),
    &Field::new(
        "alert_failure_rate_max",
        "Alert failure_rate: failures / reported attempts above this fraction",
        |s| &mut s.service.alert_thresholds.failure_rate_max,
    ),
    &Field::new(
        "alert_failure_rate_max_critical",
        "Alert failure_rate is critical above this fraction",
        |s| &mut s.service.alert_thresholds.failure_rate_max_critical,
    ),
    &Field::new(
        "alert_failure_rate_min_attempts",
        "Alert failure_rate: only once this many attempts were reported in the window",
        |s| &mut s.service.alert_thresholds.failure_rate_min_attempts,
    ),
    &Field::new(
        "retry_max_retries",
        "Retry policy: retries before a failure is final (FinalFailure)",
        |s| &mut s.service.retry.max_retries,
    ),
    &Field::new(
        "retry_base_delay",
        "Retry policy: the first backoff delay",
        |s| &mut s.service.retry.base_delay,
    ),
    &Field::new(
        "retry_multiplier",
        "Retry policy: each further delay is this many times the previous one",
        |s| &mut s.service.retry.multiplier,
    ),
    &Field::new(
        "retry_max_delay",
        "Retry policy: no delay is longer than this",
        |s| &mut s.service.retry.max_delay,
    ),
    &Field::new(
        "retry_jitter",
        "Retry policy: delays vary by up to this fraction either way",
        |s| &mut s.service.retry.jitter,
    ),
    &Field::new(
        "retry_scheduler_interval",
        "Retry scheduler: time between its steps, each moving the due retries to the workers",
        |s| &mut s.scheduler.interval,
    ),
    &Field::new(
        "retry_scheduler_batch",
        "Retry scheduler: retries moved per store call (1 to 10000)",
        |s| &mut s.scheduler.batch,
    ),
    &Field::new(
        "breaker_enabled",
        "Retry circuit breaker: hold the retries of a task type and category while most of them \
         fail again",
        |s| &mut s.service.breaker.enabled,
    ),
    &Field::new(
        "breaker_window",
        "Retry circuit breaker: the window of retry outcomes looked at (1s to 1h); also how \
         long a half-open breaker waits for its canaries",
        |s| &mut s.service.breaker.window,
    ),
    &Field::new(
        "breaker_min_retries",
        "Retry circuit breaker: fewest retry outcomes in the window before it may open",
        |s| &mut s.service.breaker.min_retries,
    ),
    &Field::new(
        "breaker_failure_percent",
        "Retry circuit breaker: the share of those outcomes failed again that opens it (1 to 100)",
        |s| &mut s.service.breaker.failure_percent,
    ),
    &Field::new(
        "breaker_cooldown",
        "Retry circuit breaker: how long it holds before its canaries, doubled at each reopen",
        |s| &mut s.service.breaker.cooldown,
    ),
    &Field::new(
        "breaker_max_cooldown",
        "Retry circuit breaker: the longest cool-down",
        |s| &mut s.service.breaker.max_cooldown,
    ),
    &Field::new(
        "breaker_canaries",
        "Retry circuit breaker: retries let through when it half-opens (1 to 1000)",
        |s| &mut s.service.breaker.canaries,
    ),
    &Field::new(
        "breaker_interval",
        "Retry circuit breaker: time between the decider's steps (one replica decides at a time)",
        |s| &mut s.service.breaker.interval,
    ),
    &Field::new(
        "retry_stream_key",
        "Redis key of the retry request stream workers read; must hold the key prefix's hash \
         tag. Unset: {redis_key_prefix}:retries",
        |s| &mut s.redis.retry_stream_key,
    ),
    &Field::new(
        "retry_stream_max_len",
        "About how many requests the retry stream (or the memory store's queue) keeps; older \
         ones are trimmed, read or not",
        |s| &mut s.redis.retry_stream_max_len,
    ),
    &Field::new(
        "retry_inline_files",
        "A retry request carries the paths of its failed files inline (Files) when the failure \
         listed at most this many, else where they are (FilesKey); 0: never inline",
        |s| &mut s.redis.retry_inline_files,
    ),
    &Field::new(
        "retry_consumer_group",
        "Consumer group of the embedders' retry workers (Redis store; for the pending gauge)",
        |s| &mut s.redis.retry_consumer_group,
    ),
    &Field::new(
        "retry_consumer_lease",
        "How long a worker may hold a retry request unacknowledged before another may reclaim \
         it (Redis store)",
        |s| &mut s.redis.retry_consumer_lease,
    ),
    // --- Notifications (failed-tasks-notify; the targets are `[[notify_targets]]` tables of
    // the file: `notify_targets::NotifyTargets`) ---
    &Field::new(
        "public_url",
        "The dashboard's address (https://failures.example.com): notifications link to \
         views under {public_url}/ui/. Unset: notifications carry no link",
        |s| &mut s.notify.public_url,
    ),
    &Field::new(
        "notify_url",
        "One more notification target, named env: all events as json to this http(s) URL \
         (shown as its scheme and host only)",
        |s| &mut s.notify.env_url,
    ),
    &Field::new(
        "notify_secret",
        "The signing secret of the notify_url target (X-FailedTasks-Signature)",
        |s| &mut s.notify.env_secret,
    ),
    &Field::new(
        "notify_interval",
        "Time between the notifier's steps (one replica at a time works, under a lease)",
        |s| &mut s.notify.interval,
    ),
    &Field::new(
        "notify_quiet_period",
        "An error signature failing again after this long without failures is group.returned",
        |s| &mut s.notify.quiet_period,
    ),
    &Field::new(
        "notify_alert_window",
        "The statistics window the alert rules are evaluated over for notifications (whole \
         minutes, 5m to 7days)",
        |s| &mut s.notify.alert_window,
    ),
    &Field::new(
        "notify_alert_interval",
        "How often the alert rules are evaluated for notifications",
        |s| &mut s.notify.alert_interval,
    ),
    &Field::new(
        "notify_alert_resolve_after",
        "A firing alert is resolved once it has not fired for this long (no flapping)",
        |s| &mut s.notify.alert_resolve_after,
    ),
    &Field::new(
        "notify_min_interval",
        "Per target: at most one message per this long; events meanwhile are coalesced into \
         digests",
        |s| &mut s.notify.min_interval,
    ),
    &Field::new(
        "notify_outbox_max",
        "Most events waiting per target; beyond it new ones are dropped and counted",
        |s| &mut s.notify.outbox_max,
    ),
    &Field::new(
        "notify_give_up_after",
        "A message not delivered this long after its first attempt is given up (counted)",
        |s| &mut s.notify.give_up_after,
    ),
    &Field::new(
        "notify_timeout",
        "The longest one delivery attempt may take, connecting included",
        |s| &mut s.notify.request_timeout,
    ),
];
