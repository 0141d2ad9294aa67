"""The usage ledger on a real scheduler (LocalCluster, processes, 127.0.0.1, port 0) and the spend model.

Tolerance for busy seconds: a task that sleeps S seconds is recorded as at least
S (the worker times the call around the sleep) and at most S + 0.25 s (timer and
thread hand-off jitter; generous on this shared 2-core machine).
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

from cumulo import metering
from cumulo.registry import ClusterRecord

from .conftest import free_port, wait_for

SLEEP = 0.4
JITTER = 0.25


def nap(i: int) -> int:
    time.sleep(SLEEP)
    return i


def boom(i: int) -> None:
    time.sleep(0.05)
    raise ValueError("expected")


@pytest.fixture(scope="module")
def cluster():
    with dask.config.set({"cumulo.cost.sample-interval": "0.2s"}), LocalCluster(
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
    client.gather(client.map(nap, range(8), pure=False))
    after = metering.fetch_ledger(client)
    busy = after["totals"]["task_seconds"] - before["task_seconds"]
    assert 8 * SLEEP <= busy <= 8 * (SLEEP + JITTER), busy
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


def test_bounded_memory(client: Client) -> None:
    client.gather(client.map(lambda i: i, range(3000), pure=False))
    for i in range(300):
        client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": f"m{i}"})

    def sizes(dask_scheduler):  # noqa: ANN001
        p = dask_scheduler.plugins["cumulo-ledger"]
        return {"marks": len(p.marks), "samples": len(p.samples), "max_samples": p.max_samples,
                "workers": len(p.workers), "slots": sorted(vars(p))}

    s = wait_for(lambda: (r := client.run_on_scheduler(sizes)) and r["marks"] == 256 and r, what="marks trimmed")
    assert s["samples"] <= s["max_samples"]
    assert s["workers"] == 2
    # no attribute of the plugin holds per-task state
    assert not any("task" in name and name not in ("tasks_done", "tasks_erred", "left_task_seconds")
                   for name in s["slots"]), s["slots"]


def test_samples_and_cell_marks(client: Client) -> None:
    client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": "cell-1"})
    wait_for(lambda: "since_mark" in metering.fetch_ledger(client, mark="cell-1"), what="mark arrives")
    client.gather(client.map(nap, range(2), pure=False))
    ledger = wait_for(lambda: (x := metering.fetch_ledger(client, mark="cell-1", samples=5))["samples"] and x,
                      what="a sample")
    since = ledger["since_mark"]
    assert since["tasks_done"] == 2
    assert 2 * SLEEP <= since["task_seconds"] <= 2 * (SLEEP + JITTER)
    assert ledger["samples"][-1]["workers"] == 2 and ledger["samples"][-1]["gpu_util"] is None


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
            assert ledger["version"] == 1 and ledger["workers"] == ()
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


def _gpus() -> int:
    try:
        from distributed.diagnostics import nvml

        return int(nvml.device_get_count())
    except Exception:
        return 0


@pytest.mark.gpu
@pytest.mark.skipif(_gpus() == 0, reason="NVML reports no GPU on this machine")
def test_ledger_on_cuda_workers_reports_gpus_and_utilisation() -> None:
    import cumulo

    with dask.config.set({"cumulo.cost.sample-interval": "0.2s", "cumulo.widgets.cell-line-on-connect": False}):
        with cumulo.connect() as cluster:
            ledger = wait_for(lambda: (x := cluster.usage.ledger(samples=3))["nvml"] and x, timeout=30,
                              what="an NVML sample")
            assert sum(w["gpus"] for w in ledger["workers"]) == _gpus()
            assert all(w["gpu_model"] and w["gpu_memory_total"] for w in ledger["workers"])
            assert ledger["samples"][-1]["gpu_util"] is not None
            assert ledger["totals"]["gpu_util_seconds"] is not None and ledger["totals"]["gpu_seconds"] > 0
            assert cluster.usage.summary()["gpus"] == _gpus()
