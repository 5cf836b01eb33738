//! Pages of failure groups (`StatsStore::list_groups`) over every shard.
//!
//! Each shard keeps its groups' members, description and ordering (`P:groups`, one member
//! per group, `{last_seen_ms:015}:{signature}`) for its own tasks. A page is a k-way merge of
//! the shards' `P:groups` from the cursor (with one shard, one `ZRANGE … BYLEX REV LIMIT` of
//! page + 1); a group met for the first time is read from every shard (`ZCARD`, newest and
//! oldest member of `idx:sig`, `HGETALL` of its description: one round trip) and merged:
//! counts added, clients united (`cl:*` fields), oldest and newest across shards. A group
//! whose newest entry in some shard sorts above the one met belongs to that earlier
//! position (shown there) and is left out here. O(log G + page) entries per shard.

use std::collections::{HashMap, HashSet};

use failed_tasks_domain::{
    ErrorCategory, ErrorPattern, ErrorSignature, FailureGroup, GroupCursor, GroupPage, GroupQuery,
    TaskId, Timestamp,
};
use failed_tasks_store::{stored, StoreError};
use fred::types::Value;
use futures_util::future::join_all;

use crate::layout::{member_id, ms_part, parse_member, zrange_bylex, LexRange, MS_DIGITS};
use crate::pages::Merge;
use crate::shard::Shard;
use crate::stats::{pairs, positive};
use crate::store::{value_text, RedisStore};

/// Most group members read to count the distinct groups of several shards; beyond it the
/// total is the sum of the shards' counts (an upper bound: a group in several shards is
/// counted in each).
const GROUP_UNION_LIMIT: u64 = 10_000;

/// `{last_ms:015}:{signature}` back into its parts.
fn parse_group_member(m: &str) -> Option<(Timestamp, ErrorSignature)> {
    let ms = m.get(..MS_DIGITS)?;
    let sig = m.get(MS_DIGITS..)?.strip_prefix(':')?;
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = Timestamp::from_unix_millis(ms.parse().ok()?).ok()?;
    Some((t, ErrorSignature::parse(sig).ok()?))
}

/// One shard's part of a failure group.
struct GroupPart {
    count: u64,
    newest: Option<String>,
    oldest: Option<String>,
    desc: HashMap<String, String>,
}

impl Shard {
    /// This shard's part of the group `sig`: size, newest and oldest member, description
    /// (four reads sent at once: one round trip).
    async fn group_part(&self, sig: &ErrorSignature) -> Result<GroupPart, StoreError> {
        let conn = &self.conn;
        let index = self.keys.signature(sig);
        let edge = |rev: bool| {
            let (from, to) = if rev { ("+", "-") } else { ("-", "+") };
            conn.cmd::<Vec<String>>(
                "reading a group",
                "ZRANGE",
                zrange_bylex(&index, from, to, rev, 1),
            )
        };
        let count = conn.cmd::<u64>("sizing a group", "ZCARD", vec![index.as_str().into()]);
        let desc = conn.cmd::<Value>(
            "reading a group",
            "HGETALL",
            vec![self.keys.group(sig.as_str()).into()],
        );
        let (count, newest, oldest, desc) = tokio::join!(count, edge(true), edge(false), desc);
        Ok(GroupPart {
            count: count?,
            newest: newest?.into_iter().next(),
            oldest: oldest?.into_iter().next(),
            desc: pairs(desc?).into_iter().collect(),
        })
    }

    /// The group's pattern from its stored description (category, code, normalised
    /// message; normalising is idempotent, so this gives the signature back), or, should it
    /// not, from its sample task's record.
    async fn pattern_of(
        &self,
        sig: &ErrorSignature,
        desc: &HashMap<String, String>,
        sample: &TaskId,
    ) -> Result<Option<ErrorPattern>, StoreError> {
        let from_desc = (|| {
            let cat = ErrorCategory::parse(desc.get("cat")?).ok()?;
            Some(ErrorPattern::of(cat, desc.get("code")?, desc.get("msg")?))
        })();
        if let Some(p) = from_desc.filter(|p| p.signature() == sig) {
            return Ok(Some(p));
        }
        let value: Value = self
            .conn
            .cmd(
                "reading a group's sample",
                "GET",
                vec![self.keys.record(sample.as_str()).into()],
            )
            .await?;
        Ok(value_text(value)
            .and_then(Result::ok)
            .and_then(|text| stored::decode(&text).ok())
            .map(|(t, _)| ErrorPattern::of_task(&t))
            .filter(|p| p.signature() == sig))
    }
}

