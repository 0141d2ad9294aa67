"""Which workers get ranks: GPU workers when there are any, one rank per worker, in the order given.

Decided from what each worker reports (:func:`cumulo._workers.probe_workers`): a mix of GPU
and CPU workers named explicitly is refused, a worker that sees several GPUs gets a warning
(cumulo runs one rank per worker, on its first GPU), and each rank's local rank and local
world size follow from the hosts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from distributed import Client

from .._workers import WorkerInfo, probe_workers
from ..exceptions import SpecError


def choose_workers(client: Client, workers: Sequence[str] | None) -> tuple[list[WorkerInfo], bool]:
    """The workers that get ranks, in rank order, and whether they are GPU workers."""
    infos = probe_workers(client, list(workers) if workers is not None else None)
    with_gpu = [i for i in infos if i.gpus > 0]
    if workers is None and with_gpu:
        infos = with_gpu
    elif with_gpu and len(with_gpu) != len(infos):
        raise SpecError(
            f"workers {[i.address for i in infos if i.gpus == 0]} have no GPU but the others do; "
            "train on GPU workers only, or on CPU workers only."
        )
    crowded = [i.address for i in infos if i.gpus > 1]
    if crowded:
        warnings.warn(
            f"workers {crowded} each see more than one GPU; cumulo runs one rank per worker, on its "
            "first GPU. Start GPU workers with dask-cuda (LocalCUDACluster, `dask cuda worker`), "
            "one per GPU, to train on all of them.",
            stacklevel=3,
        )
    return infos, bool(with_gpu)


def local_ranks(infos: Sequence[WorkerInfo]) -> list[tuple[int, int]]:
    """Per rank, (its local rank, the number of ranks on its host), hosts told apart by hostname."""
    per_host: dict[str, int] = {}
    local = []
    for info in infos:
        local.append(per_host.get(info.hostname, 0))
        per_host[info.hostname] = local[-1] + 1
    return [(lr, per_host[info.hostname]) for lr, info in zip(local, infos)]
