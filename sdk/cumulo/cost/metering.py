"""What a cluster used and what that cost: the client side of the usage ledger.

The ledger itself runs on the scheduler (:mod:`cumulo._ledger`), so every
kernel that attaches, and the CLI or Jupyter server through an RPC, sees the
same history. This module installs it, reads it, and turns it into money:

  spend = billing clock x price (:mod:`cumulo.cost.spend`)
    - a cluster with a provider price (``rate_per_hour`` on its registry row):
      the provider's clock, from launch to confirmed termination, rounded up to
      ``cumulo.cost.billing-granularity``, each stretch at its own rate where it changed
      (a spot instance taken back);
    - anything else (local, your own hosts, a team gateway): worker-time x the
      configured ``cumulo.cost.rate-per-worker-hour`` and ``rate-per-gpu-hour``;
      with neither set the spend is None and shown as "no rate set", never $0.

Every figure is an estimate (cumulo does not read provider invoices) and says
so, with the basis it was computed on.

Per cell (:meth:`Usage.cells`, filled by cumulo.cost.cellcost's tags): a cell is
charged for what its tasks used, busy worker-time x the same price
(:func:`cell_spend`). What no cell used is shown as rows of its own, so that
every view adds up to the spend (:func:`attribution`):

  spend = cells + other cells + outside cells + idle

"outside cells" is work submitted outside any notebook cell (a thread, a
script); "idle" is what is left: paid worker-time no task used, plus, on a
provider's clock, start-up, shutdown and billing rounding. Every view (the
table, the inline meter, the report, the sidebar, ``cumulo usage``) names a
cell the same way (:func:`cell_label`: its notebook and execution count). GPU
energy is shown only where the workers measured it (cumulo._energy), never
estimated.

When a cluster closes, its final usage (totals, busy/idle, energy, where the
spend went) is kept in its registry row (:func:`final_usage`), so that
``cumulo usage`` shows it afterwards (:func:`stored_usage_text`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta

from .. import _energy, _ledger, config
from ..exceptions import ClusterLost
from . import carbon
from .cellhistory import history, kernel_id
from .spend import Spend, rates, spend_of

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client

    from ..life.registry import ClusterRecord, Registry
    from ..life.watched import Measured

__all__ = [
    "CELL_COLUMNS", "IDLE", "OTHER_CELLS", "OUTSIDE", "Spend", "Usage", "attribution", "cell_label", "cell_spend",
    "cells_text", "co2_of", "co2_text", "fetch_cell", "fetch_ledger", "fetch_ledger_async", "final_usage", "idle_fraction",
    "install", "install_async",
    "ranked", "rates", "spend_of", "stored_usage", "stored_usage_text", "usage_text",
]

logger = logging.getLogger("cumulo")

#: The columns of ``cluster.usage.cells()``; times are timezone-aware datetimes (UTC).
CELL_COLUMNS = [
    "cell", "execution_count", "kernel", "start", "end", "wall", "submitted", "finished", "erred", "running",
    "task_seconds", "worker_seconds", "gpu_seconds", "energy_wh", "cost", "cost_kind", "cost_basis",
    "last_activity", "notebook", "first_line",
]
#: The row of work submitted outside any notebook cell (the ledger's own bucket).
OUTSIDE = _ledger.OUTSIDE
#: The row of cells not listed one by one (beyond the top few, or older than the ledger keeps).
OTHER_CELLS = "other cells"
#: The row of what no task used: the spend minus every other row.
IDLE = "idle"
_IDLE_BASIS = "paid time no task used (the spend minus the rows above: idle workers, start-up, billing rounding)"
#: The version of the usage JSON kept in a closed cluster's registry row.
USAGE_VERSION = 1


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


def cell_label(cell: dict[str, Any], *, me: str | None = None) -> str:
    """How every view names a cell: ``"etl.ipynb [7]"`` (its notebook and execution count).

    Where the notebook is unknown (a kernel outside a Jupyter session), a cell of
    ``me`` (this process's kernel id) is ``"[7]"`` and another kernel's ``"<kernel> [7]"``;
    a cell run without an execution count shows its sequence number. The ledger's
    catch-all rows ("outside cells", "earlier cells", ...) keep their own names.
    """
    kernel = cell.get("kernel")
    if kernel is None:
        return str(cell.get("label") or cell.get("tag"))
    count = cell.get("execution_count")
    number = f"[{count}]" if count is not None else f"[cell {cell.get('seq') if cell.get('seq') is not None else '?'}]"
    if cell.get("notebook"):
        return f"{cell['notebook']} {number}"
    return number if (me is not None and kernel == me) else f"{kernel} {number}"


def _less(whole: dict[str, Any] | None, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of ``whole`` minus those of ``parts`` (a bucket's rest), never below zero."""
    out: dict[str, Any] = {}
    for key in ("submitted", "finished", "erred", "running", "task_seconds", "busy_seconds", "gpu_seconds"):
        total = float((whole or {}).get(key) or 0.0) - sum(float(p.get(key) or 0.0) for p in parts)
        out[key] = max(0.0, total)
    return out


def _row(cell: dict[str, Any], kind: str, label: str, spend: Spend) -> dict[str, Any]:
    """One attribution row: what a cell (or a catch-all) used and cost, as every view shows it."""
    return {
        "label": label, "kind": kind, "cost": spend.amount, "basis": spend.basis,
        "task_seconds": float(cell.get("task_seconds") or 0.0),
        "worker_seconds": float(cell.get("busy_seconds") or 0.0),
        "gpu_seconds": float(cell.get("gpu_seconds") or 0.0),
        "running": int(cell.get("running") or 0),
        "execution_count": cell.get("execution_count"), "notebook": cell.get("notebook"),
        "first_line": cell.get("first_line"),
    }


def _idle(totals: dict[str, Any] | None, rows: list[dict[str, Any]], spend: Spend) -> dict[str, Any]:
    """The "idle" row: the spend minus every other row, so that the rows add up to the spend exactly.

    ``worker_seconds`` / ``gpu_seconds``: the paid worker- and GPU-time no row's tasks used.
    """
    worker = gpu = None
    if totals is not None:
        worker = max(0.0, float(totals.get("worker_seconds") or 0.0) - sum(r["worker_seconds"] or 0.0 for r in rows))
        gpu = max(0.0, float(totals.get("gpu_seconds") or 0.0) - sum(r["gpu_seconds"] or 0.0 for r in rows))
    cost = None
    if spend.amount is not None:
        cost = spend.amount - sum(r["cost"] or 0.0 for r in rows)
    return {"label": IDLE, "kind": "idle", "cost": cost, "basis": _IDLE_BASIS if cost is not None else spend.basis,
            "task_seconds": 0.0, "worker_seconds": worker, "gpu_seconds": gpu, "running": 0,
            "execution_count": None, "notebook": None, "first_line": None}


def attribution(ledger: dict[str, Any], record: ClusterRecord | None, *, spend: Spend | None = None,
                me: str | None = None) -> list[dict[str, Any]]:
    """Where a cluster's spend went, as rows that add up to it: the ledger's top cells, the other cells,
    work outside cells, and idle (the spend minus every other row).

    ``spend``: the figure to add up to (default: :func:`spend_of` the row and this ledger,
    now), so that a view pass the spend it shows. ``me``: this process's kernel id,
    for :func:`cell_label`. Each row: ``label``, ``kind`` ("cell", "other", "outside",
    "idle"), ``cost`` (None: no rate set), ``basis``, ``task_seconds``,
    ``worker_seconds`` (busy worker-time; for idle, the unused worker-time),
    ``gpu_seconds``, ``running``, and a cell's ``execution_count``, ``notebook`` and
    ``first_line``. Cut them to a few with :func:`ranked`.
    """
    spend = spend_of(record, ledger) if spend is None else spend
    summary = ledger.get("cell_summary") or {}
    workers = len(ledger.get("workers") or ())
    top = list(summary.get("top") or ())
    rows = [_row(c, "cell", cell_label(c, me=me), cell_spend(c, record, workers)) for c in top]
    # the rest of the cells: every cell the ledger counted (a ledger before v3 knows only the earlier ones)
    rest = _less(summary["all_cells"], top) if "all_cells" in summary else dict(summary.get("earlier") or {})
    rows.append(_row(rest, "other", OTHER_CELLS, cell_spend(rest, record, workers)))
    outside = summary.get("outside") or {}
    rows.append(_row(outside, "outside", OUTSIDE, cell_spend(outside, record, workers)))
    rows.append(_idle(ledger.get("totals"), rows, spend))
    return rows


def ranked(rows: list[dict[str, Any]], *, limit: int = 5) -> list[dict[str, Any]]:
    """The rows a view lists: the ``limit`` costliest cells (then by task time), the rest of the cells
    folded into "other cells", then "outside cells" and "idle"; together they still add up to the spend.

    Rows without a ``kind`` count as cells. "other cells" and "outside cells" are left
    out when nothing ran there; "idle" is kept whenever it has a figure.
    """
    cells = [r for r in rows if r.get("kind", "cell") == "cell"]
    cells.sort(key=lambda c: ((c.get("cost") or 0.0), c.get("task_seconds") or 0.0), reverse=True)
    keep, drop = cells[:max(int(limit), 0)], cells[max(int(limit), 0):]
    other = next((dict(r) for r in rows if r.get("kind") == "other"), None)
    if drop:
        other = other or {"label": OTHER_CELLS, "kind": "other", "cost": None, "basis": drop[0].get("basis"),
                          "task_seconds": 0.0, "worker_seconds": 0.0, "gpu_seconds": 0.0, "running": 0}
        for c in drop:
            for key in ("cost", "task_seconds", "worker_seconds", "gpu_seconds", "running"):
                if c.get(key) is not None:
                    other[key] = (other.get(key) or 0) + c[key]
    out = list(keep)
    for extra in (other, next((r for r in rows if r.get("kind") == "outside"), None)):
        if extra is not None and (extra.get("task_seconds") or extra.get("running") or extra.get("cost")):
            out.append(extra)
    idle = next((r for r in rows if r.get("kind") == "idle"), None)
    if idle is not None and (idle.get("cost") is not None or idle.get("worker_seconds")):
        out.append(idle)
    return out


def _idle_spend(ledger: dict[str, Any], record: ClusterRecord | None, spend: Spend,
                fraction: float | None) -> float | None:
    """What was paid for capacity no task used: the "idle" row of :func:`attribution`, so that the
    summary and the rows say the same; by the idle fraction for a ledger that keeps no cells."""
    if spend.amount is None:
        return None
    if "cell_summary" in ledger:
        return attribution(ledger, record, spend=spend)[-1]["cost"]
    return None if fraction is None else spend.amount * fraction


@dataclass(frozen=True)
class _RowOnly:
    """A cluster seen only through its registry row: what Usage reads of a cluster, without a client."""

    record: ClusterRecord
    registry: Registry | None
    client: Any = None
    #: "running": ask the (absent) client, as a cluster would; its row says the rest
    status: str = "running"

    @property
    def id(self) -> str:
        return self.record.id


class Usage:
    """``cluster.usage``: the ledger of one cluster read through its client, plus this kernel's cells.

    ``cluster`` is a :class:`cumulo.life.watched.Measured`: a cluster's client, status and row
    (re-read from its registry where there is one, so spend follows the row's state).
    """

    def __init__(self, cluster: Measured) -> None:
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
        rec = self._cluster.record
        reg = self._cluster.registry
        cid = self._cluster.id or getattr(rec, "id", None)
        if reg is not None and cid:
            try:
                return reg.get(cid)
            except Exception:
                return rec
        return rec

    def ledger(self, *, samples: int = 0, cells: bool = False, kernel: str | None = None) -> dict[str, Any] | None:
        """The raw ledger (None if the plugin is not installed on this scheduler)."""
        if self._cluster.status != "running":
            return self.final  # closed or lost: the last reading, if one was kept (the row has the rest)
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
        record = self._record()
        spend = spend_of(record, ledger)
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
            "idle_spend": _idle_spend(ledger, record, spend, idle),
            "idle_seconds": ledger["idle_seconds"],
            "processing": ledger["processing"],
            "since": ledger["started"],
            # GPU energy only where the workers measured it (NVML power), never a guess
            "energy_wh": None if t.get("energy_j") is None else t["energy_j"] / 3600.0,
            "power_w": t.get("power_w"),
            "tasks_running": t.get("tasks_running"),
        })
        out.update(co2_of(record, out["energy_wh"]))
        return out

    def record_cell(self, row: dict[str, Any]) -> None:
        """Remember one cell's figures as the ledger gave them (called by cumulo.cost.cellcost)."""
        tag = row.get("tag")
        if tag is None:
            return
        self._cells[tag] = row
        self._cells.move_to_end(tag)
        while len(self._cells) > self._max_cells:
            self._cells.popitem(last=False)

    def _refresh_cells(self) -> dict[str, Any] | None:
        """Read this kernel's cells from the ledger now; return that reading (None when the cluster is
        gone or did not answer: the figures stay as last read)."""
        if self._cluster.status != "running" or self._cluster.client is None:
            return None
        try:
            ledger = fetch_ledger(self._cluster.client, kernel=kernel_id(), timeout=5.0)
        except Exception:  # unreachable: keep the figures as last read
            return None
        self.absorb(ledger)
        return ledger

    def absorb(self, ledger: dict[str, Any]) -> None:
        """Take this kernel's cells and the catch-all rows from a ledger read with ``kernel=`` (or ``cells=``)."""
        if "cells" not in ledger:
            return  # a ledger from an older cumulo keeps no cells
        for row in ledger["cells"]:
            self.record_cell(row)
        summary = ledger.get("cell_summary") or {}
        self._others = [r for r in (summary.get("outside"), ledger.get("other_kernels"), summary.get("earlier"))
                        if r]
        self._workers = len(ledger.get("workers") or ())

    def cells(self, *, others: bool = True) -> pd.DataFrame:
        """One row per notebook cell of this kernel that submitted work to this cluster, and where the rest
        of the spend went.

        Read live from the scheduler's ledger (a row whose tasks still run shows them
        under ``running`` and grows as they finish); after close, as read while it closed.
        Columns: :data:`CELL_COLUMNS`. ``cell`` names the cell as every view does
        (:func:`cell_label`: "etl.ipynb [7]"), ``first_line`` is its first line of source.
        ``start``/``end`` are when the cell ran, ``last_activity`` when its last task
        finished; ``wall`` is the cell's own run time, so a cell that only waits for
        earlier work is charged its wall time and nothing else. ``cost`` is the cell's
        busy worker-time (``worker_seconds``) x the price (:func:`cell_spend`), with
        ``cost_kind``/``cost_basis`` saying so.

        ``others``: add the rows "outside cells" (work submitted outside any cell: a
        thread, a script), "other kernels", "earlier cells" (older than the ledger
        keeps) and "idle" (the spend no task used: its ``worker_seconds`` are the idle
        worker-seconds), so that the rows add up to the ledger's totals and their
        ``cost`` to the spend, which ``frame.attrs["spend"]`` holds (a :class:`Spend`).
        """
        import pandas as pd

        ledger = self._refresh_cells()
        if ledger is None and self._cluster.status != "running":
            ledger = self.final
        record = self._record()
        spend = spend_of(record, ledger)
        local = history()
        me = kernel_id()
        rows = []
        for tag, cell in sorted(self._cells.items(), key=lambda kv: (kv[1].get("seq") or 0)):
            rows.append(self._cell_row(cell, local.get(tag), record, me=me))
        if others:
            for cell in self._others:
                if cell.get("submitted") or cell.get("task_seconds") or cell.get("finished") or cell.get("erred"):
                    rows.append(self._cell_row(cell, None, record, label=str(cell.get("tag"))))
            idle = _idle(None if ledger is None else ledger.get("totals"),
                         [{"worker_seconds": r["worker_seconds"], "gpu_seconds": r["gpu_seconds"],
                           "cost": r["cost"]} for r in rows], spend)
            rows.append({**dict.fromkeys(CELL_COLUMNS), "cell": IDLE, "submitted": 0, "finished": 0, "erred": 0,
                         "running": 0, "task_seconds": 0.0, "worker_seconds": idle["worker_seconds"],
                         "gpu_seconds": idle["gpu_seconds"], "cost": idle["cost"], "cost_kind": spend.kind,
                         "cost_basis": idle["basis"]})
        frame = pd.DataFrame(rows, columns=CELL_COLUMNS)
        for col in ("start", "end", "last_activity"):
            frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True)
        frame["execution_count"] = frame["execution_count"].astype("Int64")  # empty on the catch-all rows
        for col in ("wall", "worker_seconds", "gpu_seconds", "energy_wh", "cost"):  # NaN where there is none
            frame[col] = frame[col].astype("float64")
        frame.attrs["spend"] = spend
        return frame

    def _cell_row(self, cell: dict[str, Any], local: dict[str, Any] | None, record: ClusterRecord | None,
                  *, label: str | None = None, me: str | None = None) -> dict[str, Any]:
        spend = cell_spend(cell, record, self._workers)
        local = local or {}
        count = local.get("execution_count", cell.get("execution_count"))
        named = {**cell, "execution_count": count, "notebook": cell.get("notebook") or local.get("notebook")}
        energy = cell.get("energy_j")
        return {
            "cell": label or cell_label(named, me=me),
            "execution_count": count,
            "kernel": cell.get("kernel"),
            "start": local.get("start", cell.get("start")),
            "end": local.get("end", cell.get("end")),
            "wall": local.get("wall", cell.get("wall")),
            "submitted": cell.get("submitted", 0),
            "finished": cell.get("finished", 0),
            "erred": cell.get("erred", 0),
            "running": cell.get("running", 0),
            "task_seconds": cell.get("task_seconds", 0.0),
            "worker_seconds": float(cell.get("busy_seconds") or 0.0),
            "gpu_seconds": cell.get("gpu_seconds", 0.0),
            "energy_wh": None if energy is None else energy / 3600.0,
            "cost": spend.amount,
            "cost_kind": spend.kind,
            "cost_basis": spend.basis,
            "last_activity": cell.get("last") if (cell.get("finished") or cell.get("erred")) else None,
            "notebook": named["notebook"],
            "first_line": cell.get("first_line") or local.get("first_line"),
        }

    def closing(self, ledger: dict[str, Any]) -> dict[str, Any]:
        """As the cluster closes: keep ``ledger`` (read with this kernel's cells) as the final reading, and
        return the usage to keep in the registry row (:func:`final_usage`)."""
        self.final = ledger
        self.absorb(ledger)
        return final_usage(self._record(), ledger, me=kernel_id())

    def __repr__(self) -> str:
        try:
            s = self.summary()
        except ClusterLost as exc:
            return f"<Usage: {exc}>"
        return usage_text(s)

    def _repr_html_(self) -> str:
        import html

        return f"<pre style='margin:0'>{html.escape(repr(self))}</pre>"


