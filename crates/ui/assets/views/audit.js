// Audit: the operators' actions, newest first, filtered by actor and action, paged by cursor.
// State in the URL: #/audit?actor=..&action=..&cursor=..&prev=.. (as in the Groups view).

import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { time, count } from '../format.js';
import { cursorPager } from '../pager.js';

const PAGE_SIZE = 50;
const ACTIONS = ['retry', 'cancel_retry', 'resolve', 'delete', 'delete_matching', 'retry_matching', 'gate_created', 'gate_released',
  'breaker_opened', 'breaker_half_opened', 'breaker_closed', 'replay_created', 'replay_aborted', 'trim'];

export function mount(ctx) {
  const actor = ctx.params.get('actor') || '';
  const action = ctx.params.get('action') || '';
  const cursor = ctx.params.get('cursor') || '';
  const prev = ctx.params.get('prev') ? ctx.params.get('prev').split('.').filter(Boolean) : [];

  const actorInput = h('input', { type: 'text', id: 'audit-actor', name: 'actor', value: actor, maxlength: '200', autocomplete: 'off' });
  const actionSelect = h('select', { id: 'audit-action', name: 'action' },
    h('option', { value: '' }, t('audit.anyAction')),
    ACTIONS.map((a) => h('option', { value: a, selected: a === action }, t(`audit.action.${a}`))));
  const form = h('form', { class: 'filters', id: 'audit-filters', on: { submit: (e) => {
    e.preventDefault();
    ctx.navigate('audit', { actor: actorInput.value.trim() || null, action: actionSelect.value || null });
  } } },
  h('label', {}, h('span', {}, t('audit.actor')), actorInput),
  h('label', {}, h('span', {}, t('audit.actionLabel')), actionSelect),
  h('button', { type: 'submit', id: 'audit-apply' }, t('common.apply')));
  replace(ctx.controls, form);

  async function load() {
    const page = await ctx.api.audit({ pageSize: PAGE_SIZE, cursor, actor, action }, ctx.signal);
    render(page);
  }

  function render(page) {
    const entries = page.Entries || [];
    const pageNo = cursor ? prev.length + 2 : 1;
    const body = entries.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'audit', id: 'audit' },
        h('thead', {}, h('tr', {},
          [t('audit.time'), t('audit.actor'), t('audit.actionLabel'), t('audit.target'), t('audit.count'), t('audit.reason'), t('audit.requestId')]
            .map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, entries.map((e) => h('tr', { dataset: { action: e.Action } },
          h('td', { class: 'time' }, time(e.Time)),
          h('td', { class: 'actor' }, e.Actor),
          h('td', { class: 'action' }, t(`audit.action.${e.Action}`)),
          h('td', { class: 'target code' }, e.Target),
          h('td', { class: 'num' }, count(e.Count)),
          h('td', { class: 'reason' }, e.Reason || '—'),
          h('td', { class: 'code' }, e.RequestId || '—'))))))
      : h('div', { class: 'empty', id: 'empty' }, h('p', {}, t('audit.empty')));
    const keep = (p) => ({ actor: actor || null, action: action || null, ...p });
    const pager = cursorPager(ctx, { view: 'audit', cursor, prev, nextCursor: page.NextCursor, pageNo, keep });
    replace(ctx.data, body, pager);
  }

  return { load };
}
