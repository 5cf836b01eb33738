//! Pages of failed tasks: [`RedisStore::list`](failed_tasks_store::StatusStore::list) and
//! [`list_stored`](failed_tasks_store::StoredPages::list_stored), over every shard.
//!
//! A query with at most one equality filter walks one index per shard, newest first: a k-way
//! merge of the shards' members by the one sort key (members sort byte-wise in `SortKey`
//! order). Every shard is asked at once for its total and its share of the page
//! (`ZCARD`/`ZLEXCOUNT` and `ZRANGE`; all shards' commands in one pipeline); the merge takes
//! the page's members, reading on (`ZRANGE` from where it stopped) only a shard whose share
//! runs out; then the page's records are read, one `MGET` per shard that has any, again in
//! one pipeline. Two round trips; with one shard exactly the single store's `ZCARD` +
//! `ZRANGE 0 P REV` (pipelined) and `MGET`. Entries whose
//! record is missing, corrupt or no longer matches are skipped and the merge reads on.
//!
//! A query with several equality filters is each shard's own walk of its smallest index
//! (checking the others with `ZMSCORE`), the shards' pages merged.

use std::collections::{HashSet, VecDeque};

use failed_tasks_domain::{Cursor, FailedTask, ListQuery, RetryStatus, TaskFilter, TaskId};
use failed_tasks_store::{stored, FailedTaskPage, StoreError, StoredPage};
use fred::bytes::Bytes;
use fred::types::Value;
use futures_util::future::join_all;

use crate::conn::map_error;
use crate::layout::{member_id, zrange_bylex, LexRange, MS_DIGITS};
use crate::shard::Shard;
use crate::store::{note_corrupt, RedisStore};

/// Members read per round trip when walking an index with more than one equality filter.
const COMBINED_BATCH: usize = 500;

/// How many members each of `shards` is asked for when `k` are wanted: twice its share plus
/// two (the hash spreads tasks evenly; a shard whose share runs out is read on from where it
/// stopped, one more round trip), never more than `k`. With one shard: `k`.
fn share(k: usize, shards: usize) -> usize {
    (k.div_ceil(shards.max(1)) * 2 + 2).min(k)
}

/// What a record read for an index entry turned out to be.
pub(crate) enum Loaded {
    Task(FailedTask, RetryStatus),
    /// No record, or one that no longer belongs to this index entry.
    Missing,
    Corrupt,
}

/// A record read for `member`, as the reply's bytes (no copy), when it is a current
/// ([`stored::VERSION`]) record whose header names that member; `None` otherwise (the
/// decoded path then decides). The rest of the header is checked by whoever renders it
/// ([`stored::Record::parse`]).
fn stored_record(member: &[u8], value: Value) -> Option<Bytes> {
    let b = match value {
        Value::Bytes(b) => b,
        Value::String(s) => s.into_inner(),
        _ => return None,
    };
    let rest = b
        .strip_prefix(stored::VERSION.as_bytes())?
        .strip_prefix(b"\t")?;
    let after = rest.strip_prefix(member)?;
    (after.first() == Some(&b'\t')).then_some(b)
}

/// Whether `member` is the index member of `task`, without building the member string.
fn is_member_of(member: &str, task: &FailedTask) -> bool {
    member_id(member) == Some(task.task_id().as_str())
        && member
            .get(..MS_DIGITS)
            .and_then(|ms| ms.parse::<i64>().ok())
            == Some(task.fail_time().unix_millis())
        && member.as_bytes().get(MS_DIGITS) == Some(&b':')
}

/// A member as text: one that is not UTF-8 is none of ours; it matches no record and is
/// skipped like any stale entry.
fn text(member: &[u8]) -> String {
    String::from_utf8_lossy(member).into_owned()
}

impl Shard {
    /// `ZCARD index`, or `ZLEXCOUNT index min max` when `total` has bounds: the size of the
    /// index within the window.
    fn count_command(index: &str, total: &LexRange) -> Command {
        if total.min == "-" && total.max == "+" {
            ("ZCARD", vec![index.into()])
        } else {
            (
                "ZLEXCOUNT",
                vec![
                    index.into(),
                    total.min.as_str().into(),
                    total.max.as_str().into(),
                ],
            )
        }
    }