impl RedisStore {
    /// `StatsStore::list_groups`: the groups of the merge from the cursor, each read from
    /// every shard, until the page and one more group are found. With one shard a group met
    /// is never left out (no other shard holds a newer entry of it), so the member after the
    /// page's last says by itself that a page follows, and only the page's groups are read.
    pub(crate) async fn groups_page(&self, query: &GroupQuery) -> Result<GroupPage, StoreError> {
        let shards = self.shards().readers();
        let size = query.page_size.as_usize();
        let max = match &query.cursor {
            Some(c) => format!(
                "({}:{}",
                ms_part(c.last_seen().unix_millis()),
                c.signature()
            ),
            None => "+".to_owned(),
        };
        let range = LexRange {
            max,
            min: "-".to_owned(),
        };
        let keys = shards.iter().map(|s| s.keys.groups()).collect();
        let mut merge = Merge::new(keys, &range);
        let mut seen: HashSet<ErrorSignature> = HashSet::new();
        let mut groups: Vec<FailureGroup> = Vec::with_capacity(size + 1);
        let mut more = false;
        let walk = async {
            let mut exhausted = false;
            while groups.len() <= size && !exhausted && !more {
                // The next candidates: groups met for the first time, as many as missing.
                let mut candidates = Vec::new();
                while candidates.len() < size + 1 - groups.len() {
                    let Some((_, member)) = merge.next(shards, size + 1).await? else {
                        exhausted = true;
                        break;
                    };
                    let member = String::from_utf8_lossy(&member).into_owned();
                    let Some((last_seen, sig)) = parse_group_member(&member) else {
                        tracing::warn!(
                            member = member.as_str(),
                            "skipping a malformed group entry"
                        );
                        continue;
                    };
                    if seen.insert(sig.clone()) {
                        candidates.push((member, last_seen, sig));
                    }
                }
                if shards.len() == 1 && groups.len() + candidates.len() > size {
                    candidates.truncate(size - groups.len());
                    more = true;
                }
                let reads = candidates
                    .iter()
                    .map(|(m, at, sig)| self.merged_group(m, *at, sig));
                for g in join_all(reads).await {
                    if let Some(g) = g? {
                        groups.push(g);
                    }
                }
            }
            Ok::<_, StoreError>(())
        };
        let (total, walked) = tokio::join!(self.group_total(), walk);
        walked?;
        more |= groups.len() > size;
        groups.truncate(size);
        let next_cursor = if more {
            groups.last().map(GroupCursor::after)
        } else {
            None
        };
        Ok(GroupPage {
            total: total?,
            groups,
            next_cursor,
        })
    }

    /// The group `sig` whose entry `member` was met in the merge, from every shard's part;
    /// `None` when its newest entry in some shard sorts above `member` (it belongs to an
    /// earlier position: shown there) or it vanished.
    async fn merged_group(
        &self,
        member: &str,
        last_seen: Timestamp,
        sig: &ErrorSignature,
    ) -> Result<Option<FailureGroup>, StoreError> {
        let shards = self.shards().readers();
        let parts = self.every_shard(|s| s.group_part(sig)).await;
        let mut count = 0u64;
        let mut newest: Option<(usize, String)> = None;
        let mut oldest: Option<String> = None;
        let mut clients: HashSet<String> = HashSet::new();
        let mut desc: Option<(usize, HashMap<String, String>)> = None;
        for (i, part) in parts.into_iter().enumerate() {
            let part = part?;
            if part
                .desc
                .get("ord")
                .is_some_and(|ord| ord.as_str() > member)
            {
                return Ok(None);
            }
            count += part.count;
            if let Some(n) = part.newest {
                if newest.as_ref().is_none_or(|(_, m)| n > *m) {
                    newest = Some((i, n));
                }
            }
            if let Some(o) = part.oldest {
                if oldest.as_ref().is_none_or(|m| o < *m) {
                    oldest = Some(o);
                }
            }
            for (field, value) in &part.desc {
                if let Some(client) = field.strip_prefix("cl:") {
                    if positive(value).is_some() {
                        clients.insert(client.to_owned());
                    }
                }
            }
            if desc.is_none() && part.desc.contains_key("cat") {
                desc = Some((i, part.desc));
            }
        }
        let (Some((newest_shard, newest)), Some(oldest)) = (newest, oldest) else {
            return Ok(None);
        };
        let (Some(sample), Some(first_seen)) = (
            member_id(&newest).and_then(|id| TaskId::parse(id).ok()),
            parse_member(&oldest).map(|k| k.fail_time()),
        ) else {
            tracing::warn!(signature = %sig, "skipping a group with malformed members");
            return Ok(None);
        };
        let (desc_shard, desc) = desc.unwrap_or((newest_shard, HashMap::new()));
        let mut pattern = shards[desc_shard].pattern_of(sig, &desc, &sample).await?;
        if pattern.is_none() && desc_shard != newest_shard {
            // The sample's record is in the shard of its newest member.
            pattern = shards[newest_shard]
                .pattern_of(sig, &HashMap::new(), &sample)
                .await?;
        }
        let Some(pattern) = pattern else {
            tracing::warn!(signature = %sig, "skipping a group whose description is lost");
            return Ok(None);
        };
        Ok(Some(FailureGroup {
            pattern,
            count,
            first_seen: first_seen.min(last_seen),
            last_seen,
            clients_affected: clients.len() as u64,
            sample_task_id: sample,
        }))
    }

