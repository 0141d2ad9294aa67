"""What a provider reports while it launches or stops a cluster; the lifecycle persists it.

Providers never write the registry's rows. They report billable resources,
the scheduler's address and the price through a :class:`Checkpoint`, as
dask-gateway's backends yield checkpoints that their base class stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import Registry, ResourceRecord

__all__ = ["Checkpoint"]


class Checkpoint:
    """What a provider reports while it launches or stops one cluster; the lifecycle persists it.

    A provider records each billable resource *before* it can bill (``resource``),
    then its state as it changes, and facts of the row it is allowed to set: the
    scheduler's address and the price. ``started`` tells the lifecycle whether
    anything was ever reported, i.e. whether a failed start left anything behind.
    """

    def __init__(self, registry: Registry, cluster_id: str, provider: str) -> None:
        self._registry = registry
        self.cluster_id = cluster_id
        self.provider = provider
        self.started = False

    def resource(self, kind: str, resource_id: str, *, state: str, meta: dict[str, Any] | None = None) -> None:
        """Record a billable thing (an instance, a firewall rule, a process) of this cluster."""
        self.started = True
        self._registry.add_resource(self.cluster_id, self.provider, kind, resource_id, state=state, meta=meta)

    def resource_state(self, resource_id: str, state: str) -> None:
        """A recorded resource changed state (e.g. 'active', 'terminated')."""
        self._registry.update_resource(self.provider, resource_id, state=state)

    def resources(self, kind: str | None = None) -> list[ResourceRecord]:
        """This cluster's recorded resources at this provider (of one kind, when given)."""
        found = self._registry.resources(cluster_id=self.cluster_id, provider=self.provider)
        return [r for r in found if kind is None or r.kind == kind]

    def billing_starts(self, resource_id: str, *, at: float) -> None:
        """An instance added to the running cluster bills from ``at``: its price joins the cluster's rate."""
        self._registry.start_billing(self.provider, resource_id, at=at)

    def billing_stops(self, resource_id: str, *, at: float, state: str) -> None:
        """An instance removed from the running cluster (``state``, e.g. 'terminated') bills no more from ``at``."""
        self._registry.stop_billing(self.provider, resource_id, at=at, state=state)

    def launched(self) -> None:
        """Something that needs stopping now runs (for providers whose processes are not resources)."""
        self.started = True

    def address(self, address: str) -> None:
        """The scheduler's address, known before the cluster is running (so others can reach it)."""
        self._registry.update(self.cluster_id, address=address)

    def rate(self, rate_per_hour: float) -> None:
        """The provider's price for this cluster, recorded before anything bills."""
        self._registry.update(self.cluster_id, rate_per_hour=rate_per_hour)

    def event(self, kind: str, message: str) -> None:
        """A line in the cluster's event log."""
        self._registry.event(self.cluster_id, kind, message)

    @property
    def installation_id(self) -> str:
        """The registry's installation id, which providers put in the names of what they create."""
        return self._registry.installation_id

    @property
    def known(self) -> bool:
        """Whether the registry has a row for this cluster (orphan sweeps reach clusters it never saw)."""
        try:
            self._registry.get(self.cluster_id)
        except KeyError:
            return False
        return True
