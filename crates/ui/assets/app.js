// The dashboard shell: routes by the URL hash (so every view's state is a link), the header
// controls (language, auto-refresh, token), and the loading / error / retry cycle of views.
//
// A view module exports `mount(ctx)` that builds its controls into `ctx.controls` and returns
// `{ load }`; `load()` makes the view's API call(s) and fills `ctx.data`, or throws ApiError.
// This shell shows the loading and error states, retries a failed load after the server's
// Retry-After (so the page recovers by itself when the store is back), and re-loads on the
// auto-refresh timer.

import { api, token, setToken, setReason } from './api.js';
import { h, replace, byId } from './dom.js';
import { t, lang, setLang, applyStatic } from './i18n.js';
import * as failures from './views/failures.js';
import * as task from './views/task.js';
import * as overview from './views/overview.js';
import * as groups from './views/groups.js';
import * as audit from './views/audit.js';
import * as replays from './views/replays.js';

const VIEWS = { failures, task, overview, groups, audit, replays };
const NAV = { failures: 'failures', task: 'failures', overview: 'overview', groups: 'groups', audit: 'audit', replays: 'replays' };
const REFRESH_KEY = 'failed-tasks.refresh';
/** Bounds of the wait before retrying a failed load, in seconds. */
const RETRY_MIN = 1;
const RETRY_MAX = 30;
const RETRY_DEFAULT = 5;

let current = null;
let generation = 0;
let retryTimer = null;
let countdownTimer = null;
let refreshTimer = null;
let noticeTimer = null;
/** The role of the token in sessionStorage (`read`, `operate`, `admin` or null), asked once
 *  per token: the views offer only what it may do. */
const access = { token: null, role: null };
const RANK = { read: 1, operate: 2, admin: 3 };
const may = (role) => access.token === token() && (RANK[access.role] || 0) >= RANK[role];

/** The route in the hash: `#/name/arg?query`. */
function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = q < 0 ? '' : raw.slice(q + 1);
  const slash = path.indexOf('/');
  const name = slash < 0 ? path : path.slice(0, slash);
  let arg = slash < 0 ? '' : path.slice(slash + 1);
  try {
    arg = decodeURIComponent(arg);
  } catch {
    // Leave a malformed escape as it is; the API will say the id does not exist.
  }
  return { name: VIEWS[name] ? name : 'failures', arg, params: new URLSearchParams(query) };
}

/** The hash of a route; empty parameters are left out. */
export function href(name, params, arg) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') query.set(key, value);
  }
  const qs = query.toString();
  return `#/${name}${arg !== undefined ? `/${encodeURIComponent(arg)}` : ''}${qs ? `?${qs}` : ''}`;
}

export function navigate(name, params, arg) {
  const target = href(name, params, arg);
  if (window.location.hash === target) route();
  else window.location.hash = target;
}

/** Show a short message in the notice bar. */
export function notify(text, kind) {
  const el = byId('notice');
  el.className = `notice ${kind || ''}`;
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

/** Ask before an action, with an optional reason (sent with the action for the audit log);
 *  resolves to true when confirmed. */
export function confirmAction(text) {
  const dialog = byId('confirm-dialog');
  byId('confirm-text').textContent = text;
  const input = byId('confirm-reason');
  input.value = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      setReason(ok ? input.value : '');
      resolve(ok);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    byId('confirm-cancel').focus();
  });
}

/** Ask for a reason before an action; resolves to the reason, or null when cancelled. */
export function askReason(text) {
  const dialog = byId('hold-dialog');
  byId('hold-text').textContent = text;
  const input = byId('hold-reason');
  input.value = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const reason = dialog.returnValue === 'ok' && input.value.trim() ? input.value.trim() : null;
      setReason(reason);
      resolve(reason);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    input.focus();
  });
}

function openTokenDialog(reason) {
  const dialog = byId('token-dialog');
  const why = byId('token-reason');
  why.hidden = !reason;
  why.textContent = reason || '';
  byId('token-input').value = '';
  byId('token-forget').hidden = !token();
  dialog.returnValue = '';
  dialog.showModal();
  byId('token-input').focus();
}

function updateTokenButton() {
  const b = byId('token-button');
  b.textContent = token() ? t('token.signedIn') : t('token.set');
  b.dataset.token = token() ? 'set' : 'none';
}

function clearTimers() {
  clearTimeout(retryTimer);
  clearInterval(countdownTimer);
  clearTimeout(refreshTimer);
}

