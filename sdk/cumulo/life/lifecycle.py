"""The one owner of a cluster row's state: every start, stop, loss and reap goes through here.

The states and the table of allowed moves are drawn in :mod:`cumulo.life.states`.

A row closes (``closed``/``failed``/``lost``) only after the provider confirms
that nothing bills; a cleanup that raised leaves it ``stop-failed``. The first
final state sticks: another process may have closed the row meanwhile.

Providers never write rows. While they launch or stop they report through a
:class:`~cumulo.life.checkpoint.Checkpoint` (billable resources, the scheduler's
address, the price), which the lifecycle persists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import CumuloError
from .checkpoint import Checkpoint
from .states import FINAL, OPEN, TRANSITIONS, State, allowed_from

if TYPE_CHECKING:
    from ..cost.metering import Spend
    from ..providers.base import Deployment, Provider
    from .registry import ClusterRecord, Registry

__all__ = ["Checkpoint", "FINAL", "Lifecycle", "OPEN", "State", "TRANSITIONS"]

#: The reason a kernel gives when its user closes the cluster (cluster.close(), a with block, the kernel's
#: exit), as opposed to a guard, `cumulo down` or a reaper. A provider may treat it differently (detach).
BY_KERNEL = "closed by its kernel"

logger = logging.getLogger("cumulo")


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

        A re-attach to a row that already runs only refreshes its facts. Either way the
        row is heartbeated: the process recording it is alive now (a long launch must not
        look like a kernel that stopped heartbeating).
        """
        facts = {**facts, "heartbeat": time.time()}
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
                deployment.stop_reason = f"its start failed: {note}"
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
        self._move(record.id, State.CLOSING, note=why, event=None)  # who is stopping it, for the owner to see
        try:
            if deployment is not None:
                deployment.stop_reason = why
                await deployment.close()
            elif provider.owns_scheduler:
                await provider.stop(self.registry.get(record.id), self.checkpoint(record, provider))
        except BaseException as exc:
            message = f"{why}: stopping failed ({type(exc).__name__}: {exc})"
            if provider.owns_scheduler:
                self._move(record.id, State.STOP_FAILED, note=message)
            else:
                self._move(record.id, State.RUNNING, note="", event=("stop-failed", message))  # still running: clear "stopping"
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

    async def vanished(self, record: ClusterRecord, provider: Provider, why: str) -> bool:
        """The scheduler stopped answering: close the row as ``lost`` once nothing of it can bill.

        A cluster whose resources bill independently is asked of its provider
        (``confirm_gone``): when its instances are confirmed gone (terminated in a
        console, by another installation's sweep, preempted), what is left (rules,
        keys, certificates) is cleaned up and the row closes, so that its meter stops
        at once. Returns whether the row was closed.
        """
        if not provider.bills_independently:
            return self.lost(record, provider, why)
        if not await provider.confirm_gone(record, self.checkpoint(record, provider)):
            return False  # the row stays open: its instances may still bill
        await self.stop(record, provider, why=f"{why}; its instances were terminated outside this cluster's "
                                             "kernel (confirmed at the provider)", final=State.LOST)
        return True

    # -- what outlives a stop -----------------------------------------------------------------

    def detach(self, cluster_id: str, *, disown: bool = False) -> bool:
        """Let a cluster outlive the kernel that holds it: drop its lease, so that it is not stopped when
        that kernel goes; its budget and idle timeout still apply (every reaper enforces them).

        ``disown`` (the kernel disconnected and left it running): also give up this process's
        ownership. Only the owner may: a row closed meanwhile, or owned by another process
        (this one only re-attached), is left as it is. Returns whether the row changed.
        """
        if not disown:
            self.registry.update(cluster_id, lease_seconds=None)
            self.registry.event(cluster_id, "detached",
                                "detached from its kernel: no lease, stop it with `cumulo down`")
            return True
        rec = self.registry.get(cluster_id)
        if State(rec.state) is not State.RUNNING or (rec.owner is not None and not rec.owned_here()):
            return False
        if rec.lease_seconds is not None:
            self.registry.update(rec.id, lease_seconds=None)
        if rec.owner is not None:
            self.registry.disown(rec.id)
        self.registry.event(rec.id, "detached", "disconnected from its kernel, left running: no lease, no "
                            "owner; every reaper enforces its budget and idle timeout")
        return True

    def record_cost(self, record: ClusterRecord, spend: Spend, *, last_reading: bool = False) -> bool:
        """Keep a cluster's spend in its row, as its cost (and its kind): the one rule for every writer.

        By default (its own kernel's guard and close, a reaper) only for a cluster with no
        provider price: it is priced from its ledger (worker-time x a configured rate), which
        goes with its scheduler, so its last reading is all that remains. A priced cluster's
        spend follows from the row's own clock, which runs until the provider confirms
        termination, and is not written.

        ``last_reading``: ``spend`` was read just before another process stopped the cluster
        (the Jupyter server's Stop). It is kept only where the row holds no figure yet (the
        owner's own reading wins), and for a priced cluster too: the figure its card showed.
        Returns whether it wrote.
        """
        if spend.amount is None or (record.rate_per_hour is not None and not last_reading):
            return False
        if last_reading and self.registry.get(record.id).cost is not None:
            return False
        self.registry.update(record.id, cost=spend.amount, cost_kind=spend.kind)
        return True

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
