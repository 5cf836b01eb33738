//! Notifications end to end: the facade's notifier, its steps driven here with explicit
//! times (no background loop), delivering to a real HTTP receiver on a loopback port of
//! this process.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use failed_tasks::notify::sign::verify;
use failed_tasks::notify::{Secret, TargetConfig};
use failed_tasks::{
    AlertThresholds, FailedTask, FailedTasks, NewFailedTask, Notifier, NotifyConfig, RedisConfig,
    ServiceConfig, Timestamp,
};
use failed_tasks_testkit::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

const SECRET: &str = "whsec-test-secret";

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Receipt {
    headers: HashMap<String, String>,
    body: Bytes,
    status: u16,
}

impl Receipt {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn id(&self) -> String {
        self.json()["Id"].as_str().unwrap().to_owned()
    }
}

/// A webhook receiver: answers the queued statuses in turn (200 when none is left).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Receipt>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver {
            url: format!("http://{addr}/hooks/secret-path"),
            ..Receiver::default()
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = r.clone();
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = r.answers.lock().unwrap().pop_front().unwrap_or(200);
                            r.got.lock().unwrap().push(Receipt {
                                headers,
                                body,
                                status,
                            });
                            let mut answer = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *answer.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(answer)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        receiver
    }

    fn answer(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    fn got(&self) -> Vec<Receipt> {
        self.got.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Receipt> {
        self.got().into_iter().filter(|r| r.status == 200).collect()
    }
}

fn target(name: &str, url: &str) -> TargetConfig {
    TargetConfig {
        name: name.into(),
        url: url.into(),
        secret: Secret::new(SECRET),
        ..TargetConfig::default()
    }
}

/// Settings that let a test step at will: no settling, no rate limit, quick retries.
fn config(targets: Vec<TargetConfig>) -> NotifyConfig {
    NotifyConfig {
        targets,
        public_url: Some("https://failures.example/".into()),
        settle: Duration::ZERO,
        min_interval: Duration::ZERO,
        retry_base: Duration::from_millis(100),
        alert_resolve_after: Duration::ZERO,
        ..NotifyConfig::default()
    }
}

async fn memory_with(notify: NotifyConfig, service: ServiceConfig) -> FailedTasks {
    FailedTasks::builder()
        .service(service)
        .notify(notify)
        .without_notify_loop()
        .start()
        .await
        .unwrap()
}

fn failure(id: &str, code: &str, message: &str, at: Timestamp) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: "client1".into(),
        start_time: at,
        fail_time: at,
        error_code: code.into(),
        error_message: message.into(),
        ..NewFailedTask::default()
    })
    .unwrap()
}

fn later(t: Timestamp, ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(t.unix_millis() + ms).unwrap()
}

