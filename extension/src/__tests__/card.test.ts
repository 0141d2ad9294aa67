import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { ClusterRow, LaunchSpec, Prices, TopCell } from '../api';
import { openCard, topCellsList } from '../card';
import { launchForm, sshTarget } from '../form';
import { fake, installFakeDocument } from './fakedom';

installFakeDocument();

const actions = { scale: () => {}, stop: () => {}, insertConnect: () => {}, dismiss: () => {} };
const RUNNING: ClusterRow = { name: 'etl', provider: 'local', state: 'running', created: 0, workers: 2, spent: 1, rate_per_hour: 1 };

function buttons(row: ClusterRow): string[] {
  return fake(openCard(row, actions, 60))
    .byTag('button')
    .map(b => b.textContent);
}

test('Scale only where the server says it can: it launched the cluster and its provider scales', () => {
  assert.deepEqual(buttons({ ...RUNNING, owned_by: 'server', scalable: true }), ['Connect cell', 'Scale', 'Stop']);
  // a kernel's cluster is scaled by its kernel; an ssh:// cluster (can_scale False) never
  assert.deepEqual(buttons({ ...RUNNING, owned_by: 'kernel', scalable: false }), ['Connect cell', 'Stop']);
  assert.deepEqual(buttons({ ...RUNNING, provider: 'ssh', owned_by: 'server', scalable: false }), ['Connect cell', 'Stop']);
  assert.deepEqual(buttons({ ...RUNNING }), ['Connect cell', 'Stop']); // a server that does not say: no Scale
  assert.deepEqual(buttons({ ...RUNNING, state: 'stop-failed', scalable: true, stoppable: true }), ['Stop']);
});

const ROWS: TopCell[] = [
  { label: 'etl.ipynb [7]', kind: 'cell', cost: 0.5, basis: 'task time x configured rate', task_seconds: 90, running: 0, first_line: "df = load('s3://x')" },
  { label: 'other cells', kind: 'other', cost: 0.1, basis: 'task time x configured rate', task_seconds: 12, running: 0 },
  { label: 'outside cells', kind: 'outside', cost: 0.05, basis: 'task time x configured rate', task_seconds: 2, running: 0 },
  { label: 'idle', kind: 'idle', cost: 0.35, basis: 'paid time no task used', task_seconds: 0, running: 0, worker_seconds: 35 }
];

test('cells are named as the inline meter names them, first line on hover; the rest of the spend has rows; a total', () => {
  const list = fake(topCellsList(ROWS, 1.0));
  const rows = list.byClass('cumulo-lab-top-cell');
  assert.deepEqual(
    rows.map(r => r.byTag('td').map(td => td.textContent)),
    [
      ['etl.ipynb [7]', '90.0 task-s', '$0.5000'],
      ['other cells', '12.0 task-s', '$0.1000'],
      ['outside cells', '2.0 task-s', '$0.0500'],
      ['idle', '', '$0.3500']
    ]
  );
  const label = (i: number) => rows[i].byClass('cumulo-lab-top-label')[0].getAttribute('title') ?? '';
  assert.equal(label(0), "df = load('s3://x')\ncost: task time x configured rate");
  assert.match(label(3), /^idle: paid time no task used/);
  assert.match(label(2), /^outside cells: work submitted outside any notebook cell/);
  assert.deepEqual(rows.slice(1).map(r => r.className.includes('cumulo-lab-muted')), [true, true, true]);
  assert.ok(!rows[0].className.includes('cumulo-lab-muted'));
  const [total] = list.byClass('cumulo-lab-top-total');
  assert.deepEqual(total.byTag('td').map(td => td.textContent), ['total (the spend)', '', '$1.00']);
  // no rate: nothing to add up, no total row
  assert.equal(fake(topCellsList(ROWS.map(r => ({ ...r, cost: null })), null)).byClass('cumulo-lab-top-total').length, 0);
});

const PRICES: Prices = { providers: ['local', 'ssh'], offers: [] };

test('ssh: the hosts field is the launch target, in place of the price list and spot', async () => {
  const sent: LaunchSpec[] = [];
  const form = fake(launchForm(PRICES, { submit: async spec => void sent.push(spec), cancel: () => undefined }));
  const hostsRow = () => form.byName('hosts')!;
  const rowOf = (name: string) => form.all().find(n => n.tagName === 'label' && n.all().includes(form.byName(name)!))!;
  assert.equal(rowOf('hosts').hidden, true);
  const provider = form.byName('provider')!;
  provider.value = 'ssh';
  provider.fire('change');
  assert.equal(rowOf('hosts').hidden, false);
  assert.equal(rowOf('gpu').hidden, true);
  assert.equal(rowOf('spot').hidden, true);
  hostsRow().value = '';
  form.fire('submit');
  await new Promise(resolve => setImmediate(resolve));
  assert.equal(sent.length, 0);
  assert.match(form.byClass('cumulo-lab-error')[0].textContent, /name at least one host/);
  hostsRow().value = 'alice@gpu1,gpu2';
  form.byName('count')!.value = '2';
  form.fire('submit');
  await new Promise(resolve => setImmediate(resolve));
  assert.deepEqual(sent, [{ provider: 'ssh', address: 'ssh://alice@gpu1,gpu2', workers: 2, idle_timeout: '20m' }]);
});

test('sshTarget takes ssh://user@h1,h2 or the bare hosts, and refuses none', () => {
  assert.equal(sshTarget(' ssh://alice@gpu1,gpu2 '), 'ssh://alice@gpu1,gpu2');
  assert.equal(sshTarget('gpu1:2222'), 'ssh://gpu1:2222');
  assert.throws(() => sshTarget('ssh://'), /name at least one host/);
  assert.throws(() => sshTarget(' , '), /name at least one host/);
});
