import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { ClusterRow, Offer } from '../api';
import { budgetFraction, canStop, cellCost, connectCode, duration, estimate, isOpen, meterText, money, rate, size, stateLabel, taskSeconds } from '../format';

const h100: Offer = {
  provider: 'lambda',
  instance_type: 'gpu_1x_h100_sxm5',
  gpu_model: 'H100',
  gpu_count: 1,
  on_demand_per_hour: 3.29,
  spot_per_hour: null,
  region: 'us-east-1',
  source: 'lambda public pricing',
  as_of: '2025'
};

function row(extra: Partial<ClusterRow>): ClusterRow {
  return { name: 'etl', provider: 'local', state: 'running', created: 0, ...extra };
}

test('money never shows a missing rate as $0', () => {
  assert.equal(money(null), 'no rate set');
  assert.equal(money(undefined), 'no rate set');
  assert.equal(money(0), '$0.00');
  assert.equal(money(1234.5), '$1,234.50');
  assert.equal(money(0.004), '$0.004');
  assert.equal(rate(2.49), '$2.49/h');
  assert.equal(rate(null), 'no rate set');
});

test('durations', () => {
  assert.equal(duration(42), '42s');
  assert.equal(duration(12 * 60 + 5), '12m');
  assert.equal(duration(3 * 3600 + 5 * 60), '3h 05m');
});

test('budget fraction is clamped and absent without a budget or a figure', () => {
  assert.equal(budgetFraction(row({ budget: 10, spent: 2.5 })), 0.25);
  assert.equal(budgetFraction(row({ budget: 10, spent: 25 })), 1);
  assert.equal(budgetFraction(row({ budget: null, spent: 3 })), null);
  assert.equal(budgetFraction(row({ budget: 10, spent: null })), null);
});

test('size says workers and GPUs', () => {
  assert.equal(size(row({ workers: 1 })), '1 worker');
  assert.equal(size(row({ workers: 2, gpus: 8, gpu_model: 'H100' })), '2 workers · 8 GPUs H100');
});

test('estimate before launch: rate, 8 hours, how long the budget lasts, and where the price comes from', () => {
  const est = estimate(h100, 2, false, 20);
  assert.ok(Math.abs((est.perHour as number) - 6.58) < 1e-9);
  assert.ok(Math.abs((est.hoursOfBudget as number) - 20 / 6.58) < 1e-9);
  assert.match(est.text, /\$6\.58\/h/);
  assert.match(est.text, /lambda public pricing, 2025/);
  assert.match(est.text, /budget lasts 3h 02m/);
  const spot = estimate(h100, 1, true, null);
  assert.equal(spot.perHour, null);
  assert.match(spot.text, /no spot price/);
  assert.match(estimate(undefined, 2, false, null).text, /no rate set/);
});

test('status bar text', () => {
  assert.equal(meterText(null), 'Compute: …');
  assert.equal(
    meterText({ running: 2, rate_per_hour: 3.29, unpriced: 1, spent_today: 4.1 }),
    '2 clusters · $3.29/h · $4.10 today'
  );
  assert.equal(
    meterText({ running: 1, rate_per_hour: null, unpriced: 1, spent_today: null }),
    '1 cluster · no rate set · today: no rate set'
  );
  assert.equal(meterText({ running: 0, rate_per_hour: null, unpriced: 0, spent_today: 1 }), '0 clusters · $1.00 today');
});

test('connect cell code is valid Python naming the cluster', () => {
  assert.equal(connectCode('etl-1'), 'import cumulo\n\ncluster = cumulo.connect(name="etl-1")\ncluster');
});

test('every open registry row can be stopped, a launch in flight cannot', () => {
  // a starting cluster whose kernel died during boot, and one whose stop failed, keep a Stop button
  assert.equal(canStop(row({ state: 'starting', stoppable: true })), true);
  assert.equal(canStop(row({ state: 'stop-failed', stoppable: true, may_bill: true })), true);
  assert.equal(canStop(row({ state: 'running' })), true);
  assert.equal(canStop(row({ state: 'launching' })), false);
  assert.equal(canStop(row({ state: 'closed', stoppable: false })), false);
});

test('a failed stop reads as what it means: it may still bill', () => {
  assert.equal(stateLabel(row({ state: 'stop-failed', may_bill: true })), 'stop failed: may still bill');
  assert.equal(stateLabel(row({ state: 'running' })), 'running');
  assert.equal(isOpen(row({ state: 'stop-failed' })), true);
});

test('a cell cost never reads as free when it is only small, and task time reads in task-seconds', () => {
  assert.equal(cellCost(0.00004), '<$0.0001');
  assert.equal(cellCost(0.012), '$0.0120');
  assert.equal(cellCost(0), '$0.00');
  assert.equal(cellCost(12.5), '$12.50');
  assert.equal(cellCost(null), 'no rate set');
  assert.equal(taskSeconds(4.123), '4.1 task-s');
  assert.equal(taskSeconds(1234), '1.2k task-s');
  assert.equal(taskSeconds(null), '0.0 task-s');
});
