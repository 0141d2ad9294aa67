/** The "Compute" sidebar: a card per open cluster, a New cluster form, today's closed clusters folded below. */
import { Dialog, InputDialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

import type { ClusterRow } from './api';
import { closedLine, openCard } from './card';
import { h } from './dom';
import { launchForm } from './form';
import { dashboardUrl, money, rate } from './format';
import { ComputeModel } from './model';

export const PANEL_ID = 'cumulo-compute';

export class ComputePanel extends Widget {
  constructor(
    private model: ComputeModel,
    private insertConnect: (name: string) => void,
    private openDashboard: (name: string, url: string) => void = () => {}
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('cumulo-lab-panel');
    this.title.caption = 'Compute: your clusters and what they cost';
    const newButton = h('button', { className: 'jp-Button jp-mod-styled jp-mod-accept cumulo-lab-new', type: 'button' }, 'New cluster');
    newButton.addEventListener('click', () => void this.openForm());
    this.node.append(
      h('div', { className: 'cumulo-lab-panel-head' }, h('h2', {}, 'Compute'), newButton),
      this._formSlot,
      this._status,
      this._cards,
      this._closed
    );
    model.changed.connect(this.render, this);
    this.render();
  }

  dispose(): void {
    this.model.changed.disconnect(this.render, this);
    super.dispose();
  }

  /** Show the New cluster form (loads the price list first). */
  async openForm(): Promise<void> {
    this._formSlot.replaceChildren(h('div', { className: 'cumulo-lab-muted' }, 'Loading prices…'));
    try {
      const prices = await this.model.prices();
      this._formSlot.replaceChildren(
        launchForm(prices, {
          submit: async (spec, est) => {
            if (est.perHour !== null && est.perHour >= this.model.confirmAbovePerHour) {
              const answer = await showDialog({
                title: 'Launch a paid cluster?',
                body: `${est.text}. It bills until it is stopped.`,
                buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: `Launch at ${rate(est.perHour)}` })]
              });
              if (!answer.button.accept) {
                return;
              }
            }
            await this.model.launch(spec);
            this._formSlot.replaceChildren();
          },
          cancel: () => this._formSlot.replaceChildren()
        })
      );
    } catch (e) {
      this._formSlot.replaceChildren(h('div', { className: 'cumulo-lab-error' }, `Cannot load prices: ${(e as Error).message}`));
    }
  }

  private render(): void {
    const model = this.model;
    const now = model.listing?.now ?? Date.now() / 1000;
    const actions = {
      dashboardUrl: (row: ClusterRow) => dashboardUrl(row, PageConfig.getBaseUrl()),
      openDashboard: (row: ClusterRow, url: string) => this.openDashboard(row.name, url),
      scale: (row: ClusterRow) => void this.scale(row),
      stop: (row: ClusterRow) => void this.stop(row),
      insertConnect: (row: ClusterRow) => this.insertConnect(row.name),
      dismiss: (row: ClusterRow) => void model.stop(row.name).catch(e => showErrorMessage('Dismiss failed', e))
    };
    this._status.textContent = model.error ? `Cannot reach the cumulo server extension: ${model.error}` : '';
    this._status.hidden = !model.error;
    const open = model.open;
    this._cards.replaceChildren(
      ...(open.length
        ? open.map(row => openCard(row, actions, now))
        : [h('div', { className: 'cumulo-lab-empty cumulo-lab-muted' }, model.listing ? 'No clusters running. Nothing is billing.' : 'Loading…')])
    );
    const closed = model.closedToday;
    const wasOpen = (this._closed.querySelector('details') as HTMLDetailsElement | null)?.open ?? false;
    const priced = closed.filter(r => r.spent !== null && r.spent !== undefined);
    const spent = priced.length ? priced.reduce((sum, r) => sum + (r.spent as number), 0) : null;
    this._closed.replaceChildren();
    if (closed.length) {
      const details = h(
        'details',
        { className: 'cumulo-lab-closed-list', open: wasOpen },
        h('summary', {}, `Closed today (${closed.length}) · ${money(spent)}`),
        h('ul', {}, ...closed.map(closedLine))
      );
      this._closed.append(details);
    }
  }

  private async scale(row: ClusterRow): Promise<void> {
    const answer = await InputDialog.getNumber({ title: `Scale ${row.name}: workers`, value: row.workers ?? 1 });
    if (!answer.button.accept || answer.value === null) {
      return;
    }
    try {
      await this.model.scale(row.name, answer.value);
    } catch (e) {
      await showErrorMessage(`Cannot scale ${row.name}`, (e as Error).message);
    }
  }

  private async stop(row: ClusterRow): Promise<void> {
    const answer = await showDialog({
      title: `Stop ${row.name}?`,
      body: `This stops the ${row.provider} cluster ${row.name} (${rate(row.rate_per_hour)}, spent ${money(row.spent)}) and its workers. Work not yet saved on it is lost.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.model.stop(row.name);
    } catch (e) {
      await showErrorMessage(`Cannot stop ${row.name}`, (e as Error).message);
    }
  }

  private _formSlot = h('div', { className: 'cumulo-lab-form-slot' });
  private _status = h('div', { className: 'cumulo-lab-error', hidden: true });
  private _cards = h('div', { className: 'cumulo-lab-cards' });
  private _closed = h('div', { className: 'cumulo-lab-closed-slot' });
}
