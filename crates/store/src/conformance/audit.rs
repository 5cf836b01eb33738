//! The audit capability's checks ([`AuditStore`]): newest first, every filter, pages that
//! continue where they ended. The cap is checked by each adapter's own tests (it is a
//! setting of the store).

use failed_tasks_domain::Timestamp;

use super::BASE_MS;
use crate::audit::{AuditAction, AuditEntry, AuditQuery, AuditStore};

fn entry(i: i64, actor: &str, action: AuditAction) -> AuditEntry {
    AuditEntry {
        time: Timestamp::from_unix_millis(BASE_MS + i * 1000).unwrap(),
        actor: actor.to_owned(),
        action,
        target: format!("task-{i}"),
        reason: (i % 2 == 0).then(|| format!("reason {i}, \"quoted\"\nand 中文")),
        count: i as u64,
        request_id: Some(format!("req-{i}")),
    }
}

fn query(page_size: u32) -> AuditQuery {
    AuditQuery::newest(page_size)
}

/// All entries of `query`, page after page; the number of pages.
async fn walk(store: &dyn AuditStore, mut q: AuditQuery) -> (Vec<AuditEntry>, usize) {
    let mut all = Vec::new();
    for pages in 1..=1000 {
        let page = store.audit_list(&q).await.unwrap();
        assert!(page.entries.len() <= q.page_size as usize);
        all.extend(page.entries);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return (all, pages),
        }
    }
    panic!("more than 1000 pages");
}

/// Entries come back as written, newest first, filtered by actor, action and time, paged
/// without loss or repeat.
pub async fn entries_read_back_newest_first(store: &dyn AuditStore) {
    let written: Vec<AuditEntry> = (0..12)
        .map(|i| {
            let actor = if i % 3 == 0 { "alice" } else { "bob" };
            let action = AuditAction::ALL[i as usize % AuditAction::ALL.len()];
            entry(i, actor, action)
        })
        .collect();
    for e in &written {
        store.audit_append(e).await.unwrap();
    }
    let newest_first: Vec<AuditEntry> = written.iter().rev().cloned().collect();
    let (all, pages) = walk(store, query(5)).await;
    assert_eq!(all, newest_first);
    assert!(pages >= 3, "{pages} pages of 5 for 12 entries");
    let (alice, _) = walk(
        store,
        AuditQuery {
            actor: Some("alice".into()),
            ..query(2)
        },
    )
    .await;
    let want: Vec<AuditEntry> = newest_first
        .iter()
        .filter(|e| e.actor == "alice")
        .cloned()
        .collect();
    assert_eq!(alice, want);
    let (resolves, _) = walk(
        store,
        AuditQuery {
            action: Some(AuditAction::Resolve),
            ..query(10)
        },
    )
    .await;
    let want: Vec<AuditEntry> = newest_first
        .iter()
        .filter(|e| e.action == AuditAction::Resolve)
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(resolves, want);
    let (window, _) = walk(
        store,
        AuditQuery {
            since: Some(written[3].time),
            until: Some(written[7].time),
            ..query(3)
        },
    )
    .await;
    let want: Vec<AuditEntry> = newest_first[4..=8].to_vec();
    assert_eq!(window, want);
    let (none, pages) = walk(
        store,
        AuditQuery {
            actor: Some("nobody".into()),
            ..query(3)
        },
    )
    .await;
    assert!(none.is_empty() && pages == 1);
}
