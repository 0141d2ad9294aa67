"""One quiet line after each notebook cell that used a cluster: wall time, busy seconds, cost.

IPython ``pre_run_cell`` / ``post_run_cell`` hooks, registered by ``%load_ext
cumulo`` or on connect (``cumulo.widgets.cell-line-on-connect``). Before a
cell, each tracked cluster gets a *mark* on the client's batched stream (a
message, no round trip); the ledger on the scheduler snapshots its counters
when the mark arrives. After the cell, a cluster whose stream carried nothing
else was not touched: nothing is printed and nothing is asked (the common case
costs microseconds). Otherwise one RPC returns the counters since the mark.

The busy seconds are the cluster's, not only this kernel's: on a cluster shared
with other kernels, their work during this cell is counted too.
"""

from __future__ import annotations

import html
import itertools
import os
import time
import weakref
from typing import Any

from . import config
from .metering import fetch_ledger, rates

__all__ = ["cell_cost", "loaded", "register", "track", "tracked", "unregister"]

_tracked: weakref.WeakSet[Any] = weakref.WeakSet()
_pending: list[tuple[Any, str, int]] = []
_started: list[float] = [0.0, 0.0]  # perf_counter, time.time at pre_run_cell
_counter = itertools.count()
_registered: weakref.WeakSet[Any] = weakref.WeakSet()


def track(cluster: Any) -> None:
    """Follow ``cluster`` in per-cell lines; registers the IPython hooks if running in IPython."""
    _tracked.add(cluster)
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None:
        register(ip)


def tracked() -> list[Any]:
    """Clusters followed by the per-cell hooks in this process."""
    return list(_tracked)


def loaded() -> bool:
    """Whether the hooks are registered in an IPython shell of this process (%load_ext cumulo)."""
    return len(_registered) > 0


def register(ip: Any) -> None:
    """Add the hooks to an IPython shell (idempotent)."""
    if ip in _registered:
        return
    ip.events.register("pre_run_cell", _pre_run_cell)
    ip.events.register("post_run_cell", _post_run_cell)
    _registered.add(ip)


def unregister(ip: Any) -> None:
    """Remove the hooks from an IPython shell."""
    for name, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        try:
            ip.events.unregister(name, fn)
        except ValueError:
            pass
    _registered.discard(ip)


def _usage(cluster: Any) -> Any:
    return getattr(cluster, "_cumulo_usage", None)


def _pre_run_cell(info: Any = None) -> None:
    _pending.clear()
    _started[0] = time.perf_counter()
    _started[1] = time.time()
    for cluster in list(_tracked):
        usage = _usage(cluster)
        client = getattr(cluster, "client", None)
        if cluster.status != "running" or usage is None or not usage.installed or client is None:
            continue
        comm = getattr(client, "scheduler_comm", None)
        if comm is None or (getattr(client, "_scheduler_identity", None) or {}).get("id") != usage.scheduler_id:
            continue  # a scheduler without our ledger would drop the stream on an unknown message
        mark = f"{os.getpid()}-{next(_counter)}"
        count = comm.message_count
        try:
            client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": mark})
        except Exception:
            continue
        _pending.append((cluster, mark, count))


def cell_cost(cluster: Any, since: dict[str, Any], wall: float) -> tuple[float | None, str]:
    """Cost of one cell from the counters since its mark: (dollars or None, basis)."""
    usage = _usage(cluster)
    rec = usage.record() if usage is not None else getattr(cluster, "_record", None)
    rate = getattr(rec, "rate_per_hour", None) if rec is not None else None
    if rate is not None:
        return rate * wall / 3600.0, "estimate"
    per_worker, per_gpu = rates()
    if per_worker is None and per_gpu is None:
        return None, "none"
    amount = (since.get("worker_seconds") or 0.0) / 3600.0 * (per_worker or 0.0)
    amount += (since.get("gpu_seconds") or 0.0) / 3600.0 * (per_gpu or 0.0)
    return amount, "estimate"


def _post_run_cell(result: Any = None) -> None:
    if not _pending:
        _report_guards()
        return
    wall = time.perf_counter() - _started[0]
    pending = list(_pending)
    _pending.clear()
    for cluster, mark, count in pending:
        comm = getattr(getattr(cluster, "client", None), "scheduler_comm", None)
        if comm is None or comm.message_count - count <= 1:
            continue  # only our own mark went out: the cell did not touch this cluster
        try:
            ledger = fetch_ledger(cluster.client, mark=mark, timeout=5.0)
        except Exception:
            continue
        since = ledger.get("since_mark")
        if not since or not (since["tasks_done"] or since["tasks_erred"]):
            continue
        cost, kind = cell_cost(cluster, since, wall)
        row = {
            "execution_count": getattr(result, "execution_count", None),
            "start": _started[1], "wall": wall, "tasks": since["tasks_done"] + since["tasks_erred"],
            "task_seconds": since["task_seconds"], "gpu_seconds": since["gpu_busy_seconds"],
            "cost": cost, "cost_kind": kind,
        }
        _usage(cluster).record_cell(row)
        if config.get("widgets.cell-line"):
            _show(_line(cluster.name, row, since))
    _report_guards()


def _line(name: str, row: dict[str, Any], since: dict[str, Any]) -> str:
    parts = [f"cumulo {name}: {row['wall']:.2f}s wall", f"{row['task_seconds']:.1f} task-s on {row['tasks']} tasks"]
    if since.get("gpu_seconds"):
        parts.append(f"{row['gpu_seconds']:.1f} GPU-s busy")
    parts.append("no rate set" if row["cost"] is None else f"~${row['cost']:.4f} (estimate)")
    return " · ".join(parts)


def _show(text: str) -> None:
    try:
        from IPython.display import display

        display({"text/plain": text,
                 "text/html": f"<div style='color:#888;font-size:85%;font-family:monospace'>{html.escape(text)}</div>"},
                raw=True)
    except ImportError:
        print(text)


def _report_guards() -> None:
    for cluster in list(_tracked):
        guard = getattr(cluster, "_cumulo_guard", None)
        if guard is not None and guard.tripped is not None and not guard.reported:
            guard.reported = True
            _show(f"cumulo: {guard.tripped}")
