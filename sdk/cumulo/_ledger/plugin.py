"""The scheduler plugin itself: :class:`UsageLedger`, its start and the scheduler events it counts.

Workers joining and leaving, graphs submitted (new tasks counted against the cell that
sent them), task transitions (finished, erred, cancelled, rescheduled: busy seconds,
GPU-seconds and energy charged to the task's cell) and the end-of-cell marks a kernel puts
on its stream. The periodic sample (:mod:`.sampling`) and the RPC answers (:mod:`.reading`)
are mixed in from their own modules; all of it is sent to the scheduler by value.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .protocol import CELL_ANNOTATION, PLUGIN_NAME
from .reading import Reading
from .records import EARLIER, OUTSIDE, _Cell, _gpu_info, _text, _Worker
from .sampling import Sampling

_MAX_DEPARTED = 256
_MAX_ENDED = 1024
_ACTIVE = frozenset(("waiting", "queued", "processing", "no-worker"))


class UsageLedger(Sampling, Reading, SchedulerPlugin):
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
