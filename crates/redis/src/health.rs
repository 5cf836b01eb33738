//! What the store knows of its link to Redis, for `/readyz`, metrics and logs: the cause of
//! a connection problem (logged at warn once per change, not once per retry), and Redis's
//! `maxmemory-policy`, checked after every (re)connection because an evicting Redis drops
//! failed tasks and index entries silently.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use failed_tasks_store::{StoreCondition, StoreError, StoreProblem};
use fred::prelude::{Error as FredError, ErrorKind};

/// The one policy under which Redis never drops a key by itself.
pub(crate) const NO_EVICTION: &str = "noeviction";

/// While the policy refuses service, how often it is read again (so fixing it with
/// `CONFIG SET maxmemory-policy noeviction` heals without a restart).
const RECHECK_REFUSED: Duration = Duration::from_secs(1);

/// Shared by the connection and its event listener.
#[derive(Debug)]
pub(crate) struct Health {
    allow_eviction: bool,
    state: Mutex<State>,
    /// Bumped on every (re)connection; the policy is due for a check while it differs from
    /// `checked`.
    connections: AtomicU64,
    checked: AtomicU64,
    /// Whether an evicting policy refuses service (mirrors `State::refused_at`, so the
    /// common path of every command reads an atomic, not the lock).
    refusing: AtomicBool,
    /// One policy check at a time.
    check: tokio::sync::Mutex<()>,
    /// How often fred's connection task ended with an error and was started again.
    restarts: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Why the link is down (or commands fail), with the driver's words for the log.
    link: Option<(StoreProblem, String)>,
    /// The last `maxmemory-policy` read.
    policy: Option<String>,
    /// When an evicting policy last refused service.
    refused_at: Option<Instant>,
    /// The problem last logged, so each change is logged once.
    reported: Option<StoreProblem>,
    /// An evicting policy already logged as allowed.
    allowed_logged: Option<String>,
}

/// The cause of a connection or command failure, from the driver's kind and words.
pub(crate) fn classify(kind: ErrorKind, details: &str) -> StoreProblem {
    let d = details.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if kind == ErrorKind::Auth
        || any(&["wrongpass", "noauth", "invalid password", "authentication"])
    {
        StoreProblem::AuthFailed
    } else if any(&["connection refused"]) {
        StoreProblem::ConnectionRefused
    } else if kind == ErrorKind::Timeout || any(&["timed out", "timeout"]) {
        StoreProblem::Timeout
    } else if any(&[
        "failed to lookup address",
        "name or service not known",
        "nodename nor servname",
        "no address associated",
        "name resolution",
    ]) {
        StoreProblem::Dns
    } else {
        StoreProblem::Unreachable
    }
}

impl Health {
    pub(crate) fn new(allow_eviction: bool) -> Self {
        Self {
            allow_eviction,
            state: Mutex::new(State::default()),
            // The first connection is due for a check before any event arrives.
            connections: AtomicU64::new(1),
            checked: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            check: tokio::sync::Mutex::new(()),
            restarts: AtomicU64::new(0),
        }
    }

    /// fred's connection task ended with an error and is being started again.
    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// fred (re)connected: the link is fine, and the policy is due for a check.
    pub(crate) fn connected(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let mut s = self.state();
        s.link = None;
        self.report(&mut s);
    }

    /// fred could not connect (or lost the connection).
    pub(crate) fn link_failed(&self, e: &FredError) {
        let mut s = self.state();
        s.link = Some((
            classify(e.kind().clone(), e.details()),
            e.details().to_owned(),
        ));
        self.report(&mut s);
    }

    /// What a `PING` answered: a good answer clears a problem seen on pings; an
    /// authentication refusal (`NOAUTH` on an open connection) or a timeout sets one.
    pub(crate) fn pinged(&self, result: &Result<(), StoreError>) {
        let mut s = self.state();
        match result {
            Ok(()) => s.link = None,
            Err(StoreError::Timeout(msg)) => s.link = Some((StoreProblem::Timeout, msg.clone())),
            Err(StoreError::Rejected(msg))
                if classify(ErrorKind::Unknown, msg) == StoreProblem::AuthFailed =>
            {
                s.link = Some((StoreProblem::AuthFailed, msg.clone()));
            }
            Err(_) => return,
        }
        self.report(&mut s);
    }

    /// Whether `maxmemory-policy` should be read before the next command: after a
    /// (re)connection, and every [`RECHECK_REFUSED`] while it refuses service.
    pub(crate) fn policy_check_due(&self) -> bool {
        if self.connections.load(Ordering::SeqCst) != self.checked.load(Ordering::SeqCst) {
            return true;
        }
        if !self.refusing.load(Ordering::SeqCst) {
            return false;
        }
        self.state()
            .refused_at
            .is_some_and(|at| at.elapsed() >= RECHECK_REFUSED)
    }

