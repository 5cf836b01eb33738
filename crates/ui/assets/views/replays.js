// Replays: the recent replays, newest first, each with its state, filters, progress
// (visited of matched, the retries it made due), pace, who and why; a running one can be
// aborted (asking first, with a reason for the audit log) by a token that may act.
// Made through the API (POST …/admin/replays); the auto-refresh follows their progress.

import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { time, count } from '../format.js';

/** `category=service_timeout, retry=final` */
function filtersText(filters) {
  return Object.entries(filters || {}).map(([k, v]) => `${k}=${v}`).join(', ');
}

export function mount(ctx) {
  replace(ctx.controls);

  async function load() {
    const data = await ctx.api.replays(ctx.signal);
    render(data.Replays || []);
  }

  async function abort(r) {
    if (!(await ctx.confirm(t('confirm.abortReplay', { id: r.ReplayId, filters: filtersText(r.Filters) })))) return;
    try {
      const done = await ctx.api.abortReplay(r.ReplayId);
      ctx.notify(t('done.abortedReplay', { id: r.ReplayId, n: count(done.Cancelled) }), 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
    ctx.reload();
  }

  function progress(r) {
    const max = Math.max(r.Matched, r.Visited, 1);
    return h('td', { class: 'progress' },
      h('progress', { max: String(max), value: String(Math.min(r.Visited, max)), 'aria-label': t('replays.progress') }),
      ' ', h('span', { class: 'num' }, t('replays.visitedOf', { v: count(r.Visited), m: count(r.Matched) })));
  }

  function render(all) {
    const canAct = ctx.canAct();
    const body = all.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'replays', id: 'replays' },
        h('thead', {}, h('tr', {},
          ['replays.created', 'replays.state', 'replays.filters', 'replays.progress', 'replays.scheduled', 'replays.pace', 'replays.actor', 'replays.reason']
            .map((k) => h('th', { scope: 'col' }, t(k))),
          canAct ? h('th', { scope: 'col' }, t('groups.actions')) : null)),
        h('tbody', {}, all.map((r) => h('tr', { dataset: { replayId: r.ReplayId, state: r.State } },
          h('td', { class: 'time' }, time(r.Created)),
          h('td', { class: 'state' }, h('span', { class: ['badge', `replay-${r.State}`] }, t(`replays.state.${r.State}`))),
          h('td', { class: 'filters code' }, filtersText(r.Filters)),
          progress(r),
          h('td', { class: 'num scheduled' }, count(r.Scheduled)),
          h('td', { class: 'num pace' }, r.PerSecond === null ? t('replays.unpaced') : t('replays.perSecond', { n: count(r.PerSecond) })),
          h('td', { class: 'actor' }, r.Actor),
          h('td', { class: 'reason' }, r.Reason),
          canAct ? h('td', {}, r.State === 'running'
            ? h('button', { type: 'button', class: 'abort-replay danger', on: { click: () => abort(r) } }, t('replays.abort'))
            : null) : null)))))
      : h('div', { class: 'empty', id: 'empty' }, h('p', {}, t('replays.empty')));
    replace(ctx.data, body);
  }

  return { load };
}
