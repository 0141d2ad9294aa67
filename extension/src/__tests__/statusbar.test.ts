import './labshim'; // first: the fake document and navigator Lumino loads with

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ComputeAPI, Listing, Totals } from '../api';
import { ComputeModel } from '../model';
import { SpendMeter } from '../statusbar';
import { fake } from './fakedom';

/** A server whose listing carries `totals`. */
function serverWith(totals: () => Totals): ComputeAPI {
  return {
    list: async (): Promise<Listing> => ({ clusters: [], totals: totals(), day_start: 0, now: 0 }),
    launch: async () => Promise.reject(new Error('not used')),
    scale: async () => undefined,
    stop: async () => Promise.reject(new Error('not used')),
    prices: async () => Promise.reject(new Error('not used'))
  };
}

test('the meter shows running clusters, their $/h and today\'s spend, and lights up while any run', async () => {
  let totals: Totals = { running: 2, rate_per_hour: 3.5, unpriced: 0, spent_today: 1.25 };
  const model = new ComputeModel(serverWith(() => totals));
  let clicks = 0;
  const meter = new SpendMeter(model, () => void clicks++);
  const node = fake(meter.node);
  assert.equal(node.textContent, 'Compute: …'); // before the first answer
  assert.equal(node.dataset.running, '0');
  assert.ok(!node.classList.contains('cumulo-lab-meter-active'));
  await model.refresh();
  assert.equal(node.textContent, '2 clusters · $3.50/h · $1.25 today');
  assert.equal(node.dataset.running, '2');
  assert.ok(node.classList.contains('cumulo-lab-meter-active'));

  totals = { running: 1, rate_per_hour: null, unpriced: 1, spent_today: null }; // a cluster with no rate set
  await model.refresh();
  assert.equal(node.textContent, '1 cluster · no rate set · today: no rate set');

  totals = { running: 0, rate_per_hour: 0, unpriced: 0, spent_today: 4 };
  await model.refresh();
  assert.equal(node.textContent, '0 clusters · $4.00 today');
  assert.equal(node.dataset.running, '0');
  assert.ok(!node.classList.contains('cumulo-lab-meter-active'));

  node.fire('click');
  assert.equal(clicks, 1); // opens the sidebar
  meter.dispose();
  totals = { running: 3, rate_per_hour: 1, unpriced: 0, spent_today: 1 };
  await model.refresh();
  assert.equal(node.textContent, '0 clusters · $4.00 today'); // a disposed meter no longer follows the model
});
