import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { GatewayField, GatewayOptions, LaunchSpec, Prices } from '../api';
import { launchForm, specFrom } from '../form';
import { fieldInput, fieldRow, gatewayEstimate, inputName, optionsFrom } from '../gatewayform';
import { fake, FakeNode, installFakeDocument } from './fakedom';

installFakeDocument();

const CORES: GatewayField = { name: 'worker_cores', label: 'Worker cores', kind: 'integer', default: 1, min: 1, max: 2, choices: null };
const QUEUE: GatewayField = { name: 'queue', label: 'Queue', kind: 'string', default: 'default', min: null, max: null, choices: null };
const SIZE: GatewayField = { name: 'size', label: 'Size', kind: 'select', default: 'm', choices: ['s', 'm', 'l'] };
const GPU: GatewayField = { name: 'gpu', label: 'GPU', kind: 'bool', default: true };
const MEMORY: GatewayField = { name: 'worker_memory', label: 'Worker memory (GiB)', kind: 'float', default: 2.5, min: 1, max: null };
const ENV: GatewayField = { name: 'environment', label: 'Environment', kind: 'mapping', default: { A: '1' } };

const SCHEMA: GatewayOptions = { address: 'gateway://127.0.0.1:8000', fields: [CORES, QUEUE], rate_per_hour: null };
const PRICES: Prices = { providers: ['local', 'gateway'], offers: [] };

const tick = () => new Promise(resolve => setImmediate(resolve));

function inputsOf(fields: GatewayField[]): Map<string, ReturnType<typeof fieldInput>> {
  return new Map(fields.map(f => [f.name, fieldInput(f)]));
}

test('each kind of option gets its input, the default filled in', () => {
  const cores = fake(fieldInput(CORES));
  assert.equal(cores.tagName, 'input');
  assert.equal(cores.getAttribute('type'), 'number');
  assert.deepEqual([cores.getAttribute('min'), cores.getAttribute('max'), cores.getAttribute('step')], ['1', '2', '1']);
  assert.equal(cores.value, '1');
  assert.equal(cores.getAttribute('name'), inputName(CORES));

  const memory = fake(fieldInput(MEMORY));
  assert.equal(memory.getAttribute('step'), 'any');
  assert.equal(memory.getAttribute('max'), null); // unbounded above: no max attribute at all
  assert.equal(memory.value, '2.5');

  const queue = fake(fieldInput(QUEUE));
  assert.equal(queue.getAttribute('type'), null);
  assert.equal(queue.value, 'default');

  const size = fake(fieldInput(SIZE));
  assert.equal(size.tagName, 'select');
  assert.deepEqual(size.byTag('option').map(o => o.textContent), ['s', 'm', 'l']);
  assert.equal(size.value, 'm');
  assert.ok(size.byTag('option')[1].attributes.has('selected'));

  const gpu = fake(fieldInput(GPU));
  assert.equal(gpu.getAttribute('type'), 'checkbox');
  assert.equal(gpu.checked, true);

  const env = fake(fieldInput(ENV));
  assert.equal(env.tagName, 'textarea');
  assert.deepEqual(JSON.parse(env.value), { A: '1' });
});

test('a row carries the label, a number its bounds, a checkbox sits beside its label', () => {
  const row = fake(fieldRow(CORES, fieldInput(CORES)));
  assert.match(row.textContent, /^Worker cores/);
  assert.match(row.textContent, /a whole number between 1 and 2/);
  assert.match(fake(fieldRow(MEMORY, fieldInput(MEMORY))).textContent, /a number of at least 1/);
  const check = fake(fieldRow(GPU, fieldInput(GPU)));
  assert.ok(check.className.includes('cumulo-lab-check'));
  assert.equal(check.children[0] instanceof FakeNode && (check.children[0] as FakeNode).getAttribute('type'), 'checkbox');
});

