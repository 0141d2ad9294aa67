"""``cluster.usage`` as a notebook user holds it: the figures of metering.Usage, plus its pictures.

metering.py computes what a cluster used and cost and knows nothing of views;
this subclass adds the live meter and the bokeh plot, so that the views depend
on the figures and never the other way round.
"""

from __future__ import annotations

from typing import Any

from .. import config
from ..cost.metering import Usage
from .meter import CostMeter

__all__ = ["UsageView"]


class UsageView(Usage):
    """What ``cluster.usage`` returns: ``summary()``, ``spend()``, ``cells()``, and ``widget()``, ``plot()``,
    ``report(path)``."""

    def plot(self) -> Any:
        """Spend over time (busy vs idle) and cost per cell, as bokeh plots (shown inline in a notebook).

        Returns a :class:`cumulo.widgets.report.UsagePlot`; ``.layout`` is the bokeh
        object, ``.save(path)`` writes it as a standalone HTML file.
        """
        from .report import UsagePlot, figure  # heavy: bokeh, only when a plot is asked for

        ledger = self.ledger(samples=int(config.get("widgets.sparkline-points", 60)) * 15)
        summary = self.summary(ledger)
        name = str(getattr(self._cluster, "name", None) or getattr(self._cluster.record, "name", ""))
        layout = figure(name, summary, list((ledger or {}).get("samples") or []), self.cells())
        return UsagePlot(layout, f"cumulo usage: {name}")

    def report(self, path: str | Any) -> Any:
        """Write :meth:`plot` to ``path`` as one standalone HTML file (works offline); returns the path."""
        return self.plot().save(path)

    def widget(self) -> Any:
        """A live cost/usage widget for this cluster (text outside Jupyter)."""
        return CostMeter(self._cluster)
