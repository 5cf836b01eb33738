//! Query strings to validated domain queries; every problem names its parameter.

use failed_tasks_domain::{
    ClientId, Cursor, GroupCursor, GroupQuery, ListQuery, PageLimits, PageSize, TaskFilter,
    Timestamp, ValidationError,
};
use failed_tasks_query::audit::{AuditAction, AuditCursor, AuditQuery};

/// The parameters the listing understands besides the filters
/// ([`TaskFilter::PARAMS`]), as the contract spells them.
const PAGING_PARAMS: [&str; 2] = ["pageSize", "cursor"];

const NOT_UTF8: &str = "is not valid UTF-8 once percent-decoded";

/// The query string as `(name, value)` pairs, form-decoded (`+` is a space, `%XX` a byte),
/// the one reader of query strings on every route. Both must be UTF-8 once decoded, and no
/// name may appear twice: every parameter of this API takes one value, so a repeat is
/// ambiguous rather than a list.
fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ValidationError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = part.split_once('=').unwrap_or((part, ""));
        let name = decode(raw_name).map_err(|shown| ValidationError::new(shown, NOT_UTF8))?;
        let value = decode(raw_value).map_err(|_| ValidationError::new(name.clone(), NOT_UTF8))?;
        if out.iter().any(|(seen, _)| *seen == name) {
            return Err(ValidationError::new(name, "given more than once"));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// One form-encoded component; on invalid UTF-8, the error holds a lossy rendering of it.
fn decode(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    let bytes = percent_encoding::percent_decode_str(&spaced);
    bytes
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Parse the listing's query string. Unknown or repeated parameters are errors too, so a
/// typo (`pagesize`) is reported instead of silently ignored.
pub fn list_query(query: Option<&str>, limits: PageLimits) -> Result<ListQuery, ValidationError> {
    list_from_pairs(pairs(query)?, limits)
}

/// [`list_query`] of decoded pairs.
fn list_from_pairs(
    pairs: Vec<(String, String)>,
    limits: PageLimits,
) -> Result<ListQuery, ValidationError> {
    let mut q = ListQuery::first_page(limits);
    for (name, value) in pairs {
        if !PAGING_PARAMS.contains(&name.as_str()) && !TaskFilter::PARAMS.contains(&name.as_str()) {
            return Err(ValidationError::new(
                name,
                format!(
                    "unknown parameter; known ones are {}, {}",
                    PAGING_PARAMS.join(", "),
                    TaskFilter::PARAMS.join(", ")
                ),
            ));
        }
        match name.as_str() {
            "pageSize" => q.page_size = PageSize::parse(&value, limits)?,
            "cursor" => q.cursor = Some(Cursor::decode(&value)?),
            _ => {
                q.filter.set_param(&name, &value)?;
            }
        }
    }
    TaskFilter::validate(&q.filter)?;
    Ok(q)
}

/// An RFC 3339 time from a query string. An unencoded `+` of an offset arrives as a space
/// (form encoding); RFC 3339 times never contain spaces, so it is read back as `+`.
fn time_param(name: &str, value: &str) -> Result<Timestamp, ValidationError> {
    Timestamp::parse_rfc3339(name, &value.replace(' ', "+"))
}

/// The query string kept to `client`'s failures, for a token limited to that client:
/// `clientId=client` added, or the query as it is when it names that client already. A query
/// naming another client is `Err`. With `bare_stays_bare` (bulk routes), a query with no
/// parameter stays empty, so it is refused as for anyone instead of meaning "all of this
/// client's failures". A query that does not parse is left for the handler to refuse.
pub fn limited_to_client(
    query: Option<&str>,
    client: &ClientId,
    bare_stays_bare: bool,
) -> Result<String, ()> {
    let raw = query.unwrap_or("");
    let Ok(pairs) = pairs(query) else {
        return Ok(raw.to_owned());
    };
    if let Some((_, named)) = pairs.iter().find(|(n, _)| n == "clientId") {
        return if named == client.as_str() {
            Ok(raw.to_owned())
        } else {
            Err(())
        };
    }
    if pairs.is_empty() && bare_stays_bare {
        return Ok(String::new());
    }
    let encoded =
        percent_encoding::utf8_percent_encode(client.as_str(), percent_encoding::NON_ALPHANUMERIC);
    Ok(if raw.is_empty() {
        format!("clientId={encoded}")
    } else {
        format!("{raw}&clientId={encoded}")
    })
}

/// Parse the filters of a bulk removal or retry: the listing's filters only, at least one of
/// them, so a bare request can never wipe (or retry) the whole store by accident.
pub fn filter_only(query: Option<&str>) -> Result<TaskFilter, ValidationError> {
    let pairs = pairs(query)?;
    if let Some((name, _)) = pairs.iter().find(|(n, _)| n == "pageSize" || n == "cursor") {
        return Err(ValidationError::new(
            name.clone(),
            "not accepted by a bulk removal or retry",
        ));
    }
    if pairs.is_empty() {
        return Err(ValidationError::new(
            "filter",
            "a bulk removal or retry needs at least one of category, taskType, clientId, errorCode, since, until, signature, retry, q, pathPrefix",
        ));
    }
    Ok(list_query(query, PageLimits::DEFAULT)?.filter)
}

/// What an export writes: CSV or NDJSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

/// Parse an export's query string: `format` (`csv` or `ndjson`, required) and the listing's
/// filters (none required: an export of everything is a read).
pub fn export_query(query: Option<&str>) -> Result<(ExportFormat, TaskFilter), ValidationError> {
    let mut pairs = pairs(query)?;
    if let Some((name, _)) = pairs.iter().find(|(n, _)| n == "pageSize" || n == "cursor") {
        return Err(ValidationError::new(
            name.clone(),
            "not accepted by an export (it writes every match)",
        ));
    }
    let format = match pairs.iter().position(|(n, _)| n == "format") {
        Some(i) => match pairs.remove(i).1.as_str() {
            "csv" => ExportFormat::Csv,
            "ndjson" => ExportFormat::Ndjson,
            other => {
                return Err(ValidationError::new(
                    "format",
                    format!("{other:?} is not a format; use csv or ndjson"),
                ))
            }
        },
        None => return Err(ValidationError::new("format", "is required: csv or ndjson")),
    };
    Ok((format, list_from_pairs(pairs, PageLimits::DEFAULT)?.filter))
}

/// Parse the groups listing's query string: `pageSize` and `cursor` only.
pub fn group_query(query: Option<&str>, limits: PageLimits) -> Result<GroupQuery, ValidationError> {
    let mut q = GroupQuery {
        page_size: limits.default_size(),
        cursor: None,
    };
    for (name, value) in pairs(query)? {
        match name.as_str() {
            "pageSize" => q.page_size = PageSize::parse(&value, limits)?,
            "cursor" => q.cursor = Some(GroupCursor::decode(&value)?),
            _ => {
                return Err(ValidationError::new(
                    name,
                    "unknown parameter; known ones are pageSize, cursor",
                ))
            }
        }
    }
    Ok(q)
}

/// Parse the query string of a task's failed files: `pageSize`, `cursor`, `errorCode`,
/// each at most once.
pub fn files_query(
    query: Option<&str>,
    limits: PageLimits,
) -> Result<failed_tasks_domain::FilesQuery, ValidationError> {
    use failed_tasks_domain::{ErrorCode, FilesCursor, FilesQuery};
    let mut q = FilesQuery {
        page_size: limits.default_size(),
        after: None,
        error_code: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs(query)? {
        if seen.contains(&name) {
            return Err(ValidationError::new(name, "is given more than once"));
        }
        match name.as_str() {
            "pageSize" => q.page_size = PageSize::parse(&value, limits)?,
            "cursor" => q.after = Some(FilesCursor::decode(&value)?),
            "errorCode" => {
                q.error_code = Some(ErrorCode::parse(value).map_err(|e| e.for_field("errorCode"))?)
            }
            _ => {
                return Err(ValidationError::new(
                    name,
                    "unknown parameter; known ones are pageSize, cursor, errorCode",
                ))
            }
        }
        seen.push(name);
    }
    Ok(q)
}

/// Parse the audit log's query string: `since`, `until`, `actor`, `action`, `pageSize`,
/// `cursor`.
pub fn audit_query(query: Option<&str>, limits: PageLimits) -> Result<AuditQuery, ValidationError> {
    let mut q = AuditQuery {
        since: None,
        until: None,
        actor: None,
        action: None,
        page_size: limits.default_size().get(),
        cursor: None,
    };
    for (name, value) in pairs(query)? {
        match name.as_str() {
            "since" => q.since = Some(time_param("since", &value)?),
            "until" => q.until = Some(time_param("until", &value)?),
            "actor" if value.is_empty() || value.chars().count() > 200 => {
                return Err(ValidationError::new("actor", "must be 1 to 200 characters"))
            }
            "actor" => q.actor = Some(value),
            "action" => q.action = Some(AuditAction::parse(&value)?),
            "pageSize" => q.page_size = PageSize::parse(&value, limits)?.get(),
            "cursor" => q.cursor = Some(AuditCursor::decode(&value)?),
            _ => return Err(ValidationError::new(
                name,
                "unknown parameter; known ones are since, until, actor, action, pageSize, cursor",
            )),
        }
    }
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if since > until {
            return Err(ValidationError::new("since", "is after until"));
        }
    }
    Ok(q)
}

/// The `window` of a statistics request in whole minutes (`5m` to `7d`, default `1h`).
pub fn stats_window(query: Option<&str>) -> Result<i64, ValidationError> {
    let mut window = 60;
    for (name, value) in pairs(query)? {
        if name != "window" {
            return Err(ValidationError::new(
                name,
                "unknown parameter; the only one is window",
            ));
        }
        let d = humantime::parse_duration(&value).map_err(|_| {
            ValidationError::new(
                "window",
                format!("{value:?} is not a duration such as 1h or 30m"),
            )
        })?;
        if d.as_secs() % 60 != 0 || d.subsec_nanos() != 0 {
            return Err(ValidationError::new("window", "must be whole minutes"));
        }
        window = i64::try_from(d.as_secs() / 60).unwrap_or(i64::MAX);
        if !(5..=7 * 24 * 60).contains(&window) {
            return Err(ValidationError::new("window", "must be between 5m and 7d"));
        }
    }
    Ok(window)
}

/// Reject any query string on routes that take no parameters.
pub fn no_params(query: Option<&str>) -> Result<(), ValidationError> {
    match pairs(query)?.into_iter().next() {
        Some((name, _)) => Err(ValidationError::new(
            name,
            "unknown parameter; this route takes none",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use failed_tasks_domain::ErrorCategory;

    fn err(q: &str) -> ValidationError {
        list_query(Some(q), PageLimits::DEFAULT).unwrap_err()
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let table = [
            ("pageSize=0", "pageSize"),
            ("pageSize=1001", "pageSize"),
            ("pageSize=abc", "pageSize"),
            ("category=nope", "category"),
            ("since=yesterday", "since"),
            ("until=2025-13-01T00:00:00Z", "until"),
            ("cursor=zzz", "cursor"),
            ("pagesize=10", "pagesize"),
            ("pageSize=1&pageSize=2", "pageSize"),
            ("taskType=", "taskType"),
            ("clientId=a%00b", "clientId"),
            ("retry=later", "retry"),
            ("retry=final&retry=none", "retry"),
            ("clientId=%FF%FE", "clientId"),
            ("%FF=1", "\u{FFFD}"),
            ("clientId=a&clientId=a", "clientId"),
            ("q=", "q"),
            ("q=+", "q"),
            ("q=a&q=b", "q"),
            ("pathPrefix=projects", "pathPrefix"),
            ("pathPrefix=", "pathPrefix"),
            (
                "since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z",
                "since",
            ),
        ];
        for (q, field) in table {
            assert_eq!(err(q).field, field, "{q}");
        }
    }

    #[test]
    fn exports_take_a_format_and_the_filters() {
        let (f, filter) = export_query(Some("format=ndjson&q=boom&category=data_error")).unwrap();
        assert_eq!(f, ExportFormat::Ndjson);
        assert_eq!(filter.text.unwrap().as_str(), "boom");
        assert_eq!(
            export_query(Some("format=csv")).unwrap().0,
            ExportFormat::Csv
        );
        for (q, field) in [
            ("", "format"),
            ("format=xml", "format"),
            ("format=CSV", "format"),
            ("format=csv&format=csv", "format"),
            ("format=csv&pageSize=5", "pageSize"),
            ("format=csv&cursor=x", "cursor"),
            ("format=csv&q=", "q"),
            ("format=csv&nope=1", "nope"),
        ] {
            assert_eq!(export_query(Some(q)).unwrap_err().field, field, "{q}");
        }
    }

    #[test]
    fn good_parameters_are_decoded() {
        let q = list_query(
            Some("pageSize=5&category=data_error&clientId=client%20one&since=2025-01-24T09%3A00%3A00Z"),
            PageLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(q.page_size.get(), 5);
        assert_eq!(q.filter.category, Some(ErrorCategory::DataError));
        assert_eq!(q.filter.client_id.unwrap().as_str(), "client one");
        assert_eq!(q.filter.since.unwrap().to_rfc3339(), "2025-01-24T09:00:00Z");
        let q = list_query(Some("until=2025-01-24T17:00:00+08:00"), PageLimits::DEFAULT).unwrap();
        assert_eq!(q.filter.until.unwrap().to_rfc3339(), "2025-01-24T09:00:00Z");
        let q = list_query(None, PageLimits::DEFAULT).unwrap();
        assert_eq!(q, ListQuery::first_page(PageLimits::DEFAULT));
        let q = list_query(
            Some("q=context+Deadline&pathPrefix=%2Fprojects%2Ffoo%2F"),
            PageLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(q.filter.text.unwrap().as_str(), "context Deadline");
        assert_eq!(q.filter.path_prefix.unwrap().as_str(), "/projects/foo");
        let long = format!("q={}", "x".repeat(201));
        assert_eq!(err(&long).field, "q");
    }
}
