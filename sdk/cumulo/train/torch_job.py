"""``cumulo.train.torch``: run a function once per rank with torch.distributed initialised.

The steps, in this order so that nothing is left waiting: check the options and that the
function takes the arguments (one SpecError before anything is sent), choose the workers
(:mod:`.placement`), load each rank's data on its own worker (:mod:`.shards`; a failing load
starts no rank), pick a free rendezvous port on the first worker, submit one
:func:`~cumulo.train.rank.run_rank` task pinned to each worker, then collect the results
(:mod:`.outcomes`).
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from distributed import Future

from .. import config, progress
from .._workers import free_port, require, resolve_client
from ..cost import listeners
from ..exceptions import SpecError
from ..spec import duration_seconds
from .outcomes import (
    collect,
    live_workers,
    raise_for_failures,
    raise_for_loading,
    raise_if_loaders_left,
)
from .placement import choose_workers, local_ranks
from .rank import run_rank
from .shards import RankShards, shard_futures


@listeners.reported("train.torch")  # trackers (cumulo.mlops): its cost goes to the MLflow run
def torch(
    fn: Callable[..., Any],
    cluster: Any = None,
    *args: Any,
    workers: Sequence[str] | None = None,
    result: Literal["all", "rank0"] = "all",
    backend: str | None = None,
    timeout: str | float | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` on every rank with ``torch.distributed`` initialised.

    One rank per worker (per GPU with dask-cuda workers, which hold one GPU each):
    all GPU workers when the cluster has any, else all workers, or the ``workers``
    given (their order is rank order). Arguments made with :func:`by_rank` are
    replaced by each rank's share of the data. Inside ``fn``, :func:`context` gives
    the rank, world size and device.

    ``result="all"`` returns the ranks' return values in rank order; ``"rank0"``
    returns rank 0's alone (others are not sent back). ``backend`` overrides
    nccl/gloo. ``timeout`` bounds the rendezvous and each collective (default
    ``cumulo.train.timeout``), so no rank waits forever for a peer that died.
    The names of these options cannot be used as keyword arguments of ``fn``.

    Raises TrainingError (naming the rank, with its traceback) if any rank fails.
    """
    timeout_s = _check_torch_arguments(fn, args, kwargs, workers=workers, result=result, backend=backend,
                                       timeout=timeout)
    require("torch")
    client = resolve_client(cluster)
    infos, on_gpu = choose_workers(client, workers)
    backend = backend or ("nccl" if on_gpu else "gloo")
    world = len(infos)
    job = uuid.uuid4().hex[:8]
    name = getattr(fn, "__name__", "fn")

    # Data first, so that a failing load never leaves other ranks waiting at the rendezvous.
    shards: dict[int | str, list[Any]] = {}
    for i, a in enumerate(args):
        if isinstance(a, RankShards):
            shards[i] = shard_futures(client, a, infos)
    for k, v in kwargs.items():
        if isinstance(v, RankShards):
            shards[k] = shard_futures(client, v, infos)
    loading = [f for parts in shards.values() for f in parts if isinstance(f, Future)]
    progress.wait(loading, check=functools.partial(raise_if_loaders_left, client, loading, infos))
    raise_for_loading(shards, infos)

    master = infos[0]
    port = client.submit(free_port, workers=[master.address], allow_other_workers=False, pure=False).result()
    futures: list[Future] = []
    for rank, (info, (local_rank, local_world)) in enumerate(zip(infos, local_ranks(infos))):
        spec = {
            "rank": rank,
            "local_rank": local_rank,
            "world_size": world,
            "local_world_size": local_world,
            "master_addr": master.host,
            "master_port": port,
            "backend": backend,
            "timeout": timeout_s,
            "worker": info.address,
            "keep_result": result == "all" or rank == 0,
        }
        rank_args = tuple(shards[i][rank] if i in shards else a for i, a in enumerate(args))
        rank_kwargs = {k: (shards[k][rank] if k in shards else v) for k, v in kwargs.items()}
        futures.append(
            client.submit(
                run_rank, fn, spec, rank_args, rank_kwargs,
                key=f"cumulo-train-{name}-{job}-rank{rank}",
                workers=[info.address], allow_other_workers=False, pure=False, retries=0,
            )
        )
    del shards, loading

    outcomes = collect(client, futures, [i.address for i in infos])
    pending = [r for r in range(world) if r not in outcomes]
    alive = live_workers(client) if pending else set()
    gone = [r for r in pending if infos[r].address not in alive]
    raise_for_failures(outcomes, infos, pending, gone, timeout_s)
    values = [outcomes[r]["value"] for r in range(world)]
    return values[0] if result == "rank0" else values


_TORCH_OPTIONS = "workers=[worker addresses], result='all'|'rank0', backend='nccl'|'gloo', timeout='5m'"


def _check_torch_arguments(
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workers: Any,
    result: Any,
    backend: Any,
    timeout: Any,
) -> float:
    """Check train.torch's own options and that ``fn`` accepts the rest; return the timeout in seconds.

    Done before anything is sent to a worker, so that a typo is one SpecError naming
    the accepted arguments, not a TypeError from inside (or the same TypeError on every rank).
    """
    if not callable(fn):
        raise SpecError(f"train.torch needs the training function first, not {type(fn).__name__}: "
                        "cumulo.train.torch(fn, cluster, ...)")
    if workers is not None and (
        isinstance(workers, (str, bytes)) or not isinstance(workers, Sequence)
        or not workers or not all(isinstance(w, str) for w in workers)
    ):
        raise SpecError(
            f"workers={workers!r} must be a non-empty list of worker addresses, e.g. "
            "workers=list(cluster.client.scheduler_info()['workers'])[:2], or left out to train on every "
            "(GPU) worker; to train on fewer workers, pick their addresses"
        )
    if result not in ("all", "rank0"):
        raise SpecError(f"result must be 'all' or 'rank0', not {result!r}.")
    if backend is not None and (not isinstance(backend, str) or not backend.strip()):
        raise SpecError(f"backend={backend!r} must be a torch.distributed backend name such as 'nccl' or 'gloo', "
                        "or left out to choose by the workers' GPUs")
    value = timeout if timeout is not None else config.get("train.timeout", "5m")
    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise SpecError(f"timeout={value!r} {exc}: use e.g. timeout='5m' or a number of seconds") from None
    if seconds <= 0:
        raise SpecError(f"timeout={value!r} must be a positive duration such as '5m'")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C functions have no signature: let them be
        return seconds
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        plain = signature.replace(  # parameter names and defaults are what the user needs to see
            parameters=[q.replace(annotation=inspect.Parameter.empty) for q in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
        raise SpecError(
            f"{getattr(fn, '__name__', 'fn')}{plain} cannot take these arguments ({exc}). train.torch passes "
            f"its extra arguments to fn; its own keyword arguments are {_TORCH_OPTIONS}"
        ) from None
    return seconds
