/**
 * The "New cluster" form: provider, GPU type from the price list (with $/h
 * beside each), count, spot, budget, idle timeout; the estimate is shown
 * before anything launches.
 */
import type { LaunchSpec, Offer, Prices } from './api';
import { h } from './dom';
import { estimate, Estimate, rate } from './format';

export interface FormCallbacks {
  /** Launch; resolve when the server accepted the request (it then launches in the background). */
  submit(spec: LaunchSpec, est: Estimate): Promise<void>;
  cancel(): void;
}

function field(label: string, input: HTMLElement, hint = ''): HTMLElement {
  return h('label', { className: 'cumulo-lab-field' }, h('span', {}, label), input, hint ? h('small', { className: 'cumulo-lab-muted' }, hint) : null);
}

/** Offers of one provider, cheapest per hour first. */
export function offersFor(prices: Prices, provider: string): Offer[] {
  return prices.offers
    .filter(o => o.provider === provider)
    .sort((a, b) => (a.on_demand_per_hour ?? Infinity) - (b.on_demand_per_hour ?? Infinity));
}

/** Build the request body from the form values; throws Error with a message on bad input. */
export function specFrom(values: {
  name: string;
  provider: string;
  offer?: Offer;
  count: string;
  spot: boolean;
  budget: string;
  idle: string;
}): LaunchSpec {
  const spec: LaunchSpec = { provider: values.provider };
  const name = values.name.trim();
  if (name) {
    spec.name = name;
  }
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1) {
    throw new Error('Count must be a whole number of 1 or more');
  }
  spec.workers = count;
  if (values.offer) {
    spec.instance_type = values.offer.instance_type;
    if (values.offer.gpu_model) {
      spec.gpu = values.offer.gpu_model;
    }
    if (values.offer.region) {
      spec.region = values.offer.region;
    }
  }
  if (values.spot) {
    spec.spot = true;
  }
  if (values.budget.trim()) {
    const budget = Number(values.budget);
    if (!(budget > 0)) {
      throw new Error('Budget must be a positive number of dollars');
    }
    spec.budget = budget;
  }
  if (values.idle.trim()) {
    spec.idle_timeout = values.idle.trim();
  }
  return spec;
}

export function launchForm(prices: Prices, callbacks: FormCallbacks): HTMLElement {
  const name = h('input', { className: 'jp-mod-styled', name: 'name', placeholder: 'generated if empty', spellcheck: 'false' });
  const provider = h('select', { className: 'jp-mod-styled', name: 'provider' });
  for (const p of prices.providers) {
    provider.append(h('option', { value: p }, p));
  }
  const gpu = h('select', { className: 'jp-mod-styled', name: 'gpu' });
  const count = h('input', { className: 'jp-mod-styled', name: 'count', type: 'number', min: '1', value: '1' });
  const spot = h('input', { name: 'spot', type: 'checkbox' });
  const budget = h('input', { className: 'jp-mod-styled', name: 'budget', type: 'number', min: '0', step: '0.5', placeholder: 'none' });
  const idle = h('input', { className: 'jp-mod-styled', name: 'idle', placeholder: 'e.g. 20m', value: '20m' });
  const est = h('div', { className: 'cumulo-lab-estimate' });
  const error = h('div', { className: 'cumulo-lab-error', hidden: true });
  const launch = h('button', { className: 'jp-Button jp-mod-styled jp-mod-accept', type: 'submit' }, 'Launch');
  const cancel = h('button', { className: 'jp-Button jp-mod-styled jp-mod-reject', type: 'button' }, 'Cancel');

  let offers: Offer[] = [];
  const fillGpus = () => {
    offers = offersFor(prices, provider.value);
    gpu.replaceChildren();
    if (!offers.length) {
      gpu.append(h('option', { value: '' }, provider.value === 'local' ? "this machine's CPUs/GPUs (no catalog price)" : 'no offers in the catalog'));
    }
    offers.forEach((o, i) => {
      // the price first: the sidebar is narrow and a select cuts long labels on the right
      const spotText = o.spot_per_hour ? ` (spot ${rate(o.spot_per_hour)})` : '';
      const label = `${rate(o.on_demand_per_hour)}${spotText} · ${o.gpu_count ?? '?'}× ${o.gpu_model ?? 'CPU'} · ${o.instance_type}`;
      gpu.append(h('option', { value: String(i) }, label));
    });
  };
  const values = () => ({
    name: name.value,
    provider: provider.value,
    offer: gpu.value === '' ? undefined : offers[Number(gpu.value)],
    count: count.value,
    spot: spot.checked,
    budget: budget.value,
    idle: idle.value
  });
  const current = (): Estimate => {
    const v = values();
    return estimate(v.offer, Number(v.count) || 0, v.spot, Number(v.budget) || null);
  };
  const update = () => {
    est.textContent = current().text;
  };
  provider.addEventListener('change', () => {
    fillGpus();
    update();
  });
  for (const el of [gpu, count, spot, budget]) {
    el.addEventListener('input', update);
    el.addEventListener('change', update);
  }
  fillGpus();
  update();

  const form = h(
    'form',
    { className: 'cumulo-lab-form', 'aria-label': 'New cluster' },
    h('h3', {}, 'New cluster'),
    field('Name', name),
    field('Provider', provider),
    field('GPU type', gpu, 'from the price catalog, $/h per instance'),
    field('Count', count, 'workers (instances for cloud providers)'),
    h('label', { className: 'cumulo-lab-field cumulo-lab-check' }, spot, h('span', {}, 'Spot / preemptible')),
    field('Budget ($)', budget, 'the cluster stops when it is spent'),
    field('Idle timeout', idle, 'stop after this long without work'),
    est,
    error,
    h('div', { className: 'cumulo-lab-actions' }, launch, cancel)
  );
  cancel.addEventListener('click', () => callbacks.cancel());
  form.addEventListener('submit', event => {
    event.preventDefault();
    error.hidden = true;
    let spec: LaunchSpec;
    try {
      spec = specFrom(values());
    } catch (e) {
      error.textContent = (e as Error).message;
      error.hidden = false;
      return;
    }
    launch.disabled = true;
    callbacks
      .submit(spec, current())
      .catch(e => {
        error.textContent = (e as Error).message;
        error.hidden = false;
      })
      .finally(() => {
        launch.disabled = false;
      });
  });
  return form;
}