def co2_of(record: ClusterRecord | None, energy_wh: float | None) -> dict[str, Any]:
    """CO2 of measured GPU energy in the cluster's region (cumulo.cost.carbon): ``co2_g``, the grid's
    ``carbon_intensity`` (g/kWh) and ``carbon_source``; nothing where no energy was measured."""
    if energy_wh is None:
        return {}
    spec = getattr(record, "spec", None) or {}
    grid = carbon.intensity(getattr(record, "provider", None), spec.get("region") if isinstance(spec, dict) else None)
    return {"co2_g": carbon.co2_grams(energy_wh, grid), "carbon_intensity": grid.g_per_kwh,
            "carbon_source": grid.source}


def co2_text(s: dict[str, Any]) -> str:
    """'; 1.23 g CO2 (480 g/kWh: source)' where a summary has measured energy, else ''."""
    if s.get("co2_g") is None:
        return ""
    return f"; {s['co2_g']:,.2f} g CO2 ({s.get('carbon_intensity', 0):g} g/kWh: {s.get('carbon_source')})"


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
        lines.append(f"  GPU energy {s['energy_wh']:,.3f} Wh (NVML power{now}){co2_text(s)}")
    if s["idle_spend"] is not None and s["spend"]:
        what = "GPUs" if s["gpus"] else "workers"
        lines.append(f"  ${s['idle_spend']:,.2f} of ${s['spend']:,.2f} paid for idle {what}")
    return "\n".join(lines)



