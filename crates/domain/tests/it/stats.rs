//! The alert rules with controlled fail times: what fires, what does not, and since when.

use failed_tasks_domain::stats::{
    buckets, minute_of, summarize as summarize_parts, AlertLevel, AlertThresholds, Bucket,
    BucketCounts, BucketTops, FailureStats, MinuteCounts, StatsWindow, TrackedCounts, Untracked,
    READ_PER_BUCKET, TRACKED_PER_BUCKET,
};
use failed_tasks_domain::{ErrorCategory, FailedTask, NewFailedTask, Timestamp};

const BASE: i64 = 1_737_709_200_000; // 2025-01-24T09:00:00Z

fn task(id: usize, minute: i64, category: ErrorCategory, code: &str) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: format!("t{id}"),
        task_type: "embedding".into(),
        client_id: format!("client{}", id % 3),
        fail_time: Timestamp::from_unix_millis(BASE + minute * 60_000 + 1_000).unwrap(),
        start_time: Timestamp::from_unix_millis(BASE).unwrap(),
        error_code: code.into(),
        error_category: Some(category),
        ..Default::default()
    })
    .unwrap()
}

/// The counters of some failures, as a store keeps them: per minute, and the tasks, to count
/// the buckets of a window from.
struct Counts {
    minutes: Vec<MinuteCounts>,
    tasks: Vec<FailedTask>,
}

impl std::ops::Deref for Counts {
    type Target = [MinuteCounts];
    fn deref(&self) -> &[MinuteCounts] {
        &self.minutes
    }
}

impl Counts {
    /// What a store reads for `window`: each of its buckets' most frequent values.
    fn tops(&self, window: StatsWindow) -> Vec<BucketTops> {
        buckets(window.from_minute(), window.to_minute())
            .into_iter()
            .map(|b| {
                let mut c = BucketCounts::default();
                for t in &self.tasks {
                    let m = minute_of(t.fail_time());
                    let inside = match b {
                        Bucket::Minute(x) => m == x,
                        Bucket::Hour(h) => m.div_euclid(60) == h,
                    };
                    if inside {
                        c.apply(t, 1);
                    }
                }
                c.tops(b)
            })
            .collect()
    }
}

/// The statistics of `window` over `c`, as the use case computes them from a store's reads.
fn summarize(
    window: StatsWindow,
    c: &Counts,
    attempts: &[(i64, u64)],
    thresholds: &AlertThresholds,
    top_n: usize,
) -> FailureStats {
    summarize_parts(window, c, &c.tops(window), attempts, thresholds, top_n)
}

/// Minute counts of `per_minute[i]` failures in minute i (after BASE), all one category/code.
fn counts(per_minute: &[u64], category: ErrorCategory, code: &str) -> Counts {
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    let mut id = 0;
    for (i, n) in per_minute.iter().enumerate() {
        let t0 = task(0, i as i64, category, code);
        let mut c = MinuteCounts {
            minute: minute_of(t0.fail_time()),
            ..Default::default()
        };
        for _ in 0..*n {
            id += 1;
            let t = task(id, i as i64, category, code);
            c.apply(&t, 1);
            tasks.push(t);
        }
        out.push(c);
    }
    Counts {
        minutes: out,
        tasks,
    }
}

fn window_of(minutes: usize) -> StatsWindow {
    let now = Timestamp::from_unix_millis(BASE + (minutes as i64 - 1) * 60_000 + 30_000).unwrap();
    StatsWindow::ending_at(now, minutes as i64).unwrap()
}

fn loose() -> AlertThresholds {
    AlertThresholds {
        category_max: 1_000_000,
        error_code_max: 1_000_000,
        ..Default::default()
    }
}

#[test]
fn a_spike_in_the_last_five_minutes_fires_since_it_crossed() {
    // 55 quiet minutes at 1/min, then 2, 30, 30, 30, 30.
    let mut per = vec![1u64; 55];
    per.extend([2, 30, 30, 30, 30]);
    let thresholds = AlertThresholds {
        spike_factor_critical: 100.0,
        ..loose()
    };
    let stats = summarize(
        window_of(60),
        &counts(&per, ErrorCategory::SystemError, "E"),
        &[],
        &thresholds,
        10,
    );
    assert_eq!(stats.total, 55 + 122);
    let spike = stats
        .alerts
        .iter()
        .find(|a| a.rule == "sudden_increase")
        .expect("spike fires");
    assert_eq!(spike.figure, 122.0);
    assert_eq!(spike.level, AlertLevel::Warning, "122 < 100 x 5");
    assert!(
        (spike.threshold - 15.0).abs() < 1e-9,
        "3 x (55 / 11 blocks) = 15, got {}",
        spike.threshold
    );
    // Running sum of the last 5 minutes crosses 15 in its second minute (2 + 30).
    assert_eq!(spike.since.to_rfc3339(), "2025-01-24T09:56:00Z");
}

