"""The cross-process sweep: stop what nobody is watching, and find what nobody owns.

Used by ``cumulo reap`` and by the Jupyter server's timer alike. One pass:

  1. clusters that lived in an owner process that exited are marked lost
     (nothing of them runs);
  2. every ``stop-failed`` cluster (an earlier stop or cleanup failed, so it may
     still bill) is stopped again;
  3. a ``starting`` cluster whose owner died (a kernel restarted during a long
     boot) is stopped once the lease grace has passed since it last heartbeated;
  4. a running cluster nobody is watching is stopped when :func:`guards.unattended`
     says so (expired lease, spent budget, idle timeout);
  5. each provider that can leave resources behind (``sweeps_orphans``) lists
     them: this installation's own orphans are stopped, anything else is
     reported and left alone unless ``terminate_unknown``.

Every stop goes through :class:`cumulo.life.lifecycle.Lifecycle`, as `cumulo down` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..aio import blocking
from ..cost.metering import Spend, fetch_ledger_async, final_usage, spend_of
from ..exceptions import CredentialsError, CumuloError
from ..providers import Orphan, Provider, get_provider, known_providers, provider_class
from . import guards
from .inventory import keep_usage, reconcile, who
from .lifecycle import Lifecycle, State
from .registry import ClusterRecord, Registry

__all__ = ["Reaped", "Sweep", "reap", "sweep", "sweep_async"]


@dataclass
class Reaped:
    """One cluster the sweep acted on (or would have, with dry_run)."""

    name: str
    id: str
    provider: str
    reason: str
    action: str
    cost: float | None
    cost_kind: str
    cost_basis: str

    @property
    def failed(self) -> bool:
        """Whether the stop failed (the cluster may still bill)."""
        return self.action.startswith("FAILED")

    def text(self) -> str:
        """One line for the terminal."""
        money = "no rate set" if self.cost is None else f"${self.cost:,.2f} ({self.cost_kind}: {self.cost_basis})"
        return f"{self.name} ({self.provider}): {self.reason} -> {self.action}; cost {money}"


@dataclass
class Sweep:
    """What one pass did: clusters acted on, orphans found, providers that could not be checked."""

    clusters: list[Reaped] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    #: provider name -> why its orphans were not checked (e.g. no API key configured)
    unchecked: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether anything the sweep tried to stop is still there."""
        return any(r.failed for r in self.clusters) or any(o.action.startswith("FAILED") for o in self.orphans)


def _provider(record: ClusterRecord) -> Provider | None:
    try:
        return get_provider(record.provider)
    except CumuloError:
        return None  # registered in another process only


def _reason(record: ClusterRecord, ledger: dict[str, Any] | None, spend: Spend, now: float) -> str | None:
    state = State(record.state)
    if state is State.STOP_FAILED:
        return "an earlier stop failed; retrying"
    if state is State.STARTING:
        beat = record.heartbeat or record.created
        if record.owner_alive() is False and now - beat > guards.lease_grace():
            return f"its owner (pid {record.owner_pid}) died while it was starting"
        return None
    if state is not State.RUNNING:
        return None
    verdict = guards.unattended(record, ledger, spend, now)
    return None if verdict is None else verdict.reason


def _unreachable_provider(record: ClusterRecord) -> Reaped | None:
    """A row of a provider this process does not know (registered in another process only): a
    stop-failed one may still bill and cannot be retried from here, which the sweep must say."""
    if record.state != State.STOP_FAILED:
        return None
    spent = spend_of(record, None)
    return Reaped(record.name, record.id, record.provider,
                  f"an earlier stop failed ({record.note or 'no reason recorded'})",
                  f"FAILED: provider {record.provider!r} is not registered in this process (it was registered "
                  "in-process by the program that started the cluster, or its package is not installed here), "
                  "so the stop cannot be retried from here; it may still bill: retry from a process that "
                  f"registers {record.provider!r} (cumulo.providers.register_provider) with `cumulo down "
                  f"{record.name}`, or stop its resources in the provider's console",
                  spent.amount, spent.kind, spent.basis)


async def _vanished(lifecycle: Lifecycle, record: ClusterRecord, provider: Provider) -> Reaped | None:
    """A billing cluster whose scheduler does not answer: closed as lost if its provider confirms it is gone."""
    reason = "its scheduler does not answer"
    try:
        if not await lifecycle.vanished(record, provider, f"reaped: {reason}"):
            return None
        action = "marked lost (its instances were terminated elsewhere: nothing bills)"
    except Exception as exc:
        action = f"FAILED: {exc}; it may still bill: run `cumulo down {record.name}`"
    spent = spend_of(lifecycle.registry.get(record.id), None)
    return Reaped(record.name, record.id, record.provider, reason, action, spent.amount, spent.kind, spent.basis)