    pub(crate) fn check_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.check
    }

    /// The connection count a policy check starts at (it stands for that connection).
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// The policy read for connection `at` (`None`: Redis would not say).
    pub(crate) fn policy_read(&self, at: u64, policy: Option<String>) {
        self.checked.store(at, Ordering::SeqCst);
        let mut s = self.state();
        let evicting = policy.as_deref().is_some_and(|p| p != NO_EVICTION);
        s.refused_at = (evicting && !self.allow_eviction).then(Instant::now);
        self.refusing
            .store(s.refused_at.is_some(), Ordering::SeqCst);
        if evicting && self.allow_eviction && s.allowed_logged != policy {
            tracing::warn!(
                maxmemory_policy = policy.as_deref().unwrap_or_default(),
                "Redis may evict failed tasks (maxmemory-policy is not noeviction); serving \
                 anyway because redis_allow_eviction is set"
            );
            s.allowed_logged.clone_from(&policy);
        }
        s.policy = policy;
        self.report(&mut s);
    }

    /// Why commands are refused, if an evicting policy forbids serving.
    pub(crate) fn refusal(&self) -> Option<String> {
        if !self.refusing.load(Ordering::SeqCst) {
            return None;
        }
        let s = self.state();
        s.refused_at?;
        Some(format!(
            "redis maxmemory-policy is {}: {}",
            s.policy.as_deref().unwrap_or("unknown"),
            StoreProblem::Evicting.describe()
        ))
    }

    /// The link problem's words, for the message of a call refused while disconnected.
    pub(crate) fn cause(&self) -> Option<String> {
        let s = self.state();
        s.link
            .as_ref()
            .map(|(p, detail)| format!("{} ({detail})", p.describe()))
    }

    pub(crate) fn condition(&self) -> StoreCondition {
        let s = self.state();
        StoreCondition {
            problem: Self::problem(&s),
            eviction_policy: s.policy.clone(),
            connection_restarts: self.restarts.load(Ordering::Relaxed),
        }
    }

    fn problem(s: &State) -> Option<StoreProblem> {
        s.link
            .as_ref()
            .map(|(p, _)| *p)
            .or(s.refused_at.map(|_| StoreProblem::Evicting))
    }

    /// Log the current problem if it changed since the last report: one line per change,
    /// however often fred retries.
    fn report(&self, s: &mut State) {
        let now = Self::problem(s);
        if now == s.reported {
            return;
        }
        match now {
            Some(StoreProblem::Evicting) => tracing::error!(
                maxmemory_policy = s.policy.as_deref().unwrap_or_default(),
                "refusing to use Redis: {}",
                StoreProblem::Evicting.describe()
            ),
            Some(p) => {
                let detail = s.link.as_ref().map(|(_, d)| d.as_str()).unwrap_or_default();
                tracing::warn!(
                    cause = p.label(),
                    detail,
                    "Redis is not usable: {}",
                    p.describe()
                );
            }
            None => tracing::info!(
                was = s.reported.map(StoreProblem::label),
                "Redis is usable again"
            ),
        }
        s.reported = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_told_apart() {
        for (kind, details, want) in [
            (
                ErrorKind::Auth,
                "WRONGPASS invalid username-password pair",
                StoreProblem::AuthFailed,
            ),
            (
                ErrorKind::Unknown,
                "pinging redis: NOAUTH Authentication required.",
                StoreProblem::AuthFailed,
            ),
            (
                ErrorKind::IO,
                "Connection refused (os error 111)",
                StoreProblem::ConnectionRefused,
            ),
            (
                ErrorKind::Timeout,
                "Request timed out.",
                StoreProblem::Timeout,
            ),
            (
                ErrorKind::IO,
                "failed to lookup address information: Name or service not known",
                StoreProblem::Dns,
            ),
            (ErrorKind::IO, "Broken pipe", StoreProblem::Unreachable),
        ] {
            assert_eq!(classify(kind, details), want, "{details}");
        }
    }

    #[test]
    fn an_evicting_policy_refuses_unless_allowed() {
        let strict = Health::new(false);
        strict.policy_read(1, Some("allkeys-lru".into()));
        assert_eq!(strict.condition().problem, Some(StoreProblem::Evicting));
        assert!(strict.refusal().is_some_and(|r| r.contains("allkeys-lru")));
        strict.policy_read(1, Some(NO_EVICTION.into()));
        assert_eq!(strict.condition().problem, None);
        assert!(strict.refusal().is_none());

        let lenient = Health::new(true);
        lenient.policy_read(1, Some("allkeys-lru".into()));
        assert_eq!(lenient.condition().problem, None);
        assert_eq!(
            lenient.condition().eviction_policy.as_deref(),
            Some("allkeys-lru")
        );
    }
}
