"""``cumulo.train.xgboost``: train an XGBoost booster with ``xgboost.dask`` on the cluster's workers.

The data is persisted on the cluster first (with progress), and the device follows the
workers: ``device="cuda"`` when every worker has a GPU, ``"cpu"`` otherwise, unless the
caller's params say; asking for CUDA on CPU workers is a NoGPUWorkers error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import distributed

from .. import progress
from .._workers import probe_workers, require, resolve_client
from ..cost import listeners
from ..exceptions import NoGPUWorkers


@listeners.reported("train.xgboost")  # trackers (cumulo.mlops): its cost goes to the MLflow run
def xgboost(
    cluster: Any,
    X: Any,
    y: Any,
    *,
    params: dict[str, Any] | None = None,
    num_boost_round: int = 100,
    evals: Sequence[tuple[Any, Any, str]] = (),
    early_stopping_rounds: int | None = None,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Train an XGBoost booster on the cluster's workers with ``xgboost.dask``.

    ``X`` (dask DataFrame/Array) and ``y`` (dask Series/Array) come from the
    cluster; they are persisted there first (with progress). ``params`` get
    ``tree_method="hist"`` and ``device="cuda"`` when every worker has a GPU,
    ``"cpu"`` otherwise, unless given. ``evals`` is a list of ``(X, y, name)``.
    Returns xgboost.dask's ``{"booster": Booster, "history": {...}}``; predict with
    ``xgboost.dask.predict(cluster.client, out["booster"], X)``.
    """
    require("xgboost")
    dxgb = require("xgboost.dask")
    client = resolve_client(cluster)
    infos = probe_workers(client)
    device = "cuda" if all(i.gpus > 0 for i in infos) else "cpu"
    if params and str(params.get("device", "")).startswith("cuda") and device == "cpu":
        raise NoGPUWorkers("params ask for device='cuda' but the workers see no GPU; drop it or attach a GPU cluster.")
    full = {"tree_method": "hist", "device": device, **(params or {})}
    collections = [X, y, *(c for Xe, ye, _ in evals for c in (Xe, ye))]
    persisted = client.persist(collections)
    progress.wait(distributed.futures_of(persisted))
    Xp, yp, *rest = persisted
    dtrain = dxgb.DaskQuantileDMatrix(client, Xp, yp)
    dmatrices = [
        (dxgb.DaskQuantileDMatrix(client, rest[2 * i], rest[2 * i + 1], ref=dtrain), name)
        for i, (_, _, name) in enumerate(evals)
    ]
    return dxgb.train(
        client, full, dtrain, num_boost_round=num_boost_round, evals=dmatrices,
        early_stopping_rounds=early_stopping_rounds, **train_kwargs,
    )
