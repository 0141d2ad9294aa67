"""What the ledger keeps per worker and per notebook cell, in bounded memory.

A :class:`_Worker` holds one worker's figures (threads, GPUs, busy task-seconds, GPU
utilisation and energy); a :class:`_Cell` adds up the tasks of one cell, or of one of the
catch-all buckets (``outside cells``, ``earlier cells``). Both turn into plain dicts for
the RPC answers. Sent to the scheduler by value with the rest of :mod:`cumulo._ledger`.
"""

from __future__ import annotations

from typing import Any

#: The longest notebook name or first line a cell keeps (characters).
_MAX_TEXT = 160
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
