//! The retry circuit breaker's decider: a loop that opens, half-opens and closes breakers
//! (docs/retries.md#the-circuit-breaker).
//!
//! Every [`BreakerConfig::interval`] it runs one [`RetryBreaker::step`] under the store's
//! breaker lease, so one replica decides at a time while every replica counts outcomes
//! (`FailedTaskService::count_*`). A step, for each task type × retryable category:
//! - **closed** (no state): the outcomes of the last window trip it
//!   ([`BreakerConfig::trips`]): a `hold` gate on its scope, made by the breaker, and the
//!   state `open` with the first cool-down;
//! - **open**, cool-down over: the gate lets [`BreakerConfig::canaries`] retries through
//!   (`RetryStore::pass_gate`) and the state becomes `half_open`;
//! - **half-open**: the outcomes since then decide ([`BreakerConfig::verdict`]): closed (the
//!   gate released, the state forgotten), or open again with twice the cool-down (the
//!   passes taken back);
//! - a breaker whose gate is gone (an operator released it) is closed.
//!
//! Each transition is logged, counted ([`RetryCounters`](crate::RetryCounters)) and
//! audited with the actor `breaker`. Tests drive [`RetryBreaker::step`] with explicit times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{
    BreakerConfig, BreakerKey, BreakerPhase, BreakerState, GateCreator, GateMode, GateReason,
    OutcomeCounts, Timestamp, Verdict,
};
use failed_tasks_store::audit::{AuditAction, AuditEntry};

use crate::service::RetryCounters;
use crate::{FailedTaskService, GateRequest, QueryError};

/// The actor of the breaker's audit entries.
pub const BREAKER_ACTOR: &str = "breaker";

/// One transition a step made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The breaker of the key opened (first time since closed, or again after canaries).
    Opened(BreakerKey),
    /// It half-opened: canaries may pass.
    HalfOpened(BreakerKey),
    /// It closed.
    Closed(BreakerKey),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BreakerReport {
    /// Another replica holds the lease: nothing was decided here.
    pub locked_out: bool,
    /// The transitions made, in order.
    pub transitions: Vec<Transition>,
}

/// The decider of one process.
#[derive(Debug, Clone)]
pub struct RetryBreaker {
    service: FailedTaskService,
    holder: String,
}

/// The running decider loop; dropping it stops it.
pub type BreakerHandle = failed_tasks_store::Background;

impl RetryBreaker {
    /// A decider over `service`'s store with the service's breaker settings, holding the
    /// lease as `holder` (unique per process: a name and a random part).
    pub fn new(service: FailedTaskService, holder: impl Into<String>) -> Self {
        Self {
            service,
            holder: holder.into(),
        }
    }

    fn config(&self) -> BreakerConfig {
        *self.service.breaker_config()
    }

    /// One step as of `now` (see the module).
    pub async fn step(&self, now: Timestamp) -> Result<BreakerReport, QueryError> {
        let svc = &self.service;
        let store = svc.breaker_store()?;
        let config = self.config();
        let mut report = BreakerReport::default();
        // The lease outlives a few steps, so a replica that stops is replaced soon.
        let ttl = config
            .interval
            .saturating_mul(5)
            .max(Duration::from_secs(2));
        let holder = self.holder.clone();
        let s = store.clone();
        if !svc
            .checked(async move { s.breaker_lease(&holder, ttl).await })
            .await?
        {
            report.locked_out = true;
            return Ok(report);
        }
        let s = store.clone();
        let states = svc.checked(async move { s.breaker_states().await }).await?;
        let from = Timestamp::saturating_from_unix_millis(
            now.unix_millis() - i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX) + 1,
        );
        let s = store.clone();
        let window: BTreeMap<BreakerKey, OutcomeCounts> = svc
            .checked(async move { s.outcomes(from, now).await })
            .await?
            .into_iter()
            .collect();
        let gates = svc.retry_gates(now).await?;
        let (closed, mut open): (BTreeMap<BreakerKey, BreakerState>, BTreeMap<_, _>) = states
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .partition(|(_, s)| s.phase == BreakerPhase::Closed);

        // Breakers whose gate an operator released (or that lapsed) are closed.
        let gone: Vec<BreakerState> = open
            .values()
            .filter(|s| !gates.iter().any(|g| g.gate.id == s.gate))
            .cloned()
            .collect();
        let mut closed_now = BTreeMap::new();
        for state in gone {
            open.remove(&state.key);
            closed_now.insert(state.key.clone(), now);
            self.close(state, false, "its gate was released", now, &mut report)
                .await?;
        }

