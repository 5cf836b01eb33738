//! The retry circuit breaker's values (docs/retries.md#the-circuit-breaker): which retries a
//! breaker watches ([`BreakerKey`]: a task type and an error category), the outcomes of
//! retries it counts ([`OutcomeCounts`]), its settings ([`BreakerConfig`]) and the state of
//! an open breaker ([`BreakerState`]; a closed breaker has none).
//!
//! The rules, as pure functions the decider applies:
//! - **Open** when, in the last `window`, at least `min_retries` retries of one key came
//!   back and at least `failure_percent` of them failed again ([`BreakerConfig::trips`]): a
//!   `hold` gate on the key's scope, made by the breaker.
//! - **Half-open** after the cool-down: `canaries` retries may pass the gate.
//! - Then **closed** (the gate released) when the canaries mostly resolved, or **open**
//!   again with twice the cool-down (at most `max_cooldown`) when they mostly failed again
//!   ([`BreakerConfig::verdict`]).

use std::fmt;
use std::time::Duration;

use crate::{ErrorCategory, GateId, GateScope, TaskType, Timestamp, ValidationError};

/// What one breaker watches: the retries of one task type failing with one category.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BreakerKey {
    /// The task type.
    pub task_type: TaskType,
    /// The category of the failure that was retried.
    pub category: ErrorCategory,
}

impl BreakerKey {
    /// The gate scope of the key.
    pub fn scope(&self) -> GateScope {
        GateScope {
            task_type: Some(self.task_type.clone()),
            error_category: Some(self.category),
            ..GateScope::default()
        }
    }

    /// `task type \t category`: the key as stores keep it (no value holds a tab).
    pub fn to_field(&self) -> String {
        format!("{}\t{}", self.task_type.as_str(), self.category.as_str())
    }

    /// The key of [`to_field`](Self::to_field)'s text; `None` for other text.
    pub fn from_field(text: &str) -> Option<Self> {
        let (t, c) = text.split_once('\t')?;
        Some(Self {
            task_type: TaskType::parse(t).ok()?,
            category: ErrorCategory::parse(c).ok()?,
        })
    }
}

impl fmt::Display for BreakerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.task_type.as_str(), self.category.as_str())
    }
}

/// Outcomes of retries reported back: failed again, or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutcomeCounts {
    /// Retries reported failed again (a failure recorded with `RetryCount` ≥ 1).
    pub failed_again: u64,
    /// Retries reported resolved.
    pub resolved: u64,
}

impl OutcomeCounts {
    /// Both together.
    pub fn total(self) -> u64 {
        self.failed_again.saturating_add(self.resolved)
    }

    /// Add `other`.
    pub fn add(&mut self, other: OutcomeCounts) {
        self.failed_again = self.failed_again.saturating_add(other.failed_again);
        self.resolved = self.resolved.saturating_add(other.resolved);
    }
}

/// A breaker's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerPhase {
    /// Closed lately (its gate released, by its canaries or by an operator): outcomes
    /// before `phase_since` no longer count, so it does not trip again on what opened it.
    /// Forgotten a window later.
    Closed,
    /// Its gate holds every retry of the key until the cool-down ends.
    Open,
    /// Its gate lets `canaries` retries through; their outcomes decide.
    HalfOpen,
}

impl BreakerPhase {
    /// `closed`, `open` or `half_open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerPhase::Closed => "closed",
            BreakerPhase::Open => "open",
            BreakerPhase::HalfOpen => "half_open",
        }
    }

    /// Parse [`as_str`](Self::as_str)'s text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(BreakerPhase::Closed),
            "open" => Some(BreakerPhase::Open),
            "half_open" => Some(BreakerPhase::HalfOpen),
            _ => None,
        }
    }
}

/// A breaker that is open, half-open or closed lately (a breaker without a state is
/// closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerState {
    /// What it watches.
    pub key: BreakerKey,
    /// Its phase.
    pub phase: BreakerPhase,
    /// Its `hold` gate (closed: the gate it had).
    pub gate: GateId,
    /// When it opened first (this time).
    pub opened: Timestamp,
    /// When the current phase began.
    pub phase_since: Timestamp,
    /// The cool-down of the current (or last) open phase.
    pub cooldown: Duration,
    /// How many times it opened since it was last closed (1 at the first).
    pub opens: u32,
    /// The outcomes that tripped it (or, after a failed half-open, the canaries').
    pub trigger: OutcomeCounts,
}

