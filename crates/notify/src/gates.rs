//! The gate source: compares the active retry gates (`FailedTaskService::retry_gates`) with
//! the gates the notifier knows (state keys `gate:ID`) and turns changes into events:
//! `gate.created` for a gate it never saw, `gate.released` for a known gate that is gone
//! (released, or lapsed by its `Until`). The first step on a store takes the gates already
//! there as known (no event), as the group source does with groups.

use std::collections::{BTreeMap, BTreeSet};

use failed_tasks_domain::{GateMode, GateStatus, Timestamp};
use serde_json::{json, Map, Value};

use crate::event::{new_id, Event, EventKind, Level};
use crate::links::Links;
use crate::Observed;

/// The prefix of the known gates' state keys.
const PREFIX: &str = "gate:";
/// Set once the first step took the gates already there as known.
const SEEDED: &str = "gates.seeded";

fn scope_of(g: &GateStatus) -> Map<String, Value> {
    let s = &g.gate.scope;
    let mut scope = Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            scope.insert(k.to_owned(), json!(v));
        }
    };
    put("TaskType", s.task_type.as_ref().map(|v| v.as_str()));
    put("ErrorCategory", s.error_category.map(|c| c.as_str()));
    put("ErrorCode", s.error_code.as_ref().map(|v| v.as_str()));
    put("ClientId", s.client_id.as_ref().map(|v| v.as_str()));
    put("Signature", s.signature.as_ref().map(|v| v.as_str()));
    scope
}

/// `TaskType=embedding, ErrorCategory=service_timeout`, or `every retry`.
fn scope_text(scope: &Map<String, Value>) -> String {
    if scope.is_empty() {
        return "every retry".to_owned();
    }
    scope
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn created(g: &GateStatus, now: Timestamp, links: &Links) -> Event {
    let scope = scope_of(g);
    let mode = match g.gate.mode {
        GateMode::Hold => "hold".to_owned(),
        GateMode::Limit(r) => format!("limit {}/s", r.get()),
    };
    let mut details = Map::new();
    details.insert("GateId".into(), json!(g.gate.id.as_str()));
    details.insert("Mode".into(), json!(g.gate.mode.as_str()));
    details.insert("PerSecond".into(), json!(g.gate.mode.per_second()));
    details.insert("Reason".into(), json!(g.gate.reason.as_str()));
    details.insert("CreatedBy".into(), json!(g.gate.created_by.as_str()));
    details.insert("Since".into(), json!(g.gate.since.to_rfc3339()));
    details.insert(
        "Until".into(),
        json!(g.gate.until.map(Timestamp::to_rfc3339)),
    );
    details.insert("Held".into(), json!(g.held));
    let summary = format!(
        "Retries of {} {} by {}: {}",
        scope_text(&scope),
        if g.gate.mode == GateMode::Hold {
            "held".to_owned()
        } else {
            format!("paced ({mode})")
        },
        g.gate.created_by.as_str(),
        g.gate.reason.as_str()
    );
    details.insert("Scope".into(), Value::Object(scope));
    Event {
        event: EventKind::GateCreated.as_str().to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: Level::Warning.as_str().to_owned(),
        summary,
        link: links.overview(),
        details,
    }
}

fn released(id: &str, now: Timestamp, links: &Links) -> Event {
    let mut details = Map::new();
    details.insert("GateId".into(), json!(id));
    Event {
        event: EventKind::GateReleased.as_str().to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: Level::Info.as_str().to_owned(),
        summary: format!("Retry gate {id} released: what it held goes to the workers"),
        link: links.overview(),
        details,
    }
}

/// Compare the active `gates` with the state, at `now`: the events and state changes.
pub(crate) fn observe(
    values: &BTreeMap<String, String>,
    gates: &[GateStatus],
    now: Timestamp,
    links: &Links,
    out: &mut Observed,
) {
    let seeded = values.contains_key(SEEDED);
    let active: BTreeSet<&str> = gates.iter().map(|g| g.gate.id.as_str()).collect();
    for g in gates {
        let key = format!("{PREFIX}{}", g.gate.id);
        if values.contains_key(&key) {
            continue;
        }
        if seeded {
            out.events.push(created(g, now, links));
        }
        out.state
            .push((key, Some(g.gate.since.unix_millis().to_string())));
    }
    for key in values.keys().filter(|k| k.starts_with(PREFIX)) {
        let id = &key[PREFIX.len()..];
        if !active.contains(id) {
            out.events.push(released(id, now, links));
            out.state.push((key.clone(), None));
        }
    }
    if !seeded {
        out.state
            .push((SEEDED.to_owned(), Some(now.unix_millis().to_string())));
    }
}
