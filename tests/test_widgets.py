"""The live cost meter: pure rendering, its refresh on the cluster's loop, plots, and rendering in notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import pytest

import cumulo
from cumulo.widgets import CostMeter, meter_model, render_html, render_text, sparkline_svg, workers_svg

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
    assert "31% of $10.00 budget" in page and "<polyline" in page and "GPU utilisation" in page
    assert "$1.20 of $3.10 paid for idle GPUs" in page
    unpriced = render_html("<x>", {"spend": None, "rate_per_hour": None, "workers": 1, "threads": 1, "gpus": 0,
                                   "worker_seconds": 10.0, "busy_worker_seconds": 5.0, "idle_spend": None})
    assert "no rate set" in unpriced and "$0" not in unpriced and "&lt;x&gt;" in unpriced
    cpu = render_html("c", SUMMARY, [dict(s, gpu_util=None) for s in samples])
    assert "busy vs idle workers" in cpu and "GPU utilisation" not in cpu


def test_sparkline_edges() -> None:
    assert "<polyline" not in sparkline_svg([None, 5.0])
    assert sparkline_svg([0.0, 50.0, 100.0]).count(",") == 3
    assert "<rect" not in workers_svg([], [])
    bars = workers_svg([0, 1, 2], [2, 2, 2])
    assert bars.count("#3b82f6") == 2 and bars.count("#d1d5db") == 2  # busy over idle, per sample


CELLS = [{"label": "[3]", "cost": 0.02, "task_seconds": 4.1, "running": 0},
         {"label": "[7]", "cost": 0.5, "task_seconds": 90.0, "running": 8},
         {"label": "outside cells", "cost": 0.001, "task_seconds": 0.2, "running": 0}]


def test_the_picture_busy_idle_gpus_energy_top_cells() -> None:
    samples = [{"time": i, "workers": 4, "threads": 4, "processing": i, "busy_workers": min(i, 4),
                "gpu_util": 50.0, "worker_gpu_util": (10.0 * i, 90.0, None, 5.0), "power_w": 800.0}
               for i in range(6)]
    s = dict(SUMMARY, energy_wh=1.25, power_w=800.0, tasks_running=8)
    m = meter_model("etl", s, samples, budget=10.0, cells=CELLS)
    assert m["busy"] == [0, 1, 2, 3, 4, 4] and m["total"] == [4] * 6
    assert len(m["worker_gpu_util"]) == 4 and m["worker_gpu_util"][1] == [90.0] * 6
    assert [c["label"] for c in m["top_cells"]] == ["[7]", "[3]", "outside cells"]
    assert m["budget_fraction"] == pytest.approx(0.31)
    import json

    json.dumps(m)  # plain data: what a frontend (or the sidebar) can draw too
    page = render_html("etl", s, samples, budget=10.0, cells=CELLS)
    assert "busy vs idle workers" in page and "busy</span> 4 / idle 0" in page
    assert "GPU utilisation per worker" in page and page.count("<polyline") >= 3
    assert "GPU energy <b>1.250 Wh</b> · 800 W now" in page and "8 tasks running" in page
    assert page.index("[7]") < page.index("[3]") and "$0.5000" in page
    text = render_text("etl", s, budget=10.0, cells=CELLS)
    assert "GPU energy 1.250 Wh" in text and "[7]: 90.0 task-s ~$0.5000, 8 running" in text
    cpu = render_html("cpu", dict(SUMMARY, gpus=0, energy_wh=None), [dict(x, worker_gpu_util=None, gpu_util=None)
                                                                    for x in samples])
    assert "GPU utilisation" not in cpu and "energy" not in cpu  # nothing measured: nothing shown


def test_meter_refreshes_on_the_cluster_loop_and_stops_with_the_cluster() -> None:
    pytest.importorskip("ipywidgets")
    import threading

    with dask.config.set({"cumulo.widgets.cell-line-on-connect": False, "cumulo.cost.sample-interval": "0.2s"}):
        cluster = cumulo.connect(workers=1, threads_per_worker=1)
    try:
        meter = CostMeter(cluster, interval=0.1)
        widget = meter.widget()
        assert "workers" in widget.value and "no rate set" in widget.value
        wait_for(lambda: meter.refreshes >= 3, what="three refreshes")
        assert meter.running
        assert not [t for t in threading.enumerate() if "meter" in t.name]  # no thread of its own
        cluster.client.gather(cluster.client.map(lambda i: i, range(5)))
        wait_for(lambda: "busy vs idle workers" in widget.value, what="a sparkline")
        assert "1 workers" in str(meter)
    finally:
        cluster.close()
    wait_for(lambda: not meter.running, what="the refresh stops")
    wait_for(lambda: "[closed]" in widget.value, what="a last frame")
    assert "/h now" not in widget.value


def test_meter_stop_keeps_the_last_frame() -> None:
    pytest.importorskip("ipywidgets")
    with dask.config.set({"cumulo.widgets.cell-line-on-connect": False}):
        cluster = cumulo.connect(workers=1, threads_per_worker=1)
    try:
        meter = CostMeter(cluster, interval=0.1)
        meter.widget()
        wait_for(lambda: meter.refreshes >= 1, what="a refresh")
        meter.stop()
        wait_for(lambda: not meter.running, what="the callback stops")
        n = meter.refreshes
        import time

        time.sleep(0.4)
        assert meter.refreshes == n
    finally:
        cluster.close()


def test_plot_and_report(tmp_path: Path) -> None:
    pytest.importorskip("bokeh")
    with dask.config.set({"cumulo.widgets.cell-line-on-connect": False, "cumulo.cost.sample-interval": "0.1s",
                          "cumulo.cost.rate-per-worker-hour": 3.6}):
        with cumulo.connect(workers=1, threads_per_worker=1) as cluster:
            cluster.client.gather(cluster.client.map(lambda i: __import__("time").sleep(0.1), range(5), pure=False))
            wait_for(lambda: len(cluster.usage.ledger(samples=10)["samples"]) >= 3, what="samples")
            plot = cluster.usage.plot()
            path = cluster.usage.report(tmp_path / "usage.html")
    page = path.read_text()
    assert "Paid capacity over time ($): busy vs idle" in page and "Cost per cell" in page
    assert "Bokeh" in page and "cdn.bokeh.org" not in page  # standalone: bokeh's JS inlined
    assert "<iframe" in plot._repr_html_()
    from cumulo.widgets.report import spend_series

    series = spend_series([{"time": 0, "workers": 2, "busy_workers": 1}, {"time": 3600, "workers": 2,
                                                                           "busy_workers": 2}],
                          {"rate_per_hour": 4.0, "workers": 2})
    assert series == {"time": [3600 * 1000.0], "busy": [2.0], "idle": [2.0], "unit": "$"}
    assert spend_series([], {"rate_per_hour": None})["unit"] == "worker-hours"


def test_prices_show_source_and_date_as_columns(capsys: pytest.CaptureFixture[str]) -> None:
    from cumulo.cli import main

    assert main(["prices", "--gpu", "H100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[-3:] == ["as", "of", "source"], lines[0]
    assert lines[1].rstrip().endswith("(design anchor)") or "https://" in lines[1]
    assert all(" 2025 " in line or " 2026 " in line for line in lines[1:4])


NOTEBOOK = [
    "import dask, cumulo\n"
    "dask.config.set({'cumulo.cost.rate-per-gpu-hour': 1.0, 'cumulo.cost.rate-per-worker-hour': 0.5,\n"
    "                 'cumulo.widgets.refresh-interval': '0.5s'})\n"
    "cluster = cumulo.connect(workers=1, threads_per_worker=1, budget=5.0)",
    "cluster.client.gather(cluster.client.map(lambda i: i, range(10)))",
    "cluster.usage.widget()",
    "cluster.usage",
    "from cumulo.widgets import CostMeter\nm = CostMeter(cluster)\nprint(m)",
    "%load_ext cumulo",
    "cluster.client.gather(cluster.client.map(lambda i: i, range(4)))\nprint(m.html())",
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
    assert "cumulo-top-cells" in nb.cells[6].outputs[0]["text"]  # the cells that cost most, in the static HTML
    # the widget's own state, as the kernel last sent it to the front end: the meter, with the spend and budget
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    meters = [str(m["state"].get("value", "")) for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any("cumulo-meter" in v and "spent <b>$" in v and "of $5.00 budget" in v for v in meters), meters
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


def _table(page: str) -> list[list[tuple[str, str | None, str | None]]]:
    """The top-cells table of a meter page: per row, per cell, (text, text-align, title)."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[tuple[str, str | None, str | None]]] = []
            self.inside = False
            self.cell: list[Any] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "table" and "cumulo-top-cells" in (a.get("class") or ""):
                self.inside = True
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag in ("td", "th"):
                style = a.get("style") or ""
                align = next((p.split(":")[1] for p in style.split(";") if p.startswith("text-align")), "left")
                self.cell = ["", align, a.get("title")]

        def handle_endtag(self, tag: str) -> None:
            if tag == "table":
                self.inside = False
            elif self.inside and tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(tuple(self.cell))
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell[0] += data

    parser = Cells()
    parser.feed(page)
    return parser.rows