    /// The next `n` members of `index` from `max` down to `min`, newest first
    /// (`ZRANGE … BYLEX REV LIMIT`).
    fn range_command(index: &str, max: &str, min: &str, n: usize) -> Command {
        ("ZRANGE", zrange_bylex(index, max, min, true, n as i64))
    }

    /// The first `n` members of `index` from `max` down to `min`: without bounds by rank
    /// (`ZRANGE index 0 n-1 REV`: the same members, all scores being 0, without the byte
    /// comparisons of a lex range), otherwise [`range_command`](Self::range_command).
    fn first_range_command(index: &str, max: &str, min: &str, n: usize) -> Command {
        if min == "-" && max == "+" {
            let args = vec![
                index.into(),
                0i64.into(),
                (n as i64 - 1).into(),
                "REV".into(),
            ];
            ("ZRANGE", args)
        } else {
            Self::range_command(index, max, min, n)
        }
    }

    /// `MGET` of the records of `members`; every key in one allocation.
    fn records_command<'a>(
        &self,
        members: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
    ) -> Command {
        let prefix = self.keys.record_prefix();
        let size: usize = members.clone().map(|m| prefix.len() + m.len()).sum();
        let mut buf = fred::bytes::BytesMut::with_capacity(size);
        let keys: Vec<Value> = members
            .map(|m| {
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(m.get(MS_DIGITS + 1..).unwrap_or_default());
                Value::Bytes(buf.split().freeze())
            })
            .collect();
        ("MGET", keys)
    }

    /// Decode the record read for `member` and check that it still belongs to that entry.
    pub(crate) fn check(&self, member: &str, value: &Value) -> Loaded {
        let key = || self.keys.record(member_id(member).unwrap_or_default());
        let text = match value {
            Value::Null => return Loaded::Missing,
            // Borrow the reply's bytes: no copy before decoding.
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            Value::String(s) => Some(&**s),
            _ => None,
        };
        match text {
            None => {
                note_corrupt(&key(), "record is not UTF-8 text");
                Loaded::Corrupt
            }
            Some(text) => match stored::decode(text) {
                Ok((task, status)) if is_member_of(member, &task) => Loaded::Task(task, status),
                // The record moved (re-recorded over a corrupt one): a stale entry.
                Ok(_) => Loaded::Missing,
                Err(reason) => {
                    note_corrupt(&key(), &reason);
                    Loaded::Corrupt
                }
            },
        }
    }

    /// Load and check the records of `members`, in order.
    async fn load(&self, members: &[String]) -> Result<Vec<Loaded>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let (name, args) = self.records_command(members.iter().map(|m| m.as_bytes()));
        let values = records_reply(
            members.len(),
            self.conn.cmd("reading records", name, args).await?,
        )?;
        Ok(members
            .iter()
            .zip(&values)
            .map(|(m, v)| self.check(m, v))
            .collect())
    }

    /// This shard's page of a query with several equality filters (`indexes`): a walk of
    /// the smallest index from the cursor, in batches of [`COMBINED_BATCH`], keeping the
    /// members present in every other one; the total counts the whole window the same way.
    async fn combined_page(
        &self,
        query: &ListQuery,
        indexes: Vec<String>,
    ) -> Result<FailedTaskPage, StoreError> {
        let size = query.page_size.as_usize();
        let mut page = Filling::new(&query.filter, size + 1, false);
        let mut walk = self
            .plan_combined(indexes, &query.filter, query.cursor.as_ref())
            .await?;
        let total = self.count_combined(&query.filter, &walk).await?;
        while !page.full() && !walk.done {
            let n = page.wanted().max(COMBINED_BATCH);
            let batch = walk.next_batch(self, n).await?;
            page.absorb(self.load(&batch).await?);
        }
        Ok(page.finish(size, total))
    }

    /// The walk of a query with several equality filters, from `cursor`: over the smallest
    /// of their indexes, keeping the members present in every other one.
    async fn plan_combined(
        &self,
        indexes: Vec<String>,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
    ) -> Result<Walk, StoreError> {
        let range = LexRange::new(filter.since, filter.until, cursor.map(Cursor::position));
        let cards = indexes.iter().map(|i| {
            self.conn
                .cmd::<u64>("sizing an index", "ZCARD", vec![i.as_str().into()])
        });
        let cards = join_all(cards).await;
        let mut sized = Vec::with_capacity(indexes.len());
        for (i, c) in indexes.into_iter().zip(cards) {
            sized.push((c?, i));
        }
        sized.sort();
        let mut names = sized.into_iter().map(|(_, i)| i);
        let index = names.next().unwrap_or_else(|| self.keys.all());
        Ok(Walk {
            index,
            others: names.collect(),
            max: range.max,
            min: range.min,
            done: false,
        })
    }

    /// Count the members of a combined-filter walk over the whole time window: O(M) in the
    /// size M of the narrowest index within the window, in batches of [`COMBINED_BATCH`].
    async fn count_combined(
        &self,
        filter: &TaskFilter,
        template: &Walk,
    ) -> Result<u64, StoreError> {
        let range = LexRange::new(filter.since, filter.until, None);
        let mut walk = Walk {
            index: template.index.clone(),
            others: template.others.clone(),
            max: range.max,
            min: range.min,
            done: false,
        };
        let mut total = 0u64;
        while !walk.done {
            total += walk.next_batch(self, COMBINED_BATCH).await?.len() as u64;
        }
        Ok(total)
    }
}

