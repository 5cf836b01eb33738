//! The stored form of one failed task: the one place that defines, encodes and decodes it.
//!
//! A store that keeps a task as bytes (the Redis adapter's record, the archive's lines via
//! [`write_wire_json`]) uses this module; nothing else spells the stored fields. The API's
//! wire form belongs to the HTTP adapter; the one place where the two meet on purpose is
//! [`Record::write_wire_json`], which renders a record as the contract's task object without
//! building a task (the HTTP adapter's test checks it against its own wire type, field by
//! field).
//!
//! # Layout (`v4`, written now)
//!
//! One header line of tab-separated fields, `\n`, then the error message (any text):
//!
//! ```text
//! v4 MEMBER CATEGORY TASK_TYPE CLIENT_ID ERROR_CODE SIGNATURE STATE ATTEMPT DUE_MS BY CODEBASE_PATH RUN_BY START_MS PROCESSED_FILES DUE_AT
//! ```
//!
//! - `MEMBER` is the task's index member, `{fail_ms:015}:{task_id}` ([`member`]): it carries
//!   the fail time and the task id, so neither is stored twice.
//! - `STATE` is the retry state: `s` scheduled, `f` final, `n` recorded without a plan, `c`
//!   cancelled; `ATTEMPT` the next attempt (`RetryCount + 1`); `DUE_MS`, `BY`
//!   (`policy`/`operator`) and `DUE_AT` (the due time in RFC 3339) the scheduled retry's,
//!   empty unless `s`; `RUN_BY` who scheduled the attempt that failed (`policy`, `operator`
//!   or `-`; the Redis record script fills it in from the record it replaces).
//! - Tabs and newlines cannot occur in the header's values (the domain rejects control
//!   characters in ids, types, codes and paths; a signature is 16 hex digits; the rest are
//!   numbers and fixed words); the message is last and may hold anything.
//!
//! Everything a page needs (`FinalFailure`: category, error code, retry count;
//! `NextRetryAt`) is in the header, so a page is rendered by slicing the record
//! ([`Record::parse`] checks the header without a JSON parser).
//!
//! # Earlier versions
//!
//! `v3` (the first 13 header fields, then the task as wire JSON ending in `NextRetryAt`), `v2`
//! (7 fields, no retry fields) and `v1` (6 fields, no signature) are still decoded by
//! [`decode`] (a JSON parse), and the migration rewrites them as `v4`.

use std::io::{self, Write};

use failed_tasks_domain::{
    AttemptRecord, ErrorCategory, ErrorCode, ErrorSignature, FailedTask, NewFailedTask, NextRetry,
    RetryStatus, ScheduledBy, Timestamp,
};

/// The version tag written now.
pub const VERSION: &str = "v4";

/// The fields of a record's header line, in order: the one place that says where each field
/// is. Fields are only ever appended, so every version's header is a prefix of this list
/// ([`VERSIONS`] gives each version's length) and a field is present in a header exactly when
/// the header is longer than its position. The Redis scripts read the positions from here
/// ([`Field::name`] and [`Field::at`], substituted when the scripts are built), so adding a
/// field at the end is an edit of this list, [`encode`] and [`Record::parse`], never of Lua.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The version tag.
    Version,
    /// The index member `{fail_ms:015}:{task_id}`.
    Member,
    /// The error category.
    Category,
    /// The task type.
    TaskType,
    /// The client id.
    ClientId,
    /// The error code.
    ErrorCode,
    /// The error signature (16 hex digits); from `v2`.
    Signature,
    /// The retry state letter ([`state_letter`]); from `v3`.
    State,
    /// The next attempt (`RetryCount + 1`).
    Attempt,
    /// The scheduled retry's due time in ms since the epoch; empty unless scheduled.
    DueMs,
    /// Who scheduled the retry (`policy`, `operator`); empty unless scheduled.
    By,
    /// The codebase path.
    CodebasePath,
    /// Who scheduled the attempt that failed (`policy`, `operator`, `-`).
    RunBy,
    /// The start time in ms since the epoch; from `v4`.
    StartMs,
    /// The processed files.
    ProcessedFiles,
    /// The scheduled retry's due time in RFC 3339; empty unless scheduled.
    DueAt,
}

