//! Search: the listing's text filters (`q`, `pathPrefix`), which no store indexes.
//!
//! A store lists by its indexes only; a search pages through the store's listing of the
//! other filters and checks each task itself, one of two ways ([`SearchWay`]):
//! - **groups**: a text found in the pattern (normalised message) or error code of at
//!   most [`MAX_SEARCH_GROUPS`] failure groups names those groups. The listing is their
//!   failures, a k-way merge of one `signature=` page per group: O(groups × page), and
//!   `TotalTasks` is exact (the sum of the groups' totals) unless `pathPrefix` is set too.
//!   There are far fewer groups than failures; their patterns are read at most once per
//!   [`stats_cache`](FailedTaskService::with_stats_cache) period (a write through this
//!   service reads them again).
//! - **walk**: otherwise (a text only a concrete message, id or path can contain: digits,
//!   ids, paths; or no group matches; or too many do; or only `pathPrefix`), the store's
//!   listing of the other filters newest first, [`WALK_BATCH`] tasks at a time, each
//!   checked, until the page is full, the listing ends or the search budget (half the
//!   request deadline by default) is spent: then the answer is incomplete and its cursor
//!   continues the walk after the last task examined. `TotalTasks` counts this page.
//!
//! The bulk removal and retry walk the same way; the export reads page after page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use failed_tasks_domain::{
    Cursor, ErrorPattern, ErrorSignature, FailedTask, GroupQuery, ListQuery, PageLimits, PageSize,
    RetryStatus, SearchText, TaskFilter,
};
use failed_tasks_store::{FailedTaskPage, StoreError};
use futures_util::future::join_all;
use tokio::time::Instant;

use super::{FailedTaskService, QueryError};

/// The most failure groups a text may name and still be searched the groups way.
pub const MAX_SEARCH_GROUPS: usize = 16;
/// The most failure groups read to match a text against their patterns; with more, every
/// text search walks.
pub const MAX_GROUPS_READ: usize = 10_000;
/// Tasks read per store call while walking.
pub const WALK_BATCH: u32 = 500;

/// How a search found its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchWay {
    /// By the failure groups whose pattern contains the text.
    Groups,
    /// By checking each task of the other filters' listing.
    Walk,
}

impl SearchWay {
    /// The contract's name: `groups` or `walk`.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchWay::Groups => "groups",
            SearchWay::Walk => "walk",
        }
    }
}

/// A page of a search.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The tasks found, newest first; `total` as the module says.
    pub page: FailedTaskPage,
    /// How they were found.
    pub way: SearchWay,
    /// `false` when the search budget ran out before the page was full or the listing
    /// ended: `page.next_cursor` continues after the last task examined.
    pub complete: bool,
}

/// The failure groups' patterns as last read, for the groups way.
#[derive(Default)]
pub(super) struct GroupPatterns {
    kept: Mutex<Option<KeptPatterns>>,
}

struct KeptPatterns {
    at: Instant,
    generation: u64,
    /// `None`: more than [`MAX_GROUPS_READ`] groups.
    patterns: Option<Arc<Vec<ErrorPattern>>>,
}

/// What one read of the search's source gave.
struct Batch {
    tasks: Vec<(FailedTask, RetryStatus)>,
    more: bool,
    total: u64,
    skipped_corrupt: u64,
}

/// A page size of exactly `n` (at least 1).
fn page_size(n: u32) -> Result<PageSize, StoreError> {
    let n = n.max(1);
    PageLimits::new(n, n)
        .and_then(|l| PageSize::new(n, l))
        .map_err(|e| StoreError::Internal(e.to_string()))
}

impl FailedTaskService {
    /// The share of the request deadline a search walk may take by default.
    fn default_search_budget(request: Duration) -> Duration {
        request / 2
    }

    /// The same service letting a search walk read for at most `budget` before it answers
    /// an incomplete page (at least one batch is always read, so a walk always advances).
    #[must_use]
    pub fn with_search_budget(mut self, budget: Duration) -> Self {
        self.search_budget = Some(budget);
        self
    }

    fn search_budget(&self) -> Duration {
        self.search_budget
            .unwrap_or_else(|| Self::default_search_budget(self.deadlines.request))
    }

    /// One page of a listing with `q` or `pathPrefix` (see the module): which way was taken,
    /// and whether the walk was cut by its budget.
    pub async fn search_failed(&self, query: &ListQuery) -> Result<SearchPage, QueryError> {
        self.check_filter(&query.filter)?;
        let until = Instant::now() + self.search_budget();
        self.checked(self.search_page(query, until)).await
    }

