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

Per cell (:meth:`Usage.cells`, filled by cumulo.cellcost's tags): a cell is
charged for what its tasks used, busy worker-time x the same price
(:func:`cell_spend`); idle capacity is charged to no cell. GPU energy is shown
only where the workers measured it (cumulo._energy), never estimated.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from . import _energy, _ledger, config
from .exceptions import ClusterLost

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client

    from .registry import ClusterRecord, Registry

__all__ = [
    "CELL_COLUMNS", "Spend", "Usage", "cell_spend", "fetch_cell", "fetch_ledger", "fetch_ledger_async",
    "idle_fraction", "install", "install_async", "rates", "spend_of", "usage_text",
]

logger = logging.getLogger("cumulo")

#: The columns of ``cluster.usage.cells()``; times are timezone-aware datetimes (UTC).
CELL_COLUMNS = [
    "cell", "execution_count", "kernel", "start", "end", "wall", "submitted", "finished", "erred", "running",
    "task_seconds", "gpu_seconds", "energy_wh", "cost", "cost_kind", "cost_basis", "last_activity",
]


def _plugin() -> _ledger.UsageLedger:
    import cloudpickle

    cloudpickle.register_pickle_by_value(_ledger)
    return _ledger.UsageLedger(
        sample_interval=parse_timedelta(config.get("cost.sample-interval", "2s")),
        gpu_busy_threshold=float(config.get("guards.idle-gpu-threshold", 10)),
        max_cells=int(config.get("cost.ledger-cells", 2000)),
    )


def _power_plugin() -> _energy.PowerSampler | None:
    """The workers' GPU power sampler, or None when ``cumulo.cost.power-interval`` is null (off)."""
    import cloudpickle

    interval = config.get("cost.power-interval", "1s")
    if interval is None:
        return None
    cloudpickle.register_pickle_by_value(_energy)
    return _energy.PowerSampler(interval=float(parse_timedelta(interval)))


async def install_async(client: Client) -> bool:
    """:func:`install` for an asynchronous client (awaited on the client's loop)."""
    try:
        await client.register_plugin(_plugin(), name=_ledger.PLUGIN_NAME)
    except Exception as exc:
        _warn_not_installed(client, exc)
        return False
    sampler = _power_plugin()
    if sampler is not None:
        try:
            await client.register_plugin(sampler, name=_energy.PLUGIN_NAME)
        except Exception as exc:  # energy is optional: no figure rather than a broken cluster
            logger.debug("cumulo: no GPU power sampling on %s: %s", client.scheduler.address, exc)
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
    """Install the ledger plugin on the client's scheduler (and the GPU power sampler on its workers).

    A no-op if they are already there. The plugins are pickled by value, so the
    scheduler and workers need only ``distributed``. Returns False (with a
    warning saying what is lost) if the scheduler refused the ledger, e.g.
    because it forbids pickled plugins; the cluster still works without it.
    """
    try:
        client.register_plugin(_plugin(), name=_ledger.PLUGIN_NAME)
    except Exception as exc:  # the scheduler may refuse pickled code; metering is optional
        _warn_not_installed(client, exc)
        return False
    sampler = _power_plugin()
    if sampler is not None:
        try:
            client.register_plugin(sampler, name=_energy.PLUGIN_NAME)
        except Exception as exc:
            logger.debug("cumulo: no GPU power sampling on %s: %s", client.scheduler.address, exc)
    return True


def fetch_ledger(client: Client, *, samples: int = 0, departed: bool = False, cells: bool = False,
                 kernel: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """The scheduler's ledger as plain data (one RPC). Raises ClusterLost if unreachable or too slow.

    ``cells``: include every notebook cell the ledger holds; ``kernel``: only that
    kernel's cells (the other kernels' added up in ``other_kernels``).
    """
    kwargs: dict[str, Any] = {"samples": samples, "departed": departed}
    if cells or kernel is not None:  # a v1 ledger (older cumulo) knows neither argument
        kwargs.update(cells=cells, kernel=kernel)
    try:
        return client.sync(client.scheduler.cumulo_ledger, **kwargs, callback_timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterLost(
            f"the scheduler at {client.scheduler.address} did not answer: {exc}. "
            "Check `cumulo ls`; reconnect with cumulo.connect(name=...) or close it."
        ) from exc


def fetch_cell(client: Client, tag: str, *, wait: float = 2.0, timeout: float = 5.0) -> dict[str, Any] | None:
    """One notebook cell's figures from the ledger, once its end-of-cell mark arrived (one RPC).

    None when the cell submitted no task to this scheduler. Raises ClusterLost if the
    scheduler does not answer within ``timeout`` seconds.
    """
    try:
        reply = client.sync(client.scheduler.cumulo_cell, tag=tag, timeout=wait, callback_timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterLost(f"the scheduler at {client.scheduler.address} did not answer: {exc}") from exc
    return reply.get("cell")


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


def cell_spend(cell: dict[str, Any], record: ClusterRecord | None, workers: int) -> Spend:
    """Money for what one cell's tasks used: their busy worker-time (and GPU-time) x the price.

    A task that ran S seconds on a worker with T threads used S/T of that worker.
    With a provider price, a worker costs the cluster's rate split over its
    ``workers``; otherwise the configured per-worker and per-GPU rates. Idle
    capacity is charged to no cell (it shows in the cluster's spend).
    """
    busy = float(cell.get("busy_seconds") or 0.0)
    gpu = float(cell.get("gpu_seconds") or 0.0)
    if record is not None and record.rate_per_hour is not None:
        per_worker = record.rate_per_hour / max(int(workers), 1)
        return Spend(busy / 3600.0 * per_worker, per_worker, "task time x provider price per worker")
    per_worker, per_gpu = rates()
    if per_worker is None and per_gpu is None:
        return Spend(None, None, "no rate set")
    amount = busy / 3600.0 * (per_worker or 0.0) + gpu / 3600.0 * (per_gpu or 0.0)
    return Spend(amount, per_worker, "task time x configured rate")


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
        #: This kernel's cells as last read from the ledger (tag -> figures), bounded.
        self._cells: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max_cells = int(config.get("cost.max-cells", 10000))
        #: The catch-all rows (outside cells, other kernels, earlier cells) as last read.
        self._others: list[dict[str, Any]] = []
        self._workers = 0
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

    def ledger(self, *, samples: int = 0, cells: bool = False, kernel: str | None = None) -> dict[str, Any] | None:
        """The raw ledger (None if the plugin is not installed on this scheduler)."""
        if self.final is not None and getattr(self._cluster, "status", "running") != "running":
            return self.final
        try:
            return fetch_ledger(self._cluster.client, samples=samples, cells=cells, kernel=kernel)
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
            # GPU energy only where the workers measured it (NVML power), never a guess
            "energy_wh": None if t.get("energy_j") is None else t["energy_j"] / 3600.0,
            "power_w": t.get("power_w"),
            "tasks_running": t.get("tasks_running"),
        })
        return out

    def record_cell(self, row: dict[str, Any]) -> None:
        """Remember one cell's figures as the ledger gave them (called by cumulo.cellcost)."""
        tag = row.get("tag")
        if tag is None:
            return
        self._cells[tag] = row
        self._cells.move_to_end(tag)
        while len(self._cells) > self._max_cells:
            self._cells.popitem(last=False)

    def _refresh_cells(self) -> None:
        """Read this kernel's cells from the ledger now (nothing when the cluster is gone)."""
        from .cellhistory import kernel_id

        if getattr(self._cluster, "status", "running") != "running" or self._cluster.client is None:
            return
        try:
            ledger = fetch_ledger(self._cluster.client, kernel=kernel_id(), timeout=5.0)
        except Exception:  # unreachable: keep the figures as last read
            return
        if "cells" not in ledger:
            return  # a ledger from an older cumulo keeps no cells
        for row in ledger["cells"]:
            self.record_cell(row)
        summary = ledger.get("cell_summary") or {}
        self._others = [r for r in (summary.get("outside"), ledger.get("other_kernels"), summary.get("earlier"))
                        if r]
        self._workers = len(ledger.get("workers") or ())

    def cells(self, *, others: bool = True) -> pd.DataFrame:
        """One row per notebook cell of this kernel that submitted work to this cluster.

        Read live from the scheduler's ledger (a row whose tasks still run shows them
        under ``running`` and grows as they finish); after close, as last read.
        Columns: :data:`CELL_COLUMNS`. ``start``/``end`` are when the cell ran,
        ``last_activity`` when its last task finished; ``wall`` is the cell's own
        run time, so a cell that only waits for earlier work is charged its wall
        time and nothing else. ``cost`` is the cell's task time x the price
        (:func:`cell_spend`), with ``cost_kind``/``cost_basis`` saying so.

        ``others``: add the rows "outside cells" (work submitted outside any cell: a
        thread, a script), "other kernels" and "earlier cells" (older than the ledger
        keeps), so that the rows add up to the ledger's totals.
        """
        import pandas as pd

        from .cellhistory import history

        self._refresh_cells()
        record = self._record()
        local = history()
        rows = []
        for tag, cell in sorted(self._cells.items(), key=lambda kv: (kv[1].get("seq") or 0)):
            rows.append(self._cell_row(cell, local.get(tag), record))
        if others:
            for cell in self._others:
                if cell.get("submitted") or cell.get("task_seconds") or cell.get("finished") or cell.get("erred"):
                    rows.append(self._cell_row(cell, None, record, label=str(cell.get("tag"))))
        frame = pd.DataFrame(rows, columns=CELL_COLUMNS)
        for col in ("start", "end", "last_activity"):
            frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True)
        frame["execution_count"] = frame["execution_count"].astype("Int64")  # empty on the catch-all rows
        for col in ("wall", "energy_wh", "cost"):  # NaN where there is none (no rate, nothing measured)
            frame[col] = frame[col].astype("float64")
        return frame

    def _cell_row(self, cell: dict[str, Any], local: dict[str, Any] | None, record: ClusterRecord | None,
                  *, label: str | None = None) -> dict[str, Any]:
        spend = cell_spend(cell, record, self._workers)
        count = (local or {}).get("execution_count", cell.get("execution_count"))
        energy = cell.get("energy_j")
        return {
            "cell": label or (f"[{count}]" if count is not None else str(cell.get("tag"))),
            "execution_count": count,
            "kernel": cell.get("kernel"),
            "start": (local or {}).get("start", cell.get("start")),
            "end": (local or {}).get("end", cell.get("end")),
            "wall": (local or {}).get("wall", cell.get("wall")),
            "submitted": cell.get("submitted", 0),
            "finished": cell.get("finished", 0),
            "erred": cell.get("erred", 0),
            "running": cell.get("running", 0),
            "task_seconds": cell.get("task_seconds", 0.0),
            "gpu_seconds": cell.get("gpu_seconds", 0.0),
            "energy_wh": None if energy is None else energy / 3600.0,
            "cost": spend.amount,
            "cost_kind": spend.kind,
            "cost_basis": spend.basis,
            "last_activity": cell.get("last") if (cell.get("finished") or cell.get("erred")) else None,
        }

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
    if s.get("energy_wh") is not None:
        now = "" if s.get("power_w") is None else f", {s['power_w']:,.0f} W now"
        lines.append(f"  GPU energy {s['energy_wh']:,.3f} Wh (NVML power{now})")
    if s["idle_spend"] is not None and s["spend"]:
        what = "GPUs" if s["gpus"] else "workers"
        lines.append(f"  ${s['idle_spend']:,.2f} of ${s['spend']:,.2f} paid for idle {what}")
    return "\n".join(lines)
