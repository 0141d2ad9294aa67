"""GPU energy: the workers' power sampler (cumulo._energy), the ledger's integration, and what users see.

No GPU here: a stand-in NVML module is injected into the worker processes by the
test itself (``client.run(exec, FAKE_NVML, {})``) under a name of its own, and the
sampler is told to import that name. Nothing of it ships in the package.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cloudpickle
import dask
import pytest
from distributed import Client, LocalCluster

from cumulo import _energy
from cumulo.cost import metering
from cumulo._energy import PowerSampler

from .conftest import wait_for

WATTS = 250.0
SLEEP = 0.4

#: A stand-in for pynvml with one GPU drawing WATTS; ``counter=True`` adds the driver's energy counter (mJ, not zero
#: at start, as a real one is not). ``set_watts`` changes the draw from that moment on; the counter follows it.
FAKE_NVML = """
import os, sys, time, types
m = types.ModuleType(NAME)
m.watts = WATTS
m.drawn, m.since = 1000.0 * WATTS, time.monotonic()  # J drawn up to `since`
def set_watts(w):
    now = time.monotonic()
    m.drawn, m.since, m.watts = m.drawn + m.watts * (now - m.since), now, w
m.set_watts = set_watts
m.nvmlInit = lambda: None
m.nvmlDeviceGetHandleByIndex = lambda i: ("fake", i)
m.nvmlDeviceGetHandleByUUID = lambda u: ("fake", u)
m.nvmlDeviceGetPowerUsage = lambda h: int(m.watts * 1000)  # mW
m.nvmlDeviceGetUUID = lambda h: UUID or f"GPU-fake-{os.getpid()}"
if COUNTER:
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: int((m.drawn + m.watts * (time.monotonic() - m.since)) * 1000)
sys.modules[NAME] = m
"""


def fake_nvml(name: str, *, counter: bool = False, uuid: str = "", watts: float = WATTS) -> str:
    return (f"NAME = {name!r}\nWATTS = {watts!r}\nCOUNTER = {counter!r}\nUUID = {uuid!r}\n" + FAKE_NVML)


def nap(i: int) -> int:
    time.sleep(SLEEP)
    return i


def _sampler(name: str, interval: float = 0.1, max_samples: int = 120) -> PowerSampler:
    cloudpickle.register_pickle_by_value(_energy)
    return PowerSampler(interval=interval, max_samples=max_samples, nvml_module=name)


def _power_off(name: str) -> float:
    """On a worker: the stand-in GPU draws 0 W from now on; when that was. Runs on the worker's event loop, as
    the sampler does, so no reading falls between the switch and the time returned."""
    import sys

    sys.modules[name].set_watts(0.0)
    return time.time()


def _sampler_state(dask_worker: Any) -> dict[str, Any]:
    """On a worker: its power sampler's readings (wall time, W) and the energy it has added up (J)."""
    plugin = dask_worker.plugins[_energy.PLUGIN_NAME]
    return {"readings": list(plugin.readings), "energy_j": plugin.energy_j}


