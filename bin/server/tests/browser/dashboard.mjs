// The dashboard in a real headless Chromium (Debian's `chromium`), driven by playwright-core,
// which never downloads a browser. Run by bin/server/tests/dashboard.rs (cargo test), which
// starts a private redis-server and the server binary and passes:
//
//   BASE_URL        the server, e.g. http://127.0.0.1:41234
//   ADMIN_TOKEN     its admin token; READ_TOKEN its read token (the read API needs one);
//   OPERATE_TOKEN   its operate token (retry, cancel, resolve; no delete)
//   CHROMIUM        the browser executable (default /usr/bin/chromium)
//   SCREENSHOT_DIR  where the four views' screenshots go (docs/screenshots)
//
// Faults are asked of the harness over stdout/stdin: this script prints `@@ <command>` and
// waits for a line `ok` (commands: redis-kill, redis-restart). Every wait has a deadline.
// Exit status 0 only when every test passed; each test prints `ok`/`FAILED` with its name.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const BASE = process.env.BASE_URL;
const ADMIN = process.env.ADMIN_TOKEN;
const READ = process.env.READ_TOKEN;
const OPERATE = process.env.OPERATE_TOKEN;
const SHOTS = process.env.SCREENSHOT_DIR;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const API = `${BASE}/codebase-embedder/api/v1`;
/** Longest wait for one condition in the page. */
const WAIT_MS = 15000;
/** Longest the harness may take to answer a control command. */
const CONTROL_MS = 30000;

if (!BASE || !ADMIN || !READ || !SHOTS) {
  console.error('BASE_URL, ADMIN_TOKEN, READ_TOKEN and SCREENSHOT_DIR are required');
  process.exit(2);
}

// ---- the control channel to the harness --------------------------------------------------
const replies = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const w = waiting.shift();
  if (w) w(line.trim());
  else replies.push(line.trim());
});
async function control(command) {
  process.stdout.write(`@@ ${command}\n`);
  const reply = replies.length
    ? replies.shift()
    : await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${command} within ${CONTROL_MS} ms`)), CONTROL_MS);
      waiting.push((line) => { clearTimeout(timer); resolve(line); });
    });
  assert.equal(reply, 'ok', `harness answered ${reply} to ${command}`);
}

// ---- the API, for fixtures and cross-checks ---------------------------------------------
async function api(method, pathAndQuery, body, token = ADMIN) {
  const r = await fetch(`${API}${pathAndQuery}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const json = await r.json();
  return { status: r.status, json };
}
async function record(tasks) {
  for (let i = 0; i < tasks.length; i += 500) {
    const r = await api('POST', '/admin/failed-tasks', tasks.slice(i, i + 500));
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
}
async function listIds(filters = {}) {
  const ids = [];
  let cursor = '';
  for (let pages = 0; pages < 100; pages += 1) {
    const q = new URLSearchParams({ pageSize: '1000', ...filters, ...(cursor ? { cursor } : {}) });
    const r = await api('GET', `/tasks/failed?${q}`, null, READ);
    assert.equal(r.status, 200);
    ids.push(...r.json.Data.Tasks.map((t) => t.TaskId));
    if (!r.json.Data.NextCursor) return ids;
    cursor = r.json.Data.NextCursor;
  }
  throw new Error('more than 100 pages');
}

// ---- the browser -------------------------------------------------------------------------
// A fresh profile in a temporary directory (playwright makes one per launch) and the flags
// that keep Chromium from reaching out to the network, which is closed here.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  timeout: 60000,
});

/** A new page in its own context (own sessionStorage), with problems collected. */
async function open(options = {}) {
  const context = await browser.newContext({
    viewport: options.viewport || { width: 1280, height: 860 },
    locale: options.locale || 'en-GB',
    timezoneId: options.timezoneId || 'UTC',
  });
  if (options.token !== null) {
    const tok = options.token === undefined ? READ : options.token;
    await context.addInitScript((t) => { if (!sessionStorage.getItem('failed-tasks.token')) sessionStorage.setItem('failed-tasks.token', t); }, tok);
  }
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.problems = [];
  page.dialogs = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A CSP violation or any script error is a failure; 4xx/5xx the tests cause are not.
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (40[0134]|503)/.test(m.text())) {
      page.problems.push(`console: ${m.text()}`);
    }
  });
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  return page;
}

/** Go to a view and wait until it has loaded (the shell marks body[data-loaded]). */
async function view(page, hash) {
  const before = await page.evaluate(() => document.body && document.body.dataset.loaded).catch(() => undefined);
  await page.goto(`${BASE}/ui/${hash}`);
  await waitLoaded(page, before);
}
async function waitLoaded(page, before) {
  await page.waitForFunction((b) => document.body.dataset.loaded && document.body.dataset.loaded !== b
    && document.querySelector('#state').dataset.state === 'ok', before ?? null);
}
/** Click something that navigates, and wait for the next view to load. */
async function clickAndLoad(page, selector) {
  const before = await page.evaluate(() => document.body.dataset.loaded);
  await page.click(selector);
  await waitLoaded(page, before);
}
const rowIds = (page) => page.$$eval('#tasks tbody tr', (rows) => rows.map((r) => r.dataset.taskId));
const hashParams = (page) => new URLSearchParams(new URL(page.url()).hash.split('?')[1] || '');

