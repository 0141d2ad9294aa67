import { dialogs } from './labshim'; // first: the fake document, navigator and dialogs the views load with

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { PageConfig } from '@jupyterlab/coreutils';

import { APIError, ClusterRow, ComputeAPI, Listing } from '../api';
import { ComputeModel } from '../model';
import { ComputePanel, PANEL_ID } from '../panel';
import { fake, FakeNode, PAGE } from './fakedom';

PageConfig.setOption('baseUrl', '/lab-base/');

const NOW = 1_750_000_000;
const RUNNING: ClusterRow = {
  name: 'etl', provider: 'local', state: 'running', created: NOW - 600, workers: 2, spent: 0.5, rate_per_hour: 3,
  owned_by: 'server', stoppable: true, scalable: true, dashboard: 'http://127.0.0.1:8787/status', dashboard_proxied: true
};
const MAY_BILL: ClusterRow = {
  name: 'half', provider: 'lambda', state: 'stop-failed', created: NOW - 3600, workers: 1, spent: 2.5,
  rate_per_hour: 0.75, owned_by: 'gone', stoppable: true, may_bill: true, note: 'terminate failed: the API is down'
};
const CLOSED: ClusterRow = {
  name: 'old', provider: 'local', state: 'closed', created: NOW - 7200, closed: NOW - 3600, workers: 0, spent: 1.25
};

/** The server as the panel's model sees it: a listing, and a stop that fails while `stopFails` says so. */
class Server implements ComputeAPI {
  clusters: ClusterRow[] = [];
  stopFails: string | null = null;
  listFails: string | null = null;
  stops: string[] = [];

  async list(): Promise<Listing> {
    if (this.listFails) {
      throw new APIError(502, this.listFails);
    }
    const running = this.clusters.filter(c => ['running', 'stop-failed'].includes(c.state)).length;
    return { clusters: this.clusters.map(c => ({ ...c })), totals: { running, rate_per_hour: null, unpriced: 0, spent_today: null }, day_start: NOW - 36000, now: NOW };
  }
  async launch(): Promise<ClusterRow> {
    throw new Error('not used');
  }
  async scale(): Promise<void> {}
  async prices(): Promise<never> {
    throw new APIError(502, 'prices are down');
  }
  async stop(name: string): Promise<ClusterRow> {
    this.stops.push(name);
    if (this.stopFails) {
      throw new APIError(502, this.stopFails, 'TerminateError');
    }
    const row = this.clusters.find(c => c.name === name)!;
    Object.assign(row, { state: 'closed', closed: NOW, may_bill: false, stoppable: false });
    return { ...row };
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise(resolve => setImmediate(resolve));
  }
}

function setup(clusters: ClusterRow[]): { server: Server; model: ComputeModel; panel: ComputePanel; node: FakeNode } {
  const server = new Server();
  server.clusters = clusters.map(c => ({ ...c }));
  const model = new ComputeModel(server);
  const panel = new ComputePanel(model, () => undefined);
  return { server, model, panel, node: fake(panel.node) };
}

const card = (node: FakeNode, name: string): FakeNode | undefined =>
  node.byClass('cumulo-lab-card').find(c => c.getAttribute('data-name') === name);
const buttonsOf = (el: FakeNode): string[] => el.byTag('button').map(b => b.textContent);

beforeEach(() => dialogs.reset());

test('before the first answer the panel says Loading; with nothing open, that nothing bills', async () => {
  const { model, panel, node } = setup([]);
  assert.equal(panel.id, PANEL_ID);
  assert.equal(node.byClass('cumulo-lab-empty')[0].textContent, 'Loading…');
  await model.refresh();
  assert.equal(node.byClass('cumulo-lab-empty')[0].textContent, 'No clusters running. Nothing is billing.');
  assert.equal(node.byClass('cumulo-lab-card').length, 0);
  assert.equal(node.byClass('cumulo-lab-closed-list').length, 0);
  panel.dispose();
});