impl Field {
    /// Every field, in header order.
    pub const ALL: [Field; 16] = [
        Field::Version,
        Field::Member,
        Field::Category,
        Field::TaskType,
        Field::ClientId,
        Field::ErrorCode,
        Field::Signature,
        Field::State,
        Field::Attempt,
        Field::DueMs,
        Field::By,
        Field::CodebasePath,
        Field::RunBy,
        Field::StartMs,
        Field::ProcessedFiles,
        Field::DueAt,
    ];

    /// Its position in the header, from 0.
    pub const fn at(self) -> usize {
        self as usize
    }

    /// Its name in upper snake case, as the layout and the scripts spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Version => "VERSION",
            Field::Member => "MEMBER",
            Field::Category => "CATEGORY",
            Field::TaskType => "TASK_TYPE",
            Field::ClientId => "CLIENT_ID",
            Field::ErrorCode => "ERROR_CODE",
            Field::Signature => "SIGNATURE",
            Field::State => "STATE",
            Field::Attempt => "ATTEMPT",
            Field::DueMs => "DUE_MS",
            Field::By => "BY",
            Field::CodebasePath => "CODEBASE_PATH",
            Field::RunBy => "RUN_BY",
            Field::StartMs => "START_MS",
            Field::ProcessedFiles => "PROCESSED_FILES",
            Field::DueAt => "DUE_AT",
        }
    }
}

/// Header fields of a record written now, the version included.
const V4_FIELDS: usize = Field::ALL.len();

/// Header fields of a `v3` record (the fields before the start time).
const V3_FIELDS: usize = Field::StartMs.at();

/// Every version this code reads, newest first, with its header's field count (a prefix of
/// [`Field::ALL`]). Only the newest is written.
pub const VERSIONS: [(&str, usize); 4] = [
    (VERSION, V4_FIELDS),
    ("v3", V3_FIELDS),
    ("v2", Field::State.at()),
    ("v1", Field::Signature.at()),
];

/// Width of the zero-padded fail time at the start of every member.
pub const MS_DIGITS: usize = 15;

/// Whether `tag` (the header's first field) is a version this code reads.
pub fn is_known_version(tag: &[u8]) -> bool {
    VERSIONS.iter().any(|(v, _)| v.as_bytes() == tag)
}

/// The index member of a position: `{fail_ms:015}:{task_id}`. Byte order of members is the
/// listing order (newest first when read in reverse).
pub fn member(fail_ms: i64, task_id: &str) -> String {
    format!("{fail_ms:0MS_DIGITS$}:{task_id}")
}

/// A member's fail time (ms) and task id, unvalidated beyond the digits; `None` when it is
/// not a member.
pub fn split_member(m: &str) -> Option<(i64, &str)> {
    let ms = m.get(..MS_DIGITS)?;
    let id = m.get(MS_DIGITS..)?.strip_prefix(':')?;
    if id.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, id))
}

/// The retry state letter of a status; `cancelled` tells a cancelled retry from a failure
/// recorded without a plan (both unscheduled).
pub fn state_letter(status: &RetryStatus, cancelled: bool) -> &'static str {
    match status {
        RetryStatus::Scheduled(_) => "s",
        RetryStatus::Final => "f",
        RetryStatus::Unscheduled if cancelled => "c",
        RetryStatus::Unscheduled => "n",
    }
}