// ---- fixtures ----------------------------------------------------------------------------
const NOW = Date.now();
const iso = (ms) => new Date(ms).toISOString();
const KINDS = [
  { code: 'TIMEOUT_ERROR', category: 'service_timeout', type: 'embedding', msg: (i) => `upstream embedder timed out after ${1000 + i} ms` },
  { code: 'QUOTA_EXCEEDED', category: 'resource_exhausted', type: 'indexing', msg: (i) => `quota exceeded for repository ${i}` },
  { code: 'PARSE_ERROR', category: 'data_error', type: 'parsing', msg: (i) => `cannot parse /repo/src/file_${i}.rs` },
];
// 250 failures over the last ~29 minutes, 3 kinds (125 / 84 / 41), every 10th pair sharing a
// FailTime so that paging must break ties by TaskId.
const PAGED = Array.from({ length: 250 }, (_, i) => {
  const k = KINDS[i % 2 === 0 ? 0 : (i % 6 === 1 || i % 6 === 3 ? 1 : 2)];
  const at = NOW - 60000 - Math.floor(i / 2) * 14000 - (i % 10 === 1 ? 0 : (i % 2) * 7000);
  return {
    TaskId: `paged-${String(i).padStart(3, '0')}`, TaskType: k.type, ClientId: `client-${i % 7}`,
    FailTime: iso(at), ErrorCode: k.code, ErrorCategory: k.category, ErrorMessage: k.msg(i),
    RetryCount: i % 4, ProcessedFiles: i, CodebasePath: `/repos/r${i % 5}`,
  };
});
const XSS = '<img src=x onerror=alert(1)>';

// ---- the tests ---------------------------------------------------------------------------
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test("the demo's three tasks appear newest first, served with the security policy", async () => {
  const page = await open();
  const response = await page.goto(`${BASE}/ui`);
  assert.equal(new URL(page.url()).pathname, '/ui/', 'redirected to /ui/');
  const csp = response.headers()['content-security-policy'];
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(response.headers()['x-content-type-options'], 'nosniff');
  await waitLoaded(page);
  assert.deepEqual(await rowIds(page), ['task_003', 'task_002', 'task_001']);
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '3');
  // Category names and times: FailTime in the browser's zone (UTC here), UTC on hover.
  const failTime = (await api('GET', '/tasks/failed/task_003', null, READ)).json.Data.FailTime;
  const cell = page.locator('#tasks tbody tr[data-task-id="task_003"] td.fail-time time');
  assert.equal(await cell.getAttribute('datetime'), failTime);
  assert.equal(await cell.getAttribute('title'), `${failTime.replace('T', ' ').replace(/(\.\d+)?Z$/, '')} UTC`);
  assert.equal(await page.textContent('#tasks tbody tr[data-task-id="task_002"] .badge'), 'Authorization');
  return page;
});

test('times are shown in the browser time zone with UTC on hover', async () => {
  const page = await open({ timezoneId: 'Asia/Shanghai' });
  await view(page, '#/failures');
  const failTime = (await api('GET', '/tasks/failed/task_003', null, READ)).json.Data.FailTime;
  const shanghai = new Intl.DateTimeFormat('en-GB', {
    timeZone: 'Asia/Shanghai', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).format(new Date(failTime));
  const cell = page.locator('#tasks tbody tr[data-task-id="task_003"] td.fail-time time');
  assert.ok((await cell.textContent()).includes(shanghai), `${await cell.textContent()} shows ${failTime} at UTC+8 (${shanghai})`);
  assert.ok((await cell.getAttribute('title')).endsWith(' UTC'));
  return page;
});

test('without a token the read-protected API asks for one; the read token shows data but no actions', async () => {
  const page = await open({ token: null });
  await page.goto(`${BASE}/ui/#/failures`);
  await page.waitForSelector('#state[data-state="error"] #error-token');
  await page.click('#error-token');
  await page.fill('#token-input', READ);
  await clickAndLoad(page, '#token-save');
  assert.deepEqual(await rowIds(page), ['task_003', 'task_002', 'task_001']);
  assert.equal(await page.$('#bulk-actions'), null, 'no actions with the read token');
  assert.equal(await page.$('#tasks .row-select'), null);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('failed-tasks.token')), READ);
  assert.equal(await page.evaluate(() => localStorage.getItem('failed-tasks.token')), null);
  // The admin token shows them; the token never appears in the URL.
  await page.click('#token-button');
  await page.fill('#token-input', ADMIN);
  await clickAndLoad(page, '#token-save');
  await page.waitForSelector('#bulk-actions');
  assert.ok(!page.url().includes(ADMIN), page.url());
  return page;
});

test('a category filter narrows the list and the URL, and the link reproduces it', async () => {
  const page = await open();
  await view(page, '#/failures');
  await page.selectOption('#f-category', 'authorization');
  await clickAndLoad(page, '#apply-filters');
  assert.equal(hashParams(page).get('category'), 'authorization');
  assert.deepEqual(await rowIds(page), ['task_002']);
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '1');
  const link = page.url();
  const other = await open();
  await other.goto(link);
  await waitLoaded(other);
  assert.deepEqual(await rowIds(other), ['task_002']);
  assert.equal(await other.inputValue('#f-category'), 'authorization');
  await other.context().close();
  return page;
});

test('paging across 250 recorded tasks visits each exactly once, and Previous goes back', async () => {
  await record(PAGED);
  const expected = await listIds();
  const page = await open();
  await view(page, '#/failures?pageSize=100');
  const seen = [];
  const pages = [];
  for (let n = 1; n <= 10; n += 1) {
    const ids = await rowIds(page);
    pages.push(ids);
    seen.push(...ids);
    assert.equal(await page.getAttribute('#page-number', 'data-page'), String(n));
    if (await page.isDisabled('#next-page')) break;
    await clickAndLoad(page, '#next-page');
  }
  assert.equal(pages.length, 3, '253 tasks at 100 a page');
  assert.equal(seen.length, 253);
  assert.equal(new Set(seen).size, 253, 'no task twice');
  assert.deepEqual(seen, expected, 'every task once, in the API order (newest first)');
  for (const t of PAGED) assert.ok(seen.includes(t.TaskId), t.TaskId);
  await clickAndLoad(page, '#prev-page');
  assert.deepEqual(await rowIds(page), pages[1]);
  await clickAndLoad(page, '#prev-page');
  assert.deepEqual(await rowIds(page), pages[0]);
  assert.ok(await page.isDisabled('#prev-page'));
  return page;
});

