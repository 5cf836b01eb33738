//! A failed task and the validated values it is made of.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{ErrorCategory, ValidationError};

/// Longest accepted id (task, client, error code, task type), in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest accepted error message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Longest accepted codebase path, in bytes.
pub const MAX_PATH_BYTES: usize = 4 * 1024;

fn check_text(
    field: &str,
    value: &str,
    max: usize,
    allow_empty: bool,
    allow_newlines: bool,
) -> Result<(), ValidationError> {
    if !allow_empty && value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes long; at most {max} are allowed", value.len()),
        ));
    }
    let bad = value
        .chars()
        .any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t' || c == '\r')));
    if bad {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Declares a string newtype whose only constructor validates it.
macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, max = $max:expr, empty = $empty:literal, newlines = $nl:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap `value`; errors name the contract field.
            pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                check_text($field, &value, $max, $empty, $nl)?;
                Ok(Self(value))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Hash, Eq and Ord are the inner String's, so maps keyed by the newtype can be
        // searched with a plain `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

text_newtype!(
    /// The unique id of a task: 1 to 256 bytes of UTF-8, no control characters.
    /// Recording the same id again updates the task rather than adding one.
    TaskId, field = "TaskId", max = MAX_ID_BYTES, empty = false, newlines = false
);
text_newtype!(
    /// The kind of work that failed (`embedding`, `indexing`, `cleaning`, ...): an open set,
    /// 1 to 256 bytes, no control characters.
    TaskType, field = "TaskType", max = MAX_ID_BYTES, empty = false, newlines = false
);
text_newtype!(
    /// The client the task ran for: 1 to 256 bytes, no control characters.
    ClientId, field = "ClientId", max = MAX_ID_BYTES, empty = false, newlines = false
);
text_newtype!(
    /// A machine-readable error code such as `TIMEOUT_ERROR`: 1 to 256 bytes, no control characters.
    ErrorCode, field = "ErrorCode", max = MAX_ID_BYTES, empty = false, newlines = false
);
text_newtype!(
    /// The human-readable error text: at most 8 KiB; newlines and tabs allowed, other control
    /// characters not. May be empty.
    ErrorMessage, field = "ErrorMessage", max = MAX_MESSAGE_BYTES, empty = true, newlines = true
);
text_newtype!(
    /// The path of the codebase the task worked on: at most 4 KiB, no control characters.
    /// May be empty when the reporter does not know it.
    CodebasePath, field = "CodebasePath", max = MAX_PATH_BYTES, empty = true, newlines = false
);

impl TaskType {
    /// Building vectors for a codebase.
    pub fn embedding() -> Self {
        Self("embedding".to_owned())
    }
    /// Building the search index.
    pub fn indexing() -> Self {
        Self("indexing".to_owned())
    }
    /// Removing stale data.
    pub fn cleaning() -> Self {
        Self("cleaning".to_owned())
    }
}

/// A point in time, in UTC, with millisecond precision, between 1970 and the end of 9999.
///
/// Kept as milliseconds since the Unix epoch so it can serve directly as a sort key or a
/// Redis score; shown in RFC 3339 with `Z` (`2025-01-24T09:00:00Z`, with `.mmm` only when
/// the milliseconds are not zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

/// The Unix epoch, 1970-01-01T00:00:00Z (the earliest representable instant).
impl Default for Timestamp {
    fn default() -> Self {
        Self::EPOCH
    }
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The largest representable instant: 9999-12-31T23:59:59.999Z.
    pub const MAX_MILLIS: i64 = 253_402_300_799_999;

    /// From milliseconds since the Unix epoch; out of range is an error on `field`.
    pub fn from_unix_millis(millis: i64) -> Result<Self, ValidationError> {
        if (0..=Self::MAX_MILLIS).contains(&millis) {
            Ok(Self(millis))
        } else {
            Err(ValidationError::new(
                "time",
                format!("{millis} ms is outside 1970-01-01..9999-12-31"),
            ))
        }
    }

    /// From milliseconds since the Unix epoch, clamped into the representable range.
    pub fn saturating_from_unix_millis(millis: i64) -> Self {
        Self(millis.clamp(0, Self::MAX_MILLIS))
    }

    /// The current time of the system clock (clamped into range: a clock before 1970 reads
    /// as the epoch).
    pub fn now() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self::saturating_from_unix_millis(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// `d` later, clamped into the representable range.
    pub fn saturating_add(self, d: std::time::Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self::saturating_from_unix_millis(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this is (zero when it is not after).
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Parse an RFC 3339 time with any offset (`2025-01-24T17:00:00+08:00`), converted to UTC
    /// and truncated to the millisecond. Errors name `field`.
    pub fn parse_rfc3339(field: &str, text: &str) -> Result<Self, ValidationError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            ValidationError::new(
                field,
                format!("{text:?} is not an RFC 3339 time such as 2025-01-24T09:00:00Z ({e})"),
            )
        })?;
        let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        let millis = i64::try_from(millis)
            .map_err(|_| ValidationError::new(field, format!("{text:?} is out of range")))?;
        Self::from_unix_millis(millis).map_err(|e| e.for_field(field))
    }

    /// RFC 3339 in UTC with `Z`; fractional seconds only when the milliseconds are not zero.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(24);
        self.write_rfc3339(&mut out);
        out
    }

    /// Append the RFC 3339 form to `out` without an intermediate allocation.
    pub fn write_rfc3339(self, out: &mut String) {
        let mut buf = [0u8; 24];
        out.push_str(self.format_rfc3339(&mut buf));
    }

    /// The RFC 3339 form, written into `buf` (no allocation, no formatting machinery: the
    /// listing renders two or three per task).
    pub fn format_rfc3339(self, buf: &mut [u8; 24]) -> &str {
        // In range by construction (0..=MAX_MILLIS): years 1970..=9999, four digits.
        let ms = self.0.clamp(0, Self::MAX_MILLIS);
        let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        let (y, mo, d) = civil_from_days(days);
        let secs = rest / 1000;
        let (h, mi, s, frac) = (secs / 3600, secs / 60 % 60, secs % 60, rest % 1000);
        let digits = |buf: &mut [u8; 24], at: usize, mut v: i64, n: usize| {
            for i in (0..n).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        digits(buf, 0, y, 4);
        buf[4] = b'-';
        digits(buf, 5, mo, 2);
        buf[7] = b'-';
        digits(buf, 8, d, 2);
        buf[10] = b'T';
        digits(buf, 11, h, 2);
        buf[13] = b':';
        digits(buf, 14, mi, 2);
        buf[16] = b':';
        digits(buf, 17, s, 2);
        let end = if frac != 0 {
            buf[19] = b'.';
            digits(buf, 20, frac, 3);
            23
        } else {
            19
        };
        buf[end] = b'Z';
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..=end]).unwrap_or("1970-01-01T00:00:00Z")
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The raw parts of a failed task as a reporter supplies them, before validation.
///
/// Turn it into a [`FailedTask`] with [`FailedTask::new`]. `error_category: None` means
/// "classify the error code" ([`ErrorCategory::classify`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewFailedTask {
    /// See [`TaskId`].
    pub task_id: String,
    /// See [`TaskType`].
    pub task_type: String,
    /// See [`ClientId`].
    pub client_id: String,
    /// See [`CodebasePath`].
    pub codebase_path: String,
    /// When the task started.
    pub start_time: Timestamp,
    /// When the task failed; not before the start.
    pub fail_time: Timestamp,
    /// See [`ErrorCode`].
    pub error_code: String,
    /// See [`ErrorMessage`].
    pub error_message: String,
    /// How many times the task was retried before this failure.
    pub retry_count: u32,
    /// How many files the task had processed when it failed.
    pub processed_files: u64,
    /// The category, or `None` to derive it from the error code.
    pub error_category: Option<ErrorCategory>,
}