/// The whole stored value of `task` (`v4`). `signature` must be the task's
/// ([`ErrorSignature::of_task`]); the caller computes it once for the header and the script.
pub fn encode(task: &FailedTask, signature: &ErrorSignature, status: &RetryStatus) -> String {
    let mut out = String::with_capacity(256 + task.error_message().as_str().len());
    use std::fmt::Write as _;
    let next = status.next();
    for field in Field::ALL {
        if field != Field::Version {
            out.push('\t');
        }
        match field {
            Field::Version => out.push_str(VERSION),
            Field::Member => out.push_str(&member(
                task.fail_time().unix_millis(),
                task.task_id().as_str(),
            )),
            Field::Category => out.push_str(task.error_category().as_str()),
            Field::TaskType => out.push_str(task.task_type().as_str()),
            Field::ClientId => out.push_str(task.client_id().as_str()),
            Field::ErrorCode => out.push_str(task.error_code().as_str()),
            Field::Signature => out.push_str(signature.as_str()),
            Field::State => out.push_str(state_letter(status, false)),
            Field::Attempt => {
                let _ = write!(out, "{}", u64::from(task.retry_count()) + 1);
            }
            Field::DueMs => {
                if let Some(n) = next {
                    let _ = write!(out, "{}", n.due.unix_millis());
                }
            }
            Field::By => out.push_str(next.map_or("", |n| n.by.as_str())),
            Field::CodebasePath => out.push_str(task.codebase_path().as_str()),
            Field::RunBy => out.push('-'),
            Field::StartMs => {
                let _ = write!(out, "{}", task.start_time().unix_millis());
            }
            Field::ProcessedFiles => {
                let _ = write!(out, "{}", task.processed_files());
            }
            Field::DueAt => {
                if let Some(n) = next {
                    out.push_str(&n.due.to_rfc3339());
                }
            }
        }
    }
    out.push('\n');
    out.push_str(task.error_message().as_str());
    out
}

/// A `v4` record, checked and split without copying: what a page needs is read from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    member: &'a str,
    task_id: &'a str,
    fail_ms: i64,
    category: ErrorCategory,
    task_type: &'a str,
    client_id: &'a str,
    error_code: &'a str,
    signature: &'a str,
    state: u8,
    attempt: u32,
    due_ms: Option<i64>,
    by: &'a str,
    codebase_path: &'a str,
    run_by: &'a str,
    start_ms: i64,
    processed_files: u64,
    due_at: &'a str,
    message: &'a str,
}