test('the options collected are typed as the gateway wants them', () => {
  const fields = [CORES, QUEUE, SIZE, GPU, MEMORY, ENV];
  const inputs = inputsOf(fields);
  assert.deepEqual(optionsFrom(fields, inputs), { worker_cores: 1, queue: 'default', size: 'm', gpu: true, worker_memory: 2.5, environment: { A: '1' } });
  fake(inputs.get('worker_cores')).value = '2';
  fake(inputs.get('queue')).value = 'gpu-queue';
  fake(inputs.get('size')).value = 'l';
  fake(inputs.get('gpu')).checked = false;
  fake(inputs.get('environment')).value = '';
  assert.deepEqual(optionsFrom(fields, inputs), { worker_cores: 2, queue: 'gpu-queue', size: 'l', gpu: false, worker_memory: 2.5, environment: {} });
});

test('bad values are refused naming the field and what it takes', () => {
  const inputs = inputsOf([CORES, MEMORY, ENV]);
  fake(inputs.get('worker_cores')).value = '3';
  assert.throws(() => optionsFrom([CORES], inputs), /Worker cores must be a whole number between 1 and 2 \(got 3\)/);
  fake(inputs.get('worker_cores')).value = '1.5';
  assert.throws(() => optionsFrom([CORES], inputs), /Worker cores must be a whole number between 1 and 2$/);
  fake(inputs.get('worker_cores')).value = '';
  assert.throws(() => optionsFrom([CORES], inputs), /Worker cores must be a whole number/);
  fake(inputs.get('worker_memory')).value = '0.5';
  assert.throws(() => optionsFrom([MEMORY], inputs), /Worker memory \(GiB\) must be a number of at least 1/);
  fake(inputs.get('environment')).value = '[1, 2]';
  assert.throws(() => optionsFrom([ENV], inputs), /Environment must be a JSON object/);
  fake(inputs.get('environment')).value = '{oops';
  assert.throws(() => optionsFrom([ENV], inputs), /Environment must be a JSON object/);
});

