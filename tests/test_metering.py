"""The usage ledger on a real scheduler (LocalCluster, processes, 127.0.0.1, port 0) and the spend model.

Bounds for busy seconds: a task that sleeps S seconds is recorded as at least S
(the worker times the call around the sleep), and tasks on the fixture's two
one-thread workers add up to at most twice the time between submitting them and
having their results (measured here, so a loaded machine stretches both alike).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from cumulo.cost import metering
from cumulo.life.registry import ClusterRecord

from .conftest import free_port, gpu_count, wait_for

SLEEP = 0.4
THREADS = 2  # the fixture's workers x threads each: the most task-seconds one second of wall time can hold


def nap(i: int) -> int:
    time.sleep(SLEEP)
    return i


def boom(i: int) -> None:
    time.sleep(0.05)
    raise ValueError("expected")


MAX_CELLS = 50


@pytest.fixture(scope="module")
def cluster():
    with dask.config.set({"cumulo.cost.sample-interval": "0.2s", "cumulo.cost.ledger-cells": MAX_CELLS}), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    ) as lc:
        yield lc


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        assert metering.install(c)
        yield c


def test_busy_seconds_of_known_sleeps(client: Client) -> None:
    before = metering.fetch_ledger(client)["totals"]
    started = time.time()
    client.gather(client.map(nap, range(8), pure=False))
    window = time.time() - started
    after = metering.fetch_ledger(client)
    busy = after["totals"]["task_seconds"] - before["task_seconds"]
    assert 8 * SLEEP <= busy <= THREADS * window, (busy, window)
    assert after["totals"]["tasks_done"] - before["tasks_done"] == 8
    per_worker = sum(w["task_seconds"] for w in after["workers"])
    assert per_worker == pytest.approx(after["totals"]["task_seconds"])
    assert all(w["nthreads"] == 1 and w["gpus"] == 0 and w["gpu_util"] is None for w in after["workers"])
    assert after["nvml"] is False and after["totals"]["gpu_util_seconds"] is None
    t = after["totals"]
    assert t["busy_worker_seconds"] <= t["worker_seconds"]


def test_erred_tasks_are_counted(client: Client) -> None:
    before = metering.fetch_ledger(client)["totals"]
    futures = client.map(boom, range(3), pure=False)
    for f in futures:
        with pytest.raises(ValueError):
            f.result()
    after = metering.fetch_ledger(client)["totals"]
    assert after["tasks_erred"] - before["tasks_erred"] == 3
    assert after["task_seconds"] - before["task_seconds"] >= 3 * 0.05


def test_install_is_idempotent_and_history_survives_reattach(cluster, client: Client) -> None:
    client.gather(client.map(nap, range(2), pure=False))
    done = metering.fetch_ledger(client)["totals"]["tasks_done"]
    with Client(cluster.scheduler_address, set_as_default=False) as other:
        assert metering.install(other)  # a second kernel attaching installs again: a no-op
        seen = metering.fetch_ledger(other)
        assert seen["totals"]["tasks_done"] == done
        assert seen["started"] == metering.fetch_ledger(client)["started"]


def _tagged(tag: str):  # noqa: ANN202
    """What cumulo.cost.cellcost puts around each graph a notebook cell submits."""
    return dask.annotate(cumulo_cell=tag)


def _cells(client: Client, kernel: str | None = None) -> dict[str, dict]:
    ledger = metering.fetch_ledger(client, cells=True, kernel=kernel)
    return {c["tag"]: c for c in ledger["cells"]}


def test_bounded_memory(client: Client) -> None:
    client.gather(client.map(lambda i: i, range(3000), pure=False))
    before = metering.fetch_ledger(client)["cell_summary"]["earlier"]["submitted"]
    for i in range(MAX_CELLS + 10):
        with _tagged(f"bounded/{i}"):
            client.gather(client.submit(lambda x: x, i, pure=False))

    def sizes(dask_scheduler):  # noqa: ANN001
        p = dask_scheduler.plugins["cumulo-ledger"]
        return {"cells": len(p.cells), "ended": len(p.ended), "samples": len(p.samples),
                "max_samples": p.max_samples, "workers": len(p.workers), "slots": sorted(vars(p))}

    s = client.run_on_scheduler(sizes)
    assert s["cells"] == MAX_CELLS and s["ended"] <= 1024
    assert s["samples"] <= s["max_samples"]
    assert s["workers"] == 2
    # no attribute of the plugin holds per-task state
    assert not any("task" in name and name not in ("tasks_submitted", "tasks_done", "tasks_erred",
                                                   "left_task_seconds") for name in s["slots"]), s["slots"]
    # the oldest cells were folded into "earlier cells": nothing is lost from the sums
    ledger = metering.fetch_ledger(client, cells=True)
    kept = [c for c in ledger["cells"] if c["tag"].startswith("bounded/")]
    assert len(kept) == MAX_CELLS and kept[-1]["tag"] == f"bounded/{MAX_CELLS + 9}"
    assert ledger["cell_summary"]["earlier"]["submitted"] >= before + 10
    _assert_adds_up(ledger)


def _assert_adds_up(ledger: dict) -> None:
    rows = [*ledger["cells"], ledger["cell_summary"]["outside"], ledger["cell_summary"]["earlier"]]
    if ledger.get("other_kernels"):
        rows.append(ledger["other_kernels"])
    t = ledger["totals"]
    assert sum(r["submitted"] for r in rows) == t["tasks_submitted"]
    assert sum(r["finished"] for r in rows) == t["tasks_done"]
    assert sum(r["erred"] for r in rows) == t["tasks_erred"]
    assert sum(r["running"] for r in rows) == t["tasks_running"]
    assert sum(r["task_seconds"] for r in rows) == pytest.approx(t["task_seconds"], abs=1e-6)


def test_cells_are_charged_whenever_their_work_finishes(client: Client) -> None:
    started = time.time()
    with _tagged("kernel-a/1"):
        futures = client.map(nap, range(4), pure=False)  # submitted by cell 1, awaited later
    client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": "kernel-a/1", "start": 1.0, "end": 2.0,
                               "execution_count": 7})
    first = client.sync(client.scheduler.cumulo_cell, tag="kernel-a/1", timeout=5)
    assert first["seen"] and first["cell"]["submitted"] == 4 and first["cell"]["running"] >= 2
    assert first["cell"]["execution_count"] == 7 and first["cell"]["wall"] == 1.0
    with _tagged("kernel-b/1"):
        client.gather(client.map(nap, range(2), pure=False))  # another kernel's cell meanwhile
    client.gather(futures)
    window = time.time() - started
    cells = _cells(client, kernel="kernel-a")
    a = cells["kernel-a/1"]
    assert (a["submitted"], a["finished"], a["running"], a["erred"]) == (4, 4, 0, 0)
    assert 4 * SLEEP <= a["task_seconds"] <= THREADS * window - 2 * SLEEP, (a["task_seconds"], window)  # b's 2 naps too
    assert a["busy_seconds"] == pytest.approx(a["task_seconds"])  # one thread per worker
    assert a["kernel"] == "kernel-a" and a["last"] >= a["first"]
    assert "kernel-b/1" not in cells
    ledger = metering.fetch_ledger(client, kernel="kernel-a")
    assert ledger["other_kernels"]["finished"] >= 2
    _assert_adds_up(ledger)
    # a cell that submitted nothing: no row, and the RPC says so once the mark is in
    client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": "kernel-a/2"})
    nothing = client.sync(client.scheduler.cumulo_cell, tag="kernel-a/2", timeout=5)
    assert nothing == {"cell": None, "seen": True, "now": nothing["now"]}
    late = client.sync(client.scheduler.cumulo_cell, tag="kernel-a/never", timeout=0.1)
    assert late["seen"] is False and late["cell"] is None


def test_cancelled_and_failed_work_leaves_the_running_count(client: Client) -> None:
    with _tagged("kernel-c/1"):
        slow = client.map(nap, range(6), pure=False)
        bad = client.map(boom, range(2), pure=False)
    wait_for(lambda: _cells(client).get("kernel-c/1", {}).get("finished", 0) >= 1, what="a task done")
    client.cancel(slow)
    client.gather(bad, errors="skip")
    del slow, bad
    cell = wait_for(lambda: (c := _cells(client)["kernel-c/1"])["running"] == 0 and c, what="nothing running")
    assert cell["submitted"] == 8 and cell["erred"] == 2 and 1 <= cell["finished"] < 6
    _assert_adds_up(metering.fetch_ledger(client, cells=True))


def test_samples(client: Client) -> None:
    client.gather(client.map(nap, range(2), pure=False))
    ledger = wait_for(lambda: (x := metering.fetch_ledger(client, samples=5))["samples"] and x, what="a sample")
    last = ledger["samples"][-1]
    assert last["workers"] == 2 and last["gpu_util"] is None and last["worker_gpu_util"] is None
    assert last["power_w"] is None and 0 <= last["busy_workers"] <= 2
    assert ledger["energy"] is False and ledger["totals"]["energy_j"] is None


def test_worker_leaving_keeps_its_history() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                      dashboard_address="127.0.0.1:0") as lc, Client(lc, set_as_default=False) as c:
        assert metering.install(c)
        w = list(c.scheduler_info()["workers"])[0]
        c.gather(c.submit(nap, 1, workers=[w], pure=False))
        c.retire_workers([w])
        ledger = wait_for(lambda: (x := metering.fetch_ledger(c, departed=True))["departed"] and x,
                          what="worker departure")
        gone = ledger["departed"][0]
        assert gone["address"] == w and gone["left"] is not None and gone["task_seconds"] >= SLEEP
        assert len(ledger["workers"]) == 1
        assert ledger["totals"]["task_seconds"] >= SLEEP
        assert ledger["totals"]["worker_seconds"] >= gone["alive_seconds"]


def test_plugin_runs_on_a_scheduler_without_cumulo(tmp_path: Path) -> None:
    """The ledger travels by value: a scheduler that cannot import cumulo still runs it."""
    port = free_port()
    code = ("import sys; sys.modules['cumulo'] = None\n"
            "from distributed.cli.dask_scheduler import main\n"
            f"sys.argv = ['dask-scheduler', '--host', '127.0.0.1', '--port', '{port}', "
            "'--dashboard-address', '127.0.0.1:0']\nmain()\n")
    log = open(tmp_path / "sched.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log, env=dict(os.environ))
    try:
        def connect():
            try:
                return Client(f"tcp://127.0.0.1:{port}", timeout=2, set_as_default=False)
            except OSError:
                return None
        c = wait_for(connect, timeout=60, interval=0.3, what="scheduler up")
        try:
            assert metering.install(c)
            ledger = metering.fetch_ledger(c)
            assert ledger["version"] == 3 and ledger["workers"] == ()
            assert c.run_on_scheduler(lambda: "cumulo" in sys.modules and sys.modules["cumulo"] is None)
        finally:
            c.close()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


# -- the spend model (no cluster needed) ------------------------------------------------------


def _record(**kw) -> ClusterRecord:  # type: ignore[no-untyped-def]
    base = dict(id="x", name="x", provider="local", spec={}, state="running", created=1000.0, updated=1000.0)
    return ClusterRecord(**(base | kw))


LEDGER = {"totals": {"worker_seconds": 7200.0, "gpu_seconds": 3600.0, "busy_worker_seconds": 1800.0,
                     "gpu_busy_seconds": 900.0, "gpu_util_seconds": None},
          "workers": [{"gpus": 1}, {"gpus": 0}]}


def test_no_rate_is_never_zero() -> None:
    s = metering.spend_of(_record(), LEDGER, now=2000.0)
    assert s.amount is None and s.kind == "none" and s.text() == "no rate set"


def test_configured_rates() -> None:
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 0.5, "cumulo.cost.rate-per-gpu-hour": 2.0}):
        s = metering.spend_of(_record(), LEDGER, now=2000.0)
    assert s.amount == pytest.approx(2 * 0.5 + 1 * 2.0)
    assert s.rate_per_hour == pytest.approx(2 * 0.5 + 1 * 2.0)
    assert s.kind == "estimate" and "configured rate" in s.basis


def test_provider_clock_rounds_up_to_granularity() -> None:
    rec = _record(rate_per_hour=3.6, created=0.0)
    with dask.config.set({"cumulo.cost.billing-granularity": "60s"}):
        assert metering.spend_of(rec, None, now=61.0).amount == pytest.approx(3.6 * 120 / 3600)
        closed = _record(rate_per_hour=3.6, created=0.0, closed=3600.0, state="closed")
        assert metering.spend_of(closed, None, now=99999.0).amount == pytest.approx(3.6)
    assert "provider clock" in metering.spend_of(rec, None, now=61.0).basis


def test_idle_fraction_prefers_gpus() -> None:
    assert metering.idle_fraction(LEDGER["totals"]) == pytest.approx(0.75)
    cpu = {"worker_seconds": 100.0, "busy_worker_seconds": 40.0, "gpu_seconds": 0.0}
    assert metering.idle_fraction(cpu) == pytest.approx(0.6)
    assert metering.idle_fraction({"worker_seconds": 0.0, "gpu_seconds": 0.0}) is None


def test_usage_through_connect_and_after_close() -> None:
    import cumulo

    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 36.0, "cumulo.widgets.cell-line-on-connect": False}):
        cluster = cumulo.connect(workers=1, threads_per_worker=1)
        try:
            assert cluster.usage.installed
            cluster.client.gather(cluster.client.map(nap, range(2), pure=False))
            live = cluster.usage.summary()
            assert live["tasks"] == 2 and live["cost_kind"] == "estimate" and live["spend"] > 0
            assert "worker-time x configured rate" in repr(cluster.usage)
        finally:
            cluster.close()
        after = cluster.usage.summary()  # the ledger as read while closing
    assert after["tasks"] == 2
    rec = cluster.registry.get(cluster.id)
    assert rec.state == "closed" and rec.cost == pytest.approx(after["spend"], rel=0.2) and rec.cost_kind == "estimate"


# -- GPU figures, with NVML's reports stood in for (no GPU on CI machines) ----------------------


class _FakeWorker:
    def __init__(self, util: float | None) -> None:
        self.name = "gpu-0"
        self.nthreads = 1
        self.memory_limit = 1 << 34
        self.resources: dict[str, float] = {}
        self.extra = {"gpu": {"name": "NVIDIA H100 80GB HBM3", "memory-total": 80 << 30}}
        self.metrics = {"gpu": {"utilization": util, "memory-used": 4 << 30}}
        self.processing: set[object] = set()


class _FakeScheduler:
    def __init__(self) -> None:
        self.workers = {"tcp://gpu:1": _FakeWorker(50.0)}
        self.handlers: dict[str, object] = {}
        self.stream_handlers: dict[str, object] = {}
        self.periodic_callbacks: dict[str, object] = {}
        self.queued: tuple[object, ...] = ()
        self.unrunnable: tuple[object, ...] = ()


def test_gpu_utilisation_is_integrated_and_counts_as_busy() -> None:
    import asyncio

    from cumulo._ledger import UsageLedger

    async def scenario() -> dict:
        sched = _FakeScheduler()
        p = UsageLedger(sample_interval=3600, gpu_busy_threshold=10)
        await p.start(sched)
        try:
            assert sched.handlers["cumulo_ledger"] == p.snapshot
            (w,) = p.workers.values()
            assert (w.gpus, w.gpu_model, w.gpu_memory_total) == (1, "NVIDIA H100 80GB HBM3", 80 << 30)
            p._sample()  # first report: 50%
            p.last_sample -= 10  # as if the next sample came 10 s later
            w.joined -= 10
            p.last_busy -= 100
            p._sample()  # 10 s at 50% = 5 GPU-seconds of utilisation; busy because 50% >= 10%
            busy = p.snapshot(samples=5)
            sched.workers["tcp://gpu:1"].metrics["gpu"]["utilization"] = 2.0
            p.last_busy -= 100
            p._sample()  # 2% is under the threshold: idle keeps counting
            idle = p.snapshot()
            p.remove_worker(sched, "tcp://gpu:1")
            gone = p.snapshot(departed=True)
            return {"busy": busy, "idle": idle, "gone": gone}
        finally:
            sched.periodic_callbacks["cumulo-ledger"].stop()

    r = asyncio.run(scenario())
    busy = r["busy"]
    assert busy["nvml"] is True and busy["idle_seconds"] < 1
    assert busy["totals"]["gpu_util_seconds"] == pytest.approx(5.0, abs=0.1)
    assert busy["totals"]["gpu_seconds"] >= 10
    assert busy["samples"][-1]["gpu_util"] == 50.0 and busy["samples"][-1]["gpu_mem_total"] == 80 << 30
    assert r["idle"]["idle_seconds"] >= 100
    assert r["gone"]["workers"] == [] and r["gone"]["departed"][0]["gpus"] == 1
    assert r["gone"]["totals"]["gpu_seconds"] >= 10
    with dask.config.set({"cumulo.cost.rate-per-gpu-hour": 3600.0}):
        spend = metering.spend_of(_record(), r["gone"])
    assert spend.amount == pytest.approx(r["gone"]["totals"]["gpu_seconds"])


def test_cli_usage_reads_the_ledger_by_address(capsys: pytest.CaptureFixture[str]) -> None:
    import cumulo
    from cumulo.cli import main

    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 1.0, "cumulo.widgets.cell-line-on-connect": False}):
        with cumulo.connect(workers=1, threads_per_worker=1, name="usage-cli") as cluster:
            cluster.client.gather(cluster.client.map(nap, range(2), pure=False))
            assert main(["usage", "usage-cli"]) == 0
            out = capsys.readouterr().out
            assert "usage-cli (local, running): spend $" in out and "over 2 tasks" in out
        assert main(["usage", "usage-cli"]) == 0
        out = capsys.readouterr().out
        assert "(local, closed)" in out and "estimate" in out
    assert main(["usage", "no-such"]) == 1


@pytest.mark.gpu
def test_ledger_on_cuda_workers_reports_gpus_and_utilisation() -> None:
    import cumulo

    with dask.config.set({"cumulo.cost.sample-interval": "0.2s", "cumulo.widgets.cell-line-on-connect": False}):
        with cumulo.connect() as cluster:
            ledger = wait_for(lambda: (x := cluster.usage.ledger(samples=3))["nvml"] and x, timeout=30,
                              what="an NVML sample")
            assert sum(w["gpus"] for w in ledger["workers"]) == gpu_count()
            assert all(w["gpu_model"] and w["gpu_memory_total"] for w in ledger["workers"])
            assert ledger["samples"][-1]["gpu_util"] is not None
            assert ledger["totals"]["gpu_util_seconds"] is not None and ledger["totals"]["gpu_seconds"] > 0
            assert cluster.usage.summary()["gpus"] == gpu_count()
