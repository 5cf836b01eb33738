//! Bodies: an [`Event`] as a target's [`Format`] wants it. `json` is the event itself;
//! `slack` is Slack's incoming-webhook shape (a `text` fallback plus `blocks`: a section
//! with the summary and the main figures, a context line with level, kind and time, and the
//! link), which Slack, Mattermost, Rocket.Chat and others accept.

use serde_json::{json, Value};

use crate::event::Event;
use crate::target::Format;

/// Most characters of a section's text Slack accepts.
const SLACK_TEXT_MAX: usize = 3000;

/// The body of `event` in `format`.
pub fn body(event: &Event, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string(event).unwrap_or_default(),
        Format::Slack => slack(event).to_string(),
    }
}

/// Slack's `mrkdwn` text escapes: `&`, `<`, `>` (so that data cannot form links or mentions).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cut(mut text: String, max: usize) -> String {
    if text.chars().count() > max {
        text = text.chars().take(max.saturating_sub(1)).collect();
        text.push('…');
    }
    text
}

/// The figures shown under the summary: the details' plain values (not lists or objects).
fn figures(event: &Event) -> String {
    event
        .details
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some(format!("*{k}*: {}", escape(s))),
            Value::Number(n) => Some(format!("*{k}*: {n}")),
            Value::Bool(b) => Some(format!("*{k}*: {b}")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn slack(event: &Event) -> Value {
    let icon = match event.level.as_str() {
        "critical" => ":red_circle:",
        "warning" => ":warning:",
        _ => ":information_source:",
    };
    let summary = escape(&event.summary);
    let mut text = format!("{icon} *{summary}*");
    let figures = figures(event);
    if !figures.is_empty() {
        text.push('\n');
        text.push_str(&figures);
    }
    let mut context = format!("{} · {} · {}", event.level, event.event, event.time);
    if let Some(link) = &event.link {
        context.push_str(&format!(" · <{}|Open in the dashboard>", escape(link)));
    }
    json!({
        "text": cut(format!("[{}] {}", event.level, event.summary), SLACK_TEXT_MAX),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SLACK_TEXT_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(context, SLACK_TEXT_MAX)}]},
        ],
    })
}