def test_the_top_cells_table_headers_sit_over_their_columns() -> None:
    cells = [{"label": "etl.ipynb [7]", "kind": "cell", "cost": 0.5, "task_seconds": 90.0, "running": 8,
              "first_line": "df = load('s3://bucket')"},
             {"label": "outside cells", "kind": "outside", "cost": 0.01, "task_seconds": 2.0, "running": 0,
              "basis": "task time x configured rate"},
             {"label": "idle", "kind": "idle", "cost": 0.49, "task_seconds": 0.0, "running": 0}]
    rows = _table(render_html("etl", dict(SUMMARY, spend=1.0), cells=cells))
    head, *body = rows
    assert [c[0] for c in head] == ["where the spend went", "cost", "task-s", "running"]
    for row in body:
        assert len(row) == len(head), row
        for (_, head_align, _), (text, align, _) in zip(head, row):
            assert align == head_align, (head, row)  # a header aligned as the figures under it
    assert body[0][0] == ("etl.ipynb [7]", "left", "df = load('s3://bucket')")  # its first line on hover
    assert [r[0][0] for r in body] == ["etl.ipynb [7]", "outside cells", "idle", "total (the spend)"]
    assert body[-1][1][0] == "$1.0000"  # the rows add up to the spend, which the total row shows


def test_a_cell_is_named_by_its_notebook_and_execution_count() -> None:
    from cumulo.cost.metering import cell_label

    cell = {"tag": "69053dd4-12857/3", "kernel": "69053dd4-12857", "seq": 3, "execution_count": 2}
    assert cell_label({**cell, "notebook": "etl.ipynb"}) == "etl.ipynb [2]"
    assert cell_label({**cell, "notebook": "etl.ipynb"}, me="69053dd4-12857") == "etl.ipynb [2]"  # same everywhere
    assert cell_label(cell, me="69053dd4-12857") == "[2]"  # no notebook (a terminal IPython): its own kernel's count
    assert cell_label(cell) == "69053dd4-12857 [2]"
    assert cell_label({**cell, "execution_count": None}, me="69053dd4-12857") == "[cell 3]"
    assert cell_label({"tag": "outside cells", "kernel": None}) == "outside cells"