def final_usage(record: ClusterRecord | None, ledger: dict[str, Any], *, me: str | None = None,
                limit: int = 5) -> dict[str, Any]:
    """The usage a closed cluster keeps in its registry row (``usage``, as JSON): what ``cumulo usage``
    shows once its scheduler is gone.

    ``{"version", "recorded", "summary": Usage.summary (totals, busy/idle, GPU, energy, spend),
    "cells": the :func:`ranked` rows of :func:`attribution` (top cells, other cells, outside
    cells, idle)}``. Plain JSON: non-finite numbers become None.
    """
    summary = Usage.of_record(record).summary(ledger) if record is not None else {}
    spend = spend_of(record, ledger)
    rows = ranked(attribution(ledger, record, spend=spend, me=me), limit=limit)
    return _finite({"version": USAGE_VERSION, "recorded": time.time(), "summary": summary, "cells": rows})


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stored_usage(record: ClusterRecord) -> dict[str, Any] | None:
    """The usage kept in a closed cluster's row, reconciled with its final spend; None when none was kept
    (it closed before cumulo kept usage, or its ledger could not be read as it closed).

    The row's spend may have grown after the reading (a provider bills until it
    confirms termination): the "idle" row takes the difference, so that the rows
    still add up to the spend shown.
    """
    if not record.usage:
        return None
    try:
        data = json.loads(record.usage)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        return None
    summary = dict(data["summary"])
    spend = spend_of(record, None)
    if spend.amount is None and record.cost is not None:
        spend = Spend(record.cost, record.rate_per_hour, summary.get("cost_basis") or "recorded at close",
                      estimate=(record.cost_kind or "estimate") != "billed")
    rows = [dict(r) for r in data.get("cells") or () if isinstance(r, dict)]
    if spend.amount is not None:
        summary.update(spend=spend.amount, cost_kind=spend.kind, cost_basis=spend.basis, rate_per_hour=None)
        for r in rows:
            if r.get("kind") == "idle":
                r["cost"] = spend.amount - sum(x.get("cost") or 0.0 for x in rows if x.get("kind") != "idle")
                summary["idle_spend"] = r["cost"]
    return {**data, "summary": summary, "cells": rows}