test('keyboard only (Tab, typing, Enter) can filter and page', async () => {
  const page = await open();
  await view(page, '#/failures');
  // Every press moves the focus one stop (the date-time inputs have several stops each).
  const tabTo = async (id, key = 'Tab') => {
    for (let i = 0; i < 200; i += 1) {
      await page.keyboard.press(key);
      if (await page.evaluate((x) => document.activeElement && document.activeElement.id === x, id)) return;
    }
    throw new Error(`#${id} not reached with Tab`);
  };
  await tabTo('f-errorCode');
  await page.keyboard.type('TIMEOUT_ERROR');
  let before = await page.evaluate(() => document.body.dataset.loaded);
  await page.keyboard.press('Enter');
  await waitLoaded(page, before);
  assert.equal(hashParams(page).get('errorCode'), 'TIMEOUT_ERROR');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-errorCode', 'the focus stays in the field');
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '126', '125 recorded + task_001');
  const first = await rowIds(page);
  await tabTo('next-page');
  before = await page.evaluate(() => document.body.dataset.loaded);
  await page.keyboard.press('Enter');
  await waitLoaded(page, before);
  assert.equal(await page.getAttribute('#page-number', 'data-page'), '2');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'next-page', 'the focus stays on Next');
  const second = await rowIds(page);
  assert.equal(second.filter((id) => first.includes(id)).length, 0);
  await tabTo('prev-page', 'Shift+Tab');
  before = await page.evaluate(() => document.body.dataset.loaded);
  await page.keyboard.press('Enter');
  await waitLoaded(page, before);
  assert.deepEqual(await rowIds(page), first);
  return page;
});

test('a group click shows its tasks', async () => {
  const page = await open();
  await view(page, '#/groups');
  const pattern = 'quota exceeded for repository <n>';
  const row = page.locator('#groups tbody tr', { hasText: pattern });
  assert.equal(await row.count(), 1);
  const signature = await row.getAttribute('data-signature');
  assert.equal(await row.locator('td.num').first().textContent(), '84');
  await clickAndLoad(page, `#groups tbody tr[data-signature="${signature}"] a.group-link`);
  assert.equal(hashParams(page).get('signature'), signature);
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '84');
  const want = PAGED.filter((t) => t.ErrorCode === 'QUOTA_EXCEEDED').map((t) => t.TaskId);
  const ids = await rowIds(page);
  assert.equal(ids.length, 50);
  for (const id of ids) assert.ok(want.includes(id), id);
  assert.equal(await page.inputValue('#f-signature'), signature);
  return page;
});

test('the search box finds by text and by directory, says how, and Export downloads the current filters', async () => {
  const page = await open();
  await view(page, '#/failures');
  // A text of one failure group's pattern: the group's tasks, found by the group.
  await page.fill('#f-q', 'QUOTA exceeded');
  await clickAndLoad(page, '#apply-filters');
  assert.equal(hashParams(page).get('q'), 'QUOTA exceeded');
  assert.equal(await page.getAttribute('#search-way', 'data-way'), 'groups');
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '84');
  const quota = PAGED.filter((t) => t.ErrorCode === 'QUOTA_EXCEEDED').map((t) => t.TaskId);
  for (const id of await rowIds(page)) assert.ok(quota.includes(id), id);
  // A concrete value (digits): each failure read, in the API's order.
  await page.fill('#f-q', 'file_11');
  await clickAndLoad(page, '#apply-filters');
  assert.equal(await page.getAttribute('#search-way', 'data-way'), 'walk');
  const want = await listIds({ q: 'file_11' });
  assert.ok(want.length > 0);
  assert.deepEqual(await rowIds(page), want);
  assert.deepEqual(want, PAGED.filter((t) => t.ErrorMessage.includes('file_11')).map((t) => t.TaskId).filter((id) => want.includes(id)));
  // A directory, with the text cleared: /repos/r1 holds r1's tasks only.
  await page.fill('#f-q', '');
  await page.fill('#f-pathPrefix', '/repos/r1');
  await page.selectOption('#f-pageSize', '200');
  await clickAndLoad(page, '#apply-filters');
  const r1 = PAGED.filter((t) => t.CodebasePath === '/repos/r1').map((t) => t.TaskId);
  assert.deepEqual([...await rowIds(page)].sort(), [...r1].sort());

  // Export of the current filters (q=timed out: the timeout group), in both formats.
  await view(page, '#/failures?q=timed+out');
  const expected = await listIds({ q: 'timed out' });
  assert.ok(expected.length > 100, `${expected.length} timeouts`);
  const fetchExport = async (button) => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
    return fs.readFileSync(await download.path(), 'utf8');
  };
  const csv = await fetchExport('#export-csv');
  const lines = csv.split('\r\n').filter(Boolean);
  assert.ok(lines[0].startsWith('TaskId,TaskType,ClientId,CodebasePath,'), lines[0]);
  assert.deepEqual(lines.slice(1).map((l) => l.split(',')[0]), expected);
  const ndjson = await fetchExport('#export-ndjson');
  const rows = ndjson.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.deepEqual(rows.map((r) => r.TaskId), expected);
  assert.ok(rows.every((r) => /timed out/.test(r.ErrorMessage)));
  await page.waitForSelector('#notice');
  // A bad search is the API's 400, shown as an error.
  await page.goto(`${BASE}/ui/#/failures?pathPrefix=repos`);
  await page.waitForSelector('#state[data-state="error"] #error-message');
  assert.match(await page.textContent('#error-message'), /pathPrefix/);
  return page;
});

test('the overview shows the window, alerts with their levels linking to their tasks, and the timeline', async () => {
  const page = await open();
  await view(page, '#/overview?window=1h');
  // The 250 recorded and the demo's three (moved to the server's start, within the hour).
  assert.equal(await page.textContent('#stat-total .stat-value'), '253');
  // Server flags: error codes warn above 50 and are critical above 100.
  const critical = page.locator('#alerts li[data-rule="error_code_threshold"][data-level="critical"]');
  assert.equal(await critical.count(), 1);
  assert.match(await critical.textContent(), /TIMEOUT_ERROR/);
  const warning = page.locator('#alerts li[data-rule="error_code_threshold"][data-level="warning"]');
  assert.equal(await warning.count(), 1);
  assert.match(await warning.textContent(), /QUOTA_EXCEEDED/);
  const levels = await page.$$eval('#alerts li', (lis) => lis.map((li) => li.dataset.level));
  assert.equal(levels[0], 'critical', `critical first: ${levels}`);
  const bars = await page.$$eval('svg.timeline rect.bar', (rs) => rs.reduce((s, r) => s + Number(r.dataset.count), 0));
  assert.equal(bars, 253, 'the timeline holds every failure of the window');
  const cat = await page.$$eval('#by-category li', (lis) => Object.fromEntries(lis.map((li) => [li.dataset.name, li.querySelector('.bar-count').textContent])));
  assert.deepEqual(cat, { service_timeout: '126', authorization: '1', resource_exhausted: '85', data_error: '41', system_error: '0' });
  await clickAndLoad(page, '#alerts li[data-level="critical"] a.alert-link');
  assert.equal(hashParams(page).get('errorCode'), 'TIMEOUT_ERROR');
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '126', '125 recorded + task_001');
  return page;
});

