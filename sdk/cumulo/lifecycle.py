"""The one owner of a cluster row's state: every start, stop, loss and reap goes through here.

States and the moves between them (anything else is refused)::

                 +-----------------------------------------------+
                 |                                               v
    starting --> running --> closing --> closed             (final states:
       |            |  ^        |   \\                        closed, failed, lost)
       |            |  |        |    +--> lost
       |            |  +--------+ (stop of a scheduler we do not own failed: still running)
       |            +--> lost   (nothing bills independently, and the scheduler is gone)
       |                        v
       +--> failed       stop-failed  <--+   open: "cleanup failed, resources may still bill";
       |    (start failed,   |  |        |   shown everywhere with a Stop button and
       |     nothing bills)  |  +--> closing (retried by every reaper, `cumulo down`, Stop)
       +--> stop-failed -----+
            (start failed and so did its cleanup)

A row closes (``closed``/``failed``/``lost``) only after the provider confirms
that nothing bills; a cleanup that raised leaves it ``stop-failed``. The first
final state sticks: another process may have closed the row meanwhile.

Providers never write rows. While they launch or stop they report through a
:class:`Checkpoint` (billable resources, the scheduler's address, the price),
which the lifecycle persists, as dask-gateway's backends yield checkpoints that
their base class stores.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .exceptions import CumuloError

if TYPE_CHECKING:
    from .providers.base import Deployment, Provider
    from .registry import ClusterRecord, Registry, ResourceRecord

__all__ = ["Checkpoint", "FINAL", "Lifecycle", "OPEN", "State", "TRANSITIONS"]

logger = logging.getLogger("cumulo")


class State(str, enum.Enum):
    """A cluster row's state. A ``str`` so that it is stored and compared as its value."""

    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    STOP_FAILED = "stop-failed"
    CLOSED = "closed"
    FAILED = "failed"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value

    @property
    def is_open(self) -> bool:
        """Whether something may still run (and bill) for a row in this state."""
        return self in OPEN

    @property
    def label(self) -> str:
        """How the state reads to a user (the one that matters says it may bill)."""
        return "stop failed: may still bill" if self is State.STOP_FAILED else self.value


#: States in which resources may still run and bill.
OPEN = frozenset({State.STARTING, State.RUNNING, State.CLOSING, State.STOP_FAILED})
#: States that are never left: nothing runs or bills.
FINAL = frozenset({State.CLOSED, State.FAILED, State.LOST})

#: Which state may follow which.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.STARTING: frozenset({State.RUNNING, State.CLOSING, State.FAILED, State.STOP_FAILED, State.LOST}),
    State.RUNNING: frozenset({State.CLOSING, State.LOST, State.STOP_FAILED}),
    State.CLOSING: frozenset({State.CLOSED, State.FAILED, State.LOST, State.STOP_FAILED, State.RUNNING}),
    State.STOP_FAILED: frozenset({State.CLOSING, State.CLOSED, State.FAILED, State.LOST}),
    State.CLOSED: frozenset(),
    State.FAILED: frozenset(),
    State.LOST: frozenset(),
}


