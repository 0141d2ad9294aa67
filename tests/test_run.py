"""`cumulo run`: parameters, a failing cell that is named, and teardown on failure, SIGINT and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cumulo.cli import main
from cumulo.cost.metering import stored_usage
from cumulo.life.registry import Registry
from cumulo.run import parse_on, parse_parameters, run_notebook
from cumulo.share import from_notebook

from .conftest import wait_for


def write(path: Path, *cells: object) -> Path:
    nb = new_notebook(cells=list(cells), metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    nbformat.write(nb, str(path))
    return path


def halfway(tmp_path: Path) -> Path:
    """Starts a cluster, computes with the parameters, fails in cell 4 unless FAIL is False, closes in cell 5."""
    return write(
        tmp_path / "halfway.ipynb",
        new_code_cell("ROWS = 1000\nFAIL = True", metadata={"tags": ["parameters"]}),
        new_code_cell('import cumulo\n'
                      'cluster = cumulo.connect("local", name="halfway", workers=1, threads_per_worker=1)'),
        new_code_cell("total = cluster.client.submit(sum, range(ROWS)).result()\nprint('total', total)"),
        new_code_cell('if FAIL:\n    raise ValueError("boom at half way")'),
        new_code_cell("cluster.close()\nprint('closed by the notebook')"),
    )


def kernel_group_alive(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def test_a_notebook_that_fails_half_way_names_the_cell_and_still_closes_its_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = halfway(tmp_path)
    out = tmp_path / "executed.ipynb"
    assert main(["run", str(path), "-p", "ROWS=10", "-o", str(out)]) == 1
    printed = capsys.readouterr()
    assert "cumulo run: cell 4 (`if FAIL:`) raised ValueError: boom at half way" in printed.err
    assert "halfway.ipynb FAILED" in printed.out and "clusters: halfway (local, 1 CPU worker)" in printed.out

    row = Registry().latest("halfway")
    assert row.state == "closed" and row.note == "closed by its kernel"  # closed in the kernel, by the teardown
    assert not kernel_group_alive(row.owner_pid) and not psutil.pid_exists(row.owner_pid)

    nb = nbformat.read(str(out), as_version=4)
    assert [c.metadata.get("tags") for c in nb.cells[:2]] == [["parameters"], ["injected-parameters"]]
    assert nb.cells[1].source.endswith("ROWS = 10")
    assert "total 45" in nb.cells[3].outputs[0]["text"]  # the parameter overrode the default (1000)
    assert nb.cells[4].outputs[-1]["output_type"] == "error" and nb.cells[5].outputs == []
    meta = nb.metadata["cumulo"]
    assert meta["last_run"]["status"] == "failed at cell 4" and meta["last_run"]["parameters"] == {"ROWS": "10"}
    assert [c["name"] for c in meta["clusters"]] == ["halfway"]


def test_parameters_override_defaults_and_on_overrides_the_notebooks_spec(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DASK_CUMULO__COST__RATE_PER_WORKER_HOUR", "3600")  # $1 per worker-second: visible cents
    path = halfway(tmp_path)
    report = run_notebook(path, parameters=parse_parameters(["ROWS=100", "FAIL=False"]), on="local,workers=2")
    assert report.ok and report.exit_code == 0 and report.failed_cell is None
    assert report.out == tmp_path / "halfway.run.ipynb"
    nb = nbformat.read(str(report.out), as_version=4)
    assert "total 4950" in nb.cells[3].outputs[0]["text"] and "closed by the notebook" in nb.cells[5].outputs[0]["text"]

    row = Registry().latest("halfway")
    assert row.state == "closed" and row.workers == 2  # --on replaced workers=1
    # its cells are named by the notebook, as in Jupyter (the sidebar, `cumulo usage` and the meter agree)
    labels = [c["label"] for c in stored_usage(row)["cells"]]
    assert "halfway.ipynb [4]" in labels, labels  # its 4th execution: after the injected parameters
    last = nb.metadata["cumulo"]["last_run"]
    assert last["status"] == "ok" and last["cost"] > 0 and "configured rate" in last["cost_basis"]
    assert last["wall_seconds"] > 0 and last["versions"]["dask"]
    assert "cost: $" in report.text() and "ran in" in report.text()
    spec = from_notebook(report.out)  # what `cumulo share` embeds and connect(spec_from=...) reads
    assert (spec.provider, spec.workers, spec.threads_per_worker) == ("local", 2, 1)

    # run the executed copy again, without --on: the spec it carries applies to connect(name="halfway")
    capsys.readouterr()
    again = run_notebook(report.out, parameters={"FAIL": False}, out=tmp_path / "again.ipynb")
    assert again.ok, again.failure
    said = capsys.readouterr().out
    carried = "cluster 'halfway' gets the spec the notebook carries: provider=local, threads_per_worker=1, workers=2"
    assert carried in said
    assert "last run: " in said and "2 CPU workers ≈ $" in said
    assert Registry().latest("halfway").workers == 2 and Registry().latest("halfway").state == "closed"


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from cumulo.exceptions import SpecError

    with pytest.raises(SpecError, match="NAME=VALUE"):
        parse_parameters(["rows"])
    with pytest.raises(SpecError, match="unknown field"):
        parse_on("local,gpus=2")
    with pytest.raises(SpecError, match="unknown provider"):
        parse_on("nowhere")
    assert parse_on("lambda,gpu=A10,workers=4,confirm=true") == {
        "provider": "lambda", "gpu": "A10", "workers": 4, "spot": False, "confirm": True}
    with pytest.raises(SpecError, match="no notebook"):
        run_notebook(tmp_path / "missing.ipynb")


def sleepy(tmp_path: Path) -> Path:
    """A notebook whose last cell waits ten minutes; it touches ``tmp_path/in-the-long-cell`` as it starts."""
    marker = tmp_path / "in-the-long-cell"
    return write(
        tmp_path / "sleepy.ipynb",
        new_markdown_cell("A cluster, then a long wait: interrupted from outside."),
        new_code_cell('import cumulo\n'
                      'cluster = cumulo.connect("local", name="sleepy", workers=1, threads_per_worker=1)'),
        new_code_cell(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                      "for _ in range(600):\n    time.sleep(1)"),
    )


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_tear_the_cluster_down(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    path = sleepy(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "cumulo.cli", "run", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        row = wait_for(lambda: (r := Registry().latest("sleepy")) is not None and r.state == "running" and r,
                       timeout=90, what="the notebook's cluster to run")
        wait_for((tmp_path / "in-the-long-cell").exists, timeout=60, what="the kernel in the long cell")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr[-2000:]
    assert f"{sig.name} received" in stderr and f"interrupted ({sig.name})" in stdout
    closed = Registry().latest("sleepy")
    assert closed.state == "closed", (closed.state, closed.note)
    assert not kernel_group_alive(row.owner_pid) and not psutil.pid_exists(row.owner_pid)
    nb = nbformat.read(str(tmp_path / "sleepy.run.ipynb"), as_version=4)
    assert nb.metadata["cumulo"]["last_run"]["status"] == f"interrupted ({sig.name})"


# -- where the executed copy goes (issue 21) ------------------------------------------------------


def test_output_path_puts_run_copies_where_they_cannot_pass_for_sources(tmp_path: Path) -> None:
    from cumulo.run import output_path

    src = tmp_path / "nb" / "etl.ipynb"
    assert output_path(src) == tmp_path / "nb" / "etl.run.ipynb"
    assert output_path(src, tmp_path / "runs") == tmp_path / "runs" / "etl.run.ipynb"  # -o FOLDER
    (tmp_path / "existing.ipynb").mkdir()  # a folder, even one named like a notebook
    assert output_path(src, tmp_path / "existing.ipynb") == tmp_path / "existing.ipynb" / "etl.run.ipynb"
    assert output_path(src, tmp_path / "copy.ipynb") == tmp_path / "copy.ipynb"  # -o FILE, as before
    assert output_path(tmp_path / "nb" / "etl.run.ipynb") == tmp_path / "nb" / "etl.run.ipynb"  # no etl.run.run


def test_run_writes_into_the_o_folder_and_says_where_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "tiny.ipynb", new_code_cell("print('hello from the kernel')"))
    assert main(["run", str(path), "-o", str(tmp_path / "runs")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"  executed copy: {tmp_path / 'runs' / 'tiny.run.ipynb'}"
    nb = nbformat.read(str(tmp_path / "runs" / "tiny.run.ipynb"), as_version=4)
    assert "hello from the kernel" in nb.cells[0].outputs[0]["text"]
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == ["tiny.ipynb"]  # nothing beside the source


def test_git_ignores_run_copies_and_not_sources() -> None:
    root = Path(__file__).resolve().parent.parent
    check = ["git", "-C", str(root), "check-ignore", "-q", "--no-index"]
    assert subprocess.run([*check, "notebooks/dataframes.run.ipynb"]).returncode == 0
    assert subprocess.run([*check, "elsewhere/analysis.run.ipynb"]).returncode == 0
    assert subprocess.run([*check, "notebooks/dataframes.ipynb"]).returncode == 1


def test_on_takes_dasks_names_and_suggests_the_nearest_provider() -> None:
    from cumulo.exceptions import SpecError

    assert parse_on("local,n_workers=2") == {"provider": "local", "workers": 2, "spot": False}
    with pytest.raises(SpecError, match=r"unknown provider 'lamda' \(did you mean 'lambda'\?\)"):
        parse_on("lamda,gpu=A10")
    with pytest.raises(SpecError, match=r"unknown field\(s\) budgett \(did you mean 'budget'\?\)"):
        parse_on("local,budgett=5")
