//! The breaker capability ([`BreakerStore`]) on Redis, in the first write shard's slot:
//! `P:breaker:o:SECOND` (hash per unix second, fields `task type \t category \t f|r`:
//! retries failed again or resolved, expiring after `OUTCOME_KEEP`), `P:breaker:state`
//! (hash: `task type \t category` -> the state's line, `BreakerState::to_line`) and
//! `P:breaker:lease` (the decider's lease, expiring; the notifier's lease script).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{BreakerKey, BreakerState, OutcomeCounts, Timestamp};
use failed_tasks_store::breaker::{BreakerStore, OUTCOME_KEEP};
use failed_tasks_store::StoreError;
use fred::types::Value;

use crate::conn::Script;
use crate::notify::LEASE;
use crate::shard::Shard;
use crate::stats::pairs;
use crate::store::{millis_of, RedisStore};

/// Add outcomes to one second's hash. KEYS: the second's hash. ARGV: keep (ms), then pairs
/// (field, count).
const ADD: &str = r"
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
";

/// Every field of the seconds `from..=to`. ARGV: prefix, from, to. Returns the seconds'
/// fields and counts, flat.
const READ: &str = r"
local out = {}
for s = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local all = redis.call('HGETALL', ARGV[1] .. ':breaker:o:' .. s)
  for i = 1, #all do out[#out + 1] = all[i] end
end
return out
";

struct BreakerScripts {
    lease: Script,
    add: Script,
    read: Script,
}

impl BreakerScripts {
    fn get() -> &'static Self {
        static SCRIPTS: OnceLock<BreakerScripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| BreakerScripts {
            lease: Script::new("breaker lease", LEASE.to_owned()),
            // Counts add up when run twice: one write attempt.
            add: Script::adding("breaker outcomes", ADD.to_owned()),
            read: Script::new("breaker window", READ.to_owned()),
        })
    }
}

/// The most seconds one read covers (the longest window, an hour, and a margin).
const MAX_SECONDS: i64 = 3_700;

fn second_of(t: Timestamp) -> i64 {
    t.unix_millis().div_euclid(1_000)
}

impl RedisStore {
    fn breaker_shard(&self) -> &Shard {
        &self.shards().write()[0]
    }

    fn breaker_key(&self, what: &str) -> String {
        format!("{}:breaker:{what}", self.breaker_shard().keys.prefix())
    }
}

#[async_trait]
impl BreakerStore for RedisStore {
    async fn add_outcomes(
        &self,
        at: Timestamp,
        outcomes: &[(BreakerKey, OutcomeCounts)],
    ) -> Result<(), StoreError> {
        let mut args: Vec<Value> = vec![millis_of(OUTCOME_KEEP).into()];
        for (key, c) in outcomes {
            let field = key.to_field();
            for (letter, n) in [("f", c.failed_again), ("r", c.resolved)] {
                if n > 0 {
                    args.push(format!("{field}\t{letter}").into());
                    args.push(i64::try_from(n).unwrap_or(i64::MAX).into());
                }
            }
        }
        if args.len() == 1 {
            return Ok(());
        }
        let _: i64 = self
            .breaker_shard()
            .conn
            .eval(
                &BreakerScripts::get().add,
                vec![self.breaker_key(&format!("o:{}", second_of(at))).into()],
                args,
            )
            .await?;
        Ok(())
    }

    async fn outcomes(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(BreakerKey, OutcomeCounts)>, StoreError> {
        let to = second_of(to);
        let from = second_of(from).max(to - MAX_SECONDS);
        if from > to {
            return Ok(Vec::new());
        }
        let s = self.breaker_shard();
        let flat: Value = s
            .conn
            .eval(
                &BreakerScripts::get().read,
                vec![self.breaker_key("state").into()],
                vec![s.keys.prefix().into(), from.into(), to.into()],
            )
            .await?;
        let mut sum: BTreeMap<BreakerKey, OutcomeCounts> = BTreeMap::new();
        for (field, n) in pairs(flat) {
            let Some((key, letter)) = field.rsplit_once('\t') else {
                continue;
            };
            let (Some(key), Ok(n)) = (BreakerKey::from_field(key), n.parse::<u64>()) else {
                continue;
            };
            let c = sum.entry(key).or_default();
            match letter {
                "f" => c.failed_again = c.failed_again.saturating_add(n),
                "r" => c.resolved = c.resolved.saturating_add(n),
                _ => {}
            }
        }
        Ok(sum.into_iter().collect())
    }

    async fn breaker_states(&self) -> Result<Vec<BreakerState>, StoreError> {
        let all: Value = self
            .breaker_shard()
            .conn
            .cmd(
                "reading the breakers",
                "HGETALL",
                vec![self.breaker_key("state").into()],
            )
            .await?;
        let mut out = Vec::new();
        for (field, line) in pairs(all) {
            match BreakerKey::from_field(&field).and_then(|key| BreakerState::from_line(key, &line))
            {
                Some(state) => out.push(state),
                None => {
                    tracing::warn!(%field, %line, "skipping a breaker state this version cannot read")
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put_breaker_state(&self, state: &BreakerState) -> Result<(), StoreError> {
        let _: Value = self
            .breaker_shard()
            .conn
            .cmd(
                "saving a breaker",
                "HSET",
                vec![
                    self.breaker_key("state").into(),
                    state.key.to_field().into(),
                    state.to_line().into(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn remove_breaker_state(&self, key: &BreakerKey) -> Result<(), StoreError> {
        let _: Value = self
            .breaker_shard()
            .conn
            .cmd(
                "closing a breaker",
                "HDEL",
                vec![self.breaker_key("state").into(), key.to_field().into()],
            )
            .await?;
        Ok(())
    }

    async fn breaker_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let got: i64 = self
            .breaker_shard()
            .conn
            .eval(
                &BreakerScripts::get().lease,
                vec![self.breaker_key("lease").into()],
                vec![holder.into(), millis_of(ttl).max(1).into()],
            )
            .await?;
        Ok(got == 1)
    }
}
