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
"""

from __future__ import annotations

import inspect
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import distributed
from dask.utils import parse_timedelta
from distributed import Client, Future

from . import _remote, config, progress
from ._workers import WorkerInfo, free_port, probe_workers, require, resolve_client
from .exceptions import NoGPUWorkers, SpecError, TrainingError
from .spec import duration_seconds

__all__ = ["RankContext", "RankShards", "by_rank", "context", "torch", "xgboost"]

_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Errors that peers see when another rank died; the rank that died is the story.
_SECONDARY_TYPES = {"DistBackendError", "DistNetworkError", "DistStoreError", "DistError"}
_SECONDARY_TEXT = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
_FAILURE_GRACE_S = 10.0


@dataclass(frozen=True)
class RankContext:
    """What one rank knows about itself; returned by :func:`context` inside ``fn``."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    backend: str
    device: str
    worker: str


# One process group per worker process: torch keeps a single default group.
_PG_LOCK = threading.Lock()
_LOCAL = threading.local()


def context() -> RankContext:
    """The calling rank's context (rank, world size, device, ...). Only valid inside ``fn``."""
    ctx = getattr(_LOCAL, "context", None)
    if ctx is None:
        raise SpecError(
            "cumulo.train.context() is only available inside a function run by cumulo.train.torch."
        )
    return ctx


@dataclass(frozen=True)
class RankShards:
    """A dask collection to be split by rank; see :func:`by_rank`."""

    collection: Any


def by_rank(collection: Any) -> RankShards:
    """Mark a dask dataframe (or other collection with partitions) to be split across ranks.

    Passed as an argument to :func:`torch`, rank ``r`` receives, in place of the
    marker, the concatenation of a contiguous block of partitions (about
    ``npartitions / world_size`` of them) computed *on rank r's own worker*, as a
    pandas (or cudf) frame. A rank with no partition gets an empty frame.
    """
    if not hasattr(collection, "partitions") or not hasattr(collection, "npartitions"):
        raise SpecError(
            f"by_rank needs a dask collection with partitions (e.g. a dask DataFrame), "
            f"got {type(collection).__name__}."
        )
    return RankShards(collection)


def _shard_futures(client: Client, shards: RankShards, infos: Sequence[WorkerInfo]) -> list[Any]:
    coll = shards.collection
    world = len(infos)
    n = coll.npartitions
    out: list[Any] = []
    for rank, info in enumerate(infos):
        lo, hi = rank * n // world, (rank + 1) * n // world
        if lo == hi:
            out.append(coll._meta)
        else:
            part = coll.partitions[lo:hi]
            out.append(client.compute(part, workers=[info.address], allow_other_workers=False))
    return out


