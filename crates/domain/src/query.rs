//! Questions about failed tasks: which ones (a [`TaskFilter`]), how many at a time
//! ([`PageSize`]) and from where ([`Cursor`]), in the one listing order ([`SortKey`]).

use std::cmp::Ordering;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::{
    ClientId, ErrorCategory, ErrorCode, ErrorSignature, FailedTask, PathPrefix, RetryState,
    RetryStatus, SearchText, TaskId, TaskType, Timestamp, ValidationError,
};

/// A task's place in the listing: `FailTime` newest first, then `TaskId` descending.
///
/// `Ord` is the listing order itself: sorting ascending by `SortKey` lists newest first.
/// The task id is compared byte-wise, which is also how Redis orders sorted-set members, so
/// every store lists in exactly this order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortKey {
    fail_time: Timestamp,
    task_id: TaskId,
}

impl SortKey {
    /// The position of the task `task_id` that failed at `fail_time`.
    pub fn new(fail_time: Timestamp, task_id: TaskId) -> Self {
        Self { fail_time, task_id }
    }
    /// The fail time at this position.
    pub fn fail_time(&self) -> Timestamp {
        self.fail_time
    }
    /// The task id at this position.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other.fail_time.cmp(&self.fail_time).then_with(|| {
            other
                .task_id
                .as_str()
                .as_bytes()
                .cmp(self.task_id.as_str().as_bytes())
        })
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where the next page starts: just after the last task of the previous page.
///
/// Opaque to clients (URL-safe base64 of a versioned position). Because it names a
/// position rather than an offset, tasks recorded between two page requests never shift
/// the next page: it is complete and free of duplicates for the tasks that existed before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    after: SortKey,
}

impl Cursor {
    const VERSION: &'static str = "v1";

    /// A cursor that continues after `key`.
    pub fn after(key: SortKey) -> Self {
        Self { after: key }
    }

    /// The last position already served.
    pub fn position(&self) -> &SortKey {
        &self.after
    }

    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        let raw = format!(
            "{}:{}:{}",
            Self::VERSION,
            self.after.fail_time.unix_millis(),
            self.after.task_id
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decode a cursor a client sent back; anything not made by [`Cursor::encode`] is an
    /// error on `cursor`.
    pub fn decode(text: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("cursor", "is not a cursor this service issued");
        if text.is_empty() || text.len() > 1024 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let rest = raw
            .strip_prefix(Self::VERSION)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(bad)?;
        let (millis, id) = rest.split_once(':').ok_or_else(bad)?;
        if millis.is_empty() || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let millis: i64 = millis.parse().map_err(|_| bad())?;
        let fail_time = Timestamp::from_unix_millis(millis).map_err(|_| bad())?;
        let task_id = TaskId::parse(id).map_err(|_| bad())?;
        Ok(Self::after(SortKey::new(fail_time, task_id)))
    }
}

/// The configured bounds of a page: the size used when none is asked for, and the largest allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    default: u32,
    max: u32,
}

impl PageLimits {
    /// The contract's defaults: 100 per page, at most 1000.
    pub const DEFAULT: PageLimits = PageLimits {
        default: 100,
        max: 1000,
    };

    /// Limits with `1 <= default <= max`.
    pub fn new(default: u32, max: u32) -> Result<Self, ValidationError> {
        if default == 0 || default > max {
            return Err(ValidationError::new(
                "page size limits",
                format!("need 1 <= default ({default}) <= max ({max})"),
            ));
        }
        Ok(Self { default, max })
    }

    /// The page size used when a request names none.
    pub fn default_size(self) -> PageSize {
        PageSize(self.default)
    }

    /// The largest page a request may ask for.
    pub fn max(self) -> u32 {
        self.max
    }
}

impl Default for PageLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How many tasks one page holds: between 1 and the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageSize(u32);

impl PageSize {
    /// Parse a requested page size (decimal text) against `limits`; errors name `pageSize`.
    pub fn parse(text: &str, limits: PageLimits) -> Result<Self, ValidationError> {
        let n: u32 = text.parse().map_err(|_| {
            ValidationError::new("pageSize", format!("{text:?} is not a whole number"))
        })?;
        Self::new(n, limits)
    }

    /// A page size within `limits`; errors name `pageSize`.
    pub fn new(n: u32, limits: PageLimits) -> Result<Self, ValidationError> {
        if n == 0 || n > limits.max {
            return Err(ValidationError::new(
                "pageSize",
                format!(
                    "{n} is out of range; it must be between 1 and {}",
                    limits.max
                ),
            ));
        }
        Ok(Self(n))
    }

