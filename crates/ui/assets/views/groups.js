// Groups: failures grouped by error signature, last seen first, paged by cursor; a group's
// pattern links to its tasks (the listing with signature=). State in the URL:
// #/groups?cursor=..&prev=.. (as in the Failures view).

import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { time, count } from '../format.js';
import { categoryBadge } from './failures.js';

const PAGE_SIZE = 50;
const MAX_PREV = 100;

export function mount(ctx) {
  const cursor = ctx.params.get('cursor') || '';
  const prev = ctx.params.get('prev') ? ctx.params.get('prev').split('.').filter(Boolean) : [];
  replace(ctx.controls);

  async function load() {
    render(await ctx.api.groups({ pageSize: PAGE_SIZE, cursor }, ctx.signal));
  }

  function render(page) {
    const groups = page.Groups || [];
    const pageNo = cursor ? prev.length + 2 : 1;
    const summary = h('p', { class: 'summary', id: 'groups-total' }, h('strong', {}, t('groups.total', { n: count(page.TotalGroups) })));
    const body = groups.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'groups', id: 'groups' },
        h('thead', {}, h('tr', {},
          [t('groups.pattern'), t('field.ErrorCategory'), t('field.ErrorCode'), t('groups.count'), t('groups.clients'), t('groups.firstSeen'), t('groups.lastSeen')]
            .map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, groups.map((g) => h('tr', { dataset: { signature: g.Signature } },
          h('td', { class: 'pattern' }, h('a', { href: ctx.href('failures', { signature: g.Signature }), class: 'group-link', title: g.Pattern }, g.Pattern || g.Signature)),
          h('td', {}, categoryBadge(g.ErrorCategory)),
          h('td', { class: 'code' }, g.ErrorCode),
          h('td', { class: 'num' }, count(g.Count)),
          h('td', { class: 'num' }, count(g.ClientsAffected)),
          h('td', { class: 'time' }, time(g.FirstSeen)),
          h('td', { class: 'time' }, time(g.LastSeen)))))))
      : h('div', { class: 'empty', id: 'empty' }, h('p', {}, t('groups.empty')));
    const pager = h('nav', { class: 'pager', 'aria-label': t('common.page', { n: pageNo }) },
      h('button', {
        type: 'button', id: 'prev-page', disabled: !cursor,
        on: { click: () => {
          const stack = prev.slice();
          const back = stack.pop() || null;
          ctx.navigate('groups', { cursor: back, prev: stack.length ? stack.join('.') : null });
        } },
      }, t('common.previous')),
      h('span', { id: 'page-number' }, t('common.page', { n: pageNo })),
      h('button', {
        type: 'button', id: 'next-page', disabled: !page.NextCursor,
        on: { click: () => {
          const stack = cursor ? [...prev, cursor].slice(-MAX_PREV) : [];
          ctx.navigate('groups', { cursor: page.NextCursor, prev: stack.length ? stack.join('.') : null });
        } },
      }, t('common.next')));
    replace(ctx.data, summary, body, pager);
  }

  return { load };
}
