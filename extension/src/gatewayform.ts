/**
 * The dask-gateway part of the New cluster form: the gateway's address, then one
 * input per cluster option of its own schema (read by the server, which holds the
 * credentials), defaults filled in. What the inputs hold becomes `options` of the
 * launch, exactly as `cumulo.connect("gateway://...", options={...})` takes them.
 */
import type { GatewayField, GatewayOptions } from './api';
import { h } from './dom';
import { duration, Estimate, money, rate } from './format';

/** The element an option is edited in (an input, a select or a textarea). */
type OptionInput = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** The `name` attribute of an option's input, so tests and styles find it. */
export function inputName(field: GatewayField): string {
  return `option-${field.name}`;
}

function finite(x: unknown): x is number {
  return typeof x === 'number' && Number.isFinite(x);
}

/** "between 1 and 2", "of at least 1", "of at most 8" or "" for a number's bounds. */
function bounds(field: GatewayField): string {
  const { min, max } = field;
  if (finite(min) && finite(max)) {
    return `between ${min} and ${max}`;
  }
  if (finite(min)) {
    return `of at least ${min}`;
  }
  if (finite(max)) {
    return `of at most ${max}`;
  }
  return '';
}

/** The input for one option, its default filled in (as a property, so it is also what it holds now). */
export function fieldInput(field: GatewayField): OptionInput {
  const name = inputName(field);
  const title = field.name;
  switch (field.kind) {
    case 'integer':
    case 'float': {
      const input = h('input', {
        className: 'jp-mod-styled',
        name,
        title,
        type: 'number',
        step: field.kind === 'integer' ? '1' : 'any',
        min: finite(field.min) ? String(field.min) : undefined,
        max: finite(field.max) ? String(field.max) : undefined
      });
      input.value = finite(field.default) ? String(field.default) : '';
      return input;
    }
    case 'bool': {
      const input = h('input', { name, title, type: 'checkbox' });
      input.checked = field.default === true;
      return input;
    }
    case 'select': {
      const select = h('select', { className: 'jp-mod-styled', name, title });
      for (const choice of field.choices ?? []) {
        select.append(h('option', { value: choice, selected: choice === field.default }, choice));
      }
      select.value = String(field.default ?? '');
      return select;
    }
    case 'mapping': {
      const area = h('textarea', { className: 'jp-mod-styled', name, title, rows: '2', spellcheck: 'false', placeholder: '{"key": "value"}' });
      const value = field.default;
      area.value = value && typeof value === 'object' && Object.keys(value).length ? JSON.stringify(value) : '';
      return area;
    }
    default: {
      const input = h('input', { className: 'jp-mod-styled', name, title, spellcheck: 'false' });
      input.value = field.default === null || field.default === undefined ? '' : String(field.default);
      return input;
    }
  }
}

/** One option as a labelled row of the form (a checkbox beside its label, the rest below it). */
export function fieldRow(field: GatewayField, input: OptionInput): HTMLElement {
  if (field.kind === 'bool') {
    return h('label', { className: 'cumulo-lab-field cumulo-lab-check' }, input, h('span', {}, field.label));
  }
  let hint = '';
  if (field.kind === 'integer' || field.kind === 'float') {
    const span = bounds(field);
    hint = span ? `${field.kind === 'integer' ? 'a whole number' : 'a number'} ${span}` : '';
  } else if (field.kind === 'mapping') {
    hint = 'JSON, e.g. {"KEY": "value"}';
  }
  return h(
    'label',
    { className: 'cumulo-lab-field' },
    h('span', {}, field.label),
    input,
    hint ? h('small', { className: 'cumulo-lab-muted' }, hint) : null
  );
}

/**
 * The launch's `options` from what the inputs hold (every field, so the gateway
 * gets exactly what the form shows); throws Error naming the field on bad input.
 */
export function optionsFrom(fields: GatewayField[], inputs: Map<string, OptionInput>): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const field of fields) {
    const input = inputs.get(field.name);
    if (!input) {
      continue;
    }
    if (field.kind === 'bool') {
      options[field.name] = (input as HTMLInputElement).checked === true;
    } else if (field.kind === 'integer' || field.kind === 'float') {
      const text = String(input.value ?? '').trim();
      const n = Number(text);
      const whole = field.kind === 'integer';
      const span = bounds(field);
      const want = `${field.label} must be ${whole ? 'a whole number' : 'a number'}${span ? ' ' + span : ''}`;
      if (!text || !Number.isFinite(n) || (whole && !Number.isInteger(n))) {
        throw new Error(want);
      }
      if ((finite(field.min) && n < field.min) || (finite(field.max) && n > field.max)) {
        throw new Error(`${want} (got ${text})`);
      }
      options[field.name] = n;
    } else if (field.kind === 'mapping') {
      const text = String(input.value ?? '').trim();
      let value: unknown = {};
      if (text) {
        try {
          value = JSON.parse(text);
        } catch {
          throw new Error(`${field.label} must be a JSON object, e.g. {"KEY": "value"}`);
        }
      }
      if (!value || typeof value !== 'object' || Array.isArray(value)) {
        throw new Error(`${field.label} must be a JSON object, e.g. {"KEY": "value"}`);
      }
      options[field.name] = value;
    } else {
      options[field.name] = String(input.value ?? '');
    }
  }
  return options;
}