test('labels switch to Chinese in the header, and follow a Chinese browser by default', async () => {
  const page = await open();
  await view(page, '#/failures?category=authorization');
  const before = await page.evaluate(() => document.body.dataset.loaded);
  await page.selectOption('#lang', 'zh');
  await waitLoaded(page, before);
  assert.equal(await page.textContent('#nav-failures'), '失败列表');
  assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
  assert.equal(await page.textContent('#tasks tbody tr[data-task-id="task_002"] .badge'), '权限错误');
  const zh = await open({ locale: 'zh-CN' });
  await view(zh, '#/overview');
  assert.equal(await zh.textContent('#nav-overview'), '概览');
  await zh.context().close();
  return page;
});

test('an ErrorMessage of <img src=x onerror=alert(1)> renders as text and no dialog opens', async () => {
  await record([{
    TaskId: 'xss-1', TaskType: '<b>bold</b>', ClientId: '<script>alert(2)</script>', FailTime: iso(NOW - 30000),
    ErrorCode: 'XSS_TEST', ErrorCategory: 'system_error', ErrorMessage: XSS,
  }]);
  const page = await open();
  await view(page, `#/failures?errorCode=XSS_TEST`);
  assert.equal(await page.textContent('#tasks tbody tr[data-task-id="xss-1"] td.message'), XSS);
  assert.equal(await page.textContent('#tasks tbody tr[data-task-id="xss-1"] td:nth-child(4)'), '<script>alert(2)</script>');
  assert.equal(await page.locator('#view img, #view b, #view script').count(), 0);
  await view(page, '#/task/xss-1');
  assert.equal(await page.textContent('dd[data-field="ErrorMessage"]'), XSS);
  await view(page, '#/groups');
  // The group's pattern has the number normalised: <img src=x onerror=alert(<n>)>
  assert.equal(await page.locator('#groups td.pattern', { hasText: '<img src=x onerror=alert(<n>)>' }).count(), 1);
  assert.equal(await page.locator('img').count(), 0);
  assert.deepEqual(page.dialogs, [], 'no dialog opened');
  return page;
});

test('the task view lists its failed files, page after page, filtered by error code with counts per code', async () => {
  const files = Array.from({ length: 60 }, (_, i) => ({
    Path: `src/file_${String(i).padStart(2, '0')}.ts`, Operation: ['add', 'modify', 'delete'][i % 3],
    ErrorCode: i % 4 === 0 ? 'RATE_LIMITED' : 'EMBED_TIMEOUT', ErrorMessage: i === 1 ? '<b>slow</b>' : '',
  }));
  await record([{
    TaskId: 'files-1', TaskType: 'embedding', ClientId: 'client-files', CodebasePath: '/projects/files',
    FailTime: iso(NOW - 20000), ErrorCode: 'PARTIAL', FailedFiles: 61, Files: files,
  }]);
  const page = await open();
  await view(page, '#/task/files-1');
  assert.equal(await page.textContent('dd[data-field="FailedFiles"]'), '61');
  assert.equal(await page.locator('#files tbody tr').count(), 50);
  assert.equal(await page.getAttribute('#files tbody tr:first-child', 'data-path'), 'src/file_00.ts');
  assert.equal(await page.textContent('#files tbody tr[data-path="src/file_01.ts"] td.message'), '<b>slow</b>');
  assert.equal(await page.locator('#failed-files b').count(), 0);
  assert.equal(await page.textContent('#file-codes button[data-code="RATE_LIMITED"]'), 'RATE_LIMITED (15)');
  assert.equal(await page.textContent('#file-codes button[data-code="EMBED_TIMEOUT"]'), 'EMBED_TIMEOUT (45)');
  await page.click('#files-more');
  await page.waitForFunction(() => document.querySelectorAll('#files tbody tr').length === 60);
  assert.equal(await page.isVisible('#files-more'), false);
  await page.click('#file-codes button[data-code="RATE_LIMITED"]');
  await page.waitForFunction(() => document.querySelectorAll('#files tbody tr').length === 15);
  assert.equal(await page.getAttribute('#file-codes button[data-code="RATE_LIMITED"]', 'aria-pressed'), 'true');
  assert.match(await page.textContent('#files-shown'), /15 of 15/);
  await page.click('#file-codes button[data-code=""]');
  await page.waitForFunction(() => document.querySelectorAll('#files tbody tr').length === 50);
  // A task whose failure named no files has no such card.
  await view(page, '#/task/xss-1');
  assert.equal(await page.locator('#failed-files').count(), 0);
  return page;
});

