"""The figures cumulo logs to a run: a cluster's usage summary as a run's share, cells and totals as metrics.

Pure functions over plain data (the summaries of cumulo.cost.metering and a cell's
ledger row), so that what goes to MLflow is tested without a tracker. A run's share of
a cluster is the cluster's summary when the run ends (or the cluster closes) minus its
summary when the run began following it: two runs on one cluster each get what was
spent during them.
"""

from __future__ import annotations

from typing import Any

import dask
import distributed

from .._version import __version__
from ..cost.carbon import Intensity, co2_grams

__all__ = ["SHARED", "cell_metrics", "delta", "params_of", "total_metrics"]

#: The summary figures a run's share is made of (metering.Usage.summary keys).
SHARED = ("spend", "energy_wh", "worker_seconds", "busy_worker_seconds", "gpu_seconds", "gpu_busy_seconds",
          "task_seconds")


def _text(value: Any) -> str:
    return "none" if value is None or value == "" else str(value)


def params_of(cluster: Any, record: Any, per_worker: float | None, per_gpu: float | None) -> dict[str, str]:
    """The run's params for ``cluster`` (its registry ``record`` when there is one): where it runs, on what,
    and what an hour of it costs (the provider's price, else the configured rates x its size)."""
    spec = getattr(cluster, "spec", None)
    workers = getattr(record, "workers", None) or getattr(spec, "workers", None)
    gpus = getattr(record, "gpus", None) or 0
    price = getattr(record, "rate_per_hour", None)
    if price is None and (per_worker is not None or per_gpu is not None):
        price = (per_worker or 0.0) * int(workers or 0) + (per_gpu or 0.0) * int(gpus)
    return {
        "cumulo.cluster": _text(getattr(cluster, "name", None)),
        "cumulo.provider": _text(getattr(cluster, "provider", None) or getattr(record, "provider", None)),
        "cumulo.region": _text(getattr(spec, "region", None)),
        "cumulo.gpu": _text(getattr(record, "gpu_model", None) or getattr(spec, "gpu", None)),
        "cumulo.instance_type": _text(getattr(spec, "instance_type", None)),
        "cumulo.workers": _text(workers),
        "cumulo.market": "spot" if getattr(spec, "spot", False) else "on-demand",
        "cumulo.price_per_hour": "none" if price is None else f"{float(price):.6g}",
        "cumulo.version": __version__,
        "cumulo.dask_version": dask.__version__,
        "cumulo.distributed_version": distributed.__version__,
    }


def delta(now: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """``now`` minus ``base`` for the :data:`SHARED` figures (None stays None: no rate, no energy measured)."""
    out: dict[str, Any] = {}
    for key in SHARED:
        value = now.get(key)
        if value is None:
            out[key] = None
            continue
        before = (base or {}).get(key) or 0.0
        out[key] = max(0.0, float(value) - float(before))
    return out


def busy_fraction(share: dict[str, Any]) -> float | None:
    """Share of paid capacity that ran tasks: GPU-time where there are GPUs, else worker-time."""
    if share.get("gpu_seconds"):
        return min(1.0, float(share.get("gpu_busy_seconds") or 0.0) / float(share["gpu_seconds"]))
    if share.get("worker_seconds"):
        return min(1.0, float(share.get("busy_worker_seconds") or 0.0) / float(share["worker_seconds"]))
    return None


def total_metrics(shares: list[tuple[dict[str, Any], Intensity]], prefix: str = "cumulo.") -> dict[str, float]:
    """A run's totals over its clusters' shares: cost, busy fraction, and energy and CO2 where measured."""
    out: dict[str, float] = {}
    spends = [s["spend"] for s, _ in shares if s.get("spend") is not None]
    if spends:
        out[f"{prefix}cost_usd"] = float(sum(spends))
    merged = {k: sum(float(s.get(k) or 0.0) for s, _ in shares) for k in SHARED if k != "spend"}
    busy = busy_fraction(merged)
    if busy is not None:
        out[f"{prefix}busy_fraction"] = busy
    measured = [(s["energy_wh"], grid) for s, grid in shares if s.get("energy_wh") is not None]
    if measured:
        out[f"{prefix}energy_wh"] = float(sum(wh for wh, _ in measured))
        out[f"{prefix}co2_g"] = float(sum(co2_grams(wh, grid) or 0.0 for wh, grid in measured))
    return out


def cell_metrics(row: dict[str, Any], cost: float | None) -> dict[str, float]:
    """One cell's metrics from its ledger row and its cost (None: no rate set, so no cost metric)."""
    out = {"cumulo.cell.task_seconds": float(row.get("task_seconds") or 0.0),
           "cumulo.cell.gpu_seconds": float(row.get("gpu_seconds") or 0.0)}
    if cost is not None:
        out["cumulo.cell.cost_usd"] = float(cost)
    if row.get("energy_j") is not None:
        out["cumulo.cell.energy_wh"] = float(row["energy_j"]) / 3600.0
    return out
