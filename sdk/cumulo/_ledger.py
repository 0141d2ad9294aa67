"""The usage ledger that runs inside a Dask scheduler (no cumulo import needed there).

This module is deliberately self-contained: it imports only the standard
library and ``distributed``, because the scheduler it is sent to may not have
cumulo installed. cumulo.metering registers it with
``cloudpickle.register_pickle_by_value`` so the class travels by value.

What it records, in bounded memory (aggregates, never a list per task):
  - workers joining and leaving: threads, memory limit, GPU model and count;
  - busy task-seconds per worker (``compute`` start/stop pairs of finished or
    erred tasks, as reported by the workers);
  - GPU utilisation and memory where NVML reports them (worker metrics),
    integrated over time; a ring of recent cluster-wide samples for sparklines;
  - GPU power and energy where workers run cumulo's power sampler
    (:mod:`cumulo._energy`, the ``cumulo-energy`` worker metric); nothing where
    nothing is measured;
  - per notebook cell: every graph a cell submits carries the annotation
    ``cumulo_cell`` = ``"<kernel>/<seq>"`` (set by cumulo.cellcost with
    ``dask.annotate`` as each graph is submitted). Tasks submitted, finished, erred
    and still running, task-seconds, busy worker-seconds, GPU-seconds and GPU
    energy are added up per tag, for the last ``max_cells`` tags; older tags
    are folded into one "earlier cells" bucket and untagged work goes to
    "outside cells", so the buckets always add up to the totals.

A task is "running" (for its cell) from the moment it enters one of the
scheduler's active states (waiting, queued, processing, no-worker) until it
leaves them; a task rescheduled after a worker died leaves and re-enters, and
a cancelled one just leaves.

Clients read it with the ``cumulo_ledger`` and ``cumulo_cell`` RPC handlers (no
pickled code runs). After a cell, the kernel puts a ``cumulo-cell-mark`` on its
batched stream (the same stream as the cell's graphs, so it arrives after
them) with the cell's start and end; ``cumulo_cell`` waits (briefly) for that
mark, so it never answers before the cell's graphs were seen. The mark also
names the cell for people: its execution count, its notebook's file name and its
first line (each cut to ``_MAX_TEXT`` characters), so that every view (the inline
meter, the sidebar, ``cumulo usage``) names a cell the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

PLUGIN_NAME = "cumulo-ledger"
#: v3: cells carry ``notebook`` and ``first_line``; the cell summary carries ``all_cells``.
LEDGER_VERSION = 3
#: The task annotation that names the notebook cell a task was submitted from.
CELL_ANNOTATION = "cumulo_cell"
#: The worker metric cumulo's power sampler reports (cumulo._energy.METRIC).
ENERGY_METRIC = "cumulo-energy"
_MAX_DEPARTED = 256
_MAX_ENDED = 1024
_MAX_DEVICES = 4096
_TOP_CELLS = 5
#: The longest notebook name or first line a cell keeps (characters).
_MAX_TEXT = 160
#: Per-worker GPU utilisation is kept in the samples for at most this many workers.
_MAX_SERIES_WORKERS = 16
_ACTIVE = frozenset(("waiting", "queued", "processing", "no-worker"))
OUTSIDE = "outside cells"
EARLIER = "earlier cells"


class _Worker:
    __slots__ = (
        "address", "name", "nthreads", "memory_limit", "gpus", "gpu_model", "gpu_memory_total",
        "joined", "left", "task_seconds", "tasks", "gpu_util", "gpu_mem_used", "gpu_util_seconds",
        "power_w", "power_share", "energy_reported", "energy_j", "device",
    )

    def __init__(self, address: str, name: str, nthreads: int, memory_limit: int, gpus: int,
                 gpu_model: str | None, gpu_memory_total: int | None, joined: float) -> None:
        self.address = address
        self.name = name
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.gpus = gpus
        self.gpu_model = gpu_model
        self.gpu_memory_total = gpu_memory_total
        self.joined = joined
        self.left: float | None = None
        self.task_seconds = 0.0
        self.tasks = 0
        self.gpu_util: float | None = None
        self.gpu_mem_used: int | None = None
        self.gpu_util_seconds = 0.0
        #: Latest power of this worker's GPU (W), and its share when workers share one GPU.
        self.power_w: float | None = None
        self.power_share = 0.0
        #: The cumulative energy the worker last reported (J, since its sampler started).
        self.energy_reported: float | None = None
        #: Energy counted for this worker (J; a GPU shared by several workers is counted once).
        self.energy_j = 0.0
        self.device: str | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        end = self.left if self.left is not None else now
        return {
            "address": self.address, "name": self.name, "nthreads": self.nthreads,
            "memory_limit": self.memory_limit, "gpus": self.gpus, "gpu_model": self.gpu_model,
            "gpu_memory_total": self.gpu_memory_total, "joined": self.joined, "left": self.left,
            "alive_seconds": max(0.0, end - self.joined), "task_seconds": self.task_seconds,
            "tasks": self.tasks, "gpu_util": self.gpu_util, "gpu_mem_used": self.gpu_mem_used,
            "gpu_util_seconds": self.gpu_util_seconds, "power_w": self.power_w,
            "energy_j": self.energy_j if self.energy_reported is not None else None,
        }


class _Cell:
    """What the tasks of one notebook cell (or of one catch-all bucket) added up to."""

    __slots__ = (
        "tag", "kernel", "seq", "execution_count", "notebook", "first_line", "first", "last", "start", "end",
        "submitted", "done", "erred", "active", "compute", "busy", "gpu", "energy",
    )

    def __init__(self, tag: str | None, first: float, label: str | None = None) -> None:
        self.tag = tag if tag is not None else label
        self.kernel: str | None = None
        self.seq: int | None = None
        self.execution_count: int | None = None
        #: The notebook's file name and the cell's first line, as its end-of-cell mark gave them.
        self.notebook: str | None = None
        self.first_line: str | None = None
        if tag is not None:
            kernel, _, seq = tag.rpartition("/")
            self.kernel = kernel or None
            self.seq = _int(seq)
        self.first = first
        self.last = first
        self.start: float | None = None
        self.end: float | None = None
        self.submitted = 0
        self.done = 0
        self.erred = 0
        self.active = 0
        self.compute = 0.0
        self.busy = 0.0
        self.gpu = 0.0
        self.energy = 0.0

    def fold(self, other: _Cell) -> None:
        """Add another bucket's figures to this one (a cell dropped from the bounded table)."""
        self.submitted += other.submitted
        self.done += other.done
        self.erred += other.erred
        self.active += other.active
        self.compute += other.compute
        self.busy += other.busy
        self.gpu += other.gpu
        self.energy += other.energy
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)

    def as_dict(self, energy_seen: bool) -> dict[str, Any]:
        wall = None if self.start is None or self.end is None else max(0.0, self.end - self.start)
        return {
            "tag": self.tag, "kernel": self.kernel, "seq": self.seq, "execution_count": self.execution_count,
            "notebook": self.notebook, "first_line": self.first_line, "first": self.first, "last": self.last, "start": self.start, "end": self.end, "wall": wall,
            "submitted": self.submitted, "finished": self.done, "erred": self.erred,
            "running": max(0, self.active), "task_seconds": self.compute, "busy_seconds": self.busy,
            "gpu_seconds": self.gpu, "energy_j": self.energy if energy_seen else None,
        }


