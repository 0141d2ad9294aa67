"""MLflow autolog (cumulo.mlops) against a real tracking server: ``mlflow server`` with a SQLite store on
127.0.0.1 (tests/mlflow_server.py), notebooks run in real kernels, real LocalClusters.

What a run gets: params of its cluster, per-cell metrics at the cells' execution counts, its totals
(at its end, or at its cluster's close when that comes first) and the usage report and plot as
artifacts; energy and CO2 with the stand-in NVML of tests/test_energy.py; an outage of the server
that no cell notices, with the values arriving once it is back; training calls' own figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import nbformat
import pytest
from nbclient import NotebookClient

from cumulo import config
from cumulo.cost import carbon
from cumulo.exceptions import ConfigError
from cumulo.mlops import figures
from cumulo.mlops.outbox import Item, Outbox, TrackerWarning, Unreachable, describe

from .mlflow_server import TrackingServer
from .test_energy import WATTS, fake_nvml

ROOT = Path(__file__).resolve().parent.parent

NAP = "def nap(i):\n    time.sleep(0.3)\n    return i\n"
#: $3.6 per worker-hour: a worker-second costs $0.001
SETUP = ("import json, time, dask, mlflow\n"
         "dask.config.set({'cumulo.widgets.cell-line-on-connect': False, 'cumulo.cost.rate-per-worker-hour': 3.6,\n"
         "                 'cumulo.cost.sample-interval': '0.2s', 'cumulo.cost.power-interval': None, **EXTRA})\n"
         "%load_ext cumulo\n"
         "import cumulo\n"
         "mlflow.set_tracking_uri(URI)\n"
         "mlflow.set_experiment(EXPERIMENT)\n" + NAP)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    srv = TrackingServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield srv
    finally:
        srv.stop()


def notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    return nb


def errors(nb: nbformat.NotebookNode) -> list[tuple[int, Any]]:
    return [(i, o) for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.output_type == "error"]


def printed(cell: nbformat.NotebookNode) -> dict[str, Any]:
    """The JSON a cell printed last."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    return json.loads(text.strip().splitlines()[-1])


def run_notebook(nb: nbformat.NotebookNode, tmp_path: Path) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=240, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not errors(nb), errors(nb)
    return nb


