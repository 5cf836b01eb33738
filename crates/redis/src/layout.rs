//! Key names, index members and lexicographic bounds (see `docs/redis-layout.md`).
//!
//! An index member is `{fail_ms:015}:{task_id}`. All scores are 0, so Redis orders members
//! byte-wise; reading in reverse lists newest first and, within one millisecond, task ids in
//! descending byte order: exactly [`SortKey`]'s order. Fifteen digits hold every
//! [`Timestamp`] up to 9999-12-31 ([`Timestamp::MAX_MILLIS`] has 15 digits).

use failed_tasks_domain::stats::{Bucket, Dimension};
use failed_tasks_domain::{
    ClientId, ErrorCategory, ErrorCode, ErrorSignature, RetryState, SortKey, TaskFilter, TaskType,
    Timestamp,
};
use failed_tasks_store::stored::Field;

/// The fields of a retry request in the stream, in the order the scheduler writes them
/// (docs/retries.md documents them; the scheduler script takes them from here).
pub(crate) const STREAM_FIELDS: [&str; 9] = [
    "TaskId",
    "TaskType",
    "ClientId",
    "CodebasePath",
    "Attempt",
    "ErrorCode",
    "ErrorCategory",
    "DueAt",
    "ScheduledBy",
];

/// The fields a retry request of a task with failed files adds (docs/retries.md): where the
/// list is (`FilesKey`) or the paths inline (`Files`, one per line), and how many failed
/// (`FailedFiles`); the deliver script takes them from here, after [`STREAM_FIELDS`].
pub(crate) const STREAM_FILE_FIELDS: [&str; 3] = ["FilesKey", "Files", "FailedFiles"];

/// Width of the zero-padded fail time at the start of every member (the member's format is
/// the stored record's: [`failed_tasks_store::stored::member`]).
pub(crate) use failed_tasks_store::stored::MS_DIGITS;

/// Every key of the store, derived from one prefix. Public so that tools (the benchmark,
/// operators' scripts) name keys the way the store does instead of spelling them again.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The five equality filters that have their own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKind {
    Category,
    TaskType,
    Client,
    ErrorCode,
    Signature,
}

impl IndexKind {
    /// The indexes of a task field's own value, with the record header's field each is read
    /// from: the record scripts keep exactly these from the header (`FIELD_INDEXES` in the
    /// Lua, built from this list). The signature's index is kept with the failure group, the
    /// retry state's from the state letter.
    pub(crate) const BY_FIELD: [(IndexKind, Field); 4] = [
        (IndexKind::Category, Field::Category),
        (IndexKind::TaskType, Field::TaskType),
        (IndexKind::Client, Field::ClientId),
        (IndexKind::ErrorCode, Field::ErrorCode),
    ];

    /// The key segment, also used by the Lua scripts.
    pub(crate) fn segment(self) -> &'static str {
        match self {
            IndexKind::Category => "category",
            IndexKind::TaskType => "type",
            IndexKind::Client => "client",
            IndexKind::ErrorCode => "code",
            IndexKind::Signature => "sig",
        }
    }
}

impl Keys {
    /// The keys of a store with this key prefix.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The key prefix (with its hash tag).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `PREFIX:task:ID`: the record (string).
    pub fn record(&self, id: &str) -> String {
        format!("{}{id}", self.record_prefix())
    }

    /// `PREFIX:task:`: what every record key starts with.
    pub fn record_prefix(&self) -> String {
        format!("{}:task:", self.prefix)
    }

    /// `PREFIX:idx:all`: every task.
    pub fn all(&self) -> String {
        format!("{}:idx:all", self.prefix)
    }

    /// A `KEYS`/`SCAN` pattern of every filter index (`PREFIX:idx:KIND:VALUE`).
    pub fn filter_index_pattern(&self) -> String {
        format!("{}:idx:*:*", self.prefix)
    }

    /// `PREFIX:idx:SEGMENT:VALUE`: the tasks with one filter value.
    pub(crate) fn index(&self, kind: IndexKind, value: &str) -> String {
        format!("{}:idx:{}:{value}", self.prefix, kind.segment())
    }

