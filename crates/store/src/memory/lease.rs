//! A lease in process memory: one holder at a time until it runs out (the notifier's, the
//! breaker decider's and the replay runners' leases of the memory store).

use std::time::{Duration, Instant};

/// Who holds the lease and until when; free when nobody does or it ran out.
#[derive(Debug, Default)]
pub(super) struct Lease(Option<(String, Instant)>);

impl Lease {
    /// Take the lease for `holder`, or renew it when `holder` has it, for `ttl`; `false`
    /// when another holds it.
    pub(super) fn take(&mut self, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let free = match &self.0 {
            None => true,
            Some((h, until)) => h == holder || *until <= now,
        };
        if free {
            self.0 = Some((holder.to_owned(), now + ttl));
        }
        free
    }

    /// Give it up if `holder` has it.
    pub(super) fn release(&mut self, holder: &str) {
        if self.0.as_ref().is_some_and(|(h, _)| h == holder) {
            self.0 = None;
        }
    }

    /// Whether `holder` has it now.
    pub(super) fn holds(&self, holder: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|(h, until)| h == holder && *until > Instant::now())
    }
}
