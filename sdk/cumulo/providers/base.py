"""The contract every compute backend implements: "give me a scheduler for this spec".

A provider is thin: it turns a ClusterSpec into a running Dask scheduler (and
workers) and knows how to stop them. Everything else (the client, the registry
row, the environment check, the backend switch, widgets, guards) is shared and
lives in cluster.py. Implement:

  - ``Provider.launch(spec, cluster_id=..., registry=...)`` -> Deployment
    Record billable resources in the registry *before* they can bill, and on any
    failure stop what did start before raising.
  - ``Provider.stop(record, registry)``: stop a cluster from any process (the CLI,
    the Jupyter server's reaper) using only what the registry holds. Returns only
    once the provider confirms the resources are gone.
  - ``Provider.security(record)``: the distributed.Security to reach that scheduler.

and get: connect(), re-attach by name, close, `cumulo down`, listing.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from distributed.security import Security

from ..exceptions import NotOwner
from ..registry import ClusterRecord, Registry
from ..spec import ClusterSpec

__all__ = ["Deployment", "Provider", "shutdown_scheduler"]


class Deployment:
    """A running scheduler handed back by a provider, and how to manage it.

    Only the process that launched a cluster holds its Deployment; other
    processes reach the cluster through the registry and Provider.stop.
    """

    #: The provider's price for this deployment in $/hour, when the provider bills (None: no price known).
    rate_per_hour: float | None = None

    def __init__(
        self,
        address: str,
        *,
        security: Security | None = None,
        dashboard_link: str | None = None,
        manager: Any = None,
    ) -> None:
        self.address = address
        self.security = security
        self.dashboard_link = dashboard_link
        #: An object with scale()/adapt() (e.g. a distributed SpecCluster) when the provider has one.
        self.manager = manager

    async def scale(self, n: int) -> None:
        """Ask for ``n`` workers."""
        if self.manager is None:
            raise NotOwner("this cluster was started outside cumulo; scale it where it was started")
        result = self.manager.scale(n)
        if hasattr(result, "__await__"):
            await result

    def adapt(self, minimum: int, maximum: int) -> Any:
        """Let dask's adaptive policy keep between ``minimum`` and ``maximum`` workers."""
        if self.manager is None:
            raise NotOwner("this cluster was started outside cumulo; adapt it where it was started")
        return self.manager.adapt(minimum=minimum, maximum=maximum)

    async def close(self) -> None:
        """Stop everything this deployment started and return once it is confirmed gone."""
        if self.manager is not None:
            result = self.manager.close()
            if hasattr(result, "__await__"):
                await result


class Provider(abc.ABC):
    """A compute backend. Subclasses set ``name`` and implement launch/stop."""

    name: ClassVar[str]
    #: Whether closing a cluster of this provider stops its scheduler (False: cumulo only detaches).
    owns_scheduler: ClassVar[bool] = True
    #: Whether billable resources can outlive an unreachable scheduler (cloud instances). Then a
    #: scheduler that stops answering never closes the registry row: only a confirmed stop does.
    bills_independently: ClassVar[bool] = False

    @abc.abstractmethod
    async def launch(self, spec: ClusterSpec, *, cluster_id: str, registry: Registry) -> Deployment:
        """Start a scheduler and workers for ``spec``; on failure leave nothing running."""

    async def stop(self, record: ClusterRecord, registry: Registry) -> None:
        """Stop a cluster known only from its registry row (from any process)."""
        if record.address:
            await shutdown_scheduler(record.address, self.security(record))

    def security(self, record: ClusterRecord) -> Security | None:
        """How to reach the scheduler of ``record`` (None: plain tcp on loopback)."""
        return None


async def shutdown_scheduler(address: str, security: Security | None, *, timeout: float = 10.0) -> bool:
    """Ask a scheduler to shut down with its workers. Returns False if it was already unreachable."""
    from distributed.core import rpc

    try:
        async with rpc(address, connection_args=(security or Security()).get_connection_args("client"),
                       timeout=timeout) as scheduler:
            await scheduler.terminate()
    except (OSError, TimeoutError):
        return False
    return True
