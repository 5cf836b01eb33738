//! Replays on Redis ([`ReplayStore`]), all in the first write shard's slot:
//! - `PREFIX:replay:ID` (hash): one replay. Fields `f` (the filters, a JSON array of
//!   `[parameter, value]` pairs), `r` (reason), `a` (actor), `c` (created, ms), `p` (pace,
//!   absent when unpaced), `s` (state), `m` (matched), `cur` (the listing cursor the walk
//!   goes on from, absent at the start), `v` (visited), `n` (scheduled), `pu` (the pace's
//!   clock, ms), `fin` (finished, ms, once ended).
//! - `PREFIX:replay:ID:sched` (sorted set): the retries it made due, member
//!   `{attempt}:{task id}`, score their order; the last `MAX_TRACKED_SCHEDULED` are kept.
//! - `PREFIX:replays` (sorted set, score the creation ms): the most recent
//!   `MAX_KEPT_REPLAYS` replays; `PREFIX:replays:running` (same scores): the running ones.
//! - `PREFIX:replays:lease` (string, expiring): the runner holding the lease.
//!
//! A replay's two keys expire after the retention's maximum age, counted again at each save;
//! a save is written only by the lease's holder.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{
    Cursor, GateReason, Replay, ReplayId, ReplayPace, ReplayProgress, ReplayState, TaskFilter,
    TaskId, Timestamp,
};
use failed_tasks_store::replay::{
    AbortReplay, ReplaySave, ReplayStore, SaveReplay, ScheduledRetry, MAX_KEPT_REPLAYS,
    MAX_TRACKED_SCHEDULED,
};
use failed_tasks_store::StoreError;
use fred::types::Value;

use crate::conn::Script;
use crate::notify::{LEASE, RELEASE};
use crate::shard::Shard;
use crate::stats::pairs;
use crate::store::{millis_of, value_text, RedisStore};

/// Keep a new replay. KEYS: hash, list, running. ARGV: id, created ms, ttl ms, kept, then
/// field/value pairs.
const CREATE: &str = r"
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local kept = tonumber(ARGV[4])
local gone = redis.call('ZRANGE', KEYS[2], 0, -(kept + 1))
if #gone > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(kept + 1))
  redis.call('ZREM', KEYS[3], unpack(gone))
end
return 1
";

/// Save a running replay's progress under the lease. KEYS: hash, sched, running, lease.
/// ARGV: id, ttl ms, kept scheduled, cursor ('' for none), visited, scheduled, paced until
/// ms, end state ('' for none), end ms, holder, then per retry made due its score and
/// member. 1 when saved, 0 when not running, -1 without the lease.
const SAVE: &str = r"
if redis.call('GET', KEYS[4]) ~= ARGV[10] then return -1 end
if redis.call('HGET', KEYS[1], 's') ~= 'running' then return 0 end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'cur')
else
  redis.call('HSET', KEYS[1], 'cur', ARGV[4])
end
redis.call('HSET', KEYS[1], 'v', ARGV[5], 'n', ARGV[6], 'pu', ARGV[7])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 's', ARGV[8], 'fin', ARGV[9])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if #ARGV > 10 then
  local add = {}
  for i = 11, #ARGV do add[#add + 1] = ARGV[i] end
  redis.call('ZADD', KEYS[2], unpack(add))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Abort a running replay. KEYS: hash, running. ARGV: id, now ms. `{0}` not found,
/// `{1, state}` ended already, `{2}` aborted.
const ABORT: &str = r"
local s = redis.call('HGET', KEYS[1], 's')
if not s then return {0} end
if s ~= 'running' then return {1, s} end
redis.call('HSET', KEYS[1], 's', 'aborted', 'fin', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return {2}
";

struct ReplayScripts {
    create: Script,
    save: Script,
    abort: Script,
    lease: Script,
    release: Script,
}

impl ReplayScripts {
    fn get() -> &'static ReplayScripts {
        static SCRIPTS: OnceLock<ReplayScripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| ReplayScripts {
            create: Script::new("replay create", CREATE.to_owned()),
            save: Script::new("replay save", SAVE.to_owned()),
            abort: Script::new("replay abort", ABORT.to_owned()),
            lease: Script::new("replay lease", LEASE.to_owned()),
            release: Script::new("replay release", RELEASE.to_owned()),
        })
    }
}

fn count_arg(n: usize) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

