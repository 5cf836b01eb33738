//! Notifications: tell people when failures change, once, with a link.
//!
//! # Layout
//! - [`event`]: [`EventKind`] (one entry per kind), [`Level`], the payload [`Event`].
//! - [`target`]: targets as configured ([`TargetConfig`]) and checked ([`Target`]:
//!   URL, secret, kinds, format, level, scope).
//! - [`config`]: [`NotifyConfig`], every default in its `Default`.
//! - Sources, each turning a change of what the store shows into events: `alerts` (the
//!   server-side alert rules: `alert.firing`, `alert.resolved`), `groups` (failure
//!   groups by last seen: `group.new`, `group.returned`), `gates` (the retry gates:
//!   `gate.created`, `gate.released`), `breakers` (the retry circuit breakers:
//!   `breaker.opened`, `breaker.closed`) and `replays` (replays that ended: `replay.done`).
//! - `digest`: a target's next message from its outbox (one event, or a digest of many).
//! - `render`: bodies, `json` (the event) or `slack`; [`sign`]: the signature header.
//! - [`webhook`]: the bounded HTTP client.
//! - [`Notifier`]: the step that runs it all, under the store's lease.
//!
//! # How a step goes ([`Notifier::step`], every `interval` in [`Notifier::spawn`])
//! 1. Take or renew the lease ([`NotifyStore::notify_lease`]): one replica at a time
//!    works; the others' steps do nothing.
//! 2. Observe: the sources read the store and the notifier's state and produce events.
//! 3. Commit: events go to the outbox of every target that wants them (kind, level,
//!    scope), together with the sources' new state, in one atomic, lease-fenced write.
//! 4. Deliver, each target on its own: resend the message in flight when its retry is
//!    due; otherwise, at most once per `min_interval`, make the next message from the
//!    outbox (coalescing), store it as in flight, then send it. Failures back off
//!    exponentially and are given up after `give_up_after` (counted as dropped).
//!
//! # Invariants
//! - Recording and the API never wait on a target: the notifier only reads what the
//!   writes left in the store, on its own schedule.
//! - At least once, de-duplicated by `Id`: a message's events leave the outbox when it is
//!   stored as in flight, and it is resent with the same body until a target takes it.
//! - Every wait is bounded (store calls by the store, attempts by `request_timeout`); every
//!   queue has a cap (`outbox_max`, counted drops).
//! - Secrets never reach a log, an error or the status: targets show scheme and host.

#![forbid(unsafe_code)]

mod alerts;
mod breakers;
pub mod config;
mod digest;
pub mod event;
mod gates;
mod groups;
mod links;
mod render;
mod replays;
pub mod sign;
pub mod target;
pub mod webhook;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use failed_tasks_domain::Timestamp;
use failed_tasks_query::{FailedTaskService, NotifyTargetInfo, QueryError};
use failed_tasks_store::notify::{NotifyCommit, NotifyStore, Pending, Settle};
use failed_tasks_store::{Background, StatusStore, StoreError};
use futures_util::future::join_all;

pub use config::{NotifyConfig, WebhookUrl, ENV_TARGET};
pub use event::{Event, EventKind, Level};
pub use target::{Format, Secret, Target, TargetConfig, TargetError};
pub use webhook::Webhook;

use links::Links;

/// What the sources of one step produced.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    state: Vec<(String, Option<String>)>,
    seen: Vec<(failed_tasks_domain::ErrorSignature, i64)>,
    events: Vec<Event>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A use case (the statistics) failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Another replica holds the lease: nothing was done.
    pub locked_out: bool,
    /// Events produced by the sources.
    pub observed: u64,
    /// Events queued (an event wanted by two targets counts twice).
    pub queued: u64,
    /// Events dropped because a target's outbox was full.
    pub dropped: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
}

/// Most targets delivered to at once.
const SENDS_AT_ONCE: usize = 8;

/// The notifier of one process (cheap to clone).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    service: FailedTaskService,
    store: Arc<dyn NotifyStore>,
    tasks: Arc<dyn StatusStore>,
    targets: Vec<Target>,
    config: NotifyConfig,
    links: Links,
    holder: String,
    webhook: Webhook,
    /// Targets whose last attempt failed (a state change is logged once).
    failing: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.targets.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Notifier")
            .field("targets", &names)
            .field("holder", &self.inner.holder)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The public part of a target, for the status route.
pub fn target_info(t: &Target) -> NotifyTargetInfo {
    NotifyTargetInfo {
        name: t.name.clone(),
        url: t.shown_url(),
        format: t.format.as_str().to_owned(),
        events: t.events.iter().map(|k| k.as_str().to_owned()).collect(),
        min_level: t.min_level.as_str().to_owned(),
        signed: t.secret.is_some(),
    }
}

