//! Failure statistics over a window and the source's alert rules, computed from counters
//! that the stores keep up to date on every write.
//!
//! Stores never scan tasks to answer a statistics request, and what one request reads is
//! bounded whatever the number of distinct error codes, task types, clients and codebases:
//! - one [`MinuteCounts`] per minute that had failures (total, per category, recovered:
//!   categories are a closed set), incremented when a task is recorded, decremented when it
//!   is removed, moved when an upsert changes it;
//! - per [`Bucket`] (each minute, and each whole hour) and per [`Dimension`] (error code,
//!   task type, client, codebase path), a [`TrackedCounts`]: the counts of at most
//!   [`TRACKED_PER_BUCKET`] distinct values; a value first seen when the bucket is full is
//!   counted as *untracked*. A read takes the [`READ_PER_BUCKET`] most frequent values of
//!   each bucket covering the window ([`buckets`]: whole hours as one bucket, the minutes at
//!   the window's edges one by one) and [`summarize`] merges them;
//! - task-attempt counts per minute.
//!
//! So a request costs O(minutes at the edges + hours in the window), not O(failures) nor
//! O(distinct values). What that costs in exactness, and only when a bucket holds more than
//! [`READ_PER_BUCKET`] values (or more than [`TRACKED_PER_BUCKET`]): a value's merged count
//! leaves out the buckets where it was not among the most frequent (a lower bound), a value
//! frequent over the window but never among a bucket's most frequent may be missing, and
//! untracked failures are counted only as [`Untracked`]. [`FailureStats::breakdowns_exact`]
//! says whether any of this happened.
//!
//! # Alert rules (the source's 告警建议)
//! - `sudden_increase`: the failures of the last 5 minutes exceed `spike_factor` times the
//!   window's average per 5 minutes (the window without those 5 minutes), and at least
//!   `spike_min_count` of them (critical: `spike_factor_critical`, `spike_min_count_critical`).
//! - `category_threshold` / `error_code_threshold`: one category (error code) failed more
//!   than its threshold within the window. An error code's figure is its merged count (see
//!   above), and its `since` has the resolution of its buckets: the minute at the window's
//!   edges, the first minute of the hour within whole hours.
//! - `failure_rate`: failures / reported task attempts within the window exceed
//!   `failure_rate_max`, once at least `failure_rate_min_attempts` attempts were reported.
//!
//! Each alert names its rule, its subject (the category or code), the figure, the threshold
//! and since when it holds: the minute at which the figure last crossed its threshold.
//!
//! # Levels (the source's 不同级别的告警策略)
//! Every rule has two thresholds: a `warning` one and a higher `critical` one (the `*_critical`
//! fields of [`AlertThresholds`]). A rule fires at most once per subject, at the highest level
//! whose threshold the figure exceeds; its `threshold` and `since` are that level's.

use std::collections::{BTreeMap, HashMap};

use crate::{ErrorCategory, Timestamp, ValidationError};

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;

/// The minute (since the Unix epoch) a time falls in.
pub fn minute_of(t: Timestamp) -> i64 {
    t.unix_millis().div_euclid(MINUTE_MS)
}

/// Failures that happened within one minute, in all and by category (the breakdowns by
/// error code, task type, client and codebase are kept per [`Bucket`], see [`BucketTops`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    /// Failures in this minute.
    pub total: u64,
    /// By category.
    pub by_category: BTreeMap<ErrorCategory, u64>,
    /// Failed tasks resolved (their retry succeeded) in this minute. Not part of `total`:
    /// a resolved task's failure stays counted in the minute it failed.
    pub recovered: u64,
    /// Failed tasks superseded in this minute (a later run of the same task type, client
    /// and codebase succeeded). Not part of `total` either, nor of `recovered`.
    pub superseded: u64,
}

