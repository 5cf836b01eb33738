//! Phase 9 (`--only-notify`): what notifications cost the recording path.
//! `records_per_s_notify_ratio` is the rate of recording failures through the use cases
//! (batches of 500, the breaker counting retries that failed again, as the server does) with
//! two notification targets configured and their notifier running against a loopback
//! receiver that answers 200, over the same rate without targets; the two are alternated
//! twice on fresh key prefixes and each side's best is compared (the ±5 % target of the
//! notifications issue).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use failed_tasks::notify::TargetConfig;
use failed_tasks::{FailedTasks, NotifyConfig, RedisConfig};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::bench::Bench;
use crate::data;

/// Tasks recorded per measured run.
const TASKS: u64 = 30_000;
/// Tasks per recording call (as an embedder batches them).
const BATCH: u64 = 500;

/// A loopback HTTP receiver answering 200 to everything; counts the requests.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((format!("http://{addr}/hook"), seen))
}

/// Record `TASKS` failures through a fresh facade on `prefix`, with `targets`; the rate. With
/// targets, the notifier sends as soon as it can (no settling, no pacing: the most work it
/// can do alongside) and the run waits (at most 10 s, not timed) until the receiver took a
/// message, so the targets were really served.
async fn record_rate(
    url: &str,
    prefix: &str,
    targets: Vec<TargetConfig>,
    seen: &AtomicU64,
) -> anyhow::Result<f64> {
    let with_targets = !targets.is_empty();
    let before = seen.load(Ordering::Relaxed);
    let failures = FailedTasks::builder()
        .redis(RedisConfig {
            url: url.to_owned(),
            key_prefix: prefix.to_owned(),
            ..RedisConfig::default()
        })
        .notify(NotifyConfig {
            targets,
            settle: Duration::ZERO,
            min_interval: Duration::ZERO,
            ..NotifyConfig::default()
        })
        .start()
        .await
        .map_err(|e| anyhow!("starting the facade: {e}"))?;
    // Failing from now on (3 ms apart, within the clock-skew allowance): failures after
    // the notifier started, so their groups are news to it.
    let base_ms = crate::bench::now_ms();
    let start = Instant::now();
    let mut next = 0;
    while next < TASKS {
        let end = (next + BATCH).min(TASKS);
        let batch = (next..end)
            .map(|i| data::task(i, base_ms))
            .collect::<anyhow::Result<Vec<_>>>()?;
        failures
            .record_failures(&batch)
            .await
            .map_err(|e| anyhow!("recording tasks {next}..{end}: {e}"))?;
        next = end;
    }
    let took = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_targets && seen.load(Ordering::Relaxed) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    failures.shutdown().await;
    Ok(TASKS as f64 / took.as_secs_f64().max(1e-9))
}

impl Bench {
    /// Phase 9: `records_per_s_notify_ratio` (see the module).
    pub(crate) async fn notify_cost(&mut self) -> anyhow::Result<()> {
        println!("phase 9: recording with and without notification targets");
        let (hook, seen) = receiver().await.context("starting the receiver")?;
        let targets = || {
            ["ops", "chat"]
                .into_iter()
                .map(|name| TargetConfig {
                    name: name.to_owned(),
                    url: hook.clone(),
                    ..TargetConfig::default()
                })
                .collect::<Vec<_>>()
        };
        let (mut without, mut with) = (0f64, 0f64);
        for round in 0..2 {
            let a = record_rate(
                &self.url0,
                &format!("{{bench-notify-off-{round}}}"),
                Vec::new(),
                &seen,
            )
            .await?;
            let b = record_rate(
                &self.url0,
                &format!("{{bench-notify-on-{round}}}"),
                targets(),
                &seen,
            )
            .await?;
            println!("  round {round}: {a:.0}/s without targets, {b:.0}/s with two");
            without = without.max(a);
            with = with.max(b);
        }
        let ratio = with / without.max(1e-9);
        self.f.set("records_per_s_notify_off", without);
        self.f.set("records_per_s_notify_on", with);
        self.f.set("records_per_s_notify_ratio", ratio);
        self.f.set(
            "notify_messages_received",
            seen.load(Ordering::Relaxed) as f64,
        );
        println!(
            "  best of two: {without:.0}/s without, {with:.0}/s with two targets (ratio {ratio:.3}); the receiver took {} messages",
            seen.load(Ordering::Relaxed)
        );
        Ok(())
    }
}