impl Notifier {
    /// The notifier of `service`'s store for `targets` (checked from `config`): `None` when
    /// there are no targets. [`QueryError::NotSupported`] when targets are configured and the
    /// store keeps no notifier state (the read-only compat source).
    pub fn new(
        service: FailedTaskService,
        targets: Vec<Target>,
        config: NotifyConfig,
    ) -> Result<Option<Notifier>, QueryError> {
        if targets.is_empty() {
            return Ok(None);
        }
        let stores = service.stores();
        let Some(store) = stores.notify.clone() else {
            return Err(QueryError::NotSupported {
                capability: failed_tasks_store::Capability::Notifications,
                store: stores.name,
            });
        };
        let tasks = stores.tasks.clone();
        Ok(Some(Notifier {
            inner: Arc::new(Inner {
                links: Links::new(config.public_base()),
                webhook: Webhook::new(config.request_timeout),
                holder: format!("{}-{}", std::process::id(), event::new_id()),
                service,
                store,
                tasks,
                targets,
                config,
                failing: Mutex::default(),
            }),
        }))
    }

    /// The targets.
    pub fn targets(&self) -> &[Target] {
        &self.inner.targets
    }

    /// How long the lease outlives its holder's last step.
    fn lease_ttl(&self) -> Duration {
        (self.inner.config.interval * 10).max(Duration::from_secs(10))
    }

    /// One step at `now` (see the crate docs). Tests drive it directly.
    pub async fn step(&self, now: Timestamp) -> Result<StepReport, StepError> {
        let inner = &self.inner;
        if !inner
            .store
            .notify_lease(&inner.holder, self.lease_ttl())
            .await?
        {
            return Ok(StepReport {
                locked_out: true,
                ..StepReport::default()
            });
        }
        let mut report = StepReport::default();
        let observed = self.observe(now).await?;
        report.observed = observed.events.len() as u64;
        let commit = self.commit_of(observed, now);
        if !commit.is_empty() {
            let done = inner.store.notify_commit(&inner.holder, &commit).await?;
            if done.lease_lost {
                return Ok(StepReport {
                    locked_out: true,
                    ..StepReport::default()
                });
            }
            report.queued = done.queued;
            report.dropped = done.dropped.len() as u64;
            if !done.dropped.is_empty() {
                tracing::warn!(
                    dropped = done.dropped.len(),
                    "notification outboxes full: events dropped (notify_outbox_max)"
                );
            }
        }
        for chunk in inner.targets.chunks(SENDS_AT_ONCE) {
            for sent in join_all(chunk.iter().map(|t| self.deliver(t, now))).await {
                match sent? {
                    Some(true) => report.delivered += 1,
                    Some(false) => report.failed += 1,
                    None => {}
                }
            }
        }
        Ok(report)
    }

    async fn observe(&self, now: Timestamp) -> Result<Observed, StepError> {
        let inner = &self.inner;
        let config = &inner.config;
        let values = inner.store.notify_state(&[]).await?.values;
        let mut out = Observed::default();
        groups::Walk {
            store: &inner.store,
            tasks: &inner.tasks,
            links: &inner.links,
            quiet_ms: millis(config.quiet_period),
            settle_ms: millis(config.settle),
        }
        .observe(&values, now, &mut out)
        .await?;
        if inner.service.schedules_retries() {
            let gates = inner.service.retry_gates(now).await?;
            gates::observe(&values, &gates, now, &inner.links, &mut out);
        }
        if inner.service.stores().breaker.is_some() {
            let states = inner.service.breaker_states().await?;
            breakers::observe(&values, &states, now, &inner.links, &mut out);
        }
        if inner.service.stores().replays.is_some() {
            let recent = inner.service.replays(replays::RECENT).await?;
            replays::observe(&values, &recent, now, &inner.links, &mut out);
        }
        let now_ms = now.unix_millis();
        if alerts::due(&values, now_ms, millis(config.alert_interval)) {
            let minutes = i64::try_from(config.alert_window.as_secs() / 60).unwrap_or(60);
            let stats = inner.service.failure_stats(minutes, now, 20).await?;
            alerts::observe(
                &values,
                &stats,
                now,
                millis(config.alert_resolve_after),
                &inner.links,
                &mut out,
            );
        }
        Ok(out)
    }

    /// The commit of what was observed: each event to the targets that want it.
    fn commit_of(&self, observed: Observed, now: Timestamp) -> NotifyCommit {
        let inner = &self.inner;
        let mut events = Vec::new();
        for event in &observed.events {
            let body = serde_json::to_string(event).unwrap_or_default();
            for t in inner.targets.iter().filter(|t| t.wants(event)) {
                events.push((t.name.clone(), body.clone()));
            }
        }
        let forget = inner.config.forget_after.and_then(|age| {
            // Once per alert evaluation is often enough.
            observed
                .state
                .iter()
                .any(|(k, _)| k == "alerts.at")
                .then(|| now.unix_millis() - millis(age))
        });
        NotifyCommit {
            state: observed.state,
            seen: observed.seen,
            forget_seen_before_ms: forget,
            events,
            outbox_cap: inner.config.outbox_max,
        }
    }