/** The estimate line for a gateway: its configured rate, or "no rate set" (never $0). */
export function gatewayEstimate(loaded: GatewayOptions | null, budget: number | null): Estimate {
  if (!loaded) {
    return { perHour: null, hoursOfBudget: null, text: "Estimate: load the gateway's options to see its rate" };
  }
  const perHour = loaded.rate_per_hour;
  if (perHour === null || !Number.isFinite(perHour)) {
    return {
      perHour: null,
      hoursOfBudget: null,
      text: 'Estimate: no rate set (set cumulo.gateway.rate-per-hour to price this gateway)'
    };
  }
  const hours = budget && perHour > 0 ? budget / perHour : null;
  let text = `Estimate: ${rate(perHour)} (configured, cumulo.gateway.rate-per-hour); ${money(perHour * 8)} for 8 h`;
  if (hours !== null) {
    text += `; budget lasts ${duration(hours * 3600)}`;
  }
  return { perHour, hoursOfBudget: hours, text };
}

/** Reads a gateway's options (the server's `gateway-options` endpoint, or a fake in tests). */
export type GatewayLoader = (address: string) => Promise<GatewayOptions>;

/**
 * The gateway section of the form: an address input with a "Load options" button,
 * then the option rows. Loading happens on change (blur, Enter) or the button;
 * `onChange` runs after every load (the estimate uses the rate), and `onError`
 * gets a failed load's message (the form shows it where its other errors go).
 */
export class GatewaySection {
  readonly node: HTMLElement;
  readonly address: HTMLInputElement;
  readonly loadButton: HTMLButtonElement;
  private readonly slot: HTMLElement;
  private inputs = new Map<string, OptionInput>();
  private _loaded: GatewayOptions | null = null;
  private loadedFor = '';
  private pending: Promise<boolean> | null = null;
  private pendingFor = '';

  constructor(
    private readonly loader: GatewayLoader,
    private readonly onChange: () => void,
    private readonly onError: (message: string | null) => void
  ) {
    this.address = h('input', {
      className: 'jp-mod-styled',
      name: 'address',
      placeholder: 'gateway://host:port or gateway+https://host',
      spellcheck: 'false'
    });
    this.loadButton = h('button', { className: 'jp-Button jp-mod-styled cumulo-lab-load', type: 'button' }, 'Load options');
    this.slot = h('div', { className: 'cumulo-lab-gateway-options' });
    this.address.addEventListener('change', () => void this.load());
    this.loadButton.addEventListener('click', () => void this.load());
    this.node = h(
      'div',
      { className: 'cumulo-lab-gateway' },
      h(
        'label',
        { className: 'cumulo-lab-field' },
        h('span', {}, 'Gateway address'),
        this.address,
        h('small', { className: 'cumulo-lab-muted' }, "the server's dask-gateway credentials are used")
      ),
      h('div', { className: 'cumulo-lab-actions' }, this.loadButton),
      this.slot
    );
  }

  /** The options last loaded, if they are still those of the address in the input. */
  get loaded(): GatewayOptions | null {
    return this._loaded && this.loadedFor === this.address.value.trim() ? this._loaded : null;
  }

  /** Load the options of the address in the input (once per address); true when they are shown. */
  load(): Promise<boolean> {
    const address = this.address.value.trim();
    if (!address) {
      this.show(null, '');
      return Promise.resolve(false);
    }
    if (this.loaded) {
      return Promise.resolve(true);
    }
    if (this.pending && this.pendingFor === address) {
      return this.pending;
    }
    this.pendingFor = address;
    this.onError(null);
    this.slot.replaceChildren(h('div', { className: 'cumulo-lab-muted' }, `Loading the options of ${address}…`));
    this.loadButton.disabled = true;
    const run = this.loader(address).then(
      options => {
        if (this.address.value.trim() === address) {
          this.show(options, address);
        }
        return true;
      },
      (e: unknown) => {
        if (this.address.value.trim() === address) {
          this.show(null, '');
          this.onError(`Cannot load the options of ${address}: ${(e as Error).message}`);
        }
        return false;
      }
    );
    this.pending = run.finally(() => {
      if (this.pendingFor === address) {
        this.pending = null;
        this.loadButton.disabled = false;
      }
    });
    return this.pending;
  }

  /** Draw the rows of `options` (or none), remembering the address they belong to. */
  show(options: GatewayOptions | null, address: string): void {
    this._loaded = options;
    this.loadedFor = address;
    this.inputs = new Map();
    const rows: HTMLElement[] = [];
    if (options) {
      if (options.fields.length) {
        rows.push(h('div', { className: 'cumulo-lab-muted cumulo-lab-gateway-caption' }, "This gateway's options"));
      }
      for (const field of options.fields) {
        const input = fieldInput(field);
        this.inputs.set(field.name, input);
        rows.push(fieldRow(field, input));
      }
      if (!options.fields.length) {
        rows.push(h('div', { className: 'cumulo-lab-muted' }, 'This gateway offers no cluster options.'));
      }
    }
    this.slot.replaceChildren(...rows);
    this.onChange();
  }

  /** The launch's `options`; throws Error with a message when the options are not loaded or a value is bad. */
  options(): Record<string, unknown> {
    const loaded = this.loaded;
    if (!loaded) {
      throw new Error("Load the gateway's options first: enter its address (gateway://host:port) and press Load options");
    }
    return optionsFrom(loaded.fields, this.inputs);
  }
}