def _run_rank(
    fn: Callable[..., Any], spec: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Body of one rank, run on its worker: set up torch.distributed, call fn, always tear down."""
    timeout = float(spec["timeout"])
    if not _PG_LOCK.acquire(timeout=timeout):
        return {
            "ok": False,
            "error": {
                "type": "WorkerBusy",
                "message": f"worker {spec['worker']} was still running another training job after {timeout:.0f}s",
                "frames": [],
            },
        }
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    dist = None
    try:
        torch_mod = require("torch")
        dist = require("torch.distributed")
        os.environ.update(
            RANK=str(spec["rank"]),
            LOCAL_RANK=str(spec["local_rank"]),
            WORLD_SIZE=str(spec["world_size"]),
            LOCAL_WORLD_SIZE=str(spec["local_world_size"]),
            MASTER_ADDR=spec["master_addr"],
            MASTER_PORT=str(spec["master_port"]),
        )
        device = "cpu"
        if spec["backend"] == "nccl":
            # Let a timed-out NCCL collective raise instead of killing the worker process.
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
            torch_mod.cuda.set_device(0)
            device = "cuda:0"
        dist.init_process_group(
            spec["backend"],
            init_method="env://",
            rank=spec["rank"],
            world_size=spec["world_size"],
            timeout=timedelta(seconds=timeout),
        )
        _LOCAL.context = RankContext(
            rank=spec["rank"],
            local_rank=spec["local_rank"],
            world_size=spec["world_size"],
            local_world_size=spec["local_world_size"],
            master_addr=spec["master_addr"],
            master_port=spec["master_port"],
            backend=spec["backend"],
            device=device,
            worker=spec["worker"],
        )
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            return {"ok": False, "error": _remote.capture(exc, skip=1)}
        return {"ok": True, "value": value if spec["keep_result"] else None}
    except BaseException as exc:  # noqa: BLE001 - setup failed (import, rendezvous, device)
        return {"ok": False, "error": _remote.capture(exc)}
    finally:
        _LOCAL.context = None
        try:
            if dist is not None and dist.is_initialized():
                dist.destroy_process_group()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _PG_LOCK.release()


def _choose_workers(client: Client, workers: Sequence[str] | None) -> tuple[list[WorkerInfo], bool]:
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


def _local_ranks(infos: Sequence[WorkerInfo]) -> list[tuple[int, int]]:
    per_host: dict[str, int] = {}
    local = []
    for info in infos:
        local.append(per_host.get(info.hostname, 0))
        per_host[info.hostname] = local[-1] + 1
    return [(lr, per_host[info.hostname]) for lr, info in zip(local, infos)]


def _outcome(future: Future) -> dict[str, Any]:
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        exc = future.exception()
        captured = _remote.capture(exc)
        tb = future.traceback()
        if tb is not None:
            import traceback

            captured["frames"] = [(f.filename, f.lineno, f.name, f.line or "") for f in traceback.extract_tb(tb)]
        return {"ok": False, "error": captured}
    return {"ok": False, "error": {"type": "Cancelled", "message": f"task {future.status}", "frames": []}}


def _raise_for_loading(shards: dict[int | str, list[Any]], infos: Sequence[WorkerInfo]) -> None:
    for parts in shards.values():
        for rank, part in enumerate(parts):
            if isinstance(part, Future) and part.status != "finished":
                error = _outcome(part)["error"]
                text = _remote.render(error)
                raise TrainingError(
                    f"loading the data of rank {rank} (worker {infos[rank].address}) failed with "
                    f"{error.get('type')}: {error.get('message')}\n\nRemote traceback:\n{text}\n"
                    "No rank was started. Check the dataframe (compute a partition of it) and try again.",
                    rank=rank, remote_traceback=text, remote_type=str(error.get("type")),
                    worker=infos[rank].address,
                )


def _is_secondary(error: dict[str, Any]) -> bool:
    return error.get("type") in _SECONDARY_TYPES or any(t in error.get("message", "") for t in _SECONDARY_TEXT)


def _raise_for_failures(
    outcomes: dict[int, dict[str, Any]],
    infos: Sequence[WorkerInfo],
    pending: list[int],
    gone: list[int],
    timeout: float,
) -> None:
    failed = {r: o["error"] for r, o in outcomes.items() if not o["ok"]}
    if not failed:
        return
    primary = [r for r, e in failed.items() if not _is_secondary(e)]
    rank = min(primary or failed)
    error = failed[rank]
    text = _remote.render(error)
    others = sorted(r for r in failed if r != rank)
    notes = []
    if gone:
        notes.append(
            f"the worker(s) of ranks {gone} ({', '.join(infos[r].address for r in gone)}) left the cluster "
            "during the job (died or were killed: see their logs)."
            + ("" if primary else f" The error above is how rank {rank} saw it.")
        )
    stuck = [r for r in pending if r not in gone]
    if stuck:
        notes.append(
            f"ranks {stuck} were still running; they stop when their collectives time out "
            f"(cumulo.train.timeout = {timeout:.0f}s)."
        )
    if others:
        notes.append(f"ranks {others} failed too (usually as a consequence).")
    if pending and primary:
        notes.append(
            f"ranks {pending} were still running; they stop when their collectives time out "
            f"(cumulo.train.timeout = {timeout:.0f}s)."
        )
    notes.append(
        "The process group was torn down on the ranks that finished and the workers stay usable: "
        "fix the error above and call cumulo.train.torch again."
    )
    raise TrainingError(
        f"rank {rank} of {len(infos)} (worker {infos[rank].address}) raised "
        f"{error.get('type')}: {error.get('message')}\n\n"
        f"Remote traceback (rank {rank}):\n{text}\n" + "\n".join(notes),
        rank=rank,
        remote_traceback=text,
        remote_type=str(error.get("type")),
        worker=infos[rank].address,
    )


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
    infos, on_gpu = _choose_workers(client, workers)
    backend = backend or ("nccl" if on_gpu else "gloo")
    world = len(infos)
    job = uuid.uuid4().hex[:8]
    name = getattr(fn, "__name__", "fn")

    # Data first, so that a failing load never leaves other ranks waiting at the rendezvous.
    shards: dict[int | str, list[Any]] = {}
    for i, a in enumerate(args):
        if isinstance(a, RankShards):
            shards[i] = _shard_futures(client, a, infos)
    for k, v in kwargs.items():
        if isinstance(v, RankShards):
            shards[k] = _shard_futures(client, v, infos)
    loading = [f for parts in shards.values() for f in parts if isinstance(f, Future)]
    progress.wait(loading)
    _raise_for_loading(shards, infos)

    master = infos[0]
    port = client.submit(free_port, workers=[master.address], allow_other_workers=False, pure=False).result()
    futures: list[Future] = []
    for rank, (info, (local_rank, local_world)) in enumerate(zip(infos, _local_ranks(infos))):
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
                _run_rank, fn, spec, rank_args, rank_kwargs,
                key=f"cumulo-train-{name}-{job}-rank{rank}",
                workers=[info.address], allow_other_workers=False, pure=False, retries=0,
            )
        )
    del shards, loading

    outcomes = _collect(client, futures, [i.address for i in infos])
    pending = [r for r in range(world) if r not in outcomes]
    alive = _alive(client) if pending else set()
    gone = [r for r in pending if infos[r].address not in alive]
    _raise_for_failures(outcomes, infos, pending, gone, timeout_s)
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


def _alive(client: Client) -> set[str]:
    return set(client.scheduler_info(n_workers=-1)["workers"])


def _collect(client: Client, futures: list[Future], addresses: list[str]) -> dict[int, dict[str, Any]]:
    """Wait for the ranks; after the first failure give the others a short grace, not forever.

    The grace ends early once every rank still out is either done or lost its worker.
    """
    rank_of = {f.key: r for r, f in enumerate(futures)}
    outcomes: dict[int, dict[str, Any]] = {}
    delay = parse_timedelta(config.get("progress.delay", "1s"), "s") or 0.0
    try:
        try:
            distributed.wait(futures, timeout=delay)
        except TimeoutError:
            progress.show(futures)
        failed = False
        for fut in distributed.as_completed(futures):
            outcomes[rank_of[fut.key]] = _outcome(fut)
            if not outcomes[rank_of[fut.key]]["ok"]:
                failed = True
                break
        if failed:
            rest = [f for f in futures if rank_of[f.key] not in outcomes]
            deadline = time.monotonic() + _FAILURE_GRACE_S
            while rest and time.monotonic() < deadline:
                alive = _alive(client)
                if all(f.done() or addresses[rank_of[f.key]] not in alive for f in rest):
                    break
                try:
                    distributed.wait(rest, timeout=0.25)
                except TimeoutError:
                    pass
            for f in rest:
                if f.done():
                    outcomes[rank_of[f.key]] = _outcome(f)
    except KeyboardInterrupt:
        client.cancel(futures)
        raise
    return outcomes


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