/// The most distinct values of one [`Dimension`] a [`Bucket`] counts by name; a value first
/// seen when its bucket is full is counted as untracked. Fixed (the Redis scripts carry the
/// same number), so every store and every replica agree; it bounds the memory a bucket takes
/// in the store and never the cost of a read (that is [`READ_PER_BUCKET`]).
pub const TRACKED_PER_BUCKET: usize = 1_000;

/// The most values of one [`Dimension`] a statistics read takes from each [`Bucket`] (its
/// most frequent): with the number of buckets, the bound of one read's work and memory.
pub const READ_PER_BUCKET: usize = 100;

/// What failures are broken down by, beyond their category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// The error code.
    ErrorCode,
    /// The task type.
    TaskType,
    /// The client.
    Client,
    /// The codebase (its path).
    CodebasePath,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 4] = [
        Dimension::ErrorCode,
        Dimension::TaskType,
        Dimension::Client,
        Dimension::CodebasePath,
    ];

    /// Its value in `task`.
    pub fn of(self, task: &crate::FailedTask) -> &str {
        match self {
            Dimension::ErrorCode => task.error_code().as_str(),
            Dimension::TaskType => task.task_type().as_str(),
            Dimension::Client => task.client_id().as_str(),
            Dimension::CodebasePath => task.codebase_path().as_str(),
        }
    }
}

/// A span of time whose breakdowns are counted together: one minute, or one whole hour
/// (both since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// One minute.
    Minute(i64),
    /// The 60 minutes of one hour.
    Hour(i64),
}

impl Bucket {
    /// Its first minute.
    pub fn first_minute(self) -> i64 {
        match self {
            Bucket::Minute(m) => m,
            Bucket::Hour(h) => h.saturating_mul(60),
        }
    }
}

/// The buckets that cover the minutes `[from, to)` exactly, oldest first: each whole hour
/// inside the range as one [`Bucket::Hour`], the minutes before the first and after the last
/// whole hour one by one (at most 2 x 59 of them).
pub fn buckets(from_minute: i64, to_minute: i64) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut m = from_minute;
    while m < to_minute {
        if m.rem_euclid(60) == 0 && m.saturating_add(60) <= to_minute {
            out.push(Bucket::Hour(m.div_euclid(60)));
            m += 60;
        } else {
            out.push(Bucket::Minute(m));
            m += 1;
        }
    }
    out
}

/// The counts of one dimension's values in one bucket, of at most [`TRACKED_PER_BUCKET`]
/// distinct values (the memory store's copy of what the Redis scripts keep in a sorted set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedCounts {
    counts: HashMap<String, u64>,
    untracked: u64,
}

impl TrackedCounts {
    /// Add `delta` failures of `name`. A value already tracked is counted by name, as is a
    /// new one while fewer than [`TRACKED_PER_BUCKET`] are; otherwise it counts as
    /// untracked. Taking away lowers the value's own count while it is tracked (down to 0,
    /// when it is forgotten), the untracked count otherwise: each failure taken away was
    /// added, so no count goes below zero and the sum stays exact.
    pub fn add(&mut self, name: &str, delta: i64) {
        if delta > 0 {
            let d = delta.unsigned_abs();
            if let Some(n) = self.counts.get_mut(name) {
                *n = n.saturating_add(d);
            } else if self.counts.len() < TRACKED_PER_BUCKET {
                self.counts.insert(name.to_owned(), d);
            } else {
                self.untracked = self.untracked.saturating_add(d);
            }
        } else if delta < 0 {
            let mut rest = delta.unsigned_abs();
            if let Some(n) = self.counts.get_mut(name) {
                let taken = rest.min(*n);
                *n -= taken;
                rest -= taken;
                if *n == 0 {
                    self.counts.remove(name);
                }
            }
            self.untracked = self.untracked.saturating_sub(rest);
        }
    }

    /// The `n` most frequent values, most frequent first, equal counts by name descending
    /// (the order of a Redis `ZRANGE … REV`).
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        v.truncate(n);
        v
    }

    /// Failures counted as untracked.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.untracked == 0
    }
}

