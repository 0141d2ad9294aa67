"""GPU power sampling on a Dask worker (sent by value: standard library and distributed only).

Where NVML reports power draw (``nvmlDeviceGetPowerUsage``), a periodic
callback on the worker's own event loop reads the power of the worker's GPU
every ``interval`` seconds and adds up energy (trapezoids between readings; the
driver's cumulative energy counter, ``nvmlDeviceGetTotalEnergyConsumption``,
is used instead where the GPU has one, since it misses nothing between
readings). The worker sends ``{"power_w", "energy_j", "device", "source"}``
with every heartbeat as the custom metric ``cumulo-energy``; the scheduler's
ledger (:mod:`cumulo._ledger`) reads it there and counts each GPU once.

The worker's GPU is the first device of ``CUDA_VISIBLE_DEVICES`` (an index or
a UUID), else device 0: the one dask-cuda pins a worker to and the one
distributed's own NVML metrics describe.

Memory is bounded: the latest reading, a running total and a short ring of
recent readings. Where NVML is missing, has no GPU, or cannot read power (CPU
workers; some virtual GPUs), nothing is registered and nothing is reported: no
figure is better than a guess. ``nvml_module`` names the module to import
(``pynvml``, from nvidia-ml-py); tests inject a stand-in under another name.
"""

from __future__ import annotations

import importlib
import os
import time
from collections import deque
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

PLUGIN_NAME = "cumulo-energy"
METRIC = "cumulo-energy"


def _load(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception:  # not installed, or its library is missing: nothing to measure
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle(nvml: Any) -> Any:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if not visible:
        return nvml.nvmlDeviceGetHandleByIndex(0)
    try:
        return nvml.nvmlDeviceGetHandleByIndex(int(visible))
    except ValueError:
        return nvml.nvmlDeviceGetHandleByUUID(visible.encode())


class PowerSampler(WorkerPlugin):
    """Worker plugin: sample the GPU's power draw, integrate energy, report it with heartbeats."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, interval: float = 1.0, max_samples: int = 120, nvml_module: str = "pynvml") -> None:
        self.interval = float(interval)
        self.max_samples = int(max_samples)
        self.nvml_module = nvml_module

    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.active = False
        self.readings: deque[tuple[float, float]] = deque(maxlen=self.max_samples)
        self._pc: Any = None
        nvml = _load(self.nvml_module)
        if nvml is None:
            return
        try:
            nvml.nvmlInit()
            handle = _handle(nvml)
            watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except Exception:  # no GPU, no driver, or power not supported: report nothing
            return
        try:
            device = _text(nvml.nvmlDeviceGetUUID(handle))
        except Exception:
            device = f"{worker.address}-gpu"
        try:
            counter0 = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))  # mJ since the driver loaded
        except Exception:
            counter0 = None
        self.nvml, self.handle, self.device = nvml, handle, device
        self.counter0 = counter0
        self.power_w = watts
        self.energy_j = 0.0
        self.errors = 0
        self.last = time.monotonic()
        self.readings.append((time.time(), watts))
        self.active = True
        worker.metrics[METRIC] = self.report
        from tornado.ioloop import PeriodicCallback

        self._pc = PeriodicCallback(self.sample, self.interval * 1000)
        self._pc.start()

    def sample(self) -> None:
        """Read the power now and add the energy since the last reading."""
        now = time.monotonic()
        try:
            watts = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
            counter = (float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
                       if self.counter0 is not None else None)
        except Exception:
            self.errors += 1
            return
        if counter is not None and self.counter0 is not None:
            self.energy_j = (counter - self.counter0) / 1000.0
        else:
            self.energy_j += (self.power_w + watts) / 2.0 * (now - self.last)
        self.power_w = watts
        self.last = now
        self.readings.append((time.time(), watts))

    def report(self, worker: Any = None) -> dict[str, Any]:
        """The heartbeat metric: power now (W), energy since the sampler started (J), which GPU."""
        return {"power_w": self.power_w, "energy_j": self.energy_j, "device": self.device,
                "source": "nvml-counter" if self.counter0 is not None else "nvml-power"}

    def teardown(self, worker: Any) -> None:
        if self._pc is not None:
            self._pc.stop()
        if getattr(worker, "metrics", None) is not None and worker.metrics.get(METRIC) == self.report:
            del worker.metrics[METRIC]
