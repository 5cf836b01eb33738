//! Deep links into the dashboard (`/ui/`), whose views keep their state in the URL's hash
//! (`#/failures?signature=…`, `#/overview?window=1h`): the same links the dashboard makes.

use failed_tasks_domain::stats::{FailureStats, MINUTE_MS};
use failed_tasks_domain::Timestamp;

/// Links from `public_url`; none without it.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    base: Option<String>,
}

/// `value` percent-encoded for a query string (everything but unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Links {
    pub(crate) fn new(base: Option<String>) -> Self {
        Self { base }
    }

    /// The view `hash` (`#/name?…`) at the dashboard.
    pub(crate) fn view(&self, hash: &str) -> Option<String> {
        Some(format!("{}/ui/{hash}", self.base.as_deref()?))
    }

    fn failures(&self, params: &[(&str, &str)]) -> Option<String> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        self.view(&format!("#/failures?{}", query.join("&")))
    }

    /// A failure group's tasks.
    pub(crate) fn group(&self, signature: &str) -> Option<String> {
        self.failures(&[("signature", signature)])
    }

    /// The overview.
    pub(crate) fn overview(&self) -> Option<String> {
        self.view("#/overview")
    }

    /// The listing an alert is about (as the overview links each alert).
    pub(crate) fn alert(
        &self,
        rule: &str,
        subject: Option<&str>,
        stats: &FailureStats,
    ) -> Option<String> {
        let start = Timestamp::saturating_from_unix_millis(stats.window.from_minute() * MINUTE_MS)
            .to_rfc3339();
        match (rule, subject) {
            ("category_threshold", Some(c)) => self.failures(&[("category", c), ("since", &start)]),
            ("error_code_threshold", Some(c)) => {
                self.failures(&[("errorCode", c), ("since", &start)])
            }
            ("sudden_increase", _) => {
                let end = stats.window.to_minute() * MINUTE_MS;
                let since =
                    Timestamp::saturating_from_unix_millis(end - 5 * MINUTE_MS).to_rfc3339();
                self.failures(&[("since", &since)])
            }
            _ => self.failures(&[("since", &start)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_views_state() {
        let links = Links::new(Some("https://failures.example".into()));
        assert_eq!(
            links.group("0123456789abcdef").as_deref(),
            Some("https://failures.example/ui/#/failures?signature=0123456789abcdef")
        );
        assert_eq!(
            links
                .failures(&[("since", "2026-01-01T00:00:00Z")])
                .as_deref(),
            Some("https://failures.example/ui/#/failures?since=2026-01-01T00%3A00%3A00Z")
        );
        assert_eq!(Links::new(None).overview(), None);
    }
}
