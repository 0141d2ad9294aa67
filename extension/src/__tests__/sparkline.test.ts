import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { ClusterRow, Sparkline, TopCell } from '../api';
import { openCard, topCellsList } from '../card';
import { CHART, gpuSvg, linePoints, usageCharts, workerBars, workersSvg } from '../sparkline';
import { fake, installFakeDocument } from './fakedom';

installFakeDocument();

function series(extra: Partial<Sparkline> = {}): Sparkline {
  return { busy: [0, 1, 2, 1], total: [2, 2, 2, 2], gpu_util: [null, null, null, null], worker_gpu_util: [], ...extra };
}

const CELLS: TopCell[] = [
  { label: '3f2a9c1b-4242 [7]', cost: 0.5, basis: 'task time x configured rate', task_seconds: 90, running: 8 },
  { label: '3f2a9c1b-4242 [3]', cost: 0.00004, basis: 'task time x configured rate', task_seconds: 4.1, running: 0 },
  { label: 'outside cells', cost: null, basis: 'no rate set', task_seconds: 0.2, running: 0 }
];

function numbers(text: string | null): number[] {
  return (text ?? '').split(/[ ,]/).filter(Boolean).map(Number);
}

test('worker bars follow the data: busy up to the sample, idle above it, scaled to the most workers', () => {
  const bars = workerBars([0, 1, 2, 5], [2, 2, 2, 4], 40, 9);
  assert.deepEqual(bars.map(b => b.x), [0, 10, 20, 30]);
  assert.deepEqual(bars.map(b => b.busy), [0, 2, 4, 8]); // (busy / 4 workers) x (height - 1); 5 busy of 4 is 4
  assert.deepEqual(bars.map(b => b.idle), [4, 2, 0, 0]);
  assert.ok(bars.every(b => b.width === 9.5));
  assert.deepEqual(workerBars([], [], 40, 9), []);
});

test('line points follow the data, skip gaps, and draw nothing from fewer than two values', () => {
  assert.deepEqual(linePoints([0, 50, 100], 100, 22), [[0, 21], [50, 11], [100, 1]]);
  const gappy = linePoints([null, 50, null, 100], 90, 22);
  assert.deepEqual(gappy, [[30, 11], [90, 1]]);
  assert.deepEqual(linePoints([200, 100], 10, 12), [[0, 1], [10, 6]]); // a value above `top` rescales
  assert.deepEqual(linePoints([null, 40], 10, 12), []);
  assert.deepEqual(linePoints([], 10, 12), []);
});

test('the workers chart draws one busy and one idle rectangle per sample where each has height', () => {
  const svg = fake(workersSvg(series()));
  assert.equal(svg.tagName, 'svg');
  assert.equal(svg.namespaceURI, 'http://www.w3.org/2000/svg');
  const busy = svg.byClass('cumulo-lab-spark-busy');
  const idle = svg.byClass('cumulo-lab-spark-idle');
  const expected = workerBars([0, 1, 2, 1], [2, 2, 2, 2], CHART.width, CHART.height);
  assert.equal(busy.length, 3); // the first sample had no busy worker
  assert.equal(idle.length, 3); // the third had no idle one
  assert.deepEqual(busy.map(r => Number(r.getAttribute('height'))), expected.filter(b => b.busy > 0).map(b => Number(b.busy.toFixed(1))));
  assert.deepEqual(busy.map(r => Number(r.getAttribute('x'))), [40, 80, 120]);
  for (const r of busy) {
    assert.equal(Number(r.getAttribute('y')) + Number(r.getAttribute('height')), CHART.height); // stands on the baseline
  }
  assert.equal(workersSvg(series({ busy: [], total: [] })), null);
});

test('GPU lines: one per worker where measured, else the mean, and none on CPU workers', () => {
  assert.equal(gpuSvg(series()), null); // nothing measured: nothing drawn, no zero line
  const mean = fake(gpuSvg(series({ gpu_util: [10, 20, null, 90] })));
  const [line] = mean.byTag('polyline');
  const drawn = numbers(line.getAttribute('points'));
  const want = linePoints([10, 20, null, 90], CHART.width, CHART.height).flat().map(v => Number(v.toFixed(1)));
  assert.deepEqual(drawn, want);
  const perWorker = fake(
    gpuSvg(series({ gpu_util: [50, 50, 50, 50], worker_gpu_util: [[0, 100, 0, 100], [90, 90, 90, 90], [null, null, null, null]] }))
  );
  assert.equal(perWorker.byTag('polyline').length, 2); // the third worker measured nothing
});

test('the usage block says how many workers are busy now, and is absent without data', () => {
  const block = fake(usageCharts(series()));
  assert.match(block.textContent, /workers: busy 1 \/ idle 1 now/);
  assert.equal(block.byClass('cumulo-lab-spark-workers').length, 1);
  assert.equal(block.byClass('cumulo-lab-spark-gpu').length, 0);
  assert.equal(usageCharts(null), null);
  assert.equal(usageCharts(undefined), null);
  assert.equal(usageCharts(series({ busy: [], total: [], gpu_util: [] })), null);
});

test('the top cells list shows label, task time, cost (never a $0 for no rate) and what still runs', () => {
  const list = fake(topCellsList(CELLS));
  const rows = list.byClass('cumulo-lab-top-cell');
  assert.deepEqual(
    rows.map(r => r.byTag('td').map(td => td.textContent)),
    [
      ['3f2a9c1b-4242 [7]', '90.0 task-s', '$0.5000'],
      ['3f2a9c1b-4242 [3]', '4.1 task-s', '<$0.0001'],
      ['outside cells', '0.2 task-s', 'no rate set']
    ]
  );
  assert.deepEqual(list.byClass('cumulo-lab-top-running').map(r => r.textContent), ['3f2a9c1b-4242 [7]: 8 tasks still running']);
  const idle = fake(topCellsList(CELLS.map(c => ({ ...c, running: 0 }))));
  assert.equal(idle.byClass('cumulo-lab-top-running').length, 0); // nothing runs: no such line
  assert.equal(rows[0].getAttribute('title'), 'cost: task time x configured rate');
  assert.match(list.textContent, /^Top cells by cost/);
  assert.equal(topCellsList([]), null);
  assert.equal(topCellsList(null), null);
});

test('a running card carries the sparkline and the top cells; a card without them shows neither', () => {
  const actions = { dashboardUrl: () => null, openDashboard: () => {}, scale: () => {}, stop: () => {}, insertConnect: () => {}, dismiss: () => {} };
  const row: ClusterRow = { name: 'etl', provider: 'local', state: 'running', created: 0, workers: 2, spent: 0.01, rate_per_hour: 1, sparkline: series(), top_cells: CELLS };
  const card = fake(openCard(row, actions, 60));
  assert.equal(card.byClass('cumulo-lab-spark-workers').length, 1);
  assert.equal(card.byClass('cumulo-lab-top-cell').length, 3);
  const order = card.children.map(c => (typeof c === 'string' ? c : c.className));
  assert.ok(order.indexOf('cumulo-lab-card-money') < order.indexOf('cumulo-lab-usage'), String(order));
  assert.ok(order.indexOf('cumulo-lab-usage') < order.indexOf('cumulo-lab-top'), String(order));
  const unreachable = fake(openCard({ ...row, sparkline: null, top_cells: null, live: false }, actions, 60));
  assert.equal(unreachable.byClass('cumulo-lab-usage').length + unreachable.byClass('cumulo-lab-top').length, 0);
  const launching = fake(openCard({ ...row, state: 'launching' }, actions, 60));
  assert.equal(launching.byClass('cumulo-lab-usage').length, 0);
});
