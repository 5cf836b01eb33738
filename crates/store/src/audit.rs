//! The audit capability ([`AuditStore`]): one entry per state-changing action of a person
//! (a token) or of the service on its own, kept newest first up to a cap
//! ([`Retention::audit_max_len`](crate::Retention::audit_max_len); the oldest beyond it
//! leave). Workers reporting outcomes are counted elsewhere, not audited. No secret enters an
//! entry: the actor is a token's *name*.

use std::fmt;

use async_trait::async_trait;
use failed_tasks_domain::{Timestamp, ValidationError};

use crate::StoreError;

/// How many entries a store keeps by default.
pub const DEFAULT_AUDIT_MAX_LEN: u64 = 100_000;

/// What was done. One entry per kind: its name in the API and in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// One task's retry made due now (`POST …/admin/failed-tasks/{taskId}/retry`).
    RetryNow,
    /// One task's scheduled retry cancelled.
    CancelRetry,
    /// One task resolved by an operator.
    Resolve,
    /// One task deleted.
    Remove,
    /// Every task matching filters deleted.
    RemoveMatching,
    /// Every task matching filters retried now.
    RetryMatching,
    /// A retry gate made (hold or limit).
    GateCreated,
    /// A retry gate released.
    GateReleased,
    /// A retry circuit breaker opened (or opened again after its canaries failed).
    BreakerOpened,
    /// A retry circuit breaker half-opened: its canaries may pass.
    BreakerHalfOpened,
    /// A retry circuit breaker closed (its gate released).
    BreakerClosed,
    /// A replay made (a paced retry of every match of filters).
    ReplayCreated,
    /// A replay aborted.
    ReplayAborted,
    /// The retention janitor trimmed tasks (older than the maximum age, or beyond the
    /// maximum count).
    Trim,
}

impl AuditAction {
    /// Every action, in a stable order.
    pub const ALL: [AuditAction; 14] = [
        AuditAction::RetryNow,
        AuditAction::CancelRetry,
        AuditAction::Resolve,
        AuditAction::Remove,
        AuditAction::RemoveMatching,
        AuditAction::RetryMatching,
        AuditAction::GateCreated,
        AuditAction::GateReleased,
        AuditAction::BreakerOpened,
        AuditAction::BreakerHalfOpened,
        AuditAction::BreakerClosed,
        AuditAction::ReplayCreated,
        AuditAction::ReplayAborted,
        AuditAction::Trim,
    ];

    /// The action's name (`retry`, `cancel_retry`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::RetryNow => "retry",
            AuditAction::CancelRetry => "cancel_retry",
            AuditAction::Resolve => "resolve",
            AuditAction::Remove => "delete",
            AuditAction::RemoveMatching => "delete_matching",
            AuditAction::RetryMatching => "retry_matching",
            AuditAction::GateCreated => "gate_created",
            AuditAction::GateReleased => "gate_released",
            AuditAction::BreakerOpened => "breaker_opened",
            AuditAction::BreakerHalfOpened => "breaker_half_opened",
            AuditAction::BreakerClosed => "breaker_closed",
            AuditAction::ReplayCreated => "replay_created",
            AuditAction::ReplayAborted => "replay_aborted",
            AuditAction::Trim => "trim",
        }
    }

    /// The action named `name`; errors name the `action` parameter and list the names.
    pub fn parse(name: &str) -> Result<AuditAction, ValidationError> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                ValidationError::new(
                    "action",
                    format!(
                        "unknown action {name:?}; known ones are {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When it was done.
    pub time: Timestamp,
    /// Who did it: a token's name, or the part of the service that acted on its own
    /// (`breaker`, `janitor`).
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// What it was done to: a `TaskId`, or the filters as a query string.
    pub target: String,
    /// Why, as the actor said (`X-Reason`), if they did.
    pub reason: Option<String>,
    /// How many tasks it changed.
    pub count: u64,
    /// The request that did it (`X-Request-Id`), when a request did.
    pub request_id: Option<String>,
}

/// The actor of the retention janitor's entries.
pub const JANITOR_ACTOR: &str = "janitor";

impl AuditEntry {
    /// The entry of a janitor run at `time` that removed tasks: `by_age` older than the
    /// maximum age, `by_count` beyond the maximum count.
    pub fn janitor_trim(time: Timestamp, by_age: u64, by_count: u64) -> Self {
        Self {
            time,
            actor: JANITOR_ACTOR.to_owned(),
            action: AuditAction::Trim,
            target: "retention".to_owned(),
            reason: Some(format!(
                "retention: {by_age} older than retention_max_age, {by_count} beyond retention_max_count"
            )),
            count: by_age.saturating_add(by_count),
            request_id: None,
        }
    }

    /// The entry as one JSON line of an archive (the API's field names).
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "Time": self.time.to_rfc3339(),
            "Actor": self.actor,
            "Action": self.action.as_str(),
            "Target": self.target,
            "Reason": self.reason,
            "Count": self.count,
            "RequestId": self.request_id,
        })
        .to_string()
    }
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Entries at or after this time.
    pub since: Option<Timestamp>,
    /// Entries at or before this time.
    pub until: Option<Timestamp>,
    /// Entries of this actor only.
    pub actor: Option<String>,
    /// Entries of this action only.
    pub action: Option<AuditAction>,
    /// Most entries answered.
    pub page_size: u32,
    /// Continue after the entry of this cursor ([`AuditPage::next_cursor`]).
    pub cursor: Option<AuditCursor>,
}

impl AuditQuery {
    /// Every entry, newest first, `page_size` a page.
    pub fn newest(page_size: u32) -> Self {
        Self {
            since: None,
            until: None,
            actor: None,
            action: None,
            page_size,
            cursor: None,
        }
    }
}

/// Where a page of entries ended: entries older than this come next. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    /// The store's id of the last entry looked at (its time in ms, then a sequence number).
    pub ms: i64,
    /// The sequence number within that millisecond.
    pub seq: u64,
}

impl AuditCursor {
    /// The cursor as clients see it: `{ms}-{seq}`.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    /// A cursor from [`encode`](Self::encode); errors name the `cursor` parameter.
    pub fn decode(text: &str) -> Result<AuditCursor, ValidationError> {
        let bad = || ValidationError::new("cursor", "is not a cursor this listing returned");
        let (ms, seq) = text.split_once('-').ok_or_else(bad)?;
        Ok(AuditCursor {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// A page of entries, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts, when there may be more (`None`: this was the last).
    pub next_cursor: Option<AuditCursor>,
}

/// The audit log of a store.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Append one entry (the oldest beyond the cap leave).
    async fn audit_append(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Entries matching `query`, newest first. A page may hold fewer entries than asked
    /// with a cursor to go on (a store reads a bounded number of entries per call).
    async fn audit_list(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;
}