        for (key, counts) in &window {
            if open.contains_key(key)
                || svc.retry_policy().max_retries_for(key.category) == 0
                || !config.trips(*counts)
            {
                continue;
            }
            // What a breaker saw before it closed does not open it again: outcomes count by
            // the second, so only those from the second after the close on.
            let closed_at = closed_now
                .get(key)
                .copied()
                .or_else(|| closed.get(key).map(|s| s.phase_since));
            let counts = match closed_at {
                Some(t) if t > from => {
                    let next_second = Timestamp::saturating_from_unix_millis(
                        (t.unix_millis().div_euclid(1_000) + 1) * 1_000,
                    );
                    self.outcomes_of(key, next_second, now).await?
                }
                _ => *counts,
            };
            if config.trips(counts) {
                self.open_new(key, counts, now, &mut report).await?;
            }
        }
        // Closed breakers are forgotten a window after they closed.
        for state in closed.values() {
            if now.since(state.phase_since) >= config.window
                && !report
                    .transitions
                    .contains(&Transition::Opened(state.key.clone()))
            {
                let (s, k) = (store.clone(), state.key.clone());
                svc.checked(async move { s.remove_breaker_state(&k).await })
                    .await?;
            }
        }

        for state in open.into_values() {
            match state.phase {
                BreakerPhase::Closed => {}
                BreakerPhase::Open if now >= state.cooldown_ends() => {
                    self.half_open(state, now, &mut report).await?;
                }
                BreakerPhase::Open => {}
                BreakerPhase::HalfOpen => {
                    let since = state.phase_since;
                    let canaries = self.outcomes_of(&state.key, since, now).await?;
                    let held = gates
                        .iter()
                        .find(|g| g.gate.id == state.gate)
                        .map_or(0, |g| g.held);
                    match config.verdict(canaries, held, now.since(since)) {
                        Verdict::Wait => {}
                        Verdict::Close => {
                            self.close(state, true, "its canaries resolved", now, &mut report)
                                .await?;
                        }
                        Verdict::Reopen => self.reopen(state, canaries, now, &mut report).await?,
                    }
                }
            }
        }
        Ok(report)
    }

    async fn open_new(
        &self,
        key: &BreakerKey,
        counts: OutcomeCounts,
        now: Timestamp,
        report: &mut BreakerReport,
    ) -> Result<(), QueryError> {
        let svc = &self.service;
        let config = self.config();
        let text = format!(
            "breaker: {} of {} retries of {key} failed again within {}s",
            counts.failed_again,
            counts.total(),
            config.window.as_secs()
        );
        let reason = GateReason::parse(&text).map_err(QueryError::BadRequest)?;
        let Some(gate) = svc
            .create_gate(
                GateRequest {
                    scope: key.scope(),
                    mode: GateMode::Hold,
                    reason,
                    until: None,
                    created_by: GateCreator::Breaker,
                },
                now,
            )
            .await?
        else {
            tracing::warn!(breaker = %key, "the breaker could not open: 1,000 gates are active");
            return Ok(());
        };
        let state = BreakerState {
            key: key.clone(),
            phase: BreakerPhase::Open,
            gate: gate.id.clone(),
            opened: now,
            phase_since: now,
            cooldown: config.cooldown_after(1),
            opens: 1,
            trigger: counts,
        };
        self.save(&state).await?;
        tracing::warn!(
            breaker = %key,
            gate = %gate.id,
            failed_again = counts.failed_again,
            outcomes = counts.total(),
            cooldown_s = state.cooldown.as_secs(),
            "retry breaker opened: its retries are held"
        );
        RetryCounters::add(&svc.retry_counters().breaker_opened, 1);
        self.audit(AuditAction::BreakerOpened, key, &text, counts.total(), now)
            .await;
        report.transitions.push(Transition::Opened(key.clone()));
        Ok(())
    }

    async fn half_open(
        &self,
        mut state: BreakerState,
        now: Timestamp,
        report: &mut BreakerReport,
    ) -> Result<(), QueryError> {
        let svc = &self.service;
        let canaries = self.config().canaries;
        if !svc.pass_gate(&state.gate, canaries).await? {
            // The gate went between the reads: closed at the next step.
            return Ok(());
        }
        state.phase = BreakerPhase::HalfOpen;
        state.phase_since = now;
        self.save(&state).await?;
        tracing::info!(breaker = %state.key, canaries, "retry breaker half-open: canaries pass");
        RetryCounters::add(&svc.retry_counters().breaker_half_opened, 1);
        let text = format!(
            "breaker: {canaries} canary retries of {} may pass",
            state.key
        );
        self.audit(
            AuditAction::BreakerHalfOpened,
            &state.key,
            &text,
            u64::from(canaries),
            now,
        )
        .await;
        report.transitions.push(Transition::HalfOpened(state.key));
        Ok(())
    }

    async fn reopen(
        &self,
        mut state: BreakerState,
        canaries: OutcomeCounts,
        now: Timestamp,
        report: &mut BreakerReport,
    ) -> Result<(), QueryError> {
        let svc = &self.service;
        svc.pass_gate(&state.gate, 0).await?;
        state.phase = BreakerPhase::Open;
        state.phase_since = now;
        state.opens = state.opens.saturating_add(1);
        state.cooldown = self.config().cooldown_after(state.opens);
        state.trigger = canaries;
        self.save(&state).await?;
        let text = format!(
            "breaker: {} of {} canary retries of {} failed again; held for {}s",
            canaries.failed_again,
            canaries.total(),
            state.key,
            state.cooldown.as_secs()
        );
        tracing::warn!(breaker = %state.key, opens = state.opens, cooldown_s = state.cooldown.as_secs(), "retry breaker opened again: {text}");
        RetryCounters::add(&svc.retry_counters().breaker_opened, 1);
        self.audit(
            AuditAction::BreakerOpened,
            &state.key,
            &text,
            canaries.total(),
            now,
        )
        .await;
        report.transitions.push(Transition::Opened(state.key));
        Ok(())
    }

    /// The outcomes of `key` from `from` to `now`.
    async fn outcomes_of(
        &self,
        key: &BreakerKey,
        from: Timestamp,
        now: Timestamp,
    ) -> Result<OutcomeCounts, QueryError> {
        let svc = &self.service;
        let store = svc.breaker_store()?;
        Ok(svc
            .checked(async move { store.outcomes(from, now).await })
            .await?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| c)
            .unwrap_or_default())
    }

    async fn close(
        &self,
        mut state: BreakerState,
        release: bool,
        why: &str,
        now: Timestamp,
        report: &mut BreakerReport,
    ) -> Result<(), QueryError> {
        let svc = &self.service;
        if release {
            svc.release_gate(&state.gate).await?;
        }
        state.phase = BreakerPhase::Closed;
        state.phase_since = now;
        self.save(&state).await?;
        let key = &state.key;
        tracing::info!(breaker = %key, "retry breaker closed: {why}");
        RetryCounters::add(&svc.retry_counters().breaker_closed, 1);
        let text = format!("breaker: {key} closed, {why}");
        self.audit(AuditAction::BreakerClosed, key, &text, 0, now)
            .await;
        report.transitions.push(Transition::Closed(key.clone()));
        Ok(())
    }

    async fn save(&self, state: &BreakerState) -> Result<(), QueryError> {
        let svc = &self.service;
        let store = svc.breaker_store()?;
        let state = state.clone();
        svc.checked(async move { store.put_breaker_state(&state).await })
            .await
    }

    async fn audit(
        &self,
        action: AuditAction,
        key: &BreakerKey,
        reason: &str,
        count: u64,
        now: Timestamp,
    ) {
        self.service
            .audit(AuditEntry {
                time: now,
                actor: BREAKER_ACTOR.to_owned(),
                action,
                target: format!(
                    "TaskType={}&ErrorCategory={}",
                    key.task_type.as_str(),
                    key.category.as_str()
                ),
                reason: Some(reason.to_owned()),
                count,
                request_id: None,
            })
            .await;
    }

    /// Run [`step`](Self::step) every interval until the handle is dropped. Errors are
    /// logged once until a step succeeds again.
    pub fn spawn(self) -> BreakerHandle {
        let interval = self.config().interval;
        let decider = Arc::new(self);
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        BreakerHandle::every(interval, move || {
            let (decider, failing) = (decider.clone(), failing.clone());
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match decider.step(Timestamp::now()).await {
                    Ok(_) => {
                        if failing.swap(false, Relaxed) {
                            tracing::info!("retry breaker recovered");
                        }
                    }
                    Err(e) => {
                        if !failing.swap(true, Relaxed) {
                            tracing::warn!(error = %e, "retry breaker step failed; retrying");
                        }
                    }
                }
                std::ops::ControlFlow::Continue(())
            }
        })
    }
}
