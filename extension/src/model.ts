/**
 * The Compute model: the user's clusters as the server last reported them,
 * refreshed on a timer, with signals for the views. No DOM here.
 */
import { ISignal, Signal } from '@lumino/signaling';

import type {
  ClusterRow,
  ComputeAPI,
  LaunchSpec,
  Listing,
  Prices,
  Totals
} from './api';
import { isOpen } from './format';

/** A launch from this server that failed: shown as a card with its error until dismissed. */
export function isFailedLaunch(row: ClusterRow): boolean {
  return row.state === 'failed' && !!row.error;
}

export class ComputeModel {
  constructor(
    readonly api: ComputeAPI,
    options: { refreshSeconds?: number; confirmAbovePerHour?: number } = {}
  ) {
    this._refreshSeconds = options.refreshSeconds ?? 5;
    this.confirmAbovePerHour = options.confirmAbovePerHour ?? 5;
  }

  /** Emitted after every refresh, successful or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The last listing (null before the first answer). */
  get listing(): Listing | null {
    return this._listing;
  }

  /** The last refresh error, shown in the panel (null when the last refresh worked). */
  get error(): string | null {
    return this._error;
  }

  get totals(): Totals | null {
    return this._listing?.totals ?? null;
  }

  /** Open clusters and launches, newest first. */
  get open(): ClusterRow[] {
    return (this._listing?.clusters ?? []).filter(
      r => isOpen(r) || isFailedLaunch(r)
    );
  }

  /** Clusters closed today (with their final cost), newest first. */
  get closedToday(): ClusterRow[] {
    return (this._listing?.clusters ?? []).filter(
      r => !isOpen(r) && !isFailedLaunch(r)
    );
  }

  /** Launches with a dollar rate at or above this ask for confirmation first. */
  confirmAbovePerHour: number;

  get refreshSeconds(): number {
    return this._refreshSeconds;
  }

  set refreshSeconds(value: number) {
    this._refreshSeconds = Math.max(1, value);
    if (this._timer !== null) {
      this.stopPolling();
      this.startPolling();
    }
  }

  /** Fetch the listing now. Never throws: an error lands in `error`. */
  async refresh(): Promise<void> {
    try {
      this._listing = await this.api.list();
      this._error = null;
    } catch (e) {
      this._error = (e as Error).message || String(e);
    }
    this._changed.emit();
  }

  /** The price list for the New cluster form (fetched once, then cached). */
  async prices(): Promise<Prices> {
    if (!this._prices) {
      this._prices = this.api.prices().catch(e => {
        this._prices = null;
        throw e;
      });
    }
    return this._prices;
  }

  async launch(spec: LaunchSpec): Promise<ClusterRow> {
    const row = await this.api.launch(spec);
    await this.refresh();
    return row;
  }

  async scale(name: string, workers: number): Promise<void> {
    await this.api.scale(name, workers);
    await this.refresh();
  }

  async stop(name: string): Promise<ClusterRow> {
    const row = await this.api.stop(name);
    await this.refresh();
    return row;
  }

  startPolling(): void {
    if (this._timer === null) {
      void this.refresh();
      this._timer = setInterval(
        () => void this.refresh(),
        this._refreshSeconds * 1000
      );
    }
  }

  stopPolling(): void {
    if (this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  dispose(): void {
    this.stopPolling();
    Signal.clearData(this);
  }

  private _changed = new Signal<this, void>(this);
  private _listing: Listing | null = null;
  private _error: string | null = null;
  private _prices: Promise<Prices> | null = null;
  private _refreshSeconds: number;
  private _timer: ReturnType<typeof setInterval> | null = null;
}