def history(client: Any, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


# -- a notebook run in a real kernel ----------------------------------------------------------------------------


def test_a_notebook_run_gets_params_cell_metrics_totals_and_artifacts(server: TrackingServer, tmp_path: Path) -> None:
    head = f"URI = {server.uri!r}\nEXPERIMENT = 'cells'\nEXTRA = {{}}\n"
    nb = run_notebook(notebook([
        head + SETUP + "cumulo.mlflow.autolog()\ncluster = cumulo.connect(workers=1, threads_per_worker=1)",  # [1]
        "run = mlflow.start_run()",                                                         # [2] params, from now
        "cluster.client.gather(cluster.client.map(nap, range(3), pure=False))",             # [3] a cell on the cluster
        "x = 1",                                                                            # [4] not on it
        "cluster.client.gather(cluster.client.map(nap, range(2), pure=False))",             # [5]
        "cells = cluster.usage.cells(others=False)\n"                                       # [6] totals as it ends
        "mlflow.end_run()\n"
        "print(json.dumps({'run': run.info.run_id, 'name': cluster.name, 'sent': cumulo.mlflow.current().outbox.flush(60),\n"
        "                  'cost': {int(r.execution_count): r.cost for r in cells.itertuples()}}))",
        "cluster.close()",                                                                  # [7]
        # a run whose cluster closes before it ends: its totals come at the close, once
        "with mlflow.start_run() as run_b:\n"                                               # [8]
        "    other = cumulo.connect(workers=1, threads_per_worker=1, name='mlflow-b')\n"
        "    other.client.gather(other.client.map(nap, range(2), pure=False))\n"
        "    other.close()\n"
        "print(json.dumps({'run': run_b.info.run_id, 'sent': cumulo.mlflow.current().outbox.flush(60)}))",
    ]), tmp_path)
    seen = printed(nb.cells[5])
    assert seen["sent"] is True
    client = server.client()
    run = client.get_run(seen["run"])
    params = run.data.params
    assert params["cumulo.provider"] == "local" and params["cumulo.cluster"] == seen["name"]
    assert params["cumulo.workers"] == "1" and params["cumulo.price_per_hour"] == "3.6"
    assert params["cumulo.market"] == "on-demand" and params["cumulo.dask_version"] == dask.__version__
    assert "cumulo.carbon_intensity_g_per_kwh" not in params  # no energy measured here: no CO2, no intensity

    tasks = history(client, seen["run"], "cumulo.cell.task_seconds")
    assert sorted(tasks) == [3, 5]  # steps are the cells' execution counts; cell [4] used no cluster
    assert tasks[3] >= 3 * 0.3 and tasks[5] >= 2 * 0.3
    costs = history(client, seen["run"], "cumulo.cell.cost_usd")
    for step in (3, 5):  # what the notebook's own cells() says the cell cost
        assert costs[step] == pytest.approx(seen["cost"][str(step)], rel=1e-3)
        assert costs[step] == pytest.approx(tasks[step] * 0.001, rel=0.3)
    assert history(client, seen["run"], "cumulo.cell.gpu_seconds") == {3: 0.0, 5: 0.0}
    assert not client.get_metric_history(seen["run"], "cumulo.cell.energy_wh")

    totals = run.data.metrics
    assert totals["cumulo.cost_usd"] >= costs[3] + costs[5]  # the run's share: its cells, and idle time
    assert 0.0 < totals["cumulo.busy_fraction"] <= 1.0
    assert "cumulo.energy_wh" not in totals and "cumulo.co2_g" not in totals
    files = sorted(a.path for a in client.list_artifacts(seen["run"], "cumulo"))
    assert files == [f"cumulo/usage-{seen['name']}.html", f"cumulo/usage-{seen['name']}.png"]
    # as the server stored them (read from its artifact store: MLflow's downloader leaves a thread pool behind)
    (page,) = server.root.glob(f"artifacts/*/{seen['run']}/artifacts/cumulo/usage-{seen['name']}.html")
    assert seen["name"] in page.read_text() and "bokeh" in page.read_text().lower()
    assert page.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    b = printed(nb.cells[7])
    assert b["sent"] is True
    run_b = client.get_run(b["run"])
    assert run_b.data.params["cumulo.cluster"] == "mlflow-b"  # attached during the run
    assert len(client.get_metric_history(b["run"], "cumulo.cost_usd")) == 1  # at the close, not again at the end
    assert run_b.data.metrics["cumulo.cost_usd"] > 0
    assert [a.path for a in client.list_artifacts(b["run"], "cumulo")] == ["cumulo/usage-mlflow-b.html",
                                                                          "cumulo/usage-mlflow-b.png"]


def test_energy_and_co2_with_the_stand_in_nvml(server: TrackingServer, tmp_path: Path) -> None:
    # autolog from config (cumulo.mlflow.autolog: true), CO2 at an intensity of your own
    head = (f"URI = {server.uri!r}\nEXPERIMENT = 'energy'\n"
            "EXTRA = {'cumulo.mlflow.autolog': True, 'cumulo.cost.carbon-intensity': 400}\n")
    nb = run_notebook(notebook([
        head + SETUP + "import cloudpickle, cumulo._energy\n"
        "cluster = cumulo.connect(workers=1, threads_per_worker=1)\n"
        f"cluster.client.run(exec, {fake_nvml('cumulo_test_nvml_mlflow')!r}, {{}})\n"
        "cloudpickle.register_pickle_by_value(cumulo._energy)\n"
        "cluster.client.register_plugin(cumulo._energy.PowerSampler(0.1, nvml_module='cumulo_test_nvml_mlflow'))\n"
        "while not cluster.usage.ledger()['energy']:\n"
        "    time.sleep(0.1)\n"
        "run = mlflow.start_run()",
        "cluster.client.gather(cluster.client.map(nap, range(3), pure=False))",                  # [2]
        "mlflow.end_run()\n"
        "print(json.dumps({'run': run.info.run_id, 'sent': cumulo.mlflow.current().outbox.flush(60),\n"
        "                  'usage': repr(cluster.usage), 'meter': str(cluster.usage.widget()), 'name': cluster.name}))",
        "cluster.close()",
    ]), tmp_path)
    seen = printed(nb.cells[2])
    assert seen["sent"] is True
    client = server.client()
    run = client.get_run(seen["run"])
    cell_wh = history(client, seen["run"], "cumulo.cell.energy_wh")
    tasks = history(client, seen["run"], "cumulo.cell.task_seconds")
    assert list(cell_wh) == [2] and cell_wh[2] == pytest.approx(tasks[2] * WATTS / 3600.0, rel=0.05)
    m = run.data.metrics
    assert m["cumulo.energy_wh"] >= cell_wh[2] * 0.99
    assert m["cumulo.co2_g"] == pytest.approx(m["cumulo.energy_wh"] / 1000.0 * 400.0, rel=1e-9)
    (page,) = server.root.glob(f"artifacts/*/{seen['run']}/artifacts/cumulo/usage-{seen['name']}.html")
    assert "g CO2 (400 g/kWh" in page.read_text()  # the usage report says it too
    assert run.data.params["cumulo.carbon_intensity_g_per_kwh"] == "400"
    assert "your setting" in run.data.params["cumulo.carbon_intensity_source"]
    assert "g CO2 (400 g/kWh" in seen["usage"] and "g CO2" in seen["meter"]  # cluster.usage and the widget
    # `cumulo usage` of the closed cluster, in another process: the CO2 kept with its final usage
    shown = subprocess.run([sys.executable, "-m", "cumulo.cli", "usage", seen["name"]], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "g CO2 (400 g/kWh" in shown.stdout, shown.stdout + shown.stderr


def test_a_stopped_server_fails_no_cell_and_the_values_arrive_once_it_is_back(tmp_path: Path) -> None:
    srv = TrackingServer(tmp_path / "outage")
    try:
        head = (f"URI = {srv.uri!r}\nEXPERIMENT = 'outage'\n"
                "EXTRA = {'cumulo.mlflow.retry-interval': '0.5s'}\n")
        nb = notebook([
            head + SETUP + "import logging\nsaid = []\nhandler = logging.Handler()\nhandler.emit = lambda r: said.append(r.getMessage())\n"
            "logging.getLogger('cumulo').addHandler(handler)\ncumulo.mlflow.autolog()\n"
            "cluster = cumulo.connect(workers=1, threads_per_worker=1)\nrun = mlflow.start_run()\n"
            "print(json.dumps({'run': run.info.run_id, 'sent': cumulo.mlflow.current().outbox.flush(60)}))",
            # the server stops here
            "cluster.client.gather(cluster.client.map(nap, range(2), pure=False))",                     # [2]
            "time.sleep(1.5)\ncluster.client.gather(cluster.client.map(nap, range(3), pure=False))",    # [3]
            "print(json.dumps({'pending': cumulo.mlflow.current().outbox.pending,\n"                   # [4]
            "                  'warned': sum('could not reach the MLflow tracking server' in m for m in said)}))",
            # ... and is back
            "print(json.dumps({'sent': cumulo.mlflow.current().outbox.flush(60)}))\nmlflow.end_run()\n"
            "print(json.dumps({'sent': cumulo.mlflow.current().outbox.flush(60)}))",
            "cluster.close()",
        ])
        kc = NotebookClient(nb, timeout=240, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
        with kc.setup_kernel():
            kc.execute_cell(nb.cells[0], 0)
            srv.stop()
            for i in (1, 2, 3):
                kc.execute_cell(nb.cells[i], i)
            srv.start()
            for i in (4, 5):
                kc.execute_cell(nb.cells[i], i)
        assert not errors(nb), errors(nb)
        run_id = printed(nb.cells[0])["run"]
        away = printed(nb.cells[3])
        # kept while it was away: one item or more (the outbox merges values that wait together into one request,
        # so both cells' metrics may be one item); that both cells' metrics were kept is checked on the server below
        assert away["pending"] >= 1
        assert away["warned"] == 1  # said once per outage, however many values wait
        assert printed(nb.cells[4])["sent"] is True
        said = "".join(o.get("text", "") for c in nb.cells for o in c.outputs if o.get("name") == "stderr")
        assert said.count("could not reach the MLflow tracking server") <= 1, said  # the notebook shows it once
        client = srv.client()
        assert sorted(history(client, run_id, "cumulo.cell.task_seconds")) == [2, 3]
        assert client.get_run(run_id).data.metrics["cumulo.cost_usd"] > 0
    finally:
        srv.stop()


# -- training ---------------------------------------------------------------------------------------------------


def test_training_calls_log_their_cost_to_the_run_and_to_nested_runs(server: TrackingServer, tmp_path: Path) -> None:
    nb = run_notebook(notebook([
        f"URI = {server.uri!r}\nEXPERIMENT = 'training'\nEXTRA = {{}}\n" + SETUP +
        "import dask.array as da, cumulo.train\ncumulo.mlflow.autolog()\n"
        "cluster = cumulo.connect(workers=2, threads_per_worker=1)\n"
        "X = da.random.RandomState(0).random_sample((4000, 5), chunks=1000)\ny = (X[:, 0] > 0.5).astype('int32')",
        "with mlflow.start_run() as parent:\n"
        "    cumulo.train.xgboost(cluster, X, y, num_boost_round=5)\n"
        "    cumulo.train.xgboost(cluster, X, y, num_boost_round=5)\n"
        "    with dask.config.set({'cumulo.mlflow.nested-training-runs': True}):\n"
        "        cumulo.train.xgboost(cluster, X, y, num_boost_round=5)\n"
        "print(json.dumps({'run': parent.info.run_id, 'sent': cumulo.mlflow.current().outbox.flush(60)}))",
        "cluster.close()",
    ]), tmp_path)
    seen = printed(nb.cells[1])
    assert seen["sent"] is True
    client = server.client()
    costs = history(client, seen["run"], "cumulo.train.cost_usd")
    assert sorted(costs) == [0, 1] and all(v > 0 for v in costs.values())  # one step per training call
    assert set(history(client, seen["run"], "cumulo.train.task_seconds")) == {0, 1}
    parent = client.get_run(seen["run"])
    (child,) = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{seen['run']}'")
    assert child.data.params["cumulo.train.kind"] == "train.xgboost"
    assert child.data.metrics["cumulo.train.cost_usd"] > 0 and child.info.status == "FINISHED"
    assert child.data.params["cumulo.provider"] == "local"  # a nested run is a run: it gets its params and totals
    assert child.data.metrics["cumulo.cost_usd"] > 0
    assert parent.data.metrics["cumulo.cost_usd"] >= sum(costs.values())


# -- the parts, without a server ---------------------------------------------------------------------------------


def test_every_intensity_row_names_its_source_and_date_and_there_is_a_default() -> None:
    rows = carbon.table()
    assert ("*", "*") in rows
    for key, row in rows.items():
        assert row.source and row.date and row.g_per_kwh >= 0, key
    assert {p for p, _ in rows} >= {"aws", "azure", "gcp", "lambda"}
    aws = carbon.intensity("aws", "us-east-1")
    assert aws.row == ("aws", "us-east-1") and aws.g_per_kwh == rows[("aws", "us-east-1")].g_per_kwh
    assert carbon.intensity("local", None).row == ("*", "*")
    assert carbon.intensity("ssh", "nowhere-1").row == ("*", "*")


def test_your_intensity_overrides_the_table_and_a_bad_one_says_what_to_write() -> None:
    with dask.config.set({"cumulo.cost.carbon-intensity": 50}):
        assert carbon.intensity("aws", "us-east-1").g_per_kwh == 50.0
    with dask.config.set({"cumulo.cost.carbon-intensity": {"aws/us-east-1": 20, "eu-west-1": 30}}):
        assert carbon.intensity("aws", "us-east-1").g_per_kwh == 20.0
        assert carbon.intensity("aws", "eu-west-1").g_per_kwh == 30.0
        assert carbon.intensity("aws", "us-west-2").g_per_kwh == carbon.table()[("aws", "us-west-2")].g_per_kwh
    with dask.config.set({"cumulo.cost.carbon-intensity": {"us-east-1": "lots"}}):
        # refused when a cluster (or the server) starts, as every setting is, and again where it is used
        with pytest.raises(ConfigError, match="carbon-intensity.us-east-1: 'lots' is not a number"):
            config.validate()
        with pytest.raises(ConfigError, match="carbon-intensity.us-east-1 is 'lots'.*e.g. 350"):
            carbon.intensity("aws", "us-east-1")
    with dask.config.set({"cumulo.cost.carbon-intensity": -1}), pytest.raises(ConfigError, match="at least 0"):
        config.validate()
    assert carbon.co2_grams(None, carbon.intensity("aws", "us-east-1")) is None  # no energy measured: no CO2


def test_totals_have_energy_and_co2_only_where_energy_was_measured() -> None:
    grid = carbon.Intensity(500.0, "test grid", "2026", ("x", "y"))
    cpu = figures.delta({"spend": 2.0, "energy_wh": None, "worker_seconds": 100.0, "busy_worker_seconds": 25.0},
                        {"spend": 0.5, "worker_seconds": 20.0, "busy_worker_seconds": 5.0})
    assert cpu["spend"] == 1.5 and cpu["energy_wh"] is None
    assert figures.total_metrics([(cpu, grid)]) == {"cumulo.cost_usd": 1.5, "cumulo.busy_fraction": 0.25}
    gpu = {"spend": None, "energy_wh": 10.0, "gpu_seconds": 10.0, "gpu_busy_seconds": 4.0}
    out = figures.total_metrics([(gpu, grid), (cpu, grid)])
    assert out["cumulo.energy_wh"] == 10.0 and out["cumulo.co2_g"] == pytest.approx(5.0)
    assert out["cumulo.cost_usd"] == 1.5  # only the priced share has a cost; none is made up


def test_the_outbox_keeps_a_bounded_queue_warns_once_and_delivers_in_order() -> None:
    up = [False]
    got: list[int] = []

    def sender(i: int) -> Item:
        def send() -> None:
            if not up[0]:
                raise Unreachable("connection refused")
            got.append(i)
        return Item(f"value {i}", send, discard=lambda: dropped.append(i))

    dropped: list[int] = []
    box = Outbox(limit=3, retry_interval=0.05)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(5):
                box.put(sender(i))
            assert box.flush(0.5) is False  # the server is away: nothing goes, nothing blocks for long
        said = [str(w.message) for w in caught if issubclass(w.category, TrackerWarning)]
        assert len([s for s in said if "could not reach" in s]) == 1
        assert len([s for s in said if "oldest are dropped" in s]) == 1
        assert box.dropped == 2 and box.pending == 3 and dropped == [0, 1]  # the oldest, told so (their files go)
        up[0] = True
        assert box.flush(10) is True
        assert got == [2, 3, 4] and box.down is None
    finally:
        box.close()
    # what a failure says never carries credentials of the tracking URI
    said = describe(ConnectionError("API request to https://alice:t0ken@mlflow.example:443/api failed"))
    assert "t0ken" not in said and "alice" not in said and "https://***@mlflow.example" in said


# -- the gallery notebook ---------------------------------------------------------------------------------------


def test_mlflow_cost_notebook_runs(server: TrackingServer, tmp_path: Path) -> None:
    from cumulo.run import run_notebook as cumulo_run

    report = cumulo_run(ROOT / "notebooks" / "mlflow_cost.ipynb", out=tmp_path / "mlflow_cost.ipynb", cwd=tmp_path,
                        parameters={"TRACKING_URI": server.uri})
    assert report.ok, report.failure
    nb = nbformat.read(str(report.out), as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "cost per run" in text and "cheaper run: " in text, text
    client = server.client()
    experiment = client.get_experiment_by_name("cumulo-cost-demo")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"small", "big"}
    for run in runs.values():
        assert run.data.params["cumulo.cluster"] == "mlflow-demo" and run.data.params["cumulo.workers"] == "2"
        assert run.data.metrics["cumulo.cost_usd"] >= run.data.metrics["cumulo.train.cost_usd"] > 0
        assert "test_accuracy" in run.data.metrics
    assert runs["big"].data.metrics["cumulo.train.cost_usd"] > runs["small"].data.metrics["cumulo.train.cost_usd"]


def test_values_waiting_together_go_in_one_request() -> None:
    requests: list[list[int]] = []

    def batch(i: int) -> Item:
        held = [i]
        item = Item(f"value {i}", lambda: requests.append(list(held)))

        def merge(other: Item) -> bool:
            if other.payload is None or len(held) >= 3:
                return False
            held.extend(other.payload)
            return True

        item.merge, item.payload = merge, held
        return item

    box = Outbox(limit=100, retry_interval=0.05, linger=0.3)
    try:
        for i in range(5):
            box.put(batch(i))
        box.put(Item("a report", lambda: requests.append([-1])))  # not mergeable: its own request, in order
        box.put(batch(5))
        assert box.flush(10) is True
    finally:
        box.close()
    assert requests == [[0, 1, 2], [3, 4], [-1], [5]]


def test_the_gallery_notebook_without_mlflow_names_the_pip_line_first(tmp_path: Path) -> None:
    """On an install without MLflow, the notebook's imports stop at cumulo's MissingDependency, which names the
    extra to install, instead of a raw ModuleNotFoundError."""
    nb = nbformat.read(str(ROOT / "notebooks" / "mlflow_cost.ipynb"), as_version=4)
    imports = [c.source for c in nb.cells if c.cell_type == "code"][1]
    code = "\n".join(line for line in imports.splitlines() if not line.lstrip().startswith("%"))
    script = ("import sys\nsys.modules['mlflow'] = None  # as where it is not installed\nRATE, TRACKING_URI = 1.0, ''\n"
              "try:\n    exec(compile(" + repr(code) + ", 'cell', 'exec'))\n"
              "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.startswith("MissingDependency cumulo.mlflow.autolog needs the MLflow client"), out
    assert "pip install 'cumulo[mlflow]'" in out.stdout and "cluster" not in out.stdout
