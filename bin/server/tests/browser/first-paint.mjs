// First paint of the dashboard's Failures view over a big store (docs/BENCHMARKS.md).
// Run by scripts/dashboard-first-paint, which starts a private redis-server and a release
// server. Fills the store to N failures through the admin API (batches of 1000), then opens
// /ui/#/failures in fresh browser contexts (cold: no cache) and reports, per run:
//   fcp_ms      first contentful paint (the page shell)
//   tasks_ms    navigation start to the first page of tasks in the DOM (the view's load done;
//               the page is painted in the next frame)
//   api_ms      the listing request itself (resource timing)
//
// Env: BASE_URL, ADMIN_TOKEN, N (default 1000000), RUNS (default 7), CHROMIUM.

import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const ADMIN = process.env.ADMIN_TOKEN;
const N = Number(process.env.N || 1000000);
const RUNS = Number(process.env.RUNS || 7);
const API = `${BASE}/codebase-embedder/api/v1`;
const BATCH = 1000;
const IN_FLIGHT = 4;

async function total() {
  const r = await fetch(`${API}/tasks/failed?pageSize=1`, { signal: AbortSignal.timeout(30000) });
  return (await r.json()).Data.TotalTasks;
}

const CODES = [
  ['TIMEOUT_ERROR', 'service_timeout', (i) => `upstream embedder timed out after ${i % 5000} ms`],
  ['PERMISSION_DENIED', 'authorization', (i) => `no access to repository r${i % 977}`],
  ['QUOTA_EXCEEDED', 'resource_exhausted', (i) => `quota exceeded for client ${i % 131}`],
  ['PARSE_ERROR', 'data_error', (i) => `cannot parse /repo/src/file_${i}.rs`],
  ['INTERNAL', 'system_error', (i) => `worker crashed with exit code ${i % 7}`],
];

async function fill(from) {
  // Inside the default retention (30 days), so the janitor trims nothing meanwhile.
  const base = Date.now() - 29 * 24 * 3600 * 1000;
  const span = 28 * 24 * 3600 * 1000;
  let next = from;
  const started = Date.now();
  const worker = async () => {
    while (next < N) {
      const a = next;
      const b = Math.min(N, a + BATCH);
      next = b;
      const tasks = [];
      for (let i = a; i < b; i += 1) {
        const [code, category, msg] = CODES[i % CODES.length];
        tasks.push({
          TaskId: `fp-${String(i).padStart(7, '0')}`, TaskType: ['embedding', 'indexing', 'cleaning'][i % 3],
          ClientId: `client-${i % 1000}`, FailTime: new Date(base + Math.floor((i / N) * span)).toISOString(),
          ErrorCode: code, ErrorCategory: category, ErrorMessage: msg(i), RetryCount: i % 4, ProcessedFiles: i % 500,
          CodebasePath: `/projects/p${i % 200}`,
        });
      }
      const r = await fetch(`${API}/admin/failed-tasks`, {
        method: 'POST', headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(tasks), signal: AbortSignal.timeout(60000),
      });
      if (r.status !== 200) throw new Error(`recording ${a}..${b}: HTTP ${r.status} ${await r.text()}`);
      if (b % 100000 === 0) console.error(`  ${b} recorded (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

const have = await total();
if (have < N) {
  console.error(`filling ${have} -> ${N} failures through the admin API`);
  await fill(have);
}
const stored = await total();
console.error(`${stored} failures stored`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const runs = [];
for (let r = 0; r < RUNS; r += 1) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  await page.goto(`${BASE}/ui/#/failures`);
  await page.waitForFunction(() => document.body.dataset.loaded && document.querySelectorAll('#tasks tbody tr').length > 0, null, { timeout: 30000 });
  // One more frame so the rows have been painted.
  const m = await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => {
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const list = performance.getEntriesByType('resource').find((e) => e.name.includes('/tasks/failed?'));
    resolve({
      fcp_ms: fcp ? fcp.startTime : null,
      tasks_ms: Number(document.body.dataset.loaded) - performance.timeOrigin,
      api_ms: list ? list.responseEnd - list.requestStart : null,
      rows: document.querySelectorAll('#tasks tbody tr').length,
    });
  }))));
  runs.push(m);
  console.error(`  run ${r + 1}: fcp ${m.fcp_ms?.toFixed(0)} ms, tasks painted ${m.tasks_ms.toFixed(0)} ms, list API ${m.api_ms?.toFixed(1)} ms, ${m.rows} rows`);
  await context.close();
}
await browser.close();
const median = (xs) => { const s = xs.filter((x) => x !== null).sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
console.log(JSON.stringify({
  stored,
  runs: runs.length,
  fcp_ms_median: median(runs.map((x) => x.fcp_ms)),
  tasks_painted_ms_median: median(runs.map((x) => x.tasks_ms)),
  tasks_painted_ms_max: Math.max(...runs.map((x) => x.tasks_ms)),
  list_api_ms_median: median(runs.map((x) => x.api_ms)),
}));