    /// The size as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The size as a `usize`, for slicing.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// Which failed tasks a question is about; every set field must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this category.
    pub category: Option<ErrorCategory>,
    /// Only this task type.
    pub task_type: Option<TaskType>,
    /// Only this client.
    pub client_id: Option<ClientId>,
    /// Only this error code.
    pub error_code: Option<ErrorCode>,
    /// Only tasks that failed at or after this time.
    pub since: Option<Timestamp>,
    /// Only tasks that failed at or before this time.
    pub until: Option<Timestamp>,
    /// Only tasks with this error signature (one failure group).
    pub signature: Option<ErrorSignature>,
    /// Only tasks in this retry state (stores that schedule retries).
    pub retry: Option<RetryState>,
    /// Only tasks whose message, error code, id or path contains this text (`q`). Not a
    /// store's filter: the search use case matches it over pages of the other filters.
    pub text: Option<SearchText>,
    /// Only tasks whose path is this directory or under it (`pathPrefix`). Like `text`, the
    /// search use case's.
    pub path_prefix: Option<PathPrefix>,
}

impl TaskFilter {
    /// Every failed task.
    pub fn all() -> Self {
        Self::default()
    }

    /// Check the cross-field rule: `since` is not after `until`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since > until {
                return Err(ValidationError::new(
                    "since",
                    format!("{since} is after until {until}"),
                ));
            }
        }
        Ok(())
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `task` matches every set field but `retry`, which is not part of the task
    /// (see [`matches_status`](Self::matches_status)).
    pub fn matches(&self, task: &FailedTask) -> bool {
        self.category.is_none_or(|c| c == task.error_category())
            && self
                .task_type
                .as_ref()
                .is_none_or(|t| t == task.task_type())
            && self
                .client_id
                .as_ref()
                .is_none_or(|c| c == task.client_id())
            && self
                .error_code
                .as_ref()
                .is_none_or(|c| c == task.error_code())
            && self.matches_time(task.fail_time())
            && self
                .signature
                .as_ref()
                .is_none_or(|s| *s == ErrorSignature::of_task(task))
            && self.matches_search(task)
    }

    /// Whether `task` matches `text` and `path_prefix` (the filters without an index).
    pub fn matches_search(&self, task: &FailedTask) -> bool {
        self.text.as_ref().is_none_or(|t| t.matches(task))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| p.contains(task.codebase_path().as_str()))
    }

    /// Whether `text` or `path_prefix` is set: the listing is then a search.
    pub fn searches(&self) -> bool {
        self.text.is_some() || self.path_prefix.is_some()
    }

    /// The filter without `text` and `path_prefix`: what a store is asked.
    pub fn without_search(&self) -> TaskFilter {
        TaskFilter {
            text: None,
            path_prefix: None,
            ..self.clone()
        }
    }

    /// Whether a task with retry status `status` matches the `retry` field (every status
    /// does when it is not set). [`matches`](Self::matches) checks the other fields.
    pub fn matches_status(&self, status: &RetryStatus) -> bool {
        self.retry.is_none_or(|r| r == status.state())
    }

    /// Whether `fail_time` lies within `since..=until`.
    pub fn matches_time(&self, fail_time: Timestamp) -> bool {
        self.since.is_none_or(|s| fail_time >= s) && self.until.is_none_or(|u| fail_time <= u)
    }

    /// The listing's filter parameters, as the contract spells them (the query string of
    /// the listing and the bulk routes, a replay's `Filters`).
    pub const PARAMS: [&'static str; 10] = [
        "category",
        "taskType",
        "clientId",
        "errorCode",
        "since",
        "until",
        "signature",
        "retry",
        "q",
        "pathPrefix",
    ];

    /// Set the field of parameter `name` (one of [`PARAMS`](Self::PARAMS)) from its text;
    /// errors name the parameter. `Ok(false)` when `name` is no filter parameter (nothing
    /// set). The cross-field rule is [`validate`](Self::validate)'s.
    pub fn set_param(&mut self, name: &str, value: &str) -> Result<bool, ValidationError> {
        let named = |e: ValidationError| e.for_field(name.to_owned());
        match name {
            "category" => self.category = Some(ErrorCategory::parse(value)?),
            "taskType" => self.task_type = Some(TaskType::parse(value).map_err(named)?),
            "clientId" => self.client_id = Some(ClientId::parse(value).map_err(named)?),
            "errorCode" => self.error_code = Some(ErrorCode::parse(value).map_err(named)?),
            // An unencoded `+` of an offset arrives as a space (form encoding); RFC 3339
            // times never contain spaces, so it is read back as `+`.
            "since" => self.since = Some(Timestamp::parse_rfc3339(name, &value.replace(' ', "+"))?),
            "until" => self.until = Some(Timestamp::parse_rfc3339(name, &value.replace(' ', "+"))?),
            "signature" => self.signature = Some(ErrorSignature::parse(value)?),
            "retry" => self.retry = Some(RetryState::parse(value)?),
            "q" => self.text = Some(SearchText::parse(value)?),
            "pathPrefix" => self.path_prefix = Some(PathPrefix::parse(value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The set fields as `(parameter, text)` pairs in the order of [`PARAMS`](Self::PARAMS):
    /// what [`set_param`](Self::set_param) reads back into the same filter.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(v) = value {
                out.push((name, v));
            }
        };
        put("category", self.category.map(|c| c.as_str().to_owned()));
        put(
            "taskType",
            self.task_type.as_ref().map(|v| v.as_str().to_owned()),
        );
        put(
            "clientId",
            self.client_id.as_ref().map(|v| v.as_str().to_owned()),
        );
        put(
            "errorCode",
            self.error_code.as_ref().map(|v| v.as_str().to_owned()),
        );
        put("since", self.since.map(Timestamp::to_rfc3339));
        put("until", self.until.map(Timestamp::to_rfc3339));
        put(
            "signature",
            self.signature.as_ref().map(|v| v.as_str().to_owned()),
        );
        put("retry", self.retry.map(|v| v.as_str().to_owned()));
        put("q", self.text.as_ref().map(|v| v.as_str().to_owned()));
        put(
            "pathPrefix",
            self.path_prefix.as_ref().map(|v| v.as_str().to_owned()),
        );
        out
    }

    /// A filter from `(parameter, text)` pairs ([`params`](Self::params)' form): every name
    /// must be a filter parameter; the cross-field rule is checked.
    pub fn from_params<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TaskFilter, ValidationError> {
        let mut filter = TaskFilter::default();
        for (name, value) in pairs {
            if !filter.set_param(name, value)? {
                return Err(ValidationError::new(
                    name,
                    format!(
                        "is not a filter; the filters are {}",
                        Self::PARAMS.join(", ")
                    ),
                ));
            }
        }
        filter.validate()?;
        Ok(filter)
    }
}

