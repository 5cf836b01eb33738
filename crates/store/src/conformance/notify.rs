//! The notifications capability's checks ([`NotifyStore`]): the lease fences every write,
//! outboxes keep order and their cap, a delivery's lifecycle, the walk of groups by last
//! seen.

use std::time::Duration;

use failed_tasks_domain::{ErrorCategory, ErrorSignature};

use super::{task, BASE_MS};
use crate::notify::{GroupMark, NotifyCommit, NotifyStore, Pending, Settle};
use crate::StatusStore;

const LEASE: Duration = Duration::from_secs(30);

fn sig(n: u8) -> ErrorSignature {
    ErrorSignature::parse(&format!("{n:016x}")).unwrap()
}

/// One holder at a time; a write by anyone else changes nothing; state and seen
/// signatures read back; a released lease is free at once.
pub async fn lease_fences_writes(store: &dyn NotifyStore) {
    assert!(store.notify_lease("a", LEASE).await.unwrap());
    assert!(store.notify_lease("a", LEASE).await.unwrap(), "renewal");
    assert!(!store.notify_lease("b", LEASE).await.unwrap());
    let commit = NotifyCommit {
        state: vec![("k".into(), Some("v".into())), ("gone".into(), None)],
        seen: vec![(sig(1), 1000), (sig(2), 2000)],
        forget_seen_before_ms: None,
        events: vec![("t".into(), "e1".into())],
        outbox_cap: 10,
    };
    let refused = store.notify_commit("b", &commit).await.unwrap();
    assert!(refused.lease_lost);
    let state = store.notify_state(&[sig(1)]).await.unwrap();
    assert!(
        state.values.is_empty() && state.seen == vec![None],
        "{state:?}"
    );
    assert!(store.outbox("t", 10).await.unwrap().is_empty());

    let done = store.notify_commit("a", &commit).await.unwrap();
    assert!(!done.lease_lost);
    assert_eq!(done.queued, 1);
    let state = store.notify_state(&[sig(2), sig(1), sig(3)]).await.unwrap();
    assert_eq!(state.values.get("k").map(String::as_str), Some("v"));
    assert_eq!(state.seen, vec![Some(2000), Some(1000), None]);

    // Forgetting drops what was last seen before the limit; seen times only move forward.
    let later = NotifyCommit {
        state: vec![("k".into(), None)],
        seen: vec![(sig(2), 3000), (sig(3), 900)],
        forget_seen_before_ms: Some(1500),
        outbox_cap: 10,
        ..NotifyCommit::default()
    };
    store.notify_commit("a", &later).await.unwrap();
    let older = NotifyCommit {
        seen: vec![(sig(2), 2500)],
        outbox_cap: 10,
        ..NotifyCommit::default()
    };
    store.notify_commit("a", &older).await.unwrap();
    let state = store.notify_state(&[sig(1), sig(2), sig(3)]).await.unwrap();
    assert!(state.values.is_empty(), "{state:?}");
    assert_eq!(state.seen, vec![None, Some(3000), Some(900)]);

    store.notify_release("b").await.unwrap();
    assert!(
        !store.notify_lease("b", LEASE).await.unwrap(),
        "b released nothing"
    );
    store.notify_release("a").await.unwrap();
    assert!(store.notify_lease("b", LEASE).await.unwrap());
    assert!(store.notify_commit("a", &commit).await.unwrap().lease_lost);
}

fn pending(id: &str, events: u64) -> Pending {
    Pending {
        id: id.into(),
        body: format!("{{\"Id\":\"{id}\"}}"),
        events,
        attempts: 0,
        first_ms: 1000,
        next_ms: 1000,
    }
}

