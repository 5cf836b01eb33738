//! The retry figures: `retries_moved_per_s` (one scheduler moving a backlog of due retries
//! into the stream), the same with 100 retry gates none of which matches
//! (`retries_moved_per_s_100_gates`), `retry_lag_p99_ms` (due → in the stream, at 1,000 due
//! per second, with the scheduler loop as the server runs it) and `limit_gate_rate_error`
//! (one `limit` gate of 1,000/s over a backlog, the server's scheduler loop, the delivered
//! rate over 10 s). All on database 2, flushed after each.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use failed_tasks_domain::{
    ClientId, FailedTask, GateCreator, GateId, GateMode, GateReason, GateScope, PerSecond,
    RetryGate, RetryPlan, TaskType, Timestamp,
};
use failed_tasks_query::{Deadlines, FailedTaskService, RetryScheduler, SchedulerConfig};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::{RetryStore, Stores};
use fred::types::Value;

use crate::bench::{connect_store, now_ms};
use crate::data;
use crate::raw::Raw;
use crate::report::{Figures, Latency};

const PREFIX: &str = "{bench-retries}";

/// Record tasks `from..to` (fail times from `base_ms`), each with a retry due at `due(i)`,
/// in batches of 500, four in flight.
async fn schedule(
    store: &RedisStore,
    from: u64,
    to: u64,
    base_ms: i64,
    due: impl Fn(u64) -> i64,
) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    let mut next = from;
    while next < to || !set.is_empty() {
        while next < to && set.len() < 4 {
            let end = (next + 500).min(to);
            let planned: Vec<(FailedTask, RetryPlan)> = (next..end)
                .map(|i| {
                    let t = data::task(i, base_ms)?;
                    let due = Timestamp::saturating_from_unix_millis(due(i));
                    Ok((t, RetryPlan::Retry { due }))
                })
                .collect::<anyhow::Result<_>>()?;
            let store = store.clone();
            set.spawn(async move {
                store
                    .record_planned(&planned)
                    .await
                    .map_err(|e| anyhow!("scheduling: {e}"))
                    .map(|_| ())
            });
            next = end;
        }
        if let Some(r) = set.join_next().await {
            r??;
        }
    }
    Ok(())
}

async fn stream_len(raw: &Raw, key: &str) -> anyhow::Result<u64> {
    match raw.run("XLEN", vec![key.into()]).await? {
        Value::Integer(n) => Ok(u64::try_from(n).unwrap_or(0)),
        other => bail!("XLEN answered {other:?}"),
    }
}

