/**
 * A few lines of DOM for node's test runner: enough for the card's builders (createElement,
 * createElementNS, attributes, className, style, append, textContent, listeners), so view tests
 * check the elements a card is made of without a browser or a DOM library.
 */

export class FakeNode {
  readonly children: (FakeNode | string)[] = [];
  readonly attributes = new Map<string, string>();
  readonly style: Record<string, string> = {};
  readonly listeners = new Map<string, (() => void)[]>();
  className = '';

  constructor(
    readonly tagName: string,
    readonly namespaceURI: string | null = null
  ) {}

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

  addEventListener(type: string, fn: () => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
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
    createElementNS: (ns: string, tag: string) => new FakeNode(tag, ns)
  };
}

/** A built element seen as the fake it is. */
export function fake(el: unknown): FakeNode {
  if (!(el instanceof FakeNode)) {
    throw new Error(`not an element of the fake document: ${String(el)}`);
  }
  return el;
}