    /// The index key of each equality condition of `f` (its retry state's included): a page
    /// of a filter with at most one is one range read, with more a walk of the smallest.
    pub(crate) fn filter_indexes(&self, f: &TaskFilter) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = f.category {
            out.push(self.category(c));
        }
        if let Some(t) = &f.task_type {
            out.push(self.task_type(t));
        }
        if let Some(c) = &f.client_id {
            out.push(self.client(c));
        }
        if let Some(c) = &f.error_code {
            out.push(self.error_code(c));
        }
        if let Some(s) = &f.signature {
            out.push(self.signature(s));
        }
        if let Some(r) = f.retry {
            out.push(self.retry_state(r));
        }
        out
    }

    /// `PREFIX:batch:TOKEN`: the receipt a `record_many` call leaves when it applied its batch
    /// (its per-task flags, kept for a few minutes), read when the answer was lost.
    pub(crate) fn batch_receipt(&self, token: &str) -> String {
        format!("{}:batch:{token}", self.prefix)
    }

    /// `PREFIX:slot-guard`: a key nothing ever writes. Every script declares it besides its
    /// own keys, so that Redis Cluster refuses to start a script while the slot is being
    /// migrated (docs/redis-layout.md, "Connection behaviour").
    pub(crate) fn slot_guard(&self) -> String {
        format!("{}:slot-guard", self.prefix)
    }

    /// `PREFIX:janitor:lock`: held by the janitor that is trimming.
    pub(crate) fn janitor_lock(&self) -> String {
        format!("{}:janitor:lock", self.prefix)
    }

    pub(crate) fn category(&self, c: ErrorCategory) -> String {
        self.index(IndexKind::Category, c.as_str())
    }
    pub(crate) fn task_type(&self, t: &TaskType) -> String {
        self.index(IndexKind::TaskType, t.as_str())
    }
    pub(crate) fn client(&self, c: &ClientId) -> String {
        self.index(IndexKind::Client, c.as_str())
    }
    pub(crate) fn error_code(&self, c: &ErrorCode) -> String {
        self.index(IndexKind::ErrorCode, c.as_str())
    }
    /// `PREFIX:idx:sig:SIGNATURE`: the members of one failure group (also the `signature`
    /// filter's index).
    pub(crate) fn signature(&self, s: &ErrorSignature) -> String {
        self.index(IndexKind::Signature, s.as_str())
    }

    /// `PREFIX:grp:SIGNATURE`: one failure group's description and per-client counts (hash).
    pub(crate) fn group(&self, s: &str) -> String {
        format!("{}:grp:{s}", self.prefix)
    }

    /// `PREFIX:groups`: every group, by its newest member's time (`{last_ms:015}:{signature}`).
    pub(crate) fn groups(&self) -> String {
        format!("{}:groups", self.prefix)
    }

    /// `PREFIX:cnt:HOUR`: the failure counters of the minutes of one hour (hash, fields
    /// `MINUTE:t`, `MINUTE:c:CATEGORY`, `MINUTE:r`, and the untracked counts `MINUTE:u:D`,
    /// `h:u:D`).
    pub(crate) fn counters(&self, hour: i64) -> String {
        format!("{}:cnt:{hour}", self.prefix)
    }

    /// `PREFIX:top:m:MINUTE:D` or `PREFIX:top:h:HOUR:D`: one bucket's counts of the values
    /// of dimension `D` (`e` error code, `y` task type, `l` client), a sorted set of at most
    /// `TRACKED_PER_BUCKET` members scored by their count.
    pub(crate) fn tops(&self, bucket: Bucket, dimension: Dimension) -> String {
        let d = dimension_letter(dimension);
        match bucket {
            Bucket::Minute(m) => format!("{}:top:m:{m}:{d}", self.prefix),
            Bucket::Hour(h) => format!("{}:top:h:{h}:{d}", self.prefix),
        }
    }

    /// `PREFIX:idx:retry:STATE`: the tasks in one retry state (`scheduled`, `final`, `none`).
    pub(crate) fn retry_state(&self, state: RetryState) -> String {
        format!("{}:idx:retry:{}", self.prefix, state.as_str())
    }

    /// `PREFIX:retry:due`: scheduled retries not yet delivered (sorted set: task id, score
    /// the due time in ms).
    pub(crate) fn due(&self) -> String {
        format!("{}:retry:due", self.prefix)
    }

    /// `PREFIX:gates`: the active retry gates (hash: gate id -> its line, `crate::gates`).
    /// The scripts also keep `PREFIX:gates:bucket` (a `limit` gate's tokens),
    /// `PREFIX:gates:released`, `PREFIX:retry:parked` (task id -> the gate parking its
    /// retry) and `PREFIX:retry:held:GATE` (the retries a gate parks, score the due time).
    pub(crate) fn gates(&self) -> String {
        format!("{}:gates", self.prefix)
    }

    /// `PREFIX:retry:lock`: held by the scheduler that is delivering.
    pub(crate) fn retry_lock(&self) -> String {
        format!("{}:retry:lock", self.prefix)
    }

    /// `PREFIX:retry:reclaimed`: how many requests workers reclaimed (counter).
    pub(crate) fn reclaimed(&self) -> String {
        format!("{}:retry:reclaimed", self.prefix)
    }

    /// `PREFIX:hist:ID`: the task's last failed attempts (list, newest first).
    pub(crate) fn history(&self, id: &str) -> String {
        format!("{}:hist:{id}", self.prefix)
    }

    /// `PREFIX:files:ID`: the task's failed files (string, the stored form of
    /// `failed_tasks_store::files`), kept and removed with its record.
    pub fn files(&self, id: &str) -> String {
        format!("{}:files:{id}", self.prefix)
    }

    /// `PREFIX:retry:files`: what the retry requests of tasks with failed files carry (hash:
    /// task id -> `crate::files::retry_entry`), kept and removed with the files.
    pub(crate) fn retry_files(&self) -> String {
        format!("{}:retry:files", self.prefix)
    }

    /// `PREFIX:att:HOUR`: the task attempts of the minutes of one hour (hash, fields
    /// `MINUTE:TASK_TYPE`).
    pub(crate) fn attempts(&self, hour: i64) -> String {
        format!("{}:att:{hour}", self.prefix)
    }
}

