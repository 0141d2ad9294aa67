/**
 * The REST API of the cumulo server extension (`<base_url>/cumulo/`), typed.
 *
 * Only this file talks HTTP: the model and the views see `ComputeAPI`, so
 * they are tested with a fake and never build a URL themselves.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One card: a cluster from the registry, or a launch in flight. */
export interface ClusterRow {
  name: string;
  provider: string;
  /** launching | starting | running | closing | stop-failed | closed | failed | lost */
  state: string;
  /** Whether the server can stop it now (every open registry row, whatever its owner or state). */
  stoppable?: boolean;
  /** Whether the server can scale it: it launched it (only the owner scales) and its provider can scale. */
  scalable?: boolean;
  /** A stop or cleanup failed: its resources may still bill until a stop is confirmed. */
  may_bill?: boolean;
  address?: string | null;
  /** The dashboard's own address, as its scheduler reported it. */
  dashboard?: string | null;
  /** The Jupyter server serves the dashboard at its route (cumulo/clusters/<name>/dashboard/); false: the
   * provider proxies it itself (dask-gateway) and `dashboard` is the address to open. */
  dashboard_proxied?: boolean;
  /** Why the server could not reach the dashboard the last time it tried (e.g. no SSH key the host takes),
   * naming what to configure; null: it could, or has not tried. */
  dashboard_problem?: string | null;
  workers?: number | null;
  threads?: number | null;
  gpus?: number | null;
  gpu_model?: string | null;
  backend?: string | null;
  budget?: number | null;
  budget_used?: number | null;
  idle_timeout?: number | null;
  /** $/h; null means "no rate set" (never shown as $0). */
  rate_per_hour?: number | null;
  spent?: number | null;
  spent_today?: number | null;
  /** "estimate", "billed", or "none" (no rate). */
  cost_kind?: string | null;
  cost_basis?: string | null;
  created: number;
  closed?: number | null;
  note?: string | null;
  /** server | kernel | gone | elsewhere */
  owned_by?: string;
  progress?: string;
  error?: string | null;
  live?: boolean;
  /** Recent usage, as the notebook's inline meter draws it; null when closed or unreachable. */
  sparkline?: Sparkline | null;
  /** The costliest cells, as the inline meter ranks them, then other cells, outside cells and idle
   * (their costs add up to `spent`); null when closed or unreachable. */
  top_cells?: TopCell[] | null;
}

/** The ledger's recent samples, oldest first (cumulo.widgets.meter.usage_series on the server). */
export interface Sparkline {
  /** Workers running a task, per sample. */
  busy: number[];
  /** Workers alive, per sample. */
  total: number[];
  /** Mean GPU utilisation in %, per sample; null where nothing measured it (CPU workers, no NVML). */
  gpu_util: (number | null)[];
  /** GPU utilisation in % per worker: one series per worker, each as long as `busy`. */
  worker_gpu_util: (number | null)[][];
}

/** One row of the "top cells" list: a notebook cell, or where the rest of the spend went. */
export interface TopCell {
  /** "etl.ipynb [7]" for a cell (its notebook and execution count, as the inline meter names it);
   * "other cells", "outside cells" (work no cell submitted) or "idle" (paid time no task used). */
  label: string;
  /** cell | other | outside | idle (absent: a cell). */
  kind?: string;
  /** A cell's first line of source, shown on hover. */
  first_line?: string | null;
  /** Busy worker-seconds (for idle: the worker-seconds no task used). */
  worker_seconds?: number | null;
  /** Dollars; null means "no rate set" (never shown as $0). */
  cost: number | null;
  /** What the cost rests on, e.g. "task time x configured rate". */
  basis?: string | null;
  task_seconds: number | null;
  /** Tasks of the cell still running. */
  running?: number | null;
}

export interface Totals {
  running: number;
  rate_per_hour: number | null;
  unpriced: number;
  spent_today: number | null;
}

export interface Listing {
  clusters: ClusterRow[];
  totals: Totals;
  day_start: number;
  now: number;
}

/** A GPU offer of the price catalog: every price carries its source and date. */
export interface Offer {
  provider: string;
  instance_type: string;
  gpu_model: string | null;
  gpu_count: number | null;
  on_demand_per_hour: number | null;
  spot_per_hour: number | null;
  region: string | null;
  source: string;
  as_of: string;
}

