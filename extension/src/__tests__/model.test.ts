import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { ClusterRow, ComputeAPI, LaunchSpec, Listing, Prices } from '../api';
import { APIError } from '../api';
import { specFrom, offersFor } from '../form';
import { ComputeModel } from '../model';

class FakeAPI implements ComputeAPI {
  rows: ClusterRow[] = [];
  calls: string[] = [];
  failList = false;
  async list(): Promise<Listing> {
    this.calls.push('list');
    if (this.failList) {
      throw new APIError(503, 'registry locked; try again');
    }
    const open = this.rows.filter(r => r.state === 'running' || r.state === 'launching');
    return {
      clusters: this.rows,
      totals: { running: open.length, rate_per_hour: null, unpriced: open.length, spent_today: null },
      day_start: 0,
      now: 100
    };
  }
  async launch(spec: LaunchSpec): Promise<ClusterRow> {
    this.calls.push(`launch ${JSON.stringify(spec)}`);
    const r = { name: spec.name ?? 'local-1', provider: spec.provider, state: 'launching', created: 1 };
    this.rows.unshift(r);
    return r;
  }
  async scale(name: string, workers: number): Promise<void> {
    this.calls.push(`scale ${name} ${workers}`);
  }
  async stop(name: string): Promise<ClusterRow> {
    this.calls.push(`stop ${name}`);
    const r = this.rows.find(x => x.name === name)!;
    r.state = 'closed';
    return r;
  }
  async prices(): Promise<Prices> {
    this.calls.push('prices');
    return {
      providers: ['local', 'lambda'],
      offers: [
        { provider: 'lambda', instance_type: 'b', gpu_model: 'H100', gpu_count: 1, on_demand_per_hour: 3.29, spot_per_hour: null, region: 'r', source: 's', as_of: '2025' },
        { provider: 'lambda', instance_type: 'a', gpu_model: 'A10', gpu_count: 1, on_demand_per_hour: 0.75, spot_per_hour: null, region: 'r', source: 's', as_of: '2025' },
        { provider: 'aws', instance_type: 'c', gpu_model: 'T4', gpu_count: 1, on_demand_per_hour: 0.526, spot_per_hour: null, region: 'r', source: 's', as_of: '2025' }
      ]
    };
  }
}

test('refresh fills the listing and signals; an error is kept, not thrown', async () => {
  const api = new FakeAPI();
  api.rows = [
    { name: 'a', provider: 'local', state: 'running', created: 1 },
    { name: 'b', provider: 'local', state: 'closed', created: 0, spent: 1.5 },
    { name: 'c', provider: 'local', state: 'failed', created: 0, error: 'no capacity' }
  ];
  const model = new ComputeModel(api);
  let signals = 0;
  model.changed.connect(() => signals++);
  await model.refresh();
  assert.equal(signals, 1);
  assert.deepEqual(model.open.map(r => r.name), ['a', 'c']);
  assert.deepEqual(model.closedToday.map(r => r.name), ['b']);
  assert.equal(model.totals?.running, 1);
  api.failList = true;
  await model.refresh();
  assert.equal(signals, 2);
  assert.equal(model.error, 'registry locked; try again');
  assert.equal(model.listing?.clusters.length, 3); // the last good listing stays
});

test('launch, scale and stop go through the API and refresh', async () => {
  const api = new FakeAPI();
  const model = new ComputeModel(api);
  await model.launch({ provider: 'local', name: 'etl', workers: 2 });
  assert.equal(model.open[0].state, 'launching');
  await model.scale('etl', 3);
  await model.stop('etl');
  assert.deepEqual(api.calls, [
    'launch {"provider":"local","name":"etl","workers":2}',
    'list',
    'scale etl 3',
    'list',
    'stop etl',
    'list'
  ]);
  assert.deepEqual(model.closedToday.map(r => r.name), ['etl']);
});

test('prices are fetched once', async () => {
  const api = new FakeAPI();
  const model = new ComputeModel(api);
  await model.prices();
  await model.prices();
  assert.equal(api.calls.filter(c => c === 'prices').length, 1);
});

test('polling refreshes on the interval and stops', async t => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const api = new FakeAPI();
  const model = new ComputeModel(api, { refreshSeconds: 1 });
  model.refreshSeconds = 0.01; // clamped to 1 s
  assert.equal(model.refreshSeconds, 1);
  const lists = () => api.calls.filter(c => c === 'list').length;
  model.startPolling();
  assert.equal(lists(), 1); // at once
  t.mock.timers.tick(999);
  assert.equal(lists(), 1); // not before the interval
  t.mock.timers.tick(1);
  assert.equal(lists(), 2); // then once per interval
  t.mock.timers.tick(2000);
  assert.equal(lists(), 4);
  model.stopPolling();
  t.mock.timers.tick(5000);
  assert.equal(lists(), 4); // and never after it stopped
  model.dispose();
});

test('the form turns its values into a ClusterSpec body, and refuses bad ones', async () => {
  const prices = await new FakeAPI().prices();
  const lambda = offersFor(prices, 'lambda');
  assert.deepEqual(lambda.map(o => o.instance_type), ['a', 'b']); // cheapest first
  assert.deepEqual(
    specFrom({ name: ' gpu-run ', provider: 'lambda', offer: lambda[1], count: '2', spot: false, budget: '20', idle: '20m' }),
    { provider: 'lambda', name: 'gpu-run', workers: 2, instance_type: 'b', gpu: 'H100', region: 'r', budget: 20, idle_timeout: '20m' }
  );
  assert.deepEqual(specFrom({ name: '', provider: 'local', count: '1', spot: false, budget: '', idle: '' }), {
    provider: 'local',
    workers: 1
  });
  assert.throws(() => specFrom({ name: '', provider: 'local', count: '0', spot: false, budget: '', idle: '' }), /Count/);
  assert.throws(() => specFrom({ name: '', provider: 'local', count: '1', spot: false, budget: '-5', idle: '' }), /Budget/);
});