def cells_text(rows: list[dict[str, Any]], spend: float | None = None) -> str:
    """Where the spend went, as an aligned plain-text table (``cumulo usage``): row, task-s, cost, and a
    cell's first line; with ``spend``, a total row that shows the rows add up to it."""
    if not rows:
        return ""
    head = "where the spend went"
    width = max(len(head), *(len(str(r.get("label"))) for r in rows))
    lines = [f"  {head:<{width}}  {'task-s':>9}  {'cost':>10}"]
    for r in rows:
        cost = "no rate" if r.get("cost") is None else f"${r['cost']:,.4f}"
        task = "" if r.get("kind") == "idle" else f"{r.get('task_seconds') or 0.0:.1f}"
        hint = f"   {r['first_line']}" if r.get("first_line") else ""
        lines.append(f"  {str(r.get('label')):<{width}}  {task:>9}  {cost:>10}{hint}")
    if spend is not None and any(r.get("cost") is not None for r in rows):
        lines.append(f"  {'total (the spend)':<{width}}  {'':>9}  {f'${spend:,.4f}':>10}")
    return "\n".join(lines)


def stored_usage_text(record: ClusterRecord) -> str:
    """The lines `cumulo usage` prints for a closed cluster: its kept usage, or why there is none."""
    data = stored_usage(record)
    if data is None:
        return ("  no usage kept for this cluster: it closed before cumulo kept usage at close, or its "
                "scheduler did not answer as it closed (its spend above is all that was recorded)")
    text = usage_text(data["summary"]) if data["summary"].get("since") is not None else ""
    table = cells_text(data["cells"], data["summary"].get("spend"))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("recorded") or record.closed or 0))
    return "\n".join(x for x in (f"  final usage, read at close ({when}):", text, table) if x)