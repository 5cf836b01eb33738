// Overview: one statistics window (5m to 7d) from one API call: totals, failure rate, the
// alert rules that fire with their levels, the per-minute timeline, counts by category and
// the top error codes, task types and clients, each linking to the matching listing; the
// retry gates and circuit breakers, with their release for operators.
// State in the URL: #/overview?window=1h

import { h, replace } from '../dom.js';
import { t, category, CATEGORIES } from '../i18n.js';
import { time, count, percent, figure } from '../format.js';
import { timelineChart, barList } from '../chart.js';
import { scopeText } from '../gates.js';

const WINDOWS = ['5m', '15m', '1h', '6h', '24h', '7d'];
const DEFAULT_WINDOW = '1h';
/** A breaker's states, each with its badge. */
const BREAKER_STATES = ['open', 'half_open', 'closed'];

/** A label with a node in place of its one placeholder (filled with NUL). */
function around(label, node) {
  const [before, after] = label.split('\u0000');
  return [before, node, after];
}

/** The listing an alert is about. */
function alertFilters(alert, stats) {
  switch (alert.Rule) {
    case 'category_threshold':
      return { category: alert.Subject, since: stats.WindowStart };
    case 'error_code_threshold':
      return { errorCode: alert.Subject, since: stats.WindowStart };
    case 'sudden_increase': {
      const end = new Date(stats.WindowEnd).getTime();
      return { since: new Date(end - 5 * 60000).toISOString().replace(/\.000Z$/, 'Z') };
    }
    default:
      return { since: stats.WindowStart };
  }
}

