"""The notebook gallery: every notebook has a script, a README entry and a test that executes it.

The dataframes, cost-control and team notebooks run here through `cumulo run` (which fails on the
first cell that raises); quickstart, training, lambda_cloud, aws_spot and azure_spot run in their own test files, named below.
The team notebook runs against a real OpenSSH server on loopback (tests/sshd.py, as root) and a real
dask-gateway-server (tests/test_gateway.py), given to it as parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from cumulo.life.registry import Registry
from cumulo.run import run_notebook
from cumulo.share import Scanner, share

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXAMPLES = ROOT / "examples"

#: notebook -> the test that executes it in CI
EXECUTED_BY = {
    "quickstart": "tests/test_notebooks_core.py::test_quickstart_notebook_executes",
    "dataframes": "tests/test_gallery.py::test_dataframes_notebook_runs",
    "cost_control": "tests/test_gallery.py::test_cost_control_notebook_runs",
    "training": "tests/test_train.py::test_training_notebook_executes",
    "lambda_cloud": "tests/test_lambda_notebook.py::test_notebook_against_the_emulator",
    "team": "tests/test_gallery.py::test_team_notebook_runs_on_hosts_and_a_gateway",
    "aws_spot": "tests/test_aws_notebook.py::test_aws_notebook_against_the_emulator",
    "azure_spot": "tests/test_azure_notebook.py::test_azure_notebook_against_the_emulator",
    "mlflow_cost": "tests/test_mlflow.py::test_mlflow_cost_notebook_runs",
}


def outputs(nb: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("data", {}).get("text/html", "")) + o.get("text", "")
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def test_every_notebook_has_a_script_a_readme_entry_and_a_test() -> None:
    readme = (NOTEBOOKS / "README.md").read_text()
    # executed (`cumulo run`) and shared (`cumulo share`) copies beside a notebook are not sources
    stems = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb") if not p.name.endswith((".run.ipynb", ".shared.ipynb")))
    assert stems == sorted(EXECUTED_BY)
    scanner = Scanner(known=[])
    for stem in stems:
        assert (EXAMPLES / f"{stem}.py").exists(), f"examples/{stem}.py is missing"
        assert f"{stem}.ipynb" in readme and f"examples/{stem}.py" in readme
        test_file, test_name = EXECUTED_BY[stem].split("::")
        assert f"def {test_name}(" in (ROOT / test_file).read_text()
        nb = nbformat.read(str(NOTEBOOKS / f"{stem}.ipynb"), as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:  # shipped clean: no outputs, nothing that looks like a secret
            assert not cell.get("outputs"), f"{stem}.ipynb is committed with outputs"
            assert scanner.redact(cell.source, code=cell.cell_type == "code")[1] == [], stem
    assert "not yet in cumulo" not in readme


def test_dataframes_notebook_runs(tmp_path: Path) -> None:
    report = run_notebook(NOTEBOOKS / "dataframes.ipynb", out=tmp_path / "dataframes.ipynb",
                          parameters={"ROWS": 120_000, "PARTITIONS": 4}, cwd=tmp_path)
    assert report.ok, report.failure
    nb = nbformat.read(str(report.out), as_version=4)
    text = outputs(nb)
    assert "dataframe backend: pandas" in text  # CPU here; cudf on GPU workers, same cells
    assert "of 120,000 trips" in text and "(same)" in text
    assert "borough=Manhattan" in text and "trips_3h_mean" in text
    assert Registry().latest("dataframes").state == "closed"
    # what `cumulo share` makes of it: the spec and the run, no secrets to remove
    shared = share(report.out, out=tmp_path / "dataframes.shared.ipynb")
    assert shared.secrets == 0
    meta = nbformat.read(str(shared.out), as_version=4).metadata["cumulo"]
    assert meta["clusters"][0]["spec"]["provider"] == "local" and meta["last_run"]["status"] == "ok"
    assert meta["last_run"]["parameters"] == {"ROWS": "120000", "PARTITIONS": "4"}


def test_cost_control_notebook_runs(tmp_path: Path) -> None:
    report = run_notebook(NOTEBOOKS / "cost_control.ipynb", out=tmp_path / "cost_control.ipynb", cwd=tmp_path)
    assert report.ok, report.failure
    text = outputs(nbformat.read(str(report.out), as_version=4))
    assert "(estimate)" in text  # the per-cell line, priced at the configured rate
    assert "task time x configured rate" in text  # cluster.usage.cells()
    assert "tiny-budget: closed (budget reached)" in text
    assert "idle-demo: closed (idle timeout" in text
    assert "$ cumulo reap --dry-run" in text and "nothing to reap" in text
    assert "no heartbeat for" in text and "would stop" in text
    assert "forgotten 64 h" in text and "3072.0" in text  # 2 workers x $24/h x 64 h
    for name in ("cost-demo", "tiny-budget", "idle-demo"):
        assert Registry().latest(name).state == "closed", name
    assert report.summary["cost"] > 0 and len(report.clusters) == 3


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """(a real sshd on loopback with a throw-away user, a real dask-gateway-server), and the environment through
    which a kernel started afterwards reaches them: the ssh key and known_hosts, the gateway's credentials."""
    from . import sshd
    from .conftest import free_port

    if sshd.why_unavailable():
        pytest.skip(str(sshd.why_unavailable()))
    pytest.importorskip("dask_gateway_server", reason="the team notebook needs dask-gateway-server (the test extra)")
    from .test_gateway import PASSWORD, USER, GatewayServer
    from .test_ssh import _env_vars, _settings

    server = sshd.start(tmp_path / "sshd", free_port())
    try:
        gateway = GatewayServer(tmp_path / "gateway")
        try:
            for name, value in _env_vars(_settings(server)).items():
                monkeypatch.setenv(name, value)
            for name, value in (("TYPE", "basic"), ("KWARGS__USERNAME", USER), ("KWARGS__PASSWORD", PASSWORD)):
                monkeypatch.setenv(f"DASK_GATEWAY__AUTH__{name}", value)
            yield server, gateway
        finally:
            gateway.close()
    finally:
        sshd.stop(server)