/// Failures counted as untracked per dimension: their value was first seen in a bucket that
/// already tracked [`TRACKED_PER_BUCKET`] values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Untracked {
    /// Failures whose error code was not tracked.
    pub error_codes: u64,
    /// Failures whose task type was not tracked.
    pub task_types: u64,
    /// Failures whose client was not tracked.
    pub clients: u64,
    /// Failures whose codebase was not tracked.
    pub codebase_paths: u64,
}

impl Untracked {
    /// The count of `dimension`.
    pub fn get(&self, dimension: Dimension) -> u64 {
        match dimension {
            Dimension::ErrorCode => self.error_codes,
            Dimension::TaskType => self.task_types,
            Dimension::Client => self.clients,
            Dimension::CodebasePath => self.codebase_paths,
        }
    }

    /// The count of `dimension`, to change.
    pub fn get_mut(&mut self, dimension: Dimension) -> &mut u64 {
        match dimension {
            Dimension::ErrorCode => &mut self.error_codes,
            Dimension::TaskType => &mut self.task_types,
            Dimension::Client => &mut self.clients,
            Dimension::CodebasePath => &mut self.codebase_paths,
        }
    }
}

/// What a store answers for one bucket: the most frequent values of each dimension (at most
/// [`READ_PER_BUCKET`] + 1 each: one more than a read uses, so [`summarize`] knows whether
/// the list was cut), and the untracked counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTops {
    /// The bucket.
    pub bucket: Bucket,
    /// Error codes, most frequent first (equal counts by name descending).
    pub by_error_code: Vec<(String, u64)>,
    /// Task types, in the same order.
    pub by_task_type: Vec<(String, u64)>,
    /// Clients, in the same order.
    pub by_client: Vec<(String, u64)>,
    /// Codebases, in the same order.
    pub by_codebase_path: Vec<(String, u64)>,
    /// Failures of the bucket whose value was not tracked.
    pub untracked: Untracked,
}

impl BucketTops {
    /// Nothing counted yet in `bucket`.
    pub fn empty(bucket: Bucket) -> Self {
        Self {
            bucket,
            by_error_code: Vec::new(),
            by_task_type: Vec::new(),
            by_client: Vec::new(),
            by_codebase_path: Vec::new(),
            untracked: Untracked::default(),
        }
    }

    /// The list of `dimension`.
    pub fn of(&self, dimension: Dimension) -> &[(String, u64)] {
        match dimension {
            Dimension::ErrorCode => &self.by_error_code,
            Dimension::TaskType => &self.by_task_type,
            Dimension::Client => &self.by_client,
            Dimension::CodebasePath => &self.by_codebase_path,
        }
    }

    /// The list of `dimension`, to fill.
    pub fn of_mut(&mut self, dimension: Dimension) -> &mut Vec<(String, u64)> {
        match dimension {
            Dimension::ErrorCode => &mut self.by_error_code,
            Dimension::TaskType => &mut self.by_task_type,
            Dimension::Client => &mut self.by_client,
            Dimension::CodebasePath => &mut self.by_codebase_path,
        }
    }

    /// Whether the bucket counts nothing.
    pub fn is_empty(&self) -> bool {
        Dimension::ALL
            .iter()
            .all(|d| self.of(*d).is_empty() && self.untracked.get(*d) == 0)
    }
}

/// Every dimension's counts of one bucket (in the order of [`Dimension::ALL`]), as the
/// memory store keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCounts {
    by: [TrackedCounts; Dimension::ALL.len()],
}

impl BucketCounts {
    /// Add (`+1`) or take away (`-1`) one failure of `task`.
    pub fn apply(&mut self, task: &crate::FailedTask, delta: i64) {
        for (counts, d) in self.by.iter_mut().zip(Dimension::ALL) {
            counts.add(d.of(task), delta);
        }
    }