fn u64_arg(n: u64) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A replay from its hash; `None` (logged) when a field is missing or malformed.
fn replay_of(id: &ReplayId, h: &HashMap<String, String>) -> Option<Replay> {
    let ms = |k: &str| -> Option<Timestamp> {
        Timestamp::from_unix_millis(h.get(k)?.parse().ok()?).ok()
    };
    let num = |k: &str| -> Option<u64> { h.get(k)?.parse().ok() };
    let pairs: Vec<(String, String)> = serde_json::from_str(h.get("f")?).ok()?;
    let filter =
        TaskFilter::from_params(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))).ok()?;
    let pace = match h.get("p") {
        Some(p) => Some(ReplayPace::new(p.parse().ok()?).ok()?),
        None => None,
    };
    let cursor = match h.get("cur") {
        Some(c) => Some(Cursor::decode(c).ok()?),
        None => None,
    };
    let finished = match h.get("fin") {
        Some(_) => Some(ms("fin")?),
        None => None,
    };
    Some(Replay {
        id: id.clone(),
        filter,
        reason: GateReason::parse(h.get("r")?).ok()?,
        actor: h.get("a")?.clone(),
        created: ms("c")?,
        pace,
        state: ReplayState::parse(h.get("s")?).ok()?,
        matched: num("m")?,
        progress: ReplayProgress {
            cursor,
            visited: num("v")?,
            scheduled: num("n")?,
            paced_until: ms("pu")?,
        },
        finished,
    })
}

fn texts(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| value_text(i).and_then(Result::ok))
            .collect(),
        _ => Vec::new(),
    }
}

impl RedisStore {
    /// The shard whose slot holds the replays: the first write shard.
    fn replay_shard(&self) -> &Shard {
        &self.shards().write()[0]
    }

    fn replay_ttl(&self) -> Value {
        let s = self.replay_shard();
        Value::from(millis_of(s.config.retention.max_age).max(1))
    }
}

