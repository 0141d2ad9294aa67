"""Notebook views of what a cluster costs and how it is used.

``CostMeter(cluster)`` is a live widget (ipywidgets) that refreshes in a
background thread at ``cumulo.widgets.refresh-interval`` and stops when the
cluster closes; outside Jupyter it is plain text. ``render_html`` and
``render_text`` are the pure functions it draws with.
"""

from __future__ import annotations

from .meter import CostMeter, in_kernel, live_bundle, render_html, render_text, sparkline_svg

__all__ = ["CostMeter", "in_kernel", "live_bundle", "render_html", "render_text", "sparkline_svg"]
