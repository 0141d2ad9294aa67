"""The sidebar card's usage pictures: the same sparkline series and top cells as the notebook's inline meter.

The server's rows are shaped by the meter's own functions (usage_series, rank_cells,
top_cells), bounded to ``cumulo.widgets.sparkline-points`` samples, from the one
ledger reading per open cluster and listing; a closed or unreachable cluster has
neither picture.
"""

from __future__ import annotations

import time
from typing import Any

import dask
import pytest

import cumulo
from cumulo.cost import metering
from cumulo.jupyter.manager import ClusterManager
from cumulo.life.lifecycle import Lifecycle
from cumulo.life.registry import ClusterRecord, Registry
from cumulo.widgets.meter import meter_model, top_cells

from .conftest import free_port, wait_for


def _sample(i: int) -> dict[str, Any]:
    return {"time": 1000.0 + i, "workers": 3, "threads": 6, "processing": i % 4, "busy_workers": i % 4,
            "gpu_util": 10.0 * (i % 10), "gpu_mem_used": 1, "gpu_mem_total": 2, "power_w": None,
            "worker_gpu_util": (float(i % 100), 50.0, None)}


def _cell(kernel: str, seq: int, count: int, busy: float) -> dict[str, Any]:
    return {"tag": f"{kernel}/{seq}", "kernel": kernel, "seq": seq, "execution_count": count, "running": 0,
            "task_seconds": busy, "busy_seconds": busy, "gpu_seconds": 0.0}


def _ledger(samples: int) -> dict[str, Any]:
    """A ledger as the scheduler's plugin answers, with GPU figures that a CPU-only test cluster cannot make."""
    cells = [_cell("k1", 1, 3, 40.0), _cell("k2", 1, 7, 900.0), _cell("k1", 2, 4, 5.0)]
    outside = {"tag": "outside cells", "kernel": None, "seq": None, "execution_count": None, "running": 0,
               "task_seconds": 1.5, "busy_seconds": 1.5, "gpu_seconds": 0.0}
    workers = [{"nthreads": 2, "gpus": 1, "gpu_model": "NVIDIA A10"} for _ in range(3)]
    return {"workers": workers, "totals": {"worker_seconds": 3600.0, "gpu_seconds": 3600.0},
            "cell_summary": {"top": cells, "outside": outside},
            "samples": [_sample(i) for i in range(samples)]}


class Ledgers:
    """The manager's ledger reader, answering from memory and recording what it was asked."""

    def __init__(self, ledger: dict[str, Any] | None) -> None:
        self.ledger = ledger
        self.calls: list[tuple[list[str], int]] = []

    def __call__(self, records: list[ClusterRecord], *, samples: int = 0) -> dict[str, dict[str, Any] | None]:
        self.calls.append(([r.name for r in records], samples))
        return {r.id: self.ledger for r in records}


def test_the_card_carries_the_meters_series_and_top_cells(registry_path: Any) -> None:
    registry = Registry()
    rec = registry.create("gpus", "local", {}, state="running", address="tls://127.0.0.1:1")
    reader = Ledgers(_ledger(samples=80))
    manager = ClusterManager(registry, read_ledgers=reader)
    with dask.config.set({"cumulo.widgets.sparkline-points": 12, "cumulo.cost.rate-per-worker-hour": 0.5}):
        [row] = manager.list()["clusters"]
        inline = meter_model("gpus", {}, _ledger(samples=80)["samples"][-12:],
                             cells=top_cells(_ledger(0), registry.get(rec.id), mine=False))
    assert reader.calls == [(["gpus"], 12)]  # one reading per open cluster and listing, samples bounded
    spark = row["sparkline"]
    assert set(spark) == {"busy", "total", "gpu_util", "worker_gpu_util"}
    for key in spark:  # the same numbers as the inline meter draws from the same samples
        assert spark[key] == inline[key], key
    assert spark["busy"] == [i % 4 for i in range(68, 80)] and spark["total"] == [3] * 12
    assert len(spark["worker_gpu_util"]) == 3 and spark["worker_gpu_util"][1] == [50.0] * 12
    assert spark["worker_gpu_util"][2] == [None] * 12  # a worker that measured nothing stays unmeasured
    assert row["top_cells"] == inline["top_cells"]
    assert [c["label"] for c in row["top_cells"]] == ["k2 [7]", "k1 [3]", "k1 [4]", "outside cells", "idle"]
    first = row["top_cells"][0]
    assert first["cost"] == pytest.approx(900.0 / 3600 * 0.5) and first["basis"] == "task time x configured rate"
    assert first["task_seconds"] == 900.0
    # the rows add up to the card's spend: 3600 worker-seconds at $0.50/h, of which 946.5 s ran a task
    idle = row["top_cells"][-1]
    assert idle["kind"] == "idle" and idle["worker_seconds"] == pytest.approx(3600.0 - 946.5)
    assert row["spent"] == pytest.approx(0.5)
    assert sum(c["cost"] for c in row["top_cells"]) == pytest.approx(row["spent"], rel=1e-9)


