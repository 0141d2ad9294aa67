"""What the code that watches a cluster needs of it: a small public surface that :class:`~cumulo.cluster.Cluster` implements.

Three things run beside a cluster in the kernel that holds it and act on it:
``cluster.usage`` (:class:`cumulo.cost.metering.Usage`) reads its ledger and row, the
live cost meter (:mod:`cumulo.widgets.meter`) draws them on the cluster's loop,
and the watchdog (:mod:`cumulo.life.watchdog`) enforces the lease, budget and idle
rules. They reach the cluster only through these protocols, never through its
private members: the cluster can change inside without breaking them, and a
test (or a cluster seen only through its registry row) can stand in for it.

Each protocol adds to the one before::

    Measured   what Usage reads: id, status, client, registry, record
    Metered    + what the meter shows: name, loop, budget, usage
    Watched    + what the watchdog needs to act: lifecycle, spec, sync, and
               let_go / stop_for / scale_to / replace_lost, run on the cluster's loop
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from distributed import Client

    from ..cost.metering import Usage
    from ..spec import ClusterSpec
    from .lifecycle import Lifecycle
    from .registry import ClusterRecord, Registry

__all__ = ["Measured", "Metered", "Watched"]


@runtime_checkable
class Measured(Protocol):
    """What :class:`cumulo.cost.metering.Usage` reads of a cluster: its row and, while it runs, its client."""

    @property
    def id(self) -> str:
        """The registry row's id ("" before the row exists)."""
        ...

    @property
    def status(self) -> str:
        """'running' while the scheduler may be asked; anything else means: read the row, not the client."""
        ...

    @property
    def client(self) -> Client | None:
        """The client attached to the scheduler (None when there is none)."""
        ...

    @property
    def registry(self) -> Registry | None:
        """Where the row lives, to read it afresh (None: use ``record`` as it is)."""
        ...

    @property
    def record(self) -> ClusterRecord | None:
        """The cluster's registry row as last read (None before it was created)."""
        ...


@runtime_checkable
class Metered(Measured, Protocol):
    """What the live cost meter shows of a cluster, and the loop its refresh runs on."""

    @property
    def name(self) -> str:
        """The cluster's name."""
        ...

    @property
    def loop(self) -> Any:
        """The event loop the cluster's client runs on (a tornado IOLoop)."""
        ...

    @property
    def budget(self) -> float | None:
        """The spending limit in dollars, or None."""
        ...

    @property
    def usage(self) -> Usage:
        """What the cluster used and cost (``cluster.usage``)."""
        ...


@runtime_checkable
class Watched(Metered, Protocol):
    """What the watchdog reads of a cluster and the things it may do to it, on the cluster's loop."""

    @property
    def lifecycle(self) -> Lifecycle:
        """The one writer of the cluster's row."""
        ...

    @property
    def spec(self) -> ClusterSpec:
        """What was asked for (``options["keep_alive"]`` among it)."""
        ...

    def sync(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a coroutine function on the cluster's loop from outside it (distributed's SyncMethodMixin)."""
        ...

    async def let_go(self, record: ClusterRecord) -> None:
        """Another process stopped the cluster (``record`` says who): let go of it without stopping anything."""
        ...

    async def stop_for(self, why: str, *, from_loop: bool = False) -> None:
        """Stop the cluster for ``why`` (a guard's verdict), as close() does; ``from_loop``: called by a
        periodic callback on the cluster's own loop."""
        ...

    async def scale_to(self, n: int) -> None:
        """Ask for ``n`` workers (NotOwner when this process did not start the cluster)."""
        ...

    def replace_lost(self) -> str:
        """Start replacing the instances the cloud took back, where this process can; the sentence that tells
        the user what happens (run on the cluster's loop)."""
        ...