@pytest.fixture
def lc():
    with dask.config.set({"cumulo.cost.sample-interval": "0.2s", "cumulo.cost.power-interval": None}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                         dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


#: How far wall-clock stamps (the sampler's readings, time.time) and the monotonic time it integrates over may
#: drift apart during a test: both are read microseconds apart, and NTP slews one against the other by at most
#: 0.05%, 15 ms over the 30 s the test is allowed. (Half of one 0.1 s sampling gap at 250 W is 12.5 J; this is 5.)
CLOCKS_S = 0.02


@pytest.mark.parametrize("counter", [False, True], ids=["integrated-power", "energy-counter"])
def test_energy_is_measured_where_nvml_reports_power(lc: LocalCluster, counter: bool) -> None:
    with Client(lc, set_as_default=False) as c:
        assert metering.install(c)
        name = f"cumulo_test_nvml_{int(counter)}"
        c.run(exec, fake_nvml(name, counter=counter), {})
        c.register_plugin(_sampler(name, max_samples=100_000))  # keeps every reading: the first is the start
        # the ledger hears each sampler with its worker's heartbeat; a task is charged the power known as it ends
        wait_for(lambda: metering.fetch_ledger(c)["totals"]["power_w"] == 2 * WATTS, what="both GPUs' power")
        t0 = time.time()
        with dask.annotate(cumulo_cell="kernel-e/1"):
            c.gather(c.map(nap, range(4), pure=False))
        done = time.time()
        ledger = metering.fetch_ledger(c, cells=True, samples=3)
        t = ledger["totals"]
        assert t["power_w"] == pytest.approx(2 * WATTS)
        assert all(w["power_w"] == WATTS and w["energy_j"] > 0 for w in ledger["workers"])
        (cell,) = [x for x in ledger["cells"] if x["tag"] == "kernel-e/1"]
        # its tasks' time on a 1-thread worker x that worker's GPU power: 4 x 0.4 s x 250 W = 400 J
        assert cell["energy_j"] == pytest.approx(cell["task_seconds"] * WATTS, rel=0.01)
        # each nap sleeps SLEEP; all four ran between t0 and done, on two one-thread workers
        assert 4 * SLEEP <= cell["task_seconds"] <= 2 * (done - t0), (cell["task_seconds"], done - t0)
        assert ledger["samples"][-1]["power_w"] == pytest.approx(2 * WATTS)
        summary = metering.Usage.of_record(_row()).summary(ledger)
        assert summary["energy_wh"] == pytest.approx(t["energy_j"] / 3600.0)
        assert "GPU energy" in metering.usage_text(summary) and "500 W now" in metering.usage_text(summary)
        reports = c.run(lambda dask_worker: dask_worker.metrics["cumulo-energy"](dask_worker))
        assert {r["source"] for r in reports.values()} == {"nvml-counter" if counter else "nvml-power"}

        # The GPUs stop drawing power: once each sampler has read that, its energy is final, and the ledger's
        # figure for each GPU must come to it, whatever the heartbeats' timing.
        off = c.run(_power_off, name)
        state = wait_for(lambda: (r := c.run(_sampler_state)) and all(r[a]["readings"][-1][0] > off[a] for a in r)
                         and r, what="a reading after the power went off")
        final = wait_for(lambda: (x := metering.fetch_ledger(c)) and all(
            w["energy_j"] == pytest.approx(state[w["address"]]["energy_j"], abs=1e-6) for w in x["workers"]) and x,
                         what="the ledger to hear each sampler's final energy")
        assert final["totals"]["energy_j"] == pytest.approx(sum(s["energy_j"] for s in state.values()), abs=1e-6)
        assert final["totals"]["power_w"] == 0.0
        for address, s in state.items():
            stamps = [when for when, _ in s["readings"]]
            start = stamps[0]  # the reading taken as the sampler started: its energy counts from there
            before = max(when for when in stamps if when <= off[address])
            after = min(when for when in stamps if when > off[address])
            if counter:
                # the driver's counter misses nothing: WATTS from the start until the switch
                expected = WATTS * (off[address] - start)
            else:
                # trapezoids between readings: WATTS up to the last reading before the switch, then one trapezoid
                # from WATTS to 0 W over the gap that holds the switch. That differs from the energy really drawn,
                # WATTS * (off - start), by at most half that gap's energy: the price of sampling every 0.1 s
                expected = WATTS * (before - start) + WATTS / 2 * (after - before)
            assert s["energy_j"] == pytest.approx(expected, abs=WATTS * CLOCKS_S + 0.001), (address, s["energy_j"],
                                                                                           expected)
        assert time.time() - t0 < 30


def test_nothing_is_shown_where_nothing_is_measured(lc: LocalCluster) -> None:
    unsupported = ("import sys, types\nm = types.ModuleType('cumulo_test_nvml_none')\n"
                   "m.nvmlInit = lambda: None\nm.nvmlDeviceGetHandleByIndex = lambda i: i\n"
                   "def power(h):\n    raise RuntimeError('NVML_ERROR_NOT_SUPPORTED')\n"
                   "m.nvmlDeviceGetPowerUsage = power\nsys.modules['cumulo_test_nvml_none'] = m\n")
    with Client(lc, set_as_default=False) as c:
        assert metering.install(c)
        c.run(exec, unsupported, {})
        c.register_plugin(_sampler("cumulo_test_nvml_none"), name="no-power")
        c.register_plugin(_sampler("pynvml"), name="no-nvml")  # not installed on this machine
        registered = time.time()
        with dask.annotate(cumulo_cell="kernel-n/1"):
            c.gather(c.map(nap, range(2), pure=False))
        # nothing must show up: give it every chance to, a heartbeat from each worker since the samplers were set up
        # (a metric would ride on it) and a ledger sample after those
        heard = wait_for(lambda: (t := c.run_on_scheduler(_last_heartbeat)) > registered and t,
                         what="a heartbeat from each worker")
        ledger = wait_for(lambda: (x := metering.fetch_ledger(c, cells=True, samples=2))["samples"][-1]["time"] > heard
                          and x, what="a ledger sample after those heartbeats")
        assert ledger["energy"] is False
        assert ledger["totals"]["energy_j"] is None and ledger["totals"]["power_w"] is None
        assert all(w["power_w"] is None and w["energy_j"] is None for w in ledger["workers"])
        assert all(x["energy_j"] is None for x in ledger["cells"])
        assert ledger["samples"][-1]["power_w"] is None
        assert c.run(lambda dask_worker: "cumulo-energy" in dask_worker.metrics) == {
            w: False for w in c.scheduler_info()["workers"]}
        summary = metering.Usage.of_record(_row()).summary(ledger)
        assert summary["energy_wh"] is None and "energy" not in metering.usage_text(summary)


def _last_heartbeat(dask_scheduler: Any) -> float:
    """On the scheduler: when it last heard the worker it heard from least recently."""
    return min(ws.last_seen for ws in dask_scheduler.workers.values())


def _row() -> Any:
    from cumulo.life.registry import ClusterRecord

    return ClusterRecord(id="x", name="x", provider="local", spec={}, state="running", created=1000.0,
                         updated=1000.0)


# -- the ledger's arithmetic, with worker reports stood in for ---------------------------------


class _WS:
    def __init__(self, device: str, energy: float, power: float = WATTS) -> None:
        self.name = device
        self.nthreads = 1
        self.memory_limit = 0
        self.resources: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.processing: set[object] = set()
        self.metrics = {"cumulo-energy": {"power_w": power, "energy_j": energy, "device": device}}


def test_a_gpu_shared_by_workers_is_counted_once_and_restarts_do_not_go_negative() -> None:
    from cumulo._ledger import UsageLedger

    async def scenario() -> list[dict]:
        sched = SimpleNamespace(workers={"a": _WS("GPU-0", 100.0), "b": _WS("GPU-0", 100.0),
                                         "c": _WS("GPU-1", 50.0)},
                                handlers={}, stream_handlers={}, periodic_callbacks={}, queued=(), unrunnable=(),
                                tasks={})
        p = UsageLedger(sample_interval=3600)
        await p.start(sched)
        try:
            seen = []
            p._sample()
            seen.append(p.snapshot())
            for ws in sched.workers.values():
                ws.metrics["cumulo-energy"]["energy_j"] += 500.0
            p._sample()
            seen.append(p.snapshot())
            sched.workers["c"].metrics["cumulo-energy"]["energy_j"] = 20.0  # its sampler restarted
            p._sample()
            seen.append(p.snapshot())
            return seen
        finally:
            sched.periodic_callbacks["cumulo-ledger"].stop()

    first, second, third = asyncio.run(scenario())
    assert first["totals"]["energy_j"] == pytest.approx(100.0 + 50.0)  # GPU-0 once, GPU-1
    assert first["totals"]["power_w"] == pytest.approx(2 * WATTS)
    assert second["totals"]["energy_j"] == pytest.approx(150.0 + 500.0 + 500.0)
    assert third["totals"]["energy_j"] == pytest.approx(1150.0 + 20.0)
    shared = [w for w in second["workers"] if w["address"] in ("a", "b")]
    assert sum(w["energy_j"] for w in shared) == pytest.approx(600.0)  # split between the two workers


def test_the_sampler_integrates_power_and_keeps_bounded_memory() -> None:
    watts = [100.0]
    nvml = SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
                           nvmlDeviceGetPowerUsage=lambda h: watts[0] * 1000, nvmlDeviceGetUUID=lambda h: b"GPU-x")
    import sys

    async def scenario() -> tuple[dict, int]:
        sys.modules["cumulo_test_nvml_unit"] = nvml  # type: ignore[assignment]
        try:
            worker = SimpleNamespace(metrics={}, address="tcp://w:1")
            s = PowerSampler(interval=3600, max_samples=5, nvml_module="cumulo_test_nvml_unit")
            s.setup(worker)
            assert worker.metrics["cumulo-energy"] == s.report
            s.last -= 10.0  # as if the next reading came 10 s later, at 300 W
            watts[0] = 300.0
            s.sample()
            for _ in range(20):
                s.sample()
            report = s.report()
            n = len(s.readings)
            s.teardown(worker)
            assert "cumulo-energy" not in worker.metrics
            return report, n
        finally:
            del sys.modules["cumulo_test_nvml_unit"]

    report, n = asyncio.run(scenario())
    assert report["energy_j"] == pytest.approx((100.0 + 300.0) / 2 * 10.0, rel=0.01)  # trapezoid
    assert report["power_w"] == 300.0 and report["device"] == "GPU-x" and report["source"] == "nvml-power"
    assert n == 5


