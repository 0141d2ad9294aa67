/** One cluster card: status, provider, size, money, budget bar, and its buttons. */
import type { ClusterRow, TopCell } from './api';
import { h } from './dom';
import { budgetFraction, canScale, canStop, cellCost, duration, money, rate, size, stateLabel, taskSeconds } from './format';
import { usageCharts } from './sparkline';

export interface CardActions {
  /** Where the browser opens this cluster's Dask dashboard (format.dashboardUrl); null: it serves none. */
  dashboardUrl(row: ClusterRow): string | null;
  /** Open the dashboard inside JupyterLab (dask-labextension's panes where installed, else a Lab tab). */
  openDashboard(row: ClusterRow, url: string): void;
  scale(row: ClusterRow): void;
  stop(row: ClusterRow): void;
  insertConnect(row: ClusterRow): void;
  dismiss(row: ClusterRow): void;
}

function moneyLine(row: ClusterRow): HTMLElement {
  const kind =
    row.cost_kind && row.cost_kind !== 'none' ? ` (${row.cost_kind})` : '';
  return h(
    'div',
    { className: 'cumulo-lab-card-money', title: row.cost_basis ?? '' },
    h('span', { className: 'cumulo-lab-rate' }, rate(row.rate_per_hour)),
    ' · spent ',
    h('span', { className: 'cumulo-lab-spent' }, money(row.spent) + kind)
  );
}

function budgetBar(row: ClusterRow): HTMLElement | null {
  const fraction = budgetFraction(row);
  if (!row.budget) {
    return null;
  }
  const pct = Math.round((fraction ?? 0) * 100);
  const level = pct >= 80 ? 'high' : pct >= 50 ? 'mid' : 'low';
  const fill = h('div', { className: `cumulo-lab-budget-fill cumulo-lab-${level}` });
  fill.style.width = `${pct}%`;
  return h(
    'div',
    {
      className: 'cumulo-lab-budget',
      title: `budget ${money(row.budget)}: ${fraction === null ? 'spend unknown' : pct + '% used'}`
    },
    h('div', { className: 'cumulo-lab-budget-track' }, fill),
    h(
      'span',
      { className: 'cumulo-lab-budget-text' },
      fraction === null ? `budget ${money(row.budget)}` : `${pct}% of ${money(row.budget)}`
    )
  );
}

/** Whether a row of the list is a notebook cell (not other cells, outside cells or idle). */
export function isCell(c: TopCell): boolean {
  return (c.kind ?? 'cell') === 'cell';
}

/** What a row says on hover: a cell's first line (and what its cost rests on); for the others, what they are. */
export function cellHint(c: TopCell): string {
  const basis = c.basis ? `cost: ${c.basis}` : '';
  if (isCell(c)) {
    return [c.first_line ?? '', basis].filter(Boolean).join('\n');
  }
  const what =
    c.kind === 'idle'
      ? 'idle: paid time no task used'
      : c.kind === 'outside'
        ? 'outside cells: work submitted outside any notebook cell (a thread, a script)'
        : 'other cells: the cells not listed above';
  return [what, basis].filter(Boolean).join('\n');
}

/**
 * The costliest cells, as the notebook's meter ranks and names them ("etl.ipynb [7]", its first
 * line on hover): label, task time and cost, then other cells, outside cells and idle (greyed), whose
 * costs with the cells' add up to the spend (a total row says so); then a line for each cell whose
 * tasks still run. Null when the server sent none (closed, unreachable, or no cell has used the
 * cluster yet).
 */
export function topCellsList(cells: TopCell[] | null | undefined, spent?: number | null): HTMLElement | null {
  if (!cells || !cells.length) {
    return null;
  }
  const small = (el: HTMLElement): HTMLElement => {
    el.setAttribute('style', 'font-size: var(--jp-ui-font-size0)');
    return el;
  };
  const cell = (text: string, style: string, className = ''): HTMLTableCellElement => {
    const td = h('td', { className }, text);
    td.setAttribute('style', `padding: 0 0 0 6px; white-space: nowrap; ${style}`);
    return td;
  };
  const rows = cells.map(c => {
    // the label takes what the figures leave, cut with an ellipsis (the whole of it in the tooltip)
    const label = cell(c.label, 'padding-left: 0; width: 100%; max-width: 0; overflow: hidden; text-overflow: ellipsis', 'cumulo-lab-top-label');
    label.setAttribute('title', cellHint(c) || c.label);
    const tr = h(
      'tr',
      { className: isCell(c) ? 'cumulo-lab-top-cell' : `cumulo-lab-top-cell cumulo-lab-top-${c.kind} cumulo-lab-muted`, title: c.basis ? `cost: ${c.basis}` : undefined },
      label,
      cell(c.kind === 'idle' ? '' : taskSeconds(c.task_seconds), 'text-align: right'),
      cell(cellCost(c.cost), 'text-align: right', 'cumulo-lab-top-cost')
    );
    return tr;
  });
  const priced = cells.some(c => c.cost !== null && c.cost !== undefined);
  if (priced && spent !== null && spent !== undefined) {
    const total = h('tr', { className: 'cumulo-lab-top-total', title: 'the cells, other cells, outside cells and idle add up to the spend' }, cell('total (the spend)', 'padding-left: 0'), cell('', ''), cell(cellCost(spent), 'text-align: right; font-weight: bold', 'cumulo-lab-top-cost'));
    rows.push(total);
  }
  const table = h('table', { className: 'cumulo-lab-top-cells' }, h('tbody', {}, ...rows));
  table.setAttribute('style', 'width: 100%; border-collapse: collapse; font-size: var(--jp-ui-font-size0)');
  const block = h('div', { className: 'cumulo-lab-top' }, small(h('div', { className: 'cumulo-lab-muted' }, 'Top cells by cost')), table);
  for (const c of cells.filter(x => x.running)) {
    const n = c.running as number;
    block.append(small(h('div', { className: 'cumulo-lab-muted cumulo-lab-top-running' }, `${c.label}: ${n} task${n === 1 ? '' : 's'} still running`)));
  }
  block.setAttribute('style', 'margin-top: 4px');
  return block;
}