    /// A page of `query` (text filters or not: without them, the store's own page), read
    /// until `until` at most (then incomplete).
    pub(super) async fn search_page(
        &self,
        query: &ListQuery,
        until: Instant,
    ) -> Result<SearchPage, StoreError> {
        let filter = &query.filter;
        let base = filter.without_search();
        let groups = match (&filter.text, &base.signature) {
            (Some(text), None) => self.matching_groups(text, &base).await?,
            _ => None,
        };
        let way = if groups.is_some() {
            SearchWay::Groups
        } else {
            SearchWay::Walk
        };
        let size = query.page_size.as_usize();
        let mut found: Vec<(FailedTask, RetryStatus)> = Vec::with_capacity(size + 1);
        let mut examined: Option<Cursor> = query.cursor.clone();
        let mut exact_total = None;
        let mut skipped_corrupt = 0;
        let mut first = true;
        let complete = loop {
            let n = if first {
                size as u32 + 1
            } else {
                WALK_BATCH.max(size as u32 + 1)
            };
            let batch = self
                .source_batch(groups.as_deref(), &base, examined.clone(), n)
                .await?;
            if first && way == SearchWay::Groups && filter.path_prefix.is_none() {
                exact_total = Some(batch.total);
            }
            first = false;
            skipped_corrupt += batch.skipped_corrupt;
            for (task, status) in batch.tasks {
                examined = Some(Cursor::after(task.sort_key()));
                let text_ok = way == SearchWay::Groups
                    || filter.text.as_ref().is_none_or(|t| t.matches(&task));
                let path_ok = filter
                    .path_prefix
                    .as_ref()
                    .is_none_or(|p| p.contains(task.codebase_path().as_str()));
                if text_ok && path_ok {
                    found.push((task, status));
                    if found.len() > size {
                        break;
                    }
                }
            }
            if found.len() > size || !batch.more {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
        };
        let next_cursor = if found.len() > size {
            found.truncate(size);
            found.last().map(|(t, _)| Cursor::after(t.sort_key()))
        } else if complete {
            None
        } else {
            examined
        };
        let total = exact_total.unwrap_or(found.len() as u64);
        let (tasks, retry) = found.into_iter().unzip();
        Ok(SearchPage {
            page: FailedTaskPage {
                total,
                tasks,
                next_cursor,
                skipped_corrupt,
                retry,
            },
            way,
            complete,
        })
    }

    /// The next `n` tasks of the search's source after `cursor`: the store's listing of
    /// `base`, or (`groups`) the merge of each group's.
    async fn source_batch(
        &self,
        groups: Option<&[ErrorSignature]>,
        base: &TaskFilter,
        cursor: Option<Cursor>,
        n: u32,
    ) -> Result<Batch, StoreError> {
        let page_size = page_size(n)?;
        let list = |filter: TaskFilter| {
            let query = ListQuery {
                filter,
                page_size,
                cursor: cursor.clone(),
            };
            async move { self.store.list(&query).await }
        };
        let pages = match groups {
            None => vec![list(base.clone()).await?],
            Some(sigs) => {
                let calls = sigs.iter().map(|s| {
                    list(TaskFilter {
                        signature: Some(s.clone()),
                        ..base.clone()
                    })
                });
                join_all(calls)
                    .await
                    .into_iter()
                    .collect::<Result<_, _>>()?
            }
        };
        let mut batch = Batch {
            tasks: Vec::new(),
            more: false,
            total: 0,
            skipped_corrupt: 0,
        };
        for page in pages {
            batch.more |= page.next_cursor.is_some();
            batch.total = batch.total.saturating_add(page.total);
            batch.skipped_corrupt += page.skipped_corrupt;
            let retry = page.retry;
            batch.tasks.extend(
                page.tasks
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (t, retry.get(i).copied().unwrap_or_default())),
            );
        }
        if groups.is_some() {
            batch.tasks.sort_by_key(|(t, _)| t.sort_key());
            if batch.tasks.len() > n as usize {
                batch.tasks.truncate(n as usize);
                batch.more = true;
            }
        }
        Ok(batch)
    }

    /// The signatures of the groups whose pattern contains `text` (and that `base`'s
    /// category and error code allow), when there are 1 to [`MAX_SEARCH_GROUPS`]; `None`
    /// (walk) otherwise, or when the store keeps no groups.
    async fn matching_groups(
        &self,
        text: &SearchText,
        base: &TaskFilter,
    ) -> Result<Option<Vec<ErrorSignature>>, StoreError> {
        let Some(patterns) = self.group_patterns().await? else {
            return Ok(None);
        };
        let matching: Vec<ErrorSignature> = patterns
            .iter()
            .filter(|p| {
                base.category.is_none_or(|c| c == p.category())
                    && base
                        .error_code
                        .as_ref()
                        .is_none_or(|c| c.as_str() == p.error_code())
                    && text.matches_pattern(p)
            })
            .map(|p| p.signature().clone())
            .collect();
        Ok((1..=MAX_SEARCH_GROUPS)
            .contains(&matching.len())
            .then_some(matching))
    }

    /// Every failure group's pattern (`None`: no groups in this store, or more than
    /// [`MAX_GROUPS_READ`]), kept for the statistics cache period until a write.
    async fn group_patterns(&self) -> Result<Option<Arc<Vec<ErrorPattern>>>, StoreError> {
        let Some(stats) = &self.stores.stats else {
            return Ok(None);
        };
        let ttl = self.stats_gate.ttl();
        let generation = self.stats_gate.generation();
        if let Ok(kept) = self.group_patterns.kept.lock() {
            if let Some(k) = kept.as_ref() {
                if k.generation == generation && k.at.elapsed() < ttl {
                    return Ok(k.patterns.clone());
                }
            }
        }
        let at = Instant::now();
        let page_size = page_size(1000)?;
        let mut query = GroupQuery {
            page_size,
            cursor: None,
        };
        let mut patterns = Vec::new();
        let read = loop {
            let page = stats.list_groups(&query).await?;
            patterns.extend(page.groups.into_iter().map(|g| g.pattern));
            if patterns.len() > MAX_GROUPS_READ {
                break None;
            }
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break Some(Arc::new(patterns)),
            }
        };
        if let Ok(mut kept) = self.group_patterns.kept.lock() {
            *kept = Some(KeptPatterns {
                at,
                generation,
                patterns: read.clone(),
            });
        }
        Ok(read)
    }
}
