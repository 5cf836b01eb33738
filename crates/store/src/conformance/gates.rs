//! The behaviour of retry gates every [`RetryStore`](crate::RetryStore) must show: hold,
//! limit, lapse, release, held counts, the cap, and that a hold never burns an attempt.
//! Every step names its time (`deliver_due(now, ..)`): no check waits on a clock.

use failed_tasks_domain::gate::MAX_ACTIVE_GATES;
use failed_tasks_domain::{
    ClientId, ErrorCategory, FailedTask, GateCreator, GateId, GateMode, GateReason, GateScope,
    PerSecond, RetryGate, RetryPlan, TaskId, TaskType, Timestamp,
};

use super::retries::{deliver_all, drain, task_with_retries, Both};
use super::{task, BASE_MS};
use crate::{CancelRetry, CreateGate, RetryNow, RetryQueue};

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset_ms).unwrap()
}

fn gate(id: &str, scope: GateScope, mode: GateMode, until: Option<Timestamp>) -> RetryGate {
    RetryGate {
        id: GateId::parse(id).unwrap(),
        scope,
        mode,
        reason: GateReason::parse("provider outage").unwrap(),
        created_by: GateCreator::Operator,
        since: at(0),
        until,
    }
}

fn embedding_timeouts() -> GateScope {
    GateScope {
        task_type: Some(TaskType::parse("embedding").unwrap()),
        error_category: Some(ErrorCategory::ServiceTimeout),
        ..GateScope::default()
    }
}

/// `n` tasks `{prefix}NN` of `task_type` failed with a timeout at retry count 2, their
/// attempt 3 due at +10 s.
fn due_batch(prefix: &str, task_type: &str, n: usize) -> Vec<(FailedTask, RetryPlan)> {
    (0..n)
        .map(|i| {
            let mut raw = task(
                &format!("{prefix}{i:02}"),
                i as i64,
                ErrorCategory::ServiceTimeout,
                task_type,
                "client1",
                "TIMEOUT_ERROR",
            )
            .into_parts();
            raw.retry_count = 2;
            (
                FailedTask::new(raw).unwrap(),
                RetryPlan::Retry { due: at(10_000) },
            )
        })
        .collect()
}

async fn held(store: &dyn Both, now: Timestamp) -> Vec<(String, u64)> {
    store
        .list_gates(now)
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.gate.id.to_string(), g.held))
        .collect()
}

/// A `hold` keeps due retries of its scope due (and their attempt), delivers the rest;
/// retry now, cancel and re-recording take a held retry out of the gate; releasing it
/// delivers what it held, each with the attempt it had.
pub async fn hold_and_release(store: &dyn Both, queue: &dyn RetryQueue) {
    let mut batch = due_batch("e", "embedding", 10);
    batch.extend(due_batch("i", "indexing", 5));
    store.record_planned(&batch).await.unwrap();
    let g = gate("g1", embedding_timeouts(), GateMode::Hold, None);
    assert_eq!(
        store.create_gate(&g, at(0)).await.unwrap(),
        CreateGate::Created
    );
    assert_eq!(deliver_all(store, at(20_000), 1000).await, 5);
    let got = drain(queue).await;
    assert!(got
        .iter()
        .all(|d| d.request.task_type.as_str() == "indexing"));
    assert_eq!(held(store, at(20_000)).await, vec![("g1".to_owned(), 10)]);
    let listed = store.list_gates(at(20_000)).await.unwrap();
    assert_eq!(listed[0].gate, g);
    // Nothing more while held, however late.
    assert_eq!(deliver_all(store, at(3_600_000), 1000).await, 0);
    // A held retry is still scheduled with its attempt and due time.
    let e0 = TaskId::parse("e00").unwrap();
    let d = store.retry_details(&e0).await.unwrap().unwrap();
    assert_eq!(
        d.status.next().map(|n| (n.attempt, n.due)),
        Some((3, at(10_000)))
    );
    assert!(d.waiting, "a held retry still waits");
    // Cancel takes one out of the gate; retry now makes one due now (held again next step).
    let e1 = TaskId::parse("e01").unwrap();
    assert_eq!(
        store.cancel_retry(&e1).await.unwrap(),
        CancelRetry::Cancelled { attempt: 3 }
    );
    assert_eq!(
        store.retry_now(&e0, at(3_600_000)).await.unwrap(),
        RetryNow::Scheduled { attempt: 3 }
    );
    // The same failure reported again keeps its schedule; like retry now, it leaves the
    // gate until the next step looks at it again.
    store.record_planned(&batch[2..3]).await.unwrap();
    assert_eq!(held(store, at(3_600_000)).await, vec![("g1".to_owned(), 7)]);
    assert_eq!(deliver_all(store, at(3_600_000), 1000).await, 0);
    assert_eq!(held(store, at(3_600_000)).await, vec![("g1".to_owned(), 9)]);
    // Released: everything held is delivered, each attempt 3 (a hold burns no attempt).
    assert!(store.release_gate(&g.id).await.unwrap());
    assert!(!store.release_gate(&g.id).await.unwrap());
    assert!(held(store, at(3_600_000)).await.is_empty());
    assert_eq!(deliver_all(store, at(3_600_000), 4).await, 9);
    let got = drain(queue).await;
    assert_eq!(got.len(), 9);
    assert!(got.iter().all(|d| d.request.attempt == 3));
    assert!(got.iter().all(|d| d.request.task_id != e1));
}