test('delete asks first, cancelling keeps the task, confirming removes it and shows the count', async () => {
  const page = await open({ token: ADMIN });
  await view(page, '#/task/paged-007');
  await page.click('#delete-task');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /paged-007/);
  await page.click('#confirm-cancel');
  assert.equal((await api('GET', '/tasks/failed/paged-007', null, READ)).status, 200, 'cancel keeps it');
  await page.click('#delete-task');
  await page.waitForSelector('#confirm-dialog[open]');
  await clickAndLoad(page, '#confirm-ok');
  assert.equal(new URL(page.url()).hash, '#/failures');
  assert.match(await page.textContent('#notice'), /^Failed tasks deleted: 1\./);
  assert.equal((await api('GET', '/tasks/failed/paged-007', null, READ)).status, 404);

  // A selection: two rows, the confirmation names how many.
  await view(page, '#/failures?clientId=client-3');
  const ids = (await rowIds(page)).slice(0, 2);
  for (const id of ids) await page.check(`#tasks tbody tr[data-task-id="${id}"] .row-select`);
  assert.equal(await page.textContent('#delete-selected'), 'Delete selected (2)');
  await page.click('#delete-selected');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /\b2\b/);
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), /^Failed tasks deleted: 2\./);
  for (const id of ids) assert.equal((await api('GET', `/tasks/failed/${id}`, null, READ)).status, 404, id);
  const rows = await rowIds(page);
  for (const id of ids) assert.ok(!rows.includes(id), id);

  // Every match of a filter.
  await view(page, '#/failures?errorCode=XSS_TEST');
  await page.click('#delete-matching');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /all 1 failed tasks/);
  await clickAndLoad(page, '#confirm-ok');
  assert.equal((await api('GET', '/tasks/failed/xss-1', null, READ)).status, 404);
  await page.waitForSelector('#empty');
  return page;
});

test('retry now with a token shows NextRetryAt and the count; the retry filter finds it', async () => {
  const page = await open({ token: ADMIN });
  // task_001 has used its 3 retries: a final failure, nothing scheduled.
  const before = (await api('GET', '/tasks/failed/task_001', null, READ)).json.Data;
  assert.equal(before.FinalFailure, true);
  assert.equal(before.NextRetryAt, null);
  await view(page, '#/task/task_001');
  assert.equal(await page.textContent('dd[data-field="NextRetryAt"]'), '—');
  await page.click('#retry-task');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /task_001/);
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), /^Retries made due now: 1\./);
  const after = (await api('GET', '/tasks/failed/task_001', null, READ)).json.Data;
  assert.ok(after.NextRetryAt, 'scheduled');
  assert.equal(await page.getAttribute('dd[data-field="NextRetryAt"] time', 'datetime'), after.NextRetryAt);
  // The attempts history is on the task view.
  assert.ok(await page.isVisible('#attempts'));

  // A selection from the listing: the count of both, NextRetryAt in their rows.
  await view(page, '#/failures?errorCode=QUOTA_EXCEEDED&clientId=client-1');
  const ids = (await rowIds(page)).slice(0, 2);
  for (const id of ids) await page.check(`#tasks tbody tr[data-task-id="${id}"] .row-select`);
  await page.click('#retry-selected');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /\b2\b/);
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), /^Retries made due now: (2\.|1; already handed to the workers: 1\.)/);
  for (const id of ids) {
    const t = (await api('GET', `/tasks/failed/${id}`, null, READ)).json.Data;
    assert.ok(t.NextRetryAt, id);
    assert.equal(await page.getAttribute(`#tasks tbody tr[data-task-id="${id}"] td.next-retry time`, 'datetime'), t.NextRetryAt);
  }
  // Every match of the filters: the confirmation and the notice give the count.
  await view(page, '#/failures?errorCode=QUOTA_EXCEEDED&clientId=client-2');
  const total = Number(await page.getAttribute('#total-count', 'data-count'));
  assert.ok(total > 5, `${total}`);
  await page.click('#retry-matching');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), new RegExp(`all ${total} failed tasks`));
  await clickAndLoad(page, '#confirm-ok');
  const done = (await page.textContent('#notice')).match(/^Retries made due now: (\d+)(?:; already handed to the workers: (\d+))?/);
  assert.ok(done, await page.textContent('#notice'));
  assert.equal(Number(done[1]) + Number(done[2] || 0), total);
  // retry=final lists final failures only.
  await view(page, '#/failures?retry=final&pageSize=200');
  assert.equal(await page.inputValue('#f-retry'), 'final');
  const finals = await page.$$eval('#tasks tbody tr td .final', (els) => els.map((e) => e.classList.contains('yes')));
  assert.ok(finals.length > 0 && finals.every(Boolean), `${finals}`);
  return page;
});

test('a whole group is retried from the groups view, asking first with its count', async () => {
  const page = await open({ token: ADMIN });
  await view(page, '#/groups');
  const row = page.locator('#groups tbody tr', { hasText: 'cannot parse <path>' });
  const n = Number(await row.locator('td.num').first().textContent());
  assert.equal(n, 41);
  await row.locator('button.retry-group').click();
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /all 41 failed tasks of the group/);
  await clickAndLoad(page, '#confirm-ok');
  const notice = await page.textContent('#notice');
  const m = notice.match(/^Retries made due now: (\d+)(?:; already handed to the workers: (\d+))?/);
  assert.ok(m, notice);
  assert.equal(Number(m[1]) + Number(m[2] || 0), 41, notice);
  const parse = await api('GET', '/tasks/failed?errorCode=PARSE_ERROR&retry=scheduled&pageSize=100', null, READ);
  assert.equal(parse.json.Data.TotalTasks, 41, 'every task of the group has its retry scheduled');
  return page;
});