impl<'a> Record<'a> {
    /// Check a stored value's header and split it. Errors say what is wrong; a record of an
    /// earlier version is an error here (read it with [`decode`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "record is not UTF-8 text")?;
        // One pass over the header's bytes (tabs and the newline are ASCII, so every cut is
        // at a character boundary).
        let mut f = [""; V4_FIELDS];
        let (mut n, mut start, mut newline) = (0, 0, None);
        for (i, &c) in text.as_bytes().iter().enumerate() {
            if c == b'\t' || c == b'\n' {
                *f.get_mut(n).ok_or("too many header fields")? = &text[start..i];
                n += 1;
                start = i + 1;
                if c == b'\n' {
                    newline = Some(i);
                    break;
                }
            }
        }
        let nl = newline.ok_or("record without a header line")?;
        let message = &text[nl + 1..];
        if f[Field::Version.at()] != VERSION {
            return Err(format!(
                "not a {VERSION} header: {:?}",
                f[Field::Version.at()]
            ));
        }
        if n != V4_FIELDS {
            return Err(format!("a {VERSION} header with {n} fields"));
        }
        let (fail_ms, task_id) = split_member(f[Field::Member.at()]).ok_or("malformed member")?;
        let category = ErrorCategory::parse(f[Field::Category.at()]).map_err(|e| e.to_string())?;
        let state = match f[Field::State.at()] {
            "s" => b's',
            "f" => b'f',
            "n" => b'n',
            "c" => b'c',
            other => return Err(format!("unknown retry state {other:?}")),
        };
        let attempt: u32 = f[Field::Attempt.at()]
            .parse()
            .map_err(|_| "malformed attempt")?;
        if attempt == 0 {
            return Err("attempt 0".to_owned());
        }
        let due_ms = if state == b's' {
            if f[Field::By.at()].is_empty() || f[Field::DueAt.at()].is_empty() {
                return Err("a scheduled retry without its scheduler or due time".to_owned());
            }
            Some(
                f[Field::DueMs.at()]
                    .parse()
                    .map_err(|_| "malformed due time")?,
            )
        } else {
            None
        };
        Ok(Self {
            member: f[Field::Member.at()],
            task_id,
            fail_ms,
            category,
            task_type: f[Field::TaskType.at()],
            client_id: f[Field::ClientId.at()],
            error_code: f[Field::ErrorCode.at()],
            signature: f[Field::Signature.at()],
            state,
            attempt,
            due_ms,
            by: f[Field::By.at()],
            codebase_path: f[Field::CodebasePath.at()],
            run_by: f[Field::RunBy.at()],
            start_ms: f[Field::StartMs.at()]
                .parse()
                .map_err(|_| "malformed start time")?,
            processed_files: f[Field::ProcessedFiles.at()]
                .parse()
                .map_err(|_| "malformed processed files")?,
            due_at: f[Field::DueAt.at()],
            message,
        })
    }

    /// The index member the record belongs to.
    pub fn member(&self) -> &'a str {
        self.member
    }

    /// The task id (from the member).
    pub fn task_id(&self) -> &'a str {
        self.task_id
    }

    /// The error category.
    pub fn category(&self) -> ErrorCategory {
        self.category
    }

    /// The error code, as stored.
    pub fn error_code(&self) -> &'a str {
        self.error_code
    }

    /// Retries before this failure (`ATTEMPT - 1`).
    pub fn retry_count(&self) -> u32 {
        self.attempt - 1
    }

    /// When the scheduled retry is (or was) due, in RFC 3339; `None` when none is scheduled.
    pub fn next_retry_at(&self) -> Option<&'a str> {
        (self.state == b's').then_some(self.due_at)
    }

    /// The retry status the header names.
    pub fn status(&self) -> Result<RetryStatus, String> {
        Ok(match (self.state, self.due_ms) {
            (b's', Some(due)) => RetryStatus::Scheduled(NextRetry {
                attempt: self.attempt,
                due: Timestamp::from_unix_millis(due).map_err(|e| e.to_string())?,
                by: ScheduledBy::parse(self.by).map_err(|e| e.to_string())?,
            }),
            (b'f', _) => RetryStatus::Final,
            _ => RetryStatus::Unscheduled,
        })
    }

    /// The validated task; the error says what is wrong.
    pub fn task(&self) -> Result<FailedTask, String> {
        let time = |field, ms| Timestamp::from_unix_millis(ms).map_err(|e| e.for_field(field));
        FailedTask::new(NewFailedTask {
            task_id: self.task_id.to_owned(),
            task_type: self.task_type.to_owned(),
            client_id: self.client_id.to_owned(),
            codebase_path: self.codebase_path.to_owned(),
            start_time: time("StartTime", self.start_ms).map_err(|e| e.to_string())?,
            fail_time: time("FailTime", self.fail_ms).map_err(|e| e.to_string())?,
            error_code: self.error_code.to_owned(),
            error_message: self.message.to_owned(),
            retry_count: self.retry_count(),
            processed_files: self.processed_files,
            error_category: Some(self.category),
        })
        .map_err(|e| format!("invalid task: {e}"))
    }

    /// The newest failed attempt the record names (its own failure).
    pub fn attempt_record(&self) -> Option<AttemptRecord> {
        Some(AttemptRecord {
            attempt: self.retry_count(),
            fail_time: Timestamp::from_unix_millis(self.fail_ms).ok()?,
            error_code: ErrorCode::parse(self.error_code).ok()?,
            error_category: self.category,
            scheduled_by: match self.run_by {
                "-" => None,
                by => Some(ScheduledBy::parse(by).ok()?),
            },
        })
    }

    /// The contract's task object (docs/CONTRACT.md section 1), field for field as the HTTP
    /// adapter's wire type serializes it, with `NextRetryAt` and, when given,
    /// `FinalFailure`: the one function through which stored bytes become API bytes.
    pub fn write_wire_json(
        &self,
        final_failure: Option<bool>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let mut time = [0u8; 24];
        out.write_all(b"{\"TaskId\":")?;
        json_string(self.task_id, out)?;
        out.write_all(b",\"TaskType\":")?;
        json_string(self.task_type, out)?;
        out.write_all(b",\"ClientId\":")?;
        json_string(self.client_id, out)?;
        out.write_all(b",\"CodebasePath\":")?;
        json_string(self.codebase_path, out)?;
        out.write_all(b",\"StartTime\":\"")?;
        let start = Timestamp::saturating_from_unix_millis(self.start_ms);
        out.write_all(start.format_rfc3339(&mut time).as_bytes())?;
        out.write_all(b"\",\"FailTime\":\"")?;
        let fail = Timestamp::saturating_from_unix_millis(self.fail_ms);
        out.write_all(fail.format_rfc3339(&mut time).as_bytes())?;
        out.write_all(b"\",\"ErrorCode\":")?;
        json_string(self.error_code, out)?;
        out.write_all(b",\"ErrorMessage\":")?;
        json_string(self.message, out)?;
        out.write_all(b",\"RetryCount\":")?;
        write_u64(u64::from(self.retry_count()), out)?;
        out.write_all(b",\"ProcessedFiles\":")?;
        write_u64(self.processed_files, out)?;
        out.write_all(b",\"ErrorCategory\":\"")?;
        out.write_all(self.category.as_str().as_bytes())?;
        out.write_all(b"\",\"NextRetryAt\":")?;
        match self.next_retry_at() {
            Some(at) => json_string(at, out)?,
            None => out.write_all(b"null")?,
        }
        match final_failure {
            Some(true) => out.write_all(b",\"FinalFailure\":true}"),
            Some(false) => out.write_all(b",\"FinalFailure\":false}"),
            None => out.write_all(b"}"),
        }
    }
}

