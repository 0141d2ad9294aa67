"""What a cluster used and what that cost: the client side of the usage ledger.

The ledger itself runs on the scheduler (:mod:`cumulo._ledger`), so every
kernel that attaches, and the CLI or Jupyter server through an RPC, sees the
same history. This module installs it, reads it, and turns it into money:

  spend = billing clock x price
    - a cluster with a provider price (``rate_per_hour`` on its registry row):
      the provider's clock, from launch to confirmed termination, rounded up to
      ``cumulo.cost.billing-granularity``;
    - anything else (local, your own hosts, a team gateway): worker-time x the
      configured ``cumulo.cost.rate-per-worker-hour`` and ``rate-per-gpu-hour``;
      with neither set the spend is None and shown as "no rate set", never $0.

Every figure is an estimate (cumulo does not read provider invoices) and says
so, with the basis it was computed on.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from . import _ledger, config
from .exceptions import ClusterLost

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client

    from .registry import ClusterRecord, Registry

__all__ = [
    "Spend", "Usage", "fetch_ledger", "fetch_ledger_async", "idle_fraction", "install", "install_async",
    "rates", "spend_of", "usage_text",
]

_CELL_COLUMNS = [
    "execution_count", "start", "wall", "tasks", "task_seconds", "gpu_seconds", "cost", "cost_kind",
]


def _plugin() -> _ledger.UsageLedger:
    import cloudpickle

    cloudpickle.register_pickle_by_value(_ledger)
    return _ledger.UsageLedger(
        sample_interval=parse_timedelta(config.get("cost.sample-interval", "2s")),
        gpu_busy_threshold=float(config.get("guards.idle-gpu-threshold", 10)),
    )


async def install_async(client: Client) -> bool:
    """:func:`install` for an asynchronous client (awaited on the client's loop)."""
    try:
        await client.register_plugin(_plugin(), name=_ledger.PLUGIN_NAME)
    except Exception as exc:
        _warn_not_installed(client, exc)
        return False
    return True


def _warn_not_installed(client: Client, exc: BaseException) -> None:
    warnings.warn(
        f"cumulo could not install its usage ledger on {client.scheduler.address}: {exc}. "
        "Cost and usage figures for this cluster are unavailable; budgets fall back to the "
        "provider clock where there is a price.",
        RuntimeWarning,
        stacklevel=3,
    )


def install(client: Client) -> bool:
    """Install the ledger plugin on the client's scheduler; a no-op if it is already there.

    The plugin is pickled by value, so the scheduler needs only ``distributed``.
    Returns False (with a warning saying what is lost) if the scheduler refused it,
    e.g. because it forbids pickled plugins; the cluster still works without it.
    """
    try:
        client.register_plugin(_plugin(), name=_ledger.PLUGIN_NAME)
    except Exception as exc:  # the scheduler may refuse pickled code; metering is optional
        _warn_not_installed(client, exc)
        return False
    return True


def fetch_ledger(client: Client, *, mark: str | None = None, samples: int = 0,
                 departed: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    """The scheduler's ledger as plain data (one RPC). Raises ClusterLost if unreachable or too slow."""
    try:
        return client.sync(client.scheduler.cumulo_ledger, mark=mark, samples=samples, departed=departed,
                           callback_timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterLost(
            f"the scheduler at {client.scheduler.address} did not answer: {exc}. "
            "Check `cumulo ls`; reconnect with cumulo.connect(name=...) or close it."
        ) from exc


async def fetch_ledger_async(address: str, security: Any = None, *, timeout: float = 5.0,
                             samples: int = 0) -> dict[str, Any] | None:
    """Read a ledger from any process (CLI, reaper) by address; None if unreachable or not installed."""
    from distributed.core import rpc
    from distributed.security import Security

    try:
        async with rpc(address, timeout=timeout,
                       connection_args=(security or Security()).get_connection_args("client")) as sched:
            return await sched.cumulo_ledger(samples=samples)
    except Exception:
        return None


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
        return Spend(record.rate_per_hour * billed / 3600.0, record.rate_per_hour,
                     "provider clock x catalog price")
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


def idle_fraction(totals: dict[str, Any]) -> float | None:
    """Share of paid capacity that ran no task: GPUs where there are GPUs, else workers."""
    if totals.get("gpu_seconds"):
        busy = totals["gpu_busy_seconds"]
        if totals.get("gpu_util_seconds") is not None:
            busy = max(busy, totals["gpu_util_seconds"])
        return max(0.0, min(1.0, 1.0 - busy / totals["gpu_seconds"]))
    if totals.get("worker_seconds"):
        return max(0.0, min(1.0, 1.0 - totals["busy_worker_seconds"] / totals["worker_seconds"]))
    return None


@dataclass(frozen=True)
class _RowOnly:
    """A cluster seen only through its registry row: what Usage reads of a cluster, without a client."""

    record: ClusterRecord
    registry: Registry | None
    client: Any = None

    @property
    def id(self) -> str:
        return self.record.id


class Usage:
    """``cluster.usage``: the ledger of one cluster read through its client, plus this kernel's cells.

    ``cluster`` is anything with ``.client`` and ``.record`` (a ClusterRecord; re-read from
    ``.registry`` where there is one, so spend follows the row's state).
    """

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._cells: deque[dict[str, Any]] = deque(maxlen=int(config.get("cost.max-cells", 10000)))
        self.installed = False
        #: The scheduler the ledger was installed on (a cell mark goes only to that one).
        self.scheduler_id: str | None = None
        #: The ledger as last read while the cluster closed (what ``usage`` shows afterwards).
        self.final: dict[str, Any] | None = None

    @classmethod
    def of_record(cls, record: ClusterRecord, registry: Registry | None = None) -> Usage:
        """The usage of a cluster known only from its registry row (the CLI, the Jupyter server)."""
        return cls(_RowOnly(record, registry))

    def record(self) -> ClusterRecord | None:
        """The cluster's registry row, freshly read."""
        return self._record()

    def _record(self) -> ClusterRecord | None:
        rec = getattr(self._cluster, "record", None) or getattr(self._cluster, "_record", None)
        reg = getattr(self._cluster, "registry", None)
        cid = getattr(self._cluster, "id", None) or getattr(rec, "id", None)
        if reg is not None and cid:
            try:
                return reg.get(cid)
            except Exception:
                return rec
        return rec

    def ledger(self, *, samples: int = 0, mark: str | None = None) -> dict[str, Any] | None:
        """The raw ledger (None if the plugin is not installed on this scheduler)."""
        if self.final is not None and getattr(self._cluster, "status", "running") != "running":
            return self.final
        try:
            return fetch_ledger(self._cluster.client, samples=samples, mark=mark)
        except ClusterLost:
            raise
        except Exception:
            return None

    def spend(self, ledger: dict[str, Any] | None = None) -> Spend:
        """Spend so far, with its basis."""
        if ledger is None:
            ledger = self.ledger()
        return spend_of(self._record(), ledger)

    def summary(self, ledger: dict[str, Any] | None = None) -> dict[str, Any]:
        """Plain-data summary: busy vs idle worker-seconds, GPU-seconds, spend and its basis."""
        if ledger is None:
            ledger = self.ledger()
        spend = spend_of(self._record(), ledger)
        out: dict[str, Any] = {"spend": spend.amount, "rate_per_hour": spend.rate_per_hour,
                               "cost_kind": spend.kind, "cost_basis": spend.basis, "estimate": spend.estimate}
        if ledger is None:
            out["ledger"] = None
            return out
        t = ledger["totals"]
        idle = idle_fraction(t)
        out.update({
            "workers": len(ledger["workers"]),
            "threads": sum(w["nthreads"] for w in ledger["workers"]),
            "gpus": sum(w["gpus"] for w in ledger["workers"]),
            "gpu_model": next((w["gpu_model"] for w in ledger["workers"] if w["gpu_model"]), None),
            "worker_seconds": t["worker_seconds"],
            "busy_worker_seconds": t["busy_worker_seconds"],
            "idle_worker_seconds": max(0.0, t["worker_seconds"] - t["busy_worker_seconds"]),
            "task_seconds": t["task_seconds"],
            "tasks": t["tasks_done"],
            "tasks_erred": t["tasks_erred"],
            "gpu_seconds": t["gpu_seconds"],
            "gpu_busy_seconds": t["gpu_busy_seconds"],
            "gpu_util_seconds": t["gpu_util_seconds"],
            "idle_fraction": idle,
            "idle_spend": None if (spend.amount is None or idle is None) else spend.amount * idle,
            "idle_seconds": ledger["idle_seconds"],
            "processing": ledger["processing"],
            "since": ledger["started"],
        })
        return out

    def record_cell(self, row: dict[str, Any]) -> None:
        """Append one cell's figures (called by cumulo.cellcost)."""
        self._cells.append(row)

    def cells(self) -> pd.DataFrame:
        """One row per notebook cell that used this cluster in this kernel."""
        import pandas as pd

        return pd.DataFrame(list(self._cells), columns=_CELL_COLUMNS)

    def widget(self) -> Any:
        """A live cost/usage widget for this cluster (text outside Jupyter)."""
        from .widgets import CostMeter

        return CostMeter(self._cluster)

    def __repr__(self) -> str:
        try:
            s = self.summary()
        except ClusterLost as exc:
            return f"<Usage: {exc}>"
        return usage_text(s)

    def _repr_html_(self) -> str:
        import html

        return f"<pre style='margin:0'>{html.escape(repr(self))}</pre>"


def usage_text(s: dict[str, Any]) -> str:
    """A usage summary as the few lines `cumulo usage` and the repr print."""
    money = (
        "no rate set (set cumulo.cost.rate-per-worker-hour or rate-per-gpu-hour to price this cluster)"
        if s["spend"] is None
        else f"${s['spend']:,.2f} ({s['cost_kind']}: {s['cost_basis']})"
    )
    if s.get("ledger", True) is None:
        return f"Usage: spend {money}; no ledger on this scheduler"
    lines = [
        f"Usage since {time.strftime('%H:%M:%S', time.localtime(s['since']))}: spend {money}",
        f"  workers {s['workers']} ({s['threads']} threads, {s['gpus']} GPUs"
        + (f" {s['gpu_model']}" if s["gpu_model"] else "") + ")",
        f"  worker-seconds {s['worker_seconds']:.1f}: busy {s['busy_worker_seconds']:.1f}, "
        f"idle {s['idle_worker_seconds']:.1f}; task-seconds {s['task_seconds']:.1f} over {s['tasks']} tasks",
    ]
    if s["gpus"] or s["gpu_seconds"]:
        util = "n/a" if s["gpu_util_seconds"] is None else f"{s['gpu_util_seconds']:.1f}"
        lines.append(f"  GPU-seconds {s['gpu_seconds']:.1f}: busy {s['gpu_busy_seconds']:.1f}, NVML util-seconds {util}")
    if s["idle_spend"] is not None and s["spend"]:
        what = "GPUs" if s["gpus"] else "workers"
        lines.append(f"  ${s['idle_spend']:,.2f} of ${s['spend']:,.2f} paid for idle {what}")
    return "\n".join(lines)