test('retries are held from a filtered listing or a group, shown on the overview with their held count, and released', async () => {
  const page = await open({ token: ADMIN });
  // Without a scope filter (only a time filter) there is nothing to hold.
  await view(page, `#/failures?since=${encodeURIComponent(iso(NOW - 3600000))}`);
  assert.equal(await page.isDisabled('#hold-matching'), true);
  // The listing's filters make the scope; the reason is asked for.
  await view(page, '#/failures?errorCode=QUOTA_EXCEEDED&clientId=client-3');
  await page.click('#hold-matching');
  await page.waitForSelector('#hold-dialog[open]');
  assert.match(await page.textContent('#hold-text'), /ErrorCode=QUOTA_EXCEEDED, ClientId=client-3/);
  await page.fill('#hold-reason', 'quota provider outage');
  await clickAndLoad(page, '#hold-ok');
  assert.match(await page.textContent('#notice'), /^Retries of ErrorCode=QUOTA_EXCEEDED, ClientId=client-3 are held \(gate g[0-9a-f]{20}\)\.$/);
  let gates = (await api('GET', '/retry-gates', null, READ)).json.Data.Gates;
  assert.equal(gates.length, 1);
  const gate = gates[0];
  assert.deepEqual(gate.Scope, { ErrorCode: 'QUOTA_EXCEEDED', ClientId: 'client-3' });
  assert.equal(gate.Mode, 'hold');
  assert.equal(gate.Reason, 'quota provider outage');
  assert.equal(gate.CreatedBy, 'operator');
  // A failure of that scope whose retry is due at once is held by the server's scheduler.
  await record([{
    TaskId: 'held-001', TaskType: 'indexing', ClientId: 'client-3', FailTime: iso(Date.now() - 600000),
    ErrorCode: 'QUOTA_EXCEEDED', ErrorCategory: 'resource_exhausted', ErrorMessage: 'quota exceeded for repository 9999',
    RetryCount: 0, ProcessedFiles: 1, CodebasePath: '/repos/r0',
  }]);
  const deadline = Date.now() + WAIT_MS;
  while ((await api('GET', '/retry-gates', null, READ)).json.Data.Gates[0].Held < 1) {
    assert.ok(Date.now() < deadline, 'the scheduler parked the retry');
    await new Promise((r) => setTimeout(r, 100));
  }
  const held = (await api('GET', '/retry-gates', null, READ)).json.Data.Gates[0].Held;
  // The overview shows the gate, its scope, reason and held count.
  await view(page, '#/overview?window=1h');
  const row = page.locator(`#gates tbody tr[data-gate-id="${gate.GateId}"]`);
  assert.equal(await row.locator('td.scope').textContent(), 'ErrorCode=QUOTA_EXCEEDED, ClientId=client-3');
  assert.equal(await row.locator('td.mode').textContent(), 'hold');
  assert.equal(await row.locator('td.reason').textContent(), 'quota provider outage');
  assert.equal(Number(await row.locator('td.held').textContent()), held);
  // A read token sees the gates but cannot release them.
  const reader = await open();
  await view(reader, '#/overview?window=1h');
  assert.equal(await reader.locator('#gates tbody tr').count(), 1);
  assert.equal(await reader.locator('button.release-gate').count(), 0);
  await reader.context().close();
  // Release asks first; cancelling keeps the gate, confirming releases it.
  await row.locator('button.release-gate').click();
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), new RegExp(gate.GateId));
  await page.click('#confirm-cancel');
  assert.equal((await api('GET', '/retry-gates', null, READ)).json.Data.Gates.length, 1);
  await row.locator('button.release-gate').click();
  await page.waitForSelector('#confirm-dialog[open]');
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), new RegExp(`^Gate ${gate.GateId} released`));
  assert.deepEqual((await api('GET', '/retry-gates', null, READ)).json.Data.Gates, []);
  assert.ok(await page.isVisible('#gates-none'));
  // A failure group: its signature is the scope.
  await view(page, '#/groups');
  const groupRow = page.locator('#groups tbody tr', { hasText: 'quota exceeded for repository' });
  const signature = await groupRow.getAttribute('data-signature');
  await groupRow.locator('button.hold-group').click();
  await page.waitForSelector('#hold-dialog[open]');
  assert.match(await page.textContent('#hold-text'), new RegExp(`Signature=${signature}`));
  // No reason, no gate: the dialog does not submit an empty reason.
  await page.click('#hold-ok');
  assert.ok(await page.isVisible('#hold-dialog[open]'));
  await page.fill('#hold-reason', 'one group at a time');
  await clickAndLoad(page, '#hold-ok');
  gates = (await api('GET', '/retry-gates', null, READ)).json.Data.Gates;
  assert.deepEqual(gates.map((g) => g.Scope), [{ Signature: signature }]);
  assert.equal((await api('DELETE', `/admin/retry-gates/${gates[0].GateId}`)).status, 200);
  return page;
});