    /// One target's delivery at `now`: `Some(true)` delivered, `Some(false)` an attempt
    /// failed, `None` nothing to do.
    async fn deliver(&self, target: &Target, now: Timestamp) -> Result<Option<bool>, StoreError> {
        let inner = &self.inner;
        let store = &inner.store;
        let now_ms = now.unix_millis();
        let d = store.target_delivery(&target.name).await?;
        let pending = match d.pending {
            Some(p) if now_ms < p.next_ms => return Ok(None),
            Some(p) => p,
            None => {
                let min = millis(inner.config.min_interval);
                if d.last_started_ms
                    .is_some_and(|at| now_ms - at < min && now_ms >= at)
                {
                    return Ok(None);
                }
                let entries = store.outbox(&target.name, digest::READ).await?;
                let Some((event, covered)) = digest::next_message(&entries, now, &inner.links)
                else {
                    return Ok(None);
                };
                let p = Pending {
                    body: render::body(&event, target.format),
                    id: event.id,
                    events: covered.len() as u64,
                    attempts: 0,
                    first_ms: now_ms,
                    next_ms: now_ms,
                };
                if !store
                    .begin_delivery(&inner.holder, &target.name, &p, &covered)
                    .await?
                {
                    return Ok(None);
                }
                p
            }
        };
        let kind = serde_json::from_str::<serde_json::Value>(&pending.body)
            .ok()
            .and_then(|v| v.get("Event").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let sent = inner
            .webhook
            .post(
                target,
                &pending.id,
                &kind,
                &pending.body,
                now_ms.div_euclid(1000),
            )
            .await;
        let settle = match &sent {
            Ok(()) => Settle::Delivered { at_ms: now_ms },
            Err(error) if now_ms - pending.first_ms >= millis(inner.config.give_up_after) => {
                Settle::GaveUp {
                    at_ms: now_ms,
                    error: error.clone(),
                }
            }
            Err(error) => Settle::Failed {
                at_ms: now_ms,
                error: error.clone(),
                retry_ms: now_ms + self.backoff(pending.attempts + 1),
            },
        };
        store
            .settle_delivery(&inner.holder, &target.name, &pending.id, &settle)
            .await?;
        self.log_change(target, &sent, &settle);
        Ok(Some(sent.is_ok()))
    }

    /// The wait before attempt `n + 1` after `n` failed: doubling from `retry_base`, at
    /// most `retry_max`, give or take a fifth.
    fn backoff(&self, failed: u32) -> i64 {
        let config = &self.inner.config;
        let base = millis(config.retry_base).max(1);
        let exp = base.saturating_mul(1i64 << failed.saturating_sub(1).min(30));
        let wait = exp.min(millis(config.retry_max).max(base));
        let (_, random) = uuid::Uuid::new_v4().as_u64_pair();
        let spread = (wait / 5).max(1);
        wait - spread + i64::try_from(random % (2 * spread as u64).max(1)).unwrap_or(0)
    }

    /// Log a target's change of state once: failing, given up, recovered.
    fn log_change(&self, target: &Target, sent: &Result<(), String>, settle: &Settle) {
        let mut failing = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (sent, settle) {
            (Ok(()), _) => {
                if failing.remove(&target.name) {
                    tracing::info!(target = target.name, "notification target recovered");
                }
            }
            (Err(error), Settle::GaveUp { .. }) => tracing::warn!(
                target = target.name,
                error = error.as_str(),
                "notification given up after notify_give_up_after; its events are dropped"
            ),
            (Err(error), _) => {
                if failing.insert(target.name.clone()) {
                    tracing::warn!(
                        target = target.name,
                        url = target.shown_url(),
                        error = error.as_str(),
                        "notification target failing; retrying with backoff"
                    );
                }
            }
        }
    }

    /// Run [`step`](Self::step) every `interval` until the handle is stopped; a failing
    /// step is logged once and tried again at the next tick.
    pub fn spawn(&self) -> Background {
        let notifier = self.clone();
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Background::every(self.inner.config.interval, move || {
            let (notifier, failing) = (notifier.clone(), failing.clone());
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match notifier.step(Timestamp::now()).await {
                    Ok(_) => {
                        if failing.swap(false, Relaxed) {
                            tracing::info!("notifier recovered");
                        }
                    }
                    Err(e) => {
                        if !failing.swap(true, Relaxed) {
                            tracing::warn!(error = %e, "notifier step failed; retrying");
                        }
                    }
                }
                ControlFlow::Continue(())
            }
        })
    }

    /// Give the lease up, so that another replica takes over at once (at shutdown).
    pub async fn release(&self) {
        let inner = &self.inner;
        if let Err(e) = inner.store.notify_release(&inner.holder).await {
            tracing::debug!(error = %e, "could not release the notifier's lease");
        }
    }
}
