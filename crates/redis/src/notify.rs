//! The notifications capability ([`NotifyStore`]) on Redis: the notifier's lease, state,
//! seen signatures, per-target outboxes (streams) and deliveries, all in the first write
//! shard's slot (`Keys::notify_*`), every write a script fenced by the lease.
//!
//! Durability is Redis's: what a commit queued survives a restart of the server, and a
//! message in flight is sent again (same body, same `Id`) by whichever replica holds the
//! lease next.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{ErrorSignature, FailureGroup};
use failed_tasks_store::notify::{
    CommitReport, GroupMark, NotifyCommit, NotifyState, NotifyStore, OutboxEntry, Pending, Settle,
    TargetDelivery,
};
use failed_tasks_store::StoreError;
use fred::types::Value;

use crate::conn::Script;
use crate::layout::{ms_part, zrange_bylex, Keys, MS_DIGITS};
use crate::shard::Shard;
use crate::stats::pairs;
use crate::store::{millis_of, value_text, RedisStore};

/// Take the lease, or renew it for its holder. KEYS: lease. ARGV: holder, ttl (ms).
pub(crate) const LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Give the lease up if held by ARGV[1]. KEYS: lease.
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// One notifier step's writes under the lease. KEYS: lease, state, seen. ARGV: prefix,
/// holder, outbox cap, forget-before ms ('' for none), then the state count and per value
/// (key, '1' set / '0' delete, value), the seen count and per signature (signature, ms),
/// the event count and per event (target, body). Answers `{-1}` without the lease, else
/// `{queued, dropped target, …}`.
const COMMIT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return {-1} end
local prefix = ARGV[1]
local cap = tonumber(ARGV[3])
if ARGV[4] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[4]) end
local i = 5
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  if ARGV[i + 1] == '1' then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  else
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  i = i + 3
end
n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  redis.call('ZADD', KEYS[3], 'GT', ARGV[i + 1], ARGV[i])
  i = i + 2
end
n = tonumber(ARGV[i])
i = i + 1
local out = {0}
for _ = 1, n do
  local target = ARGV[i]
  local box = prefix .. ':notify:out:' .. target
  if redis.call('XLEN', box) >= cap then
    redis.call('HINCRBY', prefix .. ':notify:tgt:' .. target, 'dropped', 1)
    table.insert(out, target)
  else
    redis.call('XADD', box, '*', 'e', ARGV[i + 1])
    out[1] = out[1] + 1
  end
  i = i + 2
end
return out
";

/// Make a message the target's one in flight and take the events it carries out of the
/// outbox. KEYS: lease, target hash, outbox. ARGV: holder, id, body, events, attempts,
/// first ms, next ms, then the outbox ids covered. Answers 1 when the message is in flight
/// (also when this very message already was: the script can run twice), 0 otherwise.
const BEGIN: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local cur = redis.call('HGET', KEYS[2], 'p_id')
if cur then
  if cur == ARGV[2] then return 1 end
  return 0
end
redis.call('HSET', KEYS[2], 'p_id', ARGV[2], 'p_body', ARGV[3], 'p_events', ARGV[4],
  'p_attempts', ARGV[5], 'p_first', ARGV[6], 'p_next', ARGV[7], 'started', ARGV[6])
for i = 8, #ARGV do redis.call('XDEL', KEYS[3], ARGV[i]) end
return 1
";

/// How an attempt ended. KEYS: lease, target hash. ARGV: holder, message id, `d`
/// (delivered), `f` (failed, retry later) or `g` (given up), at ms, error, retry ms.
const SETTLE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'p_id') ~= ARGV[2] then return 0 end
local fields = {'p_id', 'p_body', 'p_events', 'p_attempts', 'p_first', 'p_next'}
if ARGV[3] == 'd' then
  redis.call('HDEL', KEYS[2], unpack(fields))
  redis.call('HSET', KEYS[2], 'success', ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'delivered', 1)