async fn step(n: &Notifier, at: Timestamp) -> failed_tasks::StepReport {
    tokio::time::timeout(Duration::from_secs(30), n.step(at))
        .await
        .expect("a step ends within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_and_ids_are_unique() {
    let receiver = Receiver::start().await;
    let failures = memory_with(
        config(vec![target("ops", &receiver.url)]),
        ServiceConfig::default(),
    )
    .await;
    let n = failures.notifier().unwrap();
    let t0 = Timestamp::now();
    step(n, t0).await;
    for i in 0..3 {
        let at = later(t0, i * 1000 + 1);
        let f = failure(&format!("t{i}"), &format!("E_{i}"), "it broke", at);
        failures.record_failure(&f).await.unwrap();
        step(n, later(at, 1)).await;
    }
    let got = receiver.accepted();
    assert_eq!(got.len(), 3, "{got:?}");
    let mut ids = HashSet::new();
    for r in &got {
        let header = &r.headers["x-failedtasks-signature"];
        let t: i64 = header[2..header.find(',').unwrap()].parse().unwrap();
        assert!(
            verify(SECRET.as_bytes(), header, &r.body, t, 300),
            "{header}"
        );
        assert!(!verify(b"wrong", header, &r.body, t, 300));
        let body = r.json();
        assert_eq!(body["Event"], "group.new");
        assert_eq!(r.headers["x-failedtasks-id"], body["Id"]);
        let sig = body["Details"]["Signature"].as_str().unwrap();
        assert_eq!(
            body["Link"].as_str().unwrap(),
            format!("https://failures.example/ui/#/failures?signature={sig}")
        );
        assert_eq!(body["Details"]["Scope"]["TaskType"], "embedding");
        assert!(ids.insert(r.id()), "a repeated id");
    }
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_message_on_the_third_try() {
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 500]);
    let failures = memory_with(
        config(vec![target("ops", &receiver.url)]),
        ServiceConfig::default(),
    )
    .await;
    let n = failures.notifier().unwrap();
    let t0 = Timestamp::now();
    step(n, t0).await;
    failures
        .record_failure(&failure("t1", "E", "down", later(t0, 1)))
        .await
        .unwrap();
    let mut at = later(t0, 2);
    for _ in 0..3 {
        step(n, at).await;
        at = later(at, 60_000); // past any backoff of the first attempts
    }
    let got = receiver.got();
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert!(got
        .iter()
        .all(|r| r.id() == got[0].id() && r.body == got[0].body));
    let status = failures.notifications().await.unwrap();
    let (_, d) = &status[0];
    assert_eq!((d.delivered, d.failed_attempts, d.queued), (1, 2, 0));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    step(n, at).await;
    assert_eq!(receiver.got().len(), 3, "nothing more to send");
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_new_signatures_arrives_as_a_handful_of_messages_with_the_totals() {
    let receiver = Receiver::start().await;
    let mut ops = target("ops", &receiver.url);
    ops.events = vec!["group.new".into()]; // (the storm also fires alerts)
    let mut notify = config(vec![ops]);
    notify.min_interval = Duration::from_secs(10);
    let failures = memory_with(notify, ServiceConfig::default()).await;
    let n = failures.notifier().unwrap();
    let t0 = Timestamp::now();
    step(n, t0).await;
    // 1,000 signatures never seen, failing within one minute.
    let storm: Vec<FailedTask> = (0..1000)
        .map(|i| {
            failure(
                &format!("s{i}"),
                &format!("E_{i}"),
                "quota exceeded",
                later(t0, 1 + i * 50),
            )
        })
        .collect();
    failures.record_failures(&storm).await.unwrap();
    let mut at = later(t0, 60_000);
    for _ in 0..12 {
        step(n, at).await;
        at = later(at, 10_000);
    }
    let got = receiver.accepted();
    assert!(got.len() <= 5, "{} messages", got.len());
    assert_eq!(got.len(), receiver.got().len(), "every message accepted");
    let mut events = 0;
    let mut ids = HashSet::new();
    for r in &got {
        let body = r.json();
        assert_eq!(body["Event"], "group.new");
        if body["Details"]["Digest"] == true {
            events += body["Details"]["Count"].as_u64().unwrap();
            assert!(body["Details"]["Events"].as_array().unwrap().len() <= 20);
            for id in body["Details"]["Ids"].as_array().unwrap() {
                assert!(ids.insert(id.as_str().unwrap().to_owned()));
            }
            assert_eq!(
                body["Link"].as_str().unwrap(),
                "https://failures.example/ui/#/groups"
            );
        } else {
            events += 1;
            assert!(ids.insert(r.id()));
        }
    }
    assert_eq!(events, 1000);
    assert_eq!(ids.len(), 1000);
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_fires_then_stops_is_sent_firing_then_resolved_once_each() {
    let receiver = Receiver::start().await;
    let mut ops = target("ops", &receiver.url);
    ops.events = vec!["alert.firing".into(), "alert.resolved".into()];
    let service = ServiceConfig {
        alert_thresholds: AlertThresholds {
            category_max: 3,
            ..AlertThresholds::default()
        },
        stats_cache_ttl: Duration::ZERO,
        ..ServiceConfig::default()
    };
    let failures = memory_with(config(vec![ops]), service).await;
    let n = failures.notifier().unwrap();
    let t0 = Timestamp::now();
    let burst: Vec<FailedTask> = (0..5)
        .map(|i| failure(&format!("a{i}"), "PERMISSION_DENIED", "no", t0))
        .collect();
    failures.record_failures(&burst).await.unwrap();
    // Fires, fires still, stops (the window has moved past the burst), stays stopped.
    for minutes in [0, 1, 120, 121] {
        step(n, later(t0, minutes * 60_000)).await;
    }
    let kinds: Vec<(String, String)> = receiver
        .accepted()
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["Event"].as_str().unwrap().to_owned(),
                b["Details"]["Rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = |e: &str| (e.to_owned(), "category_threshold".to_owned());
    assert_eq!(kinds, [want("alert.firing"), want("alert.resolved")]);
    let firing = receiver.accepted()[0].json();
    assert_eq!(firing["Level"], "warning");
    assert_eq!(firing["Details"]["Subject"], "authorization");
    assert_eq!(firing["Details"]["Scope"]["ErrorCategory"], "authorization");
    assert!(firing["Link"]
        .as_str()
        .unwrap()
        .starts_with("https://failures.example/ui/#/failures?category=authorization&since="));
    failures.shutdown().await;
}

/// Slack's incoming webhooks take `text` (the fallback) and `blocks`: at most 50, each a
/// known type; a section's text and a context's elements are text objects (`mrkdwn` or
/// `plain_text`) of at most 3,000 characters, a context at most 10 elements; `&`, `<` and
/// `>` in data are escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_format_has_the_shape_slack_documents() {
    let receiver = Receiver::start().await;
    let mut chat = target("chat", &receiver.url);
    chat.format = Some("slack".into());
    chat.secret = None;
    let failures = memory_with(config(vec![chat]), ServiceConfig::default()).await;
    let n = failures.notifier().unwrap();
    let t0 = Timestamp::now();
    step(n, t0).await;
    let f = failure(
        "x1",
        "PARSE_ERROR",
        "bad <script> & \"quotes\"",
        later(t0, 1),
    );
    failures.record_failure(&f).await.unwrap();
    step(n, later(t0, 2)).await;
    let got = receiver.accepted();
    assert_eq!(got.len(), 1);
    assert!(!got[0].headers.contains_key("x-failedtasks-signature"));
    let body = got[0].json();
    let text = body["text"].as_str().unwrap();
    assert!(!text.is_empty() && text.chars().count() <= 3000);
    let blocks = body["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    let text_object = |o: &Value| {
        assert!(
            ["mrkdwn", "plain_text"].contains(&o["type"].as_str().unwrap()),
            "{o}"
        );
        let t = o["text"].as_str().unwrap();
        assert!(!t.is_empty() && t.chars().count() <= 3000);
        t.to_owned()
    };
    let mut all = String::new();
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "section" => all.push_str(&text_object(&b["text"])),
            "context" => {
                let elements = b["elements"].as_array().unwrap();
                assert!(!elements.is_empty() && elements.len() <= 10);
                for e in elements {
                    all.push_str(&text_object(e));
                }
            }
            other => panic!("unexpected block type {other}"),
        }
    }
    assert!(all.contains("&lt;script&gt; &amp;"), "{all}");
    assert!(!all.contains("<script>"), "{all}");
    assert!(all.contains("|Open in the dashboard>"), "{all}");
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_are_refused_at_start_naming_the_key() {
    let mut bad = target("ops", "ftp://hooks.example/TOPSECRET");
    bad.secret = Secret::new("TOPSECRET");
    let e = FailedTasks::builder()
        .notify(config(vec![bad]))
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("notify_targets[0] (ops).url"), "{e}");
    assert!(!e.contains("TOPSECRET"), "{e}");
    let mut unknown = target("ops", "https://hooks.example/x");
    unknown.events = vec!["group.old".into()];
    let e = FailedTasks::builder()
        .notify(config(vec![unknown]))
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("notify_targets[0] (ops).events"), "{e}");
}