def allowed_from(to: State) -> frozenset[State]:
    """The states from which ``to`` may be entered."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if to in nxt)


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


class Lifecycle:
    """Start, run, stop and lose clusters in one registry: the only code that writes a row's state."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- start ------------------------------------------------------------------------------

    def begin(self, name: str, provider: Provider, spec: dict[str, Any], **values: Any) -> ClusterRecord:
        """A new row, ``starting``, owned by this process (SpecError if an open row has the name)."""
        return self.registry.create(name, provider.name, spec, state=State.STARTING.value, **values)

    def checkpoint(self, record: ClusterRecord | str, provider: Provider | str) -> Checkpoint:
        """The checkpoint through which ``provider`` reports on this cluster."""
        cid = record if isinstance(record, str) else record.id
        return Checkpoint(self.registry, cid, provider if isinstance(provider, str) else provider.name)

    def running(self, cluster_id: str, **facts: Any) -> bool:
        """The cluster answers: record ``running`` and its facts. False if it was closed meanwhile.

        A re-attach to a row that already runs only refreshes its facts.
        """
        if self._move(cluster_id, State.RUNNING, facts=facts, event=None):
            return True
        if State(self.registry.get(cluster_id).state) is State.RUNNING:
            if facts:
                self.registry.update(cluster_id, **facts)
            return True
        return False

    def discard(self, cluster_id: str) -> None:
        """A start refused before anything launched: the row never described anything, remove it."""
        self.registry.discard(cluster_id)

    async def abandon(
        self,
        record: ClusterRecord,
        provider: Provider,
        error: BaseException,
        *,
        deployment: Deployment | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """A start failed: stop what it started, then ``failed`` (nothing bills) or ``stop-failed``.

        A start that reported nothing (refused before launching) leaves no row at all.
        """
        note = str(error) if isinstance(error, CumuloError) else f"{type(error).__name__}: {error}"
        started = deployment is not None or (checkpoint is not None and checkpoint.started)
        try:
            if deployment is not None:
                await deployment.close()
            elif started and provider.owns_scheduler:
                await provider.stop(self.registry.get(record.id), self.checkpoint(record, provider))
        except BaseException as cleanup:
            logger.exception("cleanup after a failed start of %r also failed", record.name)
            self._move(record.id, State.STOP_FAILED, note=_cleanup_note(note, cleanup))
            return
        if not started:
            self.discard(record.id)
            return
        self._move(record.id, State.FAILED, note=note)

    # -- stop -------------------------------------------------------------------------------

    async def stop(
        self,
        record: ClusterRecord,
        provider: Provider,
        *,
        why: str,
        deployment: Deployment | None = None,
        final: State = State.CLOSED,
    ) -> None:
        """Stop a cluster and close its row once the provider confirms nothing bills.

        ``deployment``: the owner's handle (its close() stops what it started);
        otherwise the provider stops the cluster from its row alone. A provider
        that does not own the scheduler is only detached from. On failure the row
        is ``stop-failed`` (it may still bill) unless the scheduler is not ours,
        and the error is raised.
        """
        self._move(record.id, State.CLOSING, event=None)
        try:
            if deployment is not None:
                await deployment.close()
            elif provider.owns_scheduler:
                await provider.stop(self.registry.get(record.id), self.checkpoint(record, provider))
        except BaseException as exc:
            message = f"{why}: stopping failed ({type(exc).__name__}: {exc})"
            if provider.owns_scheduler:
                self._move(record.id, State.STOP_FAILED, note=message)
            else:
                self._move(record.id, State.RUNNING, note=None, event=("stop-failed", message))
            raise
        if not provider.owns_scheduler:
            why = f"{why}; detached, the scheduler was started outside cumulo"
        self._move(record.id, final, note=why)

    def closed(self, cluster_id: str, *, note: str | None = None, state: State = State.CLOSED) -> bool:
        """Record that a cluster's resources are confirmed gone (for code that stopped it itself).

        Returns False when the row had already reached a final state (the first one sticks).
        """
        if state not in FINAL:
            raise ValueError(f"state must be one of {sorted(s.value for s in FINAL)}")
        if self._move(cluster_id, State.CLOSING, event=None) or State(self.registry.get(cluster_id).state).is_open:
            return self._move(cluster_id, state, note=note)
        return False

    def lost(self, record: ClusterRecord, provider: Provider, why: str) -> bool:
        """The scheduler stopped answering. Close the row as ``lost`` unless resources bill on their own.

        Returns whether the row was closed; a billing cluster stays open (an event
        says so) until a confirmed stop.
        """
        if provider.bills_independently:
            self.registry.event(record.id, "scheduler-lost", f"{why}; its instances may still bill")
            return False
        return self._move(record.id, State.LOST, note=why)

    def stopped_elsewhere(self, cluster_id: str) -> ClusterRecord | None:
        """The row if another process has closed (or is closing) this cluster, else None."""
        rec = self.registry.get(cluster_id)
        return rec if State(rec.state) is not State.RUNNING else None

    # -- the one writer ---------------------------------------------------------------------

    def _move(
        self,
        cluster_id: str,
        to: State,
        *,
        note: str | None = None,
        facts: Mapping[str, Any] | None = None,
        event: tuple[str, str] | None | bool = True,
    ) -> bool:
        """Enter ``to`` if the transition table allows it from the row's current state."""
        ev: tuple[str, str] | None
        if event is True:
            ev = (to.value, note or to.value)
        else:
            ev = event or None
        return self.registry.transition(
            cluster_id, to.value, allowed_from=[s.value for s in allowed_from(to)], final=to in FINAL,
            note=note, values=dict(facts or {}), event=ev)


def _cleanup_note(error: str, cleanup: BaseException) -> str:
    return (f"the start failed ({error}) and so did cleaning up ({type(cleanup).__name__}: {cleanup}); "
            "its resources may still bill: retry with `cumulo down NAME` or `cumulo reap`")[:1000]
