//! What a setting is: a key, a help text and the field of [`Settings`] it sets
//! ([`Field`]), whatever the field's type ([`Setting`]), and the types a setting may have
//! ([`Value`]): read from a flag's or variable's text and from a TOML value, shown as TOML.
//!
//! The flag, the environment variable and the `--help` entry of a setting are made here from
//! its key, so they cannot drift apart: `--page-size-max`, `FAILED_TASKS_PAGE_SIZE_MAX` and
//! `PAGE_SIZE_MAX` for the key `page_size_max`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{BoolValueParser, EnumValueParser};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, ValueEnum};
use failed_tasks::notify::{Secret, WebhookUrl};
use failed_tasks_http::Token;

use super::{LogFormat, Settings, StoreKind};

/// Where a setting's value lives in [`Settings`].
pub type At<T> = fn(&mut Settings) -> &mut T;

/// How a setting's value may be shown (`--print-config`, `--help`'s environment value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// As it is.
    Plain,
    /// A URL whose user info and password parameters are secret (`redact_url`).
    Url,
}

/// One setting: the declaration everything about it follows from. Its default is the value
/// the field has in `Settings::default()`, that is the owning component's `Default`.
#[derive(Debug)]
pub struct Field<T> {
    key: &'static str,
    help: &'static str,
    at: At<T>,
    shown: Shown,
}

impl<T> Field<T> {
    /// The setting `key` (snake case) with its `--help` text, setting the field `at`.
    pub const fn new(key: &'static str, help: &'static str, at: At<T>) -> Self {
        Self {
            key,
            help,
            at,
            shown: Shown::Plain,
        }
    }

    /// The same, its value shown with the secrets of a URL redacted.
    pub const fn url(mut self) -> Self {
        self.shown = Shown::Url;
        self
    }
}

/// A setting whatever its type: what loading, `--help` and `--print-config` need.
pub trait Setting: Sync {
    /// The key: the TOML key, and the flag and variable in their own case.
    fn key(&self) -> &'static str;
    /// The flag, with its variable, its help and the default taken from `defaults`.
    fn arg(&self, defaults: &mut Settings) -> Arg;
    /// Take the value from the command line or the environment, if either gave one.
    fn take_matched(&self, settings: &mut Settings, matches: &ArgMatches);
    /// Take the value of the configuration file (the error never shows the value).
    fn take_toml(&self, settings: &mut Settings, value: &toml::Value) -> Result<(), String>;
    /// The value as `--print-config` shows it (secrets redacted); `None` when unset.
    fn shown(&self, settings: &mut Settings) -> Option<toml::Value>;
}

impl<T: Value> Setting for Field<T> {
    fn key(&self) -> &'static str {
        self.key
    }

    fn arg(&self, defaults: &mut Settings) -> Arg {
        let help = match self.shown(defaults) {
            Some(default) => format!("{} [default: {}]", self.help, unquoted(&default)),
            None => self.help.to_owned(),
        };
        let arg = Arg::new(self.key)
            .long(self.key.replace('_', "-"))
            .env(format!("FAILED_TASKS_{}", self.key.to_uppercase()))
            .value_name(self.key.to_uppercase())
            .help(help)
            .hide_env_values(self.shown == Shown::Url || T::SECRET);
        T::parsed_by(arg)
    }

    fn take_matched(&self, settings: &mut Settings, matches: &ArgMatches) {
        let given = matches!(
            matches.value_source(self.key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if let (true, Some(value)) = (given, matches.get_one::<T>(self.key)) {
            *(self.at)(settings) = value.clone();
        }
    }

    fn take_toml(&self, settings: &mut Settings, value: &toml::Value) -> Result<(), String> {
        *(self.at)(settings) = T::from_toml(value)?;
        Ok(())
    }

    fn shown(&self, settings: &mut Settings) -> Option<toml::Value> {
        let value = (self.at)(settings).to_toml()?;
        Some(match (self.shown, value) {
            (Shown::Url, toml::Value::String(url)) => {
                toml::Value::String(failed_tasks::redis::redact_url(&url))
            }
            (_, value) => value,
        })
    }
}

/// A value as `--print-config` writes it, strings without their quotes (for `--help`).
pub fn unquoted(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A type a setting may have.
pub trait Value: Clone + Send + Sync + 'static {
    /// Whether values of this type are secrets: never shown, in `--help` either.
    const SECRET: bool = false;
    /// From the text of a flag or an environment variable.
    fn parse(text: &str) -> Result<Self, String>;
    /// From a value of the configuration file; errors do not show the value.
    fn from_toml(value: &toml::Value) -> Result<Self, String>;
    /// As TOML; `None` when unset.
    fn to_toml(&self) -> Option<toml::Value>;
    /// The flag with this type's parser (and its possible values).
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(|text: &str| Self::parse(text))
    }
}

