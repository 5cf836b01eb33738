// Task: every field of one failed task, its attempts when the server reports them, the files
// that failed (paged, filtered by error code, counted per code), links to related listings,
// and the actions. State in the URL: #/task/<TaskId>

import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { time, count } from '../format.js';
import { categoryBadge, retriedText } from './failures.js';

const TIMES = new Set(['StartTime', 'FailTime', 'NextRetryAt']);
const ORDER = ['TaskId', 'TaskType', 'ClientId', 'CodebasePath', 'StartTime', 'FailTime', 'ErrorCategory', 'ErrorCode', 'ErrorMessage', 'RetryCount', 'ProcessedFiles', 'FailedFiles', 'FinalFailure', 'NextRetryAt'];
const FILES_PAGE = 50;

function value(key, v) {
  if (key === 'ErrorCategory') return categoryBadge(v);
  if (TIMES.has(key) || /(Time|At)$/.test(key)) return typeof v === 'string' || v === null ? time(v) : String(v);
  if (typeof v === 'boolean') return v ? t('common.yes') : t('common.no');
  if (typeof v === 'number') return count(v);
  if (v === null || v === undefined) return h('span', { class: 'muted' }, '—');
  if (typeof v === 'object') return h('code', {}, JSON.stringify(v));
  return String(v);
}

function attemptsTable(attempts) {
  if (!attempts.length) return null;
  const keys = [...new Set(attempts.flatMap((a) => (a && typeof a === 'object' ? Object.keys(a) : [])))];
  return h('section', { class: 'card', id: 'attempts' },
    h('h2', {}, t('task.attempts')),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, keys.map((k) => h('th', { scope: 'col' }, t(`field.${k}`) === `field.${k}` ? k : t(`field.${k}`))))),
      h('tbody', {}, attempts.map((a) => h('tr', {}, keys.map((k) => h('td', {}, value(k, a ? a[k] : null)))))))));
}

