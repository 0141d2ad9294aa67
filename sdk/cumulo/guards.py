"""Stop paying for what nobody uses: budget cap, idle shutdown and the kernel lease.

While a kernel holds a cluster, a :class:`Guard` thread in that kernel
heartbeats the cluster's registry row (the lease), reads the scheduler-side
ledger, records spend on the row, and enforces:

  - budget: a warning at each ``cumulo.guards.budget-warn-at`` fraction (50%, 80%),
    and at 100% the ``budget-action``: close, scale-to-zero, or warn only;
  - idle: no task processing and (where NVML reports) every GPU under
    ``idle-gpu-threshold`` for the whole idle timeout, then close. Clusters that
    cost money default to ``idle-timeout`` (20 minutes).

When the kernel is gone, nobody is left to do that, so :func:`reap` (``cumulo
reap``, and the Jupyter server on a timer) enforces the same rules for clusters
whose owner stopped heartbeating: an expired lease (unless the cluster was
detached on purpose with ``cluster.detach()`` or ``keep-alive``), a spent
budget, or an idle timeout. It stops them through their provider, exactly as
``cumulo down`` does, and says what it stopped and what it cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from dask.utils import parse_timedelta

from . import config
from .exceptions import BudgetExceeded, CumuloError, NotOwner
from .metering import Spend, Usage, fetch_ledger_async, install_async, rates, spend_of
from .registry import ClusterRecord, Registry

__all__ = ["BudgetWarning", "Guard", "Reaped", "attach", "detach", "on_close", "reap", "start_guard"]


class BudgetWarning(UserWarning):
    """A cluster's spend passed a budget threshold (50%, 80%), or reached it with action 'warn'."""


def _seconds(key: str) -> float | None:
    value = config.get(key)
    return None if value is None else float(parse_timedelta(value))


def costs_money(record: ClusterRecord) -> bool:
    """Whether the cluster has a provider price or a configured rate."""
    return record.rate_per_hour is not None or any(r is not None for r in rates())


def default_idle_timeout(record: ClusterRecord) -> float | None:
    """The idle timeout a cluster gets when connect() was given none."""
    if record.idle_timeout is not None:
        return record.idle_timeout
    return _seconds("guards.idle-timeout" if costs_money(record) else "guards.idle-timeout-unpriced")


# -- in the kernel ---------------------------------------------------------------------------


