//! Targets: where notifications go, as configured ([`TargetConfig`], plain fields as the
//! `[[notify_targets]]` tables of the server's file give them) and as checked ([`Target`]:
//! a parsed URL, the secret read, the events, format, level and scope). Every error names
//! the key (`notify_targets[1] (ops).url`) and never shows a secret or a URL's path.

use std::collections::BTreeSet;
use std::fmt;

use hyper::Uri;

use crate::event::{Event, EventKind, Level, SCOPE_FIELDS};

/// A webhook secret: never shown (`Debug` and `Display` print `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret of `text`; `None` when empty.
    pub fn new(text: impl Into<String>) -> Option<Secret> {
        let text = text.into();
        (!text.is_empty()).then_some(Secret(text))
    }

    /// The bytes, for signing only.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Our payload ([`Event`]), signed.
    Json,
    /// Slack's incoming-webhook shape: `text` plus `blocks` (most chat tools accept it).
    Slack,
}

impl Format {
    /// `json` or `slack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// A target as configured: every field optional or plain text, checked by
/// [`TargetConfig::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetConfig {
    /// A name of its own (letters, digits, `-`, `_`, `.`; at most 64): in logs, metrics and
    /// the delivery state.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The signing secret itself.
    pub secret: Option<Secret>,
    /// The environment variable holding the secret.
    pub secret_env: Option<String>,
    /// The file holding the secret (a trailing newline is ignored).
    pub secret_file: Option<String>,
    /// The event kinds it gets; empty: all.
    pub events: Vec<String>,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
    /// The lowest level it gets (`info` by default: all).
    pub min_level: Option<String>,
    /// Only events about these values (`ErrorCategory`, `TaskType`, `ClientId`).
    pub scope: Vec<(String, String)>,
}

/// A checked target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// Where events go.
    pub url: Uri,
    /// The signing secret, if any (unsigned without).
    pub secret: Option<Secret>,
    /// The kinds it gets.
    pub events: BTreeSet<EventKind>,
    /// The body's shape.
    pub format: Format,
    /// The lowest level it gets.
    pub min_level: Level,
    /// Only events whose scope has these values.
    pub scope: Vec<(String, String)>,
}

impl Target {
    /// Whether `event` is for this target: its kind, level and scope.
    pub fn wants(&self, event: &Event) -> bool {
        event.kind().is_some_and(|k| self.events.contains(&k))
            && event.level() >= self.min_level
            && self
                .scope
                .iter()
                .all(|(field, value)| event.scope(field) == Some(value.as_str()))
    }

    /// The URL as it may be shown: scheme and authority only (a webhook's path is often
    /// its secret).
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }
}

/// Scheme and authority of `url`, without user info.
pub fn shown_url(url: &Uri) -> String {
    let host = url.authority().map_or("", |a| {
        let a = a.as_str();
        a.rsplit_once('@').map_or(a, |(_, host)| host)
    });
    format!("{}://{host}", url.scheme_str().unwrap_or("?"))
}

