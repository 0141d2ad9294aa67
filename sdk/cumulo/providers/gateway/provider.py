"""A team's dask-gateway as a cumulo provider: ``cumulo.connect("gateway://host:port", workers=2)``.

The gateway runs the scheduler and workers; cumulo asks it for a cluster with
the gateway's own options (``options={...}``), scales it, and hands the Cluster
its scheduler address (``gateway://host:port/<name>``, through the gateway's
proxy) with the cluster's TLS credentials. The gateway cluster is a recorded
resource from the moment the gateway names it, so ``stop`` works from any
process with only the registry row, and a row closes only once the gateway
confirms the cluster is gone.

Flags: the gateway, not the kernel, runs the cluster (``lives_in_owner_process``
False); it holds workers until told otherwise even when its scheduler stops
answering (``bills_independently``, so a lost scheduler never closes the row);
scale and adapt go to the gateway (``can_scale``); the Jupyter server can launch
one (``launchable_from_server``). ``owns_scheduler`` stays True for every
instance: cumulo created the cluster, so the lease, budget, idle timeout,
``cumulo down`` and the server's Stop always shut it down. The one exception is
``cumulo.gateway.shutdown-on-close: false``, which only the kernel's own
``cluster.close()`` (and its exit) honours, by detaching: see GatewayDeployment.close.
No orphan sweep: gateway clusters carry no tag, so cumulo cannot tell a cluster
it lost track of from the user's own dask-gateway clusters (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from distributed.security import Security

from ... import config
from ...exceptions import ConnectError, ConnectTimeout, LaunchTimeout, ProviderError, SpecError, TerminateError
from ...life.lifecycle import BY_KERNEL
from ...life.registry import ClusterRecord
from ...spec import ClusterSpec
from ..base import Deployment, Provider, Say
from . import api, server_gateway, tls

if TYPE_CHECKING:
    from ...life.checkpoint import Checkpoint

__all__ = ["GatewayDeployment", "GatewayProvider"]

logger = logging.getLogger("cumulo.gateway")

#: Spec fields the gateway decides through its own cluster options instead.
_NOT_HERE = ("threads_per_worker", "memory_limit", "gpu", "gpus_per_worker", "instance_type", "region", "image",
             "spot", "env", "environment")


class GatewayDeployment(Deployment):
    """A gateway cluster held by the process that created it; ``manager`` is the dask_gateway.GatewayCluster."""

    def __init__(self, cluster: Any, *, provider: GatewayProvider, target: api.Target, checkpoint: Checkpoint,
                 security: Security, rate_per_hour: float | None) -> None:
        super().__init__(cluster.scheduler_address, security=security, dashboard_link=cluster.dashboard_link,
                         manager=cluster)
        self.rate_per_hour = rate_per_hour
        self.name: str = cluster.name
        self._provider = provider
        self._target = target
        self._checkpoint = checkpoint
        self._loop = asyncio.get_running_loop()
        self._released = False

    async def _request(self, awaitable: Any, doing: str) -> Any:
        """One request through the GatewayCluster's own client; its session is closed again afterwards."""
        try:
            return await api.call(awaitable, self._target, doing, auth=self.manager.gateway.auth)
        finally:
            with contextlib.suppress(Exception):
                await self.manager.gateway.close()

    async def scale(self, n: int) -> None:
        """Ask the gateway for ``n`` workers (it may cap them, with a GatewayWarning saying so)."""
        await self._request(self.manager.scale(n), f"scaling cluster {self.name} to {n} workers")

    def adapt(self, minimum: int, maximum: int) -> Any:
        """Let the gateway's adaptive scaling keep between ``minimum`` and ``maximum`` workers.

        From the cluster's own loop this returns a task; from any other thread it
        waits for the gateway's answer.
        """
        coro = self._request(self.manager.adapt(minimum=minimum, maximum=maximum),
                             f"making cluster {self.name} adaptive ({minimum}-{maximum} workers)")
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return asyncio.ensure_future(coro)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def release(self) -> None:
        """Close this process's links to the cluster (its scheduler comm and HTTP session), bounded."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.manager.close(shutdown=False), 10)

    async def close(self) -> None:
        """Stop the gateway cluster and return once the gateway confirms it (TerminateError otherwise).

        With ``cumulo.gateway.shutdown-on-close: false`` (read now), a close by the
        kernel's own hand only detaches: the gateway cluster keeps running, its
        resource is recorded as detached, and the registry row closes. Any other
        close (budget, idle timeout, a failed start) shuts it down regardless.
        """
        # only the user's own close detaches; guards, failed starts, `cumulo down` always shut it down
        detach = not config.get("gateway.shutdown-on-close") and self.stop_reason == BY_KERNEL
        await self.release()
        if detach:
            self._checkpoint.resource_state(self.name, "detached")
            self._checkpoint.event("detached", f"gateway cluster {self.name} left running at {self._target.address} "
                                   "(cumulo.gateway.shutdown-on-close is false); stop it through the gateway")
            return
        await self._provider.stop_clusters(self._target, self._checkpoint)


class GatewayProvider(Provider):
    """Clusters from a dask-gateway server; see the module docstring and docs/gateway.md."""

    name = "gateway"
    lives_in_owner_process = False
    launchable_from_server = True
    owns_scheduler = True
    bills_independently = True
    can_scale = True
    sweeps_orphans = False
    takes_own_options = True  # connect("gateway://...", worker_cores=2): the gateway's own cluster options
    proxies_dashboard = True  # the gateway serves each cluster's dashboard behind its own login

    @classmethod
    def check_server_target(cls, address: str) -> None:
        """The server launches only on its own gateway (server_gateway.py): its credentials go nowhere else."""
        server_gateway.check_same(address, what="launches clusters only on")

    def _say(self, message: str) -> None:
        Say(self.progress, logger=logger)(message)  # log and callback only, as before: no stderr echo

    async def preflight(self, spec: ClusterSpec) -> None:
        """Refuse what cannot work before anything starts: a bad or unencrypted remote address, refused
        credentials, a gateway that does not answer, spec fields the gateway decides, unknown options.

        Without an address, dask-gateway's own ``gateway.address`` config is used and
        written into the spec, so that every later stop finds the same gateway.
        """
        api.dask_gateway()
        if spec.address is None:
            spec.address = api.target_from_dask_config().address
        target = api.target_of(spec.address)
        api.check_transport(target, self.allow_insecure)
        async with api.session(target) as gateway:
            accepted = await gateway.option_names()
        offered = f"the dask-gateway at {target.address} accepts options={{...}} with: {', '.join(accepted) or 'none'}"
        # environment="none" (the workers' image as it is) is what a gateway gives anyway
        fields = [f for f in _NOT_HERE if getattr(spec, f, None) not in (None, False, {}, "none")]
        if fields:
            raise SpecError(f"a gateway sizes its workers with its own cluster options, so {', '.join(fields)} "
                            f"cannot be used here; drop them and pass options={{...}} instead: {offered}")
        unknown = sorted(set(api.gateway_options(spec.options)) - set(accepted))
        if unknown:
            raise SpecError(f"unknown gateway option(s) {', '.join(unknown)}: {offered}")

    async def launch(self, spec: ClusterSpec, *, cluster_id: str, checkpoint: Checkpoint) -> Deployment:
        """Create the gateway cluster, record it, wait for it and its workers; on any failure stop it first."""
        assert spec.address is not None  # preflight resolved it
        target = api.target_of(spec.address)
        rate = config.get("gateway.rate-per-hour")
        if rate is not None:
            checkpoint.rate(float(rate))
        deadline = asyncio.get_running_loop().time() + api.timeout()
        async with api.session(target) as gateway:
            self._say(f"asking the dask-gateway at {target.address} for a cluster")
            name = await gateway.submit(api.gateway_options(spec.options))
            checkpoint.resource(api.KIND, name, state="pending", meta={"gateway": target.address})
            checkpoint.event("gateway", f"the dask-gateway at {target.address} created cluster {name}")
            cluster = None
            try:
                cluster = gateway.gateway.connect(name, shutdown_on_close=False)
                await self._start(gateway, cluster, spec.workers, deadline)
                tls.save(cluster_id, cluster.security.tls_cert, cluster.security.tls_key)
                security = tls.security_of(cluster.security.tls_cert, cluster.security.tls_key)
            except BaseException as exc:
                await asyncio.shield(self._discard(gateway, name, cluster, checkpoint, exc))
                raise
        checkpoint.resource_state(name, "running")
        checkpoint.event("gateway", f"gateway cluster {name} running at {cluster.scheduler_address}")
        return GatewayDeployment(cluster, provider=self, target=target, checkpoint=checkpoint, security=security,
                                 rate_per_hour=None if rate is None else float(rate))

    async def _start(self, gateway: api.Api, cluster: Any, workers: int | None, deadline: float) -> None:
        """Wait (until ``deadline``) for the gateway to start ``cluster``, then for ``workers`` to join."""
        loop = asyncio.get_running_loop()
        name, limit = cluster.name, api.timeout()

        async def started() -> None:
            await cluster

        async def joined(n: int) -> None:
            while len((await cluster.scheduler_comm.identity()).get("workers", {})) < n:
                await asyncio.sleep(0.2)

        try:
            self._say(f"waiting for gateway cluster {name} to start")
            await gateway.call(started(), f"starting cluster {name}", seconds=max(deadline - loop.time(), 1.0))
            if workers is not None:
                await gateway.call(cluster.scale(workers), f"scaling cluster {name} to {workers} workers")
                self._say(f"waiting for {workers} worker(s) of gateway cluster {name}")
                await gateway.call(joined(workers), f"waiting for the workers of cluster {name}",
                                   seconds=max(deadline - loop.time(), 1.0))
        except ConnectTimeout:
            raise LaunchTimeout(
                f"gateway cluster {name} and its {workers or 0} worker(s) were not ready within {limit:g}s (the "
                "gateway may be short of capacity, or cap workers per cluster: see its warning, if any); raise "
                "cumulo.gateway.timeout or ask for fewer workers") from None
        finally:
            with contextlib.suppress(Exception):
                await cluster.gateway.close()  # reopened on the next request (scale, adapt)

    async def _discard(self, gateway: api.Api, name: str, cluster: Any, checkpoint: Checkpoint,
                       error: BaseException) -> None:
        """A launch failed after the gateway created ``name``: stop it (confirmed) or raise TerminateError."""
        self._say(f"the launch failed ({type(error).__name__}); stopping gateway cluster {name}")
        if cluster is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cluster.close(shutdown=False), 10)
        try:
            said = await gateway.stop_confirmed(name, deadline=asyncio.get_running_loop().time() + api.timeout())
        except Exception as cleanup:
            raise TerminateError(
                f"the launch failed ({type(error).__name__}: {error}) and stopping gateway cluster {name} failed "
                f"too ({cleanup}); it may still be running (and billing): run `cumulo down` or `cumulo reap`"
            ) from error
        checkpoint.resource_state(name, "stopped")
        checkpoint.event("gateway", f"gateway cluster {name} stopped after the failed launch ({said})")
        tls.remove(checkpoint.cluster_id)

    async def stop(self, record: ClusterRecord, checkpoint: Checkpoint) -> None:
        """Stop the cluster's gateway clusters from any process, using only the row and its resources."""
        address = record.spec.get("address")
        if not address:
            raise TerminateError(f"cluster {record.name!r} has no gateway address in its registry row; stop its "
                                 "gateway cluster through the gateway")
        await self.stop_clusters(api.target_of(address), checkpoint)

    async def stop_clusters(self, target: api.Target, checkpoint: Checkpoint) -> None:
        """Stop every recorded, not yet stopped gateway cluster of ``checkpoint``'s cluster, confirmed, then
        remove its credentials. TerminateError (or CredentialsError) when the gateway cannot confirm."""
        names = [r.resource_id for r in checkpoint.resources(api.KIND) if r.state != "stopped"]
        if names:
            deadline = asyncio.get_running_loop().time() + api.timeout()
            try:
                async with api.session(target) as gateway:
                    for name in names:
                        checkpoint.resource_state(name, "stopping")
                        said = await gateway.stop_confirmed(name, deadline=deadline)
                        checkpoint.resource_state(name, "stopped")
                        checkpoint.event("gateway", f"the dask-gateway at {target.address} confirmed that cluster "
                                         f"{name} is {said}")
            except (ConnectError, ProviderError) as exc:
                if isinstance(exc, TerminateError):
                    raise
                raise TerminateError(
                    f"could not confirm that gateway cluster {', '.join(names)} stopped: {exc}. It may still be "
                    "running (and billing): retry `cumulo down` once the gateway answers") from None
        tls.remove(checkpoint.cluster_id)

    def security(self, record: ClusterRecord) -> Security | None:
        """TLS to the gateway cluster of ``record``: the user's if given to connect(), else the credentials
        saved at launch, else (another machine, files removed) those the gateway gives its owner.

        Also registers distributed's ``gateway://`` comm, which the client needs to connect.
        """
        if self.user_security is not None:
            return self.user_security
        api.dask_gateway()
        pair = tls.load(record.id) or tls.from_gateway(record)
        return tls.security_of(*pair)