elseif ARGV[3] == 'f' then
  redis.call('HINCRBY', KEYS[2], 'p_attempts', 1)
  redis.call('HINCRBY', KEYS[2], 'failed', 1)
  redis.call('HSET', KEYS[2], 'p_next', ARGV[6], 'error', ARGV[5], 'error_at', ARGV[4])
else
  local events = tonumber(redis.call('HGET', KEYS[2], 'p_events') or '1') or 1
  redis.call('HDEL', KEYS[2], unpack(fields))
  redis.call('HINCRBY', KEYS[2], 'dropped', events)
  redis.call('HINCRBY', KEYS[2], 'failed', 1)
  redis.call('HSET', KEYS[2], 'error', ARGV[5], 'error_at', ARGV[4])
end
return 1
";

/// The notifier's scripts, built once.
struct NotifyScripts {
    lease: Script,
    release: Script,
    commit: Script,
    begin: Script,
    settle: Script,
}

impl NotifyScripts {
    fn get() -> &'static NotifyScripts {
        static SCRIPTS: OnceLock<NotifyScripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| NotifyScripts {
            lease: Script::new("notify lease", LEASE.to_owned()),
            release: Script::new("notify release", RELEASE.to_owned()),
            // Queued events and counters add up when run twice: one write attempt.
            commit: Script::adding("notify commit", COMMIT.to_owned()),
            begin: Script::new("notify begin", BEGIN.to_owned()),
            settle: Script::adding("notify settle", SETTLE.to_owned()),
        })
    }
}

/// `{ms:015}:{signature}` back into a mark.
fn parse_mark(member: &str) -> Option<GroupMark> {
    let ms = member.get(..MS_DIGITS)?;
    let sig = member.get(MS_DIGITS..)?.strip_prefix(':')?;
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(GroupMark {
        last_seen_ms: ms.parse().ok()?,
        signature: ErrorSignature::parse(sig).ok()?,
    })
}

fn text(v: Value) -> Option<String> {
    value_text(v).and_then(Result::ok)
}

/// A number field of a hash as read by `HGETALL`.
fn number<T: std::str::FromStr>(
    h: &std::collections::HashMap<String, String>,
    k: &str,
) -> Option<T> {
    h.get(k).and_then(|v| v.parse().ok())
}

/// A count as a Redis argument.
fn count_arg(n: usize) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

impl RedisStore {
    /// The shard whose slot holds the notifier's keys: the first write shard.
    fn notify_shard(&self) -> &Shard {
        &self.shards().write()[0]
    }

    fn notify_keys(&self) -> &Keys {
        &self.notify_shard().keys
    }
}

