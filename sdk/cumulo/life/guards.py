"""Stop paying for what nobody uses: the budget, idle and lease rules, as pure policy.

Nothing here has side effects: each rule is a function of a cluster's registry
row, its usage ledger and the time, returning a :class:`Verdict` (or None).
Two places act on verdicts:

  - the kernel that holds a cluster (:mod:`cumulo.life.watchdog`, a periodic
    callback on the cluster's own loop): budget warnings at each
    ``cumulo.guards.budget-warn-at`` fraction, the ``budget-action`` at 100%
    (close, scale-to-zero, warn), and the idle timeout;
  - every other process (:mod:`cumulo.life.reaper`: ``cumulo reap`` and the Jupyter
    server's timer), for clusters whose kernel stopped heartbeating: an expired
    lease (unless the cluster was detached or keep-alive), a spent budget, or
    an idle timeout.

Idle means no task processing and (where NVML reports) every GPU under
``idle-gpu-threshold`` for the whole idle timeout. Clusters that cost money
default to ``idle-timeout`` (20 minutes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dask.utils import parse_timedelta

from .. import config
from ..cost.metering import Spend, rates
from .registry import ClusterRecord

__all__ = ["BudgetWarning", "Verdict", "budget_levels", "costs_money", "default_idle_timeout", "in_kernel",
           "lease_grace", "seconds", "unattended", "watched"]


class BudgetWarning(UserWarning):
    """A cluster's spend passed a budget threshold (50%, 80%), or reached it with action 'warn'."""


@dataclass(frozen=True)
class Verdict:
    """What a rule says to do with a cluster, and why (in words a user reads in `cumulo ls`)."""

    #: "warn" (a budget level), "budget" (the budget-action applies), "close" (idle), "stop" (reaper).
    action: str
    reason: str
    #: The budget level crossed, for "warn".
    level: float | None = None


def seconds(key: str) -> float | None:
    """A duration setting of cumulo.* in seconds (None when unset)."""
    value = config.get(key)
    return None if value is None else float(parse_timedelta(value))


def costs_money(record: ClusterRecord) -> bool:
    """Whether the cluster has a provider price or a configured rate."""
    return record.rate_per_hour is not None or any(r is not None for r in rates())


def default_idle_timeout(record: ClusterRecord) -> float | None:
    """The idle timeout a cluster gets when connect() was given none."""
    if record.idle_timeout is not None:
        return record.idle_timeout
    return seconds("guards.idle-timeout" if costs_money(record) else "guards.idle-timeout-unpriced")


def lease_grace() -> float:
    """How long a kernel may go without heartbeating before its cluster counts as abandoned."""
    return seconds("guards.lease-grace") or 120.0


def budget_levels() -> list[float]:
    """The fractions of a budget at which the holder is warned."""
    return sorted(float(x) for x in config.get("guards.budget-warn-at") or ())


def _idle(record: ClusterRecord, ledger: dict[str, Any] | None) -> tuple[float, float] | None:
    """(seconds idle, the timeout) once the idle timeout has run out, else None."""
    idle = default_idle_timeout(record)
    if not idle or ledger is None or ledger["idle_seconds"] < idle:
        return None
    return float(ledger["idle_seconds"]), idle


def in_kernel(
    record: ClusterRecord, ledger: dict[str, Any] | None, spend: Spend, *, warned: set[float], owns: bool
) -> list[Verdict]:
    """The verdicts for the kernel holding a cluster: budget levels newly crossed, then budget or idle.

    ``warned``: levels already warned about. ``owns``: whether closing would stop
    the scheduler (an attached-by-address cluster only ever gets warnings).
    """
    out: list[Verdict] = []
    if record.budget and spend.amount is not None:
        frac = spend.amount / record.budget
        for level in budget_levels():
            if level <= frac < 1.0 and level not in warned:
                out.append(Verdict("warn", f"cluster {record.name!r} has spent {spend.text()}, {frac:.0%} of its "
                                           f"${record.budget:,.2f} budget", level=level))
        if frac >= 1.0:
            out.append(Verdict("budget", f"cluster {record.name!r} reached its ${record.budget:,.2f} budget "
                                         f"(spent {spend.text()})"))
            return out
    idle = _idle(record, ledger) if owns else None
    if idle is not None and ledger is not None:
        gpus = (f" and its GPUs stayed under {config.get('guards.idle-gpu-threshold')}% utilisation"
                if ledger.get("nvml") else "")
        out.append(Verdict("close", f"cluster {record.name!r} ran no task{gpus} for {idle[0]:.0f}s (idle timeout "
                                    f"{idle[1]:g}s): closing it; spent {spend.text()}"))
    return out


def watched(record: ClusterRecord, now: float | None = None) -> bool:
    """Whether a kernel is watching the cluster: it has an owner whose heartbeat is fresh.

    The heartbeat decides, never the owner's PID (a PID may belong to another process by
    now); a kernel that died still gets its lease's grace, so that a restarted kernel can
    re-attach. A disconnected cluster has no owner, so nobody watches it.
    """
    now = time.time() if now is None else now
    if record.owner is None:
        return False
    beat = record.heartbeat or record.updated
    grace = record.lease_seconds if record.lease_seconds is not None else lease_grace()
    return now - beat <= grace


def unattended(
    record: ClusterRecord, ledger: dict[str, Any] | None, spend: Spend, now: float | None = None
) -> Verdict | None:
    """Whether a cluster nobody is watching should be stopped, by a process other than its kernel.

    A cluster is watched while its owner heartbeats (see :func:`watched`); then its
    kernel applies the rules itself. Otherwise: an expired lease (a cluster without a
    lease, detached or keep-alive, is exempt), a spent budget, or an idle timeout.
    """
    now = time.time() if now is None else now
    if watched(record, now):
        return None
    beat = record.heartbeat or record.updated
    if record.owner is not None and record.lease_seconds is not None:
        why = "kernel gone" if record.owner_alive() is False else "kernel stopped heartbeating"
        return Verdict("stop", f"{why} (no heartbeat for {now - beat:.0f}s, lease {record.lease_seconds:g}s)")
    if record.budget and spend.amount is not None and spend.amount >= record.budget:
        return Verdict("stop", f"budget ${record.budget:,.2f} reached")
    idle = _idle(record, ledger)
    return None if idle is None else Verdict("stop", f"idle for {idle[0]:.0f}s (timeout {idle[1]:g}s)")
