/** One cluster card: status, provider, size, money, budget bar, and its buttons. */
import type { ClusterRow } from './api';
import { h } from './dom';
import { budgetFraction, canStop, duration, money, rate, size, stateLabel } from './format';

export interface CardActions {
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
  const buttons = h('div', { className: 'cumulo-lab-actions' });
  if (row.dashboard && !launching) {
    buttons.append(
      h('a', { className: 'cumulo-lab-link', href: row.dashboard, target: '_blank', rel: 'noopener noreferrer', title: 'Open the Dask dashboard' }, 'Dashboard')
    );
  }
  if (row.state === 'running') {
    buttons.append(
      button('Connect cell', 'Insert a cell that connects to this cluster into the active notebook', () => actions.insertConnect(row)),
      button('Scale', 'Change the number of workers', () => actions.scale(row))
    );
  }
  if (canStop(row)) {
    buttons.append(button('Stop', 'Stop this cluster (asks first)', () => actions.stop(row), 'jp-mod-warn cumulo-lab-stop'));
  }
  card.append(buttons);
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
