"""Notebook views of what a cluster costs and how it is used.

``CostMeter(cluster)`` is a live widget (ipywidgets) redrawn by a periodic
callback on the cluster's own event loop every ``cumulo.widgets.refresh-interval``
and stopped when the cluster closes; outside Jupyter it is plain text, and in a
static export the same picture as HTML. ``meter_model``, ``render_html`` and
``render_text`` are the pure functions it draws with; :mod:`cumulo.widgets.report`
draws spend over time and cost per cell with bokeh (``cluster.usage.plot()``).
"""

from __future__ import annotations

from .meter import (
    CostMeter,
    in_kernel,
    live_bundle,
    meter_model,
    render_html,
    render_model,
    render_text,
    sparkline_svg,
    top_cells,
    workers_svg,
)

__all__ = ["CostMeter", "in_kernel", "live_bundle", "meter_model", "render_html", "render_model", "render_text",
           "sparkline_svg", "top_cells", "workers_svg"]