/// Messages queued while the server restarts are delivered after it, by the next process;
/// none twice except where the receiver failed the first try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_messages_queued_across_a_restart_are_delivered_after_it_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let open = || async {
        FailedTasks::builder()
            .redis(RedisConfig {
                url: redis.url(),
                ..RedisConfig::default()
            })
            .notify(config(vec![target("ops", &receiver.url)]))
            .without_notify_loop()
            .start()
            .await
            .unwrap()
    };
    let first = open().await;
    let n1 = first.notifier().unwrap().clone();
    let t0 = Timestamp::now();
    step(&n1, t0).await;
    // The first message fails once; the second is queued behind it.
    receiver.answer(&[500]);
    first
        .record_failure(&failure("r1", "E_ONE", "one", later(t0, 1)))
        .await
        .unwrap();
    step(&n1, later(t0, 2)).await;
    first
        .record_failure(&failure("r2", "E_TWO", "two", later(t0, 3)))
        .await
        .unwrap();
    step(&n1, later(t0, 4)).await;
    assert_eq!(receiver.got().len(), 1);

    // A second replica waits for the lease while the first holds it.
    let second = open().await;
    let n2 = second.notifier().unwrap().clone();
    assert!(step(&n2, later(t0, 5)).await.locked_out);
    first.shutdown().await; // the restart: the lease is given up

    let mut at = later(t0, 120_000);
    for _ in 0..4 {
        step(&n2, at).await;
        at = later(at, 1000);
    }
    let got = receiver.got();
    let accepted: Vec<String> = receiver.accepted().iter().map(Receipt::id).collect();
    assert_eq!(accepted.len(), 2, "{got:?}");
    let unique: HashSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), 2, "an id delivered twice: {accepted:?}");
    // The failed first try and its retry are the same message.
    assert_eq!(got[0].status, 500);
    assert_eq!(got[0].id(), accepted[0]);
    let codes: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| {
            r.json()["Details"]["ErrorCode"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(codes, ["E_ONE", "E_TWO"]);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_gates_made_and_released_are_notified_once() {
    use failed_tasks::domain::{GateCreator, GateMode, GateReason, GateScope, TaskType};
    let receiver = Receiver::start().await;
    let mut ops = target("ops", &receiver.url);
    ops.events = vec!["gate.created".into(), "gate.released".into()];
    let failures = memory_with(config(vec![ops]), ServiceConfig::default()).await;
    let n = failures.notifier().unwrap();
    let request = |reason: &str| failed_tasks::query::GateRequest {
        scope: GateScope {
            task_type: Some(TaskType::parse("embedding").unwrap()),
            ..GateScope::default()
        },
        mode: GateMode::Hold,
        reason: GateReason::parse(reason).unwrap(),
        until: None,
        created_by: GateCreator::Operator,
    };
    let t0 = Timestamp::now();
    // A gate made before the notifier's first step is taken as known: no event.
    let old = failures
        .create_gate(request("there before"), t0)
        .await
        .unwrap()
        .unwrap();
    step(n, t0).await;
    assert!(receiver.got().is_empty());
    let gate = failures
        .create_gate(request("provider outage"), later(t0, 1))
        .await
        .unwrap()
        .unwrap();
    step(n, later(t0, 2)).await;
    step(n, later(t0, 3)).await; // nothing new: nothing sent again
    let got = receiver.accepted();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["Event"], "gate.created");
    assert_eq!(body["Level"], "warning");
    assert_eq!(body["Details"]["GateId"], gate.id.as_str());
    assert_eq!(body["Details"]["Mode"], "hold");
    assert_eq!(body["Details"]["Reason"], "provider outage");
    assert_eq!(body["Details"]["Scope"]["TaskType"], "embedding");
    assert_eq!(
        body["Summary"],
        "Retries of TaskType=embedding held by operator: provider outage"
    );
    assert_eq!(body["Link"], "https://failures.example/ui/#/overview");
    assert!(failures.release_gate(&gate.id).await.unwrap());
    assert!(failures.release_gate(&old.id).await.unwrap());
    step(n, later(t0, 4)).await;
    // Both in one step: one digest of the two.
    let got = receiver.accepted();
    assert_eq!(got.len(), 2, "{got:?}");
    let digest = got[1].json();
    assert_eq!(digest["Event"], "gate.released");
    assert_eq!(digest["Summary"], "2 retry gates released");
    assert_eq!(digest["Details"]["Count"], 2);
    let mut released: Vec<String> = digest["Details"]["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Details"]["GateId"].as_str().unwrap().to_owned())
        .collect();
    released.sort();
    let mut want = vec![gate.id.to_string(), old.id.to_string()];
    want.sort();
    assert_eq!(released, want);
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_breakers_opened_and_closed_are_notified_once() {
    use failed_tasks::domain::BreakerConfig;
    use failed_tasks::query::{RetryBreaker, Transition};
    let receiver = Receiver::start().await;
    let mut ops = target("ops", &receiver.url);
    ops.events = vec!["breaker.opened".into(), "breaker.closed".into()];
    let service = ServiceConfig {
        breaker: BreakerConfig {
            min_retries: 2,
            ..BreakerConfig::default()
        },
        ..ServiceConfig::default()
    };
    // No scheduler, so no decider loop: the test steps the decider itself.
    let failures = FailedTasks::builder()
        .service(service)
        .notify(config(vec![ops]))
        .without_notify_loop()
        .without_scheduler()
        .start()
        .await
        .unwrap();
    let n = failures.notifier().unwrap();
    let decider = RetryBreaker::new(failures.service().clone(), "test-decider");
    let t0 = Timestamp::now();
    step(n, t0).await;
    // Three retries of `embedding` failing again with a timeout: the breaker opens.
    let again: Vec<FailedTask> = (0..3)
        .map(|i| {
            FailedTask::new(NewFailedTask {
                task_id: format!("again-{i}"),
                task_type: "embedding".into(),
                client_id: "client1".into(),
                start_time: t0,
                fail_time: t0,
                error_code: "TIMEOUT_ERROR".into(),
                error_message: "timed out".into(),
                retry_count: 1,
                ..NewFailedTask::default()
            })
            .unwrap()
        })
        .collect();
    failures.record_failures(&again).await.unwrap();
    // The decider counts outcomes by the second: its steps are whole seconds apart.
    let report = decider.step(later(t0, 1000)).await.unwrap();
    assert!(
        matches!(report.transitions.as_slice(), [Transition::Opened(_)]),
        "{report:?}"
    );
    let gate = failures.breaker_states().await.unwrap()[0].gate.clone();
    step(n, later(t0, 1100)).await;
    step(n, later(t0, 1200)).await; // still open: nothing sent again
    let got = receiver.accepted();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["Event"], "breaker.opened");
    assert_eq!(body["Level"], "warning");
    let d = &body["Details"];
    assert_eq!(d["TaskType"], "embedding");
    assert_eq!(d["ErrorCategory"], "service_timeout");
    assert_eq!(d["GateId"], gate.as_str());
    assert_eq!(d["FailedAgain"], 3);
    assert_eq!(d["Outcomes"], 3);
    assert_eq!(d["Opens"], 1);
    assert_eq!(d["CooldownSeconds"], 60);
    assert_eq!(d["Scope"]["TaskType"], "embedding");
    assert_eq!(body["Link"], "https://failures.example/ui/#/overview");
    // An operator releases its gate: the decider closes it, and that is sent once.
    assert!(failures.release_gate(&gate).await.unwrap());
    let report = decider.step(later(t0, 2000)).await.unwrap();
    assert!(
        matches!(report.transitions.as_slice(), [Transition::Closed(_)]),
        "{report:?}"
    );
    step(n, later(t0, 2100)).await;
    step(n, later(t0, 2200)).await;
    let got = receiver.accepted();
    assert_eq!(got.len(), 2, "{got:?}");
    let body = got[1].json();
    assert_eq!(body["Event"], "breaker.closed");
    assert_eq!(body["Level"], "info");
    assert_eq!(body["Details"]["GateId"], gate.as_str());
    assert_eq!(
        body["Summary"],
        "Circuit breaker closed for TaskType=embedding, ErrorCategory=service_timeout: \
         its retries go to the workers again"
    );
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_done_are_notified_once() {
    use failed_tasks::domain::GateReason;
    use failed_tasks::query::ReplayRequest;
    let receiver = Receiver::start().await;
    let mut ops = target("ops", &receiver.url);
    ops.events = vec!["replay.done".into()];
    let failures = memory_with(config(vec![ops]), ServiceConfig::default()).await;
    let n = failures.notifier().unwrap();
    let request = |reason: &str| ReplayRequest {
        filter: failed_tasks::TaskFilter::from_params([("clientId", "c1")]).unwrap(),
        reason: GateReason::parse(reason).unwrap(),
        actor: "ops".to_owned(),
        pace: None,
    };
    let t0 = Timestamp::now();
    // A replay that ended before the notifier's first step: no event.
    failures
        .record_done_replay(request("before"), 2, 2, later(t0, -1_000))
        .await
        .unwrap();
    step(n, t0).await;
    assert!(receiver.got().is_empty());
    let id = failures
        .record_done_replay(request("provider back"), 5, 4, later(t0, 1_000))
        .await
        .unwrap()
        .unwrap();
    step(n, later(t0, 2_000)).await;
    step(n, later(t0, 3_000)).await; // nothing new: nothing sent again
    let got = receiver.accepted();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["Event"], "replay.done");
    assert_eq!(body["Level"], "info");
    assert_eq!(body["Details"]["ReplayId"], id.as_str());
    assert_eq!(body["Details"]["Scheduled"], 4);
    assert_eq!(body["Details"]["Visited"], 5);
    assert_eq!(body["Details"]["Reason"], "provider back");
    assert_eq!(body["Details"]["Filters"]["clientId"], "c1");
    assert_eq!(body["Link"], "https://failures.example/ui/#/replays");
    failures.shutdown().await;
}
