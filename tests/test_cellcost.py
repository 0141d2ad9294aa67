"""The per-cell cost line and cluster.usage.cells(), checked in a real IPython kernel (nbclient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

CELLS = [
    # 0: settings, then the extension, then a cluster
    "import dask, time, json\n"
    "dask.config.set({'cumulo.cost.rate-per-worker-hour': 36.0, 'cumulo.guards.interval': '1s',\n"
    "                 'cumulo.widgets.cell-line-on-connect': False})\n"
    "%load_ext cumulo\n"
    "import cumulo\n"
    "cluster = cumulo.connect(workers=1, threads_per_worker=1)",
    # 1: does not touch the cluster
    "x = 1 + 1",
    # 2: uses the cluster: 3 tasks of 0.3 s
    "res = cluster.client.gather(cluster.client.map(lambda i: time.sleep(0.3) or i, range(3), pure=False))",
    # 3: plain output only
    "print('hello')",
    # 4: dask collection through the default client
    "import dask.bag as db\ntotal = db.from_sequence(range(100), npartitions=4).map(lambda v: v * 2).sum().compute()",
    # 5: the table
    "print(cluster.usage.cells().to_json(orient='records'))",
    # 6: close
    "cluster.close()",
]


def lines(cell) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for o in cell.outputs:
        if o.output_type == "display_data" and "cumulo" in o.get("data", {}).get("text/plain", ""):
            out.append(o["data"]["text/plain"])
    return out


def test_cell_lines_in_a_real_kernel(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (i, errors)
    assert lines(nb.cells[1]) == [] and lines(nb.cells[3]) == []
    assert [o.get("text") for o in nb.cells[3].outputs] == ["hello\n"]
    (line,) = lines(nb.cells[2])
    assert line.startswith("cumulo ") and "s wall" in line and "on 3 tasks" in line and "(estimate)" in line
    (line4,) = lines(nb.cells[4])
    print(line, line4, sep="\n")
    assert " tasks · " in line4  # a dask collection computed through the default client counts too
    html = [o for o in nb.cells[2].outputs if o.output_type == "display_data"][0]["data"]["text/html"]
    assert "color:#888" in html  # quiet
    rows = json.loads(nb.cells[5].outputs[0]["text"])
    assert [r["execution_count"] for r in rows] == [nb.cells[2].execution_count, nb.cells[4].execution_count]
    first = rows[0]
    assert first["tasks"] == 3
    assert 0.9 <= first["task_seconds"] <= 0.9 + 3 * 0.25
    assert first["wall"] >= 0.3 and first["cost"] > 0 and first["cost_kind"] == "estimate"
    assert first["gpu_seconds"] == 0


def test_cell_cost_model() -> None:
    from types import SimpleNamespace

    import dask

    from cumulo import cellcost

    usage = SimpleNamespace(record=lambda: SimpleNamespace(rate_per_hour=7.2))
    priced = SimpleNamespace(_cumulo_usage=usage)
    assert cellcost.cell_cost(priced, {}, wall=10.0) == (pytest.approx(0.02), "estimate")
    free = SimpleNamespace(_cumulo_usage=SimpleNamespace(record=lambda: SimpleNamespace(rate_per_hour=None)))
    assert cellcost.cell_cost(free, {"worker_seconds": 3600.0}, wall=1.0) == (None, "none")
    with dask.config.set({"cumulo.cost.rate-per-worker-hour": 2.0, "cumulo.cost.rate-per-gpu-hour": 1.0}):
        cost, kind = cellcost.cell_cost(free, {"worker_seconds": 1800.0, "gpu_seconds": 3600.0}, wall=1.0)
    assert cost == pytest.approx(2.0) and kind == "estimate"