#[test]
fn a_spike_past_the_critical_factor_is_critical_since_it_crossed_that() {
    let mut per = vec![1u64; 55];
    per.extend([2, 30, 30, 30, 30]);
    // Defaults: critical above 10 x the average per 5 minutes (10 x 5 = 50) and at least 50.
    let stats = summarize(
        window_of(60),
        &counts(&per, ErrorCategory::SystemError, "E"),
        &[],
        &loose(),
        10,
    );
    let spikes: Vec<_> = stats
        .alerts
        .iter()
        .filter(|a| a.rule == "sudden_increase")
        .collect();
    assert_eq!(spikes.len(), 1, "one alert per rule, at its highest level");
    assert_eq!(spikes[0].level, AlertLevel::Critical);
    assert!((spikes[0].threshold - 50.0).abs() < 1e-9, "{:?}", spikes[0]);
    // 2, 32, 62: the running sum passes 49 (the trigger) in the third minute.
    assert_eq!(spikes[0].since.to_rfc3339(), "2025-01-24T09:57:00Z");

    // From a silent baseline, 12 failures warn (>= 10) but are not critical (< 50).
    let mut quiet = vec![0u64; 55];
    quiet.extend([0, 0, 4, 4, 4]);
    let stats = summarize(
        window_of(60),
        &counts(&quiet, ErrorCategory::SystemError, "E"),
        &[],
        &loose(),
        10,
    );
    let spike = stats
        .alerts
        .iter()
        .find(|a| a.rule == "sudden_increase")
        .expect("spike fires");
    assert_eq!(spike.level, AlertLevel::Warning);
}

#[test]
fn a_steady_rate_does_not_fire() {
    let per = vec![4u64; 60];
    let stats = summarize(
        window_of(60),
        &counts(&per, ErrorCategory::SystemError, "E"),
        &[],
        &loose(),
        10,
    );
    assert_eq!(stats.total, 240);
    assert!(stats.alerts.is_empty(), "{:?}", stats.alerts);
    assert_eq!(stats.timeline.len(), 60);
    assert!(stats.timeline.iter().all(|(_, n)| *n == 4));
}

#[test]
fn a_small_burst_below_the_minimum_does_not_fire() {
    let mut per = vec![0u64; 55];
    per.extend([0, 0, 3, 3, 3]); // 9 < spike_min_count 10, though infinitely above a zero baseline
    let stats = summarize(
        window_of(60),
        &counts(&per, ErrorCategory::SystemError, "E"),
        &[],
        &loose(),
        10,
    );
    assert!(
        stats.alerts.iter().all(|a| a.rule != "sudden_increase"),
        "{:?}",
        stats.alerts
    );
}