/// The audit log (`failed_tasks_store::audit`), in the first write shard's slot.
impl Keys {
    /// `PREFIX:audit`: the audit log (capped stream).
    pub(crate) fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }
}

/// The replays' keys (`failed_tasks_store::replay`), all in the first write shard's slot.
impl Keys {
    /// `PREFIX:replay:ID`: one replay (hash, `crate::replays`).
    pub(crate) fn replay(&self, id: &str) -> String {
        format!("{}:replay:{id}", self.prefix)
    }

    /// `PREFIX:replay:ID:sched`: the retries the replay made due (sorted set, member
    /// `{attempt}:{task id}`, score their order).
    pub(crate) fn replay_scheduled(&self, id: &str) -> String {
        format!("{}:replay:{id}:sched", self.prefix)
    }

    /// `PREFIX:replays`: the most recent replays (sorted set, score the creation ms).
    pub(crate) fn replays(&self) -> String {
        format!("{}:replays", self.prefix)
    }

    /// `PREFIX:replays:running`: the running replays (sorted set, score the creation ms).
    pub(crate) fn replays_running(&self) -> String {
        format!("{}:replays:running", self.prefix)
    }

    /// `PREFIX:replays:lease`: the replay runner holding the lease (string, expiring).
    pub(crate) fn replays_lease(&self) -> String {
        format!("{}:replays:lease", self.prefix)
    }
}

/// The notifier's keys (`failed_tasks_store::notify`), all in the first write shard's slot.
impl Keys {
    /// `PREFIX:notify:lease`: the notifier holding the lease (string, expiring).
    pub(crate) fn notify_lease(&self) -> String {
        format!("{}:notify:lease", self.prefix)
    }

    /// `PREFIX:notify:state`: the notifier's state values (hash).
    pub(crate) fn notify_state(&self) -> String {
        format!("{}:notify:state", self.prefix)
    }

    /// `PREFIX:notify:seen`: signatures the notifier saw, scored by their last seen time in
    /// ms (sorted set).
    pub(crate) fn notify_seen(&self) -> String {
        format!("{}:notify:seen", self.prefix)
    }

    /// `PREFIX:notify:out:TARGET`: the target's outbox (stream, one field `e`: the event).
    pub(crate) fn notify_outbox(&self, target: &str) -> String {
        format!("{}:notify:out:{target}", self.prefix)
    }

    /// `PREFIX:notify:tgt:TARGET`: the target's message in flight and figures (hash).
    pub(crate) fn notify_target(&self, target: &str) -> String {
        format!("{}:notify:tgt:{target}", self.prefix)
    }
}

/// The letter of a dimension in the counter keys and fields (as the record script writes
/// them: `e` error code, `y` task type, `l` client, `p` codebase path).
pub(crate) fn dimension_letter(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::ErrorCode => "e",
        Dimension::TaskType => "y",
        Dimension::Client => "l",
        Dimension::CodebasePath => "p",
    }
}

/// `{fail_ms:015}` — the time part of a member; also a lex bound.
/// The arguments of `ZRANGE key start stop BYLEX [REV] LIMIT 0 count`: every index walk
/// reads members this way, newest first (`rev`, `start` the upper bound) or oldest first.
pub(crate) fn zrange_bylex(
    key: &str,
    start: &str,
    stop: &str,
    rev: bool,
    count: i64,
) -> Vec<fred::types::Value> {
    let mut args: Vec<fred::types::Value> =
        vec![key.into(), start.into(), stop.into(), "BYLEX".into()];
    if rev {
        args.push("REV".into());
    }
    args.extend(["LIMIT".into(), 0i64.into(), count.into()]);
    args
}

pub(crate) fn ms_part(ms: i64) -> String {
    format!("{ms:0width$}", width = MS_DIGITS)
}

/// The index member of a position.
pub(crate) fn member(fail_ms: i64, task_id: &str) -> String {
    failed_tasks_store::stored::member(fail_ms, task_id)
}