test('the estimate is the configured rate, or says no rate is set', () => {
  assert.match(gatewayEstimate(null, null).text, /load the gateway's options to see its rate/);
  const none = gatewayEstimate(SCHEMA, 20);
  assert.equal(none.perHour, null);
  assert.match(none.text, /no rate set/);
  assert.doesNotMatch(none.text, /\$0/);
  const priced = gatewayEstimate({ ...SCHEMA, rate_per_hour: 1.25 }, 20);
  assert.equal(priced.perHour, 1.25);
  assert.match(priced.text, /\$1\.25\/h/);
  assert.match(priced.text, /budget lasts 16h/);
});

test('specFrom carries the address and the options', () => {
  const spec = specFrom({ name: 'team', provider: 'gateway', count: '1', spot: false, budget: '', idle: '20m', address: ' gateway://h:1 ', options: { worker_cores: 2 } });
  assert.deepEqual(spec, { provider: 'gateway', name: 'team', address: 'gateway://h:1', options: { worker_cores: 2 }, workers: 1, idle_timeout: '20m' });
});

interface Harness {
  form: FakeNode;
  sent: LaunchSpec[];
  asked: string[];
  select(provider: string): void;
  error(): FakeNode;
}

function harness(answer: (address: string) => Promise<GatewayOptions>): Harness {
  const sent: LaunchSpec[] = [];
  const asked: string[] = [];
  const form = fake(
    launchForm(PRICES, {
      submit: async spec => {
        sent.push(spec);
      },
      cancel: () => undefined,
      gatewayOptions: address => {
        asked.push(address);
        return answer(address);
      }
    })
  );
  return {
    form,
    sent,
    asked,
    select(provider: string) {
      const select = form.byName('provider')!;
      select.value = provider;
      select.fire('change');
    },
    error: () => form.byClass('cumulo-lab-error')[0]
  };
}

test('choosing gateway swaps the price list for the address; the options load and launch with the spec', async () => {
  const h = harness(async () => SCHEMA);
  const gatewayNode = h.form.byClass('cumulo-lab-gateway')[0];
  assert.equal(gatewayNode.hidden, true);
  h.select('gateway');
  assert.equal(gatewayNode.hidden, false);
  const gpuRow = h.form.byTag('label').find(l => l.byName('gpu'))!;
  const spotRow = h.form.byTag('label').find(l => l.byName('spot'))!;
  assert.equal(gpuRow.hidden && spotRow.hidden, true);
  assert.match(h.form.byClass('cumulo-lab-estimate')[0].textContent, /load the gateway's options to see its rate/);

  h.form.byName('name')!.value = 'team-gw';
  h.form.byName('count')!.value = '2';
  h.form.byName('budget')!.value = '5';
  const address = h.form.byName('address')!;
  address.value = 'gateway://127.0.0.1:8000';
  address.fire('change');
  assert.match(h.form.byClass('cumulo-lab-gateway-options')[0].textContent, /Loading the options/);
  await tick();
  assert.deepEqual(h.asked, ['gateway://127.0.0.1:8000']);
  const cores = h.form.byName('option-worker_cores')!;
  const queue = h.form.byName('option-queue')!;
  assert.equal(cores.value, '1');
  assert.equal(queue.value, 'default');
  assert.match(h.form.byClass('cumulo-lab-gateway-options')[0].textContent, /Worker cores.*Queue/);
  assert.match(h.form.byClass('cumulo-lab-estimate')[0].textContent, /no rate set/);

  h.form.byName('address')!.fire('change'); // the same address again: not asked twice
  h.form.byClass('cumulo-lab-load')[0].fire('click');
  await tick();
  assert.equal(h.asked.length, 1);

  cores.value = '2';
  h.form.fire('submit');
  await tick();
  assert.equal(h.error().hidden, true, h.error().textContent);
  assert.deepEqual(h.sent, [
    { provider: 'gateway', name: 'team-gw', address: 'gateway://127.0.0.1:8000', options: { worker_cores: 2, queue: 'default' }, workers: 2, budget: 5, idle_timeout: '20m' }
  ]);
});

test('a failed load shows its message where the form shows errors, and nothing launches', async () => {
  const h = harness(async () => {
    throw new Error('the dask-gateway at gateway://127.0.0.1:9 refused the credentials of user alice (HTTP 401)');
  });
  h.select('gateway');
  const address = h.form.byName('address')!;
  address.value = 'gateway://127.0.0.1:9';
  address.fire('change');
  await tick();
  assert.equal(h.error().hidden, false);
  assert.match(h.error().textContent, /Cannot load the options of gateway:\/\/127\.0\.0\.1:9: .*refused the credentials/);
  assert.equal(h.form.byName('option-worker_cores'), undefined);
  h.form.fire('submit'); // tries the address again rather than launching without its options
  await tick();
  assert.equal(h.asked.length, 2);
  assert.equal(h.sent.length, 0);
});

test('launch before the options are shown loads them first; an edited address is read again', async () => {
  const h = harness(async address => ({ ...SCHEMA, address, rate_per_hour: 2 }));
  h.select('gateway');
  h.form.fire('submit');
  await tick();
  assert.match(h.error().textContent, /Load the gateway's options first/);
  const address = h.form.byName('address')!;
  address.value = 'gateway://127.0.0.1:8000';
  h.form.fire('submit'); // as Enter in the address field: load, do not launch yet
  await tick();
  assert.equal(h.sent.length, 0);
  assert.ok(h.form.byName('option-worker_cores'));
  assert.match(h.form.byClass('cumulo-lab-estimate')[0].textContent, /\$2\.00\/h/);
  address.value = 'gateway://127.0.0.1:8001';
  address.fire('input'); // typing: the rate shown was the other gateway's
  assert.match(h.form.byClass('cumulo-lab-estimate')[0].textContent, /load the gateway's options/);
  h.form.fire('submit');
  await tick();
  assert.deepEqual(h.asked, ['gateway://127.0.0.1:8000', 'gateway://127.0.0.1:8001']);
  assert.equal(h.sent.length, 0);
  h.form.fire('submit');
  await tick();
  assert.equal(h.sent.length, 1);
  assert.equal(h.sent[0].address, 'gateway://127.0.0.1:8001');
});

test('back to another provider: no address, no options, spot and the price list again', async () => {
  const h = harness(async () => SCHEMA);
  h.select('gateway');
  h.select('local');
  assert.equal(h.form.byClass('cumulo-lab-gateway')[0].hidden, true);
  assert.equal(h.form.byTag('label').find(l => l.byName('gpu'))!.hidden, false);
  h.form.fire('submit');
  await tick();
  assert.deepEqual(h.sent, [{ provider: 'local', workers: 1, idle_timeout: '20m' }]);
});