    /// What a read of `bucket` answers: [`READ_PER_BUCKET`] + 1 values of each dimension.
    pub fn tops(&self, bucket: Bucket) -> BucketTops {
        let mut out = BucketTops::empty(bucket);
        for (counts, d) in self.by.iter().zip(Dimension::ALL) {
            *out.of_mut(d) = counts.top(READ_PER_BUCKET + 1);
            *out.untracked.get_mut(d) = counts.untracked();
        }
        out
    }

    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.by.iter().all(TrackedCounts::is_empty)
    }
}

/// How urgent a firing alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertLevel {
    /// Look at it soon (the lower threshold of a rule is exceeded).
    Warning,
    /// Act now (the higher threshold is exceeded).
    Critical,
}

impl AlertLevel {
    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
        }
    }
}

/// The thresholds of the alert rules (all configurable; the defaults in [`Default`] are the
/// only place they are written). Each rule has a warning and a critical threshold; a critical
/// threshold below its warning one acts as the warning one.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertThresholds {
    /// `sudden_increase` warns when the last 5 minutes exceed this many times the average...
    pub spike_factor: f64,
    /// ... and is critical above this many times.
    pub spike_factor_critical: f64,
    /// ... and hold at least this many failures to warn...
    pub spike_min_count: u64,
    /// ... and at least this many to be critical.
    pub spike_min_count_critical: u64,
    /// `category_threshold` warns above this many failures of one category in the window...
    pub category_max: u64,
    /// ... and is critical above this many.
    pub category_max_critical: u64,
    /// Per-category overrides of `category_max` (the warning level).
    pub category_max_overrides: HashMap<ErrorCategory, u64>,
    /// `error_code_threshold` warns above this many failures of one error code in the window...
    pub error_code_max: u64,
    /// ... and is critical above this many.
    pub error_code_max_critical: u64,
    /// `failure_rate` warns above this fraction of failed attempts...
    pub failure_rate_max: f64,
    /// ... and is critical above this fraction...
    pub failure_rate_max_critical: f64,
    /// ... once at least this many attempts were reported in the window (both levels).
    pub failure_rate_min_attempts: u64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            spike_factor: 3.0,
            spike_factor_critical: 10.0,
            spike_min_count: 10,
            spike_min_count_critical: 50,
            category_max: 100,
            category_max_critical: 500,
            category_max_overrides: HashMap::new(),
            error_code_max: 50,
            error_code_max_critical: 250,
            failure_rate_max: 0.2,
            failure_rate_max_critical: 0.5,
            failure_rate_min_attempts: 20,
        }
    }
}

/// The window of a statistics request: whole minutes `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsWindow {
    from_minute: i64,
    to_minute: i64,
}

impl StatsWindow {
    /// Shortest window: 5 minutes.
    pub const MIN_MINUTES: i64 = 5;
    /// Longest window: 7 days.
    pub const MAX_MINUTES: i64 = 7 * 24 * 60;

    /// The `minutes` whole minutes up to and including the minute of `now`.
    pub fn ending_at(now: Timestamp, minutes: i64) -> Result<Self, ValidationError> {
        if !(Self::MIN_MINUTES..=Self::MAX_MINUTES).contains(&minutes) {
            return Err(ValidationError::new(
                "window",
                format!("must be between 5m and 7d, got {minutes} minutes"),
            ));
        }
        let to_minute = minute_of(now) + 1;
        Ok(Self {
            from_minute: to_minute - minutes,
            to_minute,
        })
    }

    /// First minute of the window.
    pub fn from_minute(self) -> i64 {
        self.from_minute
    }
    /// The minute after the window's last.
    pub fn to_minute(self) -> i64 {
        self.to_minute
    }
    /// Length in minutes.
    pub fn minutes(self) -> i64 {
        self.to_minute - self.from_minute
    }
}

