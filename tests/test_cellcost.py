"""Per-cell attribution, the per-cell line and cluster.usage.cells(), checked in real IPython kernels (nbclient).

Bounds for task-seconds: a task that sleeps S seconds is recorded as at least S,
and a cell's tasks, all run between the cell's start and its last activity on two
one-thread workers, add up to at most twice that span (stamps the run itself
records, so a loaded machine stretches both alike), as in test_metering.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import dask
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

SLEEP = 0.5
THREADS = 2  # the notebook's cluster: workers x threads each

SETUP = (
    "import dask, time, json\n"
    "dask.config.set({'cumulo.cost.rate-per-worker-hour': 36.0, 'cumulo.guards.interval': '1s',\n"
    "                 'cumulo.widgets.cell-line-on-connect': False, 'cumulo.cost.sample-interval': '0.2s'})\n"
    "%load_ext cumulo\n"
    "import cumulo\n"
    "def nap(i):\n"
    "    time.sleep(0.5)\n"
    "    return i\n"
)

REPORT = (
    "df = cluster.usage.cells()\n"
    "ledger = cumulo.cost.metering.fetch_ledger(cluster.client)\n"
    "print(json.dumps({'rows': json.loads(df.to_json(orient='records', date_format='iso')),\n"
    "                  'dtypes': {c: str(t) for c, t in df.dtypes.items()},\n"
    "                  'totals': ledger['totals']}))"
)

CELLS = [
    # 0: settings, the extension, a cluster
    SETUP + "cluster = cumulo.connect(workers=2, threads_per_worker=1)\nclient = cluster.client",
    # 1 (A): submits 8 tasks of 0.5 s and returns at once
    "futures = client.map(nap, range(8), pure=False)",
    # 2 (B): sleeps without touching the cluster
    "time.sleep(1.0)",
    # 3 (C): waits for A's work
    "results = client.gather(futures)\nassert results == list(range(8))",
    # 4: builds a collection without submitting anything
    "import dask.bag as db\nbag = db.from_sequence(range(4), npartitions=4).map(nap)",
    # 5: persists it (charged here, where it was submitted, not where it was built)
    "bag = bag.persist()",
    # 6: computes the persisted bag (waits; only the tiny final task is new work)
    "total = sum(bag.compute())",
    # 7: submits 4 tasks, then is interrupted while it sleeps
    "futures2 = client.map(nap, range(10, 14), pure=False)\ntime.sleep(60)",
    # 8: waits for the interrupted cell's work
    "client.gather(futures2)",
    # 9: work from a thread, outside any cell
    "import threading\n"
    "t = threading.Thread(target=lambda: client.gather(client.map(nap, range(20, 22), pure=False)))\n"
    "t.start(); t.join()",
    # 10: the table and the ledger
    REPORT,
    # 11: plain output only
    "print('hello')",
    # 12: close
    "cluster.close()",
]
INTERRUPTED = 7


def _lines(cell: Any) -> list[str]:
    out = []
    for o in cell.outputs:
        if o.output_type == "display_data" and o.get("data", {}).get("text/plain", "").startswith("cumulo "):
            out.append(o["data"]["text/plain"])
    return out


def _run(cells: list[str], tmp_path: Path, **kw: Any) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}}, **kw)
    client.execute()
    return nb


def _run_interrupting(cells: list[str], tmp_path: Path, interrupt: int, after: float) -> Any:
    """Run cells one by one; send SIGINT to the kernel process ``after`` seconds into cell ``interrupt``.

    Only the kernel process is signalled, as a terminal's Ctrl-C does. (Jupyter's own
    interrupt signals the kernel's whole process group, which also reaches the
    worker processes of a cluster the kernel started.)
    """
    import os
    import signal
    import threading

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        pid = client.km.provisioner.pid
        for i, cell in enumerate(nb.cells):
            timer = threading.Timer(after, os.kill, (pid, signal.SIGINT)) if i == interrupt else None
            if timer is not None:
                timer.start()
            try:
                client.execute_cell(cell, i)
            finally:
                if timer is not None:
                    timer.cancel()
    return nb


def _span(start: str, end: str) -> float:
    """Seconds between two of the table's times (ISO strings in the report's JSON)."""
    import pandas as pd

    return (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()


def _errors(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if o.output_type == "error"]


def _report(cell: Any) -> dict[str, Any]:
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    return json.loads(text)


def test_cells_are_charged_for_the_work_they_submitted(tmp_path: Path) -> None:
    nb = _run_interrupting(CELLS, tmp_path, interrupt=INTERRUPTED, after=1.5)
    for i, cell in enumerate(nb.cells):
        if i != INTERRUPTED:
            assert not _errors(cell), (i, _errors(cell))
    assert _errors(nb.cells[INTERRUPTED])[0]["ename"] == "KeyboardInterrupt"
    count = {i: cell.execution_count for i, cell in enumerate(nb.cells)}

    # the line: A's work still runs as A ends, B/C/building/plain cells say nothing
    (line_a,) = _lines(nb.cells[1])
    assert line_a.startswith("cumulo ") and "s wall" in line_a, line_a
    assert re.search(r" … [1-8] tasks still running$", line_a), line_a  # said at once, without waiting for them
    for quiet in (2, 3, 4, 11):
        assert _lines(nb.cells[quiet]) == [], (quiet, _lines(nb.cells[quiet]))
    html = [o for o in nb.cells[1].outputs if o.output_type == "display_data"][0]["data"]["text/html"]
    assert "color:#888" in html  # quiet
    assert [o.get("text") for o in nb.cells[11].outputs] == ["hello\n"]

    report = _report(nb.cells[10])
    rows = {r["execution_count"]: r for r in report["rows"] if r["execution_count"] is not None}
    others = {r["cell"]: r for r in report["rows"] if r["execution_count"] is None}
    charged = {count[1], count[5], count[INTERRUPTED]}
    assert charged <= set(rows) <= charged | {count[6]}, sorted(rows)  # B, C and the building cell: no row

    a = rows[count[1]]
    assert (a["submitted"], a["finished"], a["running"], a["erred"]) == (8, 8, 0, 0)
    assert 8 * SLEEP <= a["task_seconds"] <= THREADS * _span(a["start"], a["last_activity"]), a
    assert a["wall"] < SLEEP, a  # A returned at once: its own wall time is short
    assert a["cost"] == pytest.approx(a["task_seconds"] / 3600 * 36.0, rel=0.05)
    assert a["cost_kind"] == "estimate" and "task time" in a["cost_basis"]
    assert a["gpu_seconds"] == 0 and a["energy_wh"] is None  # no NVML here: nothing measured, nothing shown
    assert a["last_activity"] > a["end"]  # its work finished after the cell ended

    persisted = rows[count[5]]
    assert persisted["finished"] == persisted["submitted"] >= 4
    assert 4 * SLEEP <= persisted["task_seconds"] <= THREADS * _span(persisted["start"], persisted["last_activity"])
    if count[6] in rows:  # computing a persisted bag only waits (and adds a tiny final task): no nap again
        assert rows[count[6]]["task_seconds"] < SLEEP

    interrupted = rows[count[INTERRUPTED]]
    assert (interrupted["submitted"], interrupted["finished"], interrupted["running"]) == (4, 4, 0)
    assert 4 * SLEEP <= interrupted["task_seconds"] <= THREADS * _span(interrupted["start"],
                                                                        interrupted["last_activity"])

    # work from a thread is "outside cells", and everything adds up to the ledger's totals
    outside = others["outside cells"]
    # cell 9's thread submitted them after cell 8 had gathered the interrupted cell's work
    assert outside["submitted"] == 2 and 2 * SLEEP <= outside["task_seconds"] <= THREADS * _span(
        interrupted["last_activity"], outside["last_activity"])
    totals = report["totals"]
    every = report["rows"]
    assert sum(r["submitted"] for r in every) == totals["tasks_submitted"]
    assert sum(r["finished"] for r in every) == totals["tasks_done"]
    assert sum(r["erred"] for r in every) == totals["tasks_erred"]
    assert sum(r["task_seconds"] for r in every) == pytest.approx(totals["task_seconds"], abs=1e-6)
    assert totals["tasks_running"] == 0
    for col in ("start", "end", "last_activity"):
        assert report["dtypes"][col].startswith("datetime64"), report["dtypes"]


def test_a_cell_with_work_still_running_updates_its_row(tmp_path: Path) -> None:
    cells = [
        SETUP + "cluster = cumulo.connect(workers=1, threads_per_worker=1)\nclient = cluster.client\n"
        "from distributed import Event\n"
        "def held(i):\n"
        "    Event('go').wait()\n"
        "    return i",
        "futures = client.map(held, range(4), pure=False)",  # none can finish before cell 3 lets them
        "first = cluster.usage.cells().iloc[0].to_dict()",
        "Event('go', client=client).set()\n"
        "client.gather(futures)\nlater = cluster.usage.cells().iloc[0].to_dict()\n"
        "print(json.dumps({'first': [first['running'], first['finished']],\n"
        "                  'later': [later['running'], later['finished']]}))",
        "cluster.close()",
    ]
    nb = _run(cells, tmp_path)
    for i, cell in enumerate(nb.cells):
        assert not _errors(cell), (i, _errors(cell))
    seen = _report(nb.cells[3])
    assert seen["first"] == [4, 0]  # all four submitted, still running (held)
    assert seen["later"] == [0, 4]


KERNEL_CELLS = [
    SETUP + "cluster = cumulo.connect(ADDRESS)\nclient = cluster.client",
    "client.gather(client.map(nap, range(N), pure=False))",
    "client.gather(client.map(nap, range(N), pure=False))",
    REPORT,
    "cluster.close()",
]


def test_two_kernels_sharing_a_cluster_keep_their_cells_apart(tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                      dashboard_address="127.0.0.1:0") as lc:
        notebooks, clients = [], []
        for n in (1, 3):
            nb = nbformat.v4.new_notebook()
            nb.cells = [nbformat.v4.new_code_cell(src.replace("ADDRESS", repr(lc.scheduler_address))
                                                  .replace("range(N)", f"range({n})")) for src in KERNEL_CELLS]
            notebooks.append(nb)
            (tmp_path / str(n)).mkdir()
            clients.append(nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                                                   resources={"metadata": {"path": str(tmp_path / str(n))}}))
        first, second = clients
        with first.setup_kernel(), second.setup_kernel():
            for i in range(len(KERNEL_CELLS)):  # interleaved: one cell of each kernel in turn
                for c, nb in zip(clients, notebooks):
                    c.execute_cell(nb.cells[i], i)
                    time.sleep(0.05)
    for nb in notebooks:
        for i, cell in enumerate(nb.cells):
            assert not _errors(cell), (i, _errors(cell))
    one, three = (_report(nb.cells[3]) for nb in notebooks)
    for report, n, other in ((one, 1, 3), (three, 3, 1)):
        mine = [r for r in report["rows"] if r["execution_count"] is not None]
        assert [r["submitted"] for r in mine] == [n, n], report["rows"]
        assert len({r["kernel"] for r in mine}) == 1
        others = {r["cell"]: r for r in report["rows"] if r["execution_count"] is None}
        assert others["other kernels"]["finished"] >= other  # the other kernel's cells, added up
    assert {r["kernel"] for r in one["rows"] if r["kernel"]} != {r["kernel"] for r in three["rows"] if r["kernel"]}
    # totals stay cluster-wide: both kernels' last reports add up to what their ledger said
    later = max((one, three), key=lambda r: r["totals"]["tasks_done"])
    assert sum(r["finished"] for r in later["rows"]) == later["totals"]["tasks_done"]


def test_cell_spend_model() -> None:
    from types import SimpleNamespace

    from cumulo.cost.metering import cell_spend

    cell = {"busy_seconds": 1800.0, "gpu_seconds": 3600.0}
    priced = SimpleNamespace(rate_per_hour=8.0)
    spend = cell_spend(cell, priced, workers=4)  # half an hour of one of 4 workers at $8/h for the cluster
    assert spend.amount == pytest.approx(1.0) and spend.kind == "estimate" and "provider price" in spend.basis
    free = SimpleNamespace(rate_per_hour=None)
    assert cell_spend(cell, free, workers=1).amount is None and cell_spend(cell, free, workers=1).kind == "none"
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 2.0, "cumulo.cost.rate-per-gpu-hour": 1.0}):
        spend = cell_spend(cell, free, workers=1)
    assert spend.amount == pytest.approx(2.0) and "configured rate" in spend.basis
    assert cell_spend({}, None, workers=0).amount is None


def test_line_texts() -> None:
    from cumulo.cost.cellcost import line
    from cumulo.cost.metering import Spend

    running = {"submitted": 42, "finished": 0, "erred": 0, "running": 42, "task_seconds": 0.0}
    text = line("etl", running, 0.01, Spend(None, None, "no rate set"))
    assert text == "cumulo etl: 0.01s wall · 42 tasks submitted … 42 tasks still running"
    done = {"submitted": 3, "finished": 2, "erred": 1, "running": 0, "task_seconds": 0.9, "gpu_seconds": 0.9,
            "energy_j": 360.0}
    text = line("etl", done, 0.98, Spend(0.0097, None, "task time x configured rate"))
    assert text == ("cumulo etl: 0.98s wall · 0.9 task-s on 3 tasks · 1 failed · 0.9 GPU-s busy · "
                    "0.100 Wh GPU energy · ~$0.0097 (estimate)")
