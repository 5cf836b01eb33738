// Times and numbers for display: the browser's time zone and language, UTC on hover.

import { h } from './dom.js';
import { lang } from './i18n.js';

const locale = () => (lang() === 'zh' ? 'zh-CN' : 'en-GB');

/** A `<time>` showing an RFC 3339 instant in the browser's zone, UTC in its title. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', {}, iso);
  const shown = new Intl.DateTimeFormat(locale(), {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).format(d);
  return h('time', { datetime: iso, title: utc(d) }, shown);
}

/** `2025-01-24 09:15:00 UTC` */
export function utc(d) {
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '').replace(/Z$/, '') + ' UTC';
}

/** A short local time (hours and minutes, or the day for long windows). */
export function shortTime(iso, withDay) {
  const d = new Date(iso);
  const opts = withDay
    ? { month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }
    : { hour: '2-digit', minute: '2-digit' };
  return new Intl.DateTimeFormat(locale(), opts).format(d);
}

/** An integer with grouping. */
export function count(n) {
  return new Intl.NumberFormat(locale()).format(n);
}

/** A fraction as a percentage. */
export function percent(x) {
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(x);
}

/** A figure of an alert: a rate as a percentage, a count as an integer. */
export function figure(rule, x) {
  return rule === 'failure_rate' ? percent(x) : count(Math.round(x * 100) / 100);
}

/** RFC 3339 UTC (`Z`) → the value of a datetime-local input, in the browser's zone. */
export function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The value of a datetime-local input (browser's zone) → RFC 3339 UTC, or '' when empty. */
export function fromLocalInput(value) {
  if (!value) return '';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return '';
  return d.toISOString().replace(/\.000Z$/, 'Z');
}