/// A lazy walk over one index of one shard, newest first, keeping only members that are
/// also in every one of `others`.
struct Walk {
    index: String,
    others: Vec<String>,
    max: String,
    min: String,
    done: bool,
}

impl Walk {
    async fn next_batch(&mut self, shard: &Shard, n: usize) -> Result<Vec<String>, StoreError> {
        if self.done || n == 0 {
            return Ok(Vec::new());
        }
        let members: Vec<String> = shard
            .conn
            .cmd(
                "reading an index",
                "ZRANGE",
                zrange_bylex(&self.index, &self.max, &self.min, true, n as i64),
            )
            .await?;
        if members.len() < n {
            self.done = true;
        }
        if let Some(last) = members.last() {
            self.max = format!("({last}");
        }
        if self.others.is_empty() || members.is_empty() {
            return Ok(members);
        }
        let mut keep = vec![true; members.len()];
        let checks = self.others.iter().map(|other| {
            let mut args: Vec<Value> = Vec::with_capacity(members.len() + 1);
            args.push(other.as_str().into());
            args.extend(members.iter().map(|m| Value::from(m.as_str())));
            shard
                .conn
                .cmd::<Vec<Value>>("checking an index", "ZMSCORE", args)
        });
        for scores in join_all(checks).await {
            for (k, s) in keep.iter_mut().zip(scores?) {
                *k &= !matches!(s, Value::Null);
            }
        }
        Ok(members
            .into_iter()
            .zip(keep)
            .filter_map(|(m, k)| k.then_some(m))
            .collect())
    }
}

/// One shard's part of a [`Merge`]: its buffered members and where its walk goes on.
struct Head {
    key: String,
    max: String,
    min: String,
    buf: VecDeque<Bytes>,
    done: bool,
}

impl Head {
    /// Buffer a batch read with the limit `asked`; the walk goes on below its last member.
    fn fill(&mut self, members: Vec<Bytes>, asked: usize) {
        if members.len() < asked {
            self.done = true;
        }
        if let Some(last) = members.last() {
            self.max = format!("({}", String::from_utf8_lossy(last));
        }
        self.buf.extend(members);
    }
}

/// A k-way merge of one sorted set per shard, read newest first (`ZRANGE … BYLEX REV`) in
/// batches from an exclusive bound: before the largest head is taken, every shard whose
/// buffer ran out is read on, all in parallel. With one shard it is that shard's walk.
pub(crate) struct Merge {
    heads: Vec<Head>,
}

impl Merge {
    /// A merge of `keys` (one per shard, in the shards' order) within `range`.
    pub(crate) fn new(keys: Vec<String>, range: &LexRange) -> Self {
        Self {
            heads: keys
                .into_iter()
                .map(|key| Head {
                    key,
                    max: range.max.clone(),
                    min: range.min.clone(),
                    buf: VecDeque::new(),
                    done: false,
                })
                .collect(),
        }
    }

