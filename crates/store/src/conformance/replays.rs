//! The replays capability's checks ([`ReplayStore`]): a replay reads back as written,
//! listed newest first; progress is saved only while it runs; an abort ends it once; the
//! runners' lease has one holder at a time.

use std::time::Duration;

use failed_tasks_domain::{
    Cursor, GateReason, Replay, ReplayId, ReplayPace, ReplayProgress, ReplayState, SortKey,
    TaskFilter, TaskId, Timestamp,
};

use super::BASE_MS;
use crate::replay::{AbortReplay, ReplaySave, ReplayStore, SaveReplay, ScheduledRetry};

const LEASE: Duration = Duration::from_secs(30);

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + s * 1000).unwrap()
}

fn filter(pairs: &[(&str, &str)]) -> TaskFilter {
    TaskFilter::from_params(pairs.iter().copied()).unwrap()
}

/// A running replay made at second `i`.
pub fn replay(i: i64, filter: TaskFilter, pace: Option<f64>) -> Replay {
    Replay {
        id: ReplayId::new(at(i), i as u32),
        filter,
        reason: GateReason::parse(&format!("provider back, \"run\" {i} 中文")).unwrap(),
        actor: format!("ops-{i}"),
        created: at(i),
        pace: pace.map(|p| ReplayPace::new(p).unwrap()),
        state: ReplayState::Running,
        matched: 100 + i as u64,
        progress: ReplayProgress {
            cursor: None,
            visited: 0,
            scheduled: 0,
            paced_until: at(i),
        },
        finished: None,
    }
}

fn cursor(s: i64, id: &str) -> Cursor {
    Cursor::after(SortKey::new(at(s), TaskId::parse(id).unwrap()))
}

fn scheduled(ids: &[&str]) -> Vec<ScheduledRetry> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| ScheduledRetry {
            task_id: TaskId::parse(*id).unwrap(),
            attempt: i as u32 + 2,
        })
        .collect()
}

/// Replays read back as made (every field, every filter), newest first in the list, the
/// running ones oldest first; an unknown id is none.
pub async fn replays_read_back(store: &dyn ReplayStore) {
    let made = [
        replay(1, filter(&[("category", "service_timeout")]), Some(50.0)),
        replay(
            2,
            filter(&[
                ("clientId", "c 1&x=y"),
                ("since", "2025-01-24T09:00:00.123Z"),
                ("until", "2025-01-25T09:00:00Z"),
                ("retry", "final"),
                ("q", "time out"),
                ("pathPrefix", "/projects/a"),
            ]),
            Some(0.5),
        ),
        replay(3, filter(&[("errorCode", "TIMEOUT_ERROR")]), None),
    ];
    for r in &made {
        store.replay_create(r).await.unwrap();
    }
    for r in &made {
        assert_eq!(store.replay_get(&r.id).await.unwrap().as_ref(), Some(r));
    }
    assert_eq!(
        store
            .replay_get(&ReplayId::parse("nope").unwrap())
            .await
            .unwrap(),
        None
    );
    let listed = store.replay_list(10).await.unwrap();
    let newest_first: Vec<Replay> = made.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(store.replay_list(2).await.unwrap(), newest_first[..2]);
    let running = store.replay_running(10).await.unwrap();
    let ids: Vec<ReplayId> = made.iter().map(|r| r.id.clone()).collect();
    assert_eq!(running, ids);
}

