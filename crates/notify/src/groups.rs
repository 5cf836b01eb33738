//! The group source: walks the failure groups by last seen (`NotifyStore::groups_after`)
//! from its mark, at most [`BATCH`] per step, and compares each group's last failure with
//! when the notifier last saw the signature fail: never → `group.new`; longer ago than the
//! quiet period → `group.returned`. Groups are looked at once their last failure is
//! `settle` old. The first step on a store takes the groups already there as seen (no
//! event for them), so enabling notifications on a running deployment is quiet.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use failed_tasks_domain::{ErrorSignature, FailureGroup, TaskId, Timestamp};
use failed_tasks_store::notify::{GroupMark, NotifyStore};
use failed_tasks_store::{StatusStore, StoreError};
use futures_util::future::join_all;
use serde_json::{json, Map};

use crate::event::{new_id, Event, EventKind, Level};
use crate::links::Links;
use crate::Observed;

/// Most groups one step looks at.
pub const BATCH: usize = 500;
/// Most groups whose details are read at once.
const READS_AT_ONCE: usize = 32;

/// The state key of the walk's mark (`MS:SIGNATURE`).
const MARK: &str = "groups.mark";
/// The state key of the seeding horizon (ms): groups last seen at or before it were there
/// when the notifier started; they are taken as seen without an event.
const HORIZON: &str = "groups.horizon";

fn parse_mark(text: &str) -> Option<GroupMark> {
    let (ms, sig) = text.split_once(':')?;
    Some(GroupMark {
        last_seen_ms: ms.parse().ok()?,
        signature: ErrorSignature::parse(sig).ok()?,
    })
}

/// What the walk needs from the store.
pub(crate) struct Walk<'a> {
    pub(crate) store: &'a Arc<dyn NotifyStore>,
    pub(crate) tasks: &'a Arc<dyn StatusStore>,
    pub(crate) links: &'a Links,
    pub(crate) quiet_ms: i64,
    pub(crate) settle_ms: i64,
}

enum Change {
    New,
    Returned { quiet_ms: i64 },
}

impl Walk<'_> {
    /// One step of the walk at `now`.
    pub(crate) async fn observe(
        &self,
        values: &BTreeMap<String, String>,
        now: Timestamp,
        out: &mut Observed,
    ) -> Result<(), StoreError> {
        let until = now.unix_millis() - self.settle_ms;
        let horizon = match values.get(HORIZON).and_then(|v| v.parse::<i64>().ok()) {
            Some(h) => h,
            None => {
                out.state
                    .push((HORIZON.to_owned(), Some(until.to_string())));
                until
            }
        };
        let mark = values.get(MARK).and_then(|m| parse_mark(m));
        let marks = self.store.groups_after(mark, until, BATCH).await?;
        let Some(last) = marks.last() else {
            return Ok(());
        };
        out.state.push((
            MARK.to_owned(),
            Some(format!("{}:{}", last.last_seen_ms, last.signature)),
        ));
        // A signature may come more than once (several shards): its latest mark counts.
        let mut latest: HashMap<ErrorSignature, i64> = HashMap::new();
        for m in &marks {
            let at = latest.entry(m.signature.clone()).or_insert(m.last_seen_ms);
            *at = (*at).max(m.last_seen_ms);
        }
        let sigs: Vec<ErrorSignature> = latest.keys().cloned().collect();
        let seen = self.store.notify_state(&sigs).await?.seen;
        let mut changes = Vec::new();
        for (sig, before) in sigs.into_iter().zip(seen) {
            let at = latest[&sig];
            if before.is_some_and(|b| b >= at) {
                continue;
            }
            out.seen.push((sig.clone(), at));
            if at <= horizon {
                continue;
            }
            match before {
                None => changes.push((sig, Change::New)),
                Some(b) if at - b >= self.quiet_ms => {
                    changes.push((sig, Change::Returned { quiet_ms: at - b }));
                }
                Some(_) => {}
            }
        }
        for chunk in changes.chunks(READS_AT_ONCE) {
            let reads = chunk.iter().map(|(sig, _)| self.details(sig));
            for ((_, change), read) in chunk.iter().zip(join_all(reads).await) {
                if let Some((group, sample)) = read? {
                    out.events.push(self.event(&group, sample, change, now));
                }
            }
        }
        Ok(())
    }

    /// The group and its sample task's type and client (the scope of its events).
    async fn details(
        &self,
        sig: &ErrorSignature,
    ) -> Result<Option<(FailureGroup, Option<(String, String)>)>, StoreError> {
        let Some(group) = self.store.group(sig).await? else {
            return Ok(None);
        };
        let sample = self.sample(&group.sample_task_id).await?;
        Ok(Some((group, sample)))
    }

    async fn sample(&self, id: &TaskId) -> Result<Option<(String, String)>, StoreError> {
        Ok(self.tasks.get(id).await?.map(|t| {
            (
                t.task_type().as_str().to_owned(),
                t.client_id().as_str().to_owned(),
            )
        }))
    }

    fn event(
        &self,
        g: &FailureGroup,
        sample: Option<(String, String)>,
        change: &Change,
        now: Timestamp,
    ) -> Event {
        let p = &g.pattern;
        let category = p.category().as_str();
        let mut pattern: String = p.normalised_message().chars().take(120).collect();
        if p.normalised_message().chars().count() > 120 {
            pattern.push('…');
        }
        let (kind, summary) = match change {
            Change::New => (
                EventKind::GroupNew,
                format!(
                    "New error signature ({category}, {}): {pattern}",
                    p.error_code()
                ),
            ),
            Change::Returned { quiet_ms } => (
                EventKind::GroupReturned,
                format!(
                    "Failing again after {} min quiet ({category}, {}): {pattern}",
                    quiet_ms / 60_000,
                    p.error_code()
                ),
            ),
        };
        let mut scope = Map::new();
        scope.insert("ErrorCategory".into(), json!(category));
        if let Some((task_type, client)) = &sample {
            scope.insert("TaskType".into(), json!(task_type));
            scope.insert("ClientId".into(), json!(client));
        }
        let mut details = Map::new();
        details.insert("Signature".into(), json!(p.signature().as_str()));
        details.insert("ErrorCategory".into(), json!(category));
        details.insert("ErrorCode".into(), json!(p.error_code()));
        details.insert("Pattern".into(), json!(p.normalised_message()));
        details.insert("Count".into(), json!(g.count));
        details.insert("FirstSeen".into(), json!(g.first_seen.to_rfc3339()));
        details.insert("LastSeen".into(), json!(g.last_seen.to_rfc3339()));
        details.insert("ClientsAffected".into(), json!(g.clients_affected));
        details.insert("SampleTaskIds".into(), json!([g.sample_task_id.as_str()]));
        if let Change::Returned { quiet_ms } = change {
            details.insert("QuietSeconds".into(), json!(quiet_ms / 1000));
        }
        details.insert("Scope".into(), serde_json::Value::Object(scope));
        Event {
            event: kind.as_str().to_owned(),
            id: new_id(),
            time: now.to_rfc3339(),
            level: Level::Info.as_str().to_owned(),
            summary,
            link: self.links.group(p.signature().as_str()),
            details,
        }
    }
}
