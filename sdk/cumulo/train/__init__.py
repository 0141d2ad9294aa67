"""Distributed training launchers over the Dask workers of a cluster.

``cumulo.train.torch(fn, cluster, ...)`` runs ``fn`` once per rank with
``torch.distributed`` initialised: one task pinned to each worker (Dask runs it;
cumulo only says where), NCCL on GPU workers and Gloo on CPU workers, the usual
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set, and a
rendezvous port chosen free on the first worker. A failing rank comes back as a
:class:`~cumulo.exceptions.TrainingError` naming the rank with its traceback; the
process group is destroyed on every rank whatever happens, so the workers can run
the next job. ``cumulo.train.xgboost(cluster, X, y, ...)`` trains with
``xgboost.dask`` on the same workers, ``device="cuda"`` where they have GPUs.

GPU workers follow dask-cuda's convention: one worker per GPU, that GPU first in
its ``CUDA_VISIBLE_DEVICES``; each rank uses ``cuda:0`` of its worker (see
:func:`context`). torch and xgboost are imported only when used (``cumulo[train]``).

The modules, one idea each:
  - :mod:`.torch_job`: :func:`torch`, checking its arguments, then data, ranks and results in order;
  - :mod:`.rank`: what runs on each rank's worker (:func:`context` and the rank's body);
  - :mod:`.shards`: :func:`by_rank`, a dask collection split into one block of partitions per rank;
  - :mod:`.placement`: which workers get ranks, and each rank's local rank on its host;
  - :mod:`.outcomes`: waiting for the ranks and turning a failure into one TrainingError;
  - :mod:`.xgboost_job`: :func:`xgboost`, over ``xgboost.dask``.
"""

from __future__ import annotations

from .rank import RankContext, context
from .shards import RankShards, by_rank
from .torch_job import torch
from .xgboost_job import xgboost

__all__ = ["RankContext", "RankShards", "by_rank", "context", "torch", "xgboost"]