class Guard:
    """Budget, idle and lease enforcement for one cluster, from the kernel that holds it.

    ``check()`` does one pass and is what the background thread calls every
    ``cumulo.guards.interval``; it can be called directly (tests, notebooks).
    """

    def __init__(self, cluster: Any, usage: Usage) -> None:
        self.cluster = cluster
        self.usage = usage
        self.registry: Registry = cluster.registry
        self.warned: set[float] = set()
        self.tripped: CumuloError | None = None
        self.reported = False
        self.last_spend: Spend | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run check() in a daemon thread until the cluster closes or stop() is called."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"cumulo-guard-{self.cluster.name}", daemon=True)
        self._thread.start()

    def stop(self, *, join: bool = True) -> None:
        """Stop the thread (does not touch the cluster); ``join=False`` from the event loop."""
        self._stop.set()
        t = self._thread
        if join and t is not None and t is not threading.current_thread():
            t.join(timeout=5)

    def _run(self) -> None:
        interval = _seconds("guards.interval") or 10.0
        while not self._stop.wait(interval):
            if self.cluster.status != "running":
                break
            try:
                self.check()
            except Exception as exc:  # a guard must never kill the kernel; it says what went wrong
                try:
                    self.registry.event(self.cluster.id, "guard-error", f"{type(exc).__name__}: {exc}")
                except Exception:
                    pass
        self._release_if_disconnected()

    def _release_if_disconnected(self) -> None:
        """After ``cluster.disconnect()`` the cluster is meant to keep running: drop the lease."""
        if self.cluster.status != "closed":
            return
        try:
            rec = self.registry.get(self.cluster.id)
            if rec.state == "running" and rec.lease_seconds is not None:
                self.registry.update(rec.id, lease_seconds=None)
                self.registry.event(rec.id, "detached", "disconnected from its kernel, left running: no lease "
                                    "(reap still enforces budget and idle timeout)")
        except Exception:
            pass

    def check(self, *, now: float | None = None) -> list[str]:
        """One pass: heartbeat, spend, budget, idle. Returns what it did, as short phrases."""
        if self.cluster.status != "running":
            return []
        done: list[str] = []
        cid = self.cluster.id
        self.registry.heartbeat(cid)
        rec = self.registry.get(cid)
        ledger = self.usage.ledger()
        spend = spend_of(rec, ledger, now=now)
        self.last_spend = spend
        if spend.amount is not None and rec.rate_per_hour is None:
            # priced clusters need no write: their spend follows from the row's own clock
            self.registry.update(cid, cost=spend.amount, cost_kind=spend.kind)
        if rec.budget and spend.amount is not None:
            frac = spend.amount / rec.budget
            for level in sorted(float(x) for x in config.get("guards.budget-warn-at") or ()):
                if frac >= level and level not in self.warned and frac < 1.0:
                    self.warned.add(level)
                    msg = (f"cluster {rec.name!r} has spent {spend.text()}, {frac:.0%} of its "
                           f"${rec.budget:,.2f} budget")
                    self.registry.event(cid, "budget-warning", msg)
                    warnings.warn(msg, BudgetWarning, stacklevel=2)
                    done.append(f"warned at {level:.0%}")
            if frac >= 1.0 and self.tripped is None:
                done.append(self._budget_action(rec, spend))
                return done
        idle_timeout = default_idle_timeout(rec)
        if not self._owns():
            return done
        if idle_timeout and ledger is not None and ledger["idle_seconds"] >= idle_timeout:
            msg = (f"cluster {rec.name!r} ran no task" + (" and its GPUs stayed under "
                   f"{config.get('guards.idle-gpu-threshold')}% utilisation" if ledger.get("nvml") else "")
                   + f" for {ledger['idle_seconds']:.0f}s (idle timeout {idle_timeout:g}s): closing it; "
                   f"spent {spend.text()}")
            self.tripped = CumuloError(msg)
            self.registry.event(cid, "idle", msg)
            self._close(f"idle for {ledger['idle_seconds']:.0f}s")
            done.append("closed (idle)")
        return done

    def _owns(self) -> bool:
        provider = getattr(self.cluster, "_provider", None)
        return provider is None or bool(getattr(provider, "owns_scheduler", True))

    def _budget_action(self, rec: ClusterRecord, spend: Spend) -> str:
        action = config.get("guards.budget-action") if self._owns() else "warn"
        msg = (f"cluster {rec.name!r} reached its ${rec.budget:,.2f} budget (spent {spend.text()}); "
               f"action: {action}. Raise the budget with connect(..., budget=...) or set "
               "cumulo.guards.budget-action.")
        self.tripped = BudgetExceeded(msg)
        self.registry.event(rec.id, "budget", msg)
        if action == "warn":
            warnings.warn(msg, BudgetWarning, stacklevel=3)
            return "warned at 100%"
        if action == "scale-to-zero":
            try:
                self.cluster.scale(0)
                return "scaled to zero (budget)"
            except NotOwner:
                msg += " (not the owner: closing instead)"
        self._close("budget reached")
        return "closed (budget)"

    def _close(self, why: str) -> None:
        self._stop.set()
        try:
            self.cluster.close()
        except Exception as exc:
            self.registry.event(self.cluster.id, "close-failed", f"{why}: {type(exc).__name__}: {exc}")
            raise