def test_the_top_cells_are_cut_to_the_meters_five(registry_path: Any) -> None:
    registry = Registry()
    registry.create("many", "local", {}, state="running", address="tls://127.0.0.1:1")
    ledger = _ledger(samples=0)
    ledger["cell_summary"]["top"] = [_cell("k", i, i, float(i)) for i in range(1, 8)]
    [row] = ClusterManager(registry, read_ledgers=Ledgers(ledger)).list()["clusters"]
    labels = [c["label"] for c in row["top_cells"]]
    assert labels == ["k [7]", "k [6]", "k [5]", "k [4]", "k [3]", "other cells", "outside cells", "idle"]
    other = row["top_cells"][5]  # the two cells past the five, folded: nothing is left out
    assert other["kind"] == "other" and other["task_seconds"] == pytest.approx(1.0 + 2.0)
    assert row["sparkline"] == {"busy": [], "total": [], "gpu_util": [], "worker_gpu_util": []}  # no sample yet


def test_unreachable_and_closed_clusters_have_no_pictures(registry_path: Any) -> None:
    registry = Registry()
    registry.create("silent", "address", {}, state="running", address=f"tcp://127.0.0.1:{free_port()}")
    closed = registry.create("done", "local", {}, state="running", address="tls://127.0.0.1:1")
    Lifecycle(registry).closed(closed.id)
    manager = ClusterManager(registry)  # the real reader: nothing listens on that port
    rows = {r["name"]: r for r in manager.list()["clusters"]}
    assert rows["silent"]["live"] is False
    for name in ("silent", "done"):
        assert rows[name]["sparkline"] is None and rows[name]["top_cells"] is None, name


def _mark(client: Any, tag: str, count: int) -> None:
    """The end-of-cell mark cumulo.cost.cellcost sends after a cell, with its execution count."""
    now = time.time()
    client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": tag, "start": now - 1.0, "end": now,
                               "execution_count": count})


@pytest.mark.slow
def test_a_real_cluster_that_ran_tagged_work(registry_path: Any) -> None:
    settings = {"cumulo.widgets.cell-line-on-connect": False, "cumulo.cost.sample-interval": "0.2s",
                "cumulo.widgets.sparkline-points": 6, "cumulo.cost.rate-per-worker-hour": 0.5}
    with dask.config.set(settings):
        cluster = cumulo.connect(workers=2, threads_per_worker=1, name="tagged")
        try:
            client = cluster.client
            for tag, count, naps in (("kern-a/1", 3, 4), ("kern-a/2", 5, 1), ("kern-b/1", 2, 2)):
                with dask.annotate(cumulo_cell=tag):
                    client.gather(client.map(time.sleep, [0.2] * naps, pure=False))
                _mark(client, tag, count)
            client.gather(client.map(time.sleep, [0.05] * 2, pure=False))  # outside any cell
            manager = ClusterManager(Registry())

            def card() -> dict[str, Any] | None:
                [row] = [r for r in manager.list()["clusters"] if r["name"] == "tagged"]
                spark = row["sparkline"]
                labels = {c["label"] for c in row["top_cells"] or ()}
                return row if spark and len(spark["busy"]) == 6 and "kern-a [3]" in labels else None

            row = wait_for(card, timeout=30, interval=0.2, what="a full sparkline and labelled cells")
            ledger = metering.fetch_ledger(client)
        finally:
            cluster.close()
        spark = row["sparkline"]
        assert len(spark["total"]) == 6 and spark["total"][-1] == 2
        assert all(0 <= b <= t <= 2 for b, t in zip(spark["busy"], spark["total"]))
        assert all(v is None for v in spark["gpu_util"]) and spark["worker_gpu_util"] == []  # CPU workers
        cells = row["top_cells"]
        assert [c["label"] for c in cells][-2:] == ["outside cells", "idle"]
        assert {c["label"] for c in cells} == {"kern-a [3]", "kern-a [5]", "kern-b [2]", "outside cells", "idle"}
        # every task-second of the ledger is in one of the rows (no earlier cells, nothing left out)
        assert sum(c["task_seconds"] for c in cells) == pytest.approx(ledger["totals"]["task_seconds"], abs=1e-6)
        assert cells[0]["label"] == "kern-a [3]" and cells[0]["task_seconds"] >= 4 * 0.2
        costs = [c["cost"] for c in cells if c["kind"] == "cell"]
        assert costs == sorted(costs, reverse=True)
        assert all(c["basis"] == "task time x configured rate" for c in cells if c["kind"] != "idle")
        assert sum(c["cost"] for c in cells) == pytest.approx(row["spent"], rel=1e-9)  # and every dollar
        [closed] = [r for r in manager.list()["clusters"] if r["name"] == "tagged"]
        assert closed["state"] == "closed" and closed["sparkline"] is None and closed["top_cells"] is None
