"""The live cost/usage meter: spend and $/h, budget bar, busy vs idle workers, GPU use, energy, top cells.

Two layers:

- pure functions of plain data: :func:`meter_model` turns a usage summary, the
  ledger's samples and its cells into one JSON-able dict; :func:`render_html`
  and :func:`render_text` draw it (inline SVG sparklines, no scripts), so the
  same picture works in a notebook, in an HTML export of it and in a terminal;
- :class:`CostMeter`, the live view: an ``ipywidgets.HTML`` redrawn by a
  ``PeriodicCallback`` on the cluster's own event loop (the ledger read there
  is one RPC, awaited, never blocking the kernel), stopped when the cluster
  closes or ``stop()`` is called; its last frame says how the cluster ended.
  Where no widget frontend runs (nbconvert, GitHub) the static ``text/html``
  of the same model is what shows.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from .. import config
from ..cost.cellhistory import kernel_id
from ..cost.metering import Spend, attribution, ranked, spend_of, stored_usage

if TYPE_CHECKING:
    from ..life.watched import Metered

__all__ = ["CostMeter", "in_kernel", "live_bundle", "meter_model", "rank_cells", "render_html", "render_model",
           "render_text", "sparkline_svg", "top_cells", "usage_series", "workers_svg"]

logger = logging.getLogger("cumulo")

_TOP = 5


def _money(v: float | None) -> str:
    if v is None:
        return "no rate set"
    return f"${v:,.4f}" if 0 < abs(v) < 1 else f"${v:,.2f}"  # cents hide what a small cluster costs


def sparkline_svg(values: list[float | None], *, width: int = 120, height: int = 24, top: float = 100.0,
                  color: str = "#3b82f6") -> str:
    """A tiny inline SVG polyline of ``values`` (None gaps skipped), scaled to ``top``."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(pts) < 2:
        return f"<svg width='{width}' height='{height}'></svg>"
    n = max(len(values) - 1, 1)
    top = max(top, max(v for _, v in pts), 1e-9)
    coords = " ".join(f"{i * width / n:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in pts)
    return (f"<svg width='{width}' height='{height}' style='vertical-align:middle'>"
            f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'/></svg>")


def workers_svg(busy: list[int], total: list[int], *, width: int = 160, height: int = 28) -> str:
    """Busy (blue) over idle (grey) workers, one bar per sample: where the money went, at a glance."""
    n = len(total)
    if n == 0:
        return f"<svg width='{width}' height='{height}'></svg>"
    top = max(max(total), 1)
    w = width / n
    bars = []
    for i, (b, t) in enumerate(zip(busy, total)):
        x = i * w
        th = (t / top) * (height - 1)
        bh = (min(b, t) / top) * (height - 1)
        if th > bh:
            bars.append(f"<rect x='{x:.1f}' y='{height - th:.1f}' width='{max(w - 0.5, 0.5):.1f}' "
                        f"height='{th - bh:.1f}' fill='#d1d5db'/>")
        if bh > 0:
            bars.append(f"<rect x='{x:.1f}' y='{height - bh:.1f}' width='{max(w - 0.5, 0.5):.1f}' "
                        f"height='{bh:.1f}' fill='#3b82f6'/>")
    return (f"<svg width='{width}' height='{height}' style='vertical-align:middle' "
            f"role='img' aria-label='busy vs idle workers'>{''.join(bars)}</svg>")


def usage_series(samples: list[dict[str, Any]] | None, *, points: int | None = None) -> dict[str, Any]:
    """The sparkline series drawn from the ledger's samples, oldest first: busy and total workers,
    mean GPU utilisation (None where nothing measured it) and GPU utilisation per worker.

    The inline meter and the JupyterLab sidebar card both take their series from
    here, so that the two pictures show the same numbers. ``points`` keeps only
    the last that many samples (None: all given).
    """
    samples = list(samples or [])
    if points is not None:
        samples = samples[-points:] if points > 0 else []
    per_worker = [x.get("worker_gpu_util") for x in samples]
    width = max((len(p) for p in per_worker if p), default=0)
    return {
        "busy": [int(x.get("busy_workers") or 0) for x in samples],
        "total": [int(x.get("workers") or 0) for x in samples],
        "gpu_util": [x.get("gpu_util") for x in samples],
        "worker_gpu_util": [[(p[i] if p and i < len(p) else None) for p in per_worker] for i in range(width)],
    }


def rank_cells(cells: list[dict[str, Any]] | None, *, limit: int = _TOP) -> list[dict[str, Any]]:
    """The rows the meter lists: the top cells by cost (then by task time), at most ``limit``, then
    "other cells", "outside cells" and "idle" (:func:`cumulo.cost.metering.ranked`): together, the spend.

    Shared with the JupyterLab sidebar card, so both rank (and cut) the same way.
    """
    return ranked(list(cells or []), limit=limit)


def meter_model(name: str, s: dict[str, Any], samples: list[dict[str, Any]] | None = None, *,
                budget: float | None = None, status: str = "running",
                cells: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the meter shows, as plain data (what render_html/render_text draw).

    ``s``: a :meth:`cumulo.cost.metering.Usage.summary`; ``samples``: the ledger's recent
    samples (shaped by :func:`usage_series`); ``cells``: rows with ``label``, ``cost``,
    ``task_seconds``, ``running`` (the top few are kept by :func:`rank_cells`).
    """
    spend = s.get("spend")
    return {
        "name": name,
        "status": status,
        "spend": spend,
        "rate_per_hour": s.get("rate_per_hour"),
        "cost_basis": s.get("cost_basis"),
        "budget": budget,
        "budget_fraction": (None if not budget or spend is None else min(spend / budget, 1.0)),
        "workers": s.get("workers"),
        "threads": s.get("threads"),
        "gpus": s.get("gpus"),
        "gpu_model": s.get("gpu_model"),
        "busy_worker_seconds": s.get("busy_worker_seconds"),
        "worker_seconds": s.get("worker_seconds"),
        "idle_spend": s.get("idle_spend"),
        "energy_wh": s.get("energy_wh"),
        "co2_g": s.get("co2_g"),
        "power_w": s.get("power_w"),
        "running_tasks": s.get("tasks_running"),
        **usage_series(samples),
        "top_cells": rank_cells(cells),
        "updated": time.time(),
    }


def render_text(name: str, s: dict[str, Any], *, budget: float | None = None, status: str = "running",
                cells: list[dict[str, Any]] | None = None) -> str:
    """The meter as a few plain-text lines (terminals, logs, non-widget frontends)."""
    rate = s.get("rate_per_hour")
    line = (f"{name} [{status}]: {_money(rate)}{'/h' if rate is not None else ''} now, "
            f"spent {_money(s.get('spend'))}" + (" (estimate)" if s.get("spend") is not None else ""))
    if budget:
        line += f" of ${budget:,.2f} budget"
    if s.get("workers") is not None:
        line += f"; {s['workers']} workers, {s.get('gpus', 0)} GPUs"
    if s.get("energy_wh") is not None:
        line += f"; GPU energy {s['energy_wh']:,.3f} Wh"
        if s.get("co2_g") is not None:
            line += f", {s['co2_g']:,.2f} g CO2"
    idle = s.get("idle_spend")
    if idle is not None and s.get("spend"):
        line += f"\n{_money(idle)} of {_money(s['spend'])} paid for idle {'GPUs' if s.get('gpus') else 'workers'}"
    for c in cells or []:
        cost = "" if c.get("cost") is None else f" ~${c['cost']:.4f}"
        run = f", {c['running']} running" if c.get("running") else ""
        if c.get("kind") == "idle":
            line += f"\n  {c.get('label')}:{cost or ' -'}"
        else:
            line += f"\n  {c.get('label')}: {c.get('task_seconds') or 0.0:.1f} task-s{cost}{run}"
    return line


def render_html(name: str, s: dict[str, Any], samples: list[dict[str, Any]] | None = None, *,
                budget: float | None = None, status: str = "running",
                cells: list[dict[str, Any]] | None = None) -> str:
    """The meter as a small HTML block with inline SVG (what the widget shows, and static exports)."""
    m = meter_model(name, s, samples, budget=budget, status=status, cells=cells)
    return render_model(m)


def render_model(m: dict[str, Any]) -> str:
    """Draw a :func:`meter_model` as HTML."""
    esc = html.escape
    rate, spend = m["rate_per_hour"], m["spend"]
    if rate is None and spend is None:
        money = ("no rate set <span style='color:#888'>(set cumulo.cost.rate-per-worker-hour or "
                 "rate-per-gpu-hour to see a cost)</span>")
    else:
        money = (f"{esc(_money(rate))}{'/h' if rate is not None else ''} now · spent <b>{esc(_money(spend))}</b>"
                 + ("" if spend is None else f" <span style='color:#888' title='{esc(str(m['cost_basis']))}'>"
                    "(estimate)</span>"))
    if m["energy_wh"] is not None:
        power = "" if m["power_w"] is None else f" · {m['power_w']:,.0f} W now"
        money += f" · GPU energy <b>{m['energy_wh']:,.3f} Wh</b>{power}"
        if m.get("co2_g") is not None:
            money += f" · <b>{m['co2_g']:,.2f} g CO2</b>"
    rows = [f"<b>{esc(m['name'])}</b> <span style='color:#888'>[{esc(m['status'])}]</span>", money]
    if m["budget"]:
        frac = m["budget_fraction"] or 0.0
        colour = "#16a34a" if frac < 0.5 else ("#d97706" if frac < 0.8 else "#dc2626")
        rows.append(
            f"<div style='width:160px;height:8px;background:#e5e7eb;display:inline-block;vertical-align:middle'>"
            f"<div style='width:{frac * 100:.0f}%;height:8px;background:{colour}'></div></div> "
            f"{frac:.0%} of ${m['budget']:,.2f} budget")
    if m["workers"] is not None:
        gpu = f"{m.get('gpus') or 0} GPUs" + (f" ({esc(str(m['gpu_model']))})" if m.get("gpu_model") else "")
        running = f" · {m['running_tasks']} tasks running" if m.get("running_tasks") else ""
        rows.append(f"{m['workers']} workers · {m.get('threads') or 0} threads · {gpu}{running}")
    if m["total"]:
        busy_now = m["busy"][-1] if m["busy"] else 0
        rows.append(f"{workers_svg(m['busy'], m['total'])} <span style='color:#888'>workers: "
                    f"<span style='color:#3b82f6'>busy</span> {busy_now} / idle {m['total'][-1] - busy_now}</span>")
    if m["worker_gpu_util"]:
        lines = "".join(sparkline_svg(series, width=60, height=18) for series in m["worker_gpu_util"])
        rows.append(f"{lines} <span style='color:#888'>GPU utilisation per worker</span>")
    elif any(v is not None for v in m["gpu_util"]):
        rows.append(f"{sparkline_svg(m['gpu_util'])} <span style='color:#888'>GPU utilisation</span>")
    idle = m["idle_spend"]
    if idle is not None and spend:
        what = "GPUs" if m.get("gpus") else "workers"
        rows.append(f"{esc(_money(idle))} of {esc(_money(spend))} paid for idle {what}")
    elif m.get("worker_seconds") is not None:
        rows.append(f"busy {m['busy_worker_seconds']:.0f} of {m['worker_seconds']:.0f} worker-seconds")
    if m["top_cells"]:
        rows.append(_cells_table(m["top_cells"], spend))
    body = "".join(f"<div>{r}</div>" for r in rows)
    return f"<div class='cumulo-meter' style='font-size:90%;line-height:1.5'>{body}</div>"


def _cost(v: float | None) -> str:
    return "-" if v is None else f"${v:.4f}"


#: The top-cells table's columns: header, alignment. A header sits over its figures (same alignment).
_COLUMNS = (("where the spend went", "left"), ("cost", "right"), ("task-s", "right"), ("running", "right"))
_PAD = "padding:0 0 0 8px"


def _cells_table(cells: list[dict[str, Any]], spend: float | None) -> str:
    """The meter's table: one row per top cell (its first line on hover), then other cells, outside
    cells and idle (greyed: no cell's doing), and a total row when there is a spend."""
    esc = html.escape
    head = "".join(f"<th style='text-align:{align};font-weight:normal;{_PAD if i else 'padding:0'}'>{esc(title)}</th>"
                   for i, (title, align) in enumerate(_COLUMNS))
    body = []
    for c in cells:
        cell = c.get("kind", "cell") == "cell"
        hover = c.get("first_line") if cell else c.get("basis")
        title = f" title='{esc(str(hover))}'" if hover else ""
        colour = "" if cell else " style='color:#888'"
        task = "" if c.get("kind") == "idle" else f"{c.get('task_seconds') or 0.0:.1f}"
        body.append(f"<tr class='cumulo-cell-{esc(str(c.get('kind', 'cell')))}'{colour}>"
                    f"<td style='padding:0'{title}>{esc(str(c.get('label')))}</td>"
                    f"<td style='text-align:right;{_PAD}'>{_cost(c.get('cost'))}</td>"
                    f"<td style='text-align:right;{_PAD}'>{task}</td>"
                    f"<td style='text-align:right;{_PAD}'>{c.get('running') or ''}</td></tr>")
    if spend is not None and any(c.get("cost") is not None for c in cells):
        body.append(f"<tr class='cumulo-cell-total' style='border-top:1px solid #ccc'><td style='padding:0'>total"
                    f" (the spend)</td><td style='text-align:right;{_PAD}'><b>{_cost(spend)}</b></td>"
                    f"<td style='text-align:right;{_PAD}'></td><td style='text-align:right;{_PAD}'></td></tr>")
    return ("<table class='cumulo-top-cells' style='font-size:90%;border-collapse:collapse'>"
            f"<thead><tr style='color:#888'>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def top_cells(ledger: dict[str, Any], record: Any, *, mine: bool = True, spend: Any = None) -> list[dict[str, Any]]:
    """Where the spend went, from a ledger: its top cells (all kernels), the other cells, work outside
    cells and idle, named and priced as every view does (:func:`cumulo.cost.metering.attribution`).

    ``record``: the cluster's registry row (its price), or None. ``mine``: a cell of
    this process's kernel whose notebook is unknown is "[7]"; the Jupyter server, which
    runs no cells, passes False. ``spend``: the figure the rows add up to (default: the
    row's spend with this ledger, now). Each row: ``label``, ``kind``, ``cost`` (None:
    no rate set), ``basis``, ``task_seconds``, ``worker_seconds``, ``running``,
    ``first_line``; :func:`rank_cells` cuts them to what the meter lists.
    """
    me: str | None = None
    if mine:
        me = kernel_id()
    return attribution(ledger, record, spend=spend, me=me)


def _cells_of(usage: Any, ledger: dict[str, Any] | None, s: dict[str, Any]) -> list[dict[str, Any]]:
    """The meter's rows for a ledger reading, adding up to the spend its summary ``s`` shows."""
    if ledger is None or usage is None:
        return []
    spend = Spend(s.get("spend"), s.get("rate_per_hour"), str(s.get("cost_basis")))
    return top_cells(ledger, usage.record(), spend=spend)


class CostMeter:
    """A live cost/usage view of one cluster. Display it in a notebook; ``str()`` elsewhere.

    ``widget()`` builds the live view (an ``ipywidgets.HTML``) and starts its refresh
    on the cluster's loop every ``interval`` (default ``cumulo.widgets.refresh-interval``).
    """

    def __init__(self, cluster: Metered, *, interval: float | str | None = None) -> None:
        self.cluster = cluster
        self.interval = float(parse_timedelta(interval or config.get("widgets.refresh-interval")))
        self.points = int(config.get("widgets.sparkline-points"))
        self.refreshes = 0
        self._widget: Any = None
        self._callback: Any = None
        self._stopped: asyncio.Event | None = None
        self._final = False

    # -- data -----------------------------------------------------------------------------

    def _budget(self) -> float | None:
        return self.cluster.budget

    def _usage(self) -> Any:
        return self.cluster.usage

    def _frame(self, ledger: dict[str, Any] | None) -> str:
        usage = self._usage()
        s = usage.summary(ledger) if usage is not None else {}
        samples = list((ledger or {}).get("samples") or [])
        cells = rank_cells(_cells_of(usage, ledger, s))
        return render_html(self.cluster.name, s, samples, budget=self._budget(), status=self.cluster.status,
                           cells=cells)

    def _data(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        usage = self._usage()
        if usage is None or self.cluster.status != "running":
            return {}, [], []
        ledger = usage.ledger(samples=self.points)
        s = usage.summary(ledger)
        return s, list((ledger or {}).get("samples") or []), rank_cells(_cells_of(usage, ledger, s))

    def html(self) -> str:
        """The current view as HTML (one ledger read)."""
        try:
            s, samples, cells = self._data()
        except Exception as exc:
            return f"<div class='cumulo-meter'>{html.escape(self.cluster.name)}: {html.escape(str(exc))}</div>"
        return render_html(self.cluster.name, s, samples, budget=self._budget(), status=self.cluster.status,
                           cells=cells)

    def __str__(self) -> str:
        try:
            s, _, cells = self._data()
        except Exception as exc:
            return f"{self.cluster.name}: {exc}"
        return render_text(self.cluster.name, s, budget=self._budget(), status=self.cluster.status, cells=cells)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.html()

    # -- the live widget --------------------------------------------------------------------

    def widget(self) -> Any:
        """The ipywidgets.HTML that refreshes itself (its refresh starts on first call)."""
        if self._widget is None:
            import ipywidgets

            self._widget = ipywidgets.HTML(value=self.html())
            self.start()
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        try:
            w = self.widget()
        except ImportError:
            display({"text/plain": str(self), "text/html": self.html()}, raw=True)
            return
        display(w)

    def refresh(self) -> None:
        """Redraw once now, from any thread but the cluster's loop (one blocking ledger read)."""
        if self._widget is not None:
            self._widget.value = self.html()
        self.refreshes += 1

    @property
    def running(self) -> bool:
        """Whether the refresh callback is scheduled on the cluster's loop."""
        return self._callback is not None and self._callback.is_running()

    def start(self) -> None:
        """Start refreshing on the cluster's loop; it stops when the cluster closes or stop() is called."""
        if self._callback is not None or self.cluster.status != "running":
            return
        loop = self.cluster.loop
        if loop is None:
            return
        from tornado.ioloop import PeriodicCallback

        self._callback = PeriodicCallback(self._tick, self.interval * 1000)
        loop.add_callback(self._begin)

    def _begin(self) -> None:
        """On the loop: start the callback, and a watcher that draws the last frame when it ends."""
        if self._callback is None or self._final:
            return
        self._stopped = asyncio.Event()
        self._callback.start()
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        # Ends when stop() is called or the cluster is seen closed, or is cancelled when the
        # cluster's loop shuts down at close: either way, draw how the cluster ended.
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            if self._callback is not None:
                self._callback.stop()
            self._last_frame()

    def stop(self) -> None:
        """Stop refreshing (the last frame stays)."""
        if self._stopped is not None:
            loop = self.cluster.loop
            if loop is not None:
                try:
                    loop.add_callback(self._stopped.set)
                except Exception:  # the loop is gone: so is the callback
                    pass
        elif self._callback is not None:
            self._callback.stop()
        self._final = True

    async def _tick(self) -> None:
        status = self.cluster.status
        if status != "running":
            if status not in ("closing", "starting", "created") and self._stopped is not None:
                self._stopped.set()  # it ended (closed, lost, failed): the watcher draws the last frame
            return
        client = self.cluster.client
        try:
            ledger = await asyncio.wait_for(client.scheduler.cumulo_ledger(samples=self.points), 5)
        except Exception as exc:  # a slow or lost scheduler: say so, try again next time
            ledger = None
            logger.debug("cumulo meter: no ledger for %r: %s", self.cluster.name, exc)
        try:
            if self._widget is not None:
                self._widget.value = self._frame(ledger)
            self.refreshes += 1
        except Exception:
            logger.debug("cumulo meter: refresh of %r failed", self.cluster.name, exc_info=True)

    def _last_frame(self) -> None:
        """A last frame that says how the cluster ended (its registry row: closed, stop failed, ...)."""
        self._final = True
        if self._widget is None or self.cluster.status in ("running", "closing"):
            return  # stopped by hand (the last frame stays), or the loop went while closing
        s: dict[str, Any] = {}
        state = self.cluster.status
        final = getattr(self._usage(), "final", None)
        if final is not None:  # the ledger as read while the cluster closed
            try:
                s = dict(self._usage().summary(final))
            except Exception:
                s = {}
        cells: list[dict[str, Any]] = []
        try:
            rec = self.cluster.registry.get(self.cluster.id)
            sp = spend_of(rec, None)
            spend = sp.amount if sp.amount is not None else rec.cost
            if spend is not None or "spend" not in s:
                s["spend"] = spend
            state = rec.state
            kept = stored_usage(rec)  # the usage kept at close: its rows add up to the final spend
            if kept is not None:
                s, cells = dict(kept["summary"]), list(kept["cells"])
        except Exception:
            pass
        s["rate_per_hour"] = None  # nothing bills at a rate any more (or the row says it may)
        self._widget.value = render_html(self.cluster.name, s, budget=self._budget(), status=state, cells=cells)


def in_kernel() -> bool:
    """Whether we run in a Jupyter kernel that can show live widgets (not a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def live_bundle(cluster: Any, card_html: str, text: str) -> dict[str, Any]:
    """A display bundle for a cluster: its card with a live meter under it where widgets work.

    Frontends with a widget manager show the live view (card + refreshing meter);
    others (nbconvert, GitHub) the static ``text/html``; terminals the ``text/plain``.
    """
    bundle: dict[str, Any] = {"text/plain": text, "text/html": card_html}
    if getattr(cluster, "status", None) != "running" or not in_kernel():
        return bundle
    try:
        import ipywidgets

        meter = CostMeter(cluster)
        box = ipywidgets.VBox([ipywidgets.HTML(value=card_html), meter.widget()])
        bundle["text/html"] = card_html + meter._widget.value
        bundle.update({k: v for k, v in box._repr_mimebundle_().items() if k != "text/plain"})
    except Exception:  # a display must never fail because of the meter
        pass
    return bundle