/// Progress is saved while the replay runs, by the lease's holder only (position, counts,
/// retries made due, oldest first), and ends it when it says so; nothing is written after
/// it ended or was aborted; an abort ends a running replay once.
pub async fn progress_only_while_running(store: &dyn ReplayStore) {
    assert!(store.replay_lease("runner", LEASE).await.unwrap());
    let a = replay(1, filter(&[("category", "service_timeout")]), Some(50.0));
    let b = replay(2, filter(&[("taskType", "embedding")]), None);
    store.replay_create(&a).await.unwrap();
    store.replay_create(&b).await.unwrap();

    let first = ReplaySave {
        progress: ReplayProgress {
            cursor: Some(cursor(-5, "t:1 é")),
            visited: 3,
            scheduled: 2,
            paced_until: at(2),
        },
        scheduled: scheduled(&["t3", "t:1 é"]),
        finish: None,
    };
    // Not the lease's holder: nothing written.
    assert_eq!(
        store.replay_save("other", &a.id, &first).await.unwrap(),
        SaveReplay::LeaseLost
    );
    assert_eq!(store.replay_get(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        store.replay_save("runner", &a.id, &first).await.unwrap(),
        SaveReplay::Saved
    );
    let second = ReplaySave {
        progress: ReplayProgress {
            cursor: None,
            visited: 5,
            scheduled: 3,
            paced_until: at(3),
        },
        scheduled: scheduled(&["t9"]),
        finish: Some((ReplayState::Done, at(4))),
    };
    assert_eq!(
        store.replay_save("runner", &a.id, &second).await.unwrap(),
        SaveReplay::Saved
    );
    let got = store.replay_get(&a.id).await.unwrap().unwrap();
    assert_eq!(got.progress, second.progress);
    assert_eq!(got.state, ReplayState::Done);
    assert_eq!(got.finished, Some(at(4)));
    let mut want = scheduled(&["t3", "t:1 é"]);
    want.extend(scheduled(&["t9"]));
    assert_eq!(store.replay_scheduled(&a.id, 10).await.unwrap(), want);
    assert_eq!(store.replay_scheduled(&a.id, 1).await.unwrap(), want[..1]);
    assert_eq!(store.replay_running(10).await.unwrap(), vec![b.id.clone()]);

    // Ended: nothing more is written, and it cannot be aborted.
    assert_eq!(
        store.replay_save("runner", &a.id, &first).await.unwrap(),
        SaveReplay::NotRunning
    );
    assert_eq!(store.replay_get(&a.id).await.unwrap(), Some(got));
    assert_eq!(
        store.replay_abort(&a.id, at(9)).await.unwrap(),
        AbortReplay::Finished(ReplayState::Done)
    );

    // Aborted: once, and no save after it.
    let AbortReplay::Aborted(aborted) = store.replay_abort(&b.id, at(7)).await.unwrap() else {
        panic!("a running replay is aborted");
    };
    assert_eq!(aborted.state, ReplayState::Aborted);
    assert_eq!(aborted.finished, Some(at(7)));
    assert_eq!(aborted.progress, b.progress);
    assert_eq!(
        store.replay_abort(&b.id, at(8)).await.unwrap(),
        AbortReplay::Finished(ReplayState::Aborted)
    );
    assert_eq!(
        store.replay_save("runner", &b.id, &first).await.unwrap(),
        SaveReplay::NotRunning
    );
    assert_eq!(store.replay_get(&b.id).await.unwrap(), Some(*aborted));
    assert!(store.replay_scheduled(&b.id, 10).await.unwrap().is_empty());
    assert!(store.replay_running(10).await.unwrap().is_empty());

    let unknown = ReplayId::parse("unknown").unwrap();
    assert_eq!(
        store.replay_abort(&unknown, at(9)).await.unwrap(),
        AbortReplay::NotFound
    );
    assert_eq!(
        store.replay_save("runner", &unknown, &first).await.unwrap(),
        SaveReplay::NotRunning
    );
}

/// One holder of the runners' lease at a time; a released lease is free at once.
pub async fn lease_has_one_holder(store: &dyn ReplayStore) {
    assert!(store.replay_lease("a", LEASE).await.unwrap());
    assert!(store.replay_lease("a", LEASE).await.unwrap(), "renewal");
    assert!(!store.replay_lease("b", LEASE).await.unwrap());
    store.replay_release("b").await.unwrap();
    assert!(!store.replay_lease("b", LEASE).await.unwrap());
    store.replay_release("a").await.unwrap();
    assert!(store.replay_lease("b", LEASE).await.unwrap());
}