#[async_trait]
impl ReplayStore for RedisStore {
    async fn replay_create(&self, replay: &Replay) -> Result<(), StoreError> {
        let s = self.replay_shard();
        let id = replay.id.as_str();
        let filters: Vec<(&str, String)> = replay.filter.params();
        let filters = serde_json::to_string(&filters)
            .map_err(|e| StoreError::Internal(format!("encoding a replay's filters: {e}")))?;
        let p = &replay.progress;
        let mut args: Vec<Value> = vec![
            id.into(),
            replay.created.unix_millis().into(),
            self.replay_ttl(),
            count_arg(MAX_KEPT_REPLAYS),
        ];
        let mut put = |k: &'static str, v: Value| {
            args.push(k.into());
            args.push(v);
        };
        put("f", filters.into());
        put("r", replay.reason.as_str().into());
        put("a", replay.actor.as_str().into());
        put("c", replay.created.unix_millis().into());
        if let Some(pace) = replay.pace {
            put("p", pace.get().to_string().into());
        }
        put("s", replay.state.as_str().into());
        put("m", u64_arg(replay.matched));
        if let Some(c) = &p.cursor {
            put("cur", c.encode().into());
        }
        put("v", u64_arg(p.visited));
        put("n", u64_arg(p.scheduled));
        put("pu", p.paced_until.unix_millis().into());
        if let Some(fin) = replay.finished {
            put("fin", fin.unix_millis().into());
        }
        let _: i64 = s
            .conn
            .eval(
                &ReplayScripts::get().create,
                vec![
                    s.keys.replay(id).into(),
                    s.keys.replays().into(),
                    s.keys.replays_running().into(),
                ],
                args,
            )
            .await?;
        Ok(())
    }

    async fn replay_get(&self, id: &ReplayId) -> Result<Option<Replay>, StoreError> {
        let s = self.replay_shard();
        let reply: Value = s
            .conn
            .cmd(
                "reading a replay",
                "HGETALL",
                vec![s.keys.replay(id.as_str()).into()],
            )
            .await?;
        let h: HashMap<String, String> = pairs(reply).into_iter().collect();
        if h.is_empty() {
            return Ok(None);
        }
        let replay = replay_of(id, &h);
        if replay.is_none() {
            tracing::warn!(replay = %id, "skipping a malformed replay");
        }
        Ok(replay)
    }

    async fn replay_list(&self, max: usize) -> Result<Vec<Replay>, StoreError> {
        let s = self.replay_shard();
        let max = max.min(MAX_KEPT_REPLAYS);
        if max == 0 {
            return Ok(Vec::new());
        }
        let ids: Value = s
            .conn
            .cmd(
                "listing replays",
                "ZRANGE",
                vec![
                    s.keys.replays().into(),
                    "+inf".into(),
                    "-inf".into(),
                    "BYSCORE".into(),
                    "REV".into(),
                    "LIMIT".into(),
                    0.into(),
                    count_arg(max),
                ],
            )
            .await?;
        let ids: Vec<ReplayId> = texts(ids)
            .iter()
            .filter_map(|id| ReplayId::parse(id).ok())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Every replay's hash in one round trip.
        let commands = ids
            .iter()
            .map(|id| {
                let key: Value = s.keys.replay(id.as_str()).into();
                (&s.conn, "HGETALL", vec![key])
            })
            .collect();
        let replies = s.conn.cmd_many("reading replays", commands).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, reply) in ids.iter().zip(replies) {
            let h: HashMap<String, String> = pairs(reply).into_iter().collect();
            // Forgotten (expired) replays are left out.
            if h.is_empty() {
                continue;
            }
            match replay_of(id, &h) {
                Some(r) => out.push(r),
                None => tracing::warn!(replay = %id, "skipping a malformed replay"),
            }
        }
        Ok(out)
    }

    async fn replay_running(&self, max: usize) -> Result<Vec<ReplayId>, StoreError> {
        let s = self.replay_shard();
        if max == 0 {
            return Ok(Vec::new());
        }
        let ids: Value = s
            .conn
            .cmd(
                "listing running replays",
                "ZRANGE",
                vec![
                    s.keys.replays_running().into(),
                    0.into(),
                    count_arg(max - 1),
                ],
            )
            .await?;
        Ok(texts(ids)
            .iter()
            .filter_map(|id| ReplayId::parse(id).ok())
            .collect())
    }

    async fn replay_save(
        &self,
        holder: &str,
        id: &ReplayId,
        save: &ReplaySave,
    ) -> Result<SaveReplay, StoreError> {
        let s = self.replay_shard();
        let p = &save.progress;
        let (state, fin) = match save.finish {
            Some((state, at)) => (state.as_str(), Value::from(at.unix_millis())),
            None => ("", Value::from("")),
        };
        let mut args: Vec<Value> = vec![
            id.as_str().into(),
            self.replay_ttl(),
            count_arg(MAX_TRACKED_SCHEDULED),
            p.cursor
                .as_ref()
                .map_or_else(String::new, Cursor::encode)
                .into(),
            u64_arg(p.visited),
            u64_arg(p.scheduled),
            p.paced_until.unix_millis().into(),
            state.into(),
            fin,
            holder.into(),
        ];
        // Scores continue the order: the i-th retry made due of `scheduled` in all.
        let first = p.scheduled.saturating_sub(save.scheduled.len() as u64);
        for (i, r) in save.scheduled.iter().enumerate() {
            args.push(u64_arg(first + i as u64));
            args.push(format!("{}:{}", r.attempt, r.task_id).into());
        }
        let saved: i64 = s
            .conn
            .eval(
                &ReplayScripts::get().save,
                vec![
                    s.keys.replay(id.as_str()).into(),
                    s.keys.replay_scheduled(id.as_str()).into(),
                    s.keys.replays_running().into(),
                    s.keys.replays_lease().into(),
                ],
                args,
            )
            .await?;
        Ok(match saved {
            1 => SaveReplay::Saved,
            0 => SaveReplay::NotRunning,
            _ => SaveReplay::LeaseLost,
        })
    }

    async fn replay_abort(&self, id: &ReplayId, now: Timestamp) -> Result<AbortReplay, StoreError> {
        let s = self.replay_shard();
        let reply: Value = s
            .conn
            .eval(
                &ReplayScripts::get().abort,
                vec![
                    s.keys.replay(id.as_str()).into(),
                    s.keys.replays_running().into(),
                ],
                vec![id.as_str().into(), now.unix_millis().into()],
            )
            .await?;
        let parts = texts(reply);
        match parts.first().map(String::as_str) {
            Some("2") => match self.replay_get(id).await? {
                Some(r) => Ok(AbortReplay::Aborted(Box::new(r))),
                None => Ok(AbortReplay::NotFound),
            },
            Some("1") => {
                let state = parts
                    .get(1)
                    .and_then(|s| ReplayState::parse(s).ok())
                    .ok_or_else(|| {
                        StoreError::Internal(format!("replay {id} has no readable state"))
                    })?;
                Ok(AbortReplay::Finished(state))
            }
            _ => Ok(AbortReplay::NotFound),
        }
    }

    async fn replay_scheduled(
        &self,
        id: &ReplayId,
        max: usize,
    ) -> Result<Vec<ScheduledRetry>, StoreError> {
        let s = self.replay_shard();
        if max == 0 {
            return Ok(Vec::new());
        }
        let members: Value = s
            .conn
            .cmd(
                "reading a replay's retries",
                "ZRANGE",
                vec![
                    s.keys.replay_scheduled(id.as_str()).into(),
                    0.into(),
                    count_arg(max - 1),
                ],
            )
            .await?;
        Ok(texts(members)
            .iter()
            .filter_map(|m| {
                let (attempt, task) = m.split_once(':')?;
                Some(ScheduledRetry {
                    task_id: TaskId::parse(task).ok()?,
                    attempt: attempt.parse().ok()?,
                })
            })
            .collect())
    }

    async fn replay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let s = self.replay_shard();
        let got: i64 = s
            .conn
            .eval(
                &ReplayScripts::get().lease,
                vec![s.keys.replays_lease().into()],
                vec![holder.into(), millis_of(ttl).max(1).into()],
            )
            .await?;
        Ok(got == 1)
    }

    async fn replay_release(&self, holder: &str) -> Result<(), StoreError> {
        let s = self.replay_shard();
        let _: i64 = s
            .conn
            .eval(
                &ReplayScripts::get().release,
                vec![s.keys.replays_lease().into()],
                vec![holder.into()],
            )
            .await?;
        Ok(())
    }
}