/// The text of a string setting in the file.
fn toml_str(value: &toml::Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| "expected a string".to_owned())
}

impl Value for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        toml_str(value).map(str::to_owned)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl Value for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        toml_str(value).map(PathBuf::from)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl Value for SocketAddr {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e| format!("{e}"))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::parse(toml_str(value)?)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

/// Durations are humantime text: `250ms`, `2s`, `5m`, `30days`.
impl Value for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map_err(|e| format!("{e} (expected a duration such as 90s)"))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::parse(toml_str(value)?)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            humantime::format_duration(*self).to_string(),
        ))
    }
}

impl Value for bool {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| "expected true or false".to_owned())
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        value
            .as_bool()
            .ok_or_else(|| "expected true or false".to_owned())
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
    /// `--demo` alone means true; `--demo false` is accepted too.
    fn parsed_by(arg: Arg) -> Arg {
        arg.value_parser(BoolValueParser::new())
            .num_args(0..=1)
            .default_missing_value("true")
    }
}

impl Value for f64 {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e| format!("{e}"))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Float(x) => Ok(*x),
            #[allow(clippy::cast_precision_loss)] // whole numbers of settings are small
            toml::Value::Integer(n) => Ok(*n as f64),
            _ => Err("expected a number".to_owned()),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::Float(*self))
    }
}

/// The whole-number types of settings.
macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e| format!("{e}"))
            }
            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                value
                    .as_integer()
                    .and_then(|n| <$t>::try_from(n).ok())
                    .ok_or_else(|| format!("expected a whole number from 0 to {}", <$t>::MAX))
            }
            fn to_toml(&self) -> Option<toml::Value> {
                Some(toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX)))
            }
        }
    )*};
}
whole_numbers!(u8, u32, u64, usize);

impl<T: Value> Value for Option<T> {
    const SECRET: bool = T::SECRET;
    fn parse(text: &str) -> Result<Self, String> {
        T::parse(text).map(Some)
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        T::from_toml(value).map(Some)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::to_toml)
    }
}

/// A bearer token: never shown (it cannot be read back), never empty.
impl Value for Token {
    const SECRET: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        Token::new(text).ok_or_else(|| "must not be empty".to_owned())
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::parse(toml_str(value)?)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String("<redacted>".to_owned()))
    }
}

/// A webhook's signing secret: never shown, never empty.
impl Value for Secret {
    const SECRET: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        Secret::new(text).ok_or_else(|| "must not be empty".to_owned())
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::parse(toml_str(value)?)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String("<redacted>".to_owned()))
    }
}

/// A webhook URL: its path is often its secret, so it is shown as scheme and host only
/// (checked with the other notification settings, naming the key).
impl Value for WebhookUrl {
    const SECRET: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(WebhookUrl(text.to_owned()))
    }
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::parse(toml_str(value)?)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.shown()))
    }
}

/// The choices of an enum setting, by their names.
fn choice<E: ValueEnum>(text: &str) -> Result<E, String> {
    E::from_str(text, false).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn choice_name<E: ValueEnum>(value: &E) -> Option<toml::Value> {
    let name = value.to_possible_value()?.get_name().to_owned();
    Some(toml::Value::String(name))
}

/// Enum settings: `--help` lists the choices with their descriptions.
macro_rules! choices {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(text: &str) -> Result<Self, String> {
                choice(text)
            }
            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                choice(toml_str(value)?)
            }
            fn to_toml(&self) -> Option<toml::Value> {
                choice_name(self)
            }
            fn parsed_by(arg: Arg) -> Arg {
                arg.value_parser(EnumValueParser::<$t>::new())
            }
        }
    )*};
}
choices!(StoreKind, LogFormat);