def _text(value: Any) -> str | None:
    """A short display string from a client's mark (None stays None), cut to ``_MAX_TEXT`` characters."""
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 1] + "\u2026"


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _gpu_info(ws: Any) -> tuple[int, str | None, int | None]:
    """GPU count, model and memory of a worker from what it told the scheduler."""
    extra = getattr(ws, "extra", None) or {}
    gpu = extra.get("gpu") if isinstance(extra, dict) else None
    resources = getattr(ws, "resources", None) or {}
    count = int(resources.get("GPU", 0) or 0)
    model = mem = None
    if isinstance(gpu, dict) and gpu.get("name"):
        model = str(gpu.get("name"))
        mem = gpu.get("memory-total")
        count = max(count, 1)
    return count, model, mem


class UsageLedger(SchedulerPlugin):
    """Scheduler plugin keeping cumulo's usage ledger. Install once per scheduler (idempotent)."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, sample_interval: float = 2.0, max_samples: int = 900,
                 gpu_busy_threshold: float = 10.0, max_cells: int = 2000) -> None:
        self.sample_interval = float(sample_interval)
        #: A GPU above this utilisation (percent) counts as busy even with no task running.
        self.gpu_busy_threshold = float(gpu_busy_threshold)
        self.max_samples = int(max_samples)
        self.max_cells = max(1, int(max_cells))
        self.scheduler: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, scheduler: Any) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self.started = time.time()
        self.workers: dict[str, _Worker] = {}
        self.departed: deque[dict[str, Any]] = deque(maxlen=_MAX_DEPARTED)
        # Totals over workers that already left (current ones are summed on demand).
        self.left_worker_seconds = 0.0
        self.left_thread_seconds = 0.0
        self.left_gpu_seconds = 0.0
        self.left_busy_worker_seconds = 0.0
        self.left_gpu_busy_seconds = 0.0
        self.left_task_seconds = 0.0
        self.left_gpu_util_seconds = 0.0
        self.tasks_submitted = 0
        self.tasks_done = 0
        self.tasks_erred = 0
        self.nvml_seen = False
        self.energy_seen = False
        #: GPU energy over the cluster's life (J), each GPU counted once.
        self.energy_j = 0.0
        self.power_w = 0.0
        self.last_busy = time.time()
        self.last_sample = time.time()
        self.samples: deque[tuple[Any, ...]] = deque(maxlen=self.max_samples)
        self.cells: OrderedDict[str, _Cell] = OrderedDict()
        self.outside = _Cell(None, self.started, OUTSIDE)
        self.earlier = _Cell(None, self.started, EARLIER)
        #: Tags whose end-of-cell mark arrived (bounded), and RPCs waiting for one.
        self.ended: OrderedDict[str, None] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        for address in list(scheduler.workers):
            self.add_worker(scheduler, address)
        scheduler.handlers["cumulo_ledger"] = self.snapshot
        scheduler.handlers["cumulo_cell"] = self.cell
        scheduler.stream_handlers["cumulo-cell-mark"] = self.cell_mark
        pc = PeriodicCallback(self._sample, self.sample_interval * 1000)
        scheduler.periodic_callbacks["cumulo-ledger"] = pc
        pc.start()

    # -- events ---------------------------------------------------------------------------

    def add_worker(self, scheduler: Any, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        if ws is None or worker in self.workers:
            return
        gpus, model, mem = _gpu_info(ws)
        self.workers[worker] = _Worker(
            worker, str(ws.name), int(ws.nthreads), int(ws.memory_limit or 0), gpus, model, mem, time.time()
        )

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        w = self.workers.pop(worker, None)
        if w is None:
            return
        self._integrate_gpu(w, time.time())
        w.left = time.time()
        alive = w.left - w.joined
        self.left_worker_seconds += alive
        self.left_thread_seconds += alive * w.nthreads
        self.left_gpu_seconds += alive * w.gpus
        busy = min(alive, w.task_seconds / max(w.nthreads, 1))
        self.left_busy_worker_seconds += busy
        self.left_gpu_busy_seconds += busy * w.gpus
        self.left_task_seconds += w.task_seconds
        self.left_gpu_util_seconds += w.gpu_util_seconds
        self.departed.append(w.as_dict(w.left))

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        """Count the new tasks of a graph against the cell (tag) they were submitted from."""
        known = scheduler.tasks
        counts: dict[str | None, int] = {}
        for key in tasks:
            ts = known.get(key)
            if ts is None or ts.state != "released":
                continue  # already running or done for an earlier graph: not new work
            ann = ts.annotations
            tag = ann.get(CELL_ANNOTATION) if ann else None
            counts[tag] = counts.get(tag, 0) + 1
        if not counts:
            return
        now = time.time()
        for tag, n in counts.items():
            bucket = self._new_work(tag, now)
            bucket.submitted += n
            bucket.last = now
            self.tasks_submitted += n

    def _new_work(self, tag: str | None, now: float) -> _Cell:
        if tag is None:
            return self.outside
        tag = str(tag)
        bucket = self.cells.get(tag)
        if bucket is None:
            bucket = self.cells[tag] = _Cell(tag, now)
            while len(self.cells) > self.max_cells:
                _, old = self.cells.popitem(last=False)
                self.earlier.fold(old)
        return bucket

    def _bucket(self, key: Any) -> _Cell:
        ts = self.scheduler.tasks.get(key)
        ann = ts.annotations if ts is not None else None
        tag = ann.get(CELL_ANNOTATION) if ann else None
        if tag is None:
            return self.outside
        return self.cells.get(tag) or self.earlier

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start in _ACTIVE:
            if finish in _ACTIVE:
                if finish == "processing":
                    self.last_busy = time.time()
                return
            # leaving the active states: finished, erred, or released (cancelled or to be rescheduled)
            now = time.time()
            if start == "processing":
                self.last_busy = now
            bucket = self._bucket(key)
            bucket.active -= 1
            if finish == "memory":
                bucket.done += 1
                self.tasks_done += 1
            elif finish == "erred":
                bucket.erred += 1
                self.tasks_erred += 1
            else:
                return
            bucket.last = now
            self._charge(bucket, kwargs)
        elif finish in _ACTIVE:
            self._bucket(key).active += 1
        elif finish == "erred":  # a task that never ran fails with its dependency
            bucket = self._bucket(key)
            bucket.erred += 1
            bucket.last = time.time()
            self.tasks_erred += 1

    def _charge(self, bucket: _Cell, kwargs: dict[str, Any]) -> None:
        startstops = kwargs.get("startstops")
        if not startstops:
            return
        w = self.workers.get(kwargs.get("worker"))  # type: ignore[arg-type]
        if w is None:
            return
        seconds = 0.0
        for ss in startstops:
            if ss.get("action") == "compute":
                seconds += ss["stop"] - ss["start"]
        w.task_seconds += seconds
        w.tasks += 1
        bucket.compute += seconds
        share = seconds / max(w.nthreads, 1)
        bucket.busy += share
        if w.gpus:
            bucket.gpu += share * w.gpus
        if w.power_share:
            bucket.energy += share * w.power_share

    def restart(self, scheduler: Any) -> None:
        self.last_busy = time.time()
        for bucket in (*self.cells.values(), self.outside, self.earlier):
            bucket.active = 0  # a restart forgets every task

    def cell_mark(self, mark: str = "", client: Any = None, start: float | None = None,
                  end: float | None = None, execution_count: int | None = None, notebook: str | None = None,
                  first_line: str | None = None, **kwargs: Any) -> None:
        """Stream handler: a notebook cell ended (its graphs came before this on the same stream)."""
        tag = str(mark)
        bucket = self.cells.get(tag)
        if bucket is not None:
            bucket.start = start
            bucket.end = end
            if execution_count is not None:
                bucket.execution_count = execution_count
            if notebook is not None:
                bucket.notebook = _text(notebook)
            if first_line is not None:
                bucket.first_line = _text(first_line)
        self.ended[tag] = None
        while len(self.ended) > _MAX_ENDED:
            self.ended.popitem(last=False)
        waiter = self._waiters.pop(tag, None)
        if waiter is not None:
            waiter.set()

    # -- sampling -------------------------------------------------------------------------

    def _integrate_gpu(self, w: _Worker, now: float) -> None:
        if w.gpu_util is not None and w.gpus:
            dt = max(0.0, now - max(self.last_sample, w.joined))
            w.gpu_util_seconds += dt * w.gpus * w.gpu_util / 100.0

    def _processing(self) -> int:
        sched = self.scheduler
        n = sum(len(ws.processing) for ws in sched.workers.values())
        queued = getattr(sched, "queued", ())
        unrunnable = getattr(sched, "unrunnable", ())
        return n + len(queued) + len(unrunnable)

    def _energy(self, reports: list[tuple[_Worker, dict[str, Any]]]) -> float | None:
        """Add what the workers' power samplers measured since the last sample; the power now (W)."""
        if not reports:
            return None
        devices: dict[str, list[tuple[_Worker, float, float]]] = {}
        for w, rep in reports:
            try:
                power = float(rep.get("power_w") or 0.0)
                total = float(rep.get("energy_j") or 0.0)
            except (TypeError, ValueError):
                continue
            last = w.energy_reported
            delta = total if last is None or total < last else total - last  # a new sampler starts at 0
            w.energy_reported = total
            w.power_w = power
            w.device = str(rep.get("device") or w.address)
            devices.setdefault(w.device, []).append((w, power, delta))
        if len(devices) > _MAX_DEVICES:
            return None
        now_power = 0.0
        for members in devices.values():
            # workers sharing one GPU all measure that GPU: count it once, split it between them
            delta = max(d for _, _, d in members)
            power = max(p for _, p, _ in members)
            self.energy_j += delta
            now_power += power
            for w, p, d in members:
                w.energy_j += d / len(members)
                w.power_share = p / len(members)
        self.energy_seen = True
        self.power_w = now_power
        return now_power

    def _sample(self) -> None:
        now = time.time()
        utils, mem_used, mem_total = [], 0, 0
        per_worker: list[float | None] = []
        reports: list[tuple[_Worker, dict[str, Any]]] = []
        busy_workers = 0
        for address, w in self.workers.items():
            self._integrate_gpu(w, now)
            ws = self.scheduler.workers.get(address)
            if ws is None:
                continue
            if ws.processing:
                busy_workers += 1
            metrics = getattr(ws, "metrics", None) or {}
            gpu = metrics.get("gpu")
            if isinstance(gpu, dict) and gpu.get("utilization") is not None:
                self.nvml_seen = True
                w.gpu_util = float(gpu["utilization"])
                w.gpu_mem_used = int(gpu.get("memory-used") or 0)
                utils.append(w.gpu_util)
                mem_used += w.gpu_mem_used
                mem_total += int(w.gpu_memory_total or 0)
            if len(per_worker) < _MAX_SERIES_WORKERS:
                per_worker.append(w.gpu_util)
            energy = metrics.get(ENERGY_METRIC)
            if isinstance(energy, dict):
                reports.append((w, energy))
        self.last_sample = now
        power = self._energy(reports)
        processing = self._processing()
        if processing or (utils and max(utils) >= self.gpu_busy_threshold):
            self.last_busy = now
        self.samples.append((
            now, len(self.workers), sum(w.nthreads for w in self.workers.values()), processing,
            (sum(utils) / len(utils)) if utils else None, mem_used if utils else None,
            mem_total if utils else None, busy_workers, power,
            tuple(per_worker) if utils else None,
        ))

    # -- reading --------------------------------------------------------------------------

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