async def attach(cluster: Any) -> None:
    """Called by Cluster once it is running: install the ledger, set the lease, start the guard.

    Runs on the cluster's event loop. Clusters cumulo only attached to by address get
    the ledger, the lease and budget warnings, but their scheduler is never stopped:
    it is not ours (an expired lease only closes their registry row).
    """
    usage = Usage(cluster)
    cluster._cumulo_usage = usage
    usage.installed = await install_async(cluster.client)
    usage.scheduler_id = (getattr(cluster.client, "_scheduler_identity", None) or {}).get("id")
    rec = cluster.registry.get(cluster.id)
    values: dict[str, Any] = {}
    if rec.owned_here():
        keep = bool(config.get("guards.keep-alive")) or bool(cluster.spec.options.get("keep_alive", False))
        values["lease_seconds"] = None if keep else _seconds("guards.lease-grace")
    idle = default_idle_timeout(rec)
    if idle != rec.idle_timeout:
        values["idle_timeout"] = idle
    if values:
        cluster.registry.update(cluster.id, **values)
    if not getattr(cluster, "_asynchronous", False):
        start_guard(cluster, usage)
    from . import cellcost

    if config.get("widgets.cell-line-on-connect") or cellcost.loaded():
        cellcost.track(cluster)


async def on_close(cluster: Any) -> None:
    """Called by Cluster (on its loop) as it closes: stop the guard, record the final ledger and spend.

    Priced clusters get no cost written here: their spend runs until the provider
    confirms termination, which the row's ``closed`` time records.
    """
    guard = getattr(cluster, "_cumulo_guard", None)
    if guard is not None:
        guard.stop(join=False)
    usage = getattr(cluster, "_cumulo_usage", None)
    if usage is None or not usage.installed or cluster.client is None or cluster.status != "running":
        return
    try:
        ledger = await asyncio.wait_for(cluster.client.scheduler.cumulo_ledger(), 3)
    except Exception:
        return
    usage.final = ledger
    rec = cluster.registry.get(cluster.id)
    if rec.rate_per_hour is None:
        spend = spend_of(rec, ledger)
        if spend.amount is not None:
            cluster.registry.update(cluster.id, cost=spend.amount, cost_kind=spend.kind)


def start_guard(cluster: Any, usage: Usage) -> Guard:
    """Start (once) the guard thread of a cluster and remember it on the cluster."""
    guard = getattr(cluster, "_cumulo_guard", None)
    if guard is None:
        guard = Guard(cluster, usage)
        cluster._cumulo_guard = guard
        guard.start()
    return guard


def detach(cluster: Any) -> None:
    """Let a cluster outlive this kernel: no lease (budget and idle rules still apply via reap)."""
    if getattr(cluster, "_provider", None) is not None and cluster._provider.name == "local":
        raise NotOwner(
            f"the local cluster {cluster.name!r} runs inside this kernel and stops with it, so it cannot be "
            "detached; start it on hosts or a provider that outlive the kernel to keep it running"
        )
    cluster.registry.update(cluster.id, lease_seconds=None)
    cluster.registry.event(cluster.id, "detached", "detached from its kernel: no lease, stop it with `cumulo down`")


# -- from anywhere: reap ---------------------------------------------------------------------


@dataclass
class Reaped:
    """One cluster reap() looked at and acted on (or would have, with dry_run)."""

    name: str
    id: str
    provider: str
    reason: str
    action: str
    cost: float | None
    cost_kind: str
    cost_basis: str

    def text(self) -> str:
        """One line for the terminal."""
        money = "no rate set" if self.cost is None else f"${self.cost:,.2f} ({self.cost_kind}: {self.cost_basis})"
        return f"{self.name} ({self.provider}): {self.reason} -> {self.action}; cost {money}"


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside a loop (server timer)
        return pool.submit(asyncio.run, coro).result()


def _reason(rec: ClusterRecord, ledger: dict[str, Any] | None, spend: Spend, now: float) -> str | None:
    grace = rec.lease_seconds
    beat = rec.heartbeat or rec.updated
    if rec.owner_alive() and rec.owner_pid != os.getpid():
        return None  # its kernel is alive and guards it itself
    lease_grace = grace if grace is not None else (_seconds("guards.lease-grace") or 120.0)
    if now - beat <= lease_grace:
        return None  # someone heartbeated recently
    if grace is not None:
        return f"kernel gone (no heartbeat for {now - beat:.0f}s, lease {grace:g}s)"
    if rec.budget and spend.amount is not None and spend.amount >= rec.budget:
        return f"budget ${rec.budget:,.2f} reached"
    idle = default_idle_timeout(rec)
    if idle and ledger is not None and ledger["idle_seconds"] >= idle:
        return f"idle for {ledger['idle_seconds']:.0f}s (timeout {idle:g}s)"
    return None