/// A task that failed: the 11 fields of the contract, every one validated.
///
/// Fields are private so the invariants hold for every value: all ids are valid, and
/// `fail_time >= start_time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    task_id: TaskId,
    task_type: TaskType,
    client_id: ClientId,
    codebase_path: CodebasePath,
    start_time: Timestamp,
    fail_time: Timestamp,
    error_code: ErrorCode,
    error_message: ErrorMessage,
    retry_count: u32,
    processed_files: u64,
    error_category: ErrorCategory,
}

impl FailedTask {
    /// Validate every part; the first problem found is returned, naming the contract field.
    pub fn new(raw: NewFailedTask) -> Result<Self, ValidationError> {
        let (start_time, fail_time) = (raw.start_time, raw.fail_time);
        if fail_time < start_time {
            return Err(ValidationError::new(
                "FailTime",
                format!("{fail_time} is before StartTime {start_time}"),
            ));
        }
        let error_code = ErrorCode::parse(raw.error_code)?;
        let error_category = raw
            .error_category
            .unwrap_or_else(|| ErrorCategory::classify(error_code.as_str()));
        Ok(Self {
            task_id: TaskId::parse(raw.task_id)?,
            task_type: TaskType::parse(raw.task_type)?,
            client_id: ClientId::parse(raw.client_id)?,
            codebase_path: CodebasePath::parse(raw.codebase_path)?,
            start_time,
            fail_time,
            error_code,
            error_message: ErrorMessage::parse(raw.error_message)?,
            retry_count: raw.retry_count,
            processed_files: raw.processed_files,
            error_category,
        })
    }