    /// The group `sig` as a page would show it, from the shards' newest entry of it
    /// (`NotifyStore::group`); `None` when it has no members.
    pub(crate) async fn group_of(
        &self,
        sig: &ErrorSignature,
    ) -> Result<Option<FailureGroup>, StoreError> {
        let ords = self
            .every_shard(|s| {
                s.conn.cmd::<Option<String>>(
                    "reading a group",
                    "HGET",
                    vec![s.keys.group(sig.as_str()).into(), "ord".into()],
                )
            })
            .await;
        let mut newest: Option<String> = None;
        for ord in ords {
            if let Some(o) = ord? {
                if newest.as_ref().is_none_or(|n| o > *n) {
                    newest = Some(o);
                }
            }
        }
        let Some((member, (last_seen, _))) =
            newest.and_then(|m| parse_group_member(&m).map(|p| (m, p)))
        else {
            return Ok(None);
        };
        self.merged_group(&member, last_seen, sig).await
    }

    /// How many distinct groups the shards hold together: with one shard its `ZCARD`;
    /// with several the distinct signatures of their `P:groups` (see [`GROUP_UNION_LIMIT`]).
    async fn group_total(&self) -> Result<u64, StoreError> {
        let shards = self.shards().readers();
        let cards = join_all(shards.iter().map(|s| {
            s.conn
                .cmd::<u64>("counting groups", "ZCARD", vec![s.keys.groups().into()])
        }))
        .await;
        let mut sum = 0u64;
        for c in cards {
            sum = sum.saturating_add(c?);
        }
        if shards.len() == 1 || sum > GROUP_UNION_LIMIT {
            return Ok(sum);
        }
        let all = join_all(shards.iter().map(|s| {
            s.conn.cmd::<Vec<String>>(
                "reading groups",
                "ZRANGE",
                vec![s.keys.groups().into(), 0i64.into(), (-1i64).into()],
            )
        }))
        .await;
        let mut sigs = HashSet::new();
        for members in all {
            for m in members? {
                if let Some((_, sig)) = parse_group_member(&m) {
                    sigs.insert(sig);
                }
            }
        }
        Ok(sigs.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The groups store the normalised message; re-normalising it must give the signature.
    #[test]
    fn a_normalised_message_gives_its_signature_back() {
        let long = format!("failed at {} then 42", "x/y ".repeat(300));
        for msg in [
            "timed out after 30 s on /repo/a",
            "向量嵌入服务超时，请求超过30秒未响应",
            "table \"users_2024\" id 3fa85f64-5717-4562-b3fc-2c963f66afa6 at 0x1F",
            long.as_str(),
        ] {
            let p = ErrorPattern::of(ErrorCategory::DataError, "E", msg);
            let again = ErrorPattern::of(ErrorCategory::DataError, "E", p.normalised_message());
            assert_eq!(again.signature(), p.signature(), "{msg}");
        }
        let sig = ErrorSignature::parse("0123456789abcdef").unwrap();
        let m = format!("{}:{sig}", ms_part(42));
        assert_eq!(
            parse_group_member(&m),
            Some((Timestamp::from_unix_millis(42).unwrap(), sig))
        );
        assert_eq!(parse_group_member("nonsense"), None);
    }
}