export function mount(ctx) {
  const win = WINDOWS.includes(ctx.params.get('window')) ? ctx.params.get('window') : DEFAULT_WINDOW;
  const select = h('select', { id: 'window', on: { change: () => ctx.navigate('overview', { window: select.value === DEFAULT_WINDOW ? '' : select.value }) } },
    WINDOWS.map((w) => h('option', { value: w, selected: w === win }, w)));
  replace(ctx.controls, h('div', { class: 'filters' }, h('label', { class: 'field' }, h('span', {}, t('overview.window')), select)));

  async function load() {
    // Gates and breakers come from their own routes; a server without retries (501) has
    // none to show.
    const optional = (call) => call.catch((e) => {
      if (e.status === 501) return null;
      throw e;
    });
    const [stats, gates, breakers] = await Promise.all([
      ctx.api.stats(win, ctx.signal),
      optional(ctx.api.gates(ctx.signal)),
      optional(ctx.api.breakers(ctx.signal)),
    ]);
    render(stats, gates, breakers);
  }

  async function release(g) {
    const scope = scopeText(g.Scope);
    if (!(await ctx.confirm(t('confirm.release', { id: g.GateId, scope })))) return;
    try {
      await ctx.api.releaseGate(g.GateId);
      ctx.notify(t('done.released', { id: g.GateId }), 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
    ctx.reload();
  }

  /** Close a breaker by releasing its gate (the decider then closes it). */
  async function releaseBreaker(b) {
    const scope = scopeText({ TaskType: b.TaskType, ErrorCategory: b.ErrorCategory });
    if (!(await ctx.confirm(t('confirm.releaseBreaker', { id: b.GateId, scope })))) return;
    try {
      await ctx.api.releaseGate(b.GateId);
      ctx.notify(t('done.breakerReleased', { id: b.GateId, scope }), 'ok');
    } catch (e) {
      ctx.notify(t('error.action', { message: e.message }), 'error');
    }
    ctx.reload();
  }

  /** The breakers open, half-open or closed lately: key, state, reason, held count, since,
   *  cool-down end, opens; release (its gate) while it has one. */
  function breakersCard(data) {
    const breakers = data.Breakers || [];
    const canAct = ctx.canAct();
    const body = breakers.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'gates breakers', id: 'breakers' },
        h('thead', {}, h('tr', {},
          ['breakers.taskType', 'breakers.category', 'breakers.state', 'breakers.reason', 'breakers.held', 'breakers.since', 'breakers.cooldownEnds', 'breakers.opens', 'breakers.failedAgain']
            .map((k) => h('th', { scope: 'col' }, t(k))),
          canAct ? h('th', { scope: 'col' }, t('groups.actions')) : null)),
        h('tbody', {}, breakers.map((b) => h('tr', { dataset: { taskType: b.TaskType, category: b.ErrorCategory, state: b.State } },
          h('td', { class: 'type' }, b.TaskType),
          h('td', { class: 'category' }, category(b.ErrorCategory)),
          h('td', { class: 'breaker-state' }, BREAKER_STATES.includes(b.State)
            ? h('span', { class: ['badge', `breaker-${b.State}`] }, t(`breakers.state.${b.State}`))
            : h('span', { class: 'badge' }, b.State)),
          h('td', { class: 'reason' }, b.Reason || '—'),
          h('td', { class: 'num held' }, count(b.Held)),
          h('td', { class: 'time since' }, time(b.Since)),
          h('td', { class: 'time cooldown' }, b.State === 'open' && b.CooldownEnds ? time(b.CooldownEnds) : '—'),
          h('td', { class: 'num opens' }, count(b.Opens)),
          h('td', { class: 'num failed-again' }, t('breakers.ofOutcomes', { n: count(b.FailedAgain), m: count(b.Outcomes) })),
          canAct ? h('td', {}, b.GateId
            ? h('button', { type: 'button', class: 'release-breaker', on: { click: () => releaseBreaker(b) } }, t('breakers.release'))
            : null) : null)))))
      : h('p', { class: 'muted', id: 'breakers-none' }, t('breakers.none'));
    const s = data.Settings;
    const settings = !s ? null : h('p', { class: 'muted', id: 'breaker-settings' }, s.Enabled
      ? t('breakers.settings', {
        min: count(s.MinRetries), window: count(s.WindowSeconds), percent: s.FailurePercent,
        cooldown: count(s.CooldownSeconds), canaries: count(s.Canaries),
      })
      : t('breakers.disabled'));
    return h('section', { class: 'card wide', id: 'breakers-card' }, h('h2', {}, t('breakers.title')), body, settings);
  }

  /** The active gates: scope, mode, reason, who, held count, since, until; release. */
  function gatesCard(data) {
    const gates = data.Gates || [];
    const canAct = ctx.canAct();
    const body = gates.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'gates', id: 'gates' },
        h('thead', {}, h('tr', {},
          ['gates.scope', 'gates.mode', 'gates.reason', 'gates.by', 'gates.held', 'gates.since', 'gates.until'].map((k) => h('th', { scope: 'col' }, t(k))),
          canAct ? h('th', { scope: 'col' }, t('groups.actions')) : null)),
        h('tbody', {}, gates.map((g) => h('tr', { dataset: { gateId: g.GateId, mode: g.Mode } },
          h('td', { class: 'scope' }, scopeText(g.Scope)),
          h('td', { class: 'mode' }, g.Mode === 'limit' ? t('gates.limit', { n: count(g.PerSecond) }) : t('gates.hold')),
          h('td', { class: 'reason' }, g.Reason),
          h('td', { class: 'by' }, g.CreatedBy),
          h('td', { class: 'num held' }, count(g.Held)),
          h('td', { class: 'time' }, time(g.Since)),
          h('td', { class: 'time' }, g.Until ? time(g.Until) : '—'),
          canAct ? h('td', {}, h('button', { type: 'button', class: 'release-gate', on: { click: () => release(g) } }, t('gates.release'))) : null)))))
      : h('p', { class: 'muted', id: 'gates-none' }, t('gates.none'));
    return h('section', { class: 'card wide', id: 'gates-card' }, h('h2', {}, t('gates.title')), body);
  }

  function render(s, gates, breakers) {
    const since = { since: s.WindowStart };
    const cards = h('div', { class: 'cards' },
      h('a', { class: 'card stat', id: 'stat-total', href: ctx.href('failures', since) },
        h('span', { class: 'stat-label' }, t('overview.total')), h('span', { class: 'stat-value' }, count(s.TotalFailures))),
      'Recovered' in s ? h('div', { class: 'card stat', id: 'stat-recovered' },
        h('span', { class: 'stat-label' }, t('overview.recovered')), h('span', { class: 'stat-value' }, count(s.Recovered))) : null,
      'Superseded' in s ? h('div', { class: 'card stat', id: 'stat-superseded', title: t('overview.supersededHint') },
        h('span', { class: 'stat-label' }, t('overview.superseded')), h('span', { class: 'stat-value' }, count(s.Superseded))) : null,
      h('div', { class: 'card stat', id: 'stat-attempts' },
        h('span', { class: 'stat-label' }, t('overview.attempts')), s.Attempts === null ? h('span', { class: 'stat-value none' }, t('overview.none')) : h('span', { class: 'stat-value' }, count(s.Attempts))),
      h('div', { class: 'card stat', id: 'stat-rate' },
        h('span', { class: 'stat-label' }, t('overview.rate')), s.FailureRate === null ? h('span', { class: 'stat-value none' }, t('overview.none')) : h('span', { class: 'stat-value' }, percent(s.FailureRate))));

    const alerts = (s.Alerts || []).slice().sort((a, b) => (a.Level === b.Level ? 0 : a.Level === 'critical' ? -1 : 1));
    const alertList = alerts.length
      ? h('ul', { class: 'alerts', id: 'alerts' }, alerts.map((a) => h('li', { class: ['alert', `level-${a.Level === 'critical' ? 'critical' : 'warning'}`], dataset: { rule: a.Rule, level: a.Level } },
        h('span', { class: ['badge', `level-${a.Level === 'critical' ? 'critical' : 'warning'}`] }, t(`level.${a.Level === 'critical' ? 'critical' : 'warning'}`)),
        h('span', { class: 'alert-rule' }, t(`rule.${a.Rule}`) === `rule.${a.Rule}` ? a.Rule : t(`rule.${a.Rule}`)),
        a.Subject ? h('span', { class: 'alert-subject' }, a.Rule === 'category_threshold' ? category(a.Subject) : a.Subject) : null,
        h('span', { class: 'alert-figure' }, t('overview.alertFigure', { figure: figure(a.Rule, a.Figure), threshold: figure(a.Rule, a.Threshold) })),
        h('span', { class: 'alert-since' }, ...around(t('overview.alertSince', { t: '\u0000' }), time(a.Since))),
        h('a', { class: 'alert-link', href: ctx.href('failures', alertFilters(a, s)) }, t('overview.showTasks')))))
      : h('p', { class: 'muted', id: 'alerts-none' }, t('overview.noAlerts'));

    const { svg, size } = timelineChart(s.Timeline || [], t('overview.timeline'));
    const timeline = h('section', { class: 'card wide' },
      h('h2', {}, size > 1 ? t('overview.timelineBucket', { n: size }) : t('overview.timeline')), svg);

    const byCategory = h('section', { class: 'card' }, h('h2', {}, t('overview.byCategory')),
      barList((s.ByCategory || []).map((c) => ({
        name: c.Name, label: category(c.Name), count: c.Count,
        className: `cat-${CATEGORIES.includes(c.Name) ? c.Name : 'unknown'}`,
        href: ctx.href('failures', { category: c.Name, since: s.WindowStart }),
      })), 'by-category'));
    // `key` is the listing filter a bar links to; `linkable` says whether a value can be one
    // (a codebase links as `pathPrefix`, which must start with `/`); `label` names a value.
    const top = (title, items, key, id, linkable = () => true, label = (name) => name) => h('section', { class: 'card' }, h('h2', {}, title),
      items.length
        ? barList(items.map((c) => ({
          name: c.Name, label: label(c.Name), count: c.Count,
          href: linkable(c.Name) ? ctx.href('failures', { [key]: c.Name, since: s.WindowStart }) : undefined,
        })), id)
        : h('p', { class: 'muted' }, t('overview.empty')));

    replace(ctx.data,
      h('p', { class: 'summary', id: 'window-range' }, time(s.WindowStart), ' – ', time(s.WindowEnd)),
      cards,
      h('section', { class: 'card wide' }, h('h2', {}, t('overview.alerts')), alertList),
      gates ? gatesCard(gates) : null,
      breakers ? breakersCard(breakers) : null,
      timeline,
      h('div', { class: 'grid' },
        byCategory,
        top(t('overview.byErrorCode'), s.ByErrorCode || [], 'errorCode', 'by-error-code'),
        top(t('overview.byTaskType'), s.ByTaskType || [], 'taskType', 'by-task-type'),
        top(t('overview.topClients'), s.TopClients || [], 'clientId', 'top-clients'),
        top(t('overview.byCodebase'), s.ByCodebasePath || [], 'pathPrefix', 'by-codebase',
          (name) => name.startsWith('/'), (name) => name || t('overview.noCodebase'))),
      s.BreakdownsExact === false
        ? h('p', { class: 'muted', id: 'breakdowns-approximate' }, t('overview.approximate', {
          n: Math.max(...Object.values(s.Untracked || {}).map((v) => v || 0), 0),
        }))
        : null);
  }

  return { load };
}
