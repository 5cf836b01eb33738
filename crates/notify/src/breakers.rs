//! The breaker source: compares the retry circuit breakers' states
//! (`FailedTaskService::breaker_states`) with the breakers the notifier knows open (state
//! keys `breaker:TASK TYPE\tCATEGORY`, the state line as last seen) and turns changes into
//! events: `breaker.opened` for a breaker seen open or half-open that was not known open,
//! `breaker.closed` for a known-open breaker now closed or gone. A breaker that opens again
//! after its canaries failed keeps its gate and sends nothing new; one that closed and
//! opened again between two steps (a new gate) sends both. The first step on a store takes
//! the breakers already open as known (no event), as the gate source does with gates.

use std::collections::BTreeMap;

use failed_tasks_domain::{BreakerKey, BreakerPhase, BreakerState, Timestamp};
use serde_json::{json, Map, Value};

use crate::event::{new_id, Event, EventKind, Level};
use crate::links::Links;
use crate::Observed;

/// The prefix of the known-open breakers' state keys.
const PREFIX: &str = "breaker:";
/// Set once the first step took the breakers already open as known.
const SEEDED: &str = "breakers.seeded";

/// `TaskType=embedding, ErrorCategory=service_timeout`: the breaker's scope as gates show it.
fn scope_text(key: &BreakerKey) -> String {
    format!(
        "TaskType={}, ErrorCategory={}",
        key.task_type.as_str(),
        key.category.as_str()
    )
}

fn details(s: &BreakerState) -> Map<String, Value> {
    let mut scope = Map::new();
    scope.insert("TaskType".into(), json!(s.key.task_type.as_str()));
    scope.insert("ErrorCategory".into(), json!(s.key.category.as_str()));
    let mut details = Map::new();
    details.insert("TaskType".into(), json!(s.key.task_type.as_str()));
    details.insert("ErrorCategory".into(), json!(s.key.category.as_str()));
    details.insert("GateId".into(), json!(s.gate.as_str()));
    details.insert("FailedAgain".into(), json!(s.trigger.failed_again));
    details.insert("Outcomes".into(), json!(s.trigger.total()));
    details.insert("Opens".into(), json!(s.opens));
    details.insert("CooldownSeconds".into(), json!(s.cooldown.as_secs()));
    details.insert("Scope".into(), Value::Object(scope));
    details
}

fn opened(s: &BreakerState, now: Timestamp, links: &Links) -> Event {
    Event {
        event: EventKind::BreakerOpened.as_str().to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: Level::Warning.as_str().to_owned(),
        summary: format!(
            "Circuit breaker opened for {}: {} of {} retries failed again; its retries are held \
             for {} s",
            scope_text(&s.key),
            s.trigger.failed_again,
            s.trigger.total(),
            s.cooldown.as_secs()
        ),
        link: links.overview(),
        details: details(s),
    }
}

fn closed(s: &BreakerState, now: Timestamp, links: &Links) -> Event {
    Event {
        event: EventKind::BreakerClosed.as_str().to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: Level::Info.as_str().to_owned(),
        summary: format!(
            "Circuit breaker closed for {}: its retries go to the workers again",
            scope_text(&s.key)
        ),
        link: links.overview(),
        details: details(s),
    }
}

