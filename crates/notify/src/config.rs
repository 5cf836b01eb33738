//! [`NotifyConfig`]: the targets and how the notifier runs; `Default` holds every default.

use std::time::Duration;

use crate::target::{check_url, Secret, Target, TargetConfig, TargetError};

/// A webhook URL given as one setting (the environment's target): shown as its scheme and
/// host only, since a webhook's path is often its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(pub String);

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl WebhookUrl {
    /// Scheme and host, or `<redacted>` when it does not parse.
    pub fn shown(&self) -> String {
        check_url(&self.0).map_or_else(
            |_| "<redacted>".to_owned(),
            |u| crate::target::shown_url(&u),
        )
    }
}

/// The notifications of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The targets of the configuration file (`[[notify_targets]]`).
    pub targets: Vec<TargetConfig>,
    /// One more target from the environment (`FAILED_TASKS_NOTIFY_URL`), named `env`, all
    /// events, `json`.
    pub env_url: Option<WebhookUrl>,
    /// Its secret (`FAILED_TASKS_NOTIFY_SECRET`).
    pub env_secret: Option<Secret>,
    /// The dashboard's address (`https://failures.example.com`): links are this plus
    /// `/ui/#/…`. Unset: events carry no link.
    pub public_url: Option<String>,
    /// Time between the notifier's steps (observe, queue, deliver).
    pub interval: Duration,
    /// A signature failing again after this long without failures is `group.returned`.
    pub quiet_period: Duration,
    /// The statistics window the alert rules are evaluated over.
    pub alert_window: Duration,
    /// How often the alert rules are evaluated.
    pub alert_interval: Duration,
    /// A firing alert is resolved once it has not fired for this long (no flapping).
    pub alert_resolve_after: Duration,
    /// Per target: at most one message per this long; what arrives meanwhile is coalesced.
    pub min_interval: Duration,
    /// Most events waiting per target; beyond it new events are dropped and counted.
    pub outbox_max: u64,
    /// A message not delivered this long after its first attempt is given up (counted).
    pub give_up_after: Duration,
    /// The longest one delivery attempt may take, connection included.
    pub request_timeout: Duration,
    /// Groups are looked at once their last failure is this old, so that failures reported
    /// a little late (or by an embedder whose clock is a little behind) are seen in order.
    pub settle: Duration,
    /// The first retry of a failed delivery comes after about this long, doubling up to
    /// [`retry_max`](Self::retry_max).
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
    /// Forget signatures last seen longer ago than this (the store's retention age): their
    /// groups were trimmed. `None`: keep them.
    pub forget_after: Option<Duration>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            env_url: None,
            env_secret: None,
            public_url: None,
            interval: Duration::from_secs(1),
            quiet_period: Duration::from_secs(3600),
            alert_window: Duration::from_secs(3600),
            alert_interval: Duration::from_secs(30),
            alert_resolve_after: Duration::from_secs(300),
            min_interval: Duration::from_secs(10),
            outbox_max: 10_000,
            give_up_after: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            forget_after: None,
        }
    }
}

impl NotifyConfig {
    /// Whether any target is configured.
    pub fn is_enabled(&self) -> bool {
        !self.targets.is_empty() || self.env_url.is_some()
    }

    /// The names of the targets, as `--print-config` shows them.
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.targets.iter().map(|t| t.name.clone()).collect();
        if self.env_url.is_some() {
            names.push(ENV_TARGET.to_owned());
        }
        names
    }

    /// Check everything: each target (secrets read), names unique, `public_url`, the
    /// durations and counts. Errors name the key and never show a secret.
    pub fn check(&self) -> Result<Vec<Target>, TargetError> {
        let mut targets = Vec::with_capacity(self.targets.len() + 1);
        for (i, t) in self.targets.iter().enumerate() {
            targets.push(t.check(&format!("notify_targets[{i}]"))?);
        }
        if let Some(url) = &self.env_url {
            let env = TargetConfig {
                name: ENV_TARGET.to_owned(),
                url: url.0.clone(),
                secret: self.env_secret.clone(),
                ..TargetConfig::default()
            };
            targets.push(env.check("notify_url").map_err(|e| TargetError {
                key: "notify_url".to_owned(),
                reason: e.reason,
            })?);
        }
        for (i, t) in targets.iter().enumerate() {
            if targets[..i].iter().any(|o| o.name == t.name) {
                return Err(TargetError {
                    key: format!("notify_targets[{i}] ({}).name", t.name),
                    reason: "another target has this name".to_owned(),
                });
            }
        }
        if let Some(public) = &self.public_url {
            check_url(public).map_err(|reason| TargetError {
                key: "public_url".to_owned(),
                reason,
            })?;
        }
        let positive = [
            ("notify_interval", self.interval),
            ("notify_alert_window", self.alert_window),
            ("notify_alert_interval", self.alert_interval),
            ("notify_timeout", self.request_timeout),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return Err(TargetError {
                    key: key.to_owned(),
                    reason: "must be greater than zero".to_owned(),
                });
            }
        }
        let minutes = self.alert_window.as_secs() / 60;
        if !self.alert_window.as_secs().is_multiple_of(60) || !(5..=7 * 24 * 60).contains(&minutes)
        {
            return Err(TargetError {
                key: "notify_alert_window".to_owned(),
                reason: "must be whole minutes from 5m to 7days".to_owned(),
            });
        }
        if self.outbox_max == 0 {
            return Err(TargetError {
                key: "notify_outbox_max".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(targets)
    }

    /// `public_url` without a trailing slash.
    pub(crate) fn public_base(&self) -> Option<String> {
        self.public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
    }
}

/// The name of the environment's target.
pub const ENV_TARGET: &str = "env";
