// Groups: failures grouped by error signature, last seen first, paged by cursor; a group's
// pattern links to its tasks (the listing with signature=). State in the URL:
// #/groups?cursor=..&prev=.. (as in the Failures view).

import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { time, count } from '../format.js';
import { categoryBadge, retriedText } from './failures.js';
import { features } from '../api.js';
import { holdRetries } from '../gates.js';
import { cursorPager } from '../pager.js';

const PAGE_SIZE = 50;

export function mount(ctx) {
  const cursor = ctx.params.get('cursor') || '';
  const prev = ctx.params.get('prev') ? ctx.params.get('prev').split('.').filter(Boolean) : [];
  replace(ctx.controls);

  async function load() {
    // Whether the server retries is learned from a task; ask for one only when not known yet.
    const probe = ctx.canAct() && features.retries === null ? ctx.api.list({ pageSize: 1 }, ctx.signal) : null;
    const page = await ctx.api.groups({ pageSize: PAGE_SIZE, cursor }, ctx.signal);
    if (probe) await probe;
    render(page);
  }

  async function retryGroup(g) {
    if (!(await ctx.confirm(t('confirm.retryGroup', { n: count(g.Count), pattern: g.Pattern })))) return;
    try {
      const r = await ctx.api.retryMatching({ signature: g.Signature });
      ctx.notify(retriedText(r.Retried, r.AlreadyDelivered), 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
    ctx.reload();
  }

  function render(page) {
    const groups = page.Groups || [];
    const canRetry = ctx.canAct() && features.retries === true;
    const pageNo = cursor ? prev.length + 2 : 1;
    const summary = h('p', { class: 'summary', id: 'groups-total' }, h('strong', {}, t('groups.total', { n: count(page.TotalGroups) })));
    const body = groups.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'groups', id: 'groups' },
        h('thead', {}, h('tr', {},
          [t('groups.pattern'), t('field.ErrorCategory'), t('field.ErrorCode'), t('groups.count'), t('groups.clients'), t('groups.firstSeen'), t('groups.lastSeen')]
            .map((label) => h('th', { scope: 'col' }, label)),
          canRetry ? h('th', { scope: 'col' }, t('groups.actions')) : null)),
        h('tbody', {}, groups.map((g) => h('tr', { dataset: { signature: g.Signature } },
          h('td', { class: 'pattern' }, h('a', { href: ctx.href('failures', { signature: g.Signature }), class: 'group-link', title: g.Pattern }, g.Pattern || g.Signature)),
          h('td', {}, categoryBadge(g.ErrorCategory)),
          h('td', { class: 'code' }, g.ErrorCode),
          h('td', { class: 'num' }, count(g.Count)),
          h('td', { class: 'num' }, count(g.ClientsAffected)),
          h('td', { class: 'time' }, time(g.FirstSeen)),
          h('td', { class: 'time' }, time(g.LastSeen)),
          canRetry ? h('td', { class: 'actions' },
            h('button', { type: 'button', class: 'retry-group', on: { click: () => retryGroup(g) } }, t('groups.retry')),
            h('button', { type: 'button', class: 'hold-group', on: { click: () => holdRetries(ctx, { Signature: g.Signature }) } }, t('gates.holdGroup'))) : null)))))
      : h('div', { class: 'empty', id: 'empty' }, h('p', {}, t('groups.empty')));
    const pager = cursorPager(ctx, { view: 'groups', cursor, prev, nextCursor: page.NextCursor, pageNo });
    replace(ctx.data, summary, body, pager);
  }

  return { load };
}
