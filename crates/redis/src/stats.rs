//! Statistics on Redis: reads of the counters that the write scripts keep up to date (see
//! `docs/redis-layout.md`), and the attempts counters; each shard's, added up.
//!
//! Nothing here scans tasks, and no read grows with the number of distinct values: a
//! statistics request reads, per shard and hour of its range, the fields of its minutes from
//! the hour's counter hash (`HMGET` of named fields: never the whole hash, which in hours
//! written by earlier versions also holds one field per distinct code, type and client), and
//! per bucket (each whole hour, each minute at the range's edges) the
//! `READ_PER_BUCKET` + 1 most frequent members of its three breakdown sets; all pipelined.

use std::collections::BTreeMap;

use async_trait::async_trait;
use failed_tasks_domain::stats::{
    buckets, Bucket, BucketTops, Dimension, MinuteCounts, READ_PER_BUCKET,
};
use failed_tasks_domain::{ErrorCategory, GroupPage, GroupQuery, TaskType};
use failed_tasks_store::{StatsStore, StoreError};
use fred::types::Value;

use crate::layout::dimension_letter;
use crate::scripts::Scripts;
use crate::shard::Shard;
use crate::store::{hour_end_ms, hour_of, now_ms, RedisStore};

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

/// How many fields [`minute_fields`] names per minute.
const PER_MINUTE: usize = 3 + ErrorCategory::ALL.len();