/// Split a member back into its position; `None` when it is not one of ours.
pub(crate) fn parse_member(m: &str) -> Option<SortKey> {
    if m.len() <= MS_DIGITS + 1 || !m.is_char_boundary(MS_DIGITS) {
        return None;
    }
    let (ms, rest) = m.split_at(MS_DIGITS);
    let id = rest.strip_prefix(':')?;
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = ms.parse().ok()?;
    Some(SortKey::new(
        Timestamp::from_unix_millis(ms).ok()?,
        failed_tasks_domain::TaskId::parse(id).ok()?,
    ))
}

/// The task id of a member without validating it (the part after the time).
pub(crate) fn member_id(m: &str) -> Option<&str> {
    m.get(MS_DIGITS + 1..).filter(|id| !id.is_empty())
}

/// Lexicographic bounds of a reverse walk (`ZRANGE key max min BYLEX REV`): `max` is where
/// the walk starts (newest), `min` where it stops (oldest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexRange {
    pub(crate) max: String,
    pub(crate) min: String,
}

impl LexRange {
    /// Members with `since <= fail time <= until`, strictly after `cursor` in listing order.
    pub(crate) fn new(
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        cursor: Option<&SortKey>,
    ) -> Self {
        // Every member with fail_ms <= until sorts below the bare time part of until + 1.
        let until_bound = until.map(|u| format!("({}", ms_part(u.unix_millis() + 1)));
        let cursor_bound = cursor.map(|c| {
            format!(
                "({}",
                member(c.fail_time().unix_millis(), c.task_id().as_str())
            )
        });
        let max = match (until_bound, cursor_bound) {
            // Both exclusive: the smaller one is the tighter start.
            (Some(u), Some(c)) => {
                if c[1..] < u[1..] {
                    c
                } else {
                    u
                }
            }
            (Some(u), None) => u,
            (None, Some(c)) => c,
            (None, None) => "+".to_owned(),
        };
        // Every member with fail_ms >= since sorts above the bare time part of since.
        let min = since
            .map(|s| format!("[{}", ms_part(s.unix_millis())))
            .unwrap_or_else(|| "-".to_owned());
        Self { max, min }
    }

    /// The bounds for a forward walk (`ZRANGE key min max BYLEX`) of members strictly older
    /// than `cutoff_ms`.
    pub(crate) fn older_than(cutoff_ms: i64) -> Self {
        Self {
            max: format!("({}", ms_part(cutoff_ms.max(0))),
            min: "-".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use failed_tasks_domain::TaskId;

    fn key(ms: i64, id: &str) -> SortKey {
        SortKey::new(
            Timestamp::from_unix_millis(ms).unwrap(),
            TaskId::parse(id).unwrap(),
        )
    }

    /// Redis compares members byte-wise; descending member order must be SortKey order.
    #[test]
    fn member_order_is_sort_key_order() {
        let keys = [
            key(1, "a"),
            key(3, "a"),
            key(2, "b"),
            key(2, "ba"),
            key(2, "c"),
            key(2, "a:b"),
            key(2, "a"),
            key(Timestamp::MAX_MILLIS, "z"),
            key(0, "x"),
            key(10, "é"),
        ];
        let mut by_sort = keys.to_vec();
        by_sort.sort();
        let mut by_member = keys.to_vec();
        by_member.sort_by(|x, y| {
            let mx = member(x.fail_time().unix_millis(), x.task_id().as_str());
            let my = member(y.fail_time().unix_millis(), y.task_id().as_str());
            my.as_bytes().cmp(mx.as_bytes())
        });
        assert_eq!(by_sort, by_member);
        for k in &keys {
            let m = member(k.fail_time().unix_millis(), k.task_id().as_str());
            assert_eq!(parse_member(&m).as_ref(), Some(k));
            assert_eq!(member_id(&m), Some(k.task_id().as_str()));
        }
        assert_eq!(parse_member("nonsense"), None);
        assert_eq!(parse_member("00000000000000x:a"), None);
    }

    #[test]
    fn lex_bounds() {
        let t = |ms| Some(Timestamp::from_unix_millis(ms).unwrap());
        let r = LexRange::new(None, None, None);
        assert_eq!((r.max.as_str(), r.min.as_str()), ("+", "-"));
        let r = LexRange::new(t(5), t(9), None);
        assert_eq!(r.max, "(000000000000010");
        assert_eq!(r.min, "[000000000000005");
        // A cursor older than until wins; a newer one does not.
        let c = key(7, "x");
        assert_eq!(
            LexRange::new(None, t(9), Some(&c)).max,
            "(000000000000007:x"
        );
        let c = key(12, "x");
        assert_eq!(LexRange::new(None, t(9), Some(&c)).max, "(000000000000010");
        assert_eq!(LexRange::older_than(42).max, "(000000000000042");
    }
}
