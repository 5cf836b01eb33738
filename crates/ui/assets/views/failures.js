// Failures: the listing, newest first, with every filter of the API (the search box `q` and
// `pathPrefix` included), cursor paging, the export of the current filters and the bulk
// actions. State in the URL: #/failures?category=..&q=..&cursor=..&prev=..&pageSize=..
//
// `prev` is the stack of the cursors of the pages between the first page and this one,
// joined by '.', which a base64url cursor never contains; so Previous works from a shared
// link too. A `cursor` without `prev` is the second page.

import { h, replace } from '../dom.js';
import { t, category, CATEGORIES } from '../i18n.js';
import { time, count, toLocalInput, fromLocalInput } from '../format.js';
import { features } from '../api.js';
import { scopeOfFilters, holdRetries } from '../gates.js';

/** The listing's filters, as the API names them (`retry` on servers with retries). */
export const FILTERS = ['q', 'pathPrefix', 'category', 'taskType', 'clientId', 'errorCode', 'since', 'until', 'signature', 'retry'];
const RETRY_STATES = ['scheduled', 'final', 'none'];
/** Parallel single requests of an action on a selection. */
const PARALLEL = 4;

/** Run `action(id)` for every id, a few at a time; resolves to the results and the first
 *  error other than 404 (a task already gone). */
export async function eachOf(ids, action) {
  const results = [];
  let failure = null;
  const queue = ids.slice();
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      try {
        results.push(await action(id));
      } catch (e) {
        if (e.status !== 404 && !failure) failure = e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, ids.length) }, worker));
  return { results, failure };
}

/** The notice after retries: how many were made due now, how many were already delivered. */
export function retriedText(retried, delivered) {
  return delivered ? t('done.retriedSome', { n: count(retried), m: count(delivered) }) : t('done.retried', { n: count(retried) });
}
const PAGE_SIZES = ['25', '50', '100', '200'];
const DEFAULT_PAGE_SIZE = '50';
const MAX_PREV = 100;

function filtersOf(params) {
  const out = {};
  for (const key of FILTERS) {
    const v = params.get(key);
    if (v) out[key] = v;
  }
  return out;
}

function prevStack(params) {
  return params.get('prev') ? params.get('prev').split('.').filter(Boolean) : [];
}

/** A coloured category badge. */
export function categoryBadge(name) {
  return h('span', { class: ['badge', `cat-${CATEGORIES.includes(name) ? name : 'unknown'}`], title: name }, category(name));
}

