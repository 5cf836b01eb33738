//! The replay source: the recent replays (`FailedTaskService::replays`) that ended `done`
//! after the notifier's mark (state key `replays.done_until`, the latest end it notified)
//! become `replay.done` events. The first step on a store sets the mark to its time (no
//! event for replays that ended before), as the gate source does with gates.

use std::collections::BTreeMap;

use failed_tasks_domain::{Replay, ReplayState, Timestamp};
use serde_json::{json, Map, Value};

use crate::event::{new_id, Event, EventKind, Level};
use crate::links::Links;
use crate::Observed;

/// The latest end (ms) of a replay the notifier notified.
const MARK: &str = "replays.done_until";
/// How many recent replays a step reads.
pub(crate) const RECENT: usize = 20;

fn done(r: &Replay, links: &Links) -> Event {
    let mut details = Map::new();
    details.insert("ReplayId".into(), json!(r.id.as_str()));
    details.insert("Matched".into(), json!(r.matched));
    details.insert("Visited".into(), json!(r.progress.visited));
    details.insert("Scheduled".into(), json!(r.progress.scheduled));
    details.insert("Reason".into(), json!(r.reason.as_str()));
    details.insert("Actor".into(), json!(r.actor));
    details.insert("Created".into(), json!(r.created.to_rfc3339()));
    details.insert(
        "Finished".into(),
        json!(r.finished.map(Timestamp::to_rfc3339)),
    );
    let filters: Map<String, Value> = r
        .filter
        .params()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    details.insert("Filters".into(), Value::Object(filters));
    Event {
        event: EventKind::ReplayDone.as_str().to_owned(),
        id: new_id(),
        time: r.finished.unwrap_or(r.created).to_rfc3339(),
        level: Level::Info.as_str().to_owned(),
        summary: format!(
            "Replay {} done: {} retries made due of {} matching ({})",
            r.id,
            r.progress.scheduled,
            r.matched,
            r.reason.as_str()
        ),
        link: links.view("#/replays"),
        details,
    }
}

/// Compare the `recent` replays with the mark, at `now`: the events and the new mark.
pub(crate) fn observe(
    values: &BTreeMap<String, String>,
    recent: &[Replay],
    now: Timestamp,
    links: &Links,
    out: &mut Observed,
) {
    let Some(mark) = values.get(MARK).and_then(|v| v.parse::<i64>().ok()) else {
        out.state
            .push((MARK.to_owned(), Some(now.unix_millis().to_string())));
        return;
    };
    let mut latest = mark;
    // Oldest first, so that events go out in the order the replays ended.
    let mut ended: Vec<&Replay> = recent
        .iter()
        .filter(|r| r.state == ReplayState::Done)
        .filter(|r| r.finished.is_some_and(|f| f.unix_millis() > mark))
        .collect();
    ended.sort_by_key(|r| r.finished.map(Timestamp::unix_millis));
    for r in ended {
        out.events.push(done(r, links));
        latest = latest.max(r.finished.map_or(mark, Timestamp::unix_millis));
    }
    if latest > mark {
        out.state.push((MARK.to_owned(), Some(latest.to_string())));
    }
}
