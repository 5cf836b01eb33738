//! The alert source: evaluates the server-side alert rules (the statistics' `Alerts`) every
//! `alert_interval` and turns changes into events: `alert.firing` when a rule starts firing
//! for a subject or changes level, `alert.resolved` once it has not fired for
//! `alert_resolve_after`. What fires is kept in the notifier's state (`alert:RULE:SUBJECT`
//! = `LEVEL` or `LEVEL|GONE_SINCE_MS`), so a restart neither repeats nor forgets one.

use std::collections::BTreeMap;

use failed_tasks_domain::stats::{Alert, FailureStats};
use failed_tasks_domain::Timestamp;
use serde_json::{json, Map, Value};

use crate::event::{new_id, Event, EventKind, Level};
use crate::links::Links;
use crate::Observed;

/// The state key of the last evaluation time (ms).
const EVALUATED: &str = "alerts.at";
/// The prefix of the firing alerts' state keys.
const PREFIX: &str = "alert:";

/// Whether the rules are due for evaluation at `now_ms`.
pub(crate) fn due(values: &BTreeMap<String, String>, now_ms: i64, interval_ms: i64) -> bool {
    values
        .get(EVALUATED)
        .and_then(|v| v.parse::<i64>().ok())
        .is_none_or(|at| now_ms - at >= interval_ms || now_ms < at)
}

fn key(alert: &Alert) -> String {
    format!(
        "{PREFIX}{}:{}",
        alert.rule,
        alert.subject.as_deref().unwrap_or("-")
    )
}

fn level_of(alert: &Alert) -> Level {
    match alert.level {
        failed_tasks_domain::stats::AlertLevel::Warning => Level::Warning,
        failed_tasks_domain::stats::AlertLevel::Critical => Level::Critical,
    }
}

/// The scope an alert is about: the category of a category rule.
fn scope(rule: &str, subject: Option<&str>) -> Value {
    match (rule, subject) {
        ("category_threshold", Some(c)) => json!({"ErrorCategory": c}),
        _ => json!({}),
    }
}

fn figure(rule: &str, x: f64) -> String {
    if rule == "failure_rate" {
        format!("{:.1} %", x * 100.0)
    } else if rule == "sudden_increase" {
        format!("{x:.1}x")
    } else {
        format!("{x:.0}")
    }
}

/// Compare what fires now (`stats`) with the state, at `now`: the events and state changes.
pub(crate) fn observe(
    values: &BTreeMap<String, String>,
    stats: &FailureStats,
    now: Timestamp,
    resolve_after_ms: i64,
    links: &Links,
    out: &mut Observed,
) {
    let now_ms = now.unix_millis();
    let window_minutes = stats.window.minutes();
    let mut firing: BTreeMap<String, &Alert> = BTreeMap::new();
    for alert in &stats.alerts {
        firing.insert(key(alert), alert);
    }
    for (k, alert) in &firing {
        let level = level_of(alert);
        let was = values.get(k.as_str());
        let was_level = was.and_then(|v| Level::parse(v.split('|').next().unwrap_or("")));
        if was_level != Some(level) {
            out.events.push(firing_event(
                alert,
                level,
                window_minutes,
                now,
                links,
                stats,
            ));
        }
        if was.map(String::as_str) != Some(level.as_str()) {
            out.state.push((k.clone(), Some(level.as_str().to_owned())));
        }
    }
    for (k, v) in values.range(PREFIX.to_owned()..) {
        if !k.starts_with(PREFIX) {
            break;
        }
        if firing.contains_key(k) {
            continue;
        }
        let mut parts = v.split('|');
        let level = parts.next().unwrap_or("warning");
        match parts.next().and_then(|g| g.parse::<i64>().ok()) {
            Some(gone) if now_ms - gone >= resolve_after_ms => {
                out.events.push(resolved_event(k, level, gone, now, links));
                out.state.push((k.clone(), None));
            }
            Some(_) => {}
            None if resolve_after_ms <= 0 => {
                out.events
                    .push(resolved_event(k, level, now_ms, now, links));
                out.state.push((k.clone(), None));
            }
            None => out
                .state
                .push((k.clone(), Some(format!("{level}|{now_ms}")))),
        }
    }
    out.state
        .push((EVALUATED.to_owned(), Some(now_ms.to_string())));
}

fn firing_event(
    alert: &Alert,
    level: Level,
    window_minutes: i64,
    now: Timestamp,
    links: &Links,
    stats: &FailureStats,
) -> Event {
    let subject = alert.subject.as_deref();
    let on = subject.map(|s| format!(" on {s}")).unwrap_or_default();
    let summary = format!(
        "{} alert {}{on}: {} (threshold {}) over {window_minutes} minutes",
        level.as_str(),
        alert.rule,
        figure(alert.rule, alert.figure),
        figure(alert.rule, alert.threshold),
    );
    let mut details = Map::new();
    details.insert("Rule".into(), json!(alert.rule));
    details.insert("Subject".into(), json!(subject));
    details.insert("Figure".into(), json!(alert.figure));
    details.insert("Threshold".into(), json!(alert.threshold));
    details.insert("WindowMinutes".into(), json!(window_minutes));
    details.insert("Since".into(), json!(alert.since.to_rfc3339()));
    details.insert("TotalFailures".into(), json!(stats.total));
    details.insert("Scope".into(), scope(alert.rule, subject));
    Event {
        event: EventKind::AlertFiring.as_str().to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: level.as_str().to_owned(),
        summary,
        link: links.alert(alert.rule, subject, stats),
        details,
    }
}

fn resolved_event(key: &str, level: &str, gone_ms: i64, now: Timestamp, links: &Links) -> Event {
    let rest = key.strip_prefix(PREFIX).unwrap_or(key);
    let (rule, subject) = rest.split_once(':').unwrap_or((rest, "-"));
    let subject = (subject != "-").then_some(subject);
    let on = subject.map(|s| format!(" on {s}")).unwrap_or_default();
    let mut details = Map::new();
    details.insert("Rule".into(), json!(rule));
    details.insert("Subject".into(), json!(subject));
    details.insert("LevelWas".into(), json!(level));
    details.insert(
        "StoppedAt".into(),
        json!(Timestamp::saturating_from_unix_millis(gone_ms).to_rfc3339()),
    );
    details.insert("Scope".into(), scope(rule, subject));
    Event {
        event: EventKind::AlertResolved.as_str().to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: Level::Info.as_str().to_owned(),
        summary: format!("resolved: alert {rule}{on} no longer fires"),
        link: links.overview(),
        details,
    }
}
