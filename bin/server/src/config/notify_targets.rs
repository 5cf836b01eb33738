//! `[[notify_targets]]`: the notification targets of the configuration file, an array of
//! tables (TOML only: no flag or variable; the environment's one target is `notify_url`).
//! Each table's keys are read here; the targets are checked with the other notification
//! settings (`NotifyConfig::check`). Errors name the key (`notify_targets[1].events`) and
//! never show a value; `--print-config` shows the targets' names only.

use failed_tasks::notify::{Secret, TargetConfig};

/// The key of the array.
pub const KEY: &str = "notify_targets";

/// The keys of one table.
const FIELDS: [&str; 9] = [
    "name",
    "url",
    "secret",
    "secret_env",
    "secret_file",
    "events",
    "format",
    "min_level",
    "scope",
];

/// The targets of the file's `notify_targets` value; every problem, each naming its key.
pub fn read(value: &toml::Value, file: &str) -> Result<Vec<TargetConfig>, Vec<String>> {
    super::read_tables(value, KEY, file, |table| {
        let mut problems = Vec::new();
        let mut t = TargetConfig::default();
        for (key, v) in table {
            let mut bad = |reason: &str| problems.push((key.clone(), reason.to_owned()));
            let text = v.as_str().map(str::to_owned);
            match key.as_str() {
                "name" | "url" | "secret" | "secret_env" | "secret_file" | "format"
                | "min_level" => {
                    let Some(text) = text else {
                        bad("expected a string");
                        continue;
                    };
                    match key.as_str() {
                        "name" => t.name = text,
                        "url" => t.url = text,
                        "secret" => match Secret::new(text) {
                            Some(s) => t.secret = Some(s),
                            None => bad("must not be empty"),
                        },
                        "secret_env" => t.secret_env = Some(text),
                        "secret_file" => t.secret_file = Some(text),
                        "format" => t.format = Some(text),
                        _ => t.min_level = Some(text),
                    }
                }
                "events" => match v.as_array().map(|a| {
                    a.iter()
                        .map(|e| e.as_str().map(str::to_owned))
                        .collect::<Option<Vec<String>>>()
                }) {
                    Some(Some(events)) => t.events = events,
                    _ => bad("expected a list of event kinds"),
                },
                "scope" => match v.as_table().map(|s| {
                    s.iter()
                        .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect::<Option<Vec<(String, String)>>>()
                }) {
                    Some(Some(scope)) => t.scope = scope,
                    _ => bad("expected a table of strings (ErrorCategory, TaskType, ClientId)"),
                },
                _ => bad(&format!(
                    "unknown key; expected one of {}",
                    FIELDS.join(", ")
                )),
            }
        }
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(problems)
        }
    })
}