test('a circuit breaker that opened is on the overview with its state, and an operate token releases it', async () => {
  // Retries of one task type failing again with a retryable category: the server's breaker
  // (two outcomes within its 10 s window, the harness's settings) opens on them.
  const failed = iso(Date.now());
  await record([1, 2, 3].map((i) => ({
    TaskId: `breaker-${i}`, TaskType: 'reranking', ClientId: 'client-breaker', CodebasePath: '/repos/breaker',
    StartTime: failed, FailTime: failed, ErrorCode: 'TIMEOUT_ERROR', ErrorCategory: 'service_timeout',
    ErrorMessage: `reranker timed out on retry ${i}`, RetryCount: 1, ProcessedFiles: 0,
  })));
  const breakerOf = async () => {
    const r = await api('GET', '/retry-breakers', null, READ);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json.Data.Breakers.find((b) => b.TaskType === 'reranking' && b.ErrorCategory === 'service_timeout');
  };
  const until = async (what, ok) => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const b = await breakerOf();
      if (ok(b)) return b;
      assert.ok(Date.now() < deadline, `${what} within ${WAIT_MS} ms: ${JSON.stringify(b)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const breaker = await until('the breaker opened', (b) => b && b.State === 'open');
  assert.equal(breaker.Opens, 1);
  assert.equal(breaker.FailedAgain, 3);
  const gate = (await api('GET', '/retry-gates', null, READ)).json.Data.Gates.find((g) => g.GateId === breaker.GateId);
  assert.equal(gate.CreatedBy, 'breaker');
  assert.deepEqual(gate.Scope, { TaskType: 'reranking', ErrorCategory: 'service_timeout' });
  // A read token sees the breaker but cannot release it.
  const reader = await open();
  await view(reader, '#/overview?window=1h');
  const seen = reader.locator('#breakers tbody tr[data-task-type="reranking"]');
  assert.equal(await seen.locator('td.breaker-state .badge').textContent(), 'open');
  assert.equal(await reader.locator('button.release-breaker').count(), 0);
  await reader.context().close();
  // The operate token: the row with its state, reason, held count, cool-down and opens.
  const page = await open({ token: OPERATE });
  await view(page, '#/overview?window=1h');
  const row = page.locator('#breakers tbody tr[data-task-type="reranking"][data-category="service_timeout"]');
  assert.equal(await row.getAttribute('data-state'), 'open');
  assert.equal(await row.locator('td.category').textContent(), 'Service timeout');
  assert.equal(await row.locator('td.breaker-state .badge.breaker-open').textContent(), 'open');
  assert.equal(await row.locator('td.reason').textContent(), breaker.Reason);
  assert.match(await row.locator('td.held').textContent(), /^\d+$/);
  assert.equal(await row.locator('td.cooldown time').getAttribute('datetime'), breaker.CooldownEnds);
  assert.equal(await row.locator('td.opens').textContent(), '1');
  assert.equal(await row.locator('td.failed-again').textContent(), '3 of 3');
  assert.match(await page.textContent('#breaker-settings'), /at least 2 retries .* within 10 s/);
  // Release asks first (with a reason); confirming releases its gate, and the breaker closes.
  await row.locator('button.release-breaker').click();
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), new RegExp(`${breaker.GateId}.*TaskType=reranking, ErrorCategory=service_timeout`));
  await page.fill('#confirm-reason', 'reranker is back');
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), new RegExp(`^Gate ${breaker.GateId} released: the circuit breaker of TaskType=reranking`));
  const gates = (await api('GET', '/retry-gates', null, READ)).json.Data.Gates;
  assert.ok(!gates.some((g) => g.GateId === breaker.GateId), JSON.stringify(gates));
  await until('the breaker closed', (b) => !b || b.State === 'closed');
  const before = await page.evaluate(() => document.body.dataset.loaded);
  await page.reload();
  await waitLoaded(page, before);
  assert.equal(await row.locator('button.release-breaker').count(), 0, 'nothing to release once closed');
  // Its opening is in the audit log, by the breaker, found by the action filter.
  await view(page, '#/audit?action=breaker_opened');
  const opened = await page.$eval('#audit tbody tr', (tr) => [...tr.cells].map((c) => c.textContent));
  assert.equal(opened[1], 'breaker');
  assert.equal(opened[2], 'Breaker opened');
  return page;
});

test('resolve asks first and the task leaves the list, counted as recovered', async () => {
  const page = await open({ token: ADMIN });
  await view(page, '#/task/paged-012');
  await page.click('#resolve-task');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /paged-012/);
  await clickAndLoad(page, '#confirm-ok');
  assert.equal(new URL(page.url()).hash, '#/failures');
  assert.match(await page.textContent('#notice'), /Resolved/);
  assert.equal((await api('GET', '/tasks/failed/paged-012', null, READ)).status, 404);
  await view(page, '#/overview?window=1h');
  assert.ok(Number(await page.textContent('#stat-recovered .stat-value')) >= 1);
  return page;
});

test('a later successful run supersedes the older failures of its codebase: gone from the list, counted apart', async () => {
  const fail = iso(Date.now() - 60_000);
  await record([0, 1].map((i) => ({ TaskId: `stale-${i}`, TaskType: 'embedding', ClientId: 'client-sync', CodebasePath: '/projects/sync',
    StartTime: fail, FailTime: fail, ErrorCode: 'TIMEOUT_ERROR', ErrorMessage: 'timed out', RetryCount: 0 })));
  const page = await open({ token: READ });
  await view(page, '#/overview?window=1h');
  const before = Number(await page.textContent('#stat-superseded .stat-value'));
  // The breakdown by codebase counts them and links to the listing of that directory.
  const sync = page.locator('#by-codebase li[data-name="/projects/sync"]');
  assert.equal(await sync.locator('.bar-count').textContent(), '2');
  await clickAndLoad(page, '#by-codebase li[data-name="/projects/sync"] a');
  assert.equal(hashParams(page).get('pathPrefix'), '/projects/sync');
  assert.deepEqual([...await rowIds(page)].sort(), ['stale-0', 'stale-1']);
  await view(page, '#/overview?window=1h');
  const r = await api('POST', '/admin/task-successes', { TaskType: 'embedding', ClientId: 'client-sync', CodebasePath: '/projects/sync' });
  assert.equal(r.status, 200);
  assert.equal(r.json.Data.Superseded, 2);
  await view(page, '#/failures?clientId=client-sync');
  await page.waitForSelector('#empty');
  await view(page, '#/overview?window=1h');
  assert.equal(Number(await page.textContent('#stat-superseded .stat-value')), before + 2);
  return page;
});

test('an operate token may retry but is not offered delete; the reason it gives is in the audit view', async () => {
  // Failed just now: its first retry is not due yet (30 s), so retrying it now schedules it.
  const fail = iso(Date.now());
  await record([{ TaskId: 'audit-1', TaskType: 'embedding', ClientId: 'client-audit', CodebasePath: '/projects/audit',
    StartTime: fail, FailTime: fail, ErrorCode: 'TIMEOUT_ERROR', ErrorMessage: 'timed out', RetryCount: 0,
    ProcessedFiles: 1, ErrorCategory: 'service_timeout' }]);
  const page = await open({ token: OPERATE });
  await view(page, '#/task/audit-1');
  await page.waitForSelector('#retry-task');
  assert.equal(await page.$('#delete-task'), null, 'no delete for the operate role');
  await view(page, '#/failures?clientId=client-audit');
  await page.waitForSelector('#retry-matching');
  assert.equal(await page.$('#delete-matching'), null);
  assert.equal(await page.$('#delete-selected'), null);
  await view(page, '#/task/audit-1');
  await page.click('#retry-task');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.fill('#confirm-reason', 'provider back · 服务恢复');
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), /^Retries made due now: 1\./);
  await view(page, '#/audit?actor=operate');
  await page.waitForSelector('#audit tbody tr', { timeout: WAIT_MS }).catch(async () => {
    assert.fail(`no audit rows: ${await page.textContent('#view')} · ${JSON.stringify((await api('GET', '/audit?pageSize=3', null, READ)).json)}`);
  });
  const first = await page.$eval('#audit tbody tr', (tr) => [...tr.cells].map((c) => c.textContent));
  assert.equal(first[1], 'operate');
  assert.equal(first[2], 'Retry now');
  assert.equal(first[3], 'audit-1');
  assert.equal(first[5], 'provider back · 服务恢复');
  // The filter form: another action finds nothing of this actor's.
  await page.selectOption('#audit-action', 'delete');
  await clickAndLoad(page, '#audit-apply');
  assert.equal(hashParams(page).get('action'), 'delete');
  await page.waitForSelector('#empty');
  return page;
});

test('a replay shows its progress in the Replays view, and an operator aborts it there with a reason', async () => {
  // A slow replay of the parsing failures: it stays running while the test looks at it.
  const made = await api('POST', '/admin/replays', { Filters: { errorCode: 'PARSE_ERROR' }, Reason: 'parser fixed', PerSecond: 0.5 }, OPERATE);
  assert.equal(made.status, 200, JSON.stringify(made.json));
  const id = made.json.Data.ReplayId;
  const matched = made.json.Data.Matching;
  assert.ok(matched > 0, 'parsing failures to replay');
  // A reader follows it (state, filters, reason, progress of the matches) and may not abort.
  const reader = await open();
  await view(reader, '#/replays');
  const seen = reader.locator(`#replays tbody tr[data-replay-id="${id}"]`);
  assert.equal(await seen.getAttribute('data-state'), 'running');
  assert.equal(await seen.locator('td.filters').textContent(), 'errorCode=PARSE_ERROR');
  assert.equal(await seen.locator('td.reason').textContent(), 'parser fixed');
  assert.equal(await seen.locator('td.actor').textContent(), 'operate');
  assert.match(await seen.locator('td.progress').textContent(), new RegExp(`^ \\d+ of ${matched}$`));
  assert.equal(await seen.locator('td.progress progress').getAttribute('max'), String(matched));
  assert.equal(await reader.locator('button.abort-replay').count(), 0);
  assert.equal(await reader.getAttribute('#nav-replays', 'aria-current'), 'page');
  await reader.context().close();
  // The operator is asked first: cancelling keeps it running, confirming aborts it.
  const page = await open({ token: OPERATE });
  await view(page, '#/replays');
  const row = page.locator(`#replays tbody tr[data-replay-id="${id}"]`);
  await row.locator('button.abort-replay').click();
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), new RegExp(`${id} \\(errorCode=PARSE_ERROR\\)`));
  await page.click('#confirm-cancel');
  assert.equal((await api('GET', `/replays/${id}`, null, READ)).json.Data.State, 'running');
  await row.locator('button.abort-replay').click();
  await page.waitForSelector('#confirm-dialog[open]');
  await page.fill('#confirm-reason', 'wrong filter');
  await clickAndLoad(page, '#confirm-ok');
  assert.match(await page.textContent('#notice'), new RegExp(`^Replay ${id} aborted; \\d+ waiting retries cancelled\\.$`));
  assert.equal(await row.getAttribute('data-state'), 'aborted');
  assert.equal(await row.locator('button.abort-replay').count(), 0);
  const after = (await api('GET', `/replays/${id}`, null, READ)).json.Data;
  assert.equal(after.State, 'aborted');
  assert.ok(after.Finished);
  // The abort is in the audit log with who and why.
  const entries = (await api('GET', '/audit?action=replay_aborted', null, READ)).json.Data.Entries;
  assert.equal(entries[0].Target, id);
  assert.equal(entries[0].Actor, 'operate');
  assert.equal(entries[0].Reason, 'wrong filter');
  return page;
});

