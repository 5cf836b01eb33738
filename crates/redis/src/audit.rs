//! The audit log on Redis ([`AuditStore`]): one capped stream, `PREFIX:audit`
//! (`XADD … MAXLEN ~ audit_max_len`), in the first write shard's slot. An entry's fields:
//! `t` (time, ms), `who` (actor), `act` (action), `tg` (target), `r` (reason, when given),
//! `n` (count), `rq` (request id, when any). Reads walk the stream newest first
//! (`XREVRANGE`), a bounded number of entries per call, and filter as they go.

use async_trait::async_trait;
use failed_tasks_domain::Timestamp;
use failed_tasks_store::audit::{
    AuditAction, AuditCursor, AuditEntry, AuditPage, AuditQuery, AuditStore,
};
use failed_tasks_store::StoreError;
use fred::types::Value;

use crate::shard::Shard;
use crate::stats::pairs;
use crate::store::{value_text, RedisStore};

/// Entries read per `XREVRANGE`.
const BATCH: usize = 500;
/// Entries one call reads at most before it answers (with a cursor to go on).
const READ_BUDGET: usize = 10 * BATCH;
/// Entries are in stream order, which is the order Redis received them; their own times may
/// disagree by the replicas' clock skew. A walk bounded by `since` stops only this far below.
const SKEW_MS: i64 = 60_000;

impl RedisStore {
    fn audit_shard(&self) -> &Shard {
        &self.shards().write()[0]
    }
}

fn parse_id(id: &str) -> Option<AuditCursor> {
    let (ms, seq) = id.split_once('-')?;
    Some(AuditCursor {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// One stream entry as an audit entry; `None` (skipped, logged) when malformed.
fn entry_of(fields: Value) -> Option<AuditEntry> {
    let fields: std::collections::HashMap<String, String> = pairs(fields).into_iter().collect();
    let time = Timestamp::from_unix_millis(fields.get("t")?.parse().ok()?).ok()?;
    Some(AuditEntry {
        time,
        actor: fields.get("who")?.clone(),
        action: AuditAction::parse(fields.get("act")?).ok()?,
        target: fields.get("tg")?.clone(),
        reason: fields.get("r").cloned(),
        count: fields.get("n")?.parse().ok()?,
        request_id: fields.get("rq").cloned(),
    })
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn audit_append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let s = self.audit_shard();
        let cap = i64::try_from(s.config.retention.audit_max_len.max(1)).unwrap_or(i64::MAX);
        let mut args: Vec<Value> = vec![
            s.keys.audit().into(),
            "MAXLEN".into(),
            "~".into(),
            cap.into(),
            "*".into(),
            "t".into(),
            entry.time.unix_millis().into(),
            "who".into(),
            entry.actor.as_str().into(),
            "act".into(),
            entry.action.as_str().into(),
            "tg".into(),
            entry.target.as_str().into(),
            "n".into(),
            i64::try_from(entry.count).unwrap_or(i64::MAX).into(),
        ];
        if let Some(reason) = &entry.reason {
            args.push("r".into());
            args.push(reason.as_str().into());
        }
        if let Some(id) = &entry.request_id {
            args.push("rq".into());
            args.push(id.as_str().into());
        }
        let _: Value = s
            .conn
            .cmd("appending to the audit log", "XADD", args)
            .await?;
        if let Some(dir) = s.config.archive_dir.clone() {
            // Kept beyond the stream's cap: one JSON line per entry, a file per UTC day.
            let day = entry.time.to_rfc3339()[..10].to_owned();
            let path = dir.join(format!("audit-{day}.jsonl"));
            let line = format!("{}\n", entry.to_json_line());
            tokio::task::spawn_blocking(move || crate::janitor::append(dir, path, line))
                .await
                .map_err(|e| StoreError::Internal(format!("audit archive writer failed: {e}")))??;
        }
        Ok(())
    }

    async fn audit_list(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let s = self.audit_shard();
        let want = query.page_size.max(1) as usize;
        let mut end = match &query.cursor {
            Some(c) => format!("({}-{}", c.ms, c.seq),
            None => "+".to_owned(),
        };
        let mut page = AuditPage::default();
        let mut read = 0;
        loop {
            let reply: Value = s
                .conn
                .cmd(
                    "reading the audit log",
                    "XREVRANGE",
                    vec![
                        s.keys.audit().into(),
                        end.as_str().into(),
                        "-".into(),
                        "COUNT".into(),
                        Value::from(BATCH as i64),
                    ],
                )
                .await?;
            let Value::Array(entries) = reply else {
                return Ok(page);
            };
            let last_batch = entries.len() < BATCH;
            for raw in entries {
                let Value::Array(parts) = raw else { continue };
                let mut parts = parts.into_iter();
                let Some(id) = parts
                    .next()
                    .and_then(|v| value_text(v).and_then(Result::ok))
                else {
                    continue;
                };
                let Some(cursor) = parse_id(&id) else {
                    continue;
                };
                read += 1;
                end = format!("({id}");
                let Some(entry) = parts.next().and_then(entry_of) else {
                    tracing::warn!(id, "skipping a malformed audit entry");
                    continue;
                };
                if query
                    .since
                    .is_some_and(|since| cursor.ms < since.unix_millis() - SKEW_MS)
                {
                    return Ok(page);
                }
                let keep = query.since.is_none_or(|t| entry.time >= t)
                    && query.until.is_none_or(|t| entry.time <= t)
                    && query.actor.as_ref().is_none_or(|a| *a == entry.actor)
                    && query.action.is_none_or(|a| a == entry.action);
                if keep {
                    page.entries.push(entry);
                    if page.entries.len() == want {
                        page.next_cursor = Some(cursor);
                        return Ok(page);
                    }
                }
                if read >= READ_BUDGET {
                    // Cut: go on from here next time.
                    page.next_cursor = Some(cursor);
                    return Ok(page);
                }
            }
            if last_batch {
                return Ok(page);
            }
        }
    }
}
