"""The embedded default: a Dask cluster on this machine.

With GPUs (NVML reports at least one) this is dask-cuda's LocalCUDACluster,
one worker per GPU; otherwise distributed's LocalCluster sized to the machine.
This module only turns a ClusterSpec into those constructors' arguments; the
cluster lives in the process that called connect() and stops with it.

Security (local_security.py): the cluster listens on tls:// with credentials of
its own, which the same user's other processes load from a private folder
(``security(record)``), unless ``cumulo.local.tls`` is false; workers never see
provider credentials such as LAMBDA_API_KEY.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta
from distributed.security import Security

from .. import config
from .._spawn import _start_method
from ..exceptions import ConnectTimeout, CredentialsError, ProviderError, SpecError
from ..life.registry import ClusterRecord, Registry
from ..security import local_security
from ..spec import ClusterSpec, parse_address
from .base import Deployment, Orphan, Provider, shutdown_scheduler

if TYPE_CHECKING:
    from ..life.checkpoint import Checkpoint

__all__ = ["LocalDeployment", "LocalProvider", "gpu_count"]


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


class LocalDeployment(Deployment):
    """A local cluster and, when it has them, its credentials: closing it removes both."""

    def __init__(self, address: str, *, cluster_id: str, owns_credentials: bool, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.cluster_id = cluster_id
        self.owns_credentials = owns_credentials

    async def close(self) -> None:
        """Stop the cluster, then delete its certificate folder (kept if the stop failed, for a retry)."""
        scheduler = getattr(self.manager, "scheduler", None)
        if getattr(getattr(scheduler, "status", None), "name", "") in ("closing", "closed", "failed"):
            # stopped from elsewhere (`cumulo down`): do not spend the connect timeout telling it again
            self.manager.shutdown_scheduler = False
        await super().close()
        if self.owns_credentials:
            local_security.remove_local_tls(self.cluster_id)


async def _listening(address: str, timeout: float = 3.0) -> bool:
    """Whether anything accepts TCP connections at the scheduler's host:port (no handshake)."""
    _, host, port = parse_address(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class LocalProvider(Provider):
    """Workers as processes on this machine, scheduler on 127.0.0.1."""

    name = "local"
    lives_in_owner_process = True
    #: Nothing bills, but a killed kernel leaves its cluster's credentials folder behind (see sweep_orphans).
    sweeps_orphans = True

    async def sweep_orphans(
        self, registry: Registry, *, dry_run: bool = True, terminate_unknown: bool = False
    ) -> list[Orphan]:
        """Remove the credentials folders of local clusters whose owner process died (not in a dry run).

        They are not billable, so nothing is reported; a live cluster's folder is never touched.
        """
        if not dry_run:
            local_security.prune_stale()
        return []

    def security(self, record: ClusterRecord) -> Security | None:
        """The user's TLS if connect() was given one, else the cluster's own client credentials
        (a tls:// cluster; CredentialsError if they are not on this machine), else None (tcp://)."""
        if self.user_security is not None:
            return self.user_security
        if record.address and record.address.startswith("tls://"):
            return local_security.client_security(record.id)
        return None

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse a spec this machine cannot run before anything starts."""
        spec.require_workers(why="every computation on it would wait forever")
        self.cluster_kwargs(spec, gpus=self._gpus(spec))

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Shut the scheduler down from any process of this user, then remove its credentials.

        Without its credentials a tls:// cluster cannot be told to stop: that is an
        error while something still listens at its address, and nothing to do otherwise.
        """
        if record.address:
            try:
                security = self.security(record)
            except CredentialsError:
                if await _listening(record.address):
                    raise
            else:
                await shutdown_scheduler(record.address, security)
        local_security.remove_local_tls(record.id)

    def _gpus(self, spec: ClusterSpec) -> int:
        gpus = gpu_count()
        if spec.gpu and not gpus:
            raise ProviderError(
                f"gpu={spec.gpu!r} was asked for but NVML reports no GPU on this machine; "
                "drop gpu= to run on CPU workers, or connect to a GPU cluster"
            )
        return gpus

    def cluster_kwargs(self, spec: ClusterSpec, *, gpus: int, security: Security | None = None) -> dict[str, Any]:
        """Arguments for (CUDA)LocalCluster from the spec and cumulo.local.* config.

        ``security``: the TLS the cluster runs with (None: plain tcp://). Workers
        always get the preload that removes provider secrets from their environment.
        """
        if spec.address or spec.instance_type or spec.region:
            raise SpecError("the local provider takes no address, instance_type or region; drop them")
        local_security.check_worker_env(spec.env)
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
        kwargs.update(local_security.worker_scrub_options())
        if security is not None:
            kwargs["security"] = security
            if security.require_encryption:
                kwargs["protocol"] = "tls://"
        return kwargs

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        gpus = self._gpus(spec)
        self.cluster_kwargs(spec, gpus=gpus)  # refuse a bad spec before writing any credentials
        security, own_tls = self.user_security, False
        if security is None and local_security.tls_enabled():
            security, own_tls = local_security.create_local_tls(cluster_id), True
        try:
            cluster = await self._start(self.cluster_kwargs(spec, gpus=gpus, security=security), gpus, checkpoint)
        except BaseException:
            if own_tls:
                local_security.remove_local_tls(cluster_id)
            raise
        return LocalDeployment(cluster.scheduler_address, cluster_id=cluster_id, owns_credentials=own_tls,
                               security=security, dashboard_link=cluster.dashboard_link, manager=cluster)

    async def _start(self, kwargs: dict[str, Any], gpus: int, checkpoint: Checkpoint) -> Any:
        """Start (CUDA)LocalCluster(**kwargs); on timeout or failure stop whatever it spawned."""
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
        checkpoint.launched()

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
        except BaseException as exc:
            task.cancel()
            await _discard(cluster)
            if isinstance(exc, RuntimeError) and "failed to start" in str(exc):
                raise ProviderError(_no_workers_message(exc)) from exc
            raise
        return cluster


def _no_workers_message(exc: BaseException) -> str:
    """What to say when distributed's local worker processes died at start ('Nanny failed to start')."""
    return (
        f"the local cluster's worker processes did not start (dask: {exc}). The worker's own error went to "
        "this process's stderr (in Jupyter, the server's log). Common causes: the main script cannot be re-run "
        f"by dask's {_start_method()!r} start method (keep cumulo.connect() under `if __name__ == \"__main__\":` in a "
        "file, not standard input), too little memory for the memory_limit asked, or a package the workers "
        "import failing there. Try cumulo.connect(workers=1) to see one worker's error alone."
    )
