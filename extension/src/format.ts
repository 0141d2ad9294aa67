/**
 * Pure formatting and arithmetic for money and sizes. Money is data: a missing
 * rate is "no rate set", never "$0.00", and estimates say they are estimates.
 */
import type { ClusterRow, Offer, Totals } from './api';

/** "$1.23", "$0.004", or "no rate set" for null. */
export function money(amount: number | null | undefined): string {
  if (amount === null || amount === undefined || Number.isNaN(amount)) {
    return 'no rate set';
  }
  if (amount !== 0 && Math.abs(amount) < 0.01) {
    return `$${amount.toFixed(3)}`;
  }
  return `$${amount.toLocaleString('en-US', {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2
  })}`;
}

/**
 * What one cell cost, to the 1/100 of a cent as the notebook's meter shows it ("$0.0120"),
 * "<$0.0001" for less (never a "$0.0000" that reads as free), "no rate set" for null.
 */
export function cellCost(amount: number | null | undefined): string {
  if (amount === null || amount === undefined || Number.isNaN(amount) || amount === 0 || Math.abs(amount) >= 1) {
    return money(amount);
  }
  return Math.abs(amount) < 0.0001 ? '<$0.0001' : `$${amount.toFixed(4)}`;
}

/** "4.1 task-s", "1.2k task-s": the task time a cell's work took (summed over threads). */
export function taskSeconds(seconds: number | null | undefined): string {
  const s = Math.max(0, seconds ?? 0);
  return s >= 1000 ? `${(s / 1000).toFixed(1)}k task-s` : `${s.toFixed(1)} task-s`;
}

/** "$2.49/h" or "no rate set". */
export function rate(perHour: number | null | undefined): string {
  const m = money(perHour);
  return m === 'no rate set' ? m : `${m}/h`;
}

/** "45s", "12m", "3h 05m". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m`;
  }
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h}h ${String(m).padStart(2, '0')}m`;
}

/** Share of the budget spent, clamped to [0, 1]; null when there is no budget or no figure. */
export function budgetFraction(row: ClusterRow): number | null {
  if (!row.budget || row.spent === null || row.spent === undefined) {
    return null;
  }
  return Math.max(0, Math.min(1, row.spent / row.budget));
}

/** Whether a row may still be billing. */
export function isOpen(row: ClusterRow): boolean {
  return ['launching', 'starting', 'running', 'closing', 'stop-failed'].includes(row.state);
}

/** Whether the card offers Stop: any open registry row the server says it can stop (a starting
 * cluster whose kernel died, one whose stop failed), not a launch this server is still making. */
export function canStop(row: ClusterRow): boolean {
  return row.state !== 'launching' && (row.stoppable ?? row.state === 'running');
}

/** Whether the card offers Scale: the server says it can (it launched the cluster, whose provider can
 * scale); a cluster started by a kernel is scaled by that kernel, one whose provider cannot scale never. */
export function canScale(row: ClusterRow): boolean {
  return row.state === 'running' && row.scalable === true;
}

/** The state as a user reads it: the one that matters says that it may still bill. */
export function stateLabel(row: ClusterRow): string {
  return row.state === 'stop-failed' || row.may_bill ? 'stop failed: may still bill' : row.state;
}

/** "2 workers · 8 GPUs H100" / "1 worker". */
export function size(row: ClusterRow): string {
  const w = row.workers ?? 0;
  let text = `${w} worker${w === 1 ? '' : 's'}`;
  if (row.gpus) {
    text += ` · ${row.gpus} GPU${row.gpus === 1 ? '' : 's'}`;
    if (row.gpu_model) {
      text += ` ${row.gpu_model}`;
    }
  }
  return text;
}

/** The price of one offer for a request, or null when the catalog has none (e.g. no spot price). */
export function offerRate(offer: Offer | undefined, spot: boolean): number | null {
  if (!offer) {
    return null;
  }
  const price = spot ? offer.spot_per_hour : offer.on_demand_per_hour;
  return price === null || price === undefined ? null : price;
}

/** The estimate shown before launch. */
export interface Estimate {
  perHour: number | null;
  /** Hours until the budget is used up at that rate (null: no budget or no rate). */
  hoursOfBudget: number | null;
  text: string;
}

/**
 * Estimate for `count` instances of `offer` (null offer: a cluster with no
 * catalog price, e.g. local), with an optional budget in dollars.
 */
export function estimate(
  offer: Offer | undefined,
  count: number,
  spot: boolean,
  budget: number | null
): Estimate {
  const unit = offerRate(offer, spot);
  if (unit === null) {
    const why =
      offer && spot ? 'no spot price in the catalog' : 'no catalog price';
    return {
      perHour: null,
      hoursOfBudget: null,
      text: `Estimate: no rate set (${why}; set cumulo.cost.* to price your own hardware)`
    };
  }
  const perHour = unit * Math.max(0, count);
  const hours = budget && perHour > 0 ? budget / perHour : null;
  let text = `Estimate: ${rate(perHour)} (${count} × ${offer!.instance_type} at ${rate(unit)}, ${offer!.source}, ${offer!.as_of})`;
  text += `; ${money(perHour * 8)} for 8 h`;
  if (hours !== null) {
    text += `; budget lasts ${duration(hours * 3600)}`;
  }
  return { perHour, hoursOfBudget: hours, text };
}

/** The status bar text: "2 clusters · $3.29/h · $4.10 today". */
export function meterText(totals: Totals | null): string {
  if (!totals) {
    return 'Compute: …';
  }
  const n = totals.running;
  const parts = [`${n} cluster${n === 1 ? '' : 's'}`];
  if (n > 0) {
    parts.push(
      totals.rate_per_hour === null ? 'no rate set' : rate(totals.rate_per_hour)
    );
  }
  parts.push(
    totals.spent_today === null
      ? 'today: no rate set'
      : `${money(totals.spent_today)} today`
  );
  return parts.join(' · ');
}

/** Python source of the "Insert connect cell" command. */
export function connectCode(name: string): string {
  return `import cumulo\n\ncluster = cumulo.connect(name=${JSON.stringify(name)})\ncluster`;
}

/** Where the browser opens a running cluster's Dask dashboard: the Jupyter server's route (behind its
 * login, over the server's SSH tunnel where the dashboard listens on a host's loopback) when the server
 * proxies it, else the address the provider serves it at (dask-gateway's own proxy); null when none. */
export function dashboardUrl(row: ClusterRow, baseUrl: string): string | null {
  if (!row.dashboard || row.state !== 'running') {
    return null;
  }
  if (row.dashboard_proxied === false) {
    return row.dashboard;
  }
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return `${base}cumulo/clusters/${encodeURIComponent(row.name)}/dashboard/status`;
}
