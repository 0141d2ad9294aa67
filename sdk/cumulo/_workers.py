"""Which Dask workers remote work (training ranks, ``%%cumulo`` cells) may run on.

Shared by :mod:`cumulo.train` and :mod:`cumulo.remote_cell`: turn what the user
holds (a cumulo Cluster, a ``distributed.Client``, or nothing) into a client, and
ask every worker, in one round trip, which host it is on and how many GPUs it
sees. cumulo only picks *where* a task may run; Dask schedules it.
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from distributed import Client

from .exceptions import MissingDependency, SpecError

__all__ = ["WorkerInfo", "free_port", "probe_workers", "require", "resolve_client", "visible_gpu_count"]


def resolve_client(cluster: Any = None) -> Client:
    """The ``distributed.Client`` behind ``cluster``.

    Accepts a cumulo Cluster (anything with a ``.client``), a ``distributed.Client``,
    or ``None`` for the cluster most recently connected in this process (or, failing
    that, dask's default client), so that notebooks need not pass it around.
    """
    if cluster is None:
        cluster = _current_cluster()
    client = getattr(cluster, "client", cluster)
    if isinstance(client, Client):
        return client
    raise SpecError(
        f"expected a cumulo Cluster or a distributed.Client, got {type(cluster).__name__}. "
        "Pass the object cumulo.connect() returned."
    )


def _current_cluster() -> Any:
    try:
        mod = importlib.import_module("cumulo.cluster")
    except ImportError:
        mod = None
    current = getattr(mod, "current", None) if mod is not None else None
    if callable(current):
        try:
            found = current()
        except Exception:  # no cluster connected yet: fall through to dask's default
            found = None
        if found is not None:
            return found
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        raise SpecError(
            "no cluster is attached in this kernel. Run `cluster = cumulo.connect()` first, "
            "or pass the cluster explicitly."
        ) from None


def require(module: str, extra: str = "train") -> Any:
    """Import ``module`` or raise MissingDependency naming the cumulo extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is not installed in this environment ({exc}). "
            f"Install it with: pip install 'cumulo[{extra}]' (on the client and on every worker)."
        ) from exc


def visible_gpu_count() -> int:
    """GPUs this process may use: NVML's count, narrowed by ``CUDA_VISIBLE_DEVICES``.

    Runs on workers. dask-cuda gives each worker its own GPU first in
    ``CUDA_VISIBLE_DEVICES``; NVML itself ignores that variable.
    """
    from distributed.diagnostics import nvml

    try:
        count = nvml.device_get_count()
    except Exception:  # NVML present but broken: treat as no GPU
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return int(count)
    listed = [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return min(len(listed), int(count))


def free_port() -> int:
    """A TCP port that is free on this host right now (used as the rendezvous port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _describe_self() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "gpus": visible_gpu_count()}


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as seen by remote work: its address, host (for rendezvous) and GPU count."""

    address: str
    host: str
    hostname: str
    gpus: int
    nthreads: int


#: How long remote work waits for a worker to (re)join a cluster that has none at the moment.
REJOIN_WAIT_S = 30.0


def probe_workers(client: Client, workers: list[str] | None = None) -> list[WorkerInfo]:
    """Ask the workers (all, or the given addresses) where they run and what GPUs they see.

    Sorted by address so that rank assignment is stable between calls.
    """
    from distributed.comm import get_address_host

    info = client.scheduler_info(n_workers=-1)["workers"]
    if not info:
        # a worker whose nanny restarts it (after a crash, or a killed rank) rejoins within seconds: wait
        # for one before refusing, rather than fail a call made in that moment
        try:
            client.wait_for_workers(1, timeout=REJOIN_WAIT_S)
        except TimeoutError:
            raise SpecError(f"the cluster has no workers (none joined within {REJOIN_WAIT_S:g} s). Scale it up "
                            "(cluster.scale(n)) and try again.") from None
        info = client.scheduler_info(n_workers=-1)["workers"]
    if workers is not None:
        unknown = [w for w in workers if w not in info]
        if unknown:
            raise SpecError(f"unknown worker address(es) {unknown}; the cluster has {sorted(info)}.")
        chosen = list(dict.fromkeys(workers))
    else:
        chosen = sorted(info)
    described = client.run(_describe_self, workers=chosen)
    return [
        WorkerInfo(
            address=w,
            host=get_address_host(w),
            hostname=described[w]["hostname"],
            gpus=int(described[w]["gpus"]),
            nthreads=int(info[w].get("nthreads", 1)),
        )
        for w in chosen
        if w in described
    ]