function button(label: string, title: string, onClick: () => void, extra = ''): HTMLButtonElement {
  const b = h('button', { className: `jp-Button jp-mod-styled cumulo-lab-btn ${extra}`, title, type: 'button' }, label);
  b.addEventListener('click', onClick);
  return b;
}

/** The card of an open cluster or a launch in flight. */
export function openCard(row: ClusterRow, actions: CardActions, now: number): HTMLElement {
  const launching = row.state === 'launching' || row.state === 'starting';
  const failed = row.state === 'failed';
  const owner =
    row.owned_by === 'server'
      ? 'started from JupyterLab'
      : row.owned_by === 'gone'
        ? 'its kernel is gone: the reaper will stop it'
        : row.owned_by === 'kernel'
          ? 'started by a kernel'
          : 'started elsewhere';
  const head = h(
    'div',
    { className: 'cumulo-lab-card-head' },
    h('span', { className: `cumulo-lab-state cumulo-lab-state-${row.state}`, title: row.note ?? row.state }, stateLabel(row)),
    h('span', { className: 'cumulo-lab-card-name' }, row.name),
    h('span', { className: 'cumulo-lab-card-provider' }, row.provider)
  );
  const card = h('div', { className: 'cumulo-lab-card', 'data-name': row.name, 'data-state': row.state }, head);
  if (launching) {
    card.append(
      h(
        'div',
        { className: 'cumulo-lab-progress' },
        h('div', { className: 'cumulo-lab-progress-bar' }),
        h('span', {}, `${row.progress ?? 'starting'} · ${duration(now - row.created)}`)
      )
    );
  }
  if (row.may_bill) {
    card.append(h('div', { className: 'cumulo-lab-error' }, `${row.note ?? 'stopping failed'} — press Stop to retry; the reaper retries too.`));
  }
  if (failed) {
    card.append(h('div', { className: 'cumulo-lab-error' }, row.error ?? row.note ?? 'launch failed'));
    card.append(h('div', { className: 'cumulo-lab-actions' }, button('Dismiss', 'Remove this card', () => actions.dismiss(row))));
    return card;
  }
  if (!launching) {
    card.append(
      h('div', { className: 'cumulo-lab-card-size' }, size(row), h('span', { className: 'cumulo-lab-muted' }, ` · up ${duration(now - row.created)} · ${owner}`)),
      moneyLine(row)
    );
  }
  const bar = budgetBar(row);
  if (bar) {
    card.append(bar);
  }
  if (!launching) {
    for (const part of [usageCharts(row.sparkline), topCellsList(row.top_cells, row.spent)]) {
      if (part) {
        card.append(part);
      }
    }
  }
  const buttons = h('div', { className: 'cumulo-lab-actions' });
  const dashboard = launching ? null : actions.dashboardUrl(row);
  if (dashboard) {
    buttons.append(
      h('a', { className: 'cumulo-lab-link cumulo-lab-dashboard', href: dashboard, target: '_blank', rel: 'noopener noreferrer', title: 'Open the Dask dashboard in a browser tab' }, 'Dashboard'),
      button('Dask panes', "Open the Dask dashboard inside JupyterLab: dask-labextension's panes where it is installed, else a tab", () => actions.openDashboard(row, dashboard), 'cumulo-lab-panes')
    );
  }
  if (row.state === 'running') {
    buttons.append(button('Connect cell', 'Insert a cell that connects to this cluster into the active notebook', () => actions.insertConnect(row)));
    if (canScale(row)) {
      buttons.append(button('Scale', 'Change the number of workers', () => actions.scale(row)));
    }
  }
  if (canStop(row)) {
    buttons.append(button('Stop', 'Stop this cluster (asks first)', () => actions.stop(row), 'jp-mod-warn cumulo-lab-stop'));
  }
  card.append(buttons);
  if (dashboard && row.dashboard_problem) {
    // the route could not reach it last time (an ssh host that takes none of the server's keys, a refused host
    // key): say why and what to configure here, not only inside the tab that opened on the error
    card.append(h('div', { className: 'cumulo-lab-error cumulo-lab-dashboard-problem' }, `Dashboard: ${row.dashboard_problem}`));
  }
  return card;
}

/** A folded line for a cluster closed today, with its final cost. */
export function closedLine(row: ClusterRow): HTMLElement {
  const lasted = (row.closed ?? row.created) - row.created;
  return h(
    'li',
    { className: 'cumulo-lab-closed', 'data-name': row.name, title: row.note ?? row.state },
    h('span', { className: 'cumulo-lab-card-name' }, row.name),
    h('span', { className: 'cumulo-lab-muted' }, ` ${row.provider} · ${row.state} · ran ${duration(lasted)} · `),
    h('span', { className: 'cumulo-lab-spent' }, money(row.spent))
  );
}