test('screenshots of the four views', async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  // Wide enough for every column of the listing, NextRetryAt included.
  const page = await open({ token: ADMIN, viewport: { width: 1480, height: 900 } });
  const shots = [
    ['failures.png', '#/failures'],
    ['task.png', '#/task/paged-000'],
    ['overview.png', '#/overview?window=1h'],
    ['groups.png', '#/groups'],
  ];
  for (const [file, hash] of shots) {
    await view(page, hash);
    await page.screenshot({ path: path.join(SHOTS, file), fullPage: false });
    assert.ok(fs.statSync(path.join(SHOTS, file)).size > 10000, file);
  }
  return page;
});

test('auto-refresh shows a new failure without a reload', async () => {
  const page = await open();
  await view(page, '#/failures?errorCode=LATE_ARRIVAL');
  await page.waitForSelector('#empty');
  await page.selectOption('#refresh', '5');
  await record([{ TaskId: 'late-1', TaskType: 'embedding', ClientId: 'c', FailTime: iso(Date.now()), ErrorCode: 'LATE_ARRIVAL' }]);
  await page.waitForSelector('#tasks tbody tr[data-task-id="late-1"]', { timeout: 20000 });
  return page;
});

test('store down shows the error state, and the page recovers by itself when Redis is back', async () => {
  const page = await open();
  await view(page, '#/failures');
  await control('redis-kill');
  await page.reload();
  await page.waitForSelector('#state[data-state="error"] #error-message');
  assert.equal(await page.textContent('#error-message'), 'Redis服务不可用，请稍后再试');
  assert.match(await page.textContent('#state'), /Retrying in \d+ s/);
  assert.ok(await page.isHidden('#view-data'));
  await control('redis-restart');
  // No click: the page retries after the server's Retry-After. The restarted Redis is empty.
  await page.waitForSelector('#state[data-state="ok"]', { state: 'attached', timeout: 30000 });
  await page.waitForSelector('#empty');
  assert.equal(await page.getAttribute('#total-count', 'data-count'), '0');
  return page;
});

// ---- run -----------------------------------------------------------------------------------
let failed = 0;
for (const { name, fn } of tests) {
  const started = Date.now();
  let page = null;
  try {
    page = await fn();
    if (page && page.problems.length) throw new Error(`problems in the page:\n  ${page.problems.join('\n  ')}`);
    console.log(`ok      ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAILED  ${name}\n        ${String(e && e.stack || e).split('\n').join('\n        ')}`);
    if (page) {
      const file = path.join(os.tmpdir(), `dashboard-failure-${failed}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      console.log(`        screenshot: ${file}`);
    }
  } finally {
    if (page) await page.context().close().catch(() => {});
  }
}
await browser.close();
console.log(`${tests.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