/// `n` in decimal, without the formatting machinery.
pub fn write_u64(mut n: u64, out: &mut impl Write) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.write_all(&buf[at..])
}

/// Which bytes a JSON string escapes (`"`, `\`, control characters), as `serde_json` does.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `s` as a JSON string, escaped exactly as `serde_json` does (`"`, `\`, and control
/// characters; everything else as it is). Text without any of them, the common case, is
/// copied in one piece.
fn json_string(s: &str, out: &mut impl Write) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.write_all(b"\"")?;
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = first_escaped(bytes, start) {
        let b = bytes[i];
        let unicode;
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => {
                unicode = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ];
                &unicode
            }
        };
        out.write_all(&bytes[start..i])?;
        out.write_all(esc)?;
        start = i + 1;
    }
    out.write_all(&bytes[start..])?;
    out.write_all(b"\"")
}

/// The index of the first byte at or after `from` that a JSON string escapes. Eight bytes
/// at a time while none of them is one (the usual case for ids, paths and messages).
fn first_escaped(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether some byte of `w` is zero (exact as to whether, not which).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte below 0x20, a quote or a backslash.
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
        if control
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        i += 8;
    }
    bytes
        .get(i..)?
        .iter()
        .position(|&b| ESCAPED[b as usize])
        .map(|p| i + p)
}