#[test]
fn category_and_error_code_thresholds() {
    let per = vec![2u64; 60]; // 120 authorization failures with code DENIED
    let thresholds = AlertThresholds {
        category_max: 100,
        error_code_max: 50,
        ..Default::default()
    };
    let stats = summarize(
        window_of(60),
        &counts(&per, ErrorCategory::Authorization, "DENIED"),
        &[],
        &thresholds,
        10,
    );
    let cat = stats
        .alerts
        .iter()
        .find(|a| a.rule == "category_threshold")
        .expect("category fires");
    assert_eq!(cat.subject.as_deref(), Some("authorization"));
    assert_eq!(cat.level, AlertLevel::Warning);
    assert_eq!((cat.figure, cat.threshold), (120.0, 100.0));
    // 2/min: the running count exceeds 100 in minute 50 (102).
    assert_eq!(cat.since.to_rfc3339(), "2025-01-24T09:50:00Z");
    let code = stats
        .alerts
        .iter()
        .find(|a| a.rule == "error_code_threshold")
        .expect("code fires");
    assert_eq!(code.subject.as_deref(), Some("DENIED"));
    // 52 > 50 in minute 25, but the window is one whole hour: one bucket, since its start.
    assert_eq!(code.since.to_rfc3339(), "2025-01-24T09:00:00Z");
    assert_eq!(
        stats
            .by_category
            .iter()
            .find(|(c, _)| *c == ErrorCategory::Authorization)
            .unwrap()
            .1,
        120
    );
    assert_eq!(stats.by_error_code, vec![("DENIED".to_owned(), 120)]);
    assert_eq!(stats.top_clients.len(), 3);

    let critical = summarize(
        window_of(60),
        &counts(&per, ErrorCategory::Authorization, "DENIED"),
        &[],
        &AlertThresholds {
            category_max_critical: 110,
            error_code_max_critical: 10, // below the warning threshold: acts as 50
            ..thresholds.clone()
        },
        10,
    );
    let levels: Vec<(&str, AlertLevel, f64, String)> = critical
        .alerts
        .iter()
        .map(|a| (a.rule, a.level, a.threshold, a.since.to_rfc3339()))
        .collect();
    assert!(
        levels.contains(&(
            "category_threshold",
            AlertLevel::Critical,
            110.0,
            "2025-01-24T09:55:00Z".to_owned() // 112 > 110
        )),
        "{levels:?}"
    );
    assert!(
        levels.contains(&(
            "error_code_threshold",
            AlertLevel::Critical,
            50.0,
            "2025-01-24T09:00:00Z".to_owned()
        )),
        "{levels:?}"
    );
    assert_eq!(
        critical
            .alerts
            .iter()
            .filter(|a| a.rule == "category_threshold")
            .count(),
        1
    );

    let below = summarize(
        window_of(60),
        &counts(&per[..40], ErrorCategory::Authorization, "DENIED"),
        &[],
        &thresholds,
        10,
    );
    assert!(
        below.alerts.iter().all(|a| a.rule != "category_threshold"),
        "80 is under 100"
    );
}

#[test]
fn failure_rate_over_threshold_fires_only_with_enough_attempts() {
    let per = vec![1u64; 60]; // 60 failures
    let c = counts(&per, ErrorCategory::ServiceTimeout, "T");
    let first = c[0].minute;
    // 10 attempts per minute: rate 0.1, under 0.2.
    let steady: Vec<(i64, u64)> = (0..60).map(|i| (first + i, 10)).collect();
    let ok = summarize(window_of(60), &c, &steady, &loose(), 10);
    assert_eq!(ok.attempts, Some(600));
    assert!((ok.failure_rate.unwrap() - 0.1).abs() < 1e-9);
    assert!(ok.alerts.iter().all(|a| a.rule != "failure_rate"));
    // 5 attempts per minute for 30 minutes (rate exactly 0.2: not above), then 2 per minute:
    // the cumulative rate passes 0.2 in minute 30 (31 / 152) and stays above.
    let falling: Vec<(i64, u64)> = (0..60)
        .map(|i| (first + i, if i < 30 { 5 } else { 2 }))
        .collect();
    let bad = summarize(window_of(60), &c, &falling, &loose(), 10);
    let alert = bad
        .alerts
        .iter()
        .find(|a| a.rule == "failure_rate")
        .expect("rate fires");
    assert!((alert.figure - 60.0 / 210.0).abs() < 1e-9, "{alert:?}");
    assert_eq!(alert.threshold, 0.2);
    assert_eq!(alert.level, AlertLevel::Warning, "0.29 < 0.5");
    assert_eq!(alert.since.to_rfc3339(), "2025-01-24T09:30:00Z");
    // Critical above 0.25: the cumulative rate passes it in minute 45 (46 / 182).
    let strict = AlertThresholds {
        failure_rate_max_critical: 0.25,
        ..loose()
    };
    let crit = summarize(window_of(60), &c, &falling, &strict, 10);
    let alert = crit
        .alerts
        .iter()
        .find(|a| a.rule == "failure_rate")
        .expect("rate fires");
    assert_eq!(
        (alert.level, alert.threshold, alert.since.to_rfc3339()),
        (
            AlertLevel::Critical,
            0.25,
            "2025-01-24T09:45:00Z".to_owned()
        )
    );
    // Too few attempts: no verdict.
    let few = summarize(window_of(60), &c, &[(first, 5)], &loose(), 10);
    assert!(few.alerts.iter().all(|a| a.rule != "failure_rate"));
    assert_eq!(few.failure_rate, Some(12.0));
}

#[test]
fn windows_are_bounded() {
    let now = Timestamp::from_unix_millis(BASE).unwrap();
    assert!(StatsWindow::ending_at(now, 4).is_err());
    assert!(StatsWindow::ending_at(now, 5).is_ok());
    assert!(StatsWindow::ending_at(now, 7 * 24 * 60).is_ok());
    assert_eq!(
        StatsWindow::ending_at(now, 7 * 24 * 60 + 1)
            .unwrap_err()
            .field,
        "window"
    );
}

