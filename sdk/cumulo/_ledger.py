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
  - cell marks: a client sends ``cumulo-cell-mark`` on its batched stream
    before a notebook cell runs, and later asks for the counters since that mark.

Clients read it with the ``cumulo_ledger`` RPC handler (no pickled code runs).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

PLUGIN_NAME = "cumulo-ledger"
LEDGER_VERSION = 1
_MAX_MARKS = 256
_MAX_DEPARTED = 256


class _Worker:
    __slots__ = (
        "address", "name", "nthreads", "memory_limit", "gpus", "gpu_model", "gpu_memory_total",
        "joined", "left", "task_seconds", "tasks", "gpu_util", "gpu_mem_used", "gpu_util_seconds",
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

    def as_dict(self, now: float) -> dict[str, Any]:
        end = self.left if self.left is not None else now
        return {
            "address": self.address, "name": self.name, "nthreads": self.nthreads,
            "memory_limit": self.memory_limit, "gpus": self.gpus, "gpu_model": self.gpu_model,
            "gpu_memory_total": self.gpu_memory_total, "joined": self.joined, "left": self.left,
            "alive_seconds": max(0.0, end - self.joined), "task_seconds": self.task_seconds,
            "tasks": self.tasks, "gpu_util": self.gpu_util, "gpu_mem_used": self.gpu_mem_used,
            "gpu_util_seconds": self.gpu_util_seconds,
        }


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
                 gpu_busy_threshold: float = 10.0) -> None:
        self.sample_interval = float(sample_interval)
        #: A GPU above this utilisation (percent) counts as busy even with no task running.
        self.gpu_busy_threshold = float(gpu_busy_threshold)
        self.max_samples = int(max_samples)
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
        self.tasks_done = 0
        self.tasks_erred = 0
        self.nvml_seen = False
        self.last_busy = time.time()
        self.last_sample = time.time()
        self.samples: deque[tuple[Any, ...]] = deque(maxlen=self.max_samples)
        self.marks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        for address in list(scheduler.workers):
            self.add_worker(scheduler, address)
        scheduler.handlers["cumulo_ledger"] = self.snapshot
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

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing":
            if finish == "processing":
                self.last_busy = time.time()
            return
        self.last_busy = time.time()
        if finish == "memory":
            self.tasks_done += 1
        elif finish == "erred":
            self.tasks_erred += 1
        else:
            return
        startstops = kwargs.get("startstops")
        w = self.workers.get(kwargs.get("worker"))  # type: ignore[arg-type]
        if not startstops or w is None:
            return
        seconds = 0.0
        for ss in startstops:
            if ss.get("action") == "compute":
                seconds += ss["stop"] - ss["start"]
        w.task_seconds += seconds
        w.tasks += 1

    def restart(self, scheduler: Any) -> None:
        self.last_busy = time.time()

    def cell_mark(self, mark: str = "", client: Any = None, **kwargs: Any) -> None:
        """Stream handler: remember the counters as a notebook cell starts."""
        self.marks[str(mark)] = self._counters(time.time())
        while len(self.marks) > _MAX_MARKS:
            self.marks.popitem(last=False)

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

    def _sample(self) -> None:
        now = time.time()
        utils, mem_used, mem_total = [], 0, 0
        for address, w in self.workers.items():
            self._integrate_gpu(w, now)
            ws = self.scheduler.workers.get(address)
            gpu = (getattr(ws, "metrics", None) or {}).get("gpu") if ws is not None else None
            if isinstance(gpu, dict) and gpu.get("utilization") is not None:
                self.nvml_seen = True
                w.gpu_util = float(gpu["utilization"])
                w.gpu_mem_used = int(gpu.get("memory-used") or 0)
                utils.append(w.gpu_util)
                mem_used += w.gpu_mem_used
                mem_total += int(w.gpu_memory_total or 0)
        self.last_sample = now
        processing = self._processing()
        if processing or (utils and max(utils) >= self.gpu_busy_threshold):
            self.last_busy = now
        self.samples.append((
            now, len(self.workers), sum(w.nthreads for w in self.workers.values()), processing,
            (sum(utils) / len(utils)) if utils else None, mem_used if utils else None,
            mem_total if utils else None,
        ))

    # -- reading --------------------------------------------------------------------------

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
        return {
            "time": now,
            "worker_seconds": ws_s + self.left_worker_seconds,
            "thread_seconds": th_s + self.left_thread_seconds,
            "gpu_seconds": gpu_s + self.left_gpu_seconds,
            "busy_worker_seconds": busy_s + self.left_busy_worker_seconds,
            "gpu_busy_seconds": gpu_busy + self.left_gpu_busy_seconds,
            "task_seconds": task_s + self.left_task_seconds,
            "gpu_util_seconds": (util_s + self.left_gpu_util_seconds) if self.nvml_seen else None,
            "tasks_done": self.tasks_done,
            "tasks_erred": self.tasks_erred,
        }

    def snapshot(self, mark: str | None = None, samples: int = 0, departed: bool = False) -> dict[str, Any]:
        """RPC handler ``cumulo_ledger``: the whole ledger as plain data."""
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
            "workers": [w.as_dict(now) for w in self.workers.values()],
        }
        if departed:
            out["departed"] = list(self.departed)
        if samples:
            keys = ("time", "workers", "threads", "processing", "gpu_util", "gpu_mem_used", "gpu_mem_total")
            out["samples"] = [dict(zip(keys, s)) for s in list(self.samples)[-int(samples):]]
        if mark is not None:
            before = self.marks.get(str(mark))
            if before is not None:
                out["since_mark"] = {
                    k: (None if v is None or before.get(k) is None else v - before[k])
                    for k, v in counters.items()
                }
        return out
