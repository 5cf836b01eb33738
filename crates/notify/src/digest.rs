//! Coalescing: the next message of a target from its outbox. The oldest event's kind is
//! taken with every other waiting event of that kind (of the oldest [`READ`]): one event
//! is sent as it is; several become one digest of that kind, with their count, their
//! totals, the first [`SHOWN`] of them and every id. With the per-target rate limit, a
//! storm of a thousand new signatures is a message or two, not a thousand.

use failed_tasks_domain::Timestamp;
use failed_tasks_store::notify::OutboxEntry;
use serde_json::{json, Map, Value};

use crate::event::{new_id, Event, Level};
use crate::links::Links;

/// Most outbox entries one message is made from.
pub const READ: usize = 1000;
/// Most events a digest shows one by one.
pub const SHOWN: usize = 20;

/// The next message from `entries` (oldest first) and the entry ids it carries; `None`
/// when no entry holds an event.
pub(crate) fn next_message(
    entries: &[OutboxEntry],
    now: Timestamp,
    links: &Links,
) -> Option<(Event, Vec<String>)> {
    let mut parsed = Vec::with_capacity(entries.len());
    let mut covered = Vec::new();
    for e in entries {
        match serde_json::from_str::<Event>(&e.body) {
            Ok(event) => parsed.push((e.id.clone(), event)),
            Err(err) => {
                // Only a defect writes one: carried away with the next message.
                tracing::warn!(id = e.id.as_str(), error = %err, "dropping a malformed outbox entry");
                covered.push(e.id.clone());
            }
        }
    }
    let kind = parsed.first()?.1.event.clone();
    let mut events = Vec::new();
    for (id, event) in parsed {
        if event.event == kind {
            covered.push(id);
            events.push(event);
        }
    }
    if events.len() == 1 {
        return events.pop().map(|e| (e, covered));
    }
    Some((digest(&kind, &events, now, links), covered))
}

fn digest(kind: &str, events: &[Event], now: Timestamp, links: &Links) -> Event {
    let parsed_kind = crate::event::EventKind::parse(kind);
    let level = events.iter().map(Event::level).max().unwrap_or(Level::Info);
    let failures: u64 = events
        .iter()
        .filter_map(|e| e.details.get("Count").and_then(Value::as_u64))
        .sum();
    let shown: Vec<Value> = events
        .iter()
        .take(SHOWN)
        .map(|e| {
            json!({
                "Id": e.id, "Time": e.time, "Level": e.level, "Summary": e.summary,
                "Link": e.link, "Details": e.details,
            })
        })
        .collect();
    let mut details = Map::new();
    details.insert("Digest".into(), json!(true));
    details.insert("Count".into(), json!(events.len()));
    if failures > 0 {
        details.insert("Failures".into(), json!(failures));
    }
    details.insert(
        "First".into(),
        json!(events.first().map(|e| e.time.clone())),
    );
    details.insert("Last".into(), json!(events.last().map(|e| e.time.clone())));
    details.insert("Events".into(), Value::Array(shown));
    details.insert(
        "Ids".into(),
        Value::Array(events.iter().map(|e| json!(e.id)).collect()),
    );
    Event {
        event: kind.to_owned(),
        id: new_id(),
        time: now.to_rfc3339(),
        level: level.as_str().to_owned(),
        summary: parsed_kind.map_or_else(
            || format!("{} events", events.len()),
            |k| k.digest_summary(events.len()),
        ),
        link: parsed_kind.and_then(|k| links.view(k.digest_view())),
        details,
    }
}
