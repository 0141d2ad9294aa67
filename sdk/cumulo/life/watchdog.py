"""The kernel's watch over a cluster it holds: lease, spend, guards, and "stopped elsewhere".

Runs as two periodic callbacks on the cluster's own event loop (as distributed's
deploy/cluster.py runs its background work), stopped when the cluster closes:

  - every ``cumulo.guards.watch-interval`` (2 s): read the registry row; when
    another process (`cumulo down`, another kernel, the server's Stop, a reaper)
    has stopped the cluster, let go of it and remember who did, so that the next
    use raises ClusterLost naming them;
  - every ``cumulo.guards.interval``: heartbeat the row (the kernel lease), read
    the scheduler's ledger, record spend, and act on the verdicts of
    :func:`cumulo.life.guards.in_kernel` (budget warnings, budget action, idle close).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback

from .. import config
from ..cost import cellcost, listeners
from ..cost.cellhistory import kernel_id
from ..cost.metering import Spend, Usage, install_async, spend_of
from ..exceptions import BudgetExceeded, CumuloError, NotOwner
from . import guards, interruptions
from .watched import Watched

if TYPE_CHECKING:
    from ..providers.base import Provider

__all__ = ["Watchdog", "attach", "set_scheduler_lease"]

logger = logging.getLogger("cumulo")


class Watchdog:
    """Budget, idle and lease enforcement for one cluster, from the kernel that holds it.

    ``tripped`` is the error of the rule that acted (budget or idle), ``last_spend``
    the spend at the last pass. ``check()`` runs one pass now (from a notebook or
    a test) and returns what it did, as short phrases.

    It reaches the cluster only through :class:`cumulo.life.watched.Watched`; ``provider``
    says what the cluster's provider can do (owns its scheduler, bills on its own).
    """

    def __init__(self, cluster: Watched, usage: Usage, provider: Provider) -> None:
        self.cluster = cluster
        self.usage = usage
        self.provider = provider
        self.registry = cluster.registry
        self.warned: set[float] = set()
        self.tripped: CumuloError | None = None
        self.last_spend: Spend | None = None
        self._callbacks: list[PeriodicCallback] = []
        self._from_loop = False
        self._interruptions_seen = 0
        self._workers_seen = 0  # workers at the last pass: fewer now means some left (taken back?)

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        """Start both callbacks on the cluster's loop (call from that loop)."""
        if self._callbacks:
            return
        interval = guards.seconds("guards.interval") or 10.0
        watch = min(guards.seconds("guards.watch-interval") or 2.0, interval)
        self._callbacks = [PeriodicCallback(self._watch, watch * 1000), PeriodicCallback(self._guard, interval * 1000)]
        for cb in self._callbacks:
            cb.start()

    def stop(self) -> None:
        """Stop the callbacks (does not touch the cluster)."""
        for cb in self._callbacks:
            cb.stop()

    @property
    def running(self) -> bool:
        """Whether the callbacks are scheduled."""
        return any(cb.is_running() for cb in self._callbacks)

    async def _watch(self) -> None:
        if self.cluster.status != "running":
            return
        try:
            rec = self.cluster.lifecycle.stopped_elsewhere(self.cluster.id)
        except Exception as exc:  # a registry hiccup must not kill the watch
            logger.debug("cumulo: could not read the row of %r: %s", self.cluster.name, exc)
            return
        if rec is not None:
            self.stop()
            await self.cluster.let_go(rec)

    async def _guard(self) -> None:
        if self.cluster.status != "running":
            return
        try:
            await self.check_async(from_loop=True)
        except Exception as exc:  # a guard must never kill the kernel; it says what went wrong
            try:
                self.registry.event(self.cluster.id, "guard-error", f"{type(exc).__name__}: {exc}")
            except Exception:
                pass

    # -- one pass -------------------------------------------------------------------------

    def check(self) -> list[str]:
        """One pass now, from outside the loop (blocking)."""
        return self.cluster.sync(self.check_async)

    async def check_async(self, *, from_loop: bool = False) -> list[str]:
        """One pass: heartbeat, spend, then act on the guards' verdicts.

        ``from_loop``: run by the periodic callback (a close then also ends the loop).
        """
        self._from_loop = from_loop
        if self.cluster.status != "running":
            return []
        cid = self.cluster.id
        self.registry.heartbeat(cid)
        rec = self.registry.get(cid)
        ledger = await self._ledger()
        if ledger is None and await self._vanished(rec):
            return ["lost (its instances are gone)"]
        if self.provider.bills_independently and (await self._interruptions() or await self._taken_back(rec)):
            rec = self.registry.get(cid)  # the rate changed
        spend = spend_of(rec, ledger)
        self.last_spend = spend
        self.cluster.lifecycle.record_cost(rec, spend)
        owns = self.provider.owns_scheduler
        done: list[str] = []
        for verdict in guards.in_kernel(rec, ledger, spend, warned=self.warned, owns=owns):
            if verdict.action == "warn" and verdict.level is not None:
                self.warned.add(verdict.level)
                self.registry.event(cid, "budget-warning", verdict.reason)
                _warn(verdict.reason)
                done.append(f"warned at {verdict.level:.0%}")
            elif verdict.action == "budget" and self.tripped is None:
                done.append(await self._budget(verdict.reason, owns=owns))
            elif verdict.action == "close" and self.tripped is None:
                self.tripped = CumuloError(verdict.reason)
                self.registry.event(cid, "idle", verdict.reason)
                await self._close(f"idle timeout: {verdict.reason}")
                done.append("closed (idle)")
        return done

    async def _vanished(self, rec: Any) -> bool:
        """The scheduler of a billing cluster stopped answering: if the provider confirms its instances are
        gone (terminated elsewhere), close the row as lost and let go of the cluster."""
        provider = self.provider
        if not provider.bills_independently or self.cluster.client is None or not self.usage.installed:
            return False
        try:
            await asyncio.wait_for(self.cluster.client.scheduler.identity(), 5)
            return False
        except Exception:
            pass
        if not await self.cluster.lifecycle.vanished(rec, provider, "its scheduler stopped answering"):
            return False
        self.stop()
        await self.cluster.let_go(self.registry.get(rec.id))
        return True

    async def _interruptions(self) -> list[str]:
        """Apply what the instances' watchers reported taken back (spot interruptions) since the last pass."""
        client = self.cluster.client
        if client is None:
            return []
        try:
            events = await asyncio.wait_for(client.scheduler.events(topic=interruptions.TOPIC), 5)
        except Exception:  # the scheduler is slow or gone: the next pass reads them (it keeps its events)
            return []
        if not events or len(events) == self._interruptions_seen:
            return []
        self._interruptions_seen = len(events)
        return interruptions.apply(self.registry, self.provider.name, self.cluster.id, events,
                                   title=getattr(self.provider, "title", self.provider.name),
                                   say=self.provider.progress, replace=self.cluster.replace_lost)

    async def _taken_back(self, rec: Any) -> list[str]:
        """When workers left since the last pass, ask the provider which instances it took back without a
        notice (Lambda's preemption) and take them off the bill (one API request, only then)."""
        client = self.cluster.client
        if client is None:
            return []
        info = client.scheduler_info() or {}  # an asynchronous client's cache: totals, no per-worker entries
        now = int(info.get("n_workers") or len(info.get("workers") or {}))
        left = now < self._workers_seen
        self._workers_seen = now
        if not left:
            return []
        try:
            taken = await self.provider.taken_back(rec, self.registry.resources(cluster_id=rec.id,
                                                                                provider=self.provider.name))
        except Exception as exc:  # the API is slow or down: the next departure asks again
            logger.debug("cumulo: could not ask %s what it took back: %s", self.provider.name, exc)
            return []
        return interruptions.apply_taken_back(self.registry, self.provider.name, rec.id, taken,
                                              title=getattr(self.provider, "title", self.provider.name),
                                              at=time.time(), say=self.provider.progress,
                                              replace=self.cluster.replace_lost)

    async def _ledger(self) -> dict[str, Any] | None:
        if not self.usage.installed or self.cluster.client is None:
            return None
        try:
            return await asyncio.wait_for(self.cluster.client.scheduler.cumulo_ledger(), 10)
        except Exception:
            return None

    async def _budget(self, reason: str, *, owns: bool) -> str:
        action = config.get("guards.budget-action") if owns else "warn"
        msg = (f"{reason}; action: {action}. Raise the budget with connect(..., budget=...) or set "
               "cumulo.guards.budget-action.")
        self.tripped = BudgetExceeded(msg)
        self.registry.event(self.cluster.id, "budget", msg)
        if action == "warn":
            _warn(msg)
            return "warned at 100%"
        if action == "scale-to-zero":
            try:
                await self.cluster.scale_to(0)
                return "scaled to zero (budget)"
            except NotOwner:
                self.registry.event(self.cluster.id, "budget", "not the owner: closing instead of scaling")
        await self._close("budget reached")
        return "closed (budget)"

    async def _close(self, why: str) -> None:
        self.stop()
        try:
            await self.cluster.stop_for(why, from_loop=self._from_loop)
        except Exception as exc:
            self.registry.event(self.cluster.id, "close-failed", f"{why}: {type(exc).__name__}: {exc}")
            raise

    # -- leaving ----------------------------------------------------------------------------

    def release_lease(self) -> None:
        """After ``cluster.disconnect()`` the cluster is meant to keep running: drop the lease and the
        ownership, so that every reaper (``cumulo reap``, the Jupyter server's timer) enforces its budget
        and idle timeout from now on, whether or not this process lives on."""
        try:
            self.cluster.lifecycle.detach(self.cluster.id, disown=True)
        except Exception as exc:  # a registry hiccup must not fail a disconnect; say so
            logger.warning("cumulo: could not record that %r was disconnected: %s", self.cluster.name, exc)

    async def final_reading(self) -> None:
        """As the cluster closes: keep the last ledger (with this kernel's cells), keep the cluster's final
        usage in its registry row (``cumulo usage`` shows it once the scheduler is gone), and record the
        spend of an unpriced cluster.

        Priced clusters get no cost written here: their spend runs until the provider
        confirms termination, which the row's ``closed`` time records.
        """
        self.stop()
        ledger = None
        if self.usage.installed and self.cluster.client is not None:
            try:
                ledger = await asyncio.wait_for(self.cluster.client.scheduler.cumulo_ledger(kernel=kernel_id()), 10)
            except (asyncio.TimeoutError, OSError):
                ledger = None  # the scheduler is too slow or gone: nothing to keep
            except Exception:  # a ledger from an older cumulo takes no kernel=: the plain reading
                ledger = await self._ledger()
        if ledger is None:
            return
        try:
            kept = self.usage.closing(ledger)
            self.registry.update(self.cluster.id, usage=json.dumps(kept, allow_nan=False))
        except Exception as exc:  # the usage is a record, never a reason for a close to fail
            self.usage.final = ledger
            logger.debug("cumulo: could not keep the usage of %r: %s", self.cluster.name, exc)
        else:
            listeners.closing(self.cluster, kept)  # trackers (cumulo.mlops) get the final figures
        rec = self.registry.get(self.cluster.id)
        self.cluster.lifecycle.record_cost(rec, spend_of(rec, ledger))


