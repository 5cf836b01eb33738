//! Prometheus metrics of the server, exposed at `GET /metrics` (OpenMetrics text).
//!
//! Names follow Prometheus conventions (`_total` for counters, `_seconds` for durations);
//! `docs/monitoring.md` lists them with the alert rules that use them. Labels that come from
//! clients (error codes, task types) are capped in number, so a client cannot blow up the
//! series count: past the cap, new values are reported as `other` (the use case counts
//! recordings so: [`RecordCounters`]).
//!
//! What the use cases count themselves ([`RetryCounters`], [`RecordCounters`]: whoever
//! called them, HTTP or a Rust embedder) is read at every scrape by a collector; the rest
//! is counted here, where it happens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use failed_tasks_domain::ErrorCategory;
use failed_tasks_query::{RecordCounters, RetryCounters, RetryGauges};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// How long the stored-tasks gauge is reused before the store is asked again.
pub const STORED_GAUGE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    task_type: String,
    category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric of the server, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily,
    store_errors: Family<KindLabels, Counter>,
    corrupt_skipped: Counter,
    stored: Family<CategoryLabels, Gauge>,
    eviction_policy: Family<PolicyLabels, Gauge>,
    store_problem: Family<CauseLabels, Gauge>,
    store_restarts: Counter,
    stored_refreshed: Mutex<Option<Instant>>,
    connections_open: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    response_bytes: Gauge,
    responses_refused: Counter,
    retry_waiting: Gauge,
    retry_overdue: Gauge,
    retry_oldest_overdue: Gauge<f64, std::sync::atomic::AtomicU64>,
    retry_queue_length: Gauge,
    retry_queue_pending: Gauge,
    retry_reclaimed: Gauge,
    retry_gates: Gauge,
    retries_held: Gauge,
    breaker_open: Family<BreakerLabels, Gauge>,
    notify: NotifyGauges,
}

/// The notification targets' figures, as the store keeps them (every replica's).
#[derive(Debug, Default)]
struct NotifyGauges {
    queued: Family<TargetLabels, Gauge>,
    in_flight: Family<TargetLabels, Gauge>,
    delivered: Family<TargetLabels, Gauge>,
    failed_attempts: Family<TargetLabels, Gauge>,
    dropped: Family<TargetLabels, Gauge>,
    last_success: Family<TargetLabels, Gauge>,
}

