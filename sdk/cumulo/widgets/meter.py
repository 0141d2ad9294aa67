"""The live cost/usage meter: $/h now, spent so far, budget bar, workers and GPUs, sparkline, idle split."""

from __future__ import annotations

import html
import threading
import time
from typing import Any

from dask.utils import parse_timedelta

from .. import config

__all__ = ["CostMeter", "in_kernel", "live_bundle", "render_html", "render_text", "sparkline_svg"]


def _money(v: float | None) -> str:
    return "no rate set" if v is None else f"${v:,.2f}"


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


def _series(samples: list[dict[str, Any]]) -> tuple[str, list[float | None], list[float | None]]:
    """(label, utilisation %, memory %) series: GPU where NVML reports, else busy threads."""
    if any(s.get("gpu_util") is not None for s in samples):
        mem = [None if not s.get("gpu_mem_total") else 100.0 * (s.get("gpu_mem_used") or 0) / s["gpu_mem_total"]
               for s in samples]
        return "GPU util / memory", [s.get("gpu_util") for s in samples], mem
    busy = [None if not s.get("threads") else 100.0 * min(s["processing"], s["threads"]) / s["threads"]
            for s in samples]
    return "busy threads", busy, []


def render_text(name: str, s: dict[str, Any], *, budget: float | None = None, status: str = "running") -> str:
    """The meter as one or two plain-text lines (terminals, logs, non-widget frontends)."""
    rate = s.get("rate_per_hour")
    line = (f"{name} [{status}]: {_money(rate)}{'/h' if rate is not None else ''} now, "
            f"spent {_money(s.get('spend'))}" + (" (estimate)" if s.get("spend") is not None else ""))
    if budget:
        line += f" of ${budget:,.2f} budget"
    if s.get("workers") is not None:
        line += f"; {s['workers']} workers, {s.get('gpus', 0)} GPUs"
    idle = s.get("idle_spend")
    if idle is not None and s.get("spend"):
        line += f"\n{_money(idle)} of {_money(s['spend'])} paid for idle {'GPUs' if s.get('gpus') else 'workers'}"
    return line


def render_html(name: str, s: dict[str, Any], samples: list[dict[str, Any]] | None = None, *,
                budget: float | None = None, status: str = "running") -> str:
    """The meter as a small HTML block (what the widget shows)."""
    esc = html.escape
    rate = s.get("rate_per_hour")
    spend = s.get("spend")
    if rate is None and spend is None:
        money = ("no rate set <span style='color:#888'>(set cumulo.cost.rate-per-worker-hour or "
                 "rate-per-gpu-hour to see a cost)</span>")
    else:
        money = (f"{esc(_money(rate))}{'/h' if rate is not None else ''} now · spent <b>{esc(_money(spend))}</b>"
                 + ("" if spend is None else f" <span style='color:#888' title='{esc(str(s.get('cost_basis')))}'>"
                    "(estimate)</span>"))
    rows = [f"<b>{esc(name)}</b> <span style='color:#888'>[{esc(status)}]</span>", money]
    if budget:
        frac = 0.0 if spend is None else min(spend / budget, 1.0)
        colour = "#16a34a" if frac < 0.5 else ("#d97706" if frac < 0.8 else "#dc2626")
        rows.append(
            f"<div style='width:160px;height:8px;background:#e5e7eb;display:inline-block;vertical-align:middle'>"
            f"<div style='width:{frac * 100:.0f}%;height:8px;background:{colour}'></div></div> "
            f"{frac:.0%} of ${budget:,.2f} budget")
    if s.get("workers") is not None:
        gpu = f"{s.get('gpus', 0)} GPUs" + (f" ({esc(str(s['gpu_model']))})" if s.get("gpu_model") else "")
        rows.append(f"{s['workers']} workers · {s.get('threads', 0)} threads · {gpu}")
    if samples:
        label, util, mem = _series(samples)
        spark = sparkline_svg(util) + (sparkline_svg(mem, color="#a855f7") if mem else "")
        rows.append(f"{spark} <span style='color:#888'>{esc(label)}</span>")
    idle = s.get("idle_spend")
    if idle is not None and spend:
        what = "GPUs" if s.get("gpus") else "workers"
        rows.append(f"{esc(_money(idle))} of {esc(_money(spend))} paid for idle {what}")
    elif s.get("worker_seconds") is not None:
        rows.append(f"busy {s['busy_worker_seconds']:.0f} of {s['worker_seconds']:.0f} worker-seconds")
    body = "".join(f"<div>{r}</div>" for r in rows)
    return f"<div class='cumulo-meter' style='font-size:90%;line-height:1.5'>{body}</div>"


class CostMeter:
    """A live cost/usage view of one cluster. Display it in a notebook; ``str()`` elsewhere."""

    def __init__(self, cluster: Any, *, interval: float | str | None = None) -> None:
        self.cluster = cluster
        self.interval = float(parse_timedelta(interval or config.get("widgets.refresh-interval")))
        self.points = int(config.get("widgets.sparkline-points"))
        self._widget: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    def _budget(self) -> float | None:
        rec = getattr(self.cluster, "_record", None)
        return getattr(rec, "budget", None) or getattr(getattr(self.cluster, "spec", None), "budget", None)

    def _data(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        usage = getattr(self.cluster, "_cumulo_usage", None) or getattr(self.cluster, "usage", None)
        if usage is None or self.cluster.status != "running":
            return {}, []
        ledger = usage.ledger(samples=self.points)
        return usage.summary(ledger), list((ledger or {}).get("samples") or [])

    def html(self) -> str:
        """The current view as HTML (one ledger read)."""
        try:
            s, samples = self._data()
        except Exception as exc:
            return f"<div class='cumulo-meter'>{html.escape(self.cluster.name)}: {html.escape(str(exc))}</div>"
        return render_html(self.cluster.name, s, samples, budget=self._budget(), status=self.cluster.status)

    def __str__(self) -> str:
        try:
            s, _ = self._data()
        except Exception as exc:
            return f"{self.cluster.name}: {exc}"
        return render_text(self.cluster.name, s, budget=self._budget(), status=self.cluster.status)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.html()

    def widget(self) -> Any:
        """The ipywidgets.HTML that refreshes itself (started on first call)."""
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
        """Redraw once (the background thread calls this every interval)."""
        if self._widget is not None:
            self._widget.value = self.html()
        self.refreshes += 1

    def start(self) -> None:
        """Start refreshing in a daemon thread; it ends when the cluster closes or stop() is called."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"cumulo-meter-{self.cluster.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.cluster.status != "running":
                break
            try:
                self.refresh()
            except Exception:
                time.sleep(self.interval)
        for _ in range(600):  # let a close in progress finish (bounded), so the last frame says so
            if self.cluster.status not in ("closing", "running") or self._stop.is_set():
                break
            time.sleep(0.05)
        if self._widget is not None:  # a last frame that says it stopped
            s = {}
            rec = None
            try:
                rec = self.cluster.registry.get(self.cluster.id)
                from ..metering import spend_of

                sp = spend_of(rec, None)
                s = {"spend": sp.amount if sp.amount is not None else rec.cost, "rate_per_hour": None}
            except Exception:
                pass
            self._widget.value = render_html(self.cluster.name, s, budget=self._budget(),
                                             status=getattr(rec, "state", self.cluster.status))


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
        bundle["text/html"] = card_html + meter.html()
        bundle.update({k: v for k, v in box._repr_mimebundle_().items() if k != "text/plain"})
    except Exception:  # a display must never fail because of the meter
        pass
    return bundle
