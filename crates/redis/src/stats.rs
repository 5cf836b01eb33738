//! Statistics and failure groups on Redis: reads of the counters and groups that the write
//! scripts keep up to date (see `docs/redis-layout.md`), and the attempts counters.
//!
//! Nothing here scans tasks, and no read grows with the number of distinct values: a
//! statistics request reads, per hour of its range, the fields of its minutes from the
//! hour's counter hash (`HMGET` of named fields: never the whole hash, which in hours
//! written by earlier versions also holds one field per distinct code, type and client), and
//! per bucket (each whole hour, each minute at the range's edges) the
//! `READ_PER_BUCKET` + 1 most frequent members of its three breakdown sets; all pipelined.
//! A page of groups reads the ordering set from a lex bound plus four O(log N) commands per
//! group of the page.

use std::collections::{BTreeMap, HashMap};

use failed_tasks_domain::stats::{
    buckets, Bucket, BucketTops, Dimension, MinuteCounts, READ_PER_BUCKET,
};
use failed_tasks_domain::{
    ErrorCategory, ErrorPattern, ErrorSignature, FailureGroup, GroupCursor, GroupPage, GroupQuery,
    TaskId, TaskType, Timestamp,
};
use failed_tasks_store::StoreError;
use fred::types::Value;

use crate::layout::{dimension_letter, member_id, ms_part, MS_DIGITS};
use crate::scripts::Scripts;
use crate::store::{hour_end_ms, hour_of, now_ms, value_text, RedisStore};
use failed_tasks_store::stored;

/// Commands sent at once when reading hour hashes (a 7-day window reads 169).
const PIPELINE_CHUNK: usize = 1_000;

/// Commands sent at once when reading breakdown sets: each answers up to
/// `READ_PER_BUCKET` + 1 members, so a statistics read goes in rounds of this many, and the
/// commands of concurrent requests (listings) on the same connection wait behind one round at
/// most, not behind the whole read (a 1-hour window reads about 180 sets, 7 days about 860).
const SETS_CHUNK: usize = 48;

/// The longest range of minutes one call may read (31 days): far beyond the longest
/// statistics window (7 days), and a bound on the commands one call sends.
const MAX_RANGE_MINUTES: i64 = 31 * 24 * 60;

/// The field/value pairs of an `HGETALL` reply (RESP2 array or RESP3 map); pairs that are
/// not text are left out.
pub(crate) fn pairs(v: Value) -> Vec<(String, String)> {
    match v {
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.into_owned())))
            .collect(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    out.push((k.into_owned(), v.into_owned()));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// A positive counter value, or `None` for anything else.
pub(crate) fn positive(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| *n > 0)
}

/// Split an hour-hash field `MINUTE:REST` into the minute and the rest.
fn split_minute(field: &str) -> Option<(i64, &str)> {
    let (minute, rest) = field.split_once(':')?;
    Some((minute.parse().ok()?, rest))
}

/// The fields of `P:cnt:{hour}` that a read of minute `m` asks for, in this order: total,
/// recovered, then one per category of `ErrorCategory::ALL`.
fn minute_fields(m: i64) -> impl Iterator<Item = String> {
    [format!("{m}:t"), format!("{m}:r")].into_iter().chain(
        ErrorCategory::ALL
            .iter()
            .map(move |c| format!("{m}:c:{}", c.as_str())),
    )
}

/// The minute's counts from the values of its [`minute_fields`], in their order; `None`
/// when it had neither failures nor recoveries.
fn minute_of_fields(minute: i64, values: &[Option<u64>]) -> Option<MinuteCounts> {
    let get = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
    let mut c = MinuteCounts {
        minute,
        total: get(0),
        recovered: get(1),
        ..MinuteCounts::default()
    };
    for (i, cat) in ErrorCategory::ALL.iter().enumerate() {
        let n = get(2 + i);
        if n > 0 {
            c.by_category.insert(*cat, n);
        }
    }
    (c.total > 0 || c.recovered > 0).then_some(c)
}

