//! The failed-files capability ([`FilesStore`]): files stored, paged and counted exactly,
//! replaced when the task is recorded again, gone whenever the task leaves.

use failed_tasks_domain::{
    ErrorCode, FilesCursor, FilesQuery, NewFailedFile, PageLimits, PageSize, TaskFiles, TaskId,
    TaskSuccess, Timestamp,
};

use super::{task, BASE_MS};
use crate::{FilesStore, RetryStore, StatusStore};
use failed_tasks_domain::ErrorCategory;

/// `n` files of a task under `dir`, three error codes (every seventh `B`, every eleventh
/// `C`, else `A`), listed in reverse path order.
pub fn files_of(dir: &str, n: usize) -> TaskFiles {
    let raw: Vec<NewFailedFile> = (0..n)
        .rev()
        .map(|i| NewFailedFile {
            path: format!("{dir}/module_{}/file_{i:05}.rs", i % 13),
            operation: ["add", "modify", "delete"][i % 3].into(),
            error_code: if i % 7 == 0 {
                "B"
            } else if i % 11 == 0 {
                "C"
            } else {
                "A"
            }
            .into(),
            error_message: format!("embedding failed ({})", i % 4),
        })
        .collect();
    TaskFiles::new(Some(n as u64 + 5), Some(raw), 10_000, "")
        .expect("conformance files are valid")
        .expect("files given")
}

fn id(s: &str) -> TaskId {
    TaskId::parse(s).unwrap()
}

/// Every page of `id`'s files with `code`, in order, as paths; and the first page's counts.
async fn walk_files(
    store: &dyn FilesStore,
    id: &TaskId,
    code: Option<&str>,
) -> (Vec<String>, Vec<(String, u64)>, u64) {
    let limits = PageLimits::new(100, 1000).unwrap();
    let mut query = FilesQuery {
        page_size: PageSize::new(97, limits).unwrap(),
        after: None,
        error_code: code.map(|c| ErrorCode::parse(c).unwrap()),
    };
    let files = store.files(id).await.unwrap().expect("files stored");
    let mut paths = Vec::new();
    let mut counts = Vec::new();
    let mut matched = 0;
    loop {
        let page = files.page(&query);
        if query.after.is_none() {
            counts = page
                .by_error_code
                .iter()
                .map(|(c, n)| (c.as_str().to_owned(), *n))
                .collect();
            matched = page.matched;
        }
        assert!(page.files.len() <= 97);
        paths.extend(page.files.iter().map(|f| f.path.as_str().to_owned()));
        match page.next_cursor {
            Some(c) => query.after = Some(FilesCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    (paths, counts, matched)
}

/// Stored, paged and counted exactly; refused for an unknown task; replaced (and first
/// dropped) when the task is recorded again; gone when the task is removed, and not back
/// when it is recorded anew.
pub async fn stored_paged_and_replaced(tasks: &dyn StatusStore, store: &dyn FilesStore) {
    let t1 = task(
        "files-1",
        0,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c1",
        "E",
    );
    assert!(!store
        .put_files(&id("files-1"), &files_of("x", 3))
        .await
        .unwrap());
    assert_eq!(store.files(&id("files-1")).await.unwrap(), None);
    tasks.record(&t1).await.unwrap();
    let files = files_of("src", 1000);
    assert!(store.put_files(t1.task_id(), &files).await.unwrap());
    let back = store.files(t1.task_id()).await.unwrap().unwrap();
    assert_eq!(back, files);
    assert_eq!(back.failed_files(), 1005);

    let mut want: Vec<String> = files
        .files()
        .unwrap()
        .iter()
        .map(|f| f.path.as_str().to_owned())
        .collect();
    want.sort();
    let (paths, counts, matched) = walk_files(store, t1.task_id(), None).await;
    assert_eq!(paths, want);
    assert_eq!(matched, 1000);
    let b = (0..1000).filter(|i| i % 7 == 0).count() as u64;
    let c = (0..1000).filter(|i| i % 7 != 0 && i % 11 == 0).count() as u64;
    assert_eq!(
        counts,
        [
            ("A".to_owned(), 1000 - b - c),
            ("B".to_owned(), b),
            ("C".to_owned(), c)
        ]
    );
    let (paths, _, matched) = walk_files(store, t1.task_id(), Some("C")).await;
    assert_eq!((paths.len() as u64, matched), (c, c));
    assert!(paths.windows(2).all(|w| w[0] < w[1]));

    // Recorded again: the failure is replaced whole, its files with it.
    tasks.record(&t1).await.unwrap();
    assert_eq!(store.files(t1.task_id()).await.unwrap(), None);
    let other = files_of("lib", 10);
    assert!(store.put_files(t1.task_id(), &other).await.unwrap());
    assert_eq!(store.files(t1.task_id()).await.unwrap().unwrap(), other);
    let count_only = TaskFiles::new(Some(42), None, 10, "").unwrap().unwrap();
    assert!(store.put_files(t1.task_id(), &count_only).await.unwrap());
    assert_eq!(
        store.files(t1.task_id()).await.unwrap().unwrap(),
        count_only
    );

    // Another task's files are its own.
    let t2 = task(
        "files-2",
        5,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c2",
        "E",
    );
    tasks.record(&t2).await.unwrap();
    assert_eq!(store.files(t2.task_id()).await.unwrap(), None);

    assert!(tasks.remove(t1.task_id()).await.unwrap());
    assert_eq!(store.files(t1.task_id()).await.unwrap(), None);
    tasks.record(&t1).await.unwrap();
    assert_eq!(store.files(t1.task_id()).await.unwrap(), None);
}

/// Gone when the task is resolved or superseded.
pub async fn gone_when_resolved_or_superseded(
    tasks: &dyn StatusStore,
    retries: &dyn RetryStore,
    store: &dyn FilesStore,
) {
    let t1 = task(
        "files-r1",
        0,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c1",
        "E",
    );
    let t2 = task(
        "files-r2",
        10,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c2",
        "E",
    );
    let t3 = task(
        "files-r3",
        20,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c2",
        "E",
    );
    for t in [&t1, &t2, &t3] {
        tasks.record(t).await.unwrap();
        assert!(store
            .put_files(t.task_id(), &files_of("src", 20))
            .await
            .unwrap());
    }
    let at = Timestamp::from_unix_millis(BASE_MS + 60_000).unwrap();
    retries.resolve(t1.task_id(), at).await.unwrap();
    assert_eq!(store.files(t1.task_id()).await.unwrap(), None);
    let success = TaskSuccess::new(
        t2.task_type().clone(),
        t2.client_id().clone(),
        t2.codebase_path().clone(),
        Timestamp::from_unix_millis(BASE_MS + 15).unwrap(),
    )
    .unwrap();
    assert_eq!(retries.supersede(&success).await.unwrap(), 1);
    assert_eq!(store.files(t2.task_id()).await.unwrap(), None);
    // A failure after the success keeps its files.
    assert_eq!(
        store.files(t3.task_id()).await.unwrap().unwrap(),
        files_of("src", 20)
    );
}