export function mount(ctx) {
  const { params } = ctx;
  const filters = filtersOf(params);
  const pageSize = PAGE_SIZES.includes(params.get('pageSize')) ? params.get('pageSize') : DEFAULT_PAGE_SIZE;
  const cursor = params.get('cursor') || '';
  const prev = prevStack(params);
  const selected = new Set();

  const state = (over) => ({ ...filters, pageSize: pageSize === DEFAULT_PAGE_SIZE ? '' : pageSize, ...over });

  // ---- the filter form -----------------------------------------------------------------
  const field = (key, input) => h('label', { class: 'field' }, h('span', {}, t(`filter.${key}`)), input);
  const text = (key) => h('input', { type: 'text', id: `f-${key}`, name: key, value: filters[key] || '', autocomplete: 'off', spellcheck: 'false' });
  const dateTime = (key) => h('input', { type: 'datetime-local', id: `f-${key}`, name: key, step: '1', value: filters[key] ? toLocalInput(filters[key]) : '' });
  const categorySelect = h('select', { id: 'f-category', name: 'category' },
    h('option', { value: '' }, t('common.all')),
    CATEGORIES.map((c) => h('option', { value: c, selected: filters.category === c }, category(c))));
  const sizeSelect = h('select', { id: 'f-pageSize', name: 'pageSize' },
    PAGE_SIZES.map((n) => h('option', { value: n, selected: n === pageSize }, n)));
  const retryField = () => field('retry', h('select', { id: 'f-retry', name: 'retry' },
    h('option', { value: '' }, t('common.all')),
    RETRY_STATES.map((r) => h('option', { value: r, selected: filters.retry === r }, t(`retry.${r}`)))));
  const sizeField = h('label', { class: 'field' }, h('span', {}, t('common.pageSize')), sizeSelect);
  const search = h('input', { type: 'search', id: 'f-q', name: 'q', value: filters.q || '', maxlength: '200', autocomplete: 'off', spellcheck: 'false', placeholder: t('filter.qHint') });
  const form = h('form', { class: 'filters', id: 'filters', on: { submit: apply } },
    h('label', { class: 'field search' }, h('span', {}, t('filter.q')), search),
    field('pathPrefix', text('pathPrefix')),
    field('category', categorySelect),
    field('taskType', text('taskType')),
    field('clientId', text('clientId')),
    field('errorCode', text('errorCode')),
    field('since', dateTime('since')),
    field('until', dateTime('until')),
    field('signature', text('signature')),
    features.retries || filters.retry ? retryField() : null,
    sizeField,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', id: 'apply-filters' }, t('common.apply')),
      h('button', { type: 'button', id: 'clear-filters', on: { click: () => ctx.navigate('failures', {}) } }, t('common.clear'))));
  replace(ctx.controls, form);

  function apply(event) {
    event.preventDefault();
    const next = {};
    for (const key of FILTERS) {
      const el = form.elements[key];
      if (!el) continue;
      const v = el.type === 'datetime-local' ? fromLocalInput(el.value) : el.value.trim();
      if (v) next[key] = v;
    }
    const size = sizeSelect.value;
    ctx.navigate('failures', { ...next, pageSize: size === DEFAULT_PAGE_SIZE ? '' : size });
  }

  // ---- the page ------------------------------------------------------------------------
  async function load() {
    const page = await ctx.api.list({ ...filters, pageSize, cursor }, ctx.signal);
    render(page);
  }

  function render(page) {
    // A server with retries: offer the retry filter (known once its first tasks came).
    if (features.retries && !form.elements.retry) form.insertBefore(retryField(), sizeField);
    const tasks = page.Tasks || [];
    const total = page.TotalTasks;
    // A search that walked counts only its page: the total is not known.
    const walked = page.Search === 'walk';
    const shownTotal = walked ? '?' : count(total);
    const canAct = ctx.canAct();
    const hasRetry = tasks.some((task) => 'NextRetryAt' in task);
    for (const id of [...selected]) if (!tasks.some((task) => task.TaskId === id)) selected.delete(id);

    const pageNo = cursor ? prev.length + 2 : 1;
    const from = tasks.length ? (pageNo - 1) * Number(pageSize) + 1 : 0;
    const summary = h('p', { class: 'summary', id: 'total' },
      walked
        ? h('strong', { id: 'total-count', dataset: { count: String(total), found: 'page' } }, t('failures.foundOnPage', { n: count(tasks.length) }))
        : h('strong', { id: 'total-count', dataset: { count: String(total) } }, t('failures.total', { n: count(total) })),
      tasks.length && !walked ? ` · ${t('failures.range', { from: count(from), to: count(from + tasks.length - 1), n: count(total) })}` : '',
      page.Search ? h('span', { class: 'search-way', id: 'search-way', dataset: { way: page.Search } }, ` · ${t(`failures.search.${page.Search}`)}`) : null,
      exportButtons());
    const incomplete = page.Complete === false
      ? h('p', { class: 'notice incomplete', id: 'search-incomplete', role: 'status' }, t('failures.incomplete'))
      : null;

    if (!tasks.length) {
      const empty = h('div', { class: 'empty', id: 'empty' },
        h('p', {}, Object.keys(filters).length || cursor ? t('failures.empty') : t('failures.emptyAll')));
      replace(ctx.data, summary, incomplete, empty, pager(page.NextCursor || null, pageNo));
      return;
    }

    const bulk = canAct ? bulkBar(shownTotal) : null;
    // Selecting updates the checkboxes and the bulk buttons in place (no re-render).
    const selectAll = canAct
      ? h('input', { type: 'checkbox', id: 'select-all', 'aria-label': t('failures.selectAll'), checked: tasks.every((x) => selected.has(x.TaskId)), on: { change: (e) => {
        for (const x of tasks) { if (e.target.checked) selected.add(x.TaskId); else selected.delete(x.TaskId); }
        for (const box of ctx.data.querySelectorAll('.row-select')) box.checked = e.target.checked;
        updateBulk();
      } } })
      : null;
    const head = h('tr', {},
      canAct ? h('th', { class: 'select' }, selectAll) : null,
      ['FailTime', 'TaskId', 'TaskType', 'ClientId', 'ErrorCategory', 'ErrorCode', 'ErrorMessage', 'RetryCount', 'FinalFailure'].map((f) => h('th', { scope: 'col' }, t(`field.${f}`))),
      hasRetry ? h('th', { scope: 'col' }, t('field.NextRetryAt')) : null);
    const rows = tasks.map((task) => h('tr', { dataset: { taskId: task.TaskId } },
      canAct ? h('td', { class: 'select' }, h('input', {
        type: 'checkbox', class: 'row-select', 'aria-label': t('failures.select', { id: task.TaskId }), checked: selected.has(task.TaskId),
        on: { change: (e) => {
          if (e.target.checked) selected.add(task.TaskId); else selected.delete(task.TaskId);
          if (selectAll) selectAll.checked = tasks.every((x) => selected.has(x.TaskId));
          updateBulk();
        } },
      })) : null,
      h('td', { class: 'time fail-time' }, time(task.FailTime)),
      h('td', { class: 'id' }, h('a', { href: ctx.href('task', {}, task.TaskId), class: 'task-link' }, task.TaskId)),
      h('td', {}, task.TaskType),
      h('td', {}, task.ClientId),
      h('td', {}, categoryBadge(task.ErrorCategory)),
      h('td', { class: 'code' }, task.ErrorCode),
      h('td', { class: 'message', title: task.ErrorMessage }, task.ErrorMessage),
      h('td', { class: 'num' }, count(task.RetryCount)),
      h('td', {}, task.FinalFailure ? h('span', { class: 'final yes' }, t('common.yes')) : h('span', { class: 'final no' }, t('common.no'))),
      hasRetry ? h('td', { class: 'time next-retry', title: task.NextRetryAt ? t(new Date(task.NextRetryAt).getTime() > Date.now() ? 'retry.due' : 'retry.delivered') : null }, time(task.NextRetryAt)) : null));
    const table = h('div', { class: 'table-wrap' },
      h('table', { class: 'tasks', id: 'tasks' }, h('thead', {}, head), h('tbody', {}, rows)));
    replace(ctx.data, summary, incomplete, bulk, table, pager(page.NextCursor, pageNo));
  }

  /** Export CSV / NDJSON: every match of the current filters, as a file. */
  function exportButtons() {
    const button = (format) => {
      const b = h('button', { type: 'button', id: `export-${format}`, class: 'export' }, t(`failures.export.${format}`));
      b.addEventListener('click', () => exportAs(format, b));
      return b;
    };
    return h('span', { class: 'exports', id: 'export' }, button('csv'), button('ndjson'));
  }

  async function exportAs(format, button) {
    const current = {};
    for (const key of FILTERS) if (filters[key]) current[key] = filters[key];
    button.disabled = true;
    try {
      const blob = await ctx.api.exportFile(format, current);
      const link = h('a', { href: URL.createObjectURL(blob), download: `failed-tasks.${format}`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      ctx.notify(t('done.exported'), 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    } finally {
      button.disabled = false;
    }
  }

  function pager(nextCursor, pageNo) {
    const hasPrev = prev.length > 0 || Boolean(cursor);
    return h('nav', { class: 'pager', 'aria-label': t('common.page', { n: pageNo }) },
      h('button', {
        type: 'button', id: 'prev-page', disabled: !hasPrev,
        on: { click: () => {
          const stack = prev.slice();
          const back = stack.pop() || null;
          ctx.navigate('failures', state({ cursor: back, prev: stack.length ? stack.join('.') : null }));
        } },
      }, t('common.previous')),
      h('span', { id: 'page-number', dataset: { page: String(pageNo) } }, t('common.page', { n: pageNo })),
      h('button', {
        type: 'button', id: 'next-page', disabled: !nextCursor,
        on: { click: () => {
          const stack = cursor ? [...prev, cursor].slice(-MAX_PREV) : [];
          ctx.navigate('failures', state({ cursor: nextCursor, prev: stack.length ? stack.join('.') : null }));
        } },
      }, t('common.next')));
  }

  function updateBulk() {
    for (const [id, key] of [['#delete-selected', 'failures.deleteSelected'], ['#retry-selected', 'failures.retrySelected']]) {
      const button = ctx.data.querySelector(id);
      if (!button) continue;
      button.textContent = t(key, { n: selected.size });
      button.disabled = !selected.size;
    }
  }

  /** The filters of the view, for the bulk actions (which need at least one). */
  function bulkFilters() {
    const out = {};
    for (const key of FILTERS) if (filters[key]) out[key] = filters[key];
    return Object.keys(out).length ? out : null;
  }

  function bulkBar(total) {
    const matching = bulkFilters();
    const scope = scopeOfFilters(filters);
    const retries = features.retries;
    return h('div', { class: 'bulk', id: 'bulk-actions' },
      retries ? h('button', { type: 'button', id: 'retry-selected', disabled: !selected.size, on: { click: retrySelected } },
        t('failures.retrySelected', { n: selected.size })) : null,
      retries ? h('button', { type: 'button', id: 'retry-matching', disabled: !matching, title: matching ? null : t('failures.needFilter'), on: { click: () => retryMatching(total) } },
        t('failures.retryMatching', { n: total })) : null,
      retries ? h('button', { type: 'button', id: 'hold-matching', disabled: !scope, title: scope ? null : t('gates.needScope'), on: { click: () => holdRetries(ctx, scope) } },
        t('gates.holdMatching')) : null,
      h('button', { type: 'button', id: 'delete-selected', class: 'danger', disabled: !selected.size, on: { click: deleteSelected } },
        t('failures.deleteSelected', { n: selected.size })),
      h('button', { type: 'button', id: 'delete-matching', class: 'danger', disabled: !matching, title: matching ? null : t('failures.needFilter'), on: { click: () => deleteMatching(total) } },
        t('failures.deleteMatching', { n: total })));
  }

  async function retrySelected() {
    const ids = [...selected];
    if (!ids.length || !(await ctx.confirm(t('confirm.retrySelected', { n: ids.length })))) return;
    const { results, failure } = await eachOf(ids, (id) => ctx.api.retry(id));
    const retried = results.filter((r) => r.Status === 'scheduled').length;
    if (failure) ctx.notify(t('error.action', { message: failure.message }), 'error');
    else ctx.notify(retriedText(retried, results.length - retried), 'ok');
    ctx.reload();
  }

  async function retryMatching(total) {
    const matching = bulkFilters();
    if (!matching || !(await ctx.confirm(t('confirm.retryMatching', { n: total })))) return;
    try {
      const r = await ctx.api.retryMatching(matching);
      const text = retriedText(r.Retried, r.AlreadyDelivered);
      ctx.notify(r.Complete ? text : `${text} ${t('done.incomplete')}`, 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
    ctx.reload();
  }

  async function deleteSelected() {
    const ids = [...selected];
    if (!ids.length || !(await ctx.confirm(t('confirm.deleteSelected', { n: ids.length })))) return;
    const { results, failure } = await eachOf(ids, async (id) => { await ctx.api.remove(id); selected.delete(id); return id; });
    if (failure) ctx.notify(t('error.action', { message: failure.message }), 'error');
    else ctx.notify(t('done.deleted', { n: results.length }), 'ok');
    ctx.reload();
  }

  async function deleteMatching(total) {
    const matching = bulkFilters();
    if (!matching || !(await ctx.confirm(t('confirm.deleteMatching', { n: total })))) return;
    try {
      const r = await ctx.api.removeMatching(matching);
      ctx.notify(t(r.Complete ? 'done.deleted' : 'done.deletedPartly', { n: count(r.Removed) }), 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
    ctx.navigate('failures', state({ cursor: null, prev: null }));
  }

  return { load };
}