async def _one(lifecycle: Lifecycle, record: ClusterRecord, *, dry_run: bool, now: float | None) -> Reaped | None:
    provider = _provider(record)
    if provider is None:
        return _unreachable_provider(record)
    ledger = None
    if record.address and record.state == State.RUNNING:
        try:
            security = provider.security(record)
        except CumuloError:
            security = None
        ledger = await fetch_ledger_async(record.address, security)
    t = time.time() if now is None else now
    if (record.address and ledger is None and record.state == State.RUNNING and provider.bills_independently
            and not dry_run):
        gone = await _vanished(lifecycle, record, provider)
        if gone is not None:
            return gone
    spend = spend_of(record, ledger, now=t)
    if spend.amount is None and record.cost is not None:
        spend = Spend(record.cost, record.rate_per_hour, "last figure recorded by its kernel")
    reason = _reason(record, ledger, spend, t)
    if reason is None:
        return None

    def out(action: str, spent: Spend = spend) -> Reaped:
        return Reaped(record.name, record.id, record.provider, reason, action, spent.amount, spent.kind, spent.basis)

    owns = provider.owns_scheduler
    if dry_run:
        return out("would stop" if owns else "would close the row (scheduler not ours)")
    if record.address and ledger is None and provider.lives_in_owner_process and record.state == State.RUNNING:
        lifecycle.lost(record, provider, f"reaped: {reason}; its scheduler was already gone")
        return out("marked lost (scheduler already gone)")
    lifecycle.registry.event(record.id, "reap", f"stopping: {reason}")
    try:
        await lifecycle.stop(record, provider, why=who(f"reaped: {reason}"))
    except Exception as exc:
        return out(f"FAILED: {exc}; it may still bill: run `cumulo down {record.name}`")
    if ledger is not None:
        keep_usage(lifecycle.registry, record.id, final_usage(record, ledger))
    final = spend_of(lifecycle.registry.get(record.id), ledger, now=time.time())
    if final.amount is not None:
        spend = final
        lifecycle.record_cost(record, spend)
    return out("stopped" if owns else "closed the row (scheduler not ours)", spend)


async def sweep_async(
    registry: Registry | None = None,
    *,
    dry_run: bool = False,
    orphans: bool = True,
    terminate_unknown: bool = False,
    now: float | None = None,
) -> Sweep:
    """One pass of the sweep (see the module docstring)."""
    registry = registry or Registry()
    lifecycle = Lifecycle(registry)
    result = Sweep()
    for record in [] if dry_run else reconcile(registry):
        spent = spend_of(record, None)
        result.clusters.append(Reaped(record.name, record.id, record.provider,
                                      f"owner process {record.owner_pid} exited",
                                      "marked lost (it ran inside that process: nothing of it runs)",
                                      spent.amount, spent.kind, spent.basis))
    for record in registry.list(include_closed=False):
        done = await _one(lifecycle, record, dry_run=dry_run, now=now)
        if done is not None:
            result.clusters.append(done)
    if orphans:
        for name in known_providers():
            try:
                cls = provider_class(name)
            except CumuloError:
                continue
            if not cls.sweeps_orphans:
                continue
            try:
                result.orphans += await cls().sweep_orphans(registry, dry_run=dry_run,
                                                            terminate_unknown=terminate_unknown)
            except CredentialsError:
                result.unchecked[name] = "no API key configured"
            except CumuloError as exc:
                result.unchecked[name] = str(exc)
    return result


def sweep(
    registry: Registry | None = None,
    *,
    dry_run: bool = False,
    orphans: bool = True,
    terminate_unknown: bool = False,
    now: float | None = None,
) -> Sweep:
    """Blocking form of :func:`sweep_async` (for the CLI and the server's executor threads)."""
    return blocking(sweep_async(registry, dry_run=dry_run, orphans=orphans, terminate_unknown=terminate_unknown,
                            now=now))


def reap(registry: Registry | None = None, *, dry_run: bool = False, now: float | None = None) -> list[Reaped]:
    """The clusters part of the sweep alone: stop what nobody is watching; return what was acted on."""
    return sweep(registry, dry_run=dry_run, orphans=False, now=now).clusters