/// The wire JSON of any stored value this code reads (the archive's line): a `v4` record
/// rendered, an earlier one's JSON checked and kept as it is.
pub fn wire_json(stored: &str) -> Result<String, String> {
    if stored.starts_with("v4\t") {
        let r = Record::parse(stored.as_bytes())?;
        let mut out = Vec::with_capacity(stored.len() + 200);
        r.write_wire_json(None, &mut out)
            .map_err(|e| e.to_string())?;
        return String::from_utf8(out).map_err(|e| e.to_string());
    }
    let json = legacy::json_part(stored).ok_or("missing v1-v4 header line")?;
    legacy::decode_wire_json(json)?;
    Ok(json.to_owned())
}

/// Decode a stored value of any version this code reads, with its retry status; the error
/// says what is wrong.
pub fn decode(stored: &str) -> Result<(FailedTask, RetryStatus), String> {
    if stored.starts_with("v4\t") {
        let r = Record::parse(stored.as_bytes())?;
        return Ok((r.task()?, r.status()?));
    }
    legacy::decode(stored)
}

/// The newest failed attempt (the record's own failure) a `v3` or `v4` record's header
/// names; `None` for earlier versions (they do not say who scheduled it).
pub fn attempt_of(stored: &str) -> Option<AttemptRecord> {
    if stored.starts_with("v4\t") {
        return Record::parse(stored.as_bytes()).ok()?.attempt_record();
    }
    legacy::header_attempt(stored.split_once('\n')?.0)
}

/// A stored value of an earlier version rewritten as `v4`, with the task it holds; `None`
/// when it already is `v4`. A `v3` record keeps every header field as the scripts left it
/// (retry state, cancelled or not, schedulers, due time); `v1` and `v2` records become what
/// recording the task now writes (never scheduled, the signature computed). The error says
/// why a value cannot be read.
pub fn upgrade(stored: &str) -> Result<Option<(String, FailedTask)>, String> {
    use std::fmt::Write as _;
    if stored.starts_with("v4\t") {
        Record::parse(stored.as_bytes())?;
        return Ok(None);
    }
    let (task, status) = legacy::decode(stored)?;
    let header = stored.split_once('\n').map_or("", |(h, _)| h);
    if !header.starts_with("v3\t") {
        let out = encode(&task, &ErrorSignature::of_task(&task), &status);
        return Ok(Some((out, task)));
    }
    let mut out = String::with_capacity(stored.len());
    out.push_str(VERSION);
    for field in header.split('\t').skip(1) {
        out.push('\t');
        out.push_str(field);
    }
    let due_at = status.next_retry_at().map(Timestamp::to_rfc3339);
    let _ = writeln!(
        out,
        "\t{}\t{}\t{}",
        task.start_time().unix_millis(),
        task.processed_files(),
        due_at.unwrap_or_default()
    );
    out.push_str(task.error_message().as_str());
    Record::parse(out.as_bytes())?;
    Ok(Some((out, task)))
}

/// Records written before `v4`: a header line, then the task as wire JSON.
mod legacy {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct WireIn {
        task_id: String,
        task_type: String,
        client_id: String,
        codebase_path: String,
        start_time: String,
        fail_time: String,
        error_code: String,
        error_message: String,
        retry_count: u32,
        processed_files: u64,
        error_category: String,
        /// Present in `v3` records; the header is the source of the retry status.
        #[serde(default)]
        #[allow(dead_code)]
        next_retry_at: Option<String>,
    }

    /// The retry status a `v1`-`v3` header names: `v3` headers carry it, older ones were
    /// never scheduled. `None` when a `v3` header's retry fields do not make sense.
    pub(super) fn header_status(header: &str) -> Option<RetryStatus> {
        let fields: Vec<&str> = header.split('\t').collect();
        if fields.first() != Some(&"v3") {
            return Some(RetryStatus::Unscheduled);
        }
        if fields.len() != V3_FIELDS {
            return None;
        }
        match fields[Field::State.at()] {
            "s" => {
                let attempt = fields[Field::Attempt.at()].parse().ok()?;
                let due_ms = fields[Field::DueMs.at()].parse().ok()?;
                let due = Timestamp::from_unix_millis(due_ms).ok()?;
                let by = ScheduledBy::parse(fields[Field::By.at()]).ok()?;
                Some(RetryStatus::Scheduled(NextRetry { attempt, due, by }))
            }
            "f" => Some(RetryStatus::Final),
            "n" | "c" => Some(RetryStatus::Unscheduled),
            _ => None,
        }
    }