/// One evaluated alert rule that fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `sudden_increase`, `category_threshold`, `error_code_threshold` or `failure_rate`.
    pub rule: &'static str,
    /// The highest level whose threshold the figure exceeds.
    pub level: AlertLevel,
    /// The category or error code concerned, when the rule has one.
    pub subject: Option<String>,
    /// The measured figure (a count, or a rate for `failure_rate`).
    pub figure: f64,
    /// The threshold of `level` that it exceeds.
    pub threshold: f64,
    /// Since when it holds: the start of the minute its figure last crossed that threshold.
    pub since: Timestamp,
}

/// Statistics of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureStats {
    /// The window.
    pub window: StatsWindow,
    /// Failures in the window.
    pub total: u64,
    /// By category, all five (zero included).
    pub by_category: Vec<(ErrorCategory, u64)>,
    /// By error code, most frequent first, at most `top` of them.
    pub by_error_code: Vec<(String, u64)>,
    /// By task type, most frequent first, at most [`READ_PER_BUCKET`] of them.
    pub by_task_type: Vec<(String, u64)>,
    /// By client, most frequent first, at most `top` of them.
    pub top_clients: Vec<(String, u64)>,
    /// By codebase, most frequent first, at most `top` of them.
    pub by_codebase_path: Vec<(String, u64)>,
    /// Failures in the window counted in no breakdown of their dimension (their value was
    /// first seen in a bucket that already tracked [`TRACKED_PER_BUCKET`] values).
    pub untracked: Untracked,
    /// Whether the four breakdowns are exact: no bucket of the window had more values of a
    /// dimension than a read takes ([`READ_PER_BUCKET`]) and none was untracked. When not,
    /// each count is a lower bound and a value may be missing (see the module docs).
    pub breakdowns_exact: bool,
    /// Failures per minute over the whole window, oldest first, zeros included.
    pub timeline: Vec<(i64, u64)>,
    /// Failed tasks resolved in the window (their retry succeeded).
    pub recovered: u64,
    /// Failed tasks superseded in the window (a later run of the same task type, client and
    /// codebase succeeded).
    pub superseded: u64,
    /// Task attempts reported in the window, if any were.
    pub attempts: Option<u64>,
    /// `total / attempts`, when attempts were reported.
    pub failure_rate: Option<f64>,
    /// The alert rules that fire.
    pub alerts: Vec<Alert>,
}

/// The first instant of a minute.
pub fn minute_start(minute: i64) -> Timestamp {
    Timestamp::saturating_from_unix_millis(minute.saturating_mul(MINUTE_MS))
}

