//! Failure statistics over a window and the source's alert rules, computed from per-minute
//! counters that the stores keep up to date on every write.
//!
//! Stores never scan tasks to answer a statistics request: they keep one [`MinuteCounts`] per
//! minute that had failures (incremented when a task is recorded, decremented when it is
//! removed, moved when an upsert changes it) and task-attempt counts per minute. A request
//! reads the minutes of its window, so its cost depends on the window, not on how many
//! failures are stored. [`summarize`] then does the arithmetic, here, once for every store.
//!
//! # Alert rules (the source's 告警建议)
//! - `sudden_increase`: the failures of the last 5 minutes exceed `spike_factor` times the
//!   window's average per 5 minutes (the window without those 5 minutes), and at least
//!   `spike_min_count` of them (critical: `spike_factor_critical`, `spike_min_count_critical`).
//! - `category_threshold` / `error_code_threshold`: one category (error code) failed more
//!   than its threshold within the window.
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

/// Failures that happened within one minute, broken down four ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    /// Failures in this minute.
    pub total: u64,
    /// By category.
    pub by_category: BTreeMap<ErrorCategory, u64>,
    /// By error code.
    pub by_error_code: BTreeMap<String, u64>,
    /// By task type.
    pub by_task_type: BTreeMap<String, u64>,
    /// By client.
    pub by_client: BTreeMap<String, u64>,
    /// Failed tasks resolved (their retry succeeded) in this minute. Not part of `total`:
    /// a resolved task's failure stays counted in the minute it failed.
    pub recovered: u64,
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
    /// By task type, most frequent first.
    pub by_task_type: Vec<(String, u64)>,
    /// By client, most frequent first, at most `top` of them.
    pub top_clients: Vec<(String, u64)>,
    /// Failures per minute over the whole window, oldest first, zeros included.
    pub timeline: Vec<(i64, u64)>,
    /// Failed tasks resolved in the window (their retry succeeded).
    pub recovered: u64,
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

/// Statistics and alerts of `window` from its minute counts (only minutes inside the window
/// are used; absent minutes count zero) and attempt counts `(minute, attempts)`.
pub fn summarize(
    window: StatsWindow,
    counts: &[MinuteCounts],
    attempts: &[(i64, u64)],
    thresholds: &AlertThresholds,
    top_n: usize,
) -> FailureStats {
    let inside = |m: i64| m >= window.from_minute && m < window.to_minute;
    let mut per_minute: BTreeMap<i64, &MinuteCounts> = BTreeMap::new();
    for c in counts.iter().filter(|c| inside(c.minute)) {
        per_minute.insert(c.minute, c);
    }
    let mut by_category: BTreeMap<ErrorCategory, u64> =
        ErrorCategory::ALL.iter().map(|c| (*c, 0)).collect();
    let mut by_code: HashMap<String, u64> = HashMap::new();
    let mut by_type: HashMap<String, u64> = HashMap::new();
    let mut by_client: HashMap<String, u64> = HashMap::new();
    let mut total = 0u64;
    let mut recovered = 0u64;
    for c in per_minute.values() {
        total += c.total;
        recovered += c.recovered;
        for (k, v) in &c.by_category {
            *by_category.entry(*k).or_default() += v;
        }
        for (k, v) in &c.by_error_code {
            *by_code.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &c.by_task_type {
            *by_type.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &c.by_client {
            *by_client.entry(k.clone()).or_default() += v;
        }
    }
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
        let series = per_minute
            .iter()
            .map(|(m, c)| (*m, c.by_error_code.get(code).copied().unwrap_or(0)));
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
        by_task_type: top(by_type, usize::MAX),
        top_clients: top(by_client, top_n),
        timeline,
        recovered,
        attempts: (attempts_total > 0).then_some(attempts_total),
        failure_rate,
        alerts,
    }
}

impl MinuteCounts {
    /// Add (`+1`) or take away (`-1`) one failure of `task` in its minute.
    pub fn apply(&mut self, task: &crate::FailedTask, delta: i64) {
        fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, k: K, delta: i64) {
            let v = map.entry(k).or_default();
            *v = v.saturating_add_signed(delta);
        }
        self.total = self.total.saturating_add_signed(delta);
        bump(&mut self.by_category, task.error_category(), delta);
        bump(
            &mut self.by_error_code,
            task.error_code().to_string(),
            delta,
        );
        bump(&mut self.by_task_type, task.task_type().to_string(), delta);
        bump(&mut self.by_client, task.client_id().to_string(), delta);
        self.by_category.retain(|_, v| *v > 0);
        self.by_error_code.retain(|_, v| *v > 0);
        self.by_task_type.retain(|_, v| *v > 0);
        self.by_client.retain(|_, v| *v > 0);
    }
}