/// A `limit` delivers no more than its rate over any time from its creation (its bucket
/// starts empty; with shards each shard has its share), keeps the rest parked and counted,
/// and delivers every one in the end; retries outside its scope are not paced.
pub async fn limit_paces(store: &dyn Both, queue: &dyn RetryQueue) {
    let mut batch = due_batch("e", "embedding", 60);
    batch.extend(due_batch("i", "indexing", 20));
    store.record_planned(&batch).await.unwrap();
    let rate = 10.0;
    let g = gate(
        "g1",
        embedding_timeouts(),
        GateMode::Limit(PerSecond::new(rate).unwrap()),
        None,
    );
    store.create_gate(&g, at(0)).await.unwrap();
    // Due at +10 s: by then 100 tokens were earned, but a bucket holds one second's worth.
    let mut embedding: u32 = 0;
    let mut indexing = 0;
    let mut t = 10_000;
    while t <= 40_000 {
        deliver_all(store, at(t), 1000).await;
        for d in drain(queue).await {
            match d.request.task_type.as_str() {
                "embedding" => embedding += 1,
                _ => indexing += 1,
            }
        }
        // Never more than the tokens earned since the gate was made (a bucket holds one
        // second's worth, at least one token a shard, so by far fewer get through at first).
        let bound = rate * t as f64 / 1000.0;
        assert!(
            f64::from(embedding) <= bound,
            "{embedding} delivered by +{t} ms, more than {bound}"
        );
        if t == 10_000 {
            assert!(embedding <= 16, "a bucket holds one second's worth");
            assert_eq!(indexing, 20, "retries outside the scope are not paced");
            let h = held(store, at(t)).await;
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].1, 60 - u64::from(embedding), "the rest waits, counted");
        }
        t += 500;
    }
    assert_eq!(embedding, 60, "every retry is delivered in the end");
    assert_eq!(held(store, at(t)).await, vec![("g1".to_owned(), 0)]);
}

/// A gate with `Until` lapses by itself: listed before, not after, and what it held is
/// delivered by the first step after it.
pub async fn lapse(store: &dyn Both, queue: &dyn RetryQueue) {
    store
        .record_planned(&due_batch("e", "embedding", 4))
        .await
        .unwrap();
    let g = gate("g1", GateScope::default(), GateMode::Hold, Some(at(30_000)));
    store.create_gate(&g, at(0)).await.unwrap();
    assert_eq!(deliver_all(store, at(20_000), 1000).await, 0);
    assert_eq!(held(store, at(29_999)).await, vec![("g1".to_owned(), 4)]);
    assert!(held(store, at(30_000)).await.is_empty());
    assert_eq!(deliver_all(store, at(30_000), 1000).await, 4);
    assert_eq!(drain(queue).await.len(), 4);
    assert!(!store.release_gate(&g.id).await.unwrap());
}

/// At most [`MAX_ACTIVE_GATES`] gates; a lapsed one does not count. Gates that match
/// nothing change nothing; the oldest matching `hold` is the one that holds.
pub async fn cap_and_order(store: &dyn Both, queue: &dyn RetryQueue) {
    for i in 0..MAX_ACTIVE_GATES {
        let scope = GateScope {
            client_id: Some(ClientId::parse(format!("other{i}")).unwrap()),
            ..GateScope::default()
        };
        let until = (i == 0).then(|| at(5_000));
        let g = gate(&format!("g{i:04}"), scope, GateMode::Hold, until);
        assert_eq!(
            store.create_gate(&g, at(0)).await.unwrap(),
            CreateGate::Created
        );
    }
    let one_more = gate("gx", embedding_timeouts(), GateMode::Hold, None);
    assert_eq!(
        store.create_gate(&one_more, at(1_000)).await.unwrap(),
        CreateGate::TooMany
    );
    assert_eq!(
        store.list_gates(at(1_000)).await.unwrap().len(),
        MAX_ACTIVE_GATES
    );
    // g0000 lapsed at +5 s: room for one.
    assert_eq!(
        store.create_gate(&one_more, at(6_000)).await.unwrap(),
        CreateGate::Created
    );
    let later = gate("gy", GateScope::default(), GateMode::Hold, None);
    assert_eq!(
        store.create_gate(&later, at(6_000)).await.unwrap(),
        CreateGate::TooMany
    );
    for i in 1..MAX_ACTIVE_GATES {
        let id = GateId::parse(&format!("g{i:04}")).unwrap();
        assert!(store.release_gate(&id).await.unwrap());
    }
    assert!(store.create_gate(&later, at(6_000)).await.unwrap() == CreateGate::Created);
    let t = task_with_retries("t1", 0, ErrorCategory::ServiceTimeout, 0);
    store
        .record_planned(&[(t, RetryPlan::Retry { due: at(7_000) })])
        .await
        .unwrap();
    assert_eq!(deliver_all(store, at(8_000), 1000).await, 0);
    // Both match; `gx` is older (smaller id) and holds it.
    let h = held(store, at(8_000)).await;
    assert_eq!(h, vec![("gx".to_owned(), 1), ("gy".to_owned(), 0)]);
    assert!(store.release_gate(&one_more.id).await.unwrap());
    assert_eq!(deliver_all(store, at(8_000), 1000).await, 0);
    assert_eq!(held(store, at(8_000)).await, vec![("gy".to_owned(), 1)]);
    assert!(store.release_gate(&later.id).await.unwrap());
    assert_eq!(deliver_all(store, at(8_000), 1000).await, 1);
    assert_eq!(drain(queue).await.len(), 1);
}