#[test]
fn removing_what_was_added_leaves_nothing() {
    let t = task(1, 0, ErrorCategory::DataError, "PARSE");
    let mut c = MinuteCounts::default();
    c.apply(&t, 1);
    c.apply(&t, -1);
    assert_eq!(c.total, 0);
    assert!(c.by_category.is_empty());
    let mut b = BucketCounts::default();
    b.apply(&t, 1);
    b.apply(&t, -1);
    assert!(b.is_empty());
}

#[test]
fn buckets_cover_a_range_with_whole_hours_and_edge_minutes() {
    assert_eq!(buckets(5, 5), vec![]);
    assert_eq!(
        buckets(58, 61),
        vec![Bucket::Minute(58), Bucket::Minute(59), Bucket::Minute(60)]
    );
    assert_eq!(buckets(60, 120), vec![Bucket::Hour(1)]);
    let b = buckets(59, 181);
    assert_eq!(b.len(), 4);
    assert_eq!(
        b[..3],
        [Bucket::Minute(59), Bucket::Hour(1), Bucket::Hour(2)]
    );
    assert_eq!(b[3], Bucket::Minute(180));
    // A 7-day window: 168 or 167 hours, at most 2 x 59 minutes.
    let week = 7 * 24 * 60;
    for from in [0, 1, 30, 59] {
        let b = buckets(from, from + week);
        let covered: i64 = b
            .iter()
            .map(|b| if matches!(b, Bucket::Hour(_)) { 60 } else { 1 })
            .sum();
        assert_eq!(covered, week);
        assert!(b.len() <= 168 + 118, "{}", b.len());
    }
}

#[test]
fn a_full_bucket_counts_new_values_as_untracked_and_taking_away_stays_exact() {
    let mut c = TrackedCounts::default();
    for i in 0..TRACKED_PER_BUCKET {
        c.add(&format!("v{i:04}"), 1);
    }
    c.add("late", 2);
    c.add("v0000", 1);
    assert_eq!(c.untracked(), 2);
    assert_eq!(c.top(1), vec![("v0000".to_owned(), 2)]);
    // Equal counts: by name descending, as Redis's ZRANGE REV.
    assert_eq!(c.top(2)[1], ("v0999".to_owned(), 1));
    // "late" is not tracked: taking it away lowers the untracked count.
    c.add("late", -1);
    assert_eq!(c.untracked(), 1);
    // Room again: a value counted untracked may now be tracked; its removal then lowers
    // its own count first, and the sum of all counts stays the number of failures.
    c.add("v0001", -1);
    c.add("late", 1);
    assert_eq!(c.top(1), vec![("v0000".to_owned(), 2)]);
    c.add("late", -2);
    assert_eq!(c.untracked(), 0);
    assert!(c
        .top(TRACKED_PER_BUCKET + 1)
        .iter()
        .all(|(k, _)| k != "late"));
}

#[test]
fn breakdowns_say_when_they_are_not_exact() {
    let window = window_of(60);
    let many: Vec<(String, u64)> = (0..=READ_PER_BUCKET)
        .map(|i| (format!("c{i:03}"), 1))
        .collect();
    let mut cut = BucketTops::empty(Bucket::Hour(window.from_minute() / 60));
    cut.by_client = many.clone();
    let stats = summarize_parts(window, &[], &[cut.clone()], &[], &loose(), 20);
    assert!(!stats.breakdowns_exact);
    assert_eq!(stats.top_clients.len(), 20);
    cut.by_client.truncate(READ_PER_BUCKET);
    let stats = summarize_parts(window, &[], &[cut.clone()], &[], &loose(), 20);
    assert!(stats.breakdowns_exact);
    cut.untracked = Untracked {
        clients: 7,
        ..Untracked::default()
    };
    let stats = summarize_parts(window, &[], &[cut], &[], &loose(), 20);
    assert!(!stats.breakdowns_exact);
    assert_eq!(stats.untracked.clients, 7);
    // A bucket outside the window is not used.
    let mut outside = BucketTops::empty(Bucket::Minute(window.to_minute()));
    outside.by_client = many;
    let stats = summarize_parts(window, &[], &[outside], &[], &loose(), 20);
    assert!(stats.top_clients.is_empty() && stats.breakdowns_exact);
}
