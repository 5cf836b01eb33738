//! `[[tokens]]`: named bearer tokens of the configuration file, an array of tables (TOML only;
//! the environment's tokens are `admin_token`, `operate_token` and `read_token`). Each table:
//! `name`, `role` (`read`, `operate` or `admin`), the secret as `secret`, `secret_env` (a
//! variable's name) or `secret_file` (a file's path, its text trimmed), and optionally
//! `client_id` (the one client the token may see and act on). Errors name the key
//! (`tokens[1].role`) and never show a secret; `--print-config` shows names and roles only.

use failed_tasks::domain::ClientId;
use failed_tasks_http::{NamedToken, Role};

/// The key of the array.
pub const KEY: &str = "tokens";

/// The keys of one table.
const FIELDS: [&str; 6] = [
    "name",
    "role",
    "secret",
    "secret_env",
    "secret_file",
    "client_id",
];

/// The tokens of the file's `tokens` value; every problem, each naming its key.
pub fn read(value: &toml::Value, file: &str) -> Result<Vec<NamedToken>, Vec<String>> {
    let Some(tables) = value.as_array() else {
        return Err(vec![format!("{KEY} in {file}: expected [[{KEY}]] tables")]);
    };
    let mut tokens = Vec::with_capacity(tables.len());
    let mut problems = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let at = format!("{KEY}[{i}]");
        let Some(table) = table.as_table() else {
            problems.push(format!("{at} in {file}: expected a table"));
            continue;
        };
        match one(table) {
            Ok(token) => tokens.push(token),
            Err((key, reason)) => problems.push(format!("{at}.{key} in {file}: {reason}")),
        }
    }
    if problems.is_empty() {
        Ok(tokens)
    } else {
        Err(problems)
    }
}

/// One table's token, or the key at fault and why (never a secret).
fn one(table: &toml::Table) -> Result<NamedToken, (String, String)> {
    let text = |key: &str| -> Result<Option<String>, (String, String)> {
        match table.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| (key.to_owned(), "expected a string".to_owned())),
        }
    };
    if let Some(unknown) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err((
            unknown.clone(),
            format!("unknown key; expected one of {}", FIELDS.join(", ")),
        ));
    }
    let name = text("name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ("name".to_owned(), "required, not empty".to_owned()))?;
    let role = text("role")?.ok_or_else(|| {
        (
            "role".to_owned(),
            "required: read, operate or admin".to_owned(),
        )
    })?;
    let role = Role::parse(&role).ok_or_else(|| {
        (
            "role".to_owned(),
            "unknown role; expected read, operate or admin".to_owned(),
        )
    })?;
    let given: Vec<&str> = ["secret", "secret_env", "secret_file"]
        .into_iter()
        .filter(|k| table.contains_key(*k))
        .collect();
    let secret = match given[..] {
        ["secret"] => text("secret")?.unwrap_or_default(),
        ["secret_env"] => {
            let var = text("secret_env")?.unwrap_or_default();
            std::env::var(&var).map_err(|_| {
                (
                    "secret_env".to_owned(),
                    format!("the environment variable {var} is not set (or not UTF-8)"),
                )
            })?
        }
        ["secret_file"] => {
            let path = text("secret_file")?.unwrap_or_default();
            std::fs::read_to_string(&path)
                .map_err(|e| ("secret_file".to_owned(), format!("reading {path}: {e}")))?
                .trim()
                .to_owned()
        }
        _ => {
            return Err((
                "secret".to_owned(),
                "give exactly one of secret, secret_env, secret_file".to_owned(),
            ))
        }
    };
    let token = NamedToken::new(name, role, &secret).ok_or_else(|| {
        (
            given[0].to_owned(),
            "the secret must not be empty".to_owned(),
        )
    })?;
    match text("client_id")? {
        None => Ok(token),
        Some(client) => ClientId::parse(&client)
            .map(|c| token.limited_to(c))
            .map_err(|e| ("client_id".to_owned(), e.reason.to_string())),
    }
}
