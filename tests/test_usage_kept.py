"""A closed cluster keeps its final usage in its registry row, and `cumulo usage` shows it, by name or id.

Real clusters, the real `cumulo` command in subprocesses: a cluster closed by the process
that holds it (its watchdog's final reading), one stopped from another process with
`cumulo down ID` (the stop reads the ledger first), and a row closed before cumulo kept
usage (its ``usage`` column empty), which gets a message saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import pytest

import cumulo
from cumulo.jupyter.manager import ClusterManager
from cumulo.life.lifecycle import Lifecycle
from cumulo.cost.metering import stored_usage
from cumulo.life.registry import Registry

pytestmark = pytest.mark.slow

CUMULO = [sys.executable, "-m", "cumulo.cli"]
RATE = {"DASK_CUMULO__COST__RATE_PER_WORKER_HOUR": "36.0"}


def _cumulo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CUMULO, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **RATE})


def _nap(i: int) -> int:
    time.sleep(0.2)
    return i


def test_usage_of_a_closed_cluster_by_name_and_by_id(registry_path: Path) -> None:
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 36.0, "cumulo.widgets.cell-line-on-connect": False}):
        with cumulo.connect(workers=2, threads_per_worker=1, name="kept") as cluster:
            client = cluster.client
            with dask.annotate(cumulo_cell="k1/1"):  # a notebook cell's work, as cumulo.cost.cellcost tags it
                client.gather(client.map(_nap, range(6), pure=False))
            client._send_to_scheduler({"op": "cumulo-cell-mark", "mark": "k1/1", "start": time.time() - 1,
                                       "end": time.time(), "execution_count": 4, "notebook": "etl.ipynb",
                                       "first_line": "df = load()"})
            client.gather(client.map(_nap, range(2), pure=False))  # outside any cell
            cid = cluster.id
    record = Registry().get(cid)
    assert record.state == "closed" and record.usage  # kept by the kernel's final reading
    listed = _cumulo("ls")
    assert listed.returncode == 0 and cid in listed.stdout  # the id `cumulo usage` takes

    by_name, by_id, by_prefix = _cumulo("usage", "kept"), _cumulo("usage", cid), _cumulo("usage", cid[:6])
    for done in (by_name, by_id, by_prefix):
        assert done.returncode == 0, done.stderr
        assert done.stdout == by_name.stdout
    out = by_name.stdout
    assert "kept (local, closed): spend $" in out and f"id {cid}" in out, out
    assert "final usage, read at close" in out and "no ledger reachable" not in out, out
    assert "over 8 tasks" in out and "worker-seconds" in out and "busy" in out and "idle" in out, out
    assert "etl.ipynb [4]" in out and "df = load()" in out and "outside cells" in out, out
    # the kept rows add up to the spend the first line shows
    kept = stored_usage(record)
    assert kept is not None and [r["label"] for r in kept["cells"]] == ["etl.ipynb [4]", "outside cells", "idle"]
    assert sum(r["cost"] for r in kept["cells"]) == pytest.approx(record.cost, rel=1e-6)
    assert f"${record.cost:,.2f}" in out.splitlines()[0]

    # the Jupyter server's usage endpoint takes the id too, and answers from the kept usage
    answer = ClusterManager(Registry()).usage(cid)
    assert answer["final"] is True and answer["usage"]["tasks"] == 8
    assert [c["label"] for c in answer["cells"]] == ["etl.ipynb [4]", "outside cells", "idle"]


def test_a_cluster_closed_before_usage_was_kept_says_so(registry_path: Path) -> None:
    registry = Registry()
    old = registry.create("old", "local", {}, state="running", address="tcp://127.0.0.1:1")
    Lifecycle(registry).closed(old.id)
    assert registry.get(old.id).usage is None
    for key in ("old", old.id):
        done = _cumulo("usage", key)
        assert done.returncode == 0, done.stderr
        assert "old (local, closed)" in done.stdout
        assert "no usage kept for this cluster: it closed before cumulo kept usage at close" in done.stdout
        assert "Traceback" not in done.stderr
    unknown = _cumulo("usage", "0123456789ab")
    assert unknown.returncode == 1 and "no cluster named '0123456789ab' (nor with that id)" in unknown.stderr
    assert ClusterManager(registry).usage(old.id)["final"] is False


OWNER = textwrap.dedent(
    """
    import sys, time, cumulo
    cluster = cumulo.connect(workers=1, threads_per_worker=1, name="held")
    cluster.client.gather(cluster.client.map(time.sleep, [0.2] * 3, pure=False))
    print(cluster.id, flush=True)
    for _ in range(600):
        time.sleep(0.1)
        if cluster.status != "running":
            break
        try:
            cluster.client.scheduler_info()
        except Exception:
            break
    """
)


def test_cumulo_down_by_id_keeps_the_usage(registry_path: Path) -> None:
    env = {**os.environ, **RATE, "DASK_CUMULO__WIDGETS__CELL_LINE_ON_CONNECT": "False"}
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        cid = owner.stdout.readline().strip()
        assert len(cid) == 12, cid
        stopped = _cumulo("down", cid)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped held" in stopped.stdout
        owner.wait(60)  # the owner notices its scheduler is gone and exits
    finally:
        owner.kill()
        owner.wait(30)
    record = Registry().get(cid)
    assert record.state == "closed" and record.usage  # read by `cumulo down` before it stopped the cluster
    out = _cumulo("usage", cid).stdout
    assert "held (local, closed)" in out and "final usage, read at close" in out and "over 3 tasks" in out, out
    assert "outside cells" in out and "idle" in out, out