/// The fields of `P:cnt:{hour}` that a read of minute `m` asks for, in this order: total,
/// recovered, superseded, then one per category of `ErrorCategory::ALL` ([`PER_MINUTE`]).
fn minute_fields(m: i64) -> impl Iterator<Item = String> {
    [format!("{m}:t"), format!("{m}:r"), format!("{m}:s")]
        .into_iter()
        .chain(
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
        superseded: get(2),
        ..MinuteCounts::default()
    };
    for (i, cat) in ErrorCategory::ALL.iter().enumerate() {
        let n = get(3 + i);
        if n > 0 {
            c.by_category.insert(*cat, n);
        }
    }
    (c.total > 0 || c.recovered > 0 || c.superseded > 0).then_some(c)
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

impl Shard {
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
        let keys = &self.keys;
        let per_minute = PER_MINUTE;
        let hours: Vec<i64> = (hour_of(from_minute)..=hour_of(to_minute - 1)).collect();
        let mut out = Vec::new();
        for chunk in hours.chunks(PIPELINE_CHUNK) {
            let reads = chunk.iter().map(|&h| {
                let minutes = (h * 60).max(from_minute)..(h * 60 + 60).min(to_minute);
                let mut args: Vec<Value> = vec![keys.counters(h).into()];
                args.extend(minutes.clone().flat_map(minute_fields).map(Value::from));
                async move {
                    let v: Value = self
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
    /// `READ_PER_BUCKET` + 1 highest members of its four sets (`ZRANGE … REV LIMIT`), and,
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
        let keys = &self.keys;
        let conn = &self.conn;
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
                        let v = values
                            .get(n * Dimension::ALL.len() + k)
                            .copied()
                            .flatten()
                            .unwrap_or(0);
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
        let keys = &self.keys;
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
            .conn
            .eval(
                &Scripts::get().attempts,
                vec![self.keys.attempts(hour).into()],
                vec![
                    format!("{minute}:{task_type}").into(),
                    i64::try_from(count).unwrap_or(i64::MAX).into(),
                    until.into(),
                ],
            )
            .await?;
        Ok(())
    }
}

/// Add `b`'s counters into `a` (the same minute).
fn add_counts(a: &mut MinuteCounts, b: MinuteCounts) {
    a.total += b.total;
    a.recovered += b.recovered;
    a.superseded += b.superseded;
    for (k, v) in b.by_category {
        *a.by_category.entry(k).or_default() += v;
    }
}

/// Add `b`'s counts into `a` (same bucket), by name.
fn add_tops(a: &mut BucketTops, b: BucketTops) {
    for d in Dimension::ALL {
        let list = a.of_mut(d);
        for (name, n) in b.of(d) {
            match list.iter_mut().find(|(k, _)| k == name) {
                Some((_, m)) => *m += n,
                None => list.push((name.clone(), *n)),
            }
        }
    }
    for d in Dimension::ALL {
        *a.untracked.get_mut(d) += b.untracked.get(d);
    }
}

#[async_trait]
impl StatsStore for RedisStore {
    /// Every shard's counters of the range (one `HMGET` of the range's minute fields per
    /// hour, `P:cnt:HOUR`, pipelined), added up per minute: O(shards x minutes in the
    /// range), whatever the number of stored tasks or distinct values.
    async fn failure_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        let reads = self
            .every_shard(|s| s.read_failure_counts(from_minute, to_minute))
            .await;
        let mut per: BTreeMap<i64, MinuteCounts> = BTreeMap::new();
        for r in reads {
            for c in r? {
                match per.entry(c.minute) {
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        add_counts(e.get_mut(), c)
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(c);
                    }
                }
            }
        }
        Ok(per.into_values().collect())
    }

    /// Every shard's most frequent values per bucket (four `ZRANGE … REV LIMIT` per
    /// bucket, `P:top:m:MINUTE:D`, `P:top:h:HOUR:D`, and one `HMGET` of untracked fields per
    /// hour, pipelined), added up by name (and the untracked counts), cut to what one shard
    /// answers. With several shards a value cut from one shard's list can be missing or low
    /// in the sum; the lists are then longer than a read uses, so the statistics say their
    /// breakdowns are not exact.
    async fn failure_tops(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<BucketTops>, StoreError> {
        let reads = self
            .every_shard(|s| s.read_failure_tops(from_minute, to_minute))
            .await;
        // Keyed by the bucket's first minute: the buckets' order in time, as one shard
        // answers them (`buckets`, oldest first).
        let mut per: BTreeMap<i64, BucketTops> = BTreeMap::new();
        for r in reads {
            for t in r? {
                let first_minute = match t.bucket {
                    Bucket::Minute(m) => m,
                    Bucket::Hour(h) => h.saturating_mul(60),
                };
                let merged = per
                    .entry(first_minute)
                    .or_insert_with(|| BucketTops::empty(t.bucket));
                add_tops(merged, t);
            }
        }
        Ok(per
            .into_values()
            .map(|mut t| {
                for d in Dimension::ALL {
                    let list = t.of_mut(d);
                    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
                    list.truncate(READ_PER_BUCKET + 1);
                }
                t
            })
            .collect())
    }

    /// Kept in the shard of the task type's name (the same hash as task ids): one script on
    /// one slot; reads add up every shard.
    async fn record_attempts(
        &self,
        task_type: &TaskType,
        minute: i64,
        count: u64,
    ) -> Result<(), StoreError> {
        self.shards()
            .of(task_type.as_str())
            .add_attempts(task_type, minute, count)
            .await
    }

    /// One `HGETALL` per shard and hour of the range (`P:att:HOUR`, one field per minute and
    /// task type), pipelined, added up per minute.
    async fn attempt_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let reads = self
            .every_shard(|s| s.read_attempt_counts(from_minute, to_minute))
            .await;
        let mut per: BTreeMap<i64, u64> = BTreeMap::new();
        for r in reads {
            for (minute, n) in r? {
                *per.entry(minute).or_default() += n;
            }
        }
        Ok(per.into_iter().collect())
    }

    /// A k-way merge of the shards' `P:groups` from the cursor, then four O(log N) reads per
    /// group of the page and shard, pipelined (see `groups`).
    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, StoreError> {
        self.groups_page(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_fields_are_parsed_and_bad_ones_ignored() {
        let fields: Vec<String> = minute_fields(7).collect();
        assert_eq!(fields[..4], ["7:t", "7:r", "7:s", "7:c:service_timeout"]);
        let mut values = vec![Some(3), None, Some(4)];
        values.extend((0..ErrorCategory::ALL.len()).map(|i| (i == 1).then_some(2)));
        let c = minute_of_fields(7, &values).unwrap();
        assert_eq!((c.minute, c.total, c.recovered, c.superseded), (7, 3, 0, 4));
        assert_eq!(c.by_category.len(), 1);
        assert_eq!(c.by_category.get(&ErrorCategory::ALL[1]).copied(), Some(2));
        assert_eq!(minute_of_fields(7, &[None, None, None]), None);
        assert!(minute_of_fields(7, &[None, None, Some(1)]).is_some());
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
}