    /// The wire JSON part of a `v1`-`v3` value (everything after the header line).
    pub(super) fn json_part(stored: &str) -> Option<&str> {
        let (header, json) = stored.split_once('\n')?;
        let tag = header.split('\t').next()?;
        matches!(tag, "v3" | "v2" | "v1").then_some(json)
    }

    pub(super) fn decode_wire_json(json: &str) -> Result<FailedTask, String> {
        let w: WireIn = serde_json::from_str(json).map_err(|e| format!("bad task JSON: {e}"))?;
        let category = ErrorCategory::parse(&w.error_category).map_err(|e| e.to_string())?;
        let start =
            Timestamp::parse_rfc3339("StartTime", &w.start_time).map_err(|e| e.to_string())?;
        let fail = Timestamp::parse_rfc3339("FailTime", &w.fail_time).map_err(|e| e.to_string())?;
        FailedTask::new(NewFailedTask {
            task_id: w.task_id,
            task_type: w.task_type,
            client_id: w.client_id,
            codebase_path: w.codebase_path,
            start_time: start,
            fail_time: fail,
            error_code: w.error_code,
            error_message: w.error_message,
            retry_count: w.retry_count,
            processed_files: w.processed_files,
            error_category: Some(category),
        })
        .map_err(|e| format!("invalid task: {e}"))
    }

    pub(super) fn header_attempt(header: &str) -> Option<AttemptRecord> {
        let f: Vec<&str> = header.split('\t').collect();
        if f.first() != Some(&"v3") || f.len() != V3_FIELDS {
            return None;
        }
        let attempt = f[Field::Attempt.at()].parse::<u32>().ok()?.checked_sub(1)?;
        let (fail_ms, _) = split_member(f[Field::Member.at()])?;
        Some(AttemptRecord {
            attempt,
            fail_time: Timestamp::from_unix_millis(fail_ms).ok()?,
            error_code: ErrorCode::parse(f[Field::ErrorCode.at()]).ok()?,
            error_category: ErrorCategory::parse(f[Field::Category.at()]).ok()?,
            scheduled_by: match f[Field::RunBy.at()] {
                "-" => None,
                by => Some(ScheduledBy::parse(by).ok()?),
            },
        })
    }

    pub(super) fn decode(stored: &str) -> Result<(FailedTask, RetryStatus), String> {
        let json = json_part(stored).ok_or_else(|| "missing v1-v4 header line".to_owned())?;
        let header = stored.split_once('\n').map_or("", |(h, _)| h);
        let status = header_status(header)
            .ok_or_else(|| "malformed retry fields in the header".to_owned())?;
        Ok((decode_wire_json(json)?, status))
    }
}

