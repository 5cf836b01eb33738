// Hand-written SVG charts: a bar timeline and proportional bars. Labels are SVG text nodes
// (textContent), so nothing from the store is ever parsed as markup.

import { h } from './dom.js';
import { count, shortTime, utc } from './format.js';

/** At most this many bars; longer timelines are summed into buckets of whole minutes. */
const MAX_BARS = 180;

/** Sum a per-minute timeline into buckets: `[{start, end, count}]` and the bucket size. */
export function bucket(timeline) {
  const size = Math.max(1, Math.ceil(timeline.length / MAX_BARS));
  const out = [];
  for (let i = 0; i < timeline.length; i += size) {
    const slice = timeline.slice(i, i + size);
    out.push({ start: slice[0].Minute, count: slice.reduce((s, p) => s + p.Count, 0) });
  }
  return { size, buckets: out };
}

/** A bar chart of a timeline `[{Minute, Count}]`, oldest first. */
export function timelineChart(timeline, label) {
  const { size, buckets } = bucket(timeline);
  const W = 900;
  const H = 200;
  const left = 44;
  const bottom = 24;
  const top = 10;
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const plotW = W - left - 6;
  const plotH = H - top - bottom;
  const barW = plotW / Math.max(1, buckets.length);
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart timeline', role: 'img', 'aria-label': label, preserveAspectRatio: 'none' });
  svg.append(h('svg:title', {}, label));
  // Gridlines at 0, about half the maximum, and the maximum (each value once).
  for (const v of [...new Set([0, Math.round(max / 2), max])]) {
    const y = top + plotH * (1 - v / max);
    svg.append(h('svg:line', { x1: left, x2: W - 6, y1: y, y2: y, class: 'grid' }));
    svg.append(h('svg:text', { x: left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, count(v)));
  }
  buckets.forEach((b, i) => {
    const hgt = (b.count / max) * plotH;
    const rect = h('svg:rect', {
      x: left + i * barW + (barW > 3 ? 0.5 : 0), y: top + plotH - hgt,
      width: Math.max(0.5, barW - (barW > 3 ? 1 : 0)), height: Math.max(b.count ? 1 : 0, hgt), class: 'bar',
      dataset: { count: String(b.count) },
    });
    rect.append(h('svg:title', {}, `${utc(new Date(b.start))} · ${count(b.count)}`));
    svg.append(rect);
  });
  const long = timeline.length > 24 * 60;
  const ticks = Math.min(6, buckets.length);
  for (let k = 0; k < ticks; k += 1) {
    const i = Math.round((k * (buckets.length - 1)) / Math.max(1, ticks - 1));
    // Under its bar; the first and last kept inside the plot.
    const first = k === 0;
    const last = k === ticks - 1 && ticks > 1;
    const x = first ? left + i * barW : last ? left + (i + 1) * barW : left + i * barW + barW / 2;
    svg.append(h('svg:text', { x, y: H - 6, class: 'axis', 'text-anchor': first ? 'start' : last ? 'end' : 'middle' },
      shortTime(buckets[i].start, long)));
  }
  return { svg, size };
}

/** Rows of a proportional bar: `[{name, label, count, href, className}]`. */
export function barList(items, id) {
  const max = Math.max(1, ...items.map((i) => i.count));
  return h('ul', { class: 'bars', id },
    items.map((item) => {
      const fill = h('span', { class: ['fill', item.className] });
      fill.style.width = `${(item.count / max) * 100}%`;
      return h('li', { dataset: { name: item.name } },
        item.href ? h('a', { href: item.href, class: 'bar-label', title: item.name }, item.label) : h('span', { class: 'bar-label', title: item.name }, item.label),
        h('span', { class: 'bar-track' }, fill),
        h('span', { class: 'bar-count' }, count(item.count)));
    }));
}
