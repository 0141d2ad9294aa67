"""What a cluster's money rests on: a :class:`Spend`, and :func:`spend_of` a registry row.

A priced cluster (a provider's ``rate_per_hour`` on its row) bills its provider clock
times that rate, rounded up to ``cumulo.cost.billing-granularity``. Where the rate
changed while it ran (a spot instance taken back stops billing at its interruption:
the row's ``rate_changes``), each stretch bills at its own rate. An unpriced cluster
bills its workers' time at the configured ``cumulo.cost.rate-per-worker-hour`` and
``rate-per-gpu-hour``; with neither set the spend is None ("no rate set"), never $0.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from .. import config

if TYPE_CHECKING:
    from ..life.registry import ClusterRecord

__all__ = ["Spend", "rates", "spend_of"]


def rates() -> tuple[float | None, float | None]:
    """The configured (rate-per-worker-hour, rate-per-gpu-hour); None where not set."""
    w = config.get("cost.rate-per-worker-hour")
    g = config.get("cost.rate-per-gpu-hour")
    return (None if w is None else float(w)), (None if g is None else float(g))


@dataclass
class Spend:
    """Money for one cluster (or one cell): amount in dollars or None, and what it rests on."""

    amount: float | None
    rate_per_hour: float | None
    basis: str
    estimate: bool = True

    @property
    def kind(self) -> str:
        """The registry's word: 'estimate', or 'none' when there is no rate."""
        return "none" if self.amount is None else ("estimate" if self.estimate else "billed")

    def text(self) -> str:
        """'$1.23 (estimate: ...)' or 'no rate set'."""
        if self.amount is None:
            return "no rate set"
        return f"${self.amount:,.2f} ({'estimate' if self.estimate else 'billed'}: {self.basis})"


def spend_of(record: ClusterRecord | None, ledger: dict[str, Any] | None, *, now: float | None = None) -> Spend:
    """Spend so far for a cluster from its registry row and (where reachable) its ledger."""
    now = time.time() if now is None else now
    if record is not None and record.rate_per_hour is not None:
        end = record.closed or now
        gran = float(parse_timedelta(config.get("cost.billing-granularity", "60s")) or 1.0)
        billed = math.ceil(max(0.0, end - record.created) / gran) * gran
        changes = _rate_changes(record)
        if not changes:
            return Spend(record.rate_per_hour * billed / 3600.0, record.rate_per_hour,
                         "provider clock x catalog price")
        return Spend(_integrate(changes, record.created, record.created + billed),
                     _rate_at(changes, min(end, now)), "provider clock x catalog price, per instance")
    per_worker, per_gpu = rates()
    if per_worker is None and per_gpu is None:
        return Spend(None, None, "no rate set")
    if ledger is None:
        return Spend(None, None, "no ledger reachable")
    totals = ledger["totals"]
    amount = 0.0
    rate = 0.0
    if per_worker is not None:
        amount += totals["worker_seconds"] / 3600.0 * per_worker
        rate += per_worker * len(ledger["workers"])
    if per_gpu is not None:
        amount += totals["gpu_seconds"] / 3600.0 * per_gpu
        rate += per_gpu * sum(w["gpus"] for w in ledger["workers"])
    return Spend(amount, rate, "worker-time x configured rate")


def _rate_changes(record: ClusterRecord) -> list[list[float]]:
    """The row's [time, rate from then on] list (empty: one rate throughout, or unreadable)."""
    try:
        changes = json.loads(record.rate_changes or "null")
    except ValueError:
        return []
    return sorted(changes, key=lambda c: c[0]) if isinstance(changes, list) else []


def _rate_at(changes: list[list[float]], t: float) -> float:
    before = [rate for start, rate in changes if start <= t]
    return float(before[-1] if before else changes[0][1])


def _integrate(changes: list[list[float]], start: float, end: float) -> float:
    """Dollars between ``start`` and ``end`` with the rate stepping at each change."""
    amount = 0.0
    for i, (since, rate) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        lo, hi = max(since, start) if i else start, min(until, end)
        if hi > lo:
            amount += float(rate) * (hi - lo) / 3600.0
    return amount
