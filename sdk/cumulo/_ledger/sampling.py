"""The ledger's periodic sample: GPU utilisation and memory, GPU energy, busy or idle.

Every ``sample_interval`` the scheduler calls :meth:`Sampling._sample` (a periodic
callback that :class:`~cumulo._ledger.plugin.UsageLedger` starts): it integrates each
worker's GPU utilisation over time, adds the energy the workers' power samplers
(:mod:`cumulo._energy`) measured since the last sample, counting a GPU that several
workers share once, decides whether the cluster is busy (a task running, or a GPU above
the threshold) and keeps a bounded ring of cluster-wide samples for the sparklines.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .protocol import ENERGY_METRIC
from .records import _Worker

_MAX_DEVICES = 4096
#: Per-worker GPU utilisation is kept in the samples for at most this many workers.
_MAX_SERIES_WORKERS = 16


class Sampling:
    """Mixed into UsageLedger: the sample and what it integrates (state set by its ``start``)."""

    scheduler: Any
    workers: dict[str, _Worker]
    gpu_busy_threshold: float
    nvml_seen: bool
    energy_seen: bool
    energy_j: float
    power_w: float
    last_busy: float
    last_sample: float
    samples: deque[tuple[Any, ...]]

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
