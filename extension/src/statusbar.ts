/** The status bar spend meter: running clusters, total $/h, spent today. Click opens the sidebar. */
import { Widget } from '@lumino/widgets';

import { meterText } from './format';
import { ComputeModel } from './model';

export class SpendMeter extends Widget {
  constructor(
    private model: ComputeModel,
    onClick: () => void
  ) {
    super();
    this.addClass('cumulo-lab-meter');
    this.node.title = 'cumulo: running clusters, total $/h, spent today (click for the Compute sidebar)';
    this.node.addEventListener('click', onClick);
    model.changed.connect(this.update, this);
    this.update();
  }

  dispose(): void {
    this.model.changed.disconnect(this.update, this);
    super.dispose();
  }

  update(): void {
    const totals = this.model.totals;
    this.node.textContent = meterText(totals);
    this.node.dataset.running = String(totals?.running ?? 0);
    this.toggleClass('cumulo-lab-meter-active', (totals?.running ?? 0) > 0);
  }
}