fn top(map: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.into_iter().filter(|(_, c)| *c > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// The minute within `series` (oldest first) at which the running sum first exceeded
/// `threshold`, if it did.
fn crossing(series: impl Iterator<Item = (i64, u64)>, threshold: f64) -> Option<i64> {
    let mut sum = 0u64;
    for (minute, n) in series {
        sum += n;
        if sum as f64 > threshold {
            return Some(minute);
        }
    }
    None
}

/// The level a count `n` fires at, with that level's threshold: above `critical` (never
/// below `warning`) it is critical, above `warning` a warning.
fn count_level(n: u64, warning: u64, critical: u64) -> Option<(AlertLevel, u64)> {
    if n > critical {
        Some((AlertLevel::Critical, critical))
    } else if n > warning {
        Some((AlertLevel::Warning, warning))
    } else {
        None
    }
}

/// Statistics and alerts of `window` from its minute counts and the most frequent values of
/// its buckets (only minutes and buckets inside the window are used; absent ones count zero)
/// and attempt counts `(minute, attempts)`.
pub fn summarize(
    window: StatsWindow,
    counts: &[MinuteCounts],
    tops: &[BucketTops],
    attempts: &[(i64, u64)],
    thresholds: &AlertThresholds,
    top_n: usize,
) -> FailureStats {
    let inside = |m: i64| m >= window.from_minute && m < window.to_minute;
    let mut per_minute: BTreeMap<i64, &MinuteCounts> = BTreeMap::new();
    for c in counts.iter().filter(|c| inside(c.minute)) {
        per_minute.insert(c.minute, c);
    }
    let wanted: std::collections::HashSet<Bucket> = buckets(window.from_minute, window.to_minute)
        .into_iter()
        .collect();
    let mut per_bucket: BTreeMap<Bucket, &BucketTops> = BTreeMap::new();
    for t in tops.iter().filter(|t| wanted.contains(&t.bucket)) {
        per_bucket.insert(t.bucket, t);
    }
    let mut by_category: BTreeMap<ErrorCategory, u64> =
        ErrorCategory::ALL.iter().map(|c| (*c, 0)).collect();
    let mut total = 0u64;
    let mut recovered = 0u64;
    let mut superseded = 0u64;
    for c in per_minute.values() {
        total += c.total;
        recovered += c.recovered;
        superseded += c.superseded;
        for (k, v) in &c.by_category {
            *by_category.entry(*k).or_default() += v;
        }
    }
    let mut merged: [HashMap<String, u64>; Dimension::ALL.len()] = Default::default();
    let mut untracked = Untracked::default();
    let mut breakdowns_exact = true;
    for t in per_bucket.values() {
        for (i, d) in Dimension::ALL.into_iter().enumerate() {
            let list = t.of(d);
            breakdowns_exact &= list.len() <= READ_PER_BUCKET && t.untracked.get(d) == 0;
            for (k, v) in list.iter().take(READ_PER_BUCKET) {
                *merged[i].entry(k.clone()).or_default() += v;
            }
            *untracked.get_mut(d) += t.untracked.get(d);
        }
    }
    let [by_code, by_type, by_client, by_codebase] = merged;
    let timeline: Vec<(i64, u64)> = (window.from_minute..window.to_minute)
        .map(|m| (m, per_minute.get(&m).map_or(0, |c| c.total)))
        .collect();
    let attempts_in: Vec<(i64, u64)> = {
        let mut per: BTreeMap<i64, u64> = BTreeMap::new();
        for (m, n) in attempts.iter().filter(|(m, _)| inside(*m)) {
            *per.entry(*m).or_default() += n;
        }
        per.into_iter().collect()
    };
    let attempts_total: u64 = attempts_in.iter().map(|(_, n)| n).sum();

    let mut alerts = Vec::new();

    // sudden_increase: the last 5 minutes against the rest of the window per 5 minutes.
    let recent_from = window.to_minute - 5;
    let recent: u64 = timeline
        .iter()
        .filter(|(m, _)| *m >= recent_from)
        .map(|(_, n)| n)
        .sum();
    let earlier_blocks = (window.minutes() - 5) as f64 / 5.0;
    let baseline = if earlier_blocks > 0.0 {
        (total - recent) as f64 / earlier_blocks
    } else {
        0.0
    };
    let trigger = |factor: f64, min_count: u64| (factor * baseline).max(min_count as f64 - 1.0);
    let spike_level = [
        (
            AlertLevel::Critical,
            thresholds
                .spike_factor_critical
                .max(thresholds.spike_factor),
            thresholds
                .spike_min_count_critical
                .max(thresholds.spike_min_count),
        ),
        (
            AlertLevel::Warning,
            thresholds.spike_factor,
            thresholds.spike_min_count,
        ),
    ]
    .into_iter()
    .find(|(_, factor, min_count)| {
        recent >= *min_count && recent as f64 > trigger(*factor, *min_count)
    });
    if let Some((level, factor, min_count)) = spike_level {
        let since = crossing(
            timeline.iter().copied().filter(|(m, _)| *m >= recent_from),
            trigger(factor, min_count),
        )
        .unwrap_or(recent_from);
        alerts.push(Alert {
            rule: "sudden_increase",
            level,
            subject: None,
            figure: recent as f64,
            threshold: factor * baseline,
            since: minute_start(since),
        });
    }

    // category_threshold and error_code_threshold.
    for (category, n) in &by_category {
        let warning = thresholds
            .category_max_overrides
            .get(category)
            .copied()
            .unwrap_or(thresholds.category_max);
        let critical = thresholds.category_max_critical.max(warning);
        if let Some((level, max)) = count_level(*n, warning, critical) {
            let series = per_minute
                .iter()
                .map(|(m, c)| (*m, c.by_category.get(category).copied().unwrap_or(0)));
            alerts.push(Alert {
                rule: "category_threshold",
                level,
                subject: Some(category.as_str().to_owned()),
                figure: *n as f64,
                threshold: max as f64,
                since: minute_start(crossing(series, max as f64).unwrap_or(window.from_minute)),
            });
        }
    }
    let code_critical = thresholds
        .error_code_max_critical
        .max(thresholds.error_code_max);
    let mut codes: Vec<(&String, &u64)> = by_code
        .iter()
        .filter(|(_, n)| **n > thresholds.error_code_max)
        .collect();
    codes.sort();
    for (code, n) in codes {
        let Some((level, max)) = count_level(*n, thresholds.error_code_max, code_critical) else {
            continue;
        };
        let series = per_bucket.iter().map(|(b, t)| {
            let n = t
                .by_error_code
                .iter()
                .take(READ_PER_BUCKET)
                .find(|(k, _)| k == code)
                .map_or(0, |(_, n)| *n);
            (b.first_minute(), n)
        });
        alerts.push(Alert {
            rule: "error_code_threshold",
            level,
            subject: Some(code.clone()),
            figure: *n as f64,
            threshold: max as f64,
            since: minute_start(crossing(series, max as f64).unwrap_or(window.from_minute)),
        });
    }

    // failure_rate: since = the start of the current run above the threshold, cumulatively.
    let failure_rate = (attempts_total > 0).then(|| total as f64 / attempts_total as f64);
    let rate_level = failure_rate
        .filter(|_| attempts_total >= thresholds.failure_rate_min_attempts)
        .and_then(|rate| {
            [
                (
                    AlertLevel::Critical,
                    thresholds
                        .failure_rate_max_critical
                        .max(thresholds.failure_rate_max),
                ),
                (AlertLevel::Warning, thresholds.failure_rate_max),
            ]
            .into_iter()
            .find(|(_, max)| rate > *max)
            .map(|(level, max)| (rate, level, max))
        });
    if let Some((rate, level, max)) = rate_level {
        let attempts_map: BTreeMap<i64, u64> = attempts_in.iter().copied().collect();
        let (mut f, mut a) = (0u64, 0u64);
        let mut since = window.from_minute;
        let mut above = false;
        for (m, n) in &timeline {
            f += n;
            a += attempts_map.get(m).copied().unwrap_or(0);
            let now_above = a > 0 && f as f64 / a as f64 > max;
            if now_above && !above {
                since = *m;
            }
            above = now_above;
        }
        alerts.push(Alert {
            rule: "failure_rate",
            level,
            subject: None,
            figure: rate,
            threshold: max,
            since: minute_start(since),
        });
    }

    FailureStats {
        window,
        total,
        by_category: by_category.into_iter().collect(),
        by_error_code: top(by_code, top_n),
        by_task_type: top(by_type, READ_PER_BUCKET),
        top_clients: top(by_client, top_n),
        by_codebase_path: top(by_codebase, top_n),
        untracked,
        breakdowns_exact,
        timeline,
        recovered,
        superseded,
        attempts: (attempts_total > 0).then_some(attempts_total),
        failure_rate,
        alerts,
    }
}

impl MinuteCounts {
    /// Add (`+1`) or take away (`-1`) one failure of `task` in its minute.
    pub fn apply(&mut self, task: &crate::FailedTask, delta: i64) {
        self.total = self.total.saturating_add_signed(delta);
        let v = self.by_category.entry(task.error_category()).or_default();
        *v = v.saturating_add_signed(delta);
        self.by_category.retain(|_, v| *v > 0);
    }
}
