import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { ClusterRow, LaunchSpec, Prices, TopCell } from '../api';
import { openCard, topCellsList } from '../card';
import { launchForm, sshTarget } from '../form';
import { dashboardUrl } from '../format';
import { fake, installFakeDocument } from './fakedom';

installFakeDocument();

const actions = {
  dashboardUrl: (row: ClusterRow) => dashboardUrl(row, '/lab-base/'),
  openDashboard: () => {},
  scale: () => {},
  stop: () => {},
  insertConnect: () => {},
  dismiss: () => {}
};
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

test('the Dashboard link is the server route, or the provider\'s own proxy; none while launching or closed', () => {
  const links = (row: ClusterRow) =>
    fake(openCard(row, actions, 60))
      .byTag('a')
      .map(a => a.getAttribute('href'));
  const direct = 'http://127.0.0.1:8787/status';
  assert.deepEqual(links({ ...RUNNING, name: 'etl-1', dashboard: direct, dashboard_proxied: true }), [
    '/lab-base/cumulo/clusters/etl-1/dashboard/status'
  ]);
  // a server that does not say (older): the route too; a gateway's own proxy: its link as it is
  assert.deepEqual(links({ ...RUNNING, dashboard: direct }), ['/lab-base/cumulo/clusters/etl/dashboard/status']);
  const gateway = 'https://gw.example/clusters/ns.abc/status';
  assert.deepEqual(links({ ...RUNNING, provider: 'gateway', dashboard: gateway, dashboard_proxied: false }), [gateway]);
  assert.deepEqual(links({ ...RUNNING, dashboard: null }), []);
  assert.deepEqual(links({ ...RUNNING, state: 'launching', dashboard: direct }), []);
  assert.equal(dashboardUrl({ ...RUNNING, state: 'closing', dashboard: direct }, '/'), null);
  assert.deepEqual(buttons({ ...RUNNING, dashboard: direct }), ['Dask panes', 'Connect cell', 'Stop']);
});

test('a "may still bill" card says so, says what to do, and offers only Stop', () => {
  const stuck: ClusterRow = { ...RUNNING, name: 'half', state: 'stop-failed', may_bill: true, stoppable: true, scalable: true,
                              note: 'terminate failed: the API is down', dashboard: 'http://127.0.0.1:8787/status' };
  const el = fake(openCard(stuck, actions, 60));
  assert.equal(el.getAttribute('data-state'), 'stop-failed');
  const [state] = el.byClass('cumulo-lab-state');
  assert.equal(state.textContent, 'stop failed: may still bill');
  assert.equal(state.getAttribute('title'), 'terminate failed: the API is down');
  assert.deepEqual(el.byClass('cumulo-lab-error').map(e => e.textContent),
                   ['terminate failed: the API is down — press Stop to retry; the reaper retries too.']);
  assert.deepEqual(el.byTag('button').map(b => b.textContent), ['Stop']); // no dashboard, Connect cell or Scale
  let stopped = '';
  fake(openCard(stuck, { ...actions, stop: row => void (stopped = row.name) }, 60))
    .byTag('button').find(b => b.textContent === 'Stop')!.fire('click');
  assert.equal(stopped, 'half');
  // a row flagged may_bill without a note (an older server): still said, in general words
  const bare = fake(openCard({ ...stuck, note: null }, actions, 60));
  assert.deepEqual(bare.byClass('cumulo-lab-error').map(e => e.textContent),
                   ['stopping failed — press Stop to retry; the reaper retries too.']);
  // a running card with the flag (a stop failed and the row is still running) says it too
  assert.equal(fake(openCard({ ...RUNNING, may_bill: true }, actions, 60)).byClass('cumulo-lab-state')[0].textContent,
               'stop failed: may still bill');
  // and a card without the flag says nothing of the kind
  assert.deepEqual(fake(openCard(RUNNING, actions, 60)).byClass('cumulo-lab-error'), []);
});

test('a dashboard the server could not reach says why on the card, beside its links, until it can', () => {
  const direct = 'http://127.0.0.1:8787/status';
  const why = "the SSH host key of alice@gpu1:22 cannot be checked: /home/me/.ssh/known_hosts does not exist";
  const el = fake(openCard({ ...RUNNING, provider: 'ssh', dashboard: direct, dashboard_proxied: true, dashboard_problem: why }, actions, 60));
  assert.deepEqual(el.byClass('cumulo-lab-dashboard-problem').map(e => e.textContent), [`Dashboard: ${why}`]);
  assert.deepEqual(el.byTag('button').map(b => b.textContent), ['Dask panes', 'Connect cell', 'Stop']); // still offered
  // none once it could (the server clears it), and none on a card that has no dashboard to open
  assert.deepEqual(fake(openCard({ ...RUNNING, dashboard: direct, dashboard_proxied: true, dashboard_problem: null }, actions, 60))
    .byClass('cumulo-lab-dashboard-problem'), []);
  assert.deepEqual(fake(openCard({ ...RUNNING, state: 'launching', dashboard: direct, dashboard_problem: why }, actions, 60))
    .byClass('cumulo-lab-dashboard-problem'), []);
});