@pytest.mark.timeout(600)
def test_team_notebook_runs_on_hosts_and_a_gateway(tmp_path: Path, team: tuple[Any, Any]) -> None:
    server, gateway = team
    report = run_notebook(NOTEBOOKS / "team.ipynb", out=tmp_path / "team.ipynb", cwd=tmp_path,
                          parameters={"SSH_TARGET": server.target, "GATEWAY": gateway.address})
    assert report.ok, report.failure
    text = outputs(nbformat.read(str(report.out), as_version=4))
    assert "skipped" not in text
    assert text.count("mean fare by zone: {0: 27.0") == 2, text  # the same job on both clusters
    assert "/.cache/cumulo/envs/" in text  # the ssh workers run the synced environment, not the host's python
    assert "worker_cores" in text  # the gateway's own options, read back from it
    assert "team-ssh: closed" in text and "team-gateway: closed" in text
    for name, provider in (("team-ssh", "ssh"), ("team-gateway", "gateway")):
        record = Registry().latest(name)
        assert record is not None and (record.provider, record.state) == (provider, "closed"), name
    assert not [p for p in server.user_processes() if "sshd" not in p]
    assert gateway.clusters() == []


@pytest.mark.slow
@pytest.mark.parametrize("script, args, env, expect", [
    ("quickstart.py", ["--rows", "50000"], {}, "cluster quickstart: closed"),
    ("dataframes.py", ["--rows", "60000", "--partitions", "3"], {}, "partitioned by borough"),
    ("cost_control.py", [], {}, "tiny-budget: closed: budget reached"),
    ("lambda_cloud.py", [], {}, "nothing launched"),
    ("lambda_cloud.py", [], {"CUMULO_LAMBDA_EMULATOR": "1"}, "instances still billing at the emulator: []"),
    ("team.py", [], {}, "nothing to run"),
    ("mlflow_cost.py", [], {}, "big: accuracy"),  # its runs in a SQLite store in the test's folder
])
def test_example_scripts_run(tmp_path: Path, script: str, args: list[str], env: dict[str, str], expect: str) -> None:
    environ = {**os.environ, "DASK_CUMULO__LAMBDA__CERTS_DIR": str(tmp_path / "certs"), **env}
    environ.pop("LAMBDA_API_KEY", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path, env=environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expect in proc.stdout, proc.stdout[-3000:]