function refreshSeconds() {
  const v = Number.parseInt(byId('refresh').value, 10);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

function anyDialogOpen() {
  return Boolean(document.querySelector('dialog[open]'));
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const secs = refreshSeconds();
  if (!secs || !current) return;
  const gen = generation;
  refreshTimer = setTimeout(() => {
    if (gen !== generation) return;
    // Not while the user is answering a dialog; try again at the next tick.
    if (anyDialogOpen() || document.hidden) scheduleRefresh();
    else load(false);
  }, secs * 1000);
}

function setState(kind, ...content) {
  const state = current.state;
  state.className = `state ${kind}`;
  state.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  state.dataset.state = kind;
  replace(state, ...content);
  state.hidden = kind === 'ok';
  current.data.hidden = kind === 'error' || kind === 'loading';
}

function showError(err) {
  if (err.status === 401) {
    setState('error',
      h('p', { class: 'error-title' }, t('error.unauthorized')),
      h('button', { type: 'button', id: 'error-token', on: { click: () => openTokenDialog(t('error.unauthorized')) } }, t('token.set')));
    return;
  }
  const seconds = Math.min(RETRY_MAX, Math.max(RETRY_MIN, err.retryAfter ?? RETRY_DEFAULT));
  const message = err.status === 0 ? t('error.network') : err.message;
  const countdown = h('span', { class: 'countdown' });
  let left = seconds;
  const tick = () => { countdown.textContent = t('error.retrying', { s: left }); };
  tick();
  setState('error',
    h('p', { class: 'error-title' }, t('error.title', { status: err.status || '—' })),
    h('p', { class: 'error-message', id: 'error-message' }, message),
    h('p', {}, countdown, ' ',
      h('button', { type: 'button', id: 'retry-now', on: { click: () => load(false) } }, t('error.retryNow'))));
  const gen = generation;
  clearInterval(countdownTimer);
  countdownTimer = setInterval(() => { left = Math.max(0, left - 1); tick(); }, 1000);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => { if (gen === generation) load(false); }, seconds * 1000);
}

/** After a navigation, keep the keyboard where it was (the same control of the new view:
 *  the filter field after Enter, the Next button after paging). */
function restoreFocus() {
  const id = current && current.focusId;
  if (!id) return;
  const el = byId(id);
  if (el && !el.disabled && document.activeElement !== el) {
    el.focus();
    current.focusId = null;
  } else if (el) {
    current.focusId = null;
  }
}

/** Load the current view's data; `initial` shows the loading state. */
async function load(initial) {
  if (!current) return;
  clearTimers();
  const gen = generation;
  if (initial) setState('loading', t('common.loading'));
  try {
    await current.view.load();
    if (gen !== generation) return;
    setState('ok');
    restoreFocus();
    document.body.dataset.loaded = String(Date.now());
    scheduleRefresh();
  } catch (err) {
    if (gen !== generation || (err && err.name === 'AbortError')) return;
    if (!(err && err.name === 'ApiError')) {
      // A bug, not the server: say so rather than retrying forever in silence.
      console.error(err);
      setState('error', h('p', { class: 'error-title' }, t('error.internal')), h('p', {}, String(err)));
      return;
    }
    showError(err);
  }
}

/** What the token may do, asked once per token. */
async function checkAccess() {
  const t0 = token();
  if (access.token === t0) return;
  access.role = t0 ? (await api.access()).Role : null;
  access.token = t0;
}

/** Mount the view the hash names and load it. */
async function route() {
  clearTimers();
  generation += 1;
  const gen = generation;
  if (current && current.abort) current.abort.abort();
  await checkAccess();
  if (gen !== generation) return;
  const focused = document.activeElement;
  const focusId = focused && focused !== document.body && byId('view').contains(focused) ? focused.id : '';
  const { name, arg, params } = parseHash();
  for (const [view, id] of Object.entries({ failures: 'nav-failures', overview: 'nav-overview', groups: 'nav-groups', replays: 'nav-replays', audit: 'nav-audit' })) {
    const link = byId(id);
    if (NAV[name] === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const root = byId('view');
  const controls = h('div', { class: 'view-controls' });
  const state = h('div', { class: 'state', id: 'state', 'aria-live': 'polite' });
  const data = h('div', { class: 'view-data', id: 'view-data' });
  root.dataset.view = name;
  replace(root, controls, state, data);
  const abort = new AbortController();
  const ctx = {
    name, arg, params, controls, data, signal: abort.signal,
    api, href, navigate, notify, confirm: confirmAction, askReason,
    canAct: () => may('operate'),
    canDelete: () => may('admin'),
    reload: () => load(false),
  };
  current = { name, view: VIEWS[name].mount(ctx), state, data, abort, focusId };
  restoreFocus();
  document.title = `${t(`title.${name}`)} · ${t('app.title')}`;
  load(true);
}

function init() {
  const langSelect = byId('lang');
  langSelect.value = lang();
  applyStatic();
  updateTokenButton();
  langSelect.addEventListener('change', () => {
    setLang(langSelect.value);
    applyStatic();
    updateTokenButton();
    route();
  });

  const refresh = byId('refresh');
  try {
    const saved = localStorage.getItem(REFRESH_KEY);
    if (saved && [...refresh.options].some((o) => o.value === saved)) refresh.value = saved;
  } catch {
    // No storage: the default (off) stays.
  }
  refresh.addEventListener('change', () => {
    try { localStorage.setItem(REFRESH_KEY, refresh.value); } catch { /* not kept */ }
    if (current && current.state.dataset.state === 'ok') scheduleRefresh();
  });

  byId('token-button').addEventListener('click', () => openTokenDialog(''));
  const dialog = byId('token-dialog');
  dialog.addEventListener('close', () => {
    if (dialog.returnValue === 'save') {
      const value = byId('token-input').value.trim();
      if (!value) return;
      setToken(value);
      notify(t('token.saved'));
    } else if (dialog.returnValue === 'forget') {
      setToken('');
      notify(t('token.forgotten'));
    } else {
      return;
    }
    byId('token-input').value = '';
    updateTokenButton();
    route();
  });

  window.addEventListener('hashchange', route);
  route();
}

init();