def reap(registry: Registry | None = None, *, dry_run: bool = False, now: float | None = None) -> list[Reaped]:
    """Stop clusters whose kernel is gone and whose lease expired, budget is spent or idle time is up.

    Returns one :class:`Reaped` per cluster acted on (or that would be, with ``dry_run``).
    A cluster whose scheduler no longer answers is closed in the registry as 'lost'.
    """
    from .providers import get_provider

    registry = registry or Registry()
    out: list[Reaped] = []
    for rec in registry.list(include_closed=False):
        t = time.time() if now is None else now
        provider = get_provider(rec.provider)
        ledger = _run(fetch_ledger_async(rec.address, provider.security(rec))) if rec.address else None
        spend = spend_of(rec, ledger, now=t)
        if spend.amount is None and rec.cost is not None:
            spend = Spend(rec.cost, rec.rate_per_hour, "last figure recorded by its kernel")
        reason = _reason(rec, ledger, spend, t)
        if reason is None:
            continue
        owns = getattr(provider, "owns_scheduler", True)
        if dry_run:
            action = "would stop" if owns else "would close the row (scheduler not ours)"
        elif rec.address and ledger is None and rec.provider == "local":
            registry.close(rec.id, state="lost", note=f"reaped: {reason}; its scheduler was already gone")
            action = "marked lost (scheduler already gone)"
        else:
            registry.update(rec.id, state="closing")
            registry.event(rec.id, "reap", f"stopping: {reason}")
            try:
                _run(provider.stop(rec, registry))
            except Exception as exc:
                registry.event(rec.id, "reap-failed", f"{type(exc).__name__}: {exc}")
                out.append(Reaped(rec.name, rec.id, rec.provider, reason,
                                  f"FAILED: {exc}; run `cumulo down {rec.name}`", spend.amount, spend.kind,
                                  spend.basis))
                continue
            final = spend_of(registry.get(rec.id), ledger, now=time.time())
            if final.amount is not None:
                spend = final
                registry.update(rec.id, cost=spend.amount, cost_kind=spend.kind)
            if registry.get(rec.id).is_open:
                note = f"reaped: {reason}" + ("" if owns else "; scheduler left running (started outside cumulo)")
                registry.close(rec.id, note=note)
            action = "stopped" if owns else "closed the row (scheduler not ours)"
        out.append(Reaped(rec.name, rec.id, rec.provider, reason, action, spend.amount, spend.kind, spend.basis))
    return out


def add_cli(subparsers: Any) -> Any:
    """Add ``cumulo reap [--dry-run]`` to an argparse CLI."""
    p = subparsers.add_parser(
        "reap", help="stop clusters whose kernel is gone (lease, budget, idle) and cloud instances nobody owns"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be stopped, stop nothing")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: Any) -> int:
    """Entry point of `cumulo reap`."""
    done = reap(dry_run=args.dry_run)
    if not done:
        print("nothing to reap")
    total = 0.0
    for r in done:
        print(r.text())
        total += r.cost or 0.0
    if done:
        print(f"total {'that would be ' if args.dry_run else ''}stopped: {len(done)} cluster(s), ${total:,.2f} spent")
    _reap_cloud_orphans(dry_run=args.dry_run)
    return 0


def _reap_cloud_orphans(*, dry_run: bool) -> None:
    """Cloud instances named by cumulo that no open cluster owns (e.g. a kernel killed mid-launch)."""
    from .exceptions import CredentialsError
    from .providers.lambda_cloud import reap_orphans

    try:
        orphans = reap_orphans(dry_run=dry_run)
    except CredentialsError:
        print("lambda: not checked for orphaned instances (no API key configured)")
        return
    if not orphans:
        print("lambda: no orphaned cumulo instances")
    for orphan in orphans:
        print(f"lambda: {'would terminate' if dry_run else 'terminated'} {orphan.line()}")