/// What scheduling costs the write path: batches of 500 recorded with their retry plans
/// (as the server does) and without any plan, alternated batch by batch into two stores so
/// both see the same machine; `n` tasks each.
pub async fn record_cost(url: &str, n: u64, f: &mut Figures) -> anyhow::Result<()> {
    let raw = Raw::connect(url).await?;
    let planned_store = connect_store(url, "{bench-planned}").await?;
    let plain_store = connect_store(url, "{bench-plain}").await?;
    let policy = failed_tasks_domain::RetryPolicy::default();
    let mut jitter = failed_tasks_domain::JitterRng::new(7);
    let base = now_ms() - 3_600_000;
    let (mut planned_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
    let mut from = 0;
    while from < n {
        let to = (from + 500).min(n);
        let tasks = data::tasks(from, to, base)?;
        let planned: Vec<(FailedTask, RetryPlan)> = tasks
            .iter()
            .map(|t| (t.clone(), RetryPlan::of(&policy, t, jitter.next_unit())))
            .collect();
        let start = Instant::now();
        planned_store
            .record_planned(&planned)
            .await
            .map_err(|e| anyhow!("record_planned: {e}"))?;
        planned_time += start.elapsed();
        let start = Instant::now();
        failed_tasks_store::StatusStore::record_batch(&plain_store, &tasks)
            .await
            .map_err(|e| anyhow!("record_batch: {e}"))?;
        plain_time += start.elapsed();
        from = to;
    }
    let planned_rate = n as f64 / planned_time.as_secs_f64();
    let plain_rate = n as f64 / plain_time.as_secs_f64();
    f.set("records_per_s_planned_one_batch", planned_rate);
    f.set("records_per_s_unplanned_one_batch", plain_rate);
    f.set("scheduling_write_cost", plain_rate / planned_rate);
    eprintln!(
        "  one batch of 500 at a time: {planned_rate:.0}/s with retry plans, {plain_rate:.0}/s without ({:.2}x)",
        plain_rate / planned_rate
    );
    raw.run("FLUSHDB", vec![]).await?;
    Ok(())
}

/// A gate made now by an operator.
fn gate(i: u32, scope: GateScope, mode: GateMode) -> anyhow::Result<RetryGate> {
    let now = Timestamp::saturating_from_unix_millis(now_ms());
    Ok(RetryGate {
        id: GateId::new(now, i),
        scope,
        mode,
        reason: GateReason::parse("bench")?,
        created_by: GateCreator::Operator,
        since: now,
        until: None,
    })
}

/// 100 `hold` gates that match none of the bench's retries: half by a client, half by a task
/// type and a client (each retry looks at the gates of its own values only).
async fn non_matching_gates(store: &RedisStore) -> anyhow::Result<()> {
    let now = Timestamp::saturating_from_unix_millis(now_ms());
    for i in 0..100u32 {
        let mut scope = GateScope {
            client_id: Some(ClientId::parse(format!("nobody-{i:03}"))?),
            ..GateScope::default()
        };
        if i % 2 == 1 {
            scope.task_type = Some(TaskType::parse("embedding")?);
        }
        store
            .create_gate(&gate(i, scope, GateMode::Hold)?, now)
            .await
            .map_err(|e| anyhow!("create_gate: {e}"))?;
    }
    Ok(())
}

/// `retries_moved_per_s`: a backlog of `n` due retries, moved by one scheduler calling
/// `deliver_due` (1,000 per script call) until none is left; with `gates`, under 100 gates
/// none of which matches (`retries_moved_per_s_100_gates`).
pub async fn moved_per_s(url: &str, n: u64, gates: bool, f: &mut Figures) -> anyhow::Result<()> {
    let raw = Raw::connect(url).await?;
    let store = connect_store(url, PREFIX).await?;
    let base = now_ms() - 3_600_000;
    schedule(&store, 0, n, base, |i| base + i as i64).await?;
    if gates {
        non_matching_gates(&store).await?;
    }
    let now = Timestamp::saturating_from_unix_millis(now_ms());
    let start = Instant::now();
    let mut moved = 0;
    loop {
        let r = store
            .deliver_due(now, 1_000)
            .await
            .map_err(|e| anyhow!("deliver_due: {e}"))?;
        moved += r.moved;
        if !r.more {
            break;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let len = stream_len(&raw, &store.config().retry_stream()).await?;
    if moved != n || len != n {
        bail!("moved {moved} and the stream holds {len} of {n} due retries");
    }
    let rate = n as f64 / took;
    if gates {
        f.set("retries_moved_per_s_100_gates", rate);
        eprintln!(
            "  with 100 gates matching none: moved {n} due retries in {took:.2} s ({rate:.0}/s)"
        );
    } else {
        f.set("retries_moved_per_s", rate);
        f.set("retries_moved_n", n as f64);
        eprintln!("  moved {n} due retries into the stream in {took:.2} s ({rate:.0}/s)");
    }
    raw.run("FLUSHDB", vec![]).await?;
    Ok(())
}

/// `retry_lag_p99_ms`: retries falling due at 1,000 per second for `secs` seconds, the
/// scheduler loop of the server (default settings) moving them; the lag of each is the time
/// of its `XADD` (its stream id, Redis's clock on this machine) minus its due time.
pub async fn lag(url: &str, secs: u64, f: &mut Figures) -> anyhow::Result<()> {
    let raw = Raw::connect(url).await?;
    let store = connect_store(url, PREFIX).await?;
    let n = secs * 1_000;
    // Recorded ahead (fail times now), due from 3 s from now at one per millisecond.
    let base = now_ms();
    let first_due = base + 3_000;
    schedule(&store, 0, n, base, |i| first_due + i as i64).await?;
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default());
    let config = SchedulerConfig::default();
    let scheduler = RetryScheduler::new(service, config).spawn();
    let key = store.config().retry_stream();
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    while stream_len(&raw, &key).await? < n {
        if Instant::now() > deadline {
            bail!("the scheduler did not deliver {n} retries in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scheduler.stop();
    let mut lags = Vec::with_capacity(n as usize);
    let mut start = "-".to_owned();
    loop {
        let page = raw
            .run(
                "XRANGE",
                vec![
                    key.as_str().into(),
                    start.as_str().into(),
                    "+".into(),
                    "COUNT".into(),
                    5_000i64.into(),
                ],
            )
            .await?;
        let Value::Array(entries) = page else {
            bail!("XRANGE answered {page:?}")
        };
        if entries.is_empty() {
            break;
        }
        for e in entries {
            let Value::Array(parts) = e else { continue };
            let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
                continue;
            };
            let id = id.as_string().unwrap_or_default();
            let added: i64 = id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .ok_or_else(|| anyhow!("stream id {id}"))?;
            let due = fields
                .chunks(2)
                .find(|kv| kv[0].as_str().as_deref() == Some("DueAt"))
                .and_then(|kv| kv[1].as_string())
                .ok_or_else(|| anyhow!("entry {id} has no DueAt"))?;
            let due = Timestamp::parse_rfc3339("DueAt", &due)?.unix_millis();
            lags.push(Duration::from_millis(
                u64::try_from(added - due).unwrap_or(0),
            ));
            start = format!("({id}");
        }
    }
    if lags.len() as u64 != n {
        bail!("read {} entries of {n}", lags.len());
    }
    let l = Latency::of(lags);
    f.set("retry_lag_p50_ms", l.p50_ms);
    f.set("retry_lag_p99_ms", l.p99_ms);
    f.set("retry_lag_n", n as f64);
    eprintln!(
        "  retry lag at 1,000 due/s over {secs} s, scheduler every {:?}: p50 {:.0} ms, p99 {:.0} ms",
        config.interval, l.p50_ms, l.p99_ms
    );
    raw.run("FLUSHDB", vec![]).await?;
    Ok(())
}

/// `limit_gate_rate_error`: a backlog of due retries larger than the gate lets through, one
/// `limit` gate of 1,000/s on all of them, the server's scheduler loop (default settings)
/// delivering; the deliveries whose stream id falls in the 10 s from 2 s after the gate was
/// made, against 10,000.
pub async fn limit_rate(url: &str, f: &mut Figures) -> anyhow::Result<()> {
    const RATE: f64 = 1_000.0;
    const SECS: i64 = 10;
    let raw = Raw::connect(url).await?;
    let store = connect_store(url, PREFIX).await?;
    let n = 16_000;
    let base = now_ms() - 3_600_000;
    schedule(&store, 0, n, base, |i| base + i as i64).await?;
    let made = now_ms();
    let g = gate(
        0,
        GateScope::default(),
        GateMode::Limit(PerSecond::new(RATE)?),
    )?;
    store
        .create_gate(&g, Timestamp::saturating_from_unix_millis(made))
        .await
        .map_err(|e| anyhow!("create_gate: {e}"))?;
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default());
    let scheduler = RetryScheduler::new(service, SchedulerConfig::default()).spawn();
    let (from, to) = (made + 2_000, made + 2_000 + SECS * 1_000);
    tokio::time::sleep(Duration::from_millis(u64::try_from(to - made + 500)?)).await;
    scheduler.stop();
    let key = store.config().retry_stream();
    let in_window = raw
        .run(
            "XRANGE",
            vec![
                key.as_str().into(),
                format!("{from}-0").into(),
                format!("{}-0", to - 1).into(),
            ],
        )
        .await?;
    let Value::Array(entries) = in_window else {
        bail!("XRANGE answered {in_window:?}")
    };
    let delivered = entries.len() as f64;
    let rate = delivered / SECS as f64;
    let error = (rate - RATE).abs() / RATE;
    f.set("limit_gate_rate_per_s", rate);
    f.set("limit_gate_rate_error", error);
    eprintln!(
        "  one limit gate of {RATE:.0}/s: {delivered:.0} delivered in {SECS} s ({rate:.0}/s, {:.1} % off)",
        error * 100.0
    );
    raw.run("FLUSHDB", vec![]).await?;
    Ok(())
}