/// Events wait in order up to the cap (beyond it dropped and counted); starting a delivery
/// takes the events it carries out and makes its message the one in flight; attempts
/// settle it: failed (kept, attempts counted), delivered (gone), given up (gone, its
/// events counted as dropped).
pub async fn outbox_and_delivery(store: &dyn NotifyStore) {
    assert!(store.notify_lease("h", LEASE).await.unwrap());
    let events = (0..5).map(|i| ("t".to_owned(), format!("e{i}"))).collect();
    let report = store
        .notify_commit(
            "h",
            &NotifyCommit {
                events,
                outbox_cap: 3,
                ..NotifyCommit::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.queued, 3);
    assert_eq!(report.dropped, vec!["t".to_owned(), "t".to_owned()]);
    let queued = store.outbox("t", 10).await.unwrap();
    let bodies: Vec<&str> = queued.iter().map(|e| e.body.as_str()).collect();
    assert_eq!(bodies, ["e0", "e1", "e2"]);
    assert!(queued.windows(2).all(|w| w[0].id < w[1].id), "{queued:?}");
    assert_eq!(store.outbox("t", 2).await.unwrap().len(), 2);
    assert!(store.outbox("other", 10).await.unwrap().is_empty());
    let d = store.target_delivery("t").await.unwrap();
    assert_eq!((d.queued, d.dropped, d.pending.is_none()), (3, 2, true));

    let covered: Vec<String> = queued[..2].iter().map(|e| e.id.clone()).collect();
    let msg = pending("m1", 2);
    assert!(
        !store
            .begin_delivery("x", "t", &msg, &covered)
            .await
            .unwrap(),
        "no lease"
    );
    assert!(store
        .begin_delivery("h", "t", &msg, &covered)
        .await
        .unwrap());
    assert!(
        store
            .begin_delivery("h", "t", &msg, &covered)
            .await
            .unwrap(),
        "the same message again is in flight already"
    );
    assert!(!store
        .begin_delivery("h", "t", &pending("m2", 1), &[])
        .await
        .unwrap());
    let d = store.target_delivery("t").await.unwrap();
    assert_eq!(d.queued, 1);
    assert_eq!(d.pending, Some(msg.clone()));
    assert_eq!(d.last_started_ms, Some(1000));

    let failed = Settle::Failed {
        at_ms: 2000,
        error: "HTTP 500".into(),
        retry_ms: 5000,
    };
    assert!(!store
        .settle_delivery("h", "t", "other", &failed)
        .await
        .unwrap());
    assert!(!store
        .settle_delivery("x", "t", "m1", &failed)
        .await
        .unwrap());
    assert!(store
        .settle_delivery("h", "t", "m1", &failed)
        .await
        .unwrap());
    let d = store.target_delivery("t").await.unwrap();
    let p = d.pending.clone().unwrap();
    assert_eq!((p.attempts, p.next_ms, p.body), (1, 5000, msg.body.clone()));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!((d.last_error_ms, d.failed_attempts), (Some(2000), 1));

    let ok = Settle::Delivered { at_ms: 6000 };
    assert!(store.settle_delivery("h", "t", "m1", &ok).await.unwrap());
    let d = store.target_delivery("t").await.unwrap();
    assert!(d.pending.is_none());
    assert_eq!((d.delivered, d.last_success_ms), (1, Some(6000)));
    assert!(
        !store.settle_delivery("h", "t", "m1", &ok).await.unwrap(),
        "settled once"
    );

    let rest: Vec<String> = store
        .outbox("t", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(store
        .begin_delivery("h", "t", &pending("m3", 1), &rest)
        .await
        .unwrap());
    let gave_up = Settle::GaveUp {
        at_ms: 7000,
        error: "no answer".into(),
    };
    assert!(store
        .settle_delivery("h", "t", "m3", &gave_up)
        .await
        .unwrap());
    let d = store.target_delivery("t").await.unwrap();
    assert!(d.pending.is_none() && d.queued == 0, "{d:?}");
    assert_eq!((d.dropped, d.failed_attempts, d.delivered), (3, 2, 1));
}

/// Groups come oldest last seen first, after a mark, at most `max`; a group moves up when
/// it fails again; `group` reads one.
pub async fn groups_walk_by_last_seen(tasks: &dyn StatusStore, store: &dyn NotifyStore) {
    let a = task(
        "a1",
        1000,
        ErrorCategory::DataError,
        "embedding",
        "c1",
        "E_A",
    );
    let b = task(
        "b1",
        2000,
        ErrorCategory::SystemError,
        "indexing",
        "c2",
        "E_B",
    );
    let c = task(
        "c1",
        3000,
        ErrorCategory::ServiceTimeout,
        "cleaning",
        "c3",
        "E_C",
    );
    for t in [&a, &b, &c] {
        tasks.record(t).await.unwrap();
    }
    let sig_of = |t: &failed_tasks_domain::FailedTask| ErrorSignature::of_task(t);
    let all = store.groups_after(None, i64::MAX, 10).await.unwrap();
    let sigs: Vec<ErrorSignature> = all.iter().map(|m| m.signature.clone()).collect();
    assert_eq!(sigs, vec![sig_of(&a), sig_of(&b), sig_of(&c)]);
    assert_eq!(all[0].last_seen_ms, BASE_MS + 1000);
    let after_first = store
        .groups_after(Some(all[0].clone()), i64::MAX, 1)
        .await
        .unwrap();
    assert_eq!(after_first, vec![all[1].clone()]);
    assert!(store
        .groups_after(Some(all[2].clone()), i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());

    // `a`'s signature fails again, later: its group moves after `c`'s.
    let again = task(
        "a2",
        4000,
        ErrorCategory::DataError,
        "embedding",
        "c9",
        "E_A",
    );
    assert_eq!(sig_of(&again), sig_of(&a));
    tasks.record(&again).await.unwrap();
    let until = BASE_MS + 3999;
    assert!(store
        .groups_after(Some(all[2].clone()), until, 10)
        .await
        .unwrap()
        .is_empty());
    // Up to `until`: `b`'s and `c`'s groups. `a`'s group failed last after `until`; with
    // several shards the shard of task `a` still holds its own copy of the group, last seen
    // at `a`'s failure, and may show it (the notifier keeps a signature's latest mark).
    let upto = store.groups_after(None, until, 10).await.unwrap();
    for t in [&b, &c] {
        assert_eq!(
            upto.iter().filter(|m| m.signature == sig_of(t)).count(),
            1,
            "{upto:?}"
        );
    }
    assert!(upto.iter().all(|m| m.last_seen_ms <= until), "{upto:?}");
    assert!(
        upto.iter()
            .filter(|m| m.signature == sig_of(&a))
            .all(|m| m.last_seen_ms == BASE_MS + 1000),
        "{upto:?}"
    );
    let walked = store
        .groups_after(Some(all[2].clone()), until + 1, 10)
        .await
        .unwrap();
    assert_eq!(
        walked,
        vec![GroupMark {
            last_seen_ms: BASE_MS + 4000,
            signature: sig_of(&a)
        }]
    );
    let g = store.group(&sig_of(&a)).await.unwrap().unwrap();
    assert_eq!((g.count, g.clients_affected), (2, 2));
    assert_eq!(g.sample_task_id.as_str(), "a2");
    assert_eq!(g.first_seen.unix_millis(), BASE_MS + 1000);
    assert!(store.group(&sig(7)).await.unwrap().is_none());
}