/// One request for a page of failed tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Which tasks.
    pub filter: TaskFilter,
    /// How many per page.
    pub page_size: PageSize,
    /// Where to start; `None` for the first page.
    pub cursor: Option<Cursor>,
}

impl ListQuery {
    /// The first page of every failed task, with the default page size of `limits`.
    pub fn first_page(limits: PageLimits) -> Self {
        Self {
            filter: TaskFilter::all(),
            page_size: limits.default_size(),
            cursor: None,
        }
    }

    /// Whether `key` comes after the cursor (or there is no cursor).
    pub fn is_after_cursor(&self, key: &SortKey) -> bool {
        self.cursor.as_ref().is_none_or(|c| key > c.position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ms: i64, id: &str) -> SortKey {
        SortKey::new(
            Timestamp::from_unix_millis(ms).unwrap(),
            TaskId::parse(id).unwrap(),
        )
    }

    #[test]
    fn order_is_newest_first_then_id_descending() {
        let mut keys = [key(1, "a"), key(3, "a"), key(2, "b"), key(2, "c")];
        keys.sort();
        let ids: Vec<_> = keys
            .iter()
            .map(|k| (k.fail_time().unix_millis(), k.task_id().as_str()))
            .collect();
        assert_eq!(ids, vec![(3, "a"), (2, "c"), (2, "b"), (1, "a")]);
    }

    #[test]
    fn cursor_round_trips_and_rejects_tampering() {
        let c = Cursor::after(key(1_737_709_300_000, "task:with:colons"));
        assert_eq!(Cursor::decode(&c.encode()), Ok(c.clone()));
        for bad in ["", "!!!", "djE6", "djI6MTox", "djE6LTE6eA", "djE6MTo"] {
            assert_eq!(Cursor::decode(bad).unwrap_err().field, "cursor", "{bad:?}");
        }
    }

    #[test]
    fn page_size_bounds() {
        let limits = PageLimits::DEFAULT;
        assert_eq!(PageSize::parse("1", limits).unwrap().get(), 1);
        assert_eq!(PageSize::parse("1000", limits).unwrap().get(), 1000);
        for bad in ["0", "1001", "-1", "ten", "", "1.5"] {
            assert_eq!(PageSize::parse(bad, limits).unwrap_err().field, "pageSize");
        }
        assert!(PageLimits::new(0, 10).is_err());
        assert!(PageLimits::new(11, 10).is_err());
    }

    #[test]
    fn filter_params_read_back_into_the_same_filter() {
        let mut f = TaskFilter::default();
        for (name, value) in [
            ("category", "service_timeout"),
            ("clientId", "c 1"),
            ("since", "2025-01-24T09:00:00Z"),
            ("retry", "final"),
            ("q", "timeout"),
        ] {
            assert_eq!(f.set_param(name, value), Ok(true), "{name}");
        }
        let pairs = f.params();
        assert_eq!(pairs.len(), 5);
        let back = TaskFilter::from_params(pairs.iter().map(|(n, v)| (*n, v.as_str())));
        assert_eq!(back, Ok(f));
        assert_eq!(
            TaskFilter::from_params([("pageSize", "5")])
                .unwrap_err()
                .field,
            "pageSize"
        );
        assert_eq!(
            TaskFilter::from_params([("category", "nope")])
                .unwrap_err()
                .field,
            "category"
        );
    }

    #[test]
    fn since_after_until_is_rejected() {
        let f = TaskFilter {
            since: Some(Timestamp::from_unix_millis(2).unwrap()),
            until: Some(Timestamp::from_unix_millis(1).unwrap()),
            ..TaskFilter::default()
        };
        assert_eq!(f.validate().unwrap_err().field, "since");
    }
}