#[async_trait]
impl NotifyStore for RedisStore {
    async fn notify_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let s = self.notify_shard();
        let got: i64 = s
            .conn
            .eval(
                &NotifyScripts::get().lease,
                vec![s.keys.notify_lease().into()],
                vec![holder.into(), millis_of(ttl).max(1).into()],
            )
            .await?;
        Ok(got == 1)
    }

    async fn notify_release(&self, holder: &str) -> Result<(), StoreError> {
        let s = self.notify_shard();
        let _: i64 = s
            .conn
            .eval(
                &NotifyScripts::get().release,
                vec![s.keys.notify_lease().into()],
                vec![holder.into()],
            )
            .await?;
        Ok(())
    }

    async fn groups_after(
        &self,
        after: Option<GroupMark>,
        until_ms: i64,
        max: usize,
    ) -> Result<Vec<GroupMark>, StoreError> {
        let from = match &after {
            Some(m) => format!("({}:{}", ms_part(m.last_seen_ms), m.signature),
            None => "-".to_owned(),
        };
        // Every member of a later millisecond sorts at or after `({until + 1}`.
        let to = format!("({}", ms_part(until_ms.saturating_add(1)));
        let count = i64::try_from(max).unwrap_or(i64::MAX);
        // Each shard's first `max` after the mark: together they hold the first `max` of all.
        let answers = self
            .every_shard(|s| {
                s.conn.cmd::<Vec<String>>(
                    "reading failure groups for the notifier",
                    "ZRANGE",
                    zrange_bylex(&s.keys.groups(), &from, &to, false, count),
                )
            })
            .await;
        let mut marks = Vec::new();
        for answer in answers {
            marks.extend(answer?.iter().filter_map(|m| parse_mark(m)));
        }
        marks.sort();
        marks.truncate(max);
        Ok(marks)
    }

    async fn group(&self, signature: &ErrorSignature) -> Result<Option<FailureGroup>, StoreError> {
        self.group_of(signature).await
    }

    async fn notify_state(&self, signatures: &[ErrorSignature]) -> Result<NotifyState, StoreError> {
        let s = self.notify_shard();
        let k = &s.keys;
        let values = s.conn.cmd::<Value>(
            "reading the notifier's state",
            "HGETALL",
            vec![k.notify_state().into()],
        );
        let seen = async {
            if signatures.is_empty() {
                return Ok(Vec::new());
            }
            let mut args: Vec<Value> = vec![k.notify_seen().into()];
            args.extend(signatures.iter().map(|sig| Value::from(sig.as_str())));
            s.conn
                .cmd::<Vec<Value>>("reading the notifier's seen signatures", "ZMSCORE", args)
                .await
        };
        let (values, seen) = tokio::join!(values, seen);
        let seen = seen?
            .into_iter()
            .map(|v| match v {
                Value::Double(d) => Some(d as i64),
                other => text(other)
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(|d| d as i64),
            })
            .collect();
        Ok(NotifyState {
            values: pairs(values?).into_iter().collect(),
            seen,
        })
    }

    async fn notify_commit(
        &self,
        holder: &str,
        commit: &NotifyCommit,
    ) -> Result<CommitReport, StoreError> {
        let s = self.notify_shard();
        let k = &s.keys;
        let mut args: Vec<Value> = vec![
            k.prefix().into(),
            holder.into(),
            i64::try_from(commit.outbox_cap).unwrap_or(i64::MAX).into(),
            commit
                .forget_seen_before_ms
                .map_or_else(String::new, |ms| ms.to_string())
                .into(),
            count_arg(commit.state.len()),
        ];
        for (key, value) in &commit.state {
            args.push(key.as_str().into());
            args.push(if value.is_some() { "1" } else { "0" }.into());
            args.push(value.as_deref().unwrap_or("").into());
        }
        args.push(count_arg(commit.seen.len()));
        for (sig, ms) in &commit.seen {
            args.push(sig.as_str().into());
            args.push((*ms).into());
        }
        args.push(count_arg(commit.events.len()));
        for (target, body) in &commit.events {
            args.push(target.as_str().into());
            args.push(body.as_str().into());
        }
        let reply: Vec<Value> = s
            .conn
            .eval(
                &NotifyScripts::get().commit,
                vec![
                    k.notify_lease().into(),
                    k.notify_state().into(),
                    k.notify_seen().into(),
                ],
                args,
            )
            .await?;
        let mut reply = reply.into_iter();
        let queued = reply.next().and_then(|v| v.as_i64()).unwrap_or(-1);
        if queued < 0 {
            return Ok(CommitReport {
                lease_lost: true,
                ..CommitReport::default()
            });
        }
        Ok(CommitReport {
            lease_lost: false,
            queued: u64::try_from(queued).unwrap_or(0),
            dropped: reply.filter_map(text).collect(),
        })
    }

    async fn outbox(&self, target: &str, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let k = self.notify_keys();
        let reply: Value = self
            .notify_shard()
            .conn
            .cmd(
                "reading a notification outbox",
                "XRANGE",
                vec![
                    k.notify_outbox(target).into(),
                    "-".into(),
                    "+".into(),
                    "COUNT".into(),
                    count_arg(max.max(1)),
                ],
            )
            .await?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            let (Some(id), Some(fields)) = (parts.next().and_then(text), parts.next()) else {
                continue;
            };
            match pairs(fields).into_iter().find(|(f, _)| f == "e") {
                Some((_, body)) => out.push(OutboxEntry { id, body }),
                None => tracing::warn!(target, id, "skipping a malformed outbox entry"),
            }
        }
        Ok(out)
    }

    async fn target_delivery(&self, target: &str) -> Result<TargetDelivery, StoreError> {
        let s = self.notify_shard();
        let k = &s.keys;
        let hash = s.conn.cmd::<Value>(
            "reading a notification target",
            "HGETALL",
            vec![k.notify_target(target).into()],
        );
        let len = s.conn.cmd::<u64>(
            "sizing a notification outbox",
            "XLEN",
            vec![k.notify_outbox(target).into()],
        );
        let (hash, queued) = tokio::join!(hash, len);
        let h: std::collections::HashMap<String, String> = pairs(hash?).into_iter().collect();
        let pending = match (h.get("p_id"), h.get("p_body")) {
            (Some(id), Some(body)) => Some(Pending {
                id: id.clone(),
                body: body.clone(),
                events: number(&h, "p_events").unwrap_or(1),
                attempts: number(&h, "p_attempts").unwrap_or(0),
                first_ms: number(&h, "p_first").unwrap_or(0),
                next_ms: number(&h, "p_next").unwrap_or(0),
            }),
            _ => None,
        };
        Ok(TargetDelivery {
            pending,
            queued: queued?,
            last_started_ms: number(&h, "started"),
            last_success_ms: number(&h, "success"),
            last_error: h.get("error").cloned(),
            last_error_ms: number(&h, "error_at"),
            delivered: number(&h, "delivered").unwrap_or(0),
            failed_attempts: number(&h, "failed").unwrap_or(0),
            dropped: number(&h, "dropped").unwrap_or(0),
        })
    }

    async fn begin_delivery(
        &self,
        holder: &str,
        target: &str,
        pending: &Pending,
        covered: &[String],
    ) -> Result<bool, StoreError> {
        let s = self.notify_shard();
        let k = &s.keys;
        let mut args: Vec<Value> = vec![
            holder.into(),
            pending.id.as_str().into(),
            pending.body.as_str().into(),
            i64::try_from(pending.events).unwrap_or(i64::MAX).into(),
            i64::from(pending.attempts).into(),
            pending.first_ms.into(),
            pending.next_ms.into(),
        ];
        args.extend(covered.iter().map(|id| Value::from(id.as_str())));
        let began: i64 = s
            .conn
            .eval(
                &NotifyScripts::get().begin,
                vec![
                    k.notify_lease().into(),
                    k.notify_target(target).into(),
                    k.notify_outbox(target).into(),
                ],
                args,
            )
            .await?;
        Ok(began == 1)
    }

    async fn settle_delivery(
        &self,
        holder: &str,
        target: &str,
        id: &str,
        settle: &Settle,
    ) -> Result<bool, StoreError> {
        let s = self.notify_shard();
        let k = &s.keys;
        let (kind, at, error, retry) = match settle {
            Settle::Delivered { at_ms } => ("d", *at_ms, "", 0),
            Settle::Failed {
                at_ms,
                error,
                retry_ms,
            } => ("f", *at_ms, error.as_str(), *retry_ms),
            Settle::GaveUp { at_ms, error } => ("g", *at_ms, error.as_str(), 0),
        };
        let settled: i64 = s
            .conn
            .eval(
                &NotifyScripts::get().settle,
                vec![k.notify_lease().into(), k.notify_target(target).into()],
                vec![
                    holder.into(),
                    id.into(),
                    kind.into(),
                    at.into(),
                    error.into(),
                    retry.into(),
                ],
            )
            .await?;
        Ok(settled == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_from_group_members() {
        let sig = ErrorSignature::parse("0123456789abcdef").expect("a signature");
        let m = format!("{}:{sig}", ms_part(42));
        assert_eq!(
            parse_mark(&m),
            Some(GroupMark {
                last_seen_ms: 42,
                signature: sig
            })
        );
        assert_eq!(parse_mark("nonsense"), None);
    }
}
