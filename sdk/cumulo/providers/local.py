"""The embedded default: a Dask cluster on this machine.

With GPUs (NVML reports at least one) this is dask-cuda's LocalCUDACluster,
one worker per GPU; otherwise distributed's LocalCluster sized to the machine.
This module only turns a ClusterSpec into those constructors' arguments; the
cluster lives in the process that called connect() and stops with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dask.utils import parse_timedelta

from .. import config
from ..exceptions import ConnectTimeout, ProviderError, SpecError
from ..registry import Registry
from ..spec import ClusterSpec
from .base import Deployment, Provider

__all__ = ["LocalProvider", "gpu_count"]


def gpu_count() -> int:
    """GPUs NVML reports on this machine (0 without NVML or a driver)."""
    try:
        from distributed.diagnostics import nvml

        return int(nvml.device_get_count())
    except Exception:
        return 0


def _worker_pids(cluster: Any) -> list[int]:
    """PIDs of the worker processes a (partly started) local cluster spawned."""
    pids = []
    for nanny in getattr(cluster, "workers", {}).values():
        process = getattr(getattr(nanny, "process", None), "process", None)
        pid = getattr(process, "pid", None)
        if pid:
            pids.append(pid)
    return pids


async def _discard(cluster: Any) -> None:
    """Stop a cluster whose start failed or was cut short, killing workers that missed the close."""
    import os
    import signal

    pids = _worker_pids(cluster)
    try:
        await asyncio.wait_for(cluster.close(), 10)
    except BaseException:
        pass
    for pid in pids + _worker_pids(cluster):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


class LocalProvider(Provider):
    """Workers as processes on this machine, scheduler on 127.0.0.1."""

    name = "local"

    def cluster_kwargs(self, spec: ClusterSpec, *, gpus: int) -> dict[str, Any]:
        """Arguments for (CUDA)LocalCluster from the spec and cumulo.local.* config."""
        if spec.address or spec.instance_type or spec.region:
            raise SpecError("the local provider takes no address, instance_type or region; drop them")
        kwargs: dict[str, Any] = {
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",
            "scheduler_port": 0,
            "asynchronous": True,
            "silence_logs": logging.ERROR,
        }
        workers = spec.workers if spec.workers is not None else config.get("local.n-workers")
        if workers is not None:
            kwargs["n_workers"] = workers
        threads = spec.threads_per_worker or config.get("local.threads-per-worker")
        if threads is not None:
            kwargs["threads_per_worker"] = threads
        kwargs["memory_limit"] = spec.memory_limit or config.get("local.memory-limit")
        if spec.env:
            kwargs["env"] = dict(spec.env)
        if gpus and workers is not None and workers > gpus:
            raise SpecError(
                f"workers={workers} but this machine has {gpus} GPU(s): a CUDA worker needs a GPU of its own; "
                f"use workers<={gpus}"
            )
        return kwargs

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, registry: Registry) -> Deployment:
        gpus = gpu_count()
        if spec.gpu and not gpus:
            raise ProviderError(
                f"gpu={spec.gpu!r} was asked for but NVML reports no GPU on this machine; "
                "drop gpu= to run on CPU workers, or connect to a GPU cluster"
            )
        kwargs = self.cluster_kwargs(spec, gpus=gpus)
        if gpus:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError as exc:
                raise ProviderError(
                    "this machine has GPUs but dask-cuda is not installed: pip install 'cumulo[gpu]'"
                ) from exc
            factory: Any = LocalCUDACluster
        else:
            from distributed import LocalCluster

            factory = LocalCluster
        timeout = parse_timedelta(config.get("connect.timeout"))
        cluster = factory(**kwargs)

        async def started() -> None:
            await cluster

        # Never cancel a start half way: workers being spawned at that moment would be missed by
        # close() and outlive us. On timeout, let the start settle (bounded), then stop everything.
        task = asyncio.ensure_future(started())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                await asyncio.wait({task}, timeout=max(10.0, timeout))
                task.cancel()
                await _discard(cluster)
                raise ConnectTimeout(
                    f"the local cluster did not start within {timeout:g}s; raise cumulo.connect.timeout "
                    "or ask for fewer workers"
                )
            task.result()
        except BaseException:
            task.cancel()
            await _discard(cluster)
            raise
        return Deployment(cluster.scheduler_address, dashboard_link=cluster.dashboard_link, manager=cluster)