/// Compare the breakers' `states` with the state, at `now`: the events and state changes.
pub(crate) fn observe(
    values: &BTreeMap<String, String>,
    states: &[BreakerState],
    now: Timestamp,
    links: &Links,
    out: &mut Observed,
) {
    let seeded = values.contains_key(SEEDED);
    let mut current: BTreeMap<String, &BreakerState> = BTreeMap::new();
    for s in states {
        current.insert(format!("{PREFIX}{}", s.key.to_field()), s);
    }
    // Known open: closed now, gone, or opened anew (another gate) since the last step.
    for (key, line) in values.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
        let known = BreakerKey::from_field(&key[PREFIX.len()..])
            .and_then(|k| BreakerState::from_line(k, line));
        let now_state = current.get(key).copied();
        let open_now = now_state.filter(|s| s.phase != BreakerPhase::Closed);
        let Some(known) = known else {
            // A line this version cannot read: forget it (an open breaker is taken anew).
            if open_now.is_none() {
                out.state.push((key.clone(), None));
            }
            continue;
        };
        match open_now {
            Some(s) if s.gate == known.gate => {}
            _ => {
                // Closed: with its closing figures when still listed, else as last seen.
                let last = now_state.filter(|s| s.gate == known.gate).unwrap_or(&known);
                out.events.push(closed(last, now, links));
                if open_now.is_none() {
                    out.state.push((key.clone(), None));
                }
            }
        }
    }
    // Open now: new unless known open with the same gate; the line kept up to date.
    for (key, s) in &current {
        if s.phase == BreakerPhase::Closed {
            continue;
        }
        let line = s.to_line();
        let known = values.get(key);
        if known == Some(&line) {
            continue;
        }
        let same_gate = known
            .and_then(|l| BreakerState::from_line(s.key.clone(), l))
            .is_some_and(|k| k.gate == s.gate);
        if seeded && !same_gate {
            out.events.push(opened(s, now, links));
        }
        out.state.push((key.clone(), Some(line)));
    }
    if !seeded {
        out.state
            .push((SEEDED.to_owned(), Some(now.unix_millis().to_string())));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use failed_tasks_domain::{ErrorCategory, GateId, OutcomeCounts, TaskType};

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_796_112_667_000 + ms).unwrap()
    }

    fn state(task_type: &str, phase: BreakerPhase, gate: u32) -> BreakerState {
        BreakerState {
            key: BreakerKey {
                task_type: TaskType::parse(task_type).unwrap(),
                category: ErrorCategory::ServiceTimeout,
            },
            phase,
            gate: GateId::new(at(0), gate),
            opened: at(0),
            phase_since: at(0),
            cooldown: Duration::from_secs(60),
            opens: 1,
            trigger: OutcomeCounts {
                failed_again: 18,
                resolved: 2,
            },
        }
    }

    /// A notifier's state, stepped like the notifier does: observe, then apply the changes.
    struct Steps {
        values: BTreeMap<String, String>,
        links: Links,
        t: i64,
    }

    impl Steps {
        fn new() -> Self {
            Self {
                values: BTreeMap::new(),
                links: Links::new(Some("https://failures.example".into())),
                t: 0,
            }
        }

        fn step(&mut self, states: &[BreakerState]) -> Vec<Event> {
            self.t += 1000;
            let mut out = Observed::default();
            observe(&self.values, states, at(self.t), &self.links, &mut out);
            for (k, v) in out.state {
                match v {
                    Some(v) => self.values.insert(k, v),
                    None => self.values.remove(&k),
                };
            }
            out.events
        }
    }

    fn kinds(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.event.as_str()).collect()
    }

    #[test]
    fn a_breaker_that_opens_then_closes_is_notified_once_each() {
        let mut steps = Steps::new();
        assert!(steps.step(&[]).is_empty(), "the first step only seeds");
        let open = state("embedding", BreakerPhase::Open, 1);
        let events = steps.step(std::slice::from_ref(&open));
        assert_eq!(kinds(&events), ["breaker.opened"]);
        let e = &events[0];
        assert_eq!(e.level, "warning");
        assert_eq!(
            e.summary,
            "Circuit breaker opened for TaskType=embedding, ErrorCategory=service_timeout: \
             18 of 20 retries failed again; its retries are held for 60 s"
        );
        assert_eq!(
            e.link.as_deref(),
            Some("https://failures.example/ui/#/overview")
        );
        let d = Value::Object(e.details.clone());
        assert_eq!(d["TaskType"], "embedding");
        assert_eq!(d["ErrorCategory"], "service_timeout");
        assert_eq!(d["GateId"], open.gate.as_str());
        assert_eq!(d["FailedAgain"], 18);
        assert_eq!(d["Outcomes"], 20);
        assert_eq!(d["Opens"], 1);
        assert_eq!(d["CooldownSeconds"], 60);
        assert_eq!(e.scope("TaskType"), Some("embedding"));
        assert_eq!(e.scope("ErrorCategory"), Some("service_timeout"));
        // Still open, then half-open: nothing new.
        assert!(steps.step(std::slice::from_ref(&open)).is_empty());
        let half = BreakerState {
            phase: BreakerPhase::HalfOpen,
            phase_since: at(60_000),
            ..open.clone()
        };
        assert!(steps.step(std::slice::from_ref(&half)).is_empty());
        // Closed by its canaries: closed once, with the closing figures.
        let done = BreakerState {
            phase: BreakerPhase::Closed,
            trigger: OutcomeCounts {
                failed_again: 0,
                resolved: 3,
            },
            ..half
        };
        let events = steps.step(std::slice::from_ref(&done));
        assert_eq!(kinds(&events), ["breaker.closed"]);
        assert_eq!(events[0].level, "info");
        assert_eq!(
            events[0].summary,
            "Circuit breaker closed for TaskType=embedding, ErrorCategory=service_timeout: \
             its retries go to the workers again"
        );
        assert_eq!(events[0].details["Outcomes"], 3);
        assert!(steps.step(std::slice::from_ref(&done)).is_empty());
        assert!(
            steps.step(&[]).is_empty(),
            "forgotten after closing: nothing"
        );
    }

    #[test]
    fn a_reopen_after_failed_canaries_is_no_new_event_but_a_close_and_open_is() {
        let mut steps = Steps::new();
        steps.step(&[]);
        let open = state("embedding", BreakerPhase::Open, 1);
        assert_eq!(
            kinds(&steps.step(std::slice::from_ref(&open))),
            ["breaker.opened"]
        );
        // Canaries failed: open again, same gate, twice the cool-down.
        let again = BreakerState {
            phase_since: at(90_000),
            cooldown: Duration::from_secs(120),
            opens: 2,
            ..open.clone()
        };
        assert!(steps.step(std::slice::from_ref(&again)).is_empty());
        // Closed and opened again between two steps: another gate, both events.
        let anew = state("embedding", BreakerPhase::Open, 2);
        let events = steps.step(std::slice::from_ref(&anew));
        assert_eq!(kinds(&events), ["breaker.closed", "breaker.opened"]);
        assert_eq!(events[0].details["GateId"], open.gate.as_str());
        assert_eq!(events[0].details["Opens"], 2, "as last seen");
        assert_eq!(events[1].details["GateId"], anew.gate.as_str());
    }

    #[test]
    fn a_known_breaker_that_is_gone_is_closed_and_the_first_step_only_seeds() {
        let mut steps = Steps::new();
        let open = state("embedding", BreakerPhase::Open, 1);
        let other = state("indexing", BreakerPhase::HalfOpen, 2);
        // Open before the notifier's first step: known, no event.
        assert!(steps.step(&[open.clone(), other.clone()]).is_empty());
        // One gone (an operator released its gate and it was forgotten), one still open.
        let events = steps.step(std::slice::from_ref(&other));
        assert_eq!(kinds(&events), ["breaker.closed"]);
        assert_eq!(events[0].details["TaskType"], "embedding");
        assert_eq!(events[0].details["GateId"], open.gate.as_str());
        assert!(steps.step(std::slice::from_ref(&other)).is_empty());
        // A breaker closed that was never known open sends nothing.
        let closed_only = state("parsing", BreakerPhase::Closed, 3);
        assert!(steps.step(&[other, closed_only]).is_empty());
    }
}
