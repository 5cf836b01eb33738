//! Replays: an operator's paced, followable, stoppable retry of every failure matching a
//! filter (docs/operations.md#replays).
//!
//! A replay is a value: its id, the filter it walks (the listing's filters), a required
//! reason, who asked and when, an optional pace, its state and its progress (where the walk
//! goes on, how many tasks it visited and scheduled). The runner walks the matching tasks in
//! the listing's order from the saved position, makes each one's next retry due, and saves
//! the position after each batch; the store keeps it all, so a replay survives a restart.

use crate::{Cursor, GateReason, TaskFilter, Timestamp, ValidationError};

/// The largest accepted `PerSecond` of a replay.
pub const MAX_REPLAY_PER_SECOND: f64 = 10_000.0;
/// How long a pause a paced replay may catch up at once (a runner that was away, a
/// restart): its allowance never counts more than this, or one task's time at a slower pace.
pub const MAX_CATCH_UP_MS: i64 = 1_000;

crate::made_id::made_id!(
    /// A replay's id: 1 to 64 ASCII letters, digits, `-` or `_`.
    ReplayId,
    "r",
    "ReplayId",
    "replay id"
);

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayState {
    /// The runner is walking its tasks.
    Running,
    /// Every matching task was visited.
    Done,
    /// An operator stopped it.
    Aborted,
    /// It cannot go on (its filter or position no longer reads back).
    Failed,
}

impl ReplayState {
    /// All four, in this order.
    pub const ALL: [ReplayState; 4] = [
        ReplayState::Running,
        ReplayState::Done,
        ReplayState::Aborted,
        ReplayState::Failed,
    ];

    /// `running`, `done`, `aborted` or `failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplayState::Running => "running",
            ReplayState::Done => "done",
            ReplayState::Aborted => "aborted",
            ReplayState::Failed => "failed",
        }
    }

    /// Parse [`as_str`](Self::as_str)'s text; errors name `State`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| ValidationError::new("State", format!("{text:?} is not a state")))
    }

    /// Whether the replay has ended (anything but running).
    pub fn is_finished(self) -> bool {
        self != ReplayState::Running
    }
}

/// A replay's pace: more than 0, at most [`MAX_REPLAY_PER_SECOND`] tasks a second
/// (fractions allowed: 0.5 is one every two seconds).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct ReplayPace(f64);

impl ReplayPace {
    /// Validate a pace; errors name `PerSecond`.
    pub fn new(rate: f64) -> Result<Self, ValidationError> {
        if rate.is_finite() && rate > 0.0 && rate <= MAX_REPLAY_PER_SECOND {
            Ok(Self(rate))
        } else {
            Err(ValidationError::new(
                "PerSecond",
                format!("must be a number more than 0 and at most {MAX_REPLAY_PER_SECOND}"),
            ))
        }
    }

    /// The rate.
    pub fn get(self) -> f64 {
        self.0
    }

    /// How many tasks the pace allows at `now` when the tasks allowed up to `paced_until`
    /// are used, at most `max`; and the new `paced_until` once that many are used
    /// ([`used`](Self::used)). A pause longer than [`MAX_CATCH_UP_MS`] counts as that long.
    pub fn allowance(self, paced_until: Timestamp, now: Timestamp, max: u64) -> u64 {
        let from = self.from(paced_until, now);
        let elapsed_ms = (now.unix_millis() - from).max(0);
        // A tiny epsilon so that 50/s over exactly 1,000 ms is 50, not 49.999….
        let n = (elapsed_ms as f64 * self.0 / 1000.0 + 1e-9).floor();
        (n as u64).min(max)
    }

    /// Where the pace's clock stands at `now`: `paced_until`, or the start of the longest
    /// pause counted (a second, or one task's time when that is longer).
    fn from(self, paced_until: Timestamp, now: Timestamp) -> i64 {
        // (A float-to-int cast saturates: the slowest pace's window is i64::MAX.)
        let window = MAX_CATCH_UP_MS.max((1000.0 / self.0).ceil() as i64);
        paced_until
            .unix_millis()
            .max(now.unix_millis().saturating_sub(window))
    }