# -- what a user sees in a notebook ---------------------------------------------------------------


def test_energy_in_a_notebook(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "import dask, time, json, cloudpickle\n"
        "dask.config.set({'cumulo.widgets.cell-line-on-connect': False, 'cumulo.cost.sample-interval': '0.2s',\n"
        "                 'cumulo.cost.power-interval': None, 'cumulo.cost.rate-per-worker-hour': 1.0})\n"
        "%load_ext cumulo\n"
        "import cumulo, cumulo._energy\n"
        "cluster = cumulo.connect(workers=1, threads_per_worker=1)\n"
        f"cluster.client.run(exec, {fake_nvml('cumulo_test_nvml_nb')!r}, {{}})\n"
        "cloudpickle.register_pickle_by_value(cumulo._energy)\n"
        "cluster.client.register_plugin(cumulo._energy.PowerSampler(0.1, nvml_module='cumulo_test_nvml_nb'))\n"
        "while not cluster.usage.ledger()['energy']:\n"
        "    time.sleep(0.1)\n"
        "def nap(i):\n"
        "    time.sleep(0.4)\n"
        "    return i",
        "cluster.client.gather(cluster.client.map(nap, range(3), pure=False))",
        "row = cluster.usage.cells(others=False).iloc[0]\n"
        "print(json.dumps({'wh': row['energy_wh'], 'task_seconds': row['task_seconds'],\n"
        "                  'usage': repr(cluster.usage), 'meter': str(cluster.usage.widget())}))",
        "cluster.close()",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    for i, cell in enumerate(nb.cells):
        assert not [o for o in cell.outputs if o.output_type == "error"], (i, cell.outputs)
    (line,) = [o["data"]["text/plain"] for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert "Wh GPU energy" in line, line
    seen = json.loads("".join(o.get("text", "") for o in nb.cells[2].outputs if o.get("name") == "stdout"))
    assert seen["wh"] == pytest.approx(seen["task_seconds"] * WATTS / 3600.0, rel=0.01)
    assert "GPU energy" in seen["usage"] and "Wh" in seen["meter"]


@pytest.mark.gpu
def test_real_nvml_power_is_integrated() -> None:
    """On a GPU machine: the sampler reads the real power draw and the ledger integrates it."""
    with dask.config.set({"cumulo.cost.sample-interval": "0.2s", "cumulo.cost.power-interval": "0.2s"}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                         dashboard_address="127.0.0.1:0") as lc, Client(lc, set_as_default=False) as c:
        assert metering.install(c)
        first = wait_for(lambda: (x := metering.fetch_ledger(c))["energy"] and x, timeout=30, what="a power reading")
        later = wait_for(lambda: (x := metering.fetch_ledger(c))["totals"]["energy_j"] > first["totals"]["energy_j"]
                         and x, timeout=30, what="energy added since")
        watts = later["totals"]["power_w"]
        assert watts is not None and 1.0 < watts < 2000.0, watts  # an idle GPU still draws some power
        gained = later["totals"]["energy_j"] - first["totals"]["energy_j"]
        assert 0.0 < gained < 2000.0 * (later["now"] - first["now"] + 2.0)
        (report,) = c.run(lambda dask_worker: dask_worker.metrics["cumulo-energy"](dask_worker)).values()
        assert report["device"] and report["source"] in ("nvml-counter", "nvml-power")