/// Releasing a `hold` under a `limit` of the same retries: what the hold kept goes out at
/// the limit's pace, not all at once, and all of it in the end.
pub async fn released_under_a_limit(store: &dyn Both, queue: &dyn RetryQueue) {
    store
        .record_planned(&due_batch("e", "embedding", 40))
        .await
        .unwrap();
    let hold = gate("g1", embedding_timeouts(), GateMode::Hold, None);
    let rate = 10.0;
    let limit = gate(
        "g2",
        GateScope::default(),
        GateMode::Limit(PerSecond::new(rate).unwrap()),
        None,
    );
    store.create_gate(&hold, at(0)).await.unwrap();
    store.create_gate(&limit, at(0)).await.unwrap();
    assert_eq!(deliver_all(store, at(20_000), 1000).await, 0);
    assert_eq!(
        held(store, at(20_000)).await,
        vec![("g1".to_owned(), 40), ("g2".to_owned(), 0)],
        "the hold, the oldest gate, keeps them"
    );
    assert!(store.release_gate(&hold.id).await.unwrap());
    // At +20 s the limit's bucket is full (one second's worth, at least one a shard).
    let first = deliver_all(store, at(20_000), 1000).await;
    assert!((1..=16).contains(&first), "{first} delivered at once");
    let mut delivered = first;
    let mut t = 20_000;
    while delivered < 40 {
        t += 500;
        assert!(t <= 80_000, "only {delivered} delivered by +{t} ms");
        delivered += deliver_all(store, at(t), 1000).await;
        let earned = rate * (t - 20_000) as f64 / 1000.0 + 16.0;
        assert!(delivered as f64 <= earned, "{delivered} by +{t} ms");
    }
    assert_eq!(delivered, 40);
    assert_eq!(drain(queue).await.len(), 40);
    assert_eq!(held(store, at(t)).await, vec![("g2".to_owned(), 0)]);
}

/// Passes let a few retries through a `hold` (the breaker's canaries): at most the passes
/// (with shards, `ceil(passes / shards)` on each shard), each with the attempt it had; then
/// the gate holds again. Passes are only for a `hold` that exists; 0 takes them back.
pub async fn passes_let_canaries_through(store: &dyn Both, queue: &dyn RetryQueue) {
    store
        .record_planned(&due_batch("e", "embedding", 10))
        .await
        .unwrap();
    let g = gate("g1", embedding_timeouts(), GateMode::Hold, None);
    store.create_gate(&g, at(0)).await.unwrap();
    assert_eq!(deliver_all(store, at(20_000), 1000).await, 0);
    assert_eq!(held(store, at(20_000)).await, vec![("g1".to_owned(), 10)]);
    assert!(store.pass_gate(&g.id, 3).await.unwrap());
    let passed = deliver_all(store, at(21_000), 1000).await;
    assert!((1..=10).contains(&passed), "{passed} passed");
    let got = drain(queue).await;
    assert_eq!(got.len() as u64, passed);
    assert!(got.iter().all(|d| d.request.attempt == 3));
    // Spent: it holds again, however late.
    assert_eq!(deliver_all(store, at(3_600_000), 1000).await, 0);
    assert_eq!(
        held(store, at(3_600_000)).await,
        vec![("g1".to_owned(), 10 - passed)]
    );
    // Passes given and taken back let nothing through.
    assert!(store.pass_gate(&g.id, 5).await.unwrap());
    assert!(store.pass_gate(&g.id, 0).await.unwrap());
    assert_eq!(deliver_all(store, at(3_600_000), 1000).await, 0);
    // Only for an active hold.
    let limit = gate(
        "g2",
        embedding_timeouts(),
        GateMode::Limit(PerSecond::new(1.0).unwrap()),
        None,
    );
    store.create_gate(&limit, at(0)).await.unwrap();
    assert!(!store.pass_gate(&limit.id, 3).await.unwrap());
    assert!(!store
        .pass_gate(&GateId::parse("nope").unwrap(), 3)
        .await
        .unwrap());
    assert!(store.release_gate(&limit.id).await.unwrap());
    assert!(store.release_gate(&g.id).await.unwrap());
    assert_eq!(deliver_all(store, at(3_600_000), 1000).await, 10 - passed);
}
