"""The picture a user sends their manager: spend over time (busy vs idle) and where it went, with bokeh.

The cost bars are the rows of ``cluster.usage.cells()``: every cell, then
"outside cells", "other kernels", "earlier cells" and "idle", which together add up to the spend.

bokeh comes with distributed's dashboard, so this needs nothing new. ``figure``
builds the plots from plain data (a usage summary, the ledger's samples and a
``cells()`` frame); :class:`UsagePlot` shows them in a notebook (an iframe of a
standalone page) and :func:`write_report` writes a standalone HTML file (bokeh's
JavaScript inlined by default, so it opens without a network).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["UsagePlot", "figure", "spend_series", "write_report"]


def spend_series(samples: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Cumulative paid capacity over the samples' window, split into busy and idle.

    With a price (``summary["rate_per_hour"]``), in dollars: each worker costs the rate
    split over today's workers, busy while it runs a task. Without one, in worker-hours.
    """
    rate = summary.get("rate_per_hour")
    workers_now = summary.get("workers") or 0
    per_worker_hour = (rate / workers_now) if rate is not None and workers_now else None
    times, busy, idle = [], [], []
    b = i = 0.0
    for prev, cur in zip(samples, samples[1:]):
        dt = max(0.0, float(cur["time"]) - float(prev["time"])) / 3600.0
        total = int(prev.get("workers") or 0)
        working = min(int(prev.get("busy_workers") or 0), total)
        scale = per_worker_hour if per_worker_hour is not None else 1.0
        b += working * dt * scale
        i += (total - working) * dt * scale
        times.append(float(cur["time"]) * 1000.0)  # bokeh datetimes are milliseconds
        busy.append(b)
        idle.append(i)
    return {"time": times, "busy": busy, "idle": idle,
            "unit": "$" if per_worker_hour is not None else "worker-hours"}


def figure(name: str, summary: dict[str, Any], samples: list[dict[str, Any]], cells: pd.DataFrame) -> Any:
    """A bokeh layout: spend over time (stacked busy/idle) above cost (or worker-time) per cell and idle."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, Div
    from bokeh.plotting import figure as bfigure

    series = spend_series(samples, summary)
    unit = series["unit"]
    head = Div(text=f"<b>{html.escape(name)}</b>: spent "
               + ("no rate set" if summary.get("spend") is None else f"${summary['spend']:,.2f} (estimate: "
                  f"{html.escape(str(summary.get('cost_basis')))})")
               + ("" if summary.get("energy_wh") is None else f"; GPU energy {summary['energy_wh']:,.3f} Wh")
               + ("" if summary.get("co2_g") is None else f", {summary['co2_g']:,.2f} g CO2 "
                  f"({summary.get('carbon_intensity', 0):g} g/kWh: {html.escape(str(summary.get('carbon_source')))})"))
    spend = bfigure(title=f"Paid capacity over time ({unit}): busy vs idle", x_axis_type="datetime",
                    height=260, width=640, tools="pan,wheel_zoom,box_zoom,reset,save")
    if series["time"]:
        data = {k: series[k] for k in ("time", "busy", "idle")}
        spend.varea_stack(["busy", "idle"], x="time", source=ColumnDataSource(data),
                          color=["#3b82f6", "#d1d5db"], legend_label=["busy", "idle"])
        spend.legend.location = "top_left"
    spend.yaxis.axis_label = unit
    priced = cells["cost"].notna().any() if len(cells) else False
    # priced: dollars, which add up to the spend; else the worker-seconds they stand for (busy, and idle)
    value = "cost" if priced else "worker_seconds"
    labels = [str(x) for x in cells["cell"]] if len(cells) else []
    values = [0.0 if v != v or v is None else float(v) for v in cells[value]] if len(cells) else []
    total = sum(values)
    title = (f"Cost per cell, outside cells and idle ($, estimate): ${total:,.4f} in all, the spend" if priced
             else f"Worker-seconds per cell, outside cells and idle (no rate set): {total:,.1f} in all")
    bars = bfigure(title=title, y_range=list(reversed(labels)) or ["(no cells)"],
                   height=max(160, 28 * len(labels) + 60), width=640, tools="save")
    if labels:
        colours = ["#d1d5db" if label == "idle" else "#3b82f6" for label in labels]
        bars.hbar(y="cell", right="value", height=0.6, color="colour",
                  source=ColumnDataSource({"cell": labels, "value": values, "colour": colours}))
    bars.xaxis.axis_label = "$" if priced else "worker-seconds"
    return column(head, spend, bars)


def _page(layout: Any, title: str, *, inline: bool) -> str:
    from bokeh.embed import file_html
    from bokeh.resources import CDN, INLINE

    return file_html(layout, resources=INLINE if inline else CDN, title=title)


def write_report(layout: Any, path: str | Path, *, title: str = "cumulo usage", inline: bool = True) -> Path:
    """Write ``layout`` as one standalone HTML file (bokeh's JavaScript inlined unless ``inline=False``)."""
    out = Path(path)
    out.write_text(_page(layout, title, inline=inline), encoding="utf-8")
    return out


class UsagePlot:
    """What ``cluster.usage.plot()`` returns: the bokeh ``layout``, shown inline in a notebook."""

    def __init__(self, layout: Any, title: str) -> None:
        self.layout = layout
        self.title = title

    def save(self, path: str | Path, *, inline: bool = True) -> Path:
        """Write the plots as a standalone HTML file."""
        return write_report(self.layout, path, title=self.title, inline=inline)

    def _repr_html_(self) -> str:
        page = html.escape(_page(self.layout, self.title, inline=False), quote=True)
        return (f"<iframe class='cumulo-usage-plot' srcdoc=\"{page}\" style='width:680px;height:640px;border:0'>"
                "</iframe>")