    /// The task's unique id.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }
    /// What kind of work failed.
    pub fn task_type(&self) -> &TaskType {
        &self.task_type
    }
    /// The client it ran for.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }
    /// The codebase it worked on.
    pub fn codebase_path(&self) -> &CodebasePath {
        &self.codebase_path
    }
    /// When it started.
    pub fn start_time(&self) -> Timestamp {
        self.start_time
    }
    /// When it failed (latest failure when recorded more than once).
    pub fn fail_time(&self) -> Timestamp {
        self.fail_time
    }
    /// The machine-readable error code.
    pub fn error_code(&self) -> &ErrorCode {
        &self.error_code
    }
    /// The human-readable error text.
    pub fn error_message(&self) -> &ErrorMessage {
        &self.error_message
    }
    /// Retries made before this failure.
    pub fn retry_count(&self) -> u32 {
        self.retry_count
    }
    /// Files processed when it failed.
    pub fn processed_files(&self) -> u64 {
        self.processed_files
    }
    /// Why it failed, in one of five classes.
    pub fn error_category(&self) -> ErrorCategory {
        self.error_category
    }

    /// Where the task sits in the listing order.
    pub fn sort_key(&self) -> crate::SortKey {
        crate::SortKey::new(self.fail_time, self.task_id.clone())
    }

    /// The parts back, e.g. to change one and validate again.
    pub fn into_parts(self) -> NewFailedTask {
        NewFailedTask {
            task_id: self.task_id.into_string(),
            task_type: self.task_type.into_string(),
            client_id: self.client_id.into_string(),
            codebase_path: self.codebase_path.into_string(),
            start_time: self.start_time,
            fail_time: self.fail_time,
            error_code: self.error_code.into_string(),
            error_message: self.error_message.into_string(),
            retry_count: self.retry_count,
            processed_files: self.processed_files,
            error_category: Some(self.error_category),
        }
    }

    /// The three example tasks of the source document, field for field (they failed on
    /// 2025-01-24).
    ///
    /// Used by tests that check the contract's example response. `--demo` records
    /// [`demo_examples`](FailedTask::demo_examples) instead: the same tasks in the recent
    /// past, so that retention does not trim them.
    pub fn seed_examples() -> Vec<FailedTask> {
        let ts = |s: &str| Timestamp::parse_rfc3339("seed", s);
        let rows = [
            (
                "task_001",
                "embedding",
                "client123",
                "/projects/myapp",
                "2025-01-24T09:00:00Z",
                "2025-01-24T09:15:00Z",
                "TIMEOUT_ERROR",
                "向量嵌入服务超时，请求超过30秒未响应",
                3,
                75,
                ErrorCategory::ServiceTimeout,
            ),
            (
                "task_002",
                "indexing",
                "client456",
                "/projects/another",
                "2025-01-24T09:20:00Z",
                "2025-01-24T09:22:00Z",
                "PERMISSION_DENIED",
                "没有权限访问指定代码库",
                0,
                0,
                ErrorCategory::Authorization,
            ),
            (
                "task_003",
                "cleaning",
                "client789",
                "/projects/old",
                "2025-01-24T10:00:00Z",
                "2025-01-24T10:01:00Z",
                "STORAGE_ERROR",
                "存储空间不足，无法完成清理操作",
                1,
                50,
                ErrorCategory::ResourceExhausted,
            ),
        ];
        rows.into_iter()
            .filter_map(
                |(id, ty, client, path, start, fail, code, msg, retries, files, cat)| {
                    FailedTask::new(NewFailedTask {
                        task_id: id.into(),
                        task_type: ty.into(),
                        client_id: client.into(),
                        codebase_path: path.into(),
                        start_time: ts(start).ok()?,
                        fail_time: ts(fail).ok()?,
                        error_code: code.into(),
                        error_message: msg.into(),
                        retry_count: retries,
                        processed_files: files,
                        error_category: Some(cat),
                    })
                    .ok()
                },
            )
            .collect()
    }

