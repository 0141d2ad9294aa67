/**
 * The "New cluster" form: provider, GPU type from the price list (with $/h
 * beside each), count, spot, budget, idle timeout; the estimate is shown
 * before anything launches. For a dask-gateway the GPU type and spot give way
 * to the gateway's address and its own cluster options (gatewayform.ts).
 */
import type { GatewayOptions, LaunchSpec, Offer, Prices } from './api';
import { RestAPI } from './api';
import { h } from './dom';
import { estimate, Estimate, rate } from './format';
import { gatewayEstimate, GatewaySection } from './gatewayform';

/** The provider whose form is the gateway's address and options instead of the price list. */
export const GATEWAY = 'gateway';
/** The provider whose form is a hosts target (ssh://user@host1,host2) instead of the price list. */
export const SSH = 'ssh';

/**
 * The launch target of an ssh cluster from the hosts field: "ssh://user@gpu1,gpu2" as written,
 * "user@gpu1,gpu2" with ssh:// put in front; throws Error when no host is named.
 */
export function sshTarget(hosts: string): string {
  const text = hosts.trim();
  const body = text.replace(/^ssh:\/\//, '').trim();
  if (!body || body.split(',').every(part => !part.trim())) {
    throw new Error('Hosts: name at least one host, like ssh://user@host1,host2');
  }
  return text.startsWith('ssh://') ? text : `ssh://${text}`;
}

export interface FormCallbacks {
  /** Launch; resolve when the server accepted the request (it then launches in the background). */
  submit(spec: LaunchSpec, est: Estimate): Promise<void>;
  cancel(): void;
  /** Read a dask-gateway's cluster options (default: the server's `gateway-options` endpoint). */
  gatewayOptions?(address: string): Promise<GatewayOptions>;
}

function field(label: string, input: HTMLElement, hint = ''): HTMLElement {
  return h('label', { className: 'cumulo-lab-field' }, h('span', {}, label), input, hint ? h('small', { className: 'cumulo-lab-muted' }, hint) : null);
}

/** Show or hide a row: `hidden` alone loses to the rows' own `display: flex`, so the style says it too. */
function show(el: HTMLElement, shown: boolean): void {
  el.hidden = !shown;
  el.style.display = shown ? '' : 'none';
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
  /** The launch target (a gateway's address). */
  address?: string;
  /** Provider options (a gateway's cluster options). */
  options?: Record<string, unknown>;
}): LaunchSpec {
  const spec: LaunchSpec = { provider: values.provider };
  const address = (values.address ?? '').trim();
  if (address) {
    spec.address = address;
  }
  if (values.options) {
    spec.options = values.options;
  }
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
  const showError = (message: string | null) => {
    error.textContent = message ?? '';
    error.hidden = !message;
  };
  const loader = callbacks.gatewayOptions
    ? (address: string) => callbacks.gatewayOptions!(address)
    : (address: string) => new RestAPI().gatewayOptions(address);
  // `update` is defined below; the section calls it after each load (the estimate needs the gateway's rate)
  const gateway = new GatewaySection(loader, () => update(), showError);
  const hosts = h('input', { className: 'jp-mod-styled', name: 'hosts', placeholder: 'ssh://user@host1,host2', spellcheck: 'false' });
  const hostsRow = field('Hosts', hosts, 'the scheduler runs on the first; this server logs in with its own SSH keys');
  const gpuRow = field('GPU type', gpu, 'from the price catalog, $/h per instance');
  const spotRow = h('label', { className: 'cumulo-lab-field cumulo-lab-check' }, spot, h('span', {}, 'Spot / preemptible'));
  const countHint = h('small', { className: 'cumulo-lab-muted' });
  const isGateway = () => provider.value === GATEWAY;
  const isSsh = () => provider.value === SSH;

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
    offer: isGateway() || isSsh() || gpu.value === '' ? undefined : offers[Number(gpu.value)],
    count: count.value,
    spot: !isGateway() && !isSsh() && spot.checked,
    budget: budget.value,
    idle: idle.value,
    address: isGateway() ? gateway.address.value : undefined
  });
  const current = (): Estimate => {
    const v = values();
    if (isGateway()) {
      return gatewayEstimate(gateway.loaded, Number(v.budget) || null);
    }
    return estimate(v.offer, Number(v.count) || 0, v.spot, Number(v.budget) || null);
  };
  const update = () => {
    est.textContent = current().text;
  };
  const showProvider = () => {
    const gw = isGateway();
    const ssh = isSsh();
    show(gpuRow, !gw && !ssh);
    show(spotRow, !gw && !ssh);
    show(gateway.node, gw);
    show(hostsRow, ssh);
    countHint.textContent = gw ? 'workers the gateway starts' : ssh ? 'workers, spread over the hosts' : 'workers (instances for cloud providers)';
  };
  provider.addEventListener('change', () => {
    fillGpus();
    showProvider();
    showError(null);
    update();
  });
  for (const el of [gpu, count, spot, budget, gateway.address]) {
    el.addEventListener('input', update);
    el.addEventListener('change', update);
  }
  fillGpus();
  showProvider();
  update();

  const form = h(
    'form',
    { className: 'cumulo-lab-form', 'aria-label': 'New cluster' },
    h('h3', {}, 'New cluster'),
    field('Name', name),
    field('Provider', provider),
    gateway.node,
    hostsRow,
    gpuRow,
    h('label', { className: 'cumulo-lab-field' }, h('span', {}, 'Count'), count, countHint),
    spotRow,
    field('Budget ($)', budget, 'the cluster stops when it is spent'),
    field('Idle timeout', idle, 'stop after this long without work'),
    est,
    error,
    h('div', { className: 'cumulo-lab-actions' }, launch, cancel)
  );
  cancel.addEventListener('click', () => callbacks.cancel());
  form.addEventListener('submit', event => {
    event.preventDefault();
    showError(null);
    if (isGateway() && gateway.address.value.trim() && !gateway.loaded) {
      // Enter in the address field, or an address changed since the options were read: show its
      // options first, so that nothing launches with options the user has not seen
      void gateway.load();
      return;
    }
    let spec: LaunchSpec;
    try {
      const address = isSsh() ? sshTarget(hosts.value) : values().address;
      spec = specFrom({ ...values(), address, options: isGateway() ? gateway.options() : undefined });
    } catch (e) {
      showError((e as Error).message);
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