    /// A merge of `keys` within `range` with every shard's first `n` members read, and the
    /// sum of the sets' sizes within `total`: every shard's count and range in one pipeline
    /// (one round trip).
    async fn start(
        shards: &[Shard],
        keys: Vec<String>,
        total: &LexRange,
        range: &LexRange,
        n: usize,
    ) -> Result<(u64, Self), StoreError> {
        let mut merge = Self::new(keys, range);
        let mut commands = Vec::with_capacity(2 * shards.len());
        for (i, h) in merge.heads.iter().enumerate() {
            commands.push((i, Shard::count_command(&h.key, total)));
            commands.push((i, Shard::first_range_command(&h.key, &h.max, &h.min, n)));
        }
        let doing = "counting and reading an index";
        let mut replies = run(shards, doing, commands).await?.into_iter();
        let mut sum = 0u64;
        for h in &mut merge.heads {
            let (Some(count), Some(members)) = (replies.next(), replies.next()) else {
                break;
            };
            sum = sum.saturating_add(convert::<u64>(doing, count)?);
            h.fill(convert(doing, members)?, n);
        }
        Ok((sum, merge))
    }

    /// The next member and its shard (an index into `shards`), or `None` when every set is
    /// read; a shard whose buffer ran out is read on with `n` members first.
    pub(crate) async fn next(
        &mut self,
        shards: &[Shard],
        n: usize,
    ) -> Result<Option<(usize, Bytes)>, StoreError> {
        let empty = |h: &Head| h.buf.is_empty() && !h.done;
        if self.heads.iter().any(empty) {
            let commands = self
                .heads
                .iter()
                .enumerate()
                .filter(|(_, h)| empty(h))
                .map(|(i, h)| (i, Shard::range_command(&h.key, &h.max, &h.min, n)))
                .collect();
            let doing = "reading an index";
            let mut replies = run(shards, doing, commands).await?.into_iter();
            for h in self.heads.iter_mut().filter(|h| empty(h)) {
                if let Some(members) = replies.next() {
                    h.fill(convert(doing, members)?, n);
                }
            }
        }
        let best = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.buf.front().map(|m| (i, m)))
            .max_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        Ok(best.and_then(|i| self.heads[i].buf.pop_front().map(|m| (i, m))))
    }

    /// The next `k` members (fewer when the sets run out), reading on a shard with about its
    /// share of what is still wanted.
    async fn take(
        &mut self,
        shards: &[Shard],
        k: usize,
    ) -> Result<Vec<(usize, Bytes)>, StoreError> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let n = share(k - out.len(), self.heads.len());
            match self.next(shards, n).await? {
                Some(next) => out.push(next),
                None => break,
            }
        }
        Ok(out)
    }
}

/// The records of `picked` members (shard, member), in order: one `MGET` per shard that has
/// any, all in one pipeline.
async fn records_of(shards: &[Shard], picked: &[(usize, Bytes)]) -> Result<Vec<Value>, StoreError> {
    let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); shards.len()];
    for (pos, (shard, _)) in picked.iter().enumerate() {
        per_shard[*shard].push(pos);
    }
    let reads: Vec<(usize, &Vec<usize>)> = per_shard
        .iter()
        .enumerate()
        .filter(|(_, positions)| !positions.is_empty())
        .collect();
    let commands = reads
        .iter()
        .map(|(shard, positions)| {
            let members = positions.iter().map(|p| &picked[*p].1[..]);
            (*shard, shards[*shard].records_command(members))
        })
        .collect();
    let replies = run(shards, "reading records", commands).await?;
    let mut values = vec![Value::Null; picked.len()];
    for ((_, positions), reply) in reads.iter().zip(replies) {
        for (p, v) in positions.iter().zip(records_reply(positions.len(), reply)?) {
            values[*p] = v;
        }
    }
    Ok(values)
}