    /// `paced_until` after `n` more tasks at `now`: it moves on by their time at this pace
    /// (rounded up, so the pace is never exceeded), from no earlier than
    /// [`MAX_CATCH_UP_MS`] before `now`.
    pub fn used(self, paced_until: Timestamp, now: Timestamp, n: u64) -> Timestamp {
        let from = self.from(paced_until, now);
        let spent = (n as f64 * 1000.0 / self.0 - 1e-9).ceil().max(0.0) as i64;
        Timestamp::saturating_from_unix_millis(from.saturating_add(spent))
    }
}

/// How far a replay got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Where the walk goes on (after this task); `None`: from the first match.
    pub cursor: Option<Cursor>,
    /// Matching tasks visited.
    pub visited: u64,
    /// Of those, the tasks whose next retry this replay made due.
    pub scheduled: u64,
    /// The pace's clock: the tasks allowed up to this time are used (the creation time at
    /// first).
    pub paced_until: Timestamp,
}

/// A replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Its id.
    pub id: ReplayId,
    /// Which tasks it retries (at least one filter).
    pub filter: TaskFilter,
    /// Why.
    pub reason: GateReason,
    /// Who asked: a token's name.
    pub actor: String,
    /// When it was made.
    pub created: Timestamp,
    /// Its pace; `None`: as fast as the runner's batches go.
    pub pace: Option<ReplayPace>,
    /// Where it stands.
    pub state: ReplayState,
    /// How many tasks matched when it was made.
    pub matched: u64,
    /// How far it got.
    pub progress: ReplayProgress,
    /// When it ended (done, aborted or failed).
    pub finished: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn ids_round_trip_and_refuse_other_text() {
        let id = ReplayId::new(at(0), 7);
        assert!(id.as_str().starts_with('r'));
        assert_eq!(ReplayId::parse(id.as_str()), Ok(id));
        for bad in ["", "a/b", "x y", &"a".repeat(65)] {
            assert_eq!(ReplayId::parse(bad).unwrap_err().field, "ReplayId");
        }
    }

    #[test]
    fn states_round_trip() {
        for s in ReplayState::ALL {
            assert_eq!(ReplayState::parse(s.as_str()), Ok(s));
        }
        assert!(ReplayState::parse("paused").is_err());
        assert!(!ReplayState::Running.is_finished());
        assert!(ReplayState::Aborted.is_finished());
    }

    #[test]
    fn paces_are_positive_finite_and_bounded() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 10_000.5] {
            assert_eq!(ReplayPace::new(bad).unwrap_err().field, "PerSecond");
        }
        assert_eq!(ReplayPace::new(0.5).map(ReplayPace::get), Ok(0.5));
    }

    #[test]
    fn the_allowance_is_the_pace_times_the_time_elapsed() {
        let pace = ReplayPace::new(50.0).unwrap();
        assert_eq!(pace.allowance(at(0), at(0), 1000), 0);
        assert_eq!(pace.allowance(at(0), at(1000), 1000), 50);
        assert_eq!(pace.allowance(at(0), at(1000), 20), 20);
        // 20 used of 50: the clock moves on by 400 ms, 30 are left at 1 s.
        let until = pace.used(at(0), at(1000), 20);
        assert_eq!(until, at(400));
        assert_eq!(pace.allowance(until, at(1000), 1000), 30);
        // A long pause counts as one second.
        assert_eq!(pace.allowance(at(0), at(60_000), 1000), 50);
        assert_eq!(pace.used(at(0), at(60_000), 50), at(60_000));
        // A slow pace accumulates fractions until a whole task is allowed.
        let slow = ReplayPace::new(0.5).unwrap();
        assert_eq!(slow.allowance(at(0), at(1500), 10), 0);
        assert_eq!(slow.allowance(at(0), at(2000), 10), 1);
        assert_eq!(slow.allowance(at(0), at(9000), 10), 1);
        assert_eq!(slow.used(at(0), at(2000), 1), at(2000));
        // The slowest pace neither overflows nor allows anything soon.
        let slowest = ReplayPace::new(f64::MIN_POSITIVE).unwrap();
        assert_eq!(slowest.allowance(at(0), at(60_000), 10), 0);
        assert_eq!(slowest.used(at(0), at(60_000), 0), at(0));
    }
}
