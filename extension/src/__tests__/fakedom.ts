/**
 * A few lines of DOM for node's test runner: enough for the card's builders (createElement,
 * createElementNS, attributes, className, style, append, textContent, listeners), so view tests
 * check the elements a card is made of without a browser or a DOM library.
 */

/** The page the fake document stands for (a Jupyter server on loopback). */
export const PAGE = 'http://127.0.0.1:8888/';

export class FakeNode {
  readonly children: (FakeNode | string)[] = [];
  readonly attributes = new Map<string, string>();
  readonly style: Record<string, string> = {};
  readonly listeners = new Map<string, ((event?: unknown) => void)[]>();
  className = '';
  /** What a widget sets on its node (Lumino's Widget: id, title; data-* through dataset). */
  id = '';
  title = '';
  readonly dataset: Record<string, string> = {};
  /** The class list over `className`, as Lumino's addClass/removeClass/toggleClass use it. */
  readonly classList = {
    contains: (name: string): boolean => this.className.split(/\s+/).includes(name),
    add: (name: string): void => {
      if (!this.classList.contains(name)) {
        this.className = [this.className, name].filter(Boolean).join(' ');
      }
    },
    remove: (name: string): void => {
      this.className = this.className
        .split(/\s+/)
        .filter(c => c && c !== name)
        .join(' ');
    },
    toggle: (name: string, force?: boolean): boolean => {
      const on = force ?? !this.classList.contains(name);
      if (on) {
        this.classList.add(name);
      } else {
        this.classList.remove(name);
      }
      return on;
    }
  };
  /** An anchor's href property (URLExt.parse sets it, then reads it back through toString, as in a browser). */
  href?: string;
  /** Form controls' state, as properties (what a browser keeps apart from the attributes). */
  hidden = false;
  checked = false;
  disabled = false;
  private _value: string | undefined;

  constructor(
    readonly tagName: string,
    readonly namespaceURI: string | null = null
  ) {}

  /** A link is its href resolved against the page (what JupyterLab's URLExt reads); other nodes, their tag. */
  toString(): string {
    return this.tagName === 'a' && this.href !== undefined ? new URL(this.href, PAGE).href : `<${this.tagName}>`;
  }

  setAttribute(name: string, value: string): void {
    if (name === 'class') {
      this.className = value;
    } else {
      this.attributes.set(name, String(value));
    }
  }

  getAttribute(name: string): string | null {
    return name === 'class' ? this.className || null : this.attributes.get(name) ?? null;
  }

  append(...nodes: (FakeNode | string)[]): void {
    this.children.push(...nodes);
  }

  replaceChildren(...nodes: (FakeNode | string)[]): void {
    this.children.splice(0, this.children.length, ...nodes);
  }

  /** An input's value: what was set, else its `value` attribute; a select's is its selected option's. */
  get value(): string {
    if (this._value !== undefined) {
      return this._value;
    }
    if (this.tagName === 'select') {
      const options = this.byTag('option');
      const chosen = options.find(o => o.attributes.has('selected')) ?? options[0];
      return chosen ? chosen.getAttribute('value') ?? chosen.textContent : '';
    }
    return this.attributes.get('value') ?? '';
  }

  set value(v: string) {
    this._value = String(v);
  }

  addEventListener(type: string, fn: (event?: unknown) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }

  /** Run the listeners of `type`, as a browser would on that event (with a preventDefault-able event). */
  fire(type: string): void {
    const event = { type, preventDefault: () => undefined };
    for (const fn of this.listeners.get(type) ?? []) {
      fn(event);
    }
  }

  /** The first element below this one whose `name` attribute is `name`. */
  byName(name: string): FakeNode | undefined {
    return this.all().find(n => n.attributes.get('name') === name);
  }

  get textContent(): string {
    return this.children.map(c => (typeof c === 'string' ? c : c.textContent)).join('');
  }

  set textContent(value: string) {
    this.children.splice(0, this.children.length, value);
  }

  /** Every element below this one (depth first) that has class `name`. */
  byClass(name: string): FakeNode[] {
    return this.all().filter(n => n.className.split(/\s+/).includes(name));
  }

  /** The first element below this one with tag `selector` (the only selectors the views use are tag names). */
  querySelector(selector: string): FakeNode | null {
    return this.byTag(selector)[0] ?? null;
  }

  /** Every element below this one with tag `tag`. */
  byTag(tag: string): FakeNode[] {
    return this.all().filter(n => n.tagName === tag);
  }

  all(): FakeNode[] {
    const out: FakeNode[] = [];
    for (const c of this.children) {
      if (typeof c !== 'string') {
        out.push(c, ...c.all());
      }
    }
    return out;
  }
}

/** Install the fake `document` as a global (idempotent). */
export function installFakeDocument(): void {
  (globalThis as unknown as { document: unknown }).document = {
    createElement: (tag: string) => new FakeNode(tag),
    createElementNS: (ns: string, tag: string) => new FakeNode(tag, ns),
    getElementById: () => null
  };
}

/** A built element seen as the fake it is. */
export function fake(el: unknown): FakeNode {
  if (!(el instanceof FakeNode)) {
    throw new Error(`not an element of the fake document: ${String(el)}`);
  }
  return el;
}