impl NotifyGauges {
    fn register(&self, registry: &mut Registry) {
        let families: [(&str, &str, &Family<TargetLabels, Gauge>); 6] = [
            ("failed_tasks_notify_queued", "Notification events waiting for the target", &self.queued),
            ("failed_tasks_notify_in_flight", "1 while a message to the target is being delivered (retried until taken or given up)", &self.in_flight),
            ("failed_tasks_notify_delivered", "Messages the target took, as the store counts them (all replicas, since the store began)", &self.delivered),
            ("failed_tasks_notify_failed_attempts", "Delivery attempts to the target that failed (hang, 5xx, redirect, closed connection), as the store counts them", &self.failed_attempts),
            ("failed_tasks_notify_dropped", "Events for the target dropped: its outbox was full, or their message was given up after notify_give_up_after", &self.dropped),
            ("failed_tasks_notify_last_success_timestamp_seconds", "When the target last took a message (Unix seconds; 0: never)", &self.last_success),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
    }
}

/// The retry use cases' counters ([`RetryCounters`]), read at every scrape.
#[derive(Debug)]
struct RetryCollector(Arc<RetryCounters>);

impl Collector for RetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let get = RetryCounters::get;
        let plain: [(&str, &str, u64); 7] = [
            (
                "failed_tasks_retries_delivered",
                "Due retries this replica's scheduler moved into the workers' queue",
                get(&c.delivered),
            ),
            (
                "failed_tasks_retries_recovered",
                "Failed tasks resolved (their retry succeeded) through this replica",
                get(&c.recovered),
            ),
            (
                "failed_tasks_superseded",
                "Failed tasks superseded through this replica (a later run of the same task type, client and codebase succeeded)",
                get(&c.superseded),
            ),
            (
                "failed_tasks_retries_cancelled",
                "Scheduled retries cancelled through this replica",
                get(&c.cancelled),
            ),
            (
                "failed_tasks_final_failures",
                "Failures recorded through this replica that the retry policy gives up on",
                get(&c.finals),
            ),
            (
                "failed_tasks_audit_append_failures",
                "Audit entries of actions through this replica that could not be appended (the action itself was done)",
                get(&c.audit_failures),
            ),
            (
                "failed_tasks_retry_breaker_count_failures",
                "Retry outcomes reported through this replica that could not be counted for the circuit breaker (the outcome itself was recorded)",
                get(&c.breaker_count_failures),
            ),
        ];
        for (name, help, value) in plain {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let scheduled = [
            ("policy", get(&c.scheduled_by_policy)),
            ("operator", get(&c.scheduled_by_operator)),
        ];
        let probe = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "failed_tasks_retries_scheduled",
            "Retries scheduled through this replica, by who scheduled them",
            None,
            probe.metric_type(),
        )?;
        for (by, value) in scheduled {
            let labels = [("by", by)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let transitions = [
            ("opened", get(&c.breaker_opened)),
            ("half_opened", get(&c.breaker_half_opened)),
            ("closed", get(&c.breaker_closed)),
        ];
        let mut family = encoder.encode_descriptor(
            "failed_tasks_retry_breaker_transitions",
            "Circuit breaker transitions this replica's decider made (opened counts reopens too)",
            None,
            probe.metric_type(),
        )?;
        for (transition, value) in transitions {
            let labels = [("transition", transition)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

/// The recording counters of the use case ([`RecordCounters`]), read at every scrape:
/// `failed_tasks_recorded_total{category,error_code,task_type}` and
/// `failed_tasks_task_attempts_total{task_type}`.
#[derive(Debug)]
struct RecordCollector(Arc<RecordCounters>);

impl Collector for RecordCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let probe = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "failed_tasks_recorded",
            "Failures recorded through this process, by category, error code and task type",
            None,
            probe.metric_type(),
        )?;
        for (labels, value) in self.0.recorded() {
            let labels = [
                ("category", labels.category.as_str()),
                ("error_code", labels.error_code.as_str()),
                ("task_type", labels.task_type.as_str()),
            ];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "failed_tasks_task_attempts",
            "Task attempts reported through this process (the failure-rate denominator), by task type",
            None,
            probe.metric_type(),
        )?;
        for (task_type, value) in self.0.attempts() {
            let labels = [("task_type", task_type.as_str())];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "failed_tasks_http_requests",
            "HTTP requests answered, by route and status code",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "failed_tasks_http_request_duration",
            "Time to answer an HTTP request, by route",
            Unit::Seconds,
            http_duration.clone(),
        );
        let store_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "failed_tasks_store_errors",
            "Store calls that failed, by kind (unavailable, timeout, deadline, full, rejected, corrupt, internal)",
            store_errors.clone(),
        );
        let corrupt_skipped = Counter::default();
        registry.register(
            "failed_tasks_corrupt_records_skipped",
            "Stored records that could not be decoded and were left out of a page",
            corrupt_skipped.clone(),
        );
        let stored = Family::<CategoryLabels, Gauge>::default();
        registry.register(
            "failed_tasks_stored",
            "Failed tasks currently stored, by category (read from the store, cached a few seconds)",
            stored.clone(),
        );
        let eviction_policy = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "failed_tasks_store_eviction_policy",
            "The store's eviction policy (Redis maxmemory-policy) as last read: 1 for the current one; anything but noeviction can lose failed tasks",
            eviction_policy.clone(),
        );
        let store_problem = Family::<CauseLabels, Gauge>::default();
        registry.register(
            "failed_tasks_store_problem",
            "1 for the cause the store is not usable (auth_failed, connection_refused, timeout, dns, evicting, unreachable), 0 for the others",
            store_problem.clone(),
        );
        let store_restarts = Counter::default();
        registry.register(
            "failed_tasks_store_connection_restarts",
            "Times the store's adapter restarted its driver's connection task after it ended with an error (a safety net; expected to stay 0)",
            store_restarts.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "failed_tasks_http_connections_open",
            "Client connections open now (the cap is max_connections)",
            connections_open.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "failed_tasks_http_connections_closed",
            "Connections the server closed on its own, by reason (idle, evicted, write_stall)",
            connections_closed.clone(),
        );
        let response_bytes = Gauge::default();
        registry.register(
            "failed_tasks_http_response_bytes_in_flight",
            "Bytes of responses built and not yet taken by the clients' connections",
            response_bytes.clone(),
        );
        let responses_refused = Counter::default();
        registry.register(
            "failed_tasks_http_responses_refused",
            "Answers replaced by 503 because the response-bytes caps were full",
            responses_refused.clone(),
        );
        let retry_waiting = Gauge::default();
        registry.register(
            "failed_tasks_retries_waiting",
            "Scheduled retries not yet moved to the workers' queue, due or not (read from the store)",
            retry_waiting.clone(),
        );
        let retry_overdue = Gauge::default();
        registry.register(
            "failed_tasks_retries_overdue",
            "Scheduled retries whose due time has come but that are not in the workers' queue yet",
            retry_overdue.clone(),
        );
        let retry_oldest_overdue = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "failed_tasks_retries_oldest_overdue",
            "How long the oldest overdue retry has waited past its due time (0 when none)",
            Unit::Seconds,
            retry_oldest_overdue.clone(),
        );
        let retry_queue_length = Gauge::default();
        registry.register(
            "failed_tasks_retry_queue_length",
            "Retry requests in the workers' queue, read or not (the Redis stream's length)",
            retry_queue_length.clone(),
        );
        let retry_queue_pending = Gauge::default();
        registry.register(
            "failed_tasks_retry_queue_pending",
            "Retry requests claimed by a worker and not acknowledged yet",
            retry_queue_pending.clone(),
        );
        let retry_reclaimed = Gauge::default();
        registry.register(
            "failed_tasks_retry_queue_reclaimed",
            "Retry requests reclaimed from workers whose lease ran out, since the queue was created",
            retry_reclaimed.clone(),
        );
        let retry_gates = Gauge::default();
        registry.register(
            "failed_tasks_retry_gates",
            "Active retry gates (hold or limit), read from the store",
            retry_gates.clone(),
        );
        let retries_held = Gauge::default();
        registry.register(
            "failed_tasks_retries_held",
            "Due retries the active retry gates hold back (or that wait for a limit's rate)",
            retries_held.clone(),
        );
        let breaker_open = Family::<BreakerLabels, Gauge>::default();
        registry.register(
            "failed_tasks_retry_breaker_open",
            "1 while the circuit breaker of a task type and category holds its retries (open or half-open), 0 for a breaker closed lately; read from the store",
            breaker_open.clone(),
        );
        let notify = NotifyGauges::default();
        notify.register(&mut registry);
        Self {
            notify,
            breaker_open,
            retry_gates,
            retries_held,
            retry_waiting,
            retry_overdue,
            retry_oldest_overdue,
            retry_queue_length,
            retry_queue_pending,
            retry_reclaimed,
            registry,
            http_requests,
            http_duration,
            store_errors,
            corrupt_skipped,
            stored,
            eviction_policy,
            store_problem,
            store_restarts,
            stored_refreshed: Mutex::new(None),
            connections_open,
            connections_closed,
            response_bytes,
            responses_refused,
        }
    }

    /// A connection opened (`+1`) or ended (`-1`).
    pub(crate) fn connections_open(&self, delta: i64) {
        self.connections_open.inc_by(delta);
    }

    /// The server closed a connection on its own: `idle`, `evicted` or `write_stall`.
    pub(crate) fn connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The gauge of response bytes in flight, for the bodies that hold them.
    pub(crate) fn response_bytes(&self) -> Gauge {
        self.response_bytes.clone()
    }

    /// An answer replaced by 503 because the response-bytes caps were full.
    pub(crate) fn response_refused(&self) {
        self.responses_refused.inc();
    }

    /// The same metrics, plus the use cases' retry and recording counters (read at every
    /// scrape).
    pub fn with_counters(retries: Arc<RetryCounters>, records: Arc<RecordCounters>) -> Self {
        let mut m = Self::new();
        m.registry
            .register_collector(Box::new(RetryCollector(retries)));
        m.registry
            .register_collector(Box::new(RecordCollector(records)));
        m
    }

    /// Set the retry gauges from the store's figures.
    pub fn set_retry_gauges(&self, g: &RetryGauges) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.retry_waiting.set(int(g.scheduled));
        self.retry_overdue.set(int(g.due));
        self.retry_oldest_overdue
            .set(g.oldest_due_age.as_secs_f64());
        self.retry_queue_length.set(int(g.queued));
        self.retry_queue_pending.set(int(g.pending));
        self.retry_reclaimed.set(int(g.reclaimed));
    }

    /// Set the gate gauges from the active gates.
    pub fn set_gate_gauges(&self, gates: &[failed_tasks_domain::GateStatus]) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.retry_gates.set(int(gates.len() as u64));
        self.retries_held
            .set(int(gates.iter().map(|g| g.held).sum::<u64>()));
    }

    /// Set the breaker gauges from the breakers' states (those forgotten leave).
    pub fn set_breaker_gauges(&self, states: &[failed_tasks_domain::BreakerState]) {
        self.breaker_open.clear();
        for s in states {
            let open = s.phase != failed_tasks_domain::BreakerPhase::Closed;
            self.breaker_open
                .get_or_create(&BreakerLabels {
                    task_type: s.key.task_type.to_string(),
                    category: s.key.category.as_str().to_owned(),
                })
                .set(i64::from(open));
        }
    }

    /// Set the notification gauges from the targets' delivery.
    pub fn set_notify(
        &self,
        targets: &[(
            failed_tasks_query::NotifyTargetInfo,
            failed_tasks_query::TargetDelivery,
        )],
    ) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let g = &self.notify;
        for (t, d) in targets {
            let l = TargetLabels {
                target: t.name.clone(),
            };
            g.queued.get_or_create(&l).set(int(d.queued));
            g.in_flight
                .get_or_create(&l)
                .set(i64::from(d.pending.is_some()));
            g.delivered.get_or_create(&l).set(int(d.delivered));
            g.failed_attempts
                .get_or_create(&l)
                .set(int(d.failed_attempts));
            g.dropped.get_or_create(&l).set(int(d.dropped));
            g.last_success
                .get_or_create(&l)
                .set(d.last_success_ms.map_or(0, |ms| ms.div_euclid(1000)));
        }
    }

    /// One answered request.
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A failed store call of this kind.
    pub fn store_error(&self, kind: &str) {
        self.store_errors
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Corrupt records left out of a page.
    pub fn corrupt_skipped(&self, n: u64) {
        if n > 0 {
            self.corrupt_skipped.inc_by(n);
        }
    }

    /// Whether the stored-tasks gauge is older than [`STORED_GAUGE_TTL`] (and claim the
    /// refresh, so concurrent scrapes ask the store once).
    pub fn stored_gauge_is_stale(&self) -> bool {
        let mut at = self
            .stored_refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *at {
            Some(t) if t.elapsed() < STORED_GAUGE_TTL => false,
            _ => {
                *at = Some(Instant::now());
                true
            }
        }
    }

    /// Show what the store's adapter last observed: its eviction policy (the current one
    /// at 1; an earlier one's series goes away), the cause of a problem (that one 1, the
    /// others 0), and how often it restarted its connection task (the counter catches up
    /// with the adapter's own count).
    pub fn set_store_condition(&self, condition: &failed_tasks_query::StoreCondition) {
        if let Some(policy) = &condition.eviction_policy {
            // Label values come from the store, not from clients: a handful at most.
            self.eviction_policy.clear();
            self.eviction_policy
                .get_or_create(&PolicyLabels {
                    policy: policy.clone(),
                })
                .set(1);
        }
        for p in failed_tasks_query::StoreProblem::ALL {
            self.store_problem
                .get_or_create(&CauseLabels {
                    cause: p.label().to_owned(),
                })
                .set(i64::from(condition.problem == Some(p)));
        }
        let counted = self.store_restarts.get();
        if condition.connection_restarts > counted {
            self.store_restarts
                .inc_by(condition.connection_restarts - counted);
        }
    }

    /// Set the stored-tasks gauge of one category.
    pub fn set_stored(&self, category: ErrorCategory, n: u64) {
        self.stored
            .get_or_create(&CategoryLabels {
                category: category.as_str().to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