    /// The source document's three example tasks moved in time so that the last of them
    /// failed in the minute of `now` (rounded down to the minute), every time shifted by the
    /// same amount: their order and spacing (task_001 failed 46 minutes before task_003)
    /// stay as in the source, and every field but the times is unchanged.
    pub fn demo_examples(now: Timestamp) -> Vec<FailedTask> {
        let seed = Self::seed_examples();
        let latest = seed
            .iter()
            .map(|t| t.fail_time.unix_millis())
            .max()
            .unwrap_or(0);
        let anchor = now.unix_millis() - now.unix_millis().rem_euclid(60_000);
        let shift = anchor - latest;
        let moved = |t: Timestamp| Timestamp::saturating_from_unix_millis(t.unix_millis() + shift);
        seed.into_iter()
            .map(|t| FailedTask {
                start_time: moved(t.start_time),
                fail_time: moved(t.fail_time),
                ..t
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {

    /// The hand-written RFC 3339 formatter agrees with the `time` crate's calendar over the
    /// whole range (leap years, century rules, month ends, with and without milliseconds).
    #[test]
    fn rfc3339_formatting_agrees_with_the_time_crate() {
        let reference = |ms: i64| {
            let dt = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap();
            let mut out = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            if ms % 1000 != 0 {
                out.push_str(&format!(".{:03}", ms % 1000));
            }
            out + "Z"
        };
        let mut ms = 0i64;
        let mut n = 0;
        while ms <= Timestamp::MAX_MILLIS {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            assert_eq!(t.to_rfc3339(), reference(ms), "{ms}");
            // Steps of just under 5 days with a changing remainder: every month end, hour
            // and minute comes by, over all 8,000 years.
            ms += 431_999_987 + (n % 1000) * 7;
            n += 1;
        }
        for ms in [
            0,
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
            Timestamp::MAX_MILLIS,
        ] {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            assert_eq!(t.to_rfc3339(), reference(ms), "{ms}");
        }
    }
    use super::*;

    #[test]
    fn demo_examples_keep_the_seed_spacing_and_end_in_the_minute_of_now() {
        let now = Timestamp::parse_rfc3339("now", "2026-12-01T08:30:42.5Z").unwrap();
        let demo = FailedTask::demo_examples(now);
        let seed = FailedTask::seed_examples();
        assert_eq!(demo.len(), seed.len());
        assert_eq!(demo[2].fail_time().to_rfc3339(), "2026-12-01T08:30:00Z");
        assert_eq!(demo[0].start_time().to_rfc3339(), "2026-12-01T07:29:00Z");
        let shift = demo[0].fail_time().unix_millis() - seed[0].fail_time().unix_millis();
        for (d, s) in demo.iter().zip(&seed) {
            assert_eq!(
                d.fail_time().unix_millis() - s.fail_time().unix_millis(),
                shift
            );
            assert_eq!(
                d.start_time().unix_millis() - s.start_time().unix_millis(),
                shift
            );
            assert_eq!(
                (d.task_id(), d.error_code(), d.retry_count()),
                (s.task_id(), s.error_code(), s.retry_count())
            );
        }
    }

    #[test]
    fn seed_examples_are_all_valid() {
        let seed = FailedTask::seed_examples();
        assert_eq!(seed.len(), 3);
        assert_eq!(seed[0].task_id().as_str(), "task_001");
        assert_eq!(seed[0].fail_time().to_rfc3339(), "2025-01-24T09:15:00Z");
        assert_eq!(seed[2].error_category(), ErrorCategory::ResourceExhausted);
    }

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = Timestamp::parse_rfc3339("since", "2025-01-24T17:00:00+08:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2025-01-24T09:00:00Z");
        let t = Timestamp::parse_rfc3339("since", "2025-01-24T09:00:00.1239Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2025-01-24T09:00:00.123Z");
        assert_eq!(
            Timestamp::from_unix_millis(0).unwrap().to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        let max = Timestamp::from_unix_millis(Timestamp::MAX_MILLIS).unwrap();
        assert_eq!(max.to_rfc3339(), "9999-12-31T23:59:59.999Z");
        let e = Timestamp::parse_rfc3339("since", "yesterday").unwrap_err();
        assert_eq!(e.field, "since");
        assert!(Timestamp::parse_rfc3339("until", "1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::from_unix_millis(-1).is_err());
    }

    #[test]
    fn fail_time_before_start_is_rejected() {
        let mut raw = FailedTask::seed_examples()[0].clone().into_parts();
        raw.fail_time = Timestamp::from_unix_millis(raw.start_time.unix_millis() - 1).unwrap();
        let e = FailedTask::new(raw).unwrap_err();
        assert_eq!(e.field, "FailTime");
    }

    #[test]
    fn missing_category_is_classified_from_the_code() {
        let mut raw = FailedTask::seed_examples()[1].clone().into_parts();
        raw.error_category = None;
        let t = FailedTask::new(raw).unwrap();
        assert_eq!(t.error_category(), ErrorCategory::Authorization);
    }

    #[test]
    fn text_limits() {
        assert_eq!(TaskId::parse("").unwrap_err().field, "TaskId");
        assert!(TaskId::parse("a".repeat(256)).is_ok());
        assert!(TaskId::parse("a".repeat(257)).is_err());
        assert!(TaskId::parse("a\nb").is_err());
        assert!(ErrorMessage::parse("line one\nline two").is_ok());
        assert!(ErrorMessage::parse("bell\u{7}").is_err());
        assert!(ErrorMessage::parse("x".repeat(8 * 1024 + 1)).is_err());
        assert!(CodebasePath::parse("").is_ok());
    }
}