export function mount(ctx) {
  const id = ctx.arg;
  replace(ctx.controls, h('p', {}, h('a', { href: ctx.href('failures', {}), id: 'back' }, t('task.back'))));
  // The failed files shown: the code filter, the pages loaded so far, where the next starts.
  const files = { code: null, rows: [], next: null, page: null, card: null };

  async function load() {
    const task = await ctx.api.task(id, ctx.signal);
    files.card = null;
    if (task.FailedFiles > 0) await loadFiles(false);
    render(task);
  }

  /** The first page of files (with the current code), or the next one appended (`more`). */
  async function loadFiles(more) {
    const query = { pageSize: FILES_PAGE, errorCode: files.code || undefined, cursor: more ? files.next : undefined };
    const page = await ctx.api.files(id, query, ctx.signal);
    files.rows = more ? [...files.rows, ...page.Files] : page.Files;
    files.next = page.NextCursor;
    files.page = page;
  }

  async function showFiles(action) {
    try {
      await action();
      const card = filesCard();
      if (files.card) files.card.replaceWith(card);
      files.card = card;
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
  }

  function filesCard() {
    const p = files.page;
    if (!p) return null;
    const chip = (code, n) => h('button', {
      type: 'button', class: ['chip', files.code === code ? 'active' : null], dataset: { code: code || '' },
      'aria-pressed': files.code === code ? 'true' : 'false',
      on: { click: () => showFiles(async () => { files.code = code; await loadFiles(false); }) },
    }, code === null ? t('task.filesAll') : `${code} (${count(n)})`);
    const keys = ['Path', 'Operation', 'ErrorCode', 'ErrorMessage'];
    const card = h('section', { class: 'card', id: 'failed-files' },
      h('h2', {}, t('task.files'), ' ', h('span', { class: 'muted', id: 'files-shown' },
        t('task.filesShown', { n: count(files.rows.length), total: count(p.TotalFiles) }))),
      h('p', { class: 'chips', id: 'file-codes' }, chip(null, p.ListedFiles), ' ',
        p.ErrorCodes.map((c) => [chip(c.ErrorCode, c.Count), ' '])),
      h('div', { class: 'table-wrap' }, h('table', { id: 'files' },
        h('thead', {}, h('tr', {}, keys.map((k) => h('th', { scope: 'col' }, t(`field.${k}`))))),
        h('tbody', {}, files.rows.map((f) => h('tr', { dataset: { path: f.Path } },
          keys.map((k) => h('td', { class: k === 'ErrorMessage' ? 'message' : null }, value(k, f[k])))))))),
      files.next ? h('button', { type: 'button', id: 'files-more', on: { click: () => showFiles(() => loadFiles(true)) } }, t('task.filesMore')) : null);
    return card;
  }

  function render(task) {
    const keys = [...ORDER.filter((k) => k in task), ...Object.keys(task).filter((k) => !ORDER.includes(k) && k !== 'Attempts')];
    const fields = h('dl', { class: 'fields', id: 'task-fields' },
      keys.map((k) => [
        h('dt', {}, t(`field.${k}`) === `field.${k}` ? k : t(`field.${k}`)),
        h('dd', { class: k === 'ErrorMessage' ? 'message-full' : null, dataset: { field: k } }, value(k, task[k]),
          k === 'NextRetryAt' && task[k] ? h('span', { class: 'muted retry-state' }, ' ', t(new Date(task[k]).getTime() > Date.now() ? 'retry.due' : 'retry.delivered')) : null),
      ]));
    const links = h('p', { class: 'links' },
      h('a', { href: ctx.href('failures', { clientId: task.ClientId }) }, t('task.sameClient')), ' · ',
      h('a', { href: ctx.href('failures', { errorCode: task.ErrorCode }) }, t('task.sameCode')));
    const retries = 'NextRetryAt' in task;
    const scheduled = retries && task.NextRetryAt && new Date(task.NextRetryAt).getTime() > Date.now();
    const actions = ctx.canAct()
      ? h('div', { class: 'actions', id: 'task-actions' },
        retries ? h('button', { type: 'button', id: 'retry-task', on: { click: () => retry(task) } }, t('task.retry')) : null,
        scheduled ? h('button', { type: 'button', id: 'cancel-retry', on: { click: () => cancel(task) } }, t('task.cancelRetry')) : null,
        retries ? h('button', { type: 'button', id: 'resolve-task', on: { click: () => resolve(task) } }, t('task.resolve')) : null,
        ctx.canDelete() ? h('button', { type: 'button', id: 'delete-task', class: 'danger', on: { click: () => remove(task) } }, t('task.delete')) : null)
      : null;
    files.card = filesCard();
    replace(ctx.data,
      h('h1', { class: 'task-title' }, task.TaskId),
      actions,
      h('section', { class: 'card' }, fields),
      Array.isArray(task.Attempts) ? attemptsTable(task.Attempts) : null,
      files.card,
      links);
  }

  async function act(confirmKey, action, done, task) {
    if (!(await ctx.confirm(t(confirmKey, { id: task.TaskId })))) return null;
    try {
      const r = await action(task.TaskId);
      ctx.notify(done(r), 'ok');
      return r;
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
      return null;
    }
  }

  async function retry(task) {
    const r = await act('confirm.retryOne', ctx.api.retry,
      (x) => retriedText(x.Status === 'scheduled' ? 1 : 0, x.Status === 'scheduled' ? 0 : 1), task);
    if (r) ctx.reload();
  }

  async function cancel(task) {
    const r = await act('confirm.cancelRetry', ctx.api.cancelRetry, (x) => t(`status.${x.Status}`), task);
    if (r) ctx.reload();
  }

  async function resolve(task) {
    const r = await act('confirm.resolve', ctx.api.resolve, (x) => t(`status.${x.Status}`), task);
    if (r) ctx.navigate('failures', {});
  }

  async function remove(task) {
    if (!(await ctx.confirm(t('confirm.deleteOne', { id: task.TaskId })))) return;
    try {
      await ctx.api.remove(task.TaskId);
      ctx.notify(t('done.deleted', { n: 1 }), 'ok');
      ctx.navigate('failures', {});
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
  }

  return { load };
}