impl BreakerState {
    /// When the open phase's cool-down ends.
    pub fn cooldown_ends(&self) -> Timestamp {
        self.phase_since.saturating_add(self.cooldown)
    }

    /// The state as stores keep it: `phase \t gate \t opened ms \t phase ms \t cooldown ms \t
    /// opens \t failed again \t resolved`.
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.phase.as_str(),
            self.gate.as_str(),
            self.opened.unix_millis(),
            self.phase_since.unix_millis(),
            self.cooldown.as_millis(),
            self.opens,
            self.trigger.failed_again,
            self.trigger.resolved,
        )
    }

    /// The state of `key` from [`to_line`](Self::to_line)'s text; `None` for other text.
    pub fn from_line(key: BreakerKey, line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split('\t').collect();
        let [phase, gate, opened, since, cooldown, opens, failed, resolved] = f.as_slice() else {
            return None;
        };
        let ms = |v: &str| Timestamp::from_unix_millis(v.parse().ok()?).ok();
        Some(Self {
            key,
            phase: BreakerPhase::parse(phase)?,
            gate: GateId::parse(gate).ok()?,
            opened: ms(opened)?,
            phase_since: ms(since)?,
            cooldown: Duration::from_millis(cooldown.parse().ok()?),
            opens: opens.parse().ok()?,
            trigger: OutcomeCounts {
                failed_again: failed.parse().ok()?,
                resolved: resolved.parse().ok()?,
            },
        })
    }
}

/// What the canaries of a half-open breaker say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough outcomes yet, and the probe's time is not up.
    Wait,
    /// They mostly resolved, or nothing is held and nothing came back: close.
    Close,
    /// They mostly failed again, or nothing came back while retries wait: open again.
    Reopen,
}

/// The breaker's settings. `Default` is the documented default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Whether breakers open at all (`breaker_enabled`, default true).
    pub enabled: bool,
    /// The window of outcomes looked at (`breaker_window`, default 1 minute); also how long
    /// a half-open breaker waits for its canaries.
    pub window: Duration,
    /// Fewest outcomes in the window before a breaker may open (`breaker_min_retries`,
    /// default 20).
    pub min_retries: u64,
    /// The share of them failed again that opens it, in percent (`breaker_failure_percent`,
    /// default 80).
    pub failure_percent: u8,
    /// The first cool-down (`breaker_cooldown`, default 1 minute), doubled at each reopen.
    pub cooldown: Duration,
    /// The longest cool-down (`breaker_max_cooldown`, default 30 minutes).
    pub max_cooldown: Duration,
    /// Retries let through when half-open (`breaker_canaries`, default 3).
    pub canaries: u32,
    /// How often the decider looks (`breaker_interval`, default 1 s).
    pub interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(60),
            min_retries: 20,
            failure_percent: 80,
            cooldown: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(30 * 60),
            canaries: 3,
            interval: Duration::from_secs(1),
        }
    }
}