/// The values of an `HMGET` reply, each a positive count or `None` (absent, zero, not a
/// number).
fn counts_of(v: Value) -> Vec<Option<u64>> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|v| v.as_str().and_then(|s| positive(&s)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The members and scores of a `ZRANGE … WITHSCORES` reply (RESP2: a flat array; RESP3:
/// pairs), highest first as Redis sent them; members that are not text or whose score is
/// not a positive count are left out.
fn scored(v: Value) -> Vec<(String, u64)> {
    let score = |v: &Value| -> Option<u64> {
        let n = match v {
            Value::Double(d) => *d,
            Value::Integer(i) => *i as f64,
            other => other.as_str()?.parse::<f64>().ok()?,
        };
        (n >= 1.0 && n.is_finite()).then_some(n as u64)
    };
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len() / 2 + 1);
    if items.iter().all(|i| matches!(i, Value::Array(_))) {
        for item in items {
            if let Value::Array(pair) = item {
                if let (Some(m), Some(n)) = (
                    pair.first().and_then(Value::as_str),
                    pair.get(1).and_then(score),
                ) {
                    out.push((m.into_owned(), n));
                }
            }
        }
    } else {
        let mut it = items.into_iter();
        while let (Some(m), Some(n)) = (it.next(), it.next()) {
            if let (Some(m), Some(n)) = (m.as_str(), score(&n)) {
                out.push((m.into_owned(), n));
            }
        }
    }
    out
}

/// Attempts per minute in `[from, to)` of hour-hash fields `MINUTE:TASK_TYPE`.
fn attempt_counts(fields: Vec<(String, String)>, from: i64, to: i64) -> Vec<(i64, u64)> {
    let mut per: BTreeMap<i64, u64> = BTreeMap::new();
    for (field, value) in &fields {
        let (Some((minute, _)), Some(n)) = (split_minute(field), positive(value)) else {
            continue;
        };
        if (from..to).contains(&minute) {
            let sum = per.entry(minute).or_default();
            *sum = sum.saturating_add(n);
        }
    }
    per.into_iter().collect()
}

fn check_range(from_minute: i64, to_minute: i64) -> Result<bool, StoreError> {
    if from_minute >= to_minute {
        return Ok(false);
    }
    if to_minute.saturating_sub(from_minute) > MAX_RANGE_MINUTES {
        return Err(StoreError::Rejected(format!(
            "a statistics range may span at most {MAX_RANGE_MINUTES} minutes, got {}",
            to_minute.saturating_sub(from_minute)
        )));
    }
    Ok(true)
}

impl RedisStore {
    /// `HGETALL` of `key_of(hour)` for every hour that overlaps the minutes `[from, to)`,
    /// pipelined in chunks; all their field/value pairs.
    async fn read_hours(
        &self,
        from_minute: i64,
        to_minute: i64,
        key_of: impl Fn(i64) -> String,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        let last = hour_of(to_minute - 1);
        let mut start = hour_of(from_minute);
        while start <= last {
            let end = start.saturating_add(PIPELINE_CHUNK as i64).min(last + 1);
            let reads = (start..end).map(|h| {
                let key = key_of(h);
                async move {
                    let v: Value = self
                        .inner
                        .conn
                        .cmd("reading failure counters", "HGETALL", vec![key.into()])
                        .await?;
                    Ok::<_, StoreError>(pairs(v))
                }
            });
            for r in futures_util::future::join_all(reads).await {
                out.extend(r?);
            }
            start = end;
        }
        Ok(out)
    }

    /// The minute counters of `[from, to)`: per hour, one `HMGET` of its minutes' total,
    /// recovered and category fields (pipelined in chunks), so a read never depends on how
    /// many other fields the hash holds.
    pub(crate) async fn read_failure_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        if !check_range(from_minute, to_minute)? {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let per_minute = 2 + ErrorCategory::ALL.len();
        let hours: Vec<i64> = (hour_of(from_minute)..=hour_of(to_minute - 1)).collect();
        let mut out = Vec::new();
        for chunk in hours.chunks(PIPELINE_CHUNK) {
            let reads = chunk.iter().map(|&h| {
                let minutes = (h * 60).max(from_minute)..(h * 60 + 60).min(to_minute);
                let mut args: Vec<Value> = vec![keys.counters(h).into()];
                args.extend(minutes.clone().flat_map(minute_fields).map(Value::from));
                async move {
                    let v: Value = self
                        .inner
                        .conn
                        .cmd("reading failure counters", "HMGET", args)
                        .await?;
                    let values = counts_of(v);
                    Ok::<_, StoreError>(
                        minutes
                            .enumerate()
                            .filter_map(|(i, m)| minute_of_fields(m, values.get(i * per_minute..)?))
                            .collect::<Vec<_>>(),
                    )
                }
            });
            for r in futures_util::future::join_all(reads).await {
                out.extend(r?);
            }
        }
        Ok(out)
    }

    /// The breakdowns of `[from, to)`: for each bucket of [`buckets`], the
    /// `READ_PER_BUCKET` + 1 highest members of its three sets (`ZRANGE … REV LIMIT`), and,
    /// per hour, one `HMGET` of the untracked fields of its buckets; pipelined in chunks.
    /// Buckets that count nothing are left out.
    pub(crate) async fn read_failure_tops(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<BucketTops>, StoreError> {
        if !check_range(from_minute, to_minute)? {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let conn = &self.inner.conn;
        let all = buckets(from_minute, to_minute);
        let mut tops: Vec<BucketTops> = all.iter().map(|b| BucketTops::empty(*b)).collect();
        // The sets: one ZRANGE per bucket and dimension.
        let sets: Vec<(usize, Dimension)> = (0..all.len())
            .flat_map(|i| Dimension::ALL.map(|d| (i, d)))
            .collect();
        for chunk in sets.chunks(SETS_CHUNK) {
            let reads = chunk.iter().map(|&(i, d)| {
                let args: Vec<Value> = vec![
                    keys.tops(all[i], d).into(),
                    0i64.into(),
                    (READ_PER_BUCKET as i64).into(),
                    "REV".into(),
                    "WITHSCORES".into(),
                ];
                async move {
                    let v: Value = conn
                        .cmd("reading failure breakdowns", "ZRANGE", args)
                        .await?;
                    Ok::<_, StoreError>((i, d, scored(v)))
                }
            });
            for r in futures_util::future::join_all(reads).await {
                let (i, d, list) = r?;
                *tops[i].of_mut(d) = list;
            }
        }
        // The untracked counts: per hour, the fields of its buckets.
        let mut by_hour: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, b) in all.iter().enumerate() {
            let hour = match b {
                Bucket::Minute(m) => hour_of(*m),
                Bucket::Hour(h) => *h,
            };
            by_hour.entry(hour).or_default().push(i);
        }
        let hours: Vec<(i64, Vec<usize>)> = by_hour.into_iter().collect();
        for chunk in hours.chunks(PIPELINE_CHUNK) {
            let reads = chunk.iter().map(|(h, idx)| {
                let mut args: Vec<Value> = vec![keys.counters(*h).into()];
                for &i in idx {
                    let at = match all[i] {
                        Bucket::Minute(m) => m.to_string(),
                        Bucket::Hour(_) => "h".to_owned(),
                    };
                    for d in Dimension::ALL {
                        args.push(format!("{at}:u:{}", dimension_letter(d)).into());
                    }
                }
                async move {
                    let v: Value = conn
                        .cmd("reading untracked failure counts", "HMGET", args)
                        .await?;
                    Ok::<_, StoreError>((idx, counts_of(v)))
                }
            });
            for r in futures_util::future::join_all(reads).await {
                let (idx, values) = r?;
                for (n, &i) in idx.iter().enumerate() {
                    for (k, d) in Dimension::ALL.into_iter().enumerate() {
                        let v = values.get(n * 3 + k).copied().flatten().unwrap_or(0);
                        *tops[i].untracked.get_mut(d) = v;
                    }
                }
            }
        }
        tops.retain(|t| !t.is_empty());
        Ok(tops)
    }

    pub(crate) async fn read_attempt_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        if !check_range(from_minute, to_minute)? {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let fields = self
            .read_hours(from_minute, to_minute, |h| keys.attempts(h))
            .await?;
        Ok(attempt_counts(fields, from_minute, to_minute))
    }

    pub(crate) async fn add_attempts(
        &self,
        task_type: &TaskType,
        minute: i64,
        count: u64,
    ) -> Result<(), StoreError> {
        if count == 0 {
            return Ok(());
        }
        let hour = hour_of(minute);
        let until = self.retained_until(hour_end_ms(hour), now_ms());
        let _: i64 = self
            .inner
            .conn
            .eval(
                &Scripts::get().attempts,
                vec![self.inner.keys.attempts(hour).into()],
                vec![
                    format!("{minute}:{task_type}").into(),
                    i64::try_from(count).unwrap_or(i64::MAX).into(),
                    until.into(),
                ],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn read_groups(&self, query: &GroupQuery) -> Result<GroupPage, StoreError> {
        let conn = &self.inner.conn;
        let keys = &self.inner.keys;
        let size = query.page_size.as_usize();
        let max = match &query.cursor {
            Some(c) => format!(
                "({}:{}",
                ms_part(c.last_seen().unix_millis()),
                c.signature()
            ),
            None => "+".to_owned(),
        };
        let order = keys.groups();
        let total = conn.cmd::<u64>("counting groups", "ZCARD", vec![order.as_str().into()]);
        let page = conn.cmd::<Vec<String>>(
            "reading groups",
            "ZRANGE",
            crate::layout::zrange_bylex(&order, &max, "-", true, size as i64 + 1),
        );
        let (total, members) = tokio::join!(total, page);
        let (total, mut members) = (total?, members?);
        let more = members.len() > size;
        members.truncate(size);
        let ranked: Vec<(Timestamp, ErrorSignature)> = members
            .iter()
            .filter_map(|m| {
                let parsed = parse_group_member(m);
                if parsed.is_none() {
                    tracing::warn!(member = m.as_str(), "skipping a malformed group entry");
                }
                parsed
            })
            .collect();
        let reads = ranked
            .into_iter()
            .map(|(last_seen, sig)| self.read_group(last_seen, sig));
        let mut groups = Vec::with_capacity(size);
        for g in futures_util::future::join_all(reads).await {
            if let Some(g) = g? {
                groups.push(g);
            }
        }
        let next_cursor = if more {
            groups.last().map(GroupCursor::after)
        } else {
            None
        };
        Ok(GroupPage {
            total,
            groups,
            next_cursor,
        })
    }

    /// One group: its size, oldest and newest member and description, pipelined (one round
    /// trip). `None` when it vanished since the page was read.
    async fn read_group(
        &self,
        last_seen: Timestamp,
        sig: ErrorSignature,
    ) -> Result<Option<FailureGroup>, StoreError> {
        let conn = &self.inner.conn;
        let keys = &self.inner.keys;
        let index = keys.signature(&sig);
        let edge = |rev: bool| {
            let mut args: Vec<Value> = vec![index.as_str().into()];
            if rev {
                args.extend(["+".into(), "-".into(), "BYLEX".into(), "REV".into()]);
            } else {
                args.extend(["-".into(), "+".into(), "BYLEX".into()]);
            }
            args.extend(["LIMIT".into(), 0i64.into(), 1i64.into()]);
            conn.cmd::<Vec<String>>("reading a group", "ZRANGE", args)
        };
        let count = conn.cmd::<u64>("sizing a group", "ZCARD", vec![index.as_str().into()]);
        let desc = conn.cmd::<Value>(
            "reading a group",
            "HGETALL",
            vec![keys.group(sig.as_str()).into()],
        );
        let (count, newest, oldest, desc) = tokio::join!(count, edge(true), edge(false), desc);
        let (count, newest, oldest, desc) = (count?, newest?, oldest?, pairs(desc?));
        let (Some(newest), Some(oldest)) = (newest.first(), oldest.first()) else {
            return Ok(None);
        };
        let (Some(sample), Some(first_seen)) = (
            member_id(newest).and_then(|id| TaskId::parse(id).ok()),
            crate::layout::parse_member(oldest).map(|k| k.fail_time()),
        ) else {
            tracing::warn!(signature = %sig, "skipping a group with malformed members");
            return Ok(None);
        };
        let desc: HashMap<String, String> = desc.into_iter().collect();
        let pattern = match self.pattern_of(&sig, &desc, &sample).await? {
            Some(p) => p,
            None => {
                tracing::warn!(signature = %sig, "skipping a group whose description is lost");
                return Ok(None);
            }
        };
        Ok(Some(FailureGroup {
            pattern,
            count,
            first_seen: first_seen.min(last_seen),
            last_seen,
            clients_affected: desc.get("ncl").and_then(|v| positive(v)).unwrap_or(0),
            sample_task_id: sample,
        }))
    }

    /// The group's pattern from its stored description (category, code, normalised
    /// message; normalising is idempotent, so this gives the signature back), or, should it
    /// not, from its sample task's record.
    pub(crate) async fn pattern_of(
        &self,
        sig: &ErrorSignature,
        desc: &HashMap<String, String>,
        sample: &TaskId,
    ) -> Result<Option<ErrorPattern>, StoreError> {
        let stored = (|| {
            let cat = ErrorCategory::parse(desc.get("cat")?).ok()?;
            Some(ErrorPattern::of(cat, desc.get("code")?, desc.get("msg")?))
        })();
        if let Some(p) = stored.filter(|p| p.signature() == sig) {
            return Ok(Some(p));
        }
        let value: Value = self
            .inner
            .conn
            .cmd(
                "reading a group's sample",
                "GET",
                vec![self.inner.keys.record(sample.as_str()).into()],
            )
            .await?;
        Ok(value_text(value)
            .and_then(Result::ok)
            .and_then(|text| stored::decode(&text).ok())
            .map(|(t, _)| ErrorPattern::of_task(&t))
            .filter(|p| p.signature() == sig))
    }
}

/// `{last_ms:015}:{signature}` back into its parts.
pub(crate) fn parse_group_member(m: &str) -> Option<(Timestamp, ErrorSignature)> {
    let ms = m.get(..MS_DIGITS)?;
    let sig = m.get(MS_DIGITS..)?.strip_prefix(':')?;
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = Timestamp::from_unix_millis(ms.parse().ok()?).ok()?;
    Some((t, ErrorSignature::parse(sig).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_fields_are_parsed_and_bad_ones_ignored() {
        let fields: Vec<String> = minute_fields(7).collect();
        assert_eq!(fields[..3], ["7:t", "7:r", "7:c:service_timeout"]);
        let mut values = vec![Some(3), None];
        values.extend((0..ErrorCategory::ALL.len()).map(|i| (i == 1).then_some(2)));
        let c = minute_of_fields(7, &values).unwrap();
        assert_eq!((c.minute, c.total, c.recovered), (7, 3, 0));
        assert_eq!(c.by_category.len(), 1);
        assert_eq!(minute_of_fields(7, &[None, None]), None);
        let reply = Value::Array(vec!["3".into(), Value::Null, "x".into(), "0".into()]);
        assert_eq!(counts_of(reply), vec![Some(3), None, None, None]);
        // ZRANGE WITHSCORES: RESP2 flat, RESP3 pairs; bad scores left out.
        let flat = Value::Array(vec!["a".into(), "2".into(), "b".into(), "x".into()]);
        assert_eq!(scored(flat), vec![("a".to_owned(), 2)]);
        let pairs = Value::Array(vec![
            Value::Array(vec!["a".into(), Value::Double(2.0)]),
            Value::Array(vec!["b".into(), Value::Double(1.0)]),
        ]);
        assert_eq!(
            scored(pairs),
            vec![("a".to_owned(), 2), ("b".to_owned(), 1)]
        );
        let att = [
            ("7:embedding", "2"),
            ("7:indexing", "3"),
            ("9:embedding", "1"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec();
        assert_eq!(attempt_counts(att, 0, 9), vec![(7, 5)]);
    }

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
