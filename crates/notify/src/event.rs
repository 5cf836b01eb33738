//! What a notification says: its kind ([`EventKind`], one entry per kind), its level, and
//! the payload receivers get ([`Event`], field names as documented in docs/monitoring.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How urgent a notification is. Targets receive events at their `min_level` or above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Worth knowing (a new error signature, an alert resolved).
    Info,
    /// Look soon (the alert rules' `warning`).
    Warning,
    /// Act now (the alert rules' `critical`).
    Critical,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Info, Level::Warning, Level::Critical];

    /// `info`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// The level named `text`.
    pub fn parse(text: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == text)
    }
}

/// The kinds of events. A new kind is one entry here (its name, the words of its digest)
/// and a source that produces it (`alerts`, `groups`, `gates`, `breakers`, `replays`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A server-side alert rule started firing, or changed level.
    AlertFiring,
    /// A firing alert stopped (and stayed stopped for the resolve delay).
    AlertResolved,
    /// The first failure with an error signature never seen.
    GroupNew,
    /// A signature failing again after a quiet period.
    GroupReturned,
    /// A retry gate was made.
    GateCreated,
    /// A retry gate was released, or lapsed.
    GateReleased,
    /// A retry circuit breaker opened: the retries of a task type and category are held.
    BreakerOpened,
    /// An open retry circuit breaker closed (its canaries resolved, or its gate released).
    BreakerClosed,
    /// A replay visited every match.
    ReplayDone,
}

impl EventKind {
    /// Every kind, in the documented order.
    pub const ALL: [EventKind; 9] = [
        EventKind::AlertFiring,
        EventKind::AlertResolved,
        EventKind::GroupNew,
        EventKind::GroupReturned,
        EventKind::GateCreated,
        EventKind::GateReleased,
        EventKind::BreakerOpened,
        EventKind::BreakerClosed,
        EventKind::ReplayDone,
    ];

    /// The kind's name in payloads and in the `events` of a target.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AlertFiring => "alert.firing",
            EventKind::AlertResolved => "alert.resolved",
            EventKind::GroupNew => "group.new",
            EventKind::GroupReturned => "group.returned",
            EventKind::GateCreated => "gate.created",
            EventKind::GateReleased => "gate.released",
            EventKind::BreakerOpened => "breaker.opened",
            EventKind::BreakerClosed => "breaker.closed",
            EventKind::ReplayDone => "replay.done",
        }
    }

    /// The kind named `text`.
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// What `n` events of this kind are, for a digest's summary.
    pub fn digest_summary(self, n: usize) -> String {
        match self {
            EventKind::AlertFiring => format!("{n} alerts firing"),
            EventKind::AlertResolved => format!("{n} alerts resolved"),
            EventKind::GroupNew => format!("{n} new error signatures"),
            EventKind::GroupReturned => format!("{n} error signatures failing again"),
            EventKind::GateCreated => format!("{n} retry gates made"),
            EventKind::GateReleased => format!("{n} retry gates released"),
            EventKind::BreakerOpened => format!("{n} retry circuit breakers opened"),
            EventKind::BreakerClosed => format!("{n} retry circuit breakers closed"),
            EventKind::ReplayDone => format!("{n} replays done"),
        }
    }

    /// The dashboard view (`#/...`) listing events of this kind, for a digest's link.
    pub fn digest_view(self) -> &'static str {
        match self {
            EventKind::AlertFiring
            | EventKind::AlertResolved
            | EventKind::GateCreated
            | EventKind::GateReleased
            | EventKind::BreakerOpened
            | EventKind::BreakerClosed => "#/overview",
            EventKind::GroupNew | EventKind::GroupReturned => "#/groups",
            EventKind::ReplayDone => "#/replays",
        }
    }
}

/// The fields of `Details.Scope` a target's scope matches: the values an event is about.
pub const SCOPE_FIELDS: [&str; 3] = ["ErrorCategory", "TaskType", "ClientId"];

/// One notification, as the `json` format sends it (and as the outbox keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// The kind's name ([`EventKind::as_str`]).
    pub event: String,
    /// Unique per message: receivers de-duplicate by it (a retried message keeps it).
    pub id: String,
    /// When the event happened (RFC 3339, UTC).
    pub time: String,
    /// `info`, `warning` or `critical`.
    pub level: String,
    /// One line for humans.
    pub summary: String,
    /// The dashboard view that shows it (`public_url` + `/ui/#/…`); null without `public_url`.
    pub link: Option<String>,
    /// The figures: counts, scope, signature, sample task ids, … (by kind, documented).
    pub details: Map<String, Value>,
}

impl Event {
    /// The kind, when the name is one of ours.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.event)
    }

    /// The level, `info` when unknown.
    pub fn level(&self) -> Level {
        Level::parse(&self.level).unwrap_or(Level::Info)
    }

    /// The value of scope field `field` (one of [`SCOPE_FIELDS`]) the event is about, if any.
    pub fn scope(&self, field: &str) -> Option<&str> {
        self.details.get("Scope")?.get(field)?.as_str()
    }
}

/// A fresh unique id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
