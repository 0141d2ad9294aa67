/**
 * What the Compute panel and the spend meter need to run under node's test runner: the fake document,
 * the globals Lumino reads when it loads (`navigator`, `Element`, `DragEvent`, document listeners), and a stand-in for @jupyterlab/apputils'
 * dialogs (JupyterLab's Dialog needs a browser; the real one is driven by the browser tests). The
 * stand-in answers each dialog as the test says and records what the panel asked and showed.
 *
 * Import this module before the views: it must be in place when they load their imports.
 */
import { FakeNode, installFakeDocument } from './fakedom';

installFakeDocument();
(globalThis as unknown as { navigator: unknown }).navigator ??= { platform: 'Linux', userAgent: 'node' };
const globals = globalThis as unknown as Record<string, unknown>;
globals.Element ??= FakeNode; // Lumino looks up Element.prototype.matches
globals.DragEvent ??= class DragEvent extends Event {}; // Lumino's drag-and-drop subclasses it
// Lumino's Poll (through @jupyterlab/coreutils) listens for the page being hidden
Object.assign(globals.document as object, {
  visibilityState: 'visible',
  addEventListener: () => undefined,
  removeEventListener: () => undefined
});

export interface Shown {
  kind: 'dialog' | 'error' | 'number';
  title: string;
  body: string;
}

/** Every dialog the views opened, in order; and the answer the next dialogs give (accept, a number). */
export const dialogs = {
  shown: [] as Shown[],
  accept: true,
  number: 1 as number | null,
  reset(): void {
    this.shown.length = 0;
    this.accept = true;
    this.number = 1;
  }
};

const text = (body: unknown): string => (body instanceof Error ? body.message : String(body ?? ''));

const apputils = {
  Dialog: {
    cancelButton: (o: Record<string, unknown> = {}) => ({ label: 'Cancel', accept: false, ...o }),
    warnButton: (o: Record<string, unknown> = {}) => ({ label: 'OK', accept: true, ...o })
  },
  showDialog: async (options: { title: string; body: unknown }) => {
    dialogs.shown.push({ kind: 'dialog', title: String(options.title), body: text(options.body) });
    return { button: { accept: dialogs.accept }, value: null };
  },
  showErrorMessage: async (title: string, error: unknown) => {
    dialogs.shown.push({ kind: 'error', title, body: text(error) });
    return { button: { accept: true }, value: null };
  },
  InputDialog: {
    getNumber: async (options: { title: string }) => {
      dialogs.shown.push({ kind: 'number', title: options.title, body: '' });
      return { button: { accept: dialogs.accept }, value: dialogs.number };
    }
  }
};

// the views' `require('@jupyterlab/apputils')` gets the stand-in (its real index needs a browser to load)
const resolved = require.resolve('@jupyterlab/apputils');
require.cache[resolved] = { id: resolved, filename: resolved, loaded: true, exports: apputils } as unknown as NodeModule;
