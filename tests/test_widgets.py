"""The live cost meter: pure rendering, refresh thread lifecycle, and rendering in an executed notebook."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

import cumulo
from cumulo.widgets import CostMeter, render_html, render_text, sparkline_svg

from .conftest import wait_for

SUMMARY = {"spend": 3.10, "rate_per_hour": 6.0, "cost_kind": "estimate", "cost_basis": "provider clock x catalog price",
           "workers": 2, "threads": 8, "gpus": 2, "gpu_model": "NVIDIA A10", "worker_seconds": 1000.0,
           "busy_worker_seconds": 600.0, "idle_spend": 1.20}


def test_render_text_and_html() -> None:
    text = render_text("etl", SUMMARY, budget=10.0)
    assert "$6.00/h now" in text and "spent $3.10 (estimate) of $10.00 budget" in text
    assert "$1.20 of $3.10 paid for idle GPUs" in text
    samples = [{"time": i, "workers": 2, "threads": 8, "processing": i % 3, "gpu_util": 10.0 * i,
                "gpu_mem_used": 1 << 30, "gpu_mem_total": 1 << 32} for i in range(10)]
    page = render_html("etl", SUMMARY, samples, budget=10.0)
    assert "31% of $10.00 budget" in page and "<polyline" in page and "GPU util / memory" in page
    assert "$1.20 of $3.10 paid for idle GPUs" in page
    unpriced = render_html("<x>", {"spend": None, "rate_per_hour": None, "workers": 1, "threads": 1, "gpus": 0,
                                   "worker_seconds": 10.0, "busy_worker_seconds": 5.0, "idle_spend": None})
    assert "no rate set" in unpriced and "$0" not in unpriced and "&lt;x&gt;" in unpriced
    assert "busy threads" in render_html("c", SUMMARY, [dict(s, gpu_util=None) for s in samples])


def test_sparkline_edges() -> None:
    assert "<polyline" not in sparkline_svg([None, 5.0])
    assert sparkline_svg([0.0, 50.0, 100.0]).count(",") == 3


def test_meter_refreshes_and_stops_with_the_cluster() -> None:
    pytest.importorskip("ipywidgets")
    with dask.config.set({"cumulo.widgets.cell-line-on-connect": False, "cumulo.cost.sample-interval": "0.2s"}):
        cluster = cumulo.connect(workers=1, threads_per_worker=1)
    try:
        meter = CostMeter(cluster, interval=0.1)
        widget = meter.widget()
        assert "workers" in widget.value and "no rate set" in widget.value
        wait_for(lambda: meter.refreshes >= 2, what="two refreshes")
        assert "1 workers" in str(meter)
    finally:
        cluster.close()
    wait_for(lambda: not meter._thread.is_alive(), what="refresh thread ends")
    assert "[closed]" in widget.value


NOTEBOOK = [
    "import dask, cumulo\n"
    "dask.config.set({'cumulo.cost.rate-per-gpu-hour': 1.0, 'cumulo.cost.rate-per-worker-hour': 0.5,\n"
    "                 'cumulo.widgets.refresh-interval': '0.5s'})\n"
    "cluster = cumulo.connect(workers=1, threads_per_worker=1, budget=5.0)",
    "cluster.client.gather(cluster.client.map(lambda i: i, range(10)))",
    "cluster.usage.widget()",
    "cluster.usage",
    "from cumulo.widgets import CostMeter\nm = CostMeter(cluster)\nprint(m)",
    "cluster.close()",
]


def test_widget_renders_in_an_executed_notebook(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK]
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    for i, cell in enumerate(nb.cells):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (i, errors)
        assert not any(o.get("name") == "stderr" and "Traceback" in o.get("text", "") for o in cell.outputs), i
    widget_out = nb.cells[2].outputs[0]
    assert "application/vnd.jupyter.widget-view+json" in widget_out["data"]
    assert "spent $" in widget_out["data"]["text/plain"] or widget_out["data"]["text/plain"].startswith("HTML(")
    usage_out = nb.cells[3].outputs[0]["data"]
    assert "estimate" in usage_out["text/plain"] and "<pre" in usage_out["text/html"]
    printed = nb.cells[4].outputs[0]["text"]
    assert "spent $" in printed and "of $5.00 budget" in printed and "1 workers" in printed


def test_displaying_a_cluster_shows_card_and_live_meter(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "import cumulo\ncluster = cumulo.connect(workers=1, threads_per_worker=1, name='card')",
        "cluster",
        "cluster.close()",
    ]]
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    for i, cell in enumerate(nb.cells):
        assert not [o for o in cell.outputs if o.output_type == "error"], i
    live = nb.cells[1].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in live
    assert "cumulo-meter" in live["text/html"] and "card" in live["text/html"]
