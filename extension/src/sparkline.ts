/**
 * The card's usage picture: busy over idle workers as bars, one per ledger sample (as the notebook's
 * inline meter draws them), and GPU utilisation as lines where the ledger measured it. The series
 * come shaped by the server (the meter's own code); this module only draws them.
 *
 * Geometry (`workerBars`, `linePoints`) is pure, so tests check that what is drawn follows the
 * data; the SVG builders return null when there is nothing to draw, so a card never shows an
 * empty or made-up chart.
 */
import type { Sparkline } from './api';
import { h } from './dom';

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * The charts' drawing box (SVG user units). A chart is drawn at the card's full width and this
 * height in px: bars stretch sideways, lines keep their stroke width.
 */
export const CHART = { width: 160, height: 28 };

/** One sample's bar: its idle part stands on top of its busy part. */
export interface Bar {
  x: number;
  width: number;
  /** Height of the busy part, from the baseline. */
  busy: number;
  /** Height of the idle part, above the busy part. */
  idle: number;
}

/**
 * One bar per sample, scaled to the most workers seen: busy up to `busy[i]` (never more than
 * `total[i]`), idle for the rest. Empty when there are no samples.
 */
export function workerBars(busy: number[], total: number[], width: number, height: number): Bar[] {
  const n = total.length;
  if (n === 0) {
    return [];
  }
  const top = Math.max(1, ...total);
  const step = width / n;
  return total.map((t, i) => {
    const all = (Math.max(t, 0) / top) * (height - 1);
    const b = (Math.max(0, Math.min(busy[i] ?? 0, t)) / top) * (height - 1);
    return { x: i * step, width: Math.max(step - 0.5, 0.5), busy: b, idle: all - b };
  });
}

/**
 * The points of a polyline through `values` (nulls are gaps, skipped), spread over `width`
 * and scaled so that `top` (or the largest value, if larger) touches the top. Fewer than two
 * measured values draw no line: an empty list.
 */
export function linePoints(values: (number | null)[], width: number, height: number, top = 100): [number, number][] {
  const measured = values.map((v, i) => [i, v] as const).filter((p): p is readonly [number, number] => p[1] !== null && p[1] !== undefined);
  if (measured.length < 2) {
    return [];
  }
  const n = Math.max(values.length - 1, 1);
  const scale = Math.max(top, ...measured.map(p => p[1]), 1e-9);
  return measured.map(([i, v]) => [(i * width) / n, height - 1 - (v / scale) * (height - 2)]);
}

function svg(tag: string, attrs: Record<string, string>): SVGElement {
  const el = document.createElementNS(SVG_NS, tag) as SVGElement;
  for (const [key, value] of Object.entries(attrs)) {
    el.setAttribute(key, value);
  }
  return el;
}

function chart(className: string, label: string): SVGElement {
  const el = svg('svg', {
    class: className,
    width: '100%',
    height: String(CHART.height),
    viewBox: `0 0 ${CHART.width} ${CHART.height}`,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': label,
    style: 'display: block'
  });
  const title = svg('title', {});
  title.textContent = label;
  el.append(title);
  return el;
}

const fmt = (v: number): string => v.toFixed(1);

/** Busy (brand colour) over idle (grey) workers, one bar per sample; null without samples. */
export function workersSvg(series: Sparkline): SVGElement | null {
  const bars = workerBars(series.busy, series.total, CHART.width, CHART.height);
  if (!bars.length) {
    return null;
  }
  const el = chart('cumulo-lab-spark-workers', `busy vs idle workers, last ${bars.length} samples`);
  for (const bar of bars) {
    if (bar.idle > 0) {
      el.append(
        svg('rect', {
          class: 'cumulo-lab-spark-idle',
          x: fmt(bar.x),
          y: fmt(CHART.height - bar.busy - bar.idle),
          width: fmt(bar.width),
          height: fmt(bar.idle),
          style: 'fill: var(--jp-layout-color3, #d1d5db)'
        })
      );
    }
    if (bar.busy > 0) {
      el.append(
        svg('rect', {
          class: 'cumulo-lab-spark-busy',
          x: fmt(bar.x),
          y: fmt(CHART.height - bar.busy),
          width: fmt(bar.width),
          height: fmt(bar.busy),
          style: 'fill: var(--jp-brand-color1, #3b82f6)'
        })
      );
    }
  }
  return el;
}

/**
 * GPU utilisation (0-100 %): one line per worker where the ledger has per-worker figures, else
 * the mean; null where nothing was measured (CPU workers, no NVML) — no line is guessed.
 */
export function gpuSvg(series: Sparkline): SVGElement | null {
  const lines = (series.worker_gpu_util.length ? series.worker_gpu_util : [series.gpu_util])
    .map(values => linePoints(values, CHART.width, CHART.height))
    .filter(points => points.length > 0);
  if (!lines.length) {
    return null;
  }
  const el = chart('cumulo-lab-spark-gpu', 'GPU utilisation (0-100 %)');
  for (const points of lines) {
    el.append(
      svg('polyline', {
        points: points.map(([x, y]) => `${fmt(x)},${fmt(y)}`).join(' '),
        fill: 'none',
        'stroke-width': '1.5',
        'vector-effect': 'non-scaling-stroke',
        style: 'stroke: var(--jp-success-color1, #16a34a)'
      })
    );
  }
  return el;
}

/** The card's usage block: the workers chart over "busy N / idle M" now, and the GPU chart; null if empty. */
export function usageCharts(series: Sparkline | null | undefined): HTMLElement | null {
  if (!series) {
    return null;
  }
  const workers = workersSvg(series);
  const gpu = gpuSvg(series);
  if (!workers && !gpu) {
    return null;
  }
  const block = h('div', { className: 'cumulo-lab-usage' });
  const row = (chartEl: SVGElement, legend: string): HTMLElement => {
    const text = h('div', { className: 'cumulo-lab-muted' }, legend);
    text.setAttribute('style', 'font-size: var(--jp-ui-font-size0)');
    const line = h('div', { className: 'cumulo-lab-usage-line' }, chartEl, text);
    line.setAttribute('style', 'margin-top: 4px');
    return line;
  };
  const n = series.total.length;
  if (workers) {
    const busy = Math.min(series.busy[n - 1] ?? 0, series.total[n - 1]);
    block.append(row(workers, `workers: busy ${busy} / idle ${series.total[n - 1] - busy} now`));
  }
  if (gpu) {
    const perWorker = series.worker_gpu_util.length > 0;
    block.append(row(gpu, perWorker ? 'GPU utilisation per worker (0-100 %)' : 'GPU utilisation (0-100 %)'));
  }
  return block;
}
