"""The usage report (HTML) and the usage plot (PNG) a run gets under ``cumulo/``.

Both are drawn from the plain data a closing cluster keeps (metering.final_usage: a
summary and the rows of where the spend went), so they can be drawn in the outbox's
thread after the cluster is gone. The HTML is cumulo's own usage report
(cumulo.widgets.report, bokeh inlined: it opens offline); the PNG is a bar chart of the
same rows drawn with matplotlib (which the MLflow server install brings) and left out,
with a log line, where matplotlib is missing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..widgets import report

__all__ = ["write"]

logger = logging.getLogger("cumulo")


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame({"cell": [str(r.get("label")) for r in rows],
                         "cost": [r.get("cost") for r in rows],
                         "worker_seconds": [r.get("worker_seconds") for r in rows]}).astype(
        {"cost": "float64", "worker_seconds": "float64"})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "cluster"


def write(directory: Path, name: str, kept: dict[str, Any], *, co2_g: float | None = None) -> list[Path]:
    """Write ``usage-<name>.html`` (and ``usage-<name>.png`` where matplotlib is installed) into ``directory``."""
    summary = dict(kept.get("summary") or {})
    rows = [dict(r) for r in kept.get("cells") or () if isinstance(r, dict)]
    out = []
    html_path = directory / f"usage-{_safe(name)}.html"
    layout = report.figure(name, summary, [], _frame(rows))
    report.write_report(layout, html_path, title=f"cumulo usage: {name}")
    out.append(html_path)
    png = directory / f"usage-{_safe(name)}.png"
    if _plot(png, name, summary, rows, co2_g):
        out.append(png)
    return out


def _plot(path: Path, name: str, summary: dict[str, Any], rows: list[dict[str, Any]], co2_g: float | None) -> bool:
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot state, safe off the main thread
    except ImportError:
        logger.info("cumulo: matplotlib is not installed, so the run gets the usage report without its PNG plot")
        return False
    priced = any(r.get("cost") is not None for r in rows)
    key = "cost" if priced else "worker_seconds"
    labels = [str(r.get("label")) for r in rows] or ["(no cells)"]
    values = [float(r.get(key) or 0.0) for r in rows] or [0.0]
    fig = Figure(figsize=(7, max(2.0, 0.4 * len(labels) + 1.2)))
    ax = fig.subplots()
    ax.barh(list(reversed(labels)), list(reversed(values)),
            color=["#d1d5db" if label == "idle" else "#3b82f6" for label in reversed(labels)])
    ax.set_xlabel("$ (estimate)" if priced else "worker-seconds (no rate set)")
    head = f"{name}: " + ("no rate set" if summary.get("spend") is None else f"${summary['spend']:,.4f}")
    if summary.get("energy_wh") is not None:
        head += f", GPU {summary['energy_wh']:,.3f} Wh"
        if co2_g is not None:
            head += f", {co2_g:,.2f} g CO2"
    ax.set_title(head)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return True
