// Cursor paging shared by the views: Previous / page number / Next. The cursors of the pages
// before this one travel in the URL (`prev`, dot-separated, at most MAX_PREV), so Previous
// works from a link too.

import { h } from './dom.js';
import { t } from './i18n.js';

const MAX_PREV = 100;

/** The pager of `view` on page `pageNo`: `cursor` (this page's), `prev` (the cursors before
 *  it), `nextCursor` (null on the last page) and `keep(params)`, which adds the view's other
 *  URL parameters to the target's. */
export function cursorPager(ctx, { view, cursor, prev, nextCursor, pageNo, keep = (p) => p }) {
  const hasPrev = prev.length > 0 || Boolean(cursor);
  return h('nav', { class: 'pager', 'aria-label': t('common.page', { n: pageNo }) },
    h('button', {
      type: 'button', id: 'prev-page', disabled: !hasPrev,
      on: { click: () => {
        const stack = prev.slice();
        const back = stack.pop() || null;
        ctx.navigate(view, keep({ cursor: back, prev: stack.length ? stack.join('.') : null }));
      } },
    }, t('common.previous')),
    h('span', { id: 'page-number', dataset: { page: String(pageNo) } }, t('common.page', { n: pageNo })),
    h('button', {
      type: 'button', id: 'next-page', disabled: !nextCursor,
      on: { click: () => {
        const stack = cursor ? [...prev, cursor].slice(-MAX_PREV) : [];
        ctx.navigate(view, keep({ cursor: nextCursor, prev: stack.length ? stack.join('.') : null }));
      } },
    }, t('common.next')));
}