def _warn(message: str) -> None:
    """A budget warning, attributed to cumulo's guard rather than to a line of its loop's code (the
    user's own frame is on another thread by the time a guard runs)."""
    warnings.warn_explicit(message, guards.BudgetWarning, filename="cumulo budget guard", lineno=0,
                           module="cumulo.life.watchdog")


async def set_scheduler_lease(client: Any, seconds: float | None) -> None:
    """Tell a cloud head's lease switch (providers/cloud/lease_switch.py) this kernel's lease, or that the
    cluster is detached on purpose (None) and must not stop for want of a client. Best effort: a scheduler
    without the switch just keeps the value."""
    try:
        await asyncio.wait_for(client.scheduler.set_metadata(keys=["cumulo-lease"],
                                                             value="detached" if seconds is None else seconds), 5)
    except Exception as exc:  # never a reason to fail an attach or a disconnect
        logger.debug("cumulo: could not set the scheduler's lease: %s", exc)


async def attach(cluster: Watched, provider: Provider, *, installed: bool | None = None) -> Watchdog:
    """Once a cluster runs: install the ledger, set the kernel lease, start the watchdog, track cells.

    Runs on the cluster's event loop. Clusters cumulo only attached to by address get
    the ledger, the lease and budget warnings, but their scheduler is never stopped:
    it is not ours (an expired lease only closes their registry row).
    """
    usage = cluster.usage
    assert cluster.client is not None
    # ``installed``: the caller already installed the ledger, overlapping its round trip with another
    usage.installed = await install_async(cluster.client) if installed is None else installed
    usage.scheduler_id = (getattr(cluster.client, "_scheduler_identity", None) or {}).get("id")
    rec = cluster.registry.get(cluster.id)
    values: dict[str, Any] = {}
    if rec.owned_here():
        keep = bool(config.get("guards.keep-alive")) or bool(cluster.spec.options.get("keep_alive", False))
        values["lease_seconds"] = None if keep else guards.seconds("guards.lease-grace")
    idle = guards.default_idle_timeout(rec)
    if idle != rec.idle_timeout:
        values["idle_timeout"] = idle
    if values:
        cluster.registry.update(cluster.id, **values)
    if rec.owned_here() and provider.bills_independently:  # the head's own lease switch follows the kernel's
        await set_scheduler_lease(cluster.client, values.get("lease_seconds"))
    dog = Watchdog(cluster, usage, provider)
    dog.start()
    if config.get("widgets.cell-line-on-connect") or cellcost.loaded():
        cellcost.track(cluster)
    if config.get("mlflow.autolog"):
        from ..mlops import autolog  # optional extra: mlflow, only when cumulo.mlflow.autolog is set

        try:
            autolog(quiet=True)  # the function cumulo.mlflow.autolog
        except Exception:  # a tracker never stops the cost tracking of a working cluster
            logger.warning("cumulo: MLflow autolog could not start", exc_info=True)
    listeners.attached(cluster)
    return dog
