"""What one cloud implements for the cloud layer: a small adapter over its API, and the values it speaks in.

The layer (launch.py, teardown.py, orphans.py, provider.py) drives every cloud
the same way and never the reverse: it asks the adapter to create, list,
describe and terminate instances, to open and remove one firewall rule, to add
and remove one SSH key, and to mark and recognise **this installation's**
resources. Lambda marks them by name (it has no tags); a cloud with tags or
labels would put the :class:`Mark` there and read it back in :meth:`owner`.

Statuses are the layer's words (:data:`BOOTING`, :data:`ACTIVE`, ...): the
adapter maps its cloud's own to them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["ACTIVE", "BOOTING", "FAILED_BOOT", "GONE", "TAKEN_BACK", "CloudAdapter", "Instance", "Mark", "Resource"]

BOOTING = "booting"
ACTIVE = "active"
#: Statuses of an instance the cloud took back without being asked (Lambda's ``preempted``): it no longer bills.
TAKEN_BACK = frozenset({"preempted"})
#: Statuses that no longer bill.
GONE = frozenset({"terminated"}) | TAKEN_BACK
#: Statuses that end a launch: the instance will never become active (reported at once, not at the boot timeout).
FAILED_BOOT = ("unhealthy", "terminating", "terminated", *sorted(TAKEN_BACK))


@dataclass(frozen=True)
class Mark:
    """Whose a resource is: the installation (a registry's id; None for cumulo's names from before
    installation ids), the cluster id (None when cumulo's but unreadable), and its role ("head",
    "worker-<n>", "" for a cluster's key, "scheduler-tls" for its firewall rule)."""

    installation: str | None
    cluster_id: str | None
    role: str = ""


@dataclass(frozen=True)
class Instance:
    """One instance as the cloud lists it, in the layer's words."""

    id: str
    name: str
    status: str
    ip: str | None = None
    private_ip: str | None = None
    instance_type: str | None = None
    region: str | None = None
    price_per_hour: float | None = None
    #: The cloud's tags or labels, for adapters that mark resources with them.
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resource:
    """A firewall rule or SSH key of the account: its id, its name (description), and a line about it."""

    id: str
    name: str
    detail: str = ""
    labels: tuple[tuple[str, str], ...] = ()


class CloudAdapter(abc.ABC):
    """One cloud's API as the layer needs it. Used as an async context manager (closes its client)."""

    #: The registry's provider name (resources are recorded under it).
    provider: ClassVar[str]
    #: The cloud as messages name it ("Lambda": "terminate them in Lambda's dashboard").
    title: ClassVar[str]
    #: One create() may launch many instances (``count``): the workers go in one request, marked "workers".
    batch_launch: ClassVar[bool] = False
    #: The command that powers an instance off, for clouds where that ends its bill (bootstrap.py's
    #: ``power_off``: an idle head or an orphaned worker ends itself); None: instances never do.
    power_off: ClassVar[str | None] = None
    #: The source of the cloud's ``instance_id()`` and ``notice()`` (standard library only), run on instances
    #: by the shared watcher (notice_watch.py) to retire a worker the cloud takes back; None: no notices.
    notice: ClassVar[str | None] = None

    async def __aenter__(self) -> CloudAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the API client."""

    @property
    def api_url(self) -> str:
        """The API's base URL: the firewall source is this machine's address towards it (network.py)."""
        raise NotImplementedError

    def prepare(self, plan: Plan) -> None:
        """Take in the plan a launch is about to carry out (a cloud whose calls are regional learns its region)."""

    def launch_meta(self, instance_id: str) -> dict[str, Any]:
        """What the adapter knows of an instance it just created beyond the plan (zone, market, the $/h it
        bills at as ``price_per_hour``), recorded with it; {} when the plan says it all."""
        return {}

    # -- ownership markers ---------------------------------------------------------------------

    @abc.abstractmethod
    def name(self, mark: Mark) -> str:
        """The name the resource with this mark is given (and recorded under before it is requested)."""

    @abc.abstractmethod
    def owner(self, item: Instance | Resource) -> Mark | None:
        """The mark a resource carries (in its name, or its labels); None when cumulo did not make it."""

    # -- instances -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, mark: Mark, *, plan: Plan, ssh_key: str, user_data: str, count: int = 1) -> list[str]:
        """Launch ``count`` instances (1 unless ``batch_launch``) carrying ``mark``; their ids. A request that
        may have applied raises a ProviderError with ``maybe_applied`` set: the layer then adopts what carries
        the mark."""

    @abc.abstractmethod
    async def instances(self) -> list[Instance]:
        """Every instance of the account that the cloud still lists, whatever its status."""

    async def instance(self, instance_id: str) -> Instance | None:
        """One instance by id; None when the cloud no longer knows it."""
        for inst in await self.instances():
            if inst.id == instance_id:
                return inst
        return None

    @abc.abstractmethod
    async def terminate(self, instance_ids: list[str]) -> None:
        """Ask the cloud to terminate these instances (all listed as not terminated); safe to repeat."""

    # -- network rule and SSH key --------------------------------------------------------------

    @abc.abstractmethod
    async def open_port(self, name: str, *, port: int, source: str) -> None:
        """Admit tcp/``port`` from ``source`` (a CIDR) only, as a rule called ``name``."""

    @abc.abstractmethod
    async def rules(self) -> list[Resource]:
        """The account's firewall rules (name: the rule's description)."""

    @abc.abstractmethod
    async def remove_rules(self, names: Iterable[str]) -> int:
        """Remove the rules with these names; how many were removed."""

    @abc.abstractmethod
    async def add_ssh_key(self, name: str, public_key: str) -> str | None:
        """Register a public key under ``name``; its id at the cloud, if it has one."""

    def knows_ssh_key(self, name: str, public_key: str) -> None:
        """The key a launch registered (``add_ssh_key``) through an earlier adapter of the same cluster, for a
        later create (a scale-up, a replacement): nothing to do where the cloud keeps keys at the account; a
        cloud that gives each instance the public key itself (Azure) keeps it here."""

    @abc.abstractmethod
    async def ssh_keys(self) -> list[Resource]:
        """The account's SSH keys."""

    @abc.abstractmethod
    async def remove_ssh_keys(self, names: Iterable[str]) -> int:
        """Delete the SSH keys with these names; how many were deleted."""