export interface Prices {
  offers: Offer[];
  /** Providers this server can launch with (e.g. "local", "lambda"). */
  providers: string[];
}

/** One of a dask-gateway's cluster options, as the server reads its schema. */
export interface GatewayField {
  /** The option's name, the key in `options` of a launch. */
  name: string;
  label: string;
  /** integer | float | string | select | bool | mapping (anything else is drawn as text). */
  kind: string;
  /** What the gateway proposes; a launch sends what the form holds. */
  default: unknown;
  /** Bounds of a number (null: unbounded). */
  min?: number | null;
  max?: number | null;
  /** The values of a select. */
  choices?: string[] | null;
}

/** `POST gateway-options {address}`: the configured gateway's cluster options and the rate cumulo prices it at. */
export interface GatewayOptions {
  /** The gateway as cumulo records it, e.g. "gateway://127.0.0.1:8000". */
  address: string;
  fields: GatewayField[];
  /** cumulo.gateway.rate-per-hour, $/h per cluster; null means "no rate set". */
  rate_per_hour: number | null;
}

/** What a launch request may carry: the fields of cumulo's ClusterSpec. */
export interface LaunchSpec {
  provider: string;
  name?: string;
  /** The launch target for providers launched on one (gateway://host:port). */
  address?: string;
  /** Provider options, e.g. a dask-gateway's cluster options. */
  options?: Record<string, unknown>;
  workers?: number;
  gpu?: string;
  instance_type?: string;
  region?: string;
  spot?: boolean;
  budget?: number;
  idle_timeout?: string;
}

/** Everything the front end asks of the server. */
export interface ComputeAPI {
  list(): Promise<Listing>;
  launch(spec: LaunchSpec): Promise<ClusterRow>;
  scale(name: string, workers: number): Promise<void>;
  stop(name: string): Promise<ClusterRow>;
  prices(): Promise<Prices>;
  /** A dask-gateway's cluster options, read by the server with its own credentials. */
  gatewayOptions?(address: string): Promise<GatewayOptions>;
}

/** A refusal from the server, with its message (which says what to do next). */
export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly error?: string
  ) {
    super(message);
  }
}

/** ComputeAPI over ServerConnection (token, XSRF and base URL handled by JupyterLab). */
export class RestAPI implements ComputeAPI {
  constructor(
    private settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  list(): Promise<Listing> {
    return this.request<Listing>('clusters');
  }

  launch(spec: LaunchSpec): Promise<ClusterRow> {
    return this.request<ClusterRow>('clusters', {
      method: 'POST',
      body: JSON.stringify(spec)
    });
  }

  async scale(name: string, workers: number): Promise<void> {
    await this.request(`clusters/${encodeURIComponent(name)}/scale`, {
      method: 'POST',
      body: JSON.stringify({ workers })
    });
  }

  stop(name: string): Promise<ClusterRow> {
    return this.request<ClusterRow>(`clusters/${encodeURIComponent(name)}`, {
      method: 'DELETE'
    });
  }

  prices(): Promise<Prices> {
    return this.request<Prices>('prices');
  }

  /**
   * A POST (with JupyterLab's XSRF token), because the server calls the gateway with its
   * own credentials; it asks only the gateway of its `gateway.address` config.
   */
  gatewayOptions(address: string): Promise<GatewayOptions> {
    return this.request<GatewayOptions>('gateway-options', {
      method: 'POST',
      body: JSON.stringify({ address })
    });
  }

  private async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'cumulo', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ServerConnection.NetworkError(error as TypeError);
    }
    const text = await response.text();
    let data: any = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: a proxy's or the server's own error page, never a cumulo answer
      const first = text.replace(/<[^>]*>/g, ' ').trim().split(/\s*\n\s*/)[0] ?? '';
      throw new APIError(
        response.status,
        response.ok
          ? `the server answered ${path} with something that is not JSON (${first.slice(0, 120)})`
          : `${response.status} ${response.statusText || 'error'}${first ? `: ${first.slice(0, 120)}` : ''}`
      );
    }
    if (!response.ok) {
      throw new APIError(
        response.status,
        (data && data.message) || response.statusText,
        data && data.error
      );
    }
    return data as T;
  }
}
