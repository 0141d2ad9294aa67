"""How a Cluster comes to run: launch or re-attach, probe, record, watch; and how a failed start is undone.

A mixin of :class:`cumulo.cluster.Cluster` (one class, split by idea): this part owns
the order of a start, the provider's launch, the client's connection, the version
probe overlapping the usage ledger's install, the ``running`` row and the
watchdog, and, when anything fails or is interrupted, the cleanup that leaves
nothing running and nothing billed (the lifecycle records failed or stop-failed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import attached
from .clientlink import ClientLink, sizes
from .cost.metering import install_async
from .exceptions import ClusterLost, ClusterNotFound, ConnectError
from .life import watchdog
from .life.checkpoint import Checkpoint
from .life.lifecycle import Lifecycle
from .life.registry import ClusterRecord, Registry

if TYPE_CHECKING:
    from distributed import Client
    from distributed.security import Security

    from .providers import Deployment, Provider
    from .spec import ClusterSpec

__all__ = ["Starting"]

logger = logging.getLogger("cumulo")


class Starting:
    """The start path of a Cluster; the attributes named below are the Cluster's own."""

    spec: ClusterSpec
    registry: Registry
    lifecycle: Lifecycle
    watchdog: watchdog.Watchdog | None
    status: str
    name: str
    id: str
    address: str | None
    _provider: Provider
    _record: ClusterRecord | None
    _security: Security | None
    _deployment: Deployment | None
    _link: ClientLink

    # properties of the Cluster, named here for the reader (annotations only: the Cluster's win)
    client: Client | None
    backend: str
    dashboard_link: str | None
    direct_dashboard_link: str | None

    async def _start(self) -> None:
        self.status = "starting"
        if self._record is not None:
            await self._attach(self._record)
            return
        await self._provider.preflight(self.spec)  # refusals leave no row behind
        record = self.lifecycle.begin(
            self.name,
            self._provider,
            self.spec.stored() | {"name": self.name},
            budget=self.spec.budget,
            idle_timeout=self.spec.idle_timeout,
        )
        self.id = record.id
        self._record = record
        checkpoint = self.lifecycle.checkpoint(record, self._provider)
        try:
            self._deployment = await self._provider.launch(self.spec, cluster_id=record.id, checkpoint=checkpoint)
            client = await self._link.connect(self._deployment.address, self._deployment.security)
            if self._deployment.local_wheels:
                from .envsync import ship_wheels  # heavy (builds wheels): only workers that lack local code

                await ship_wheels(client, self._deployment.local_wheels, self._deployment.local_digest)
            installed = await self._describe_and_meter()
            await self._mark_running(installed)
        except BaseException as exc:  # including a Ctrl-C that lands after the launch succeeded
            await self._abandon(exc, checkpoint)
            raise

    async def _attach(self, record: ClusterRecord) -> None:
        self.id = record.id
        if not record.address:
            raise ConnectError(f"cluster {record.name!r} is still starting; try again in a moment")
        try:
            await self._link.connect(record.address, self._security)
            await self._link.describe()
        except ConnectError as exc:
            self.status = "failed"
            await self._link.close()
            if self._provider.lives_in_owner_process and record.owner_alive() is False:
                # such a cluster lives in its owner's process: with the owner gone, nothing runs
                self.lifecycle.lost(record, self._provider, f"owner process {record.owner_pid} exited")
                raise ClusterNotFound(
                    f"cluster {record.name!r} stopped with the process that started it (pid {record.owner_pid}); "
                    f"start a new one with cumulo.connect({record.provider!r}, name={record.name!r})."
                ) from exc
            raise ConnectError(
                f"cluster {record.name!r} is registered as running at {record.address} but does not answer: "
                f"{exc} It may still be running"
                + (" and billing" if self._provider.bills_independently else "")
                + f"; try again, or stop it with `cumulo down {record.name}`."
            ) from exc
        except BaseException:
            await self._link.close()
            self.status = "failed"
            raise
        await self._mark_running()

    async def _describe_and_meter(self) -> bool:
        """The version probe and the usage ledger's install: independent round trips, in flight together.

        Returns whether the ledger is installed. A refused environment cancels the install:
        the cluster is being abandoned anyway.
        """
        assert self.client is not None
        installing = asyncio.ensure_future(install_async(self.client))
        try:
            await self._link.describe()
        except BaseException:
            installing.cancel()
            raise
        return await installing

    async def _mark_running(self, installed: bool | None = None) -> None:
        """Record the running cluster; ``installed``: the ledger's install already done (None: do it now)."""
        facts = self._link.facts
        assert self.client is not None
        ident = await self.client.scheduler.identity()
        self.address = self.client.scheduler.address
        values: dict[str, Any] = {
            "address": self.address,
            "dashboard": self.direct_dashboard_link,  # the server's route is derived from the name
            **sizes(ident),
            "gpus": facts.gpus if facts else 0,
            "gpu_model": facts.gpu_model if facts else None,
            "backend": self.backend,
        }
        if self._deployment is not None and self._deployment.rate_per_hour is not None:
            values["rate_per_hour"] = self._deployment.rate_per_hour
        await self._provider.running(self.client, self.spec)  # e.g. AWS's forwarded credentials
        if not self.lifecycle.running(self.id, **values):
            rec = self.registry.get(self.id)
            raise ClusterLost(f"cluster {self.name!r} was stopped while it started ({rec.state}: {rec.note})")
        self.status = "running"
        attached.make_current(self)
        await self._watch(installed)

    async def _watch(self, installed: bool | None) -> None:
        """Install the usage ledger, set the kernel lease, start the watchdog (cumulo.life.watchdog)."""
        try:
            self.watchdog = await watchdog.attach(self, self._provider, installed=installed)
        except Exception as exc:  # metering must never make a working cluster unusable
            logger.warning("cumulo: cost tracking for %r is off: %s", self.name, exc)

    async def _abandon(self, exc: BaseException, checkpoint: Checkpoint) -> None:
        """A start failed: stop whatever started; the lifecycle records failed, stop-failed or nothing."""
        attached.forget(self)
        if self.watchdog is not None:
            self.watchdog.stop()
        self.status = "failed"
        await self._link.close()
        assert self._record is not None
        await self.lifecycle.abandon(self._record, self._provider, exc, deployment=self._deployment,
                                     checkpoint=checkpoint)
        self._link.restore_backend()
