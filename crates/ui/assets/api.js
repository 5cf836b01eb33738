// The one place that talks to the API. The token (admin or read) lives in this tab's
// sessionStorage and travels only as an Authorization header, never in a URL.

export const BASE = '/codebase-embedder/api/v1';
const TOKEN_KEY = 'failed-tasks.token';
/** No call waits longer than this for the server. */
const TIMEOUT_MS = 15000;
/** The reason the operator gave in the last confirmation (empty: none), sent with every
 *  action as `X-Reason` for the audit log until the next confirmation. */
let actionReason = '';

export function setReason(reason) {
  actionReason = (reason || '').trim().slice(0, 500);
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token is simply not kept.
  }
}

/** An answer other than success: the HTTP status, the envelope's Code and Message, and the
 *  Retry-After seconds when the server sent them. `status` 0: the server was not reached. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function call(method, path, { query, signal, body } = {}) {
  const url = new URL(BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && actionReason) headers['X-Reason'] = encodeURIComponent(actionReason);
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const timeout = AbortSignal.timeout(TIMEOUT_MS);
  const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
  let response;
  try {
    response = await fetch(url, {
      method, headers, signal: both, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (signal && signal.aborted) throw e;
    throw new ApiError(0, 0, null, null);
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  if (response.ok && envelope && envelope.Success === true) return envelope.Data;
  const retryAfter = Number.parseInt(response.headers.get('Retry-After') || '', 10);
  throw new ApiError(
    response.status,
    envelope && typeof envelope.Code === 'number' ? envelope.Code : response.status,
    envelope && typeof envelope.Message === 'string' ? envelope.Message : response.statusText,
    Number.isFinite(retryAfter) ? retryAfter : null,
  );
}

/** The export of `query` as a file (a Blob): no deadline of its own, it may be long. */
async function download(path, query) {
  const url = new URL(BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = {};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let response;
  try {
    response = await fetch(url, { headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' });
  } catch {
    throw new ApiError(0, 0, null, null);
  }
  if (response.ok) return response.blob();
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  throw new ApiError(
    response.status,
    envelope && typeof envelope.Code === 'number' ? envelope.Code : response.status,
    envelope && typeof envelope.Message === 'string' ? envelope.Message : response.statusText,
    null,
  );
}

const id = (taskId) => encodeURIComponent(taskId);

/** What this server can do, learned from its answers: `retries` is true once a task came
 *  with `NextRetryAt` (a server with automatic retries), false once one came without it,
 *  null while no task was seen. */
export const features = { retries: null };
function note(tasks) {
  if (tasks.length) features.retries = 'NextRetryAt' in tasks[0];
}

export const api = {
  list: (query, signal) => call('GET', '/tasks/failed', { query, signal }).then((d) => { note(d.Tasks || []); return d; }),
  task: (taskId, signal) => call('GET', `/tasks/failed/${id(taskId)}`, { signal }).then((d) => { note([d]); return d; }),
  /** A page of a task's failed files (`pageSize`, `cursor`, `errorCode`), with counts per code. */
  files: (taskId, query, signal) => call('GET', `/tasks/failed/${id(taskId)}/files`, { query, signal }),
  stats: (window, signal) => call('GET', '/tasks/failed-stats', { query: { window }, signal }),
  groups: (query, signal) => call('GET', '/tasks/failed-groups', { query, signal }),
  remove: (taskId) => call('DELETE', `/admin/failed-tasks/${id(taskId)}`),
  removeMatching: (filters) => call('DELETE', '/admin/failed-tasks', { query: filters }),
  retry: (taskId) => call('POST', `/admin/failed-tasks/${id(taskId)}/retry`),
  cancelRetry: (taskId) => call('DELETE', `/admin/failed-tasks/${id(taskId)}/retry`),
  resolve: (taskId) => call('POST', `/admin/failed-tasks/${id(taskId)}/resolve`),
  retryMatching: (filters) => call('POST', '/admin/retries', { query: filters }),
  exportFile: (format, filters) => download('/tasks/failed/export', { ...filters, format }),
  gates: (signal) => call('GET', '/retry-gates', { signal }),
  /** A `hold` gate on `scope` (the API's Scope object) with the operator's reason. */
  hold: (scope, reason) => call('POST', '/admin/retry-gates', { body: { Scope: scope, Mode: 'hold', Reason: reason } }),
  releaseGate: (gateId) => call('DELETE', `/admin/retry-gates/${encodeURIComponent(gateId)}`),
  /** The retry circuit breakers open, half-open or closed lately, and their settings. */
  breakers: (signal) => call('GET', '/retry-breakers', { signal }),
  /** The token's name, role and client (`GET /access`: nulls without a known token). */
  async access() {
    try {
      return await call('GET', '/access');
    } catch {
      return { Name: null, Role: null, ClientId: null };
    }
  },
  audit: (query, signal) => call('GET', '/audit', { query, signal }),
  replays: (signal) => call('GET', '/replays', { signal }),
  abortReplay: (replayId) => call('DELETE', `/admin/replays/${encodeURIComponent(replayId)}`),
};
