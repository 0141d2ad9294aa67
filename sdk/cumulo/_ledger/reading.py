"""What the ledger answers: the ``cumulo_ledger`` and ``cumulo_cell`` RPC handlers.

Clients (the meter, the sidebar, ``cumulo usage``, the guards) read the ledger as plain
data, never by running pickled code on the scheduler: totals over live and departed
workers, the cells that cost most and the latest, one kernel's cells with the others added
up, the recent samples, and one cell's figures once its end-of-cell mark has arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from .protocol import LEDGER_VERSION
from .records import _Cell, _Worker

_TOP_CELLS = 5


class Reading:
    """Mixed into UsageLedger: the RPC handlers and the sums they report (state set by its ``start``)."""

    started: float
    workers: dict[str, _Worker]
    departed: deque[dict[str, Any]]
    cells: OrderedDict[str, _Cell]
    outside: _Cell
    earlier: _Cell
    ended: OrderedDict[str, None]
    _waiters: dict[str, asyncio.Event]
    samples: deque[tuple[Any, ...]]
    max_cells: int
    nvml_seen: bool
    energy_seen: bool
    energy_j: float
    power_w: float
    last_busy: float
    tasks_submitted: int
    tasks_done: int
    tasks_erred: int
    left_worker_seconds: float
    left_thread_seconds: float
    left_gpu_seconds: float
    left_busy_worker_seconds: float
    left_gpu_busy_seconds: float
    left_task_seconds: float
    left_gpu_util_seconds: float

    if TYPE_CHECKING:
        def _processing(self) -> int: ...  # Sampling's, through UsageLedger

    def _buckets(self) -> list[_Cell]:
        return [*self.cells.values(), self.outside, self.earlier]

    def _counters(self, now: float) -> dict[str, Any]:
        ws_s = th_s = gpu_s = busy_s = gpu_busy = task_s = util_s = 0.0
        for w in self.workers.values():
            alive = max(0.0, now - w.joined)
            ws_s += alive
            th_s += alive * w.nthreads
            gpu_s += alive * w.gpus
            busy = min(alive, w.task_seconds / max(w.nthreads, 1))
            busy_s += busy
            gpu_busy += busy * w.gpus
            task_s += w.task_seconds
            util_s += w.gpu_util_seconds
        running = sum(max(0, b.active) for b in self._buckets())
        return {
            "time": now,
            "worker_seconds": ws_s + self.left_worker_seconds,
            "thread_seconds": th_s + self.left_thread_seconds,
            "gpu_seconds": gpu_s + self.left_gpu_seconds,
            "busy_worker_seconds": busy_s + self.left_busy_worker_seconds,
            "gpu_busy_seconds": gpu_busy + self.left_gpu_busy_seconds,
            "task_seconds": task_s + self.left_task_seconds,
            "gpu_util_seconds": (util_s + self.left_gpu_util_seconds) if self.nvml_seen else None,
            "tasks_submitted": self.tasks_submitted,
            "tasks_done": self.tasks_done,
            "tasks_erred": self.tasks_erred,
            "tasks_running": running,
            "energy_j": self.energy_j if self.energy_seen else None,
            "power_w": self.power_w if self.energy_seen else None,
        }

    def _cell_summary(self) -> dict[str, Any]:
        e = self.energy_seen
        top = sorted(self.cells.values(), key=lambda b: b.busy, reverse=True)[:_TOP_CELLS]
        every = _Cell(None, self.started, "all cells")  # every cell, earlier ones too: all but outside cells
        every.fold(self.earlier)
        for b in self.cells.values():
            every.fold(b)
        return {
            "count": len(self.cells),
            "max_cells": self.max_cells,
            "running": sum(max(0, b.active) for b in self.cells.values()),
            "top": [b.as_dict(e) for b in top if b.busy > 0 or b.active > 0],
            "recent": [b.as_dict(e) for b in list(self.cells.values())[-_TOP_CELLS:]],
            "outside": self.outside.as_dict(e),
            "earlier": self.earlier.as_dict(e),
            "all_cells": every.as_dict(e),
        }

    def snapshot(self, samples: int = 0, departed: bool = False, cells: bool = False,
                 kernel: str | None = None, **ignored: Any) -> dict[str, Any]:
        """RPC handler ``cumulo_ledger``: the whole ledger as plain data.

        ``cells``: include every cell the ledger holds (``kernel``: only that kernel's,
        the others added up in ``other_kernels``).
        """
        now = time.time()
        counters = self._counters(now)
        processing = self._processing()
        if processing:
            self.last_busy = now
        out: dict[str, Any] = {
            "version": LEDGER_VERSION,
            "now": now,
            "started": self.started,
            "totals": counters,
            "processing": processing,
            "last_busy": self.last_busy,
            "idle_seconds": 0.0 if processing else max(0.0, now - self.last_busy),
            "nvml": self.nvml_seen,
            "energy": self.energy_seen,
            "workers": [w.as_dict(now) for w in self.workers.values()],
            "cell_summary": self._cell_summary(),
        }
        if departed:
            out["departed"] = list(self.departed)
        if samples:
            keys = ("time", "workers", "threads", "processing", "gpu_util", "gpu_mem_used", "gpu_mem_total",
                    "busy_workers", "power_w", "worker_gpu_util")
            out["samples"] = [dict(zip(keys, s)) for s in list(self.samples)[-int(samples):]]
        if cells or kernel is not None:
            e = self.energy_seen
            mine, others = [], _Cell(None, self.started, "other kernels")
            for b in self.cells.values():
                if kernel is None or b.kernel == kernel:
                    mine.append(b.as_dict(e))
                else:
                    others.fold(b)
            out["cells"] = mine
            out["other_kernels"] = others.as_dict(e) if kernel is not None else None
        return out

    async def cell(self, tag: str = "", timeout: float = 2.0, **ignored: Any) -> dict[str, Any]:
        """RPC handler ``cumulo_cell``: one cell's figures, once its end-of-cell mark has arrived.

        Returns ``{"cell": dict or None, "seen": bool}``: None when the cell submitted no
        task; ``seen`` False when the mark did not arrive within ``timeout`` seconds.
        """
        tag = str(tag)
        seen = tag in self.ended
        if not seen:
            waiter = self._waiters.setdefault(tag, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), max(0.0, float(timeout)))
                seen = True
            except asyncio.TimeoutError:
                self._waiters.pop(tag, None)
        bucket = self.cells.get(tag)
        row = None
        if bucket is not None:
            row = bucket.as_dict(self.energy_seen)
            row["workers"] = len(self.workers)
        return {"cell": row, "seen": seen, "now": time.time()}