test('a card per open cluster (the may-bill one says so and offers Stop), closed ones folded with their cost', async () => {
  const { model, panel, node } = setup([RUNNING, MAY_BILL, CLOSED]);
  await model.refresh();
  assert.deepEqual(node.byClass('cumulo-lab-card').map(c => c.getAttribute('data-name')), ['etl', 'half']);
  const etl = card(node, 'etl')!;
  assert.equal(etl.byClass('cumulo-lab-state')[0].textContent, 'running');
  assert.deepEqual(buttonsOf(etl), ['Dask panes', 'Connect cell', 'Scale', 'Stop']);
  // the server's route under the page's base URL (JupyterLab's PageConfig, resolved as a browser does)
  assert.deepEqual(etl.byTag('a').map(a => a.getAttribute('href')), [`${PAGE}lab-base/cumulo/clusters/etl/dashboard/status`]);
  assert.equal(etl.byClass('cumulo-lab-rate')[0].textContent, '$3.00/h');
  const half = card(node, 'half')!;
  assert.equal(half.getAttribute('data-state'), 'stop-failed');
  assert.equal(half.byClass('cumulo-lab-state')[0].textContent, 'stop failed: may still bill');
  assert.deepEqual(half.byClass('cumulo-lab-error').map(e => e.textContent),
                   ['terminate failed: the API is down — press Stop to retry; the reaper retries too.']);
  assert.deepEqual(buttonsOf(half), ['Stop']);
  assert.match(half.byClass('cumulo-lab-card-size')[0].textContent, /its kernel is gone: the reaper will stop it/);
  const [closed] = node.byClass('cumulo-lab-closed-list');
  assert.equal(closed.byTag('summary')[0].textContent, 'Closed today (1) · $1.25');
  assert.deepEqual(closed.byClass('cumulo-lab-closed').map(li => li.getAttribute('data-name')), ['old']);
  assert.equal(node.byClass('cumulo-lab-empty').length, 0);
  panel.dispose();
});

test("Stop on a may-bill card asks, shows the server's error while the provider fails, and the card goes once it stops", async () => {
  const { server, model, panel, node } = setup([MAY_BILL]);
  await model.refresh();
  server.stopFails = "the provider's API is down: the thing may still bill";
  const stop = () => card(node, 'half')!.byTag('button').find(b => b.textContent === 'Stop')!.fire('click');

  stop();
  await settle();
  assert.deepEqual(server.stops, ['half']);
  assert.deepEqual(dialogs.shown.map(d => [d.kind, d.title]), [['dialog', 'Stop half?'], ['error', 'Cannot stop half']]);
  assert.match(dialogs.shown[0].body, /spent \$2\.50/);
  assert.equal(dialogs.shown[1].body, "the provider's API is down: the thing may still bill");
  assert.ok(card(node, 'half'), 'the card stays while the stop is not confirmed');
  assert.equal(card(node, 'half')!.byClass('cumulo-lab-state')[0].textContent, 'stop failed: may still bill');

  dialogs.reset();
  dialogs.accept = false; // Cancel: nothing is sent
  stop();
  await settle();
  assert.deepEqual(server.stops, ['half']);

  dialogs.reset();
  server.stopFails = null; // the provider answers again
  stop();
  await settle();
  assert.deepEqual(server.stops, ['half', 'half']);
  assert.deepEqual(dialogs.shown.map(d => d.kind), ['dialog']); // no error this time
  assert.equal(card(node, 'half'), undefined);
  assert.equal(node.byClass('cumulo-lab-empty')[0].textContent, 'No clusters running. Nothing is billing.');
  assert.equal(node.byClass('cumulo-lab-closed-list')[0].byTag('summary')[0].textContent, 'Closed today (1) · $2.50');
  panel.dispose();
});

test('a server that cannot be reached is said at the top; the cards stay as last seen', async () => {
  const { server, model, panel, node } = setup([RUNNING]);
  await model.refresh();
  const [status] = node.children.filter((c): c is FakeNode => typeof c !== 'string' && c.className === 'cumulo-lab-error');
  assert.equal(status.hidden, true);
  server.listFails = '502 Bad Gateway';
  await model.refresh();
  assert.equal(status.hidden, false);
  assert.equal(status.textContent, 'Cannot reach the cumulo server extension: 502 Bad Gateway');
  assert.deepEqual(node.byClass('cumulo-lab-card').map(c => c.getAttribute('data-name')), ['etl']);
  server.listFails = null;
  await model.refresh();
  assert.equal(status.hidden, true);
  panel.dispose();
});

test('New cluster says why when the price list cannot load', async () => {
  const { panel, node } = setup([]);
  node.byClass('cumulo-lab-new')[0].fire('click');
  await settle();
  assert.equal(node.byClass('cumulo-lab-form-slot')[0].textContent, 'Cannot load prices: prices are down');
  panel.dispose();
});