/// A `v3` record of `task`, as the previous version wrote it: for the migration's tests and
/// tools that must build a store of the old layout.
pub fn encode_v3(task: &FailedTask, signature: &ErrorSignature, status: &RetryStatus) -> String {
    let r = encode(task, signature, status);
    let Ok(parsed) = Record::parse(r.as_bytes()) else {
        return r;
    };
    let header = r.split_once('\n').map_or("", |(h, _)| h);
    let fields: Vec<&str> = header.split('\t').take(V3_FIELDS).collect();
    let mut json = Vec::with_capacity(r.len() + 200);
    let _ = parsed.write_wire_json(None, &mut json);
    format!(
        "v3\t{}\n{}",
        fields[1..].join("\t"),
        String::from_utf8_lossy(&json)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses() -> [RetryStatus; 3] {
        let due = Timestamp::from_unix_millis(1_737_710_108_250).unwrap();
        [
            RetryStatus::Scheduled(NextRetry {
                attempt: 4,
                due,
                by: ScheduledBy::Operator,
            }),
            RetryStatus::Final,
            RetryStatus::Unscheduled,
        ]
    }

    #[test]
    fn round_trip_of_every_version_written() {
        for (t, status) in FailedTask::seed_examples().into_iter().zip(statuses()) {
            let sig = ErrorSignature::of_task(&t);
            let stored = encode(&t, &sig, &status);
            assert!(stored.starts_with("v4\t"), "{stored}");
            assert_eq!(decode(&stored), Ok((t.clone(), status)));
            let r = Record::parse(stored.as_bytes()).unwrap();
            assert_eq!(
                r.member(),
                member(t.fail_time().unix_millis(), t.task_id().as_str())
            );
            assert_eq!(r.retry_count(), t.retry_count());
            assert_eq!(r.category(), t.error_category());
            assert_eq!(r.error_code(), t.error_code().as_str());
            let at = status.next_retry_at().map(Timestamp::to_rfc3339);
            assert_eq!(r.next_retry_at(), at.as_deref());
            // The previous layout still decodes to the same task.
            let v3 = encode_v3(&t, &sig, &status);
            assert!(v3.starts_with("v3\t"), "{v3}");
            assert_eq!(decode(&v3), Ok((t.clone(), status)));
            assert_eq!(wire_json(&v3), wire_json(&stored));
            // Upgrading gives back exactly what is written now.
            assert_eq!(upgrade(&v3), Ok(Some((stored.clone(), t.clone()))));
            assert_eq!(upgrade(&stored), Ok(None));
        }
    }

    #[test]
    fn messages_may_hold_any_text() {
        let t = &FailedTask::seed_examples()[0];
        for msg in [
            "line\nbreak\tand tab",
            "quote \" back \\ \r é 😀",
            "v4\tx\n",
        ] {
            let mut raw = t.clone().into_parts();
            raw.error_message = msg.to_owned();
            let t = FailedTask::new(raw).unwrap();
            let stored = encode(&t, &ErrorSignature::of_task(&t), &RetryStatus::Final);
            let (back, _) = decode(&stored).unwrap();
            assert_eq!(back.error_message().as_str(), msg);
            let json = wire_json(&stored).unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["ErrorMessage"], msg);
        }
    }

    /// The word-at-a-time scan finds exactly the bytes the table names, wherever they are.
    #[test]
    fn escaping_finds_every_escaped_byte() {
        for b in 0u8..=255 {
            for len in 1..20 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let want = ESCAPED[b as usize].then_some(at);
                    assert_eq!(first_escaped(&v, 0), want, "{b} at {at} of {len}");
                }
            }
        }
        let mut out = Vec::new();
        json_string("a\"b\\c\u{1}d\u{7f}é", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string("a\"b\\c\u{1}d\u{7f}é").unwrap()
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        let t = &FailedTask::seed_examples()[0];
        let good = encode(t, &ErrorSignature::of_task(t), &RetryStatus::Final);
        let bad = [
            "".to_owned(),
            "not a record".to_owned(),
            "v1\tx\n{}".to_owned(),
            "v4\tx\nmessage".to_owned(),
            good.replace("service_timeout", "sometimes"),
            good.replacen("\tf\t", "\ts\t", 1),
            good.replacen("\tf\t", "\tz\t", 1),
            good.replacen("\tf\t4\t", "\tf\t0\t", 1),
            good.replacen("\tf\t4\t", "\tf\tfour\t", 1),
            good.replacen("\n", "\textra\n", 1),
        ];
        for b in bad {
            assert!(decode(&b).is_err(), "{b:?}");
            assert!(Record::parse(b.as_bytes()).is_err(), "{b:?}");
        }
        assert!(Record::parse(b"v4\t\xff\n").is_err());
    }
}