/// Why a target is refused: the key and what is wrong, never the secret or the URL's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TargetError {
    /// The key, e.g. `notify_targets[1] (ops).url`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl TargetConfig {
    /// Check the target configured under `key` (`notify_targets[0]`), reading its secret
    /// from where `secret_env` or `secret_file` says.
    pub fn check(&self, key: &str) -> Result<Target, TargetError> {
        let named = if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{key} ({})", self.name)
        };
        let bad = |field: &str, reason: String| TargetError {
            key: format!("{named}.{field}"),
            reason,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(bad(
                "name",
                "required: 1 to 64 letters, digits, '-', '_' or '.'".to_owned(),
            ));
        }
        let url = check_url(&self.url).map_err(|reason| bad("url", reason))?;
        let secret = self
            .read_secret()
            .map_err(|(field, reason)| bad(field, reason))?;
        let mut events = BTreeSet::new();
        for e in &self.events {
            match EventKind::parse(e) {
                Some(k) => {
                    events.insert(k);
                }
                None => {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    return Err(bad(
                        "events",
                        format!(
                            "unknown event kind {e:?}; expected some of {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        if events.is_empty() {
            events = EventKind::ALL.into_iter().collect();
        }
        let format = match self.format.as_deref() {
            None | Some("json") => Format::Json,
            Some("slack") => Format::Slack,
            Some(other) => {
                return Err(bad(
                    "format",
                    format!("unknown format {other:?}; expected json or slack"),
                ))
            }
        };
        let min_level = match self.min_level.as_deref() {
            None => Level::Info,
            Some(text) => Level::parse(text).ok_or_else(|| {
                bad(
                    "min_level",
                    format!("unknown level {text:?}; expected info, warning or critical"),
                )
            })?,
        };
        for (field, _) in &self.scope {
            if !SCOPE_FIELDS.contains(&field.as_str()) {
                return Err(bad(
                    "scope",
                    format!(
                        "unknown field {field:?}; expected {}",
                        SCOPE_FIELDS.join(", ")
                    ),
                ));
            }
        }
        Ok(Target {
            name: self.name.clone(),
            url,
            secret,
            events,
            format,
            min_level,
            scope: self.scope.clone(),
        })
    }

    /// The secret from the one place configured (field name and reason on error).
    fn read_secret(&self) -> Result<Option<Secret>, (&'static str, String)> {
        let given = [
            self.secret.is_some(),
            self.secret_env.is_some(),
            self.secret_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err((
                "secret",
                "give one of secret, secret_env and secret_file".to_owned(),
            ));
        }
        if let Some(var) = &self.secret_env {
            let value = std::env::var(var)
                .map_err(|_| ("secret_env", format!("the variable {var} is not set")))?;
            return Secret::new(value)
                .map(Some)
                .ok_or(("secret_env", format!("the variable {var} is empty")));
        }
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ("secret_file", format!("cannot read {path}: {}", e.kind())))?;
            return Secret::new(text.trim_end_matches(['\n', '\r']))
                .map(Some)
                .ok_or(("secret_file", format!("{path} is empty")));
        }
        Ok(self.secret.clone())
    }
}

/// A webhook URL: absolute `http` or `https` with a host. Reasons never quote the URL.
pub fn check_url(text: &str) -> Result<Uri, String> {
    let url: Uri = text
        .parse()
        .map_err(|_| "not a valid URL (expected https://host/path)".to_owned())?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "unsupported scheme {other}; expected http or https"
            ))
        }
        None => return Err("not an absolute URL (expected https://host/path)".to_owned()),
    }
    if url.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(name: &str, url: &str) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            url: url.into(),
            ..TargetConfig::default()
        }
    }

    #[test]
    fn bad_targets_are_refused_naming_the_key_without_the_secret() {
        let table: Vec<(TargetConfig, &str)> = vec![
            (config("", "https://h/x"), "notify_targets[0].name"),
            (config("a b", "https://h/x"), "notify_targets[0] (a b).name"),
            (
                config("ops", "ftp://h/TOPSECRET"),
                "notify_targets[0] (ops).url",
            ),
            (
                config("ops", "not a url TOPSECRET"),
                "notify_targets[0] (ops).url",
            ),
            (
                config("ops", "/relative/TOPSECRET"),
                "notify_targets[0] (ops).url",
            ),
            (
                TargetConfig {
                    events: vec!["group.nwe".into()],
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).events",
            ),
            (
                TargetConfig {
                    format: Some("teams".into()),
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).format",
            ),
            (
                TargetConfig {
                    min_level: Some("loud".into()),
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).min_level",
            ),
            (
                TargetConfig {
                    scope: vec![("Tenant".into(), "x".into())],
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).scope",
            ),
            (
                TargetConfig {
                    secret: Secret::new("TOPSECRET"),
                    secret_env: Some("X".into()),
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).secret",
            ),
            (
                TargetConfig {
                    secret_env: Some("FAILED_TASKS_TEST_UNSET_VARIABLE".into()),
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).secret_env",
            ),
            (
                TargetConfig {
                    secret_file: Some("/nonexistent/secret".into()),
                    ..config("ops", "https://h/x")
                },
                "notify_targets[0] (ops).secret_file",
            ),
        ];
        for (target, key) in table {
            let e = target.check("notify_targets[0]").unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        }
    }

    #[test]
    fn a_target_gets_its_kinds_levels_and_scope() {
        let t = TargetConfig {
            events: vec!["alert.firing".into()],
            min_level: Some("critical".into()),
            scope: vec![("ErrorCategory".into(), "authorization".into())],
            secret: Secret::new("s"),
            ..config(
                "ops",
                "https://user:pw@hooks.example:8443/services/T0/B0/XYZ",
            )
        }
        .check("notify_targets[0]")
        .unwrap();
        assert_eq!(t.shown_url(), "https://hooks.example:8443");
        assert_eq!(format!("{:?}", t.secret), "Some(<redacted>)");
        let event = |kind: &str, level: &str, category: &str| Event {
            event: kind.into(),
            id: "1".into(),
            time: "t".into(),
            level: level.into(),
            summary: "s".into(),
            link: None,
            details: serde_json::json!({"Scope": {"ErrorCategory": category}})
                .as_object()
                .cloned()
                .unwrap(),
        };
        assert!(t.wants(&event("alert.firing", "critical", "authorization")));
        assert!(!t.wants(&event("alert.firing", "warning", "authorization")));
        assert!(!t.wants(&event("alert.resolved", "critical", "authorization")));
        assert!(!t.wants(&event("alert.firing", "critical", "data_error")));
        let all = config("all", "http://127.0.0.1:1/").check("k").unwrap();
        assert_eq!(all.events.len(), EventKind::ALL.len());
        assert!(all.wants(&event("group.new", "info", "x")));
    }
}
