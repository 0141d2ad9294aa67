"""MLOps: what each experiment cost, next to its metrics. Reachable as ``cumulo.mlflow``.

    >>> import cumulo, mlflow
    >>> cumulo.mlflow.autolog()               # or cumulo.mlflow.autolog: true in config
    >>> with mlflow.start_run():
    ...     ...                               # params, per-cell cost, totals, CO2 and a report land on the run

The modules, one idea each:
  - :mod:`.autolog`: following MLflow runs and the clusters they use, and what goes to each run;
  - :mod:`.runhooks`: hearing of MLflow runs' start and end (mlflow.start_run / end_run wrapped);
  - :mod:`.figures`: the params and metrics, from cumulo's usage figures (pure);
  - :mod:`.outbox`: keeping values while the tracking server is away, and sending them once it is back;
  - :mod:`.tracker`: the MLflow client calls (one client per tracking URI, a short reachability probe);
  - :mod:`.artifacts`: the usage report (HTML) and plot (PNG) a run gets under ``cumulo/``.

CO2 itself (measured kWh x the grid intensity of the cluster's region) is cumulo.cost.carbon's, as
``cluster.usage``, the widget and ``cumulo usage`` show it too.
"""

from __future__ import annotations

from .autolog import autolog, current
from ..cost.carbon import Intensity, co2_grams, intensity

__all__ = ["Intensity", "autolog", "co2_grams", "current", "intensity"]
