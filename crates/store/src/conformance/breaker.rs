//! The breaker capability's checks ([`BreakerStore`]): outcomes summed per key over whole
//! seconds (both ends included), states kept per key, one lease holder at a time.

use std::time::Duration;

use failed_tasks_domain::{
    BreakerKey, BreakerPhase, BreakerState, ErrorCategory, GateId, OutcomeCounts, TaskType,
    Timestamp,
};

use super::BASE_MS;
use crate::breaker::BreakerStore;

fn key(task_type: &str, category: ErrorCategory) -> BreakerKey {
    BreakerKey {
        task_type: TaskType::parse(task_type).unwrap(),
        category,
    }
}

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset_ms).unwrap()
}

fn counts(failed_again: u64, resolved: u64) -> OutcomeCounts {
    OutcomeCounts {
        failed_again,
        resolved,
    }
}

/// Outcomes add up per key and second; a read sums the seconds of its range, both ends
/// included, and leaves out keys without any.
pub async fn outcomes_add_up_per_second(store: &dyn BreakerStore) {
    let emb = key("embedding", ErrorCategory::ServiceTimeout);
    let idx = key("indexing", ErrorCategory::ResourceExhausted);
    store
        .add_outcomes(
            at(0),
            &[(emb.clone(), counts(2, 0)), (idx.clone(), counts(0, 1))],
        )
        .await
        .unwrap();
    store
        .add_outcomes(at(999), &[(emb.clone(), counts(1, 1))])
        .await
        .unwrap();
    store
        .add_outcomes(at(5_000), &[(emb.clone(), counts(4, 0))])
        .await
        .unwrap();
    store.add_outcomes(at(6_000), &[]).await.unwrap();
    assert_eq!(
        store.outcomes(at(0), at(4_999)).await.unwrap(),
        vec![(emb.clone(), counts(3, 1)), (idx.clone(), counts(0, 1))]
    );
    assert_eq!(
        store.outcomes(at(500), at(5_000)).await.unwrap(),
        vec![(emb.clone(), counts(7, 1)), (idx, counts(0, 1))]
    );
    assert_eq!(
        store.outcomes(at(1_000), at(9_000)).await.unwrap(),
        vec![(emb, counts(4, 0))]
    );
    assert!(store
        .outcomes(at(6_000), at(60_000))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .outcomes(at(9_000), at(1_000))
        .await
        .unwrap()
        .is_empty());
}

/// States are kept per key, replaced, and forgotten; one lease holder at a time.
pub async fn states_and_lease(store: &dyn BreakerStore) {
    assert!(store.breaker_states().await.unwrap().is_empty());
    let state = |k: BreakerKey, phase| BreakerState {
        key: k,
        phase,
        gate: GateId::parse("gbreaker1").unwrap(),
        opened: at(0),
        phase_since: at(1_000),
        cooldown: Duration::from_secs(60),
        opens: 1,
        trigger: counts(20, 1),
    };
    let emb = key("embedding", ErrorCategory::ServiceTimeout);
    let idx = key("indexing", ErrorCategory::SystemError);
    store
        .put_breaker_state(&state(idx.clone(), BreakerPhase::Open))
        .await
        .unwrap();
    store
        .put_breaker_state(&state(emb.clone(), BreakerPhase::Open))
        .await
        .unwrap();
    store
        .put_breaker_state(&state(emb.clone(), BreakerPhase::HalfOpen))
        .await
        .unwrap();
    assert_eq!(
        store.breaker_states().await.unwrap(),
        vec![
            state(emb.clone(), BreakerPhase::HalfOpen),
            state(idx.clone(), BreakerPhase::Open)
        ]
    );
    store.remove_breaker_state(&idx).await.unwrap();
    store.remove_breaker_state(&idx).await.unwrap();
    assert_eq!(
        store.breaker_states().await.unwrap(),
        vec![state(emb, BreakerPhase::HalfOpen)]
    );

    let lease = Duration::from_secs(30);
    assert!(store.breaker_lease("a", lease).await.unwrap());
    assert!(store.breaker_lease("a", lease).await.unwrap(), "renewal");
    assert!(!store.breaker_lease("b", lease).await.unwrap());
    // A lease that ran out is free for another.
    assert!(store
        .breaker_lease("a", Duration::from_millis(20))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.breaker_lease("b", lease).await.unwrap());
    assert!(!store.breaker_lease("a", lease).await.unwrap());
}