/// One command: its name and arguments.
type Command = (&'static str, Vec<Value>);

/// Run `commands`, each on its shard (an index into `shards`), in one pipeline (one hand-over
/// to fred and one answer for all: fred's cost per call, not per command, is what a page of
/// many shards saves); the replies in order. A single command is sent on its own.
async fn run(
    shards: &[Shard],
    doing: &str,
    commands: Vec<(usize, Command)>,
) -> Result<Vec<Value>, StoreError> {
    let mut commands = commands
        .into_iter()
        .map(|(s, (name, args))| (&shards[s].conn, name, args));
    match (commands.next(), commands.len()) {
        (None, _) => Ok(Vec::new()),
        (Some((conn, name, args)), 0) => Ok(vec![conn.cmd(doing, name, args).await?]),
        (Some(first), _) => {
            let conn = first.0;
            conn.cmd_many(doing, std::iter::once(first).chain(commands).collect())
                .await
        }
    }
}

/// A reply as `T`.
fn convert<T: fred::types::FromValue>(doing: &str, reply: Value) -> Result<T, StoreError> {
    reply.convert().map_err(|e| map_error(doing, &e))
}

/// The values of an `MGET` of `n` keys.
fn records_reply(n: usize, reply: Value) -> Result<Vec<Value>, StoreError> {
    let values: Vec<Value> = convert("reading records", reply)?;
    if values.len() != n {
        return Err(StoreError::Internal(format!(
            "MGET answered {} values for {n} keys",
            values.len()
        )));
    }
    Ok(values)
}

/// A page being filled from loaded records: the tasks that match, in order, and what was
/// skipped.
struct Filling<'a> {
    filter: &'a TaskFilter,
    want: usize,
    tasks: Vec<FailedTask>,
    retry: Vec<RetryStatus>,
    corrupt: u64,
    missing: u64,
    /// While resharding: the ids shown, so that a task met in two shards is shown once (the
    /// copy that sorts first).
    shown: Option<HashSet<TaskId>>,
}

impl<'a> Filling<'a> {
    fn new(filter: &'a TaskFilter, want: usize, dedupe: bool) -> Self {
        Self {
            filter,
            want,
            tasks: Vec::with_capacity(want),
            retry: Vec::with_capacity(want),
            corrupt: 0,
            missing: 0,
            shown: dedupe.then(HashSet::new),
        }
    }

    fn full(&self) -> bool {
        self.tasks.len() >= self.want
    }

    /// How many tasks are still wanted.
    fn wanted(&self) -> usize {
        self.want.saturating_sub(self.tasks.len())
    }

    fn absorb(&mut self, loaded: impl IntoIterator<Item = Loaded>) {
        for loaded in loaded {
            match loaded {
                Loaded::Task(t, s) if self.filter.matches(&t) && self.filter.matches_status(&s) => {
                    if let Some(shown) = &mut self.shown {
                        if !shown.insert(t.task_id().clone()) {
                            continue;
                        }
                    }
                    self.tasks.push(t);
                    self.retry.push(s);
                }
                Loaded::Task(..) | Loaded::Missing => self.missing += 1,
                Loaded::Corrupt => self.corrupt += 1,
            }
            if self.full() {
                break;
            }
        }
    }

    /// The page of `size` (one more was wanted, to know whether a page follows) with the
    /// indexes' `total`, less the entries skipped.
    fn finish(self, size: usize, total: u64) -> FailedTaskPage {
        let (mut tasks, mut retry) = (self.tasks, self.retry);
        let next_cursor = if tasks.len() > size {
            tasks.truncate(size);
            tasks.last().map(|t| Cursor::after(t.sort_key()))
        } else {
            None
        };
        retry.truncate(tasks.len());
        if self.missing > 0 {
            tracing::debug!(
                missing = self.missing,
                "skipped index entries without a matching record"
            );
        }
        FailedTaskPage {
            // Skipped entries are counted by the indexes; leave them out of the total too.
            total: total.saturating_sub(self.corrupt + self.missing),
            tasks,
            next_cursor,
            skipped_corrupt: self.corrupt,
            retry,
        }
    }
}

impl RedisStore {
    /// The index each shard walks for `query`, when it has at most one equality filter.
    fn single_indexes(&self, query: &ListQuery) -> Option<Vec<String>> {
        if query.filter.searches() {
            // Text filters are checked record by record (the combined walk does).
            return None;
        }
        self.shards()
            .readers()
            .iter()
            .map(|s| s.single_index(&query.filter))
            .collect()
    }

    /// The merge of `keys` from `query`'s cursor within its window, every shard's share of
    /// `n` members read, and the total of the window.
    async fn start_page(
        &self,
        keys: Vec<String>,
        query: &ListQuery,
        n: usize,
    ) -> Result<(u64, Merge), StoreError> {
        let f = &query.filter;
        let total = LexRange::new(f.since, f.until, None);
        let range = LexRange::new(
            f.since,
            f.until,
            query.cursor.as_ref().map(Cursor::position),
        );
        let shards = self.shards().readers();
        Merge::start(shards, keys, &total, &range, share(n, shards.len())).await
    }