impl BreakerConfig {
    /// Check the settings; errors name the setting.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |k: &str, m: &str| Err(ValidationError::new(k, m));
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(3_600) {
            return bad("breaker_window", "must be between 1s and 1h");
        }
        if self.min_retries == 0 || self.min_retries > 1_000_000 {
            return bad("breaker_min_retries", "must be between 1 and 1000000");
        }
        if self.failure_percent == 0 || self.failure_percent > 100 {
            return bad("breaker_failure_percent", "must be between 1 and 100");
        }
        if self.cooldown.is_zero() || self.cooldown > self.max_cooldown {
            return bad(
                "breaker_cooldown",
                "must be more than 0 and at most breaker_max_cooldown",
            );
        }
        if self.max_cooldown > Duration::from_secs(24 * 3_600) {
            return bad("breaker_max_cooldown", "must be at most 24h");
        }
        if self.canaries == 0 || self.canaries > 1_000 {
            return bad("breaker_canaries", "must be between 1 and 1000");
        }
        if self.interval.is_zero() || self.interval > self.window {
            return bad(
                "breaker_interval",
                "must be more than 0 and at most breaker_window",
            );
        }
        Ok(())
    }

    fn mostly_failed(&self, c: OutcomeCounts) -> bool {
        c.failed_again.saturating_mul(100) >= u64::from(self.failure_percent) * c.total()
    }

    /// Whether a closed breaker with `c` in its window opens.
    pub fn trips(&self, c: OutcomeCounts) -> bool {
        self.enabled && c.total() >= self.min_retries && self.mostly_failed(c)
    }

    /// The cool-down after `opens` opens: `cooldown × 2^(opens-1)`, at most `max_cooldown`.
    pub fn cooldown_after(&self, opens: u32) -> Duration {
        let factor = 2u32.saturating_pow(opens.saturating_sub(1).min(20));
        self.cooldown.saturating_mul(factor).min(self.max_cooldown)
    }

    /// What a half-open breaker does with `canaries` (the outcomes since it half-opened),
    /// `held` retries waiting in its gate, `waited` since it half-opened.
    pub fn verdict(&self, canaries: OutcomeCounts, held: u64, waited: Duration) -> Verdict {
        let total = canaries.total();
        if total >= u64::from(self.canaries) || (waited >= self.window && total > 0) {
            if self.mostly_failed(canaries) {
                Verdict::Reopen
            } else {
                Verdict::Close
            }
        } else if waited >= self.window {
            if held == 0 {
                Verdict::Close
            } else {
                Verdict::Reopen
            }
        } else {
            Verdict::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(failed_again: u64, resolved: u64) -> OutcomeCounts {
        OutcomeCounts {
            failed_again,
            resolved,
        }
    }

    #[test]
    fn trips_at_the_minimum_and_the_share() {
        let c = BreakerConfig::default();
        assert!(!c.trips(counts(19, 0)), "below the minimum");
        assert!(c.trips(counts(16, 4)), "20 outcomes, 80 % failed");
        assert!(!c.trips(counts(15, 5)), "75 %");
        assert!(c.trips(counts(100, 0)));
        let off = BreakerConfig {
            enabled: false,
            ..c
        };
        assert!(!off.trips(counts(100, 0)));
    }

    #[test]
    fn cool_downs_double_up_to_the_maximum() {
        let c = BreakerConfig::default();
        assert_eq!(c.cooldown_after(1), Duration::from_secs(60));
        assert_eq!(c.cooldown_after(2), Duration::from_secs(120));
        assert_eq!(c.cooldown_after(5), Duration::from_secs(960));
        assert_eq!(c.cooldown_after(6), Duration::from_secs(1_800));
        assert_eq!(c.cooldown_after(u32::MAX), Duration::from_secs(1_800));
    }

    #[test]
    fn canaries_decide_when_back_or_when_the_window_passes() {
        let c = BreakerConfig::default();
        let soon = Duration::from_secs(5);
        let late = Duration::from_secs(60);
        assert_eq!(c.verdict(counts(0, 2), 5, soon), Verdict::Wait);
        assert_eq!(c.verdict(counts(0, 3), 5, soon), Verdict::Close);
        assert_eq!(c.verdict(counts(3, 0), 5, soon), Verdict::Reopen);
        assert_eq!(c.verdict(counts(1, 2), 5, soon), Verdict::Close);
        assert_eq!(c.verdict(counts(1, 0), 5, late), Verdict::Reopen);
        assert_eq!(c.verdict(counts(0, 1), 5, late), Verdict::Close);
        assert_eq!(c.verdict(counts(0, 0), 5, late), Verdict::Reopen);
        assert_eq!(c.verdict(counts(0, 0), 0, late), Verdict::Close);
    }

    #[test]
    fn states_and_keys_round_trip_as_text() {
        let key = BreakerKey {
            task_type: TaskType::parse("embedding").unwrap(),
            category: ErrorCategory::ServiceTimeout,
        };
        assert_eq!(BreakerKey::from_field(&key.to_field()), Some(key.clone()));
        assert_eq!(BreakerKey::from_field("embedding"), None);
        let at = Timestamp::from_unix_millis(1_796_112_667_146).unwrap();
        let s = BreakerState {
            key: key.clone(),
            phase: BreakerPhase::HalfOpen,
            gate: GateId::new(at, 9),
            opened: at,
            phase_since: at.saturating_add(Duration::from_secs(60)),
            cooldown: Duration::from_secs(120),
            opens: 2,
            trigger: counts(20, 1),
        };
        assert_eq!(BreakerState::from_line(key.clone(), &s.to_line()), Some(s));
        assert_eq!(BreakerState::from_line(key, "open\tg1"), None);
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert!(BreakerConfig::default().validate().is_ok());
        let bad = BreakerConfig {
            failure_percent: 0,
            ..BreakerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "breaker_failure_percent");
        let bad = BreakerConfig {
            cooldown: Duration::from_secs(3_600),
            ..BreakerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "breaker_cooldown");
    }
}
