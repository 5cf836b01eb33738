//! What an adapter knows about its link to the backing store, for readiness and metrics.

/// Why a store cannot be used right now, as far as its adapter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreProblem {
    /// The store refused the credentials (Redis `WRONGPASS`, `NOAUTH`).
    AuthFailed,
    /// Nothing listens at the address (connection refused).
    ConnectionRefused,
    /// Connecting or a command took longer than the adapter's timeout.
    Timeout,
    /// The store's host name does not resolve.
    Dns,
    /// The store evicts keys under memory pressure (Redis `maxmemory-policy` other than
    /// `noeviction`) and evicting was not allowed: failed tasks could vanish silently.
    Evicting,
    /// Any other reason the link is down.
    Unreachable,
}

impl StoreProblem {
    /// Every problem, for metrics that show each as 0 or 1.
    pub const ALL: [StoreProblem; 6] = [
        StoreProblem::AuthFailed,
        StoreProblem::ConnectionRefused,
        StoreProblem::Timeout,
        StoreProblem::Dns,
        StoreProblem::Evicting,
        StoreProblem::Unreachable,
    ];

    /// A short, stable label, for metrics and log fields.
    pub fn label(self) -> &'static str {
        match self {
            StoreProblem::AuthFailed => "auth_failed",
            StoreProblem::ConnectionRefused => "connection_refused",
            StoreProblem::Timeout => "timeout",
            StoreProblem::Dns => "dns",
            StoreProblem::Evicting => "evicting",
            StoreProblem::Unreachable => "unreachable",
        }
    }

    /// What an operator should read: the cause and where to look. Holds no secret and no
    /// address, so it may be shown to unauthenticated callers (`/readyz`).
    pub fn describe(self) -> &'static str {
        match self {
            StoreProblem::AuthFailed => {
                "the store refused the credentials (WRONGPASS/NOAUTH): check the password in the store URL"
            }
            StoreProblem::ConnectionRefused => {
                "connection refused: nothing listens at the store's address"
            }
            StoreProblem::Timeout => "the store did not answer in time",
            StoreProblem::Dns => "the store's host name does not resolve",
            StoreProblem::Evicting => {
                "the store evicts keys under memory pressure (maxmemory-policy is not noeviction), \
                 which loses failed tasks silently: set maxmemory-policy noeviction, or allow it \
                 explicitly (redis_allow_eviction)"
            }
            StoreProblem::Unreachable => "the store is not reachable",
        }
    }
}

impl std::fmt::Display for StoreProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// An adapter's last observations of its store (no I/O to read them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCondition {
    /// Why the store cannot be used right now; `None` when the adapter knows of no problem.
    pub problem: Option<StoreProblem>,
    /// The store's eviction policy (Redis `maxmemory-policy`), once read; `None` for stores
    /// without one or before it was read.
    pub eviction_policy: Option<String>,
    /// How often the adapter restarted its driver's connection task after it ended with an
    /// error, since the adapter was built (Redis: a safety net around fred's router task,
    /// expected to stay 0; 0 for stores without one).
    pub connection_restarts: u64,
}