    /// `StatusStore::list`.
    pub(crate) async fn page(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        let Some(keys) = self.single_indexes(query) else {
            return self.combined_pages(query).await;
        };
        let shards = self.shards().readers();
        let size = query.page_size.as_usize();
        let want = size + 1;
        let (total, mut merge) = self.start_page(keys, query, want).await?;
        let mut page = Filling::new(&query.filter, want, self.shards().resharding());
        // Entries skipped (stale, corrupt, shown already) make the merge read on.
        while !page.full() {
            let picked = merge.take(shards, page.wanted()).await?;
            if picked.is_empty() {
                break;
            }
            let values = records_of(shards, &picked).await?;
            page.absorb(
                picked
                    .iter()
                    .zip(&values)
                    .map(|((s, m), v)| shards[*s].check(&text(m), v)),
            );
        }
        Ok(page.finish(size, total))
    }

    /// Every shard's own page of a query with several equality filters, merged by the sort
    /// key (a task seen twice once) and cut to the page size.
    async fn combined_pages(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        let size = query.page_size.as_usize();
        let pages = self
            .every_shard(|s| s.combined_page(query, s.equality_indexes(&query.filter)))
            .await;
        let mut total = 0u64;
        let mut skipped = 0u64;
        let mut more = false;
        let mut all: Vec<(FailedTask, RetryStatus)> = Vec::new();
        for page in pages {
            let page = page?;
            total = total.saturating_add(page.total);
            skipped += page.skipped_corrupt;
            more |= page.next_cursor.is_some();
            let retry = page.retry;
            all.extend(
                page.tasks
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (t, retry.get(i).copied().unwrap_or_default())),
            );
        }
        all.sort_by_key(|(t, _)| t.sort_key());
        let mut seen = HashSet::with_capacity(all.len());
        all.retain(|(t, _)| seen.insert(t.task_id().clone()));
        more |= all.len() > size;
        all.truncate(size);
        let next_cursor = if more {
            all.last().map(|(t, _)| Cursor::after(t.sort_key()))
        } else {
            None
        };
        let (tasks, retry) = all.into_iter().unzip();
        Ok(FailedTaskPage {
            total,
            tasks,
            next_cursor,
            skipped_corrupt: skipped,
            retry,
        })
    }

    /// `StoredPages::list_stored`: with at most one equality filter, the merged walk's
    /// records as the reply's bytes, each checked only for its version and member (a byte
    /// comparison). Otherwise (several filters, or a record of an earlier version, missing
    /// or moved, or a task met twice while resharding) the decoded page, encoded.
    pub(crate) async fn stored_page(&self, query: &ListQuery) -> Result<StoredPage, StoreError> {
        if let Some(keys) = self.single_indexes(query) {
            let shards = self.shards().readers();
            let size = query.page_size.as_usize();
            // From the start of the range the count says whether a page follows, so the
            // page reads exactly `size` members and records (as the raw floor does);
            // after a cursor one more is read to know.
            let from_start = query.cursor.is_none();
            let n = if from_start { size } else { size + 1 };
            let (total, mut merge) = self.start_page(keys, query, n).await?;
            let picked = merge.take(shards, n).await?;
            let values = records_of(shards, &picked).await?;
            let mut shown = self.shards().resharding().then(HashSet::new);
            let mut records = Vec::with_capacity(picked.len());
            for ((_, m), v) in picked.iter().zip(values) {
                let twice = shown.as_mut().is_some_and(|s| !s.insert(member_id_of(m)));
                match stored_record(m, v) {
                    Some(r) if !twice => records.push(r),
                    _ => break,
                }
            }
            if records.len() == picked.len() {
                let more = if from_start {
                    total > picked.len() as u64 && picked.len() == size
                } else {
                    records.len() > size
                };
                let next_cursor = if more {
                    records.truncate(size);
                    picked
                        .get(size - 1)
                        .and_then(|(_, m)| std::str::from_utf8(m).ok())
                        .and_then(crate::layout::parse_member)
                        .map(Cursor::after)
                } else {
                    None
                };
                return Ok(StoredPage {
                    total,
                    records,
                    next_cursor,
                    skipped_corrupt: 0,
                });
            }
        }
        Ok(StoredPage::encoded(&self.page(query).await?))
    }
}

/// The task id part of a member's bytes.
fn member_id_of(member: &Bytes) -> Bytes {
    member.slice(member.len().min(MS_DIGITS + 1)..)
}
